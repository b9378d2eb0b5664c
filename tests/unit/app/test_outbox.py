"""The outbox: posts that follow a committed change are not lost when Mattermost fails or
the bot dies between the commit and the post, and never posted twice."""

from __future__ import annotations

from incident_bot.app.outbox import OUTBOX_PROP
from tests.support.inprocess import App


def copies(app: App, channel_id: str, text: str) -> list[str]:
    return [p.id for p in app.chat.bot_posts(channel_id) if text in p.message and p.message.startswith("#### Status update")]


async def pending(app: App) -> list[str]:
    async with app.store.transaction() as tx:
        return [e.key for e in await tx.pending_outbox()]


async def test_a_post_mattermost_refused_is_queued_and_delivered_once_later(app: App) -> None:
    channel = await app.start()
    app.chat.fail_next["create_post"] = 1  # the channel copy of the update: the first post it makes
    reply = await app.say(app.alice, "update rolled back", channel)
    assert reply.startswith("Posted the status update")
    assert copies(app, channel.id, "rolled back") == []
    assert len(await pending(app)) == 1 and app.bot.backlog.outbox
    assert await app.bot.outbox.deliver_pending()
    assert len(copies(app, channel.id, "rolled back")) == 1
    assert await pending(app) == []
    assert await app.bot.outbox.deliver_pending()  # nothing left, nothing twice
    assert len(copies(app, channel.id, "rolled back")) == 1


async def test_a_post_made_before_a_crash_is_found_not_made_again(app: App) -> None:
    channel = await app.start()
    await app.say(app.alice, "update failover done", channel)
    [copy] = copies(app, channel.id, "failover done")
    key = app.chat.posts[copy].props[OUTBOX_PROP]
    async with app.store.transaction() as tx:  # as if the bot died after posting, before noting it
        entry = await tx.get_outbox(key)
        assert entry is not None and entry.attempts == 1
        entry.done_at = None
        await tx.save_outbox(entry)
    app.chat.forget_pending_post_ids()  # past Mattermost's 30 s memory of them
    assert await app.bot.outbox.deliver_pending()
    assert copies(app, channel.id, "failover done") == [copy]


async def test_a_post_whose_channel_is_gone_is_given_up_not_retried(app: App) -> None:
    channel = await app.start()
    announcements = next(c for c in app.chat.channels.values() if c.name == "announcements")
    app.chat.fail_next["create_post"] = 3  # copy, origin notice and announcement all fail
    await app.say(app.alice, "update checking", channel)
    assert len(await pending(app)) == 3
    del app.chat.channels[announcements.id]  # an admin deleted the announcement channel meanwhile
    assert await app.bot.outbox.deliver_pending()
    assert await pending(app) == []
    assert len(copies(app, channel.id, "checking")) == 1
    assert copies(app, announcements.id, "checking") == []


async def test_an_end_queues_the_final_summary_and_the_origin_notice_with_the_change(app: App) -> None:
    channel = await app.start()
    app.chat.fail_next["create_post"] = 1  # the final summary fails; the reply and the origin notice go out
    await app.say(app.alice, "end done", channel)
    assert not [p for p in app.chat.bot_posts(channel) if p.message.startswith("**Incident #1 ended**")]
    assert [p for p in app.chat.bot_posts(app.room) if p.root_id and "ended" in p.message]
    assert await app.bot.outbox.deliver_pending()
    assert len([p for p in app.chat.bot_posts(channel) if p.message.startswith("**Incident #1 ended**")]) == 1


async def test_a_reminder_mattermost_refused_is_posted_later_and_not_repeated(app: App, tmp_path) -> None:
    channel = await app.start(options="--sev 1")
    skew = tmp_path / "skew"
    skew.write_text("3600")
    app.bot.core.clock.skew_file = str(skew)
    app.chat.fail_next["create_post"] = 1
    assert await app.bot.timeline.send_due_reminders() == 1
    assert not [p for p in app.chat.bot_posts(channel) if "no status update" in p.message]
    assert await app.bot.timeline.send_due_reminders() == 0  # queued: not due again
    assert await app.bot.outbox.deliver_pending()
    assert len([p for p in app.chat.bot_posts(channel) if "no status update" in p.message]) == 1


async def test_an_outage_is_waited_out_but_a_post_refused_again_and_again_is_given_up(app: App) -> None:
    from incident_bot.app.outbox import MAX_REFUSALS

    channel = await app.start()
    app.chat.fail_next["create_post"] = 1
    await app.say(app.alice, "update stuck", channel)
    app.chat.fail_next["create_post"] = 3 * MAX_REFUSALS  # Mattermost down (503) for a long while
    for _ in range(3 * MAX_REFUSALS):
        await app.bot.outbox.deliver_pending()
    assert len(await pending(app)) == 1  # still waiting: an outage ends
    app.chat.refuse_next["create_post"] = MAX_REFUSALS  # now it answers 400 to this post every time
    for _ in range(MAX_REFUSALS):
        await app.bot.outbox.deliver_pending()
    assert await pending(app) == []  # given up (logged as outbox.abandoned), not retried forever
    assert copies(app, channel.id, "stuck") == []
