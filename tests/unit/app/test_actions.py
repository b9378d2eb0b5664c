"""Buttons and their dialogs, in-process: the same use cases as the commands and the ✅ reaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from incident_bot.app.actions import CLICK_BUCKET_SECONDS
from incident_bot.app.channel import PART_PROP
from incident_bot.chat.models import Channel
from incident_bot.domain import buttons, messages, signing
from incident_bot.domain.buttons import Act
from incident_bot.store.base import StoreUnavailable
from incident_bot.web.actions import ActionRoutes
from tests.support.inprocess import BUTTONS_SECRET, App

KEY = BUTTONS_SECRET.encode()


def part(app: App, channel: Channel, name: str) -> str:
    return next(p.id for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == f"1:{name}")


async def timeline_kinds(app: App) -> list[tuple[str, str | None]]:
    async with app.store.transaction() as tx:
        return [(e.kind, e.data.get("via")) for e in await tx.list_timeline(1)]


async def test_tick_by_button_and_by_reaction_are_one_use_case(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    first, second = part(app, channel, "item:1"), part(app, channel, "item:2")
    assert (await app.click(app.alice, first, "tick")).json() == {}
    await app.react(app.alice, second)
    by_button, by_reaction = app.chat.posts[first].message, app.chat.posts[second].message
    assert by_button.replace("1. Page the DBA", "X") == by_reaction.replace("2. Check lag", "X")
    assert [k for k in await timeline_kinds(app) if k[0] == "checklist_checked"] == [
        ("checklist_checked", "button"),
        ("checklist_checked", "reaction"),
    ]
    assert (await app.click(app.alice, first, "tick")).json() == {}  # a double click: nothing more
    assert len([k for k in await timeline_kinds(app) if k[0] == "checklist_checked"]) == 2
    assert (await app.click(app.alice, second, "untick")).json() == {}
    assert app.chat.posts[second].message == "☐ 2. Check lag"
    assert app.chat.posts[second].props["attachments"]  # the bot's edits keep the buttons
    assert app.chat.posts[part(app, channel, "checklist")].message.endswith(
        "React ✅ (or click Tick) on an item in this thread to tick it."
    )


async def test_clicks_are_refused_unless_signed_for_that_post(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    summary, item = part(app, channel, "summary"), part(app, channel, "item:1")
    with capture_logs() as logs:
        # item 1's Tick context arriving from item 2's post
        action = app.chat.posts[item].props["attachments"][0]["actions"][0]
        app.chat.posts[part(app, channel, "item:2")].props["attachments"][0]["actions"][0] = action
        answer = await app.click(app.alice, part(app, channel, "item:2"), "tick")
        assert "not valid" in (answer.ephemeral or "")
        # the summary's Export context signed with another key
        wrong = signing.sign(b"another-key-entirely-000", {"incident": 1, "action": "export", "part": "summary"})
        app.chat.posts[summary].props["attachments"][0]["actions"][3]["integration"]["context"] = wrong
        assert "not valid" in ((await app.click(app.alice, summary, "export")).ephemeral or "")
    assert [entry["reason"] for entry in logs if entry["event"] == "action.refused"] == ["post", "signature"]
    assert not [k for k in await timeline_kinds(app) if k[0] == "checklist_checked"]
    assert buttons.context(KEY, 1, Act.TICK, "item:1") == action["integration"]["context"]


async def test_an_ended_incident_answers_only_the_clicker(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    summary, item = part(app, channel, "summary"), part(app, channel, "item:1")
    await app.say(app.alice, "end fixed", channel)
    posts = len(app.chat.posts)
    for post_id, action, option in ((item, "tick", None), (summary, "sev", "1"), (summary, "end", None)):
        answer = await app.click(app.alice, post_id, action, option)
        assert answer.ephemeral == "Incident #1 has ended; its buttons do nothing until it is reopened."
    assert len(app.chat.posts) == posts and not [c for c in app.chat.calls if c.name == "open_dialog"]


async def test_severity_by_select_as_the_command(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start()
    summary = part(app, channel, "summary")
    assert (await app.click(app.alice, summary, "sev", "1")).json() == {}
    replies = [p for p in app.chat.bot_posts(channel) if p.root_id == summary]
    assert [p.message for p in replies] == ["Incident #1 is now Sev 1 (was Sev 3)."]
    assert "| Severity | Sev 1 |" in app.chat.posts[summary].message
    answer = await app.click(app.bob, summary, "sev", "2")  # bob is not in the incident channel
    assert "sev" in (answer.ephemeral or "") and "Sev 1 |" in app.chat.posts[summary].message


async def test_update_dialog_validates_and_posts_once(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start()
    summary = part(app, channel, "summary")
    assert (await app.click(app.alice, summary, "update")).json() == {}
    opened = [c for c in app.chat.calls if c.name == "open_dialog"]
    trigger, url, dialog = opened[0].args
    assert url == "http://bot.test:9102/mattermost/action-dialog" and dialog["elements"][0]["name"] == "text"
    as_opened = {"url": url, "dialog": dialog}
    assert (await app.submit(app.alice, as_opened, " ", channel)).json() == {"errors": {"text": "Update cannot be empty."}}
    assert (await app.submit(app.alice, as_opened, "Failover done", channel)).json() == {}
    assert (await app.submit(app.alice, as_opened, "Failover done", channel)).json() == {}
    updates = [p for p in app.chat.bot_posts(channel) if p.message.startswith("#### Status update")]
    assert len(updates) == 1 and updates[0].message.endswith("Failover done")
    tampered = {"url": url, "dialog": {**dialog, "state": dialog["state"].replace('"incident":1', '"incident":2')}}
    assert "not valid" in ((await app.submit(app.alice, tampered, "again", channel)).error or "")
    assert trigger


def opened_dialog(app: App) -> dict[str, Any]:
    """The last dialog the bot opened, as ``open_dialog`` got it."""
    _trigger, url, dialog = [c for c in app.chat.calls if c.name == "open_dialog"][-1].args
    return {"url": url, "dialog": dialog}


def status_updates(app: App, channel: Channel) -> list[str]:
    return [p.message for p in app.chat.bot_posts(channel) if p.message.startswith("#### Status update")]


async def test_a_dialog_is_submitted_only_by_who_opened_it(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start()
    await app.say(app.carol, "join 1")  # carol may post updates herself
    assert (await app.click(app.alice, part(app, channel, "summary"), "update")).json() == {}
    alices = opened_dialog(app)
    with capture_logs() as logs:
        answer = await app.submit(app.carol, alices, "replayed as carol", channel)
    assert "not valid" in (answer.error or "")
    assert [(e["reason"], e["user"]) for e in logs if e["event"] == "action.refused"] == [("context", app.carol.id)]
    assert not status_updates(app, channel)
    assert (await app.submit(app.alice, alices, "Failover done", channel)).json() == {}
    assert len(status_updates(app, channel)) == 1


async def test_a_dialog_state_older_than_a_day_is_refused(buttons_app: App, tmp_path: Path) -> None:
    app = buttons_app
    channel = await app.start()
    assert (await app.click(app.alice, part(app, channel, "summary"), "end")).json() == {}
    opened = opened_dialog(app)
    skew = tmp_path / "skew"
    skew.write_text(str(24 * 3600 + 60))  # a day and a minute later
    app.bot.core.clock.skew_file = str(skew)
    with capture_logs() as logs:
        answer = await app.submit(app.alice, opened, "fixed long ago", channel)
    assert "not valid" in (answer.error or "")
    assert [e["reason"] for e in logs if e["event"] == "action.refused"] == ["context"]
    async with app.store.transaction() as tx:
        incident = await tx.get_incident(1)
    assert incident is not None and incident.status != "ended"


async def test_dialog_text_is_taken_as_written_not_parsed_as_a_command(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start()
    summary = part(app, channel, "summary")
    written = 'Failover done.\n\n"replica-2" lags; errors -30%\n- watching'
    assert (await app.click(app.alice, summary, "update")).json() == {}
    assert (await app.submit(app.alice, opened_dialog(app), written, channel)).json() == {}
    [update] = status_updates(app, channel)
    assert update.endswith(written)
    resolution = "rolled back, errors -30% --sev 1 and 'back to normal'"
    assert (await app.click(app.alice, summary, "end")).json() == {}
    assert (await app.submit(app.alice, opened_dialog(app), resolution, channel)).json() == {}
    async with app.store.transaction() as tx:
        incident = await tx.get_incident(1)
    assert incident is not None and incident.status == "ended" and incident.resolution == resolution


async def test_a_guest_is_refused_as_for_commands_and_bots_get_no_answer(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    summary, item = part(app, channel, "summary"), part(app, channel, "item:1")
    guest = app.chat.add_user("gina", roles="system_user system_guest")
    robot = app.chat.add_user("ci", is_bot=True)
    gone = app.chat.add_user("old", delete_at=1_700_000_000_000)
    app.chat.members[channel.id] |= {guest.id, robot.id, gone.id}  # all three in the incident channel
    posts = {p.id: p.message for p in app.chat.posts.values()}
    refusal = messages.guest_refused("incident-bot")
    for action, post_id in (("tick", item), ("update", summary), ("end", summary), ("sev", summary), ("export", summary)):
        assert (await app.click(guest, post_id, action, "1" if action == "sev" else None)).json() == {"ephemeral_text": refusal}
        for account in (robot, gone):
            assert (await app.click(account, post_id, action, "1" if action == "sev" else None)).json() == {}
    assert not [c for c in app.chat.calls if c.name == "open_dialog"]
    assert {p.id: p.message for p in app.chat.posts.values()} == posts  # nothing posted, nothing edited
    assert not [k for k in await timeline_kinds(app) if k[0] != "started"]


def ref_of(text: str | None) -> str:
    assert text and "(ref " in text, text
    return text.split("(ref ", 1)[1].split(")", 1)[0]


async def test_a_database_that_cannot_be_written_is_answered_as_for_commands(
    buttons_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    summary, item = part(app, channel, "summary"), part(app, channel, "item:1")
    assert (await app.click(app.alice, summary, "update")).json() == {}
    opened = opened_dialog(app)

    async def disk_full(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("database or disk is full")

    monkeypatch.setattr(app.bot.actions.checklists, "tick", disk_full)
    with capture_logs() as logs:
        answer = await app.click(app.alice, item, "tick")
    assert answer.error is None and answer.ephemeral == messages.store_unwritable(ref_of(answer.ephemeral))
    assert [e["ref"] for e in logs if e["event"] == "store.unwritable"] == [ref_of(answer.ephemeral)]

    @asynccontextmanager
    async def unwritable() -> AsyncIterator[None]:
        raise StoreUnavailable("database or disk is full")
        yield

    monkeypatch.setattr(app.store, "transaction", unwritable)
    with capture_logs() as logs:
        answer = await app.submit(app.alice, opened, "Failover done", channel)
    assert answer.ephemeral is None and answer.error == messages.store_unwritable(ref_of(answer.error))
    assert [e["ref"] for e in logs if e["event"] == "store.unwritable"] == [ref_of(answer.error)]
    assert not status_updates(app, channel)


async def test_a_failure_is_answered_with_a_ref_and_logged_not_raised(buttons_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    summary, item = part(app, channel, "summary"), part(app, channel, "item:1")
    assert (await app.click(app.alice, summary, "end")).json() == {}
    opened = opened_dialog(app)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    def sync_broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app.bot.actions.checklists, "tick", broken)
    monkeypatch.setattr(app.bot.actions, "_request", sync_broken)  # before a dialog's command runs
    with capture_logs() as logs:
        clicked = await app.click(app.alice, item, "tick")
        submitted = await app.submit(app.alice, opened, "fixed", channel)
    assert clicked.ephemeral == messages.internal_error(ref_of(clicked.ephemeral))
    assert submitted.error == messages.internal_error(ref_of(submitted.error))
    assert "secret" not in (clicked.ephemeral or "") + (submitted.error or "")
    failed = [e for e in logs if e["event"] == "action.failed"]
    assert [e["ref"] for e in failed] == [ref_of(clicked.ephemeral), ref_of(submitted.error)]
    assert all(e["error"] == "RuntimeError" and e["detail"] == "secret detail" for e in failed)


async def test_until_wired_a_click_is_told_the_bot_is_starting(buttons_app: App) -> None:
    app = buttons_app
    channel = await app.start(options="--playbook database")
    item = part(app, channel, "item:1")
    context = app.chat.posts[item].props["attachments"][0]["actions"][0]["integration"]["context"]
    click = {"user_id": app.alice.id, "channel_id": channel.id, "post_id": item, "context": context}
    routes = ActionRoutes()
    server = web.Application()
    for method, path, handler in routes.routes():
        server.router.add_route(method, path, handler)
    async with TestClient(TestServer(server)) as client:
        for path in (buttons.ACTION_PATH, buttons.DIALOG_PATH):
            resp = await client.post(path, json=click)
            assert resp.status == 503
            assert await resp.json() == {"error": "incident-bot is starting; try again in a moment"}
        routes.bind(app.bot.actions)
        resp = await client.post(buttons.ACTION_PATH, json=click)
        assert resp.status == 200 and await resp.json() == {}
    assert app.chat.posts[item].message.startswith("☑")


async def test_a_double_click_across_a_bucket_edge_while_the_first_runs_is_one_click(
    buttons_app: App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = buttons_app
    channel = await app.start()
    summary = part(app, channel, "summary")
    skew = tmp_path / "skew"
    app.bot.core.clock.skew_file = str(skew)
    to_edge = CLICK_BUCKET_SECONDS - time.time() % CLICK_BUCKET_SECONDS
    skew.write_text(str(to_edge - 2))  # the first click 2 s before a bucket's edge
    exports = await slowed_exports(app, monkeypatch)
    with capture_logs() as logs:
        first = asyncio.create_task(app.click(app.alice, summary, "export"))
        await exports.started.wait()
        skew.write_text(str(to_edge + 1))  # the second 3 s later, past the edge, the first still running
        second = await asyncio.wait_for(app.click(app.alice, summary, "export"), 2)
        exports.gate.set()
        answers = [await first, second]
    assert [a.json() for a in answers] == [{}, {}]
    assert len(exports.keys) == 1
    assert [e["event"] for e in logs if e["event"] in ("action.duplicate", "action.handled")] == [
        "action.duplicate",
        "action.handled",
    ]
    assert len([p for p in app.chat.bot_posts(channel) if p.root_id == summary and p.file_ids]) == 1


async def test_two_clicks_at_once_are_one_click(buttons_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    app = buttons_app
    channel = await app.start()
    summary = part(app, channel, "summary")
    exports = await slowed_exports(app, monkeypatch)
    both = asyncio.gather(app.click(app.alice, summary, "export"), app.click(app.alice, summary, "export"))
    await exports.started.wait()
    await asyncio.sleep(0.2)  # the other click has had its look by now
    exports.gate.set()
    assert [a.json() for a in await both] == [{}, {}]
    assert len(exports.keys) == 1
    assert len([p for p in app.chat.bot_posts(channel) if p.root_id == summary and p.file_ids]) == 1


@dataclass
class SlowExports:
    """Exports that wait for ``gate`` once started: a click still in flight."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    keys: list[str] = field(default_factory=list)


async def slowed_exports(app: App, monkeypatch: pytest.MonkeyPatch) -> SlowExports:
    slow = SlowExports()
    export = app.bot.actions.reports.export

    async def slow_export(req: Any, cmd: Any) -> None:
        slow.keys.append(req.key)
        slow.started.set()
        await slow.gate.wait()
        await export(req, cmd)

    monkeypatch.setattr(app.bot.actions.reports, "export", slow_export)
    return slow
