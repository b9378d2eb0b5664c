"""The bot as an operator runs it (``python -m incident_bot run``), in its own process, for
scenario, fuzz and chaos tests; tests may stop, kill, restart it and move its clock."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.support.waiting import eventually
from tests.support.world import World

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = float(os.environ.get("INCIDENT_BOT_TEST_READY_TIMEOUT", "30"))

TEST_CONFIG = """
log_level = "debug"
log_format = "json"
ops_address = "127.0.0.1:0"
default_severity = 3
shutdown_grace_seconds = 5

[reminders]
sev1 = 15
sev2 = 30
sev3 = 60
sev4 = 0

[[playbooks]]
name = "database"
description = "Primary database down"
default_severity = 2
items = ["Page the on-call DBA", "Check replication lag", "Fail over or restore", "Verify error rates"]

[[playbooks]]
name = "basic"
description = "Every incident"
default_severity = 3
items = ["Confirm impact", "Post a status update"]
"""

# The bot reads its clock file on every clock read; when it is idle, the only reader is the
# reminder loop, once per tick (incident_bot.app.timeline.REMINDER_TICK, 1 s).
REMINDER_TICK = 1.0


def parse_log(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "raw", "line": line})
    return events


class ClockReads:
    """Counts the bot's reads of its clock file (inotify IN_OPEN on the work directory)."""

    IN_OPEN = 0x20
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000
    _HEADER = struct.Struct("iIII")

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name.encode()
        self.times: list[float] = []  # time.monotonic() when each read was seen
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, str(directory).encode(), self.IN_OPEN) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory} failed")

    def poll(self) -> int:
        """Read pending notifications; the number of clock reads seen so far."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return len(self.times)
            now = time.monotonic()
            offset = 0
            while offset < len(data):
                _wd, mask, _cookie, length = self._HEADER.unpack_from(data, offset)
                offset += self._HEADER.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                if mask & self.IN_OPEN and name == self.name:
                    self.times.append(now)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BotProcess:
    """The bot as an operator runs it; tests may stop, kill and restart it."""

    def __init__(self, world: World, workdir: Path, config_extra: str = "", env_extra: dict[str, str] | None = None) -> None:
        self.world = world
        self.env_extra = dict(env_extra or {})  # INCIDENT_BOT_* settings that override the file
        self.workdir = workdir
        self.db_path = workdir / "incident-bot.db"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config_extra + TEST_CONFIG)  # top-level keys before the tables
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0
        self.log_path = workdir / "bot-0.log"
        self.exit_codes: list[int] = []
        # The bot reads this file on every clock read (see incident_bot.app.core.Clock).
        self.skew_path = workdir / "clock-skew"
        self.skew(0)
        self._clock: ClockReads | None = None
        self.wrapper: list[str] = []  # argv the bot runs under (tests/support/smalldisk.py: its own mount namespace)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_BOT_")}
        env.update(
            INCIDENT_BOT_MATTERMOST_URL=self.world.url,
            INCIDENT_BOT_BOT_TOKEN=self.world.bot_token,
            INCIDENT_BOT_DATABASE=str(self.db_path),
            INCIDENT_BOT_CLOCK_SKEW_FILE=str(self.skew_path),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env_extra)
        return env

    # ---------------------------------------------------------------------------- the clock

    def skew(self, seconds: float) -> None:
        """Set the bot's clock to real time + ``seconds`` (takes effect at its next clock read)."""
        tmp = self.skew_path.with_suffix(".tmp")
        tmp.write_text(str(seconds))
        tmp.replace(self.skew_path)  # atomic: the bot never reads a half-written number

    async def reminder_ticks_pass(self, timeout: float = 10) -> None:
        """Return once a whole reminder tick has run after this call, on the clock set so far.

        For an idle bot (no command in flight): first no clock read for a moment (so no
        command is finishing), then two more reads: the first is a tick starting, the second
        the next tick, which starts only after the first one finished (posted its reminders).
        """
        clock = self._clock_reads()

        def quiet() -> bool:
            clock.poll()
            return not clock.times or time.monotonic() - clock.times[-1] >= 0.3

        await eventually(quiet, timeout=timeout, interval=0.05, what="the bot idle (no clock reads)")
        mark = clock.poll()
        await eventually(
            lambda: clock.poll() >= mark + 2, timeout=timeout, interval=0.05, what="two reminder ticks (clock reads) of the bot"
        )

    def _clock_reads(self) -> ClockReads:
        if self._clock is None:
            self._clock = ClockReads(self.workdir, self.skew_path.name)
        return self._clock

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self, wait_ready: bool = True) -> None:
        assert self.proc is None or self.proc.returncode is not None, "bot already running"
        self.log_path = self.workdir / f"bot-{self.runs}.log"
        self.runs += 1
        log = open(self.log_path, "wb")  # noqa: ASYNC230, SIM115 - a local file opened once per start; the child writes it, we close our copy below
        self.proc = await asyncio.create_subprocess_exec(
            *self.wrapper,
            sys.executable,
            "-m",
            "incident_bot",
            "--config",
            str(self.config_path),
            "run",
            cwd=str(REPO),
            env=self.env(),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            await self.wait_for_log("bot.ready", timeout=READY_TIMEOUT)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), timeout)
        code = self.proc.returncode
        assert code is not None
        self.exit_codes.append(code)
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def close(self) -> None:
        if self._clock is not None:
            self._clock.close()
            self._clock = None

    # ---------------------------------------------------------------------------- what it says

    def log_events(self) -> list[dict[str, Any]]:
        """Every run's log lines, oldest run first."""
        events: list[dict[str, Any]] = []
        for path in sorted(self.workdir.glob("bot-*.log")):
            events.extend(parse_log(path.read_text(errors="replace")))
        return events

    def current_log(self) -> list[dict[str, Any]]:
        return parse_log(self.log_path.read_text(errors="replace"))

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("bot-*.log")))

    async def wait_for_log(self, event: str, timeout: float = 15, count: int = 1, **fields: Any) -> dict[str, Any]:
        """The ``count``-th line of the current run logging ``event`` with these fields."""

        def found() -> dict[str, Any] | None:
            hits = [e for e in self.current_log() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]
            if len(hits) >= count:
                return hits[count - 1]
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(
                    f"bot exited ({self.proc.returncode}) before logging {event}:\n{self.log_path.read_text()[-3000:]}"
                )
            return None

        try:
            return await eventually(found, timeout=timeout, interval=0.05, what=f"log {event} {fields}")
        except AssertionError:
            raise AssertionError(
                f"bot did not log {event} {fields} within {timeout}s:\n{self.log_path.read_text()[-3000:]}"
            ) from None

    async def ops_url(self) -> str:
        """``http://host:port`` of the bot's /healthz, /readyz and /metrics (it listens on a free port)."""
        line = await self.wait_for_log("ops.listening")
        return f"http://{line['address']}"

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the bot's database the way an operator would (read-only)."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def answered(self, post: dict[str, Any]) -> bool:
        """The bot noted its reply to this command post (so a redelivery is not answered again)."""
        try:
            return bool(self.db("select 1 from replies where command_key = ?", f"posted:{post['id']}"))
        except sqlite3.Error:
            return False

    async def wait_answered(self, post: dict[str, Any], timeout: float = 30) -> None:
        await eventually(
            lambda: self.answered(post),
            timeout=timeout,
            what=f"the bot's reply noted for {post['id']} ({post.get('message', '')[:60]!r})",
        )


async def run_cli(
    world: World, workdir: Path, *args: str, config_extra: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run ``python -m incident_bot --config … ARGS`` once, as an operator would, with the test
    configuration and the world's server and token (``env`` overrides); (exit code, output)."""
    bot = BotProcess(world, workdir, config_extra)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "incident_bot",
        "--config",
        str(bot.config_path),
        *args,
        cwd=str(workdir),
        env={**bot.env(), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def keep_logs(bot: BotProcess, dest_dir: str) -> None:
    """Copy the bot's logs to ``dest_dir``/bot-logs, named after the running test."""
    dest = Path(dest_dir) / "bot-logs"
    dest.mkdir(parents=True, exist_ok=True)
    test = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0].replace("/", "_").replace(":", "_")
    for p in bot.workdir.glob("bot-*.log"):
        (dest / f"{test}-{p.name}").write_text(p.read_text(errors="replace"))


def free_port() -> int:
    """A TCP port free on loopback now (for a listener whose URL must be known before it starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ACTIONS_SECRET = "test-actions-secret-0123456789abcdef"


def buttons_env() -> dict[str, str]:
    """Settings that turn buttons on: the ops listener on a port known in advance, Mattermost
    calling it there, and the signing secret."""
    port = free_port()
    return {
        "INCIDENT_BOT_OPS_ADDRESS": f"127.0.0.1:{port}",
        "INCIDENT_BOT_CALLBACK_URL": f"http://127.0.0.1:{port}",
        "INCIDENT_BOT_ACTIONS_SECRET": ACTIONS_SECRET,
    }


async def running_bot(
    world: World, workdir: Path, config_extra: str = "", env_extra: dict[str, str] | None = None
) -> AsyncIterator[BotProcess]:
    """Start a bot, hand it out, then check it stops with 0 and logged no secret and no stack trace."""
    bot = BotProcess(world, workdir, config_extra, env_extra)
    await bot.start()
    try:
        yield bot
    finally:
        try:
            if bot.proc is not None and bot.proc.returncode is None:
                code = await bot.stop()
                assert code == 0, f"bot exited with {code} on SIGTERM"
            keep = os.environ.get("INCIDENT_BOT_TEST_ARTIFACTS")
            if keep:
                keep_logs(bot, keep)
            text = bot.log_text()
            assert world.bot_token not in text, "the bot token appeared in the bot's log"
            assert ACTIONS_SECRET not in text, "the actions secret appeared in the bot's log"
            assert "Traceback" not in text, "a stack trace appeared in the bot's log"
        finally:
            bot.close()
