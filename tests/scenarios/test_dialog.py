"""`/incident start` alone opens a form; its submission starts the incident as `start` does,
from the channel it was opened in. Field errors come back in the form, which stays open."""

from __future__ import annotations

import re

import pytest

from tests.support.botproc import BotProcess
from tests.support.people import ApiError
from tests.support.slash import now_ms, private
from tests.support.world import World


async def test_the_start_form_validates_then_starts_the_incident(world: World, slash_bot: BotProcess) -> None:
    alice, bob = world.alice, world.bob
    ops = world.channel_ids["ops/incidents"]
    async with alice.listen() as events:
        answer = await alice.slash(ops, "/incident start")
        assert not answer.get("text"), answer
        opened = await events.dialog()

    elements = {e["name"]: e for e in opened["dialog"]["elements"]}
    assert list(elements) == ["title", "severity", "playbook", "responders", "update"]
    assert not elements["title"].get("optional")
    assert elements["severity"]["default"] == "3"  # default_severity of the config
    assert [o["value"] for o in elements["playbook"]["options"]] == ["", "database", "basic"]
    assert elements["responders"]["data_source"] == "users" and elements["responders"]["multiselect"]

    since = now_ms()
    wrong = {"title": "  ", "severity": "7", "playbook": "nope", "responders": [world.erin.user_id]}
    refused = await alice.submit_dialog(opened, wrong, ops)
    assert set(refused["errors"]) == {"title", "severity", "playbook", "responders"}, refused
    assert "required" in refused["errors"]["title"]

    good = {
        "title": "Checkout down",
        "severity": "1",
        "playbook": "database",
        "responders": [bob.user_id],
        "update": "Investigating",
    }
    assert await alice.submit_dialog(opened, good, ops) == {}
    started = await alice.wait_for_post(ops, lambda p: "Started incident #1" in p["message"], after_ms=since)
    assert "(Sev 1)" in started["message"] and "Added @bob" in started["message"]
    name = re.search(r"~(incident-[a-z0-9-]+)", started["message"]).group(1)
    room = (await alice.channel_by_name(world.team_ids["ops"], name))["id"]
    assert bob.user_id in await alice.channel_members(room)
    await alice.wait_for_post(room, lambda p: "Investigating" in p["message"])  # the first update
    info = await private(alice, room, "info", "Checkout down")
    assert "Commander: @alice" in info
    assert "Page the on-call DBA" in await private(alice, room, "checklist", "Checklist of incident #1")
    # The update also went to the thread of the start's answer in the origin channel.
    await alice.wait_for_post(ops, lambda p: p["root_id"] == started["id"] and "Investigating" in p["message"])

    # The same submission again (a retry) starts nothing more.
    assert await alice.submit_dialog(opened, good, ops) == {}
    assert "#2" not in await private(alice, ops, "list", "Checkout down")


async def test_a_form_submitted_by_someone_else_or_forged_is_refused(world: World, slash_bot: BotProcess) -> None:
    alice, bob = world.alice, world.bob
    ops = world.channel_ids["ops/incidents"]
    async with alice.listen() as events:
        await alice.slash(ops, "/incident start")
        opened = await events.dialog()
    submission = {"title": "Not mine", "severity": "2"}
    with pytest.raises(ApiError):
        await bob.submit_dialog(opened, submission, ops)
    forged = {**opened, "dialog": {**opened["dialog"], "state": opened["dialog"]["state"][:-4] + "0000"}}
    with pytest.raises(ApiError):
        await alice.submit_dialog(forged, submission, ops)
    assert len([e for e in slash_bot.log_events() if e.get("event") == "dialog.refused"]) == 2
    assert "No active incidents" in await private(alice, ops, "list", "")


async def test_a_form_in_a_channel_the_bot_is_not_in_starts_once_and_closes(world: World, slash_bot: BotProcess) -> None:
    """The bot cannot post its answer there (nor an ephemeral one): the incident still
    starts, the form closes rather than show the start as its error, the first update is
    posted, and the same form submitted again with a field edited starts nothing more."""
    alice = world.alice
    lobby = (await alice.create_channel(world.team_ids["ops"], "lobby"))["id"]
    async with alice.listen() as events:
        await alice.slash(lobby, "/incident start")
        opened = await events.dialog()
    good = {"title": "Lobby fire", "severity": "2", "update": "Evacuating"}
    assert await alice.submit_dialog(opened, good, lobby) == {}
    listed = await private(alice, lobby, "list", "Lobby fire")
    name = re.search(r"~(incident-[a-z0-9-]+)", listed).group(1)
    room = (await alice.channel_by_name(world.team_ids["ops"], name))["id"]
    await alice.wait_for_post(room, lambda p: "Evacuating" in p["message"])  # the first update
    assert await alice.submit_dialog(opened, {**good, "title": "Lobby fire!"}, lobby) == {}
    listed = await private(alice, lobby, "list", "Lobby fire")
    assert "#2" not in listed and "Lobby fire!" not in listed, listed
    assert any(e.get("event") == "dialog.already_started" for e in slash_bot.log_events())
