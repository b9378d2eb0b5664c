"""A throwaway PostgreSQL cluster for tests: Debian's package, an unprivileged user, a Unix
socket in a temporary directory, no TCP.

The same recipe as the integration harness (tests/integration/server.py): PostgreSQL refuses
to run as root, so as root initdb and postgres run as the system user ``mmtest`` (created
when missing). ``postgres`` is started through ``setpriv --pdeathsig``: if the test process
dies without its teardown, the server gets SIGINT (fast shutdown) instead of lingering.

Every pytest-xdist worker starts its own cluster (about 2 s), in its own directory: no
shared state, no lock between workers, nothing to clean up after a crashed neighbour.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PG_USER = "mmtest"  # the OS user PostgreSQL runs as when the tests run as root
ROLE = "incident_bot"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "incident-bot-apt-postgresql.lock"


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def ensure_installed() -> tuple[Path | None, str]:
    """The bin directory, installing Debian's ``postgresql`` first when missing and possible
    (root and apt-get); else None and why. Workers take turns through a lock file."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (
            None,
            "PostgreSQL is not installed (apt-get install postgresql) and cannot be installed here (needs root and apt-get)",
        )
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if find_bindir() is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
                done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=600)
                if done.returncode != 0:
                    return None, f"PostgreSQL is not installed and `{' '.join(argv)}` failed: {done.stderr.strip()[-300:]}"
    bindir = find_bindir()
    return (bindir, "") if bindir else (None, "PostgreSQL was installed but no /usr/lib/postgresql/*/bin/postgres appeared")


def ensure_os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True,
    )
    return pwd.getpwnam(name)


class Cluster:
    """``start()`` → a server reachable at ``dsn(…)``; ``stop()`` removes every trace."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="incident-bot-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None

    def _as_user(self) -> list[str]:
        """setpriv's arguments that drop root for the PostgreSQL processes."""
        if self._user is None:
            return []
        return ["--reuid", str(self._user.pw_uid), "--regid", str(self._user.pw_gid), "--clear-groups"]

    def _run(self, argv: list[str]) -> None:
        with open(self.log, "ab") as log:
            subprocess.run(["setpriv", *self._as_user(), *argv], stdout=log, stderr=subprocess.STDOUT, check=True, cwd="/")

    def dsn(self, database: str = "postgres", **settings: str) -> str:
        """An asyncpg DSN; extra query parameters are server settings (e.g. ``search_path``)."""
        extra = "".join(f"&{key}={value}" for key, value in settings.items())
        return f"postgresql://{ROLE}@/{database}?host={self.sock}{extra}"

    def start(self, timeout: float = 60.0) -> None:
        self.sock.mkdir()
        if os.geteuid() == 0:
            self._user = ensure_os_user(PG_USER)
            for path in (self.root, self.sock):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
            os.chmod(self.root, 0o700)  # root, running the tests, still gets in (DAC override)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        )
        settings = {
            "listen_addresses": "",  # Unix socket only
            "unix_socket_directories": str(self.sock),
            "unix_socket_permissions": "0700",
            "max_connections": "50",
            "shared_buffers": "32MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        argv = ["setpriv", "--pdeathsig", "INT", *self._as_user(), str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", str(self.sock), "-U", ROLE, "-d", "postgres"], check=False
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not get ready in {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: ends open sessions
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
