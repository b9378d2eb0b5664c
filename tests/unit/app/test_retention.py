"""Bounded bookkeeping: 90 simulated days of traffic keep the dedupe keys and reply records
to about the retention horizon, and no event is applied twice, whether it is redelivered
within the horizon, after its key was pruned, or read again by catch-up (also after a long
outage and from a cursor held back as far as holds go)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from incident_bot.app import cursor as cursor_module
from incident_bot.app import retention as retention_module
from incident_bot.app.core import REPLY_PROP
from incident_bot.app.retention import LONGEST_CATCH_UP, Retention
from incident_bot.chat.events import Event, Posted, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Channel, Post
from tests.support.inprocess import App

DAY = 86_400


class Simulation:
    """The bot's clock, the server's and the cursor's idea of real time move together."""

    def __init__(self, app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.app = app
        self.seconds = 0
        self.skew_file = tmp_path / "skew"
        self.skew_file.write_text("0")
        app.bot.core.clock.skew_file = str(self.skew_file)  # the clock hook the scenarios use
        real = cursor_module.wall_ms
        monkeypatch.setattr(cursor_module, "wall_ms", lambda: real() + self.seconds * 1000)
        self.delivered: list[Event] = []

    def advance(self, seconds: int) -> None:
        self.seconds += seconds
        self.skew_file.write_text(str(self.seconds))
        self.app.chat.skew_ms = self.seconds * 1000

    async def deliver(self, event: Event) -> None:
        """As the stream delivers it: the cursor sees it, the pipeline handles it."""
        self.delivered.append(event)
        await self.app.bot.resync.on_event(event)
        await self.app.settle()

    async def say(self, who, channel: Channel, text: str) -> Post:  # type: ignore[no-untyped-def]  # a User
        post = self.app.chat.person_posts(channel, who, f"@incident-bot {text}")
        await self.deliver(Posted(post=post, channel_type=channel.type, channel_name=channel.name, team_id=channel.team_id))
        return post

    async def react(self, who, post_id: str, *, added: bool = True) -> None:  # type: ignore[no-untyped-def]  # a User
        chat = self.app.chat
        if added:
            await self.deliver(ReactionAdded(reaction=chat.react(post_id, who, "white_check_mark")))
        else:
            await self.deliver(ReactionRemoved(reaction=chat.unreact(post_id, who, "white_check_mark")))

    async def counts(self) -> dict[str, int]:
        async with self.app.store.transaction() as tx:
            return await tx.bookkeeping_counts()

    async def what_people_see(self) -> tuple[dict[str, int], list[tuple[int, str, str]], list[tuple[int, int, bool]]]:
        """Replies per command post, every timeline row, every item's tick."""
        replies: dict[str, int] = {}
        for post in self.app.chat.posts.values():
            target = post.props.get(REPLY_PROP)
            if target:
                replies[target] = replies.get(target, 0) + 1
        rows, ticks = [], []
        async with self.app.store.transaction() as tx:
            for number in range(1, 100):
                if await tx.get_incident(number) is None:
                    break
                rows += [(number, str(e.kind), e.text) for e in await tx.list_timeline(number)]
                ticks += [(number, i.number, i.done) for i in await tx.list_checklist(number)]
        return replies, rows, ticks


def test_the_horizon_outlasts_the_longest_catch_up() -> None:
    assert timedelta(days=7, minutes=1) == LONGEST_CATCH_UP
    with pytest.raises(AssertionError):
        Retention(None, None, days=7)  # type: ignore[arg-type]  # refused before anything is used


async def test_ninety_days_stay_bounded_and_nothing_is_applied_twice(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Simulation(app, tmp_path, monkeypatch)
    retention = app.bot.retention
    horizon_days = retention.horizon.days
    dm = app.chat.dm(app.bob)
    commands: list[Post] = []
    sizes: list[int] = []
    channel: Channel | None = None
    ticked = False
    for day in range(90):
        if day % 7 == 0:
            if channel is not None:
                commands.append(await sim.say(app.alice, channel, "end fixed"))
            commands.append(await sim.say(app.alice, app.room, f"start Outage of day {day} --playbook database --invite @bob"))
            channel = app.channel_of(len([c for c in app.chat.channels.values() if c.name.startswith("incident-")]))
            item = next(p for p in app.chat.bot_posts(channel) if p.root_id and p.message.startswith("☐ 1."))
            ticked = False
        assert channel is not None
        sim.advance(3600)
        commands.append(await sim.say(app.bob, channel, f"note day {day}"))
        ticked = not ticked
        await sim.react(app.bob, item.id, added=ticked)  # ticked one day, unticked the next
        commands.append(await sim.say(app.bob, dm, "list"))
        if day == 60:  # the bot is down for 30 days: nothing is pruned that catch-up reads again
            await app.bot.cursor.flush()
            sim.advance(60)
            missed = app.chat.person_posts(channel, app.bob, "@incident-bot note written while the bot was down")
            sim.advance(30 * DAY)
            await retention.prune()
            assert await app.bot.resync.catchup.run("restart") is True
            await app.settle()
            assert "outage" in app.reply_to(missed).message  # answered late, once, not dropped as too old
            commands.append(missed)
            sim.advance(-30 * DAY)  # the rest of the run keeps to 90 days of traffic
        sim.advance(DAY - 3600)
        await retention.prune()
        sizes.append((await sim.counts())["events"])

    seen_before = await sim.what_people_see()
    replies, rows, _ = seen_before
    assert all(replies.get(post.id) == 1 for post in commands)
    assert len([r for r in rows if r[1] == "note"]) == 91  # one a day, and one written during the outage
    # bounded: about the horizon's worth of keys, not 90 days of them
    per_day = max(b - a for a, b in itertools.pairwise(sizes) if b > a)
    assert sizes[-1] <= per_day * (horizon_days + 2), sizes
    assert max(sizes[horizon_days + 2 :]) <= per_day * (horizon_days + 2)
    assert sizes[-1] < len(sim.delivered) / 3
    counts = await sim.counts()
    assert counts["replies"] <= 3 * (horizon_days + 2)  # two commands a day, a start and an end a week

    # every event of the 90 days arrives again: none has a second effect
    for event in list(sim.delivered):
        await sim.deliver(event)
    assert await sim.what_people_see() == seen_before
    # catch-up from the cursor, and from a cursor held back as far as a hold can keep it
    assert await app.bot.resync.catchup.run("reconnect") is True
    await app.settle()
    assert app.bot.cursor.value is not None
    held_back = app.bot.cursor.value - int(LONGEST_CATCH_UP.total_seconds() * 1000)
    assert await app.bot.resync.catchup.run("held", since=held_back) is True
    await app.settle()
    assert await sim.what_people_see() == seen_before
    assert await sim.counts() == counts  # nothing new recorded: every key was still known


async def test_the_bot_prunes_on_its_own_schedule(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    async with app.store.transaction() as tx:
        await tx.record_event("ancient", app.bot.core.now() - timedelta(days=400))
        await tx.record_reply("ancient", "r", app.bot.core.now() - timedelta(days=400))
        await tx.record_event("recent", app.bot.core.now())
    monkeypatch.setattr(retention_module, "PRUNE_EVERY_SECONDS", 0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(app.bot.retention.run(stop))
    try:
        for _ in range(500):
            async with app.store.transaction() as tx:
                if await tx.bookkeeping_counts() == {"events": 1, "replies": 0, "outbox": 0}:
                    break
            await asyncio.sleep(0.01)  # waits for the loop, not for time to pass
    finally:
        stop.set()
        await task
    async with app.store.transaction() as tx:
        assert await tx.event_seen("recent") and not await tx.event_seen("ancient")
