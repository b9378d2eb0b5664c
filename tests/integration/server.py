"""A real Mattermost server (Team Edition) for the integration suite.

    python -m tests.integration.server build             # build once, cached outside the repo
    python -m tests.integration.server session --artifacts DIR --tmp DIR -- [pytest args]
    python -m tests.integration.server serve --artifacts DIR --tmp DIR   # start, wait for Ctrl-C

``tests/integration/run.sh`` (what ``make test-integration`` calls) runs ``build`` outside and
``session`` inside a network namespace that has only loopback.

The server is built with this machine's Go from Mattermost's published Go module
``github.com/mattermost/mattermost/server/v8`` (command ``cmd/mattermost``, no build tags, so
Team Edition without the source-available enterprise code) at the version pinned in
``tests/integration/mmbuild/go.mod``; ``go.sum`` beside it pins the hashes. The binary and the
runtime files it needs (``i18n/``, ``templates/``, ``fonts/``, copied from the module in the Go
module cache) go to ``$XDG_CACHE_HOME/incident-bot/mattermost-<version>/`` (default
``~/.cache/incident-bot``) and are reused when present.

A session runs PostgreSQL (Debian's package) as the unprivileged user ``mmtest`` in a temporary
directory, reachable only over its Unix socket, then Mattermost with a generated config that turns
off everything that would call out (telemetry, Sentry, marketplace, prepackaged plugins, notices,
security-update checks, push notifications, link previews, GIFs, image proxy), creates the
session's system admin over the REST API, and runs pytest with:

    INCIDENT_BOT_TEST_MM_URL             http://127.0.0.1:8065 (its presence means: real server)
    INCIDENT_BOT_TEST_MM_ADMIN_USERNAME  the system admin (the first user of the server)
    INCIDENT_BOT_TEST_MM_ADMIN_PASSWORD
    INCIDENT_BOT_TEST_PASSWORD           the password bootstrap.py gives every account it makes
    INCIDENT_BOT_TEST_ARTIFACTS          the run's log folder (kept when the run fails): bot logs go here

(The bot never sees these: tests/support/botproc.py (BotProcess.env) drops INCIDENT_BOT_* from its environment.)
pytest gets ``tests/scenarios -m "not fake_only"`` plus the arguments given; a test path among
them replaces ``tests/scenarios``, a ``-m`` replaces the ``-m``.

Everything it started is stopped, and the temporary directory removed, at the end, also when
pytest fails or is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.postgres import ensure_os_user, find_bindir

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MMBUILD = HERE / "mmbuild"
SERVER_MODULE = "github.com/mattermost/mattermost/server/v8"
SERVER_PKG = SERVER_MODULE + "/cmd/mattermost"
PUBLIC_MODULE = "github.com/mattermost/mattermost/server/public"
RUNTIME_DIRS = ("i18n", "templates", "fonts")

HOST = "127.0.0.1"
PORT = int(os.environ.get("INCIDENT_BOT_TEST_MM_PORT", "8065"))
URL = f"http://{HOST}:{PORT}"
PG_USER = "mmtest"  # the unprivileged OS user PostgreSQL runs as
DB_ROLE = "mmuser"
DB_NAME = "mattermost_test"
ADMIN_USERNAME = "sysadmin"
PASSWORD = "It-Passw0rd!" + "x" * 4  # only ever used on a loopback-only server

# ---------------------------------------------------------------------------------------------
# build


def pinned_version() -> str:
    text = (MMBUILD / "go.mod").read_text(encoding="utf-8")
    match = re.search(rf"^\s*{re.escape(SERVER_MODULE)}\s+(\S+)", text, re.M)
    if not match:
        raise SystemExit(f"{MMBUILD / 'go.mod'} does not require {SERVER_MODULE}")
    return match.group(1)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "incident-bot"


def install_dir(version: str | None = None) -> Path:
    return cache_root() / f"mattermost-{version or pinned_version()}"


def _pins_digest() -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((MMBUILD / name).read_bytes())
    return digest.hexdigest()


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The proxy serves these pseudo-versions but the checksum database has no record of them;
    # mmbuild/go.sum pins their hashes instead (and -mod=readonly refuses anything else).
    env["GONOSUMDB"] = ",".join(filter(None, [env.get("GONOSUMDB"), "github.com/mattermost/mattermost"]))
    env["GOFLAGS"] = "-mod=readonly -buildvcs=false"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def build(force: bool = False) -> Path:
    """Build (or reuse) the pinned Mattermost server; returns its install directory."""
    version = pinned_version()
    out = install_dir(version)
    stamp = out / "BUILD-INFO.json"
    digest = _pins_digest()

    def cached() -> bool:
        if force or not stamp.is_file() or not (out / "bin" / "mattermost").is_file():
            return False
        try:
            return json.loads(stamp.read_text(encoding="utf-8")).get("pins") == digest
        except ValueError:
            return False

    if cached():
        print(f"mattermost: using cached build {out}", flush=True)
        return out
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".build-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cached():
            return out
        if shutil.which("go") is None:
            raise SystemExit("mattermost build: the go command is not on PATH")
        workdir = cache_root() / f"build-{version}"
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(MMBUILD / name, workdir / name)
        env = _go_env()
        started = time.monotonic()
        print(f"mattermost: building {SERVER_PKG}@{version} into {out} (a cold build takes minutes)", flush=True)
        if out.exists():
            shutil.rmtree(out)
        (out / "bin").mkdir(parents=True)
        target = out / "bin" / "mattermost.partial"
        short = version.rsplit("-", 1)[-1]
        ldflags = " ".join(
            [
                f"-X {PUBLIC_MODULE}/model.BuildNumber=incident-bot-it",
                f"-X {PUBLIC_MODULE}/model.BuildHash={short}",
                f"-X {PUBLIC_MODULE}/model.BuildEnterpriseReady=false",
            ]
        )
        build_log = workdir / "build.log"
        with open(build_log, "wb") as log:
            result = subprocess.run(
                ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(target), SERVER_PKG],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            tail = build_log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            print("\n".join(tail), file=sys.stderr)
            raise SystemExit(f"mattermost build failed (exit {result.returncode}); full log: {build_log}")
        moddir = subprocess.run(
            ["go", "list", "-m", "-f", "{{.Dir}}", SERVER_MODULE],
            cwd=workdir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for name in RUNTIME_DIRS:
            # Module-cache files are read-only; copy contents only, so the cache stays removable.
            shutil.copytree(Path(moddir) / name, out / name, copy_function=shutil.copyfile)
        target.rename(out / "bin" / "mattermost")
        go_version = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
        info = {
            "module": SERVER_MODULE,
            "version": version,
            "pins": digest,
            "go": go_version,
            "seconds": round(time.monotonic() - started, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        stamp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        print(f"mattermost: built in {info['seconds']} s", flush=True)
        return out


# ---------------------------------------------------------------------------------------------
# processes


def postgres_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed: apt-get update && apt-get install -y postgresql")
    return bindir


class Proc:
    """A child process in its own process group (a terminal's Ctrl-C reaches only pytest)."""

    def __init__(self, name: str, argv: list[str], log: Path, **kwargs) -> None:
        self.name = name
        self.log = log
        self._log_file = open(log, "ab", buffering=0)  # noqa: SIM115 - open for the child's whole life; closed when it is stopped
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Anything the process left in its group (none expected).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log_file.close()


class Postgres:
    def __init__(self, root: Path, log: Path) -> None:
        self.root = root / "pg"
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = log
        self.bindir = postgres_bindir()
        self.proc: Proc | None = None

    def _as_user(self) -> dict:
        """Popen arguments that run PostgreSQL as the unprivileged user (it refuses root)."""
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam(PG_USER)
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def dsn(self) -> str:
        return f"postgres://{DB_ROLE}@/{DB_NAME}?host={self.sock}&sslmode=disable&connect_timeout=10"

    def start(self) -> None:
        if os.geteuid() == 0:
            user = ensure_os_user(PG_USER)
            self.root.mkdir(parents=True)
            self.sock.mkdir()
            for path in (self.root, self.sock):
                os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o700)  # root (Mattermost) still gets in: DAC override
        else:
            self.sock.mkdir(parents=True)
        with open(self.log, "ab") as log:
            subprocess.run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    DB_ROLE,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                cwd="/",
                **self._as_user(),
            )
        settings = {
            "listen_addresses": "",  # Unix socket only
            "unix_socket_directories": str(self.sock),
            "unix_socket_permissions": "0700",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self.proc = Proc("postgres", argv, self.log, cwd="/", **self._as_user())
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", str(self.sock), "-U", DB_ROLE, "-d", "postgres"],
                check=False,
            )
            if ready.returncode == 0:
                break
            if not self.proc.alive():
                raise RuntimeError(f"postgres exited with {self.proc.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not get ready in 60 s; see {self.log}")
            time.sleep(0.1)
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", str(self.sock), "-U", DB_ROLE, DB_NAME],
            check=True,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGINT, timeout=20)  # SIGINT: fast shutdown


def mattermost_config(root: Path, dsn: str) -> dict:
    """Only what differs from Mattermost's defaults; the server fills in the rest."""
    data = root / "mm"
    return {
        "ServiceSettings": {
            "SiteURL": URL,
            "ListenAddress": f"{HOST}:{PORT}",
            "WebserverMode": "disabled",  # API only: no webapp needed
            "EnableSecurityFixAlert": False,
            "EnableLinkPreviews": False,
            "EnablePermalinkPreviews": False,
            "EnableGifPicker": False,
            "EnableBotAccountCreation": True,
            "EnableUserAccessTokens": True,
            "EnablePostUsernameOverride": True,
            "EnablePostIconOverride": True,
            "EnableOutgoingWebhooks": False,
            "EnableLocalMode": False,
            "EnableDeveloper": False,
            "EnableTesting": False,
            "EnableAPIChannelDeletion": True,
            "EnableAPITeamDeletion": True,
            "EnableAPIUserDeletion": True,
            "SessionLengthWebInHours": 24,
            "MaximumLoginAttempts": 1000,
            "EnableAWSMetering": False,
            # The `/incident` slash command, its dialogs and the buttons: the server calls the bot, which
            # listens on loopback; outgoing integrations may reach only these private hosts.
            "EnableCommands": True,
            "AllowedUntrustedInternalConnections": "127.0.0.1/8 ::1 localhost",
        },
        "TeamSettings": {
            "EnableOpenServer": True,
            "EnableUserCreation": True,
            "MaxUsersPerTeam": 1000,
            "MaxChannelsPerTeam": 100000,
            "EnableJoinLeaveMessageByDefault": True,
        },
        "SqlSettings": {
            "DriverName": "postgres",
            "DataSource": dsn,
            "DataSourceReplicas": [],
            "DataSourceSearchReplicas": [],
            "MaxOpenConns": 50,
            "MaxIdleConns": 20,
            "AtRestEncryptKey": secrets.token_hex(16),
        },
        "LogSettings": {
            "EnableConsole": True,
            "ConsoleLevel": "INFO",
            "ConsoleJson": False,
            "EnableColor": False,
            "EnableFile": False,
            "FileLocation": str(data / "logs"),
            "EnableDiagnostics": False,  # telemetry
            "EnableSentry": False,
        },
        "NotificationLogSettings": {"EnableConsole": False, "EnableFile": False},
        "ExperimentalAuditSettings": {"FileEnabled": False},
        "PasswordSettings": {"MinimumLength": 8},
        "FileSettings": {
            "DriverName": "local",
            "Directory": str(data / "files") + "/",
            "ExtractContent": False,
            "PublicLinkSalt": secrets.token_hex(16),
        },
        "EmailSettings": {
            "EnableSignUpWithEmail": True,
            "EnableSignInWithEmail": True,
            "EnableSignInWithUsername": True,
            "RequireEmailVerification": False,
            "SendEmailNotifications": False,
            "SendPushNotifications": False,
            "PushNotificationServer": "",
            "EnableSMTPAuth": False,
            "SMTPServer": "",
        },
        "RateLimitSettings": {"Enable": False},
        # Guest accounts for the authorization matrix (tests/scenarios/test_authz.py).
        "GuestAccountsSettings": {"Enable": True},
        "PrivacySettings": {"ShowEmailAddress": True, "ShowFullName": True},
        "SupportSettings": {"EnableAskCommunityLink": False},
        "AnnouncementSettings": {"AdminNoticesEnabled": False, "UserNoticesEnabled": False, "NoticesURL": ""},
        "LocalizationSettings": {"DefaultServerLocale": "en", "DefaultClientLocale": "en"},
        "MetricsSettings": {"Enable": False},
        "ElasticsearchSettings": {"EnableIndexing": False, "EnableSearching": False},
        "PluginSettings": {
            "Enable": False,
            "EnableUploads": False,
            "EnableMarketplace": False,
            "EnableRemoteMarketplace": False,
            "AutomaticPrepackagedPlugins": False,
            "RequirePluginSignature": False,
            "MarketplaceURL": "",
            "Directory": str(data / "plugins"),
            "ClientDirectory": str(data / "client-plugins"),
        },
        "ImageProxySettings": {"Enable": False},
        "ComplianceSettings": {"Enable": False, "Directory": str(data / "compliance")},
        "ExportSettings": {"Directory": str(data / "export")},
        "ImportSettings": {"Directory": str(data / "import")},
        "JobSettings": {"RunJobs": True, "RunScheduler": True},
        "DataRetentionSettings": {"EnableMessageDeletion": False, "EnableFileDeletion": False},
        "ClusterSettings": {"Enable": False},
    }


class Mattermost:
    def __init__(self, install: Path, root: Path, log: Path, dsn: str) -> None:
        self.install = install
        self.root = root / "mm"
        self.log = log
        self.dsn = dsn
        self.proc: Proc | None = None

    def start(self, timeout: float = 240.0) -> None:
        self.root.mkdir(parents=True)
        config = self.root / "config.json"
        config.write_text(json.dumps(mattermost_config(self.root.parent, self.dsn), indent=2), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
        env["MM_CONFIG"] = str(config)
        # The working directory holds nothing of the server's; i18n/, templates/ and fonts/ are
        # found next to the binary (install/bin/..).
        self.proc = Proc(
            "mattermost",
            [str(self.install / "bin" / "mattermost"), "server", "--config", str(config)],
            self.log,
            cwd=self.root,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while True:
            if not self.proc.alive():
                raise RuntimeError(f"mattermost exited with {self.proc.proc.returncode}; see {self.log}")
            if ping():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mattermost did not answer /api/v4/system/ping in {timeout:.0f} s; see {self.log}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGTERM, timeout=30)


def ping() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/api/v4/system/ping", timeout=2) as response:
            return json.loads(response.read()).get("status") == "OK"
    except (OSError, ValueError):
        return False


def _api(method: str, path: str, body: dict | None = None, token: str | None = None) -> tuple[dict, dict]:
    request = urllib.request.Request(
        f"{URL}/api/v4{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "X-Requested-With": "XMLHttpRequest"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from None


def create_system_admin() -> None:
    """The first user of a server becomes its system admin."""
    user, _ = _api(
        "POST",
        "/users",
        {"username": ADMIN_USERNAME, "email": f"{ADMIN_USERNAME}@example.com", "password": PASSWORD},
    )
    if "system_admin" not in user.get("roles", ""):
        raise RuntimeError(f"the first user did not become system admin: roles={user.get('roles')!r}")


# ---------------------------------------------------------------------------------------------
# session


class Stopped(Exception):
    pass


def _on_term(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def _tee(stream, sinks) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        for sink in sinks:
            sink.write(chunk)
            sink.flush()


def _session_env(artifacts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(
        INCIDENT_BOT_TEST_MM_URL=URL,
        INCIDENT_BOT_TEST_MM_ADMIN_USERNAME=ADMIN_USERNAME,
        INCIDENT_BOT_TEST_MM_ADMIN_PASSWORD=PASSWORD,
        INCIDENT_BOT_TEST_PASSWORD=PASSWORD,
        INCIDENT_BOT_TEST_ARTIFACTS=str(artifacts),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_all(tmp: Path, artifacts: Path) -> tuple[Postgres, Mattermost, dict[str, float]]:
    install = install_dir()
    if not (install / "BUILD-INFO.json").is_file():
        raise SystemExit(f"no Mattermost build in {install}: run python -m tests.integration.server build")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    postgres = Postgres(tmp, artifacts / "postgres.log")
    mattermost = Mattermost(install, tmp, artifacts / "server.log", postgres.dsn())
    try:
        postgres.start()
        timings["postgres"] = time.monotonic() - t0
        t1 = time.monotonic()
        mattermost.start()
        timings["mattermost"] = time.monotonic() - t1
        t2 = time.monotonic()
        create_system_admin()
        timings["admin"] = time.monotonic() - t2
    except BaseException:
        mattermost.stop()
        postgres.stop()
        raise
    return postgres, mattermost, timings


def _offline_check() -> None:
    """Refuse to start outside a namespace whose only interface is loopback."""
    if os.environ.get("INCIDENT_BOT_TEST_ALLOW_NETWORK") == "1":
        return
    # /proc/self/net is this process's network namespace (/sys/class/net may be the host's).
    with open("/proc/self/net/dev", encoding="ascii") as dev:
        interfaces = [line.split(":", 1)[0].strip() for line in dev.readlines()[2:]]
    others = sorted(name for name in interfaces if name != "lo")
    if others:
        raise SystemExit(
            f"refusing to start Mattermost with network interfaces {others}: run it through"
            " tests/integration/run.sh (unshare --net) or set INCIDENT_BOT_TEST_ALLOW_NETWORK=1"
        )


def pytest_argv(args: list[str]) -> list[str]:
    """The defaults plus ``args``; a test path given drops ``tests/scenarios``, a -m its -m."""
    paths = [a for a in args if not a.startswith("-") and (REPO / a.split("::")[0]).exists()]
    marks = [a for a in args if a.startswith("-m")]
    return [*([] if paths else ["tests/scenarios"]), *([] if marks else ["-m", "not fake_only"]), *args]


def session(artifacts: Path, tmp: Path, pytest_args: list[str], serve_only: bool = False) -> int:
    _offline_check()
    artifacts.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)  # the mmtest user must reach its PostgreSQL directory
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    postgres = mattermost = None
    pytest_proc = None
    rc = 1
    try:
        postgres, mattermost, timings = start_all(tmp, artifacts)
        summary = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
        print(f"integration: Mattermost ready at {URL} ({summary}); logs in {artifacts}", flush=True)
        if serve_only:
            print("integration: serving until Ctrl-C", flush=True)
            while mattermost.proc and mattermost.proc.alive():
                time.sleep(1)
            return 1
        argv = [sys.executable, "-m", "pytest", *pytest_argv(pytest_args)]
        print("integration: " + " ".join(argv[2:]), flush=True)
        with open(artifacts / "pytest.log", "ab") as out:
            pytest_proc = subprocess.Popen(
                argv, cwd=REPO, env=_session_env(artifacts), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            tee = threading.Thread(target=_tee, args=(pytest_proc.stdout, [sys.stdout.buffer, out]), daemon=True)
            tee.start()
            while True:
                try:
                    rc = pytest_proc.wait()
                    break
                except KeyboardInterrupt:
                    # pytest got the same Ctrl-C from the terminal; let it write its summary.
                    continue
            tee.join(timeout=5)
        return rc
    except (KeyboardInterrupt, Stopped) as exc:
        print(f"integration: interrupted ({type(exc).__name__} {exc})", flush=True)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"integration: could not start the server: {exc}", file=sys.stderr, flush=True)
        return 3
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if pytest_proc is not None and pytest_proc.poll() is None:
            pytest_proc.terminate()
            try:
                pytest_proc.wait(20)
            except subprocess.TimeoutExpired:
                pytest_proc.kill()
        t0 = time.monotonic()
        if mattermost is not None:
            mattermost.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"integration: stopped everything in {time.monotonic() - t0:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.integration.server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the pinned server (cached)")
    p_build.add_argument("--force", action="store_true")
    sub.add_parser("where", help="print the install directory of the pinned build")
    for name in ("session", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--artifacts", type=Path, required=True)
        p.add_argument("--tmp", type=Path, required=True)
        p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: pytest arguments")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(force=args.force)
        return 0
    if args.command == "where":
        print(install_dir())
        return 0
    extra = list(getattr(args, "pytest_args", []) or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return session(args.artifacts.resolve(), args.tmp.resolve(), extra, serve_only=args.command == "serve")


if __name__ == "__main__":
    sys.exit(main())
