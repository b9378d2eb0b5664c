"""Notes, 📌 pins, updates, reminders, stats and export, in-process."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from incident_bot.domain.models import TimelineKind
from tests.support.inprocess import App


async def kinds(app: App) -> list[TimelineKind]:
    async with app.store.transaction() as tx:
        return [e.kind for e in await tx.list_timeline(1)]


async def test_note_and_timeline(app: App) -> None:
    channel = await app.start()
    await app.say(app.alice, "note saw a spike at 14:00", channel)
    assert TimelineKind.NOTE in await kinds(app)
    assert "saw a spike" in await app.say(app.alice, "timeline", channel)


async def test_update_goes_to_channel_origin_and_announcements(app: App) -> None:
    channel = await app.start()
    await app.say(app.alice, "update failover done", channel)
    assert any("failover done" in p.message for p in app.chat.bot_posts(channel))
    assert any("failover done" in p.message for p in app.chat.bot_posts(app.room) if p.root_id)
    announcements = next(c for c in app.chat.channels.values() if c.name == "announcements")
    assert any("failover done" in p.message for p in app.chat.bot_posts(announcements))
    assert TimelineKind.STATUS_UPDATE in await kinds(app)


async def test_a_pin_adds_a_post_and_taking_it_off_removes_it(app: App) -> None:
    channel = await app.start()
    said = await app.post(app.alice, channel, "the disk is full")
    await app.react(app.alice, said.id, "pushpin")
    async with app.store.transaction() as tx:
        pinned = await tx.get_timeline_by_post(1, said.id)
    assert pinned is not None and pinned.text == "the disk is full" and "/ops/pl/" in pinned.data["permalink"]
    await app.react(app.alice, said.id, "pushpin", added=False)
    async with app.store.transaction() as tx:
        assert await tx.get_timeline_by_post(1, said.id) is None
        assert said.id not in [e.post_id for e in await tx.list_timeline(1)]


async def test_a_reminder_comes_once_when_overdue(app: App, tmp_path: Path) -> None:
    channel = await app.start(options="--sev 1")
    skew = tmp_path / "skew"
    skew.write_text(str(timedelta(hours=1).total_seconds()))
    app.bot.core.clock.skew_file = str(skew)  # the clock hook the scenario tests use
    assert await app.bot.timeline.send_due_reminders() == 1
    assert await app.bot.timeline.send_due_reminders() == 0
    assert any("status update" in p.message.lower() for p in app.chat.bot_posts(channel))


async def test_stats_and_export(app: App) -> None:
    channel = await app.start()
    await app.say(app.alice, "end", channel)
    assert "1" in await app.dm(app.bob, "stats --team ops")
    reply = await app.say(app.alice, "export", channel)
    assert "incident-1" in reply
    assert app.chat.called("upload_file")
    assert "channel" in (await app.say(app.alice, "export")).lower()  # not from outside the incident channel
