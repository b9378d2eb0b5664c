"""The runtime's terms as leader, in-process against the fake Mattermost: a term whose
database goes away before it starts stands by and tries again instead of ending the process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from incident_bot import runtime
from incident_bot.app.cursor import Cursor
from incident_bot.config import Settings
from incident_bot.store.base import StoreUnavailable
from tests.fakes.world import fake_world
from tests.support.waiting import eventually


async def test_a_term_that_cannot_read_its_cursor_stands_by_and_serves_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    failures = ["the database is away"]
    load = Cursor.load

    async def flaky(self: Cursor) -> None:
        if failures:
            raise StoreUnavailable(failures.pop())
        await load(self)

    monkeypatch.setattr(Cursor, "load", flaky)
    monkeypatch.setattr(runtime, "TERM_RETRY_SECONDS", 0.01)
    async with fake_world() as world:
        settings = Settings(
            mattermost_url=world.url,
            bot_token=world.bot_token,
            database=str(tmp_path / "incident-bot.db"),
            ops_address="off",
        )
        bot = runtime.Runtime(settings)
        running = asyncio.create_task(bot.run())
        try:

            async def ready() -> bool:
                return bot.health is not None and not await bot.health.not_ready()

            await eventually(ready, what="the second term ready")
            alice = world.people["alice"]
            asked = await alice.dm_bot("help")
            reply = await alice.wait_for_reply(asked)
            assert "start" in reply["message"]
            assert not failures and not running.done()
        finally:
            bot.request_stop()
            await asyncio.wait_for(running, 30)
        for person in world.people.values():
            await person.close()
        await world.admin.close()
