"""Checklist commands and ✅ reactions, in-process."""

from __future__ import annotations

from incident_bot.app.channel import PART_PROP
from incident_bot.chat.events import ReactionAdded
from incident_bot.chat.models import Channel
from tests.support.inprocess import App
from tests.support.waiting import eventually


def item_post(app: App, channel: Channel, number: int) -> str:
    return next(p.id for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == f"1:item:{number}")


async def items(app: App) -> dict[int, tuple[str | None, bool]]:
    async with app.store.transaction() as tx:
        return {i.number: (i.done_by, i.removed) for i in await tx.list_checklist(1, include_removed=True)}


async def test_check_uncheck_add_remove_rename(app: App) -> None:
    channel = await app.start(options="--playbook database")
    await app.say(app.alice, "check 1", channel)
    assert (await items(app))[1] == (app.alice.id, False)
    assert app.chat.posts[item_post(app, channel, 1)].message.startswith("☑ ~~1. Page the DBA~~ — @alice")
    assert "already" in (await app.say(app.alice, "check 1", channel)).lower()
    await app.say(app.alice, "uncheck 1", channel)
    assert (await items(app))[1] == (None, False)
    await app.say(app.alice, "add Tell support", channel)
    assert app.chat.posts[item_post(app, channel, 3)].message == "☐ 3. Tell support"
    await app.say(app.alice, "rename 3 Tell the support desk", channel)
    assert app.chat.posts[item_post(app, channel, 3)].message == "☐ 3. Tell the support desk"
    await app.say(app.alice, "remove 2", channel)
    assert (await items(app))[2] == (None, True)
    assert "no checklist item 9" in await app.say(app.alice, "check 9", channel)
    header = next(p for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == "1:checklist")
    assert "0/2 done" in header.message


async def test_first_add_makes_the_checklist_posts(app: App) -> None:
    channel = await app.start()
    assert not [p for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == "1:checklist"]
    await app.say(app.alice, "add Look at graphs", channel)
    assert item_post(app, channel, 1)


async def test_assign_sends_the_assignee_a_dm(app: App) -> None:
    channel = await app.start(options="--playbook database --invite @bob")
    await app.say(app.alice, "assign 1 @bob", channel)
    dm = next(c for c in app.chat.channels.values() if c.type == "D" and app.bob.id in app.chat.members[c.id])
    assert len(app.chat.bot_posts(dm)) == 1
    assert "@bob" in app.chat.posts[item_post(app, channel, 1)].message
    await app.say(app.alice, "unassign 1", channel)
    assert await app.say(app.alice, "unassign 1", channel) == "Item 1 has no assignee."


async def test_a_tick_reaction_ticks_and_another_members_tick_keeps_it(app: App) -> None:
    channel = await app.start(options="--playbook database --invite @bob")
    post = item_post(app, channel, 1)
    await app.react(app.alice, post)
    assert (await items(app))[1][0] == app.alice.id
    await app.react(app.bob, post, "heavy_check_mark")
    await app.react(app.alice, post, added=False)
    assert (await items(app))[1][0] == app.bob.id  # bob's tick still stands
    await app.react(app.bob, post, "heavy_check_mark", added=False)
    assert (await items(app))[1][0] is None


async def test_a_burst_of_ticks_ends_with_the_summary_showing_them_all(app: App) -> None:
    channel = await app.start(options="--playbook database --invite @bob")
    summary = next(p.id for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == "1:summary")
    for number, who in ((1, app.alice), (2, app.bob)):  # delivered together, applied in the channel's order
        app.bot.pipeline.handle(ReactionAdded(reaction=app.chat.react(item_post(app, channel, number), who, "white_check_mark")))
    await app.settle()
    assert [done for done, _removed in (await items(app)).values()] == [app.alice.id, app.bob.id]
    # Header and summary follow in a pass of their own (ChannelWriter.refresh_soon).
    await eventually(lambda: "| Checklist | 2/2 done |" in app.chat.posts[summary].message, what="the summary shows both")
    assert app.chat.posts[item_post(app, channel, 2)].message.startswith("☑")


async def test_ticks_from_non_members_and_on_ended_incidents_change_nothing(app: App) -> None:
    channel = await app.start(options="--playbook database")
    post = item_post(app, channel, 1)
    await app.react(app.carol, post)  # carol is not in the incident channel
    assert (await items(app))[1][0] is None
    await app.say(app.alice, "end", channel)
    await app.react(app.alice, post)
    assert (await items(app))[1][0] is None
    refusals = app.chat.bot_posts(
        channel, root_id=next(p.id for p in app.chat.bot_posts(channel) if p.props.get(PART_PROP) == "1:checklist")
    )
    assert any("ended" in p.message for p in refusals)


async def test_reconcile_takes_the_state_the_reactions_say(app: App) -> None:
    channel = await app.start(options="--playbook database")
    post = item_post(app, channel, 2)
    app.chat.react(post, app.alice, "white_check_mark")  # made while the bot was away
    assert await app.bot.resync.catchup.checklists.reconcile(post) == "checked"
    assert (await items(app))[2][0] == app.alice.id
    assert await app.bot.resync.catchup.checklists.reconcile(post) == "unchanged"
    app.chat.unreact(post, app.alice, "white_check_mark")
    assert await app.bot.resync.catchup.checklists.reconcile(post) == "unchecked"
