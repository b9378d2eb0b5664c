"""Scenario fixtures: a Mattermost (the fake by default, a real server under
``make test-integration``), its people, and the bot started through its real entry point
(``python -m incident_bot run``) in its own process, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.world import World

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = float(os.environ.get("INCIDENT_BOT_TEST_READY_TIMEOUT", "30"))

TEST_CONFIG = """
log_level = "debug"
log_format = "json"
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


def real_server() -> bool:
    return bool(os.environ.get("INCIDENT_BOT_TEST_MM_URL"))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    if real_server():
        from tests.integration.bootstrap import real_world

        async with real_world() as w:
            yield w
    else:
        from tests.fakes.world import fake_world

        async with fake_world() as w:
            yield w
    for person in [*w.people.values(), w.admin]:
        await person.close()


class BotProcess:
    """The bot as an operator runs it; tests may stop, kill and restart it."""

    def __init__(self, world: World, workdir: Path, config_extra: str = "") -> None:
        self.world = world
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

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_BOT_")}
        env.update(
            INCIDENT_BOT_MATTERMOST_URL=self.world.url,
            INCIDENT_BOT_BOT_TOKEN=self.world.bot_token,
            INCIDENT_BOT_DATABASE=str(self.db_path),
            INCIDENT_BOT_CLOCK_SKEW_FILE=str(self.skew_path),
            PYTHONUNBUFFERED="1",
        )
        return env

    def skew(self, seconds: float) -> None:
        """Set the bot's clock to real time + ``seconds`` (takes effect at its next clock read)."""
        tmp = self.skew_path.with_suffix(".tmp")
        tmp.write_text(str(seconds))
        tmp.replace(self.skew_path)  # atomic: the bot never reads a half-written number

    async def start(self, wait_ready: bool = True) -> None:
        assert self.proc is None or self.proc.returncode is not None, "bot already running"
        self.log_path = self.workdir / f"bot-{self.runs}.log"
        self.runs += 1
        log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "incident_bot", "--config", str(self.config_path), "run",
            cwd=str(REPO), env=self.env(), stdout=log, stderr=asyncio.subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            await self.wait_for_log("bot.ready", timeout=READY_TIMEOUT)

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for path in sorted(self.workdir.glob("bot-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"event": "raw", "line": line})
        return events

    def current_log(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"event": "raw", "line": line})
        return events

    async def wait_for_log(self, event: str, timeout: float = 15, count: int = 1, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.current_log() if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]
            if len(found) >= count:
                return found[count - 1]
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"bot exited ({self.proc.returncode}) before logging {event}:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bot did not log {event} {fields} within {timeout}s:\n{self.log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.05)

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

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the bot's database the way an operator would (read-only)."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()


def _bot_fixture(config_extra: str = ""):
    @pytest.fixture
    async def fixture(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
        bot = BotProcess(world, tmp_path, config_extra)
        await bot.start()
        try:
            yield bot
        finally:
            if bot.proc is not None and bot.proc.returncode is None:
                code = await bot.stop()
                assert code == 0, f"bot exited with {code} on SIGTERM"
            text = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("bot-*.log"))
            keep = os.environ.get("INCIDENT_BOT_TEST_ARTIFACTS")
            if keep:
                dest = Path(keep) / "bot-logs"
                dest.mkdir(parents=True, exist_ok=True)
                for p in tmp_path.glob("bot-*.log"):
                    (dest / f"{os.environ.get('PYTEST_CURRENT_TEST', 'test').split(' ')[0].replace('/', '_').replace(':', '_')}-{p.name}").write_text(p.read_text(errors="replace"))
            assert world.bot_token not in text, "the bot token appeared in the bot's log"
            assert "Traceback" not in text, "a stack trace appeared in the bot's log"

    return fixture


bot = _bot_fixture()
