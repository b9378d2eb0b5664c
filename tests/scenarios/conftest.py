"""Scenario fixtures: a Mattermost (the fake by default, a real server under
``make test-integration``), its people, and the bot started through its real entry point
(``python -m incident_bot run``) in its own process, over real sockets.

The code behind them lives in tests/support (botproc, people, scenario) and tests/fakes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.botproc import BotProcess, buttons_env, running_bot
from tests.support.people import Person
from tests.support.slash import running_slash_bot
from tests.support.world import World


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


@pytest.fixture
async def cast(world: World) -> dict[str, Person]:
    """The authorization matrix's accounts, in ``ops`` and ``ops/incidents``: ``gina`` (guest),
    ``dora`` (a person, to be deactivated), ``helper-bot`` (another bot)."""
    if real_server():
        from tests.integration.bootstrap import add_cast as add_real_cast

        return await add_real_cast(world)
    from tests.fakes.world import add_cast

    return await add_cast(world)


@pytest.fixture
async def bot(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot with the test configuration (tests/support/botproc.py TEST_CONFIG)."""
    async for b in running_bot(world, tmp_path):
        yield b


@pytest.fixture
async def announcing_bot(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot that also posts status updates to ~announcements of the ops team."""
    async for b in running_bot(world, tmp_path, 'announcement_channels = { ops = "announcements" }\n'):
        yield b


@pytest.fixture
async def default_playbook_bot(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot configured with ``default_playbook = "basic"``."""
    async for b in running_bot(world, tmp_path, 'default_playbook = "basic"\n'):
        yield b


@pytest.fixture
async def slash_bot(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot with `/incident` registered in both teams and its tokens configured."""
    async for b in running_slash_bot(world, tmp_path):
        yield b


@pytest.fixture
async def buttons_bot(world: World, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """The bot with buttons on (callback_url, actions_secret) and ~announcements of ops."""
    env = buttons_env()
    async for b in running_bot(world, tmp_path, 'announcement_channels = { ops = "announcements" }\n', env):
        yield b
