"""What the bot does after missing events or dying halfway: catch-up, repairs, resumed starts."""

from __future__ import annotations

from datetime import timedelta

from incident_bot.app.channel import PART_PROP
from incident_bot.chat.events import Posted
from incident_bot.domain.models import Status
from tests.support.inprocess import App


async def test_a_command_made_while_the_bot_was_away_is_answered_late(app: App) -> None:
    post = app.chat.person_posts(app.room, app.alice, "@incident-bot list")
    post = post.model_copy(update={"create_at": post.create_at - 120_000, "update_at": post.update_at - 120_000})
    app.chat.posts[post.id] = post
    assert await app.bot.resync.catchup.run("start", since=post.create_at - 1)
    await app.settle()
    assert app.reply_to(post).message.endswith("_(handled after a 2m 00s outage)_")


async def test_a_stale_channel_is_repaired_once_mattermost_answers(app: App) -> None:
    channel = await app.start()
    app.chat.fail_next["patch_channel"] = 1
    await app.say(app.alice, "sev 1", channel)
    assert 1 in app.bot.backlog.stale
    assert "Sev 3" in app.chat.channels[channel.id].header  # the edit failed; the change stands
    assert await app.bot.incidents.repair_stale()
    assert "Sev 1" in app.chat.channels[channel.id].header and not app.bot.backlog.stale


async def test_a_start_cut_short_is_finished_and_answered_once(app: App) -> None:
    channel = await app.start(options="--playbook database")
    async with app.store.transaction() as tx:  # as if the bot died before the item posts and the reply
        incident = await tx.get_incident(1)
        assert incident is not None
        incident.status = Status.STARTING
        await tx.save_incident(incident)
        for item in await tx.list_checklist(1):
            item.post_id = None
            await tx.save_checklist_item(item)
    before = [p for p in app.chat.bot_posts(channel) if str(p.props.get(PART_PROP, "")).startswith("1:item:")]
    assert await app.bot.incidents.resume_unfinished() == 1
    after = [p for p in app.chat.bot_posts(channel) if str(p.props.get(PART_PROP, "")).startswith("1:item:")]
    assert {p.id for p in after} == {p.id for p in before}  # found again, not posted twice
    command = next(p for p in app.chat.posts.values() if p.message.startswith("@incident-bot start"))
    assert len(app.replies_to(command)) == 1


async def test_a_restart_mends_an_item_post_that_shows_an_old_state(app: App) -> None:
    channel = await app.start(options="--playbook database")
    item = next(p for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == "1:item:1")
    await app.say(app.alice, "check 1", channel)
    app.chat.posts[item.id] = app.chat.posts[item.id].model_copy(update={"message": "☐ 1. Page the DBA"})
    assert await app.bot.incidents.repair() == 1
    assert app.chat.posts[item.id].message.startswith("☑ ~~1. Page the DBA~~")


async def test_edits_and_deletions_of_a_pinned_post_follow_it(app: App) -> None:
    channel = await app.start()
    said = await app.post(app.alice, channel, "root cause: DNS")
    await app.react(app.alice, said.id, "pushpin")
    edited = said.model_copy(update={"message": "root cause: expired DNS record", "edit_at": said.create_at + 1})
    assert await app.bot.timeline.post_changed("edited:x", edited, deleted=False) == "edited"
    async with app.store.transaction() as tx:
        entry = await tx.get_timeline_by_post(1, said.id)
    assert entry is not None and entry.text == "root cause: expired DNS record" and entry.data["edited"]
    assert await app.bot.timeline.post_changed("deleted:x", edited, deleted=True) == "deleted"
    async with app.store.transaction() as tx:
        entry = await tx.get_timeline_by_post(1, said.id)
    assert entry is not None and entry.text == "" and entry.data["post_deleted"]


async def test_pins_made_while_away_are_reconciled(app: App) -> None:
    channel = await app.start()
    said = await app.post(app.alice, channel, "graphs attached")
    app.chat.react(said, app.alice, "pushpin")
    assert await app.bot.timeline.reconcile_pins(app.chat.posts[said.id]) == "pinned"
    app.chat.unreact(said, app.alice, "pushpin")
    assert await app.bot.timeline.reconcile_pins(app.chat.posts[said.id]) == "unpinned"


async def test_checklist_and_help(app: App) -> None:
    channel = await app.start(options="--playbook database")
    assert (await app.say(app.bob, "checklist", channel)).startswith("Checklist of incident #1: 0/2 done")
    assert "start <title>" in await app.say(app.alice, "help start")
    assert "frob" in await app.say(app.alice, "help frob")


async def test_a_restart_repairs_active_and_lately_ended_incidents_only(app: App) -> None:
    for title in ("old one", "just ended", "still going"):
        await app.start(title=title)
    await app.say(app.alice, "end", app.channel_of(1))
    await app.say(app.alice, "end", app.channel_of(2))
    async with app.store.transaction() as tx:
        old = await tx.get_incident(1)
        assert old is not None and old.ended_at is not None
        old.ended_at -= timedelta(days=3)  # ended well before the repair window
        await tx.save_incident(old)
    assert await app.bot.incidents.repair() == 2  # #2 (ended lately) and #3 (active); #1 is not read


async def test_catch_up_finds_replies_in_what_it_read_without_asking_per_command(app: App) -> None:
    """The listing that holds a missed command holds the bot's reply too: a command answered
    before a crash is noted, an unanswered one answered once, and no thread is fetched."""
    answered = app.chat.person_posts(app.room, app.alice, "@incident-bot list")
    await app.chat.create_post(
        app.room.id, "earlier answer", root_id=answered.id, props={"incident_bot_reply_to": answered.id}, pending_post_id="p1"
    )
    missed = app.chat.person_posts(app.room, app.bob, "@incident-bot list")
    threads = len(app.chat.called("get_thread"))
    assert await app.bot.resync.catchup.run("start", since=answered.create_at - 1)
    await app.settle()
    assert [r.message for r in app.replies_to(answered)] == ["earlier answer"]
    assert len(app.replies_to(missed)) == 1
    assert len(app.chat.called("get_thread")) == threads
    async with app.store.transaction() as tx:
        assert await tx.get_reply(Posted(post=answered).dedupe_key) is not None
