"""The slash command's adapter in-process: the token check, and where answers go when they
are quick, late, private or public (the chat double records what Mattermost would get)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from incident_bot.app.core import REPLY_PROP
from incident_bot.store.base import StoreUnavailable
from incident_bot.web import dialogs
from incident_bot.web.dialogs import CALLBACK_ID, StartDialog
from incident_bot.web.slash import SlashCommand
from incident_bot.web.wiring import Wiring, token_matches
from tests.support.inprocess import App

TOKEN = "the-command-token"
SLASH = web.AppKey("slash", SlashCommand)


def test_the_token_must_be_one_of_the_configured_ones() -> None:
    assert token_matches("b", ["a", "b"])
    assert not token_matches("c", ["a", "b"])
    assert not token_matches("", ["a", ""])
    assert not token_matches("a", [])


async def serve(app: App, answer_within: float) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    bot = app.bot
    slash = SlashCommand([TOKEN], StartDialog(TOKEN, lambda: "http://bot.test"), answer_within=answer_within)
    slash.wiring = slash.dialog.wiring = Wiring(bot.core, bot.pipeline, bot.runner, bot.incidents, bot.timeline)
    server = web.Application()
    server.router.add_post("/mattermost/command", slash.handle)
    server.router.add_post("/mattermost/dialog", slash.dialog.handle)
    server[SLASH] = slash
    async with TestClient(TestServer(server)) as client:
        yield client


@pytest.fixture
async def quick(app: App) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for client in serve(app, answer_within=30):
        yield client


@pytest.fixture
async def late(app: App) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Every answer misses the response: it has gone before the command ran."""
    async for client in serve(app, answer_within=0):
        yield client


def form(app: App, text: str, trigger: str, **extra: str) -> dict[str, str]:
    return {
        "token": TOKEN,
        "team_id": app.ops.id,
        "channel_id": app.room.id,
        "user_id": app.alice.id,
        "user_name": "alice",
        "command": "/incident",
        "text": text,
        "trigger_id": trigger,
        "response_url": "http://chat.test/hooks/commands/abcdefghijklmnopqrstuvwxyz",
        **extra,
    }


async def call(client: TestClient[web.Request, web.Application], fields: dict[str, str]) -> tuple[int, Any]:
    resp = await client.post("/mattermost/command", data=fields)
    return resp.status, await resp.json() if resp.status == 200 else await resp.text()


async def test_a_wrong_token_runs_nothing(app: App, quick: TestClient[web.Request, web.Application]) -> None:
    status, _ = await call(quick, {**form(app, "start Forged", "t1"), "token": "guess"})
    assert status == 401
    await app.settle()
    assert not [c for c in app.chat.calls if c.name in ("create_post", "create_channel")]


async def test_a_private_answer_is_the_response_and_a_change_is_posted(
    app: App, quick: TestClient[web.Request, web.Application]
) -> None:
    status, answer = await call(quick, form(app, "list", "t1"))
    assert status == 200 and answer["response_type"] == "ephemeral"
    assert answer["text"] == "No active incidents in your teams."
    status, answer = await call(quick, form(app, "start Disk full", "t2"))
    assert answer["text"] == ""
    started = [p for p in app.chat.posts.values() if str(p.props.get(REPLY_PROP, "")).startswith("slash:")]
    assert len(started) == 1 and started[0].message.startswith("Started incident #1")
    assert started[0].user_id == app.bot.core.bot_id and started[0].root_id == ""


async def test_late_private_answers_go_through_the_response_url(app: App, late: TestClient[web.Request, web.Application]) -> None:
    status, answer = await call(late, form(app, "help", "t1"))
    assert status == 200 and answer["text"] == ""
    await app.settle()
    assert len(app.chat.command_responses) == 1
    sent = app.chat.command_responses[0]
    assert sent["response_url"].endswith("/hooks/commands/abcdefghijklmnopqrstuvwxyz")
    assert sent["response"]["response_type"] == "ephemeral" and "/incident" in sent["response"]["text"]


async def test_a_retry_with_the_same_trigger_is_answered_once(app: App, quick: TestClient[web.Request, web.Application]) -> None:
    assert (await call(quick, form(app, "start Disk full", "t1")))[0] == 200
    assert (await call(quick, form(app, "start Disk full", "t1")))[1]["text"] == ""
    await app.settle()
    assert len([p for p in app.chat.posts.values() if p.message.startswith("Started incident")]) == 1
    assert len([c for c in app.chat.channels.values() if c.name.startswith("incident-")]) == 1


async def test_in_a_channel_the_bot_cannot_post_in_the_answer_is_private(
    app: App, quick: TestClient[web.Request, web.Application]
) -> None:
    """E.g. a DM between two people: the bot may not read or post there, so only the person
    who typed the command hears back."""
    status, answer = await call(quick, form(app, "start Disk full", "t1", channel_id="a" * 26))
    assert status == 200 and answer["text"].startswith("Started incident #1")
    assert not [p for p in app.chat.posts.values() if p.message.startswith("Started incident")]


async def test_start_alone_opens_the_form_once_per_trigger(app: App, quick: TestClient[web.Request, web.Application]) -> None:
    for _ in range(2):
        status, answer = await call(quick, form(app, "start", "t1"))
        assert status == 200 and answer["text"] == ""
    assert len(app.chat.dialogs) == 1
    opened = app.chat.dialogs[0]
    assert opened["trigger_id"] == "t1" and opened["url"] == "http://bot.test/mattermost/dialog"
    assert [e["name"] for e in opened["dialog"]["elements"]] == ["title", "severity", "playbook", "responders", "update"]


# --- the start dialog --------------------------------------------------------------------

NOT_IN = "a" * 26  # a channel the bot cannot post in (a public one it is not a member of)


async def submit(
    client: TestClient[web.Request, web.Application], app: App, channel_id: str, submission: dict[str, Any], state: str = ""
) -> tuple[int, Any, str]:
    """Submit the form opened in ``channel_id`` (a new one unless ``state`` names one)."""
    dialog: StartDialog = client.server.app[SLASH].dialog
    state = state or dialog.state_for(app.alice.id, channel_id, app.ops.id)
    body = {"callback_id": CALLBACK_ID, "state": state, "user_id": app.alice.id, "submission": submission}
    resp = await client.post("/mattermost/dialog", json=body)
    return resp.status, await resp.json() if resp.status == 200 else await resp.text(), state


def incident_rooms(app: App) -> list[str]:
    return [c.id for c in app.chat.channels.values() if c.name.startswith("incident-")]


async def test_a_form_started_where_the_bot_cannot_post_closes_and_answers_privately(
    app: App, quick: TestClient[web.Request, web.Application]
) -> None:
    """The incident started: success is not shown as the form's error, the first update is
    posted, and the form submitted again (a field edited) starts no second incident."""
    good = {"title": "Checkout down", "severity": "2", "update": "Investigating"}
    status, answer, state = await submit(quick, app, NOT_IN, good)
    assert status == 200 and answer == {}, answer
    await app.settle()
    assert [e["message"][:18] for e in app.chat.ephemeral if e["channel_id"] == NOT_IN] == ["Started incident #"]
    (room,) = incident_rooms(app)
    assert [p for p in app.chat.posts.values() if p.channel_id == room and "Investigating" in p.message]
    status, answer, _ = await submit(quick, app, NOT_IN, {**good, "title": "Checkout down!"}, state)
    assert status == 200 and answer == {}, answer
    await app.settle()
    assert len(incident_rooms(app)) == 1


async def test_a_form_whose_start_answers_late_still_posts_its_first_update(
    app: App, quick: TestClient[web.Request, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dialogs, "FINISH_WITHIN", 0.0)
    status, answer, _ = await submit(quick, app, app.room.id, {"title": "Slow start", "severity": "3", "update": "Looking"})
    assert status == 200 and answer == {}
    await app.settle()
    await asyncio.sleep(0.1)
    await app.settle()
    (room,) = incident_rooms(app)
    assert [p for p in app.chat.posts.values() if p.channel_id == room and "Looking" in p.message]


async def test_a_refused_form_stays_open_with_the_refusal(app: App, quick: TestClient[web.Request, web.Application]) -> None:
    async def no_team(*_: Any, **__: Any) -> Any:
        from incident_bot.app.request import UserError

        raise UserError("Not here.")

    app.bot.incidents.teams.one = no_team  # type: ignore[method-assign]
    status, answer, _ = await submit(quick, app, app.room.id, {"title": "Nope", "severity": "3"})
    assert status == 200 and answer == {"error": "Not here."}
    assert not incident_rooms(app)


async def test_a_full_disk_or_a_bug_answers_the_form_and_the_command_not_with_a_500(
    app: App, quick: TestClient[web.Request, web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    core = app.bot.core

    def full(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("database or disk is full")

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    with capture_logs() as logged:
        with monkeypatch.context() as m:
            m.setattr(core.store, "transaction", full)
            status, answer = await call(quick, form(app, "start", "t1"))
        assert status == 200 and answer["response_type"] == "ephemeral", answer
        assert answer["text"].startswith("I cannot save anything right now"), answer
        with monkeypatch.context() as m:
            m.setattr(core, "find_playbook", full)
            status, answer, _ = await submit(quick, app, app.room.id, {"title": "Disk", "severity": "3", "playbook": "database"})
        assert status == 200 and answer["error"].startswith("I cannot save anything right now"), answer
        with monkeypatch.context() as m:
            m.setattr(core, "find_playbook", broken)
            status, answer, _ = await submit(quick, app, app.room.id, {"title": "Bug", "severity": "3", "playbook": "database"})
        assert status == 200 and answer["error"].startswith("Something went wrong (ref "), answer
        with monkeypatch.context() as m:
            m.setattr(app.chat, "open_dialog", broken)
            status, answer = await call(quick, form(app, "start", "t2"))
        assert status == 200 and answer["text"].startswith("Something went wrong (ref "), answer
    unwritable = [e for e in logged if e["event"] == "store.unwritable"]
    assert len(unwritable) == 2 and all(e["ref"] for e in unwritable)
    failed = [e for e in logged if e["event"] in ("dialog.failed", "slash.form_failed")]
    assert len(failed) == 2 and all(e["ref"] and e["error"] == "RuntimeError" for e in failed)
    assert not incident_rooms(app)
