"""The pipeline: one reply per command, duplicates, per-channel order, late answers,
unfinished work and commands answered before a crash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from incident_bot.app.core import pending_id
from incident_bot.app.pipeline import FRESH_MS
from incident_bot.chat.events import Posted
from incident_bot.domain.models import TimelineKind
from tests.support.inprocess import App
from tests.support.waiting import eventually


async def test_a_redelivered_command_is_applied_and_answered_once(app: App) -> None:
    channel = await app.start()
    post = await app.post(app.alice, channel, "@incident-bot note once")
    event = Posted(post=post, channel_type="P", team_id=app.ops.id)
    app.bot.pipeline.handle(event)
    app.bot.pipeline.handle(event, replayed=True)
    await app.settle()
    assert len(app.replies_to(post)) == 1
    async with app.store.transaction() as tx:
        assert [e.kind for e in await tx.list_timeline(1)].count(TimelineKind.NOTE) == 1


async def test_commands_in_one_channel_apply_in_order(app: App) -> None:
    channel = await app.start()
    posts = [app.chat.person_posts(channel, app.alice, f"@incident-bot note n{i}") for i in range(10)]
    for post in posts:
        app.bot.pipeline.handle(Posted(post=post, channel_type="P", team_id=app.ops.id))
    await app.settle()
    async with app.store.transaction() as tx:
        notes = [e.text for e in await tx.list_timeline(1) if e.kind == TimelineKind.NOTE]
    assert notes == [f"n{i}" for i in range(10)]


async def test_unknown_words_and_bare_mentions_get_one_reply(app: App) -> None:
    assert "frobnicate" in await app.say(app.alice, "frobnicate now")
    assert "start" in await app.say(app.alice, "")


async def test_a_bad_argument_gets_the_reason_and_usage(app: App) -> None:
    reply = await app.say(app.alice, "start X --sev 9")
    assert "Severity must be" in reply and "Usage:" in reply


async def test_posts_not_for_the_bot_are_ignored(app: App) -> None:
    post = await app.post(app.alice, app.room, "just chatting")
    assert app.replies_to(post) == []


async def test_a_failing_mattermost_leaves_the_command_for_a_retry(app: App) -> None:
    app.chat.fail_next["create_post"] = 10
    post = await app.post(app.alice, app.room, "@incident-bot list")
    assert app.replies_to(post) == []
    assert app.bot.backlog.pending()  # read again once Mattermost answers
    app.chat.fail_next.clear()
    app.bot.pipeline.handle(Posted(post=post, channel_type="O", team_id=app.ops.id), replayed=True)
    await app.settle()
    assert len(app.replies_to(post)) == 1


async def test_an_error_in_a_use_case_gets_a_reference_not_a_traceback(app: App) -> None:
    app.chat.fail_next["get_user_teams"] = 1  # the team lookup of `list` blows up
    reply = await app.say(app.alice, "list")
    assert reply.startswith("Something went wrong") and "Traceback" not in reply


async def test_a_command_answered_before_a_crash_is_not_answered_again(app: App) -> None:
    post = app.chat.person_posts(app.room, app.alice, "@incident-bot list")
    # the bot replied, then died before noting it
    await app.chat.create_post(
        app.room.id, "earlier answer", root_id=post.id, props={"incident_bot_reply_to": post.id}, pending_post_id=pending_id("x")
    )
    app.bot.pipeline.handle(Posted(post=post, channel_type="O", team_id=app.ops.id), replayed=True)
    await app.settle()
    assert [r.message for r in app.replies_to(post)] == ["earlier answer"]


async def test_a_change_committed_but_not_answered_is_answered_late(app: App) -> None:
    channel = await app.start()
    post = app.chat.person_posts(channel, app.alice, "@incident-bot note half done")
    async with app.store.transaction() as tx:  # applied, then the bot died before replying
        await tx.record_event(Posted(post=post).dedupe_key, app.bot.core.now(), 1)
    app.bot.pipeline.handle(Posted(post=post, channel_type="P", team_id=app.ops.id), replayed=True)
    await app.settle()
    assert len(app.replies_to(post)) == 1


async def test_a_read_only_command_does_not_wait_behind_a_state_change(app: App) -> None:
    """`list` starts at once while the channel's earlier work is still running; the work
    behind that keeps its place; the same `list` delivered twice is answered once."""
    release = asyncio.Event()
    order: list[str] = []

    async def slow_change() -> bool:
        await release.wait()
        order.append("change")
        return True

    async def next_change() -> bool:
        order.append("next")
        return True

    post = app.chat.person_posts(app.room, app.alice, "@incident-bot list")
    app.bot.pipeline.submit(app.room.id, "slow", post.create_at - 1, slow_change)
    event = Posted(post=post, channel_type="O", team_id=app.ops.id)
    app.bot.pipeline.handle(event)
    app.bot.pipeline.handle(event)
    app.bot.pipeline.submit(app.room.id, "next", post.create_at + 1, next_change)
    await eventually(lambda: app.replies_to(post), timeout=5, interval=0.01, what="the reply to list")
    assert order == []  # answered while the state change still runs
    release.set()
    await app.settle()
    assert order == ["change", "next"]
    assert len(app.replies_to(post)) == 1


async def test_a_fresh_read_only_command_delivered_again_is_answered_once(app: App) -> None:
    # Answered without a look at the database (Pipeline._claim, fresh_read): a repeat in this
    # process finds it among the recent reads, even once Mattermost forgot the reply's pending id.
    post = app.chat.person_posts(app.room, app.alice, "@incident-bot help")
    event = Posted(post=post, channel_type="O", team_id=app.ops.id)
    app.bot.pipeline.handle(event)
    await app.settle()
    app.chat.forget_pending_post_ids()
    app.bot.pipeline.handle(event)
    await app.settle()
    assert len(app.replies_to(post)) == 1


async def test_a_fresh_read_only_command_seen_by_another_run_is_answered_once(app: App) -> None:
    # Another process (a restarted bot, a new leader) has no recent reads: within 30 s
    # Mattermost answers the repeated pending_post_id with the reply already made.
    post = app.chat.person_posts(app.room, app.alice, "@incident-bot list")
    event = Posted(post=post, channel_type="O", team_id=app.ops.id)
    app.bot.pipeline.handle(event)
    await app.settle()
    app.bot.pipeline._recent_reads.clear()  # stands for a process that never saw it
    app.bot.pipeline.handle(event)
    await app.settle()
    assert len(app.replies_to(post)) == 1


async def test_an_older_read_only_command_delivered_again_reads_the_record(app: App) -> None:
    # Past FRESH_MS the reply's record in the database decides, not memory nor Mattermost's 30 s.
    post = app.chat.person_posts(app.room, app.alice, "@incident-bot help")
    app.bot.pipeline.handle(Posted(post=post, channel_type="O", team_id=app.ops.id))
    await app.settle()
    app.bot.pipeline._recent_reads.clear()
    app.chat.forget_pending_post_ids()
    old = post.model_copy(update={"create_at": post.create_at - FRESH_MS - 1000})
    app.bot.pipeline.handle(Posted(post=old, channel_type="O", team_id=app.ops.id))
    await app.settle()
    assert len(app.replies_to(post)) == 1


async def test_a_burst_of_replayed_commands_is_claimed_in_a_few_reads(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Catch-up hands the pipeline a thousand commands at once: their claims read the database
    # together (ClaimReads), and each is still answered once, the answered ones not again.
    posts = [app.chat.person_posts(app.room, app.alice, "@incident-bot help") for _ in range(60)]
    for post in posts[:20]:
        app.bot.pipeline.handle(Posted(post=post, channel_type="O", team_id=app.ops.id), replayed=True)
    await app.settle()
    app.chat.forget_pending_post_ids()
    reads = 0
    read = app.store.read

    def counted() -> Any:
        nonlocal reads
        reads += 1
        return read()

    monkeypatch.setattr(app.store, "read", counted)
    for post in posts:
        app.bot.pipeline.handle(Posted(post=post, channel_type="O", team_id=app.ops.id), replayed=True)
    await app.settle()
    assert all(len(app.replies_to(post)) == 1 for post in posts)
    assert 0 < reads < 10, reads  # 60 claims read the database; one read each would be 60
