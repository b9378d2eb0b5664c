"""The server misbehaves: duplicates, garbage frames, dropped sockets, rate limits.

These need the fake's fault injection, so they run against the fake server only.
"""

from __future__ import annotations

import json

import pytest

from tests.support.botproc import BotProcess
from tests.support.scenario import mention, start_incident
from tests.support.world import World

pytestmark = pytest.mark.fake_only


async def test_same_posted_event_twice_makes_one_incident(world: World, bot: BotProcess):
    post = await world.alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} start Duplicate me")
    await world.alice.wait_for_reply(post, contains="Started")
    original = next(e for e in world.fake.events_for(world.bot_user_id, "posted") if post["id"] in e["data"]["post"])
    for _ in range(2):
        await world.fake.faults.send_event("posted", original["data"], original["broadcast"], world.bot_user_id)
    await bot.wait_for_log("event.duplicate", count=2)
    assert bot.db("select count(*) from incidents") == [(1,)]
    assert len(await world.alice.replies_to(post)) == 1
    created = [r for r in world.fake.requests if r[0] == "POST" and r[1] == "/api/v4/channels"]
    assert len(created) == 1


async def test_malformed_frames_are_logged_and_ignored(world: World, bot: BotProcess):
    for frame in [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"event": "posted", "data": {"post": "{broken"}, "broadcast": {}, "seq": 99}),
        json.dumps({"event": "reaction_added", "data": {"reaction": 5}, "broadcast": {}, "seq": 100}),
        json.dumps({"event": "posted", "seq": 101}),
    ]:
        await world.fake.faults.send_raw(frame, world.bot_user_id)
    await bot.wait_for_log("event.malformed", count=4)
    number, *_ = await start_incident(world, world.alice, "Still alive")
    assert number == 1


async def test_dropped_socket_reconnects_and_commands_still_work(world: World, bot: BotProcess):
    await start_incident(world, world.alice, "Before the drop")
    await world.fake.faults.drop_socket()
    await bot.wait_for_log("bot.ready", count=2, timeout=30)
    number, *_ = await start_incident(world, world.alice, "After the drop")
    assert number == 2


async def test_429_on_channel_creation_is_waited_out_and_created_once(world: World, bot: BotProcess):
    world.fake.faults.rate_limit(r"^/api/v4/channels$", method="POST", times=2, retry_after=1)
    number, _channel, post, _reply = await start_incident(world, world.alice, "Rate limited")
    assert number == 1
    created = [r for r in world.fake.requests if r[0] == "POST" and r[1] == "/api/v4/channels"]
    assert [status for *_, status in created] == [429, 429, 201]
    assert len(await world.alice.replies_to(post)) == 1
    await bot.wait_for_log("mattermost.retry", status=429)


async def test_server_error_gives_a_ref_and_changes_nothing(world: World, bot: BotProcess):
    _number, _channel, *_ = await start_incident(world, world.alice, "Flaky server")
    world.fake.faults.fail(r"^/api/v4/teams/[a-z0-9]+/members/[a-z0-9]+$", 400, method="GET")
    dm = await world.bob.dm(world.bot_user_id, "list")
    r = await world.bob.wait_for_reply(dm)
    assert r["message"].startswith("Something went wrong (ref ") and r["message"].endswith("); nothing was changed.")
    event = await bot.wait_for_log("command.failed")
    assert event["ref"] in r["message"]
