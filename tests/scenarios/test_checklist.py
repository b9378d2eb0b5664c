"""Checklists ticked by reactions and commands, and playbooks."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.botproc import BotProcess
from tests.support.people import Person
from tests.support.scenario import checklist_posts, mention, start_incident, wait_message
from tests.support.world import World


async def test_playbook_checklist_posted_and_ticked_by_reaction(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    _number, channel, *_ = await start_incident(world, alice, f"DB down --playbook database --invite @{bob.username}")
    header, items = await checklist_posts(alice, channel["id"])
    assert [p["message"] for p in items] == [
        "☐ 1. Page the on-call DBA",
        "☐ 2. Check replication lag",
        "☐ 3. Fail over or restore",
        "☐ 4. Verify error rates",
    ]
    assert "0/4 done" in header["message"]
    pinned = (await alice.pinned(channel["id"]))[0]
    assert "| Checklist | 0/4 done |" in pinned["message"]
    assert bot.db("select severity from incidents") == [(2,)]  # the playbook's default

    await bob.react(items[2]["id"], "white_check_mark")
    item = await wait_message(
        alice, items[2]["id"], rf"^☑ ~~3\. Fail over or restore~~ — @{re.escape(bob.username)} \d\d:\d\d UTC$"
    )
    assert item
    await wait_message(alice, header["id"], r"1/4 done")
    await wait_message(alice, pinned["id"], r"\| Checklist \| 1/4 done \|")
    await bob.unreact(items[2]["id"], "white_check_mark")
    await wait_message(alice, items[2]["id"], r"^☐ 3\. Fail over or restore$")
    await wait_message(alice, header["id"], r"0/4 done")
    kinds = [k for (k,) in bot.db("select kind from timeline where kind like 'checklist%' order by id")]
    assert kinds == ["checklist_checked", "checklist_unchecked"]


async def test_two_tickers_then_one_removes_stays_ticked(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    _number, channel, *_ = await start_incident(world, alice, f"Two tickers --playbook basic --invite @{bob.username}")
    _, items = await checklist_posts(alice, channel["id"])
    await alice.react(items[0]["id"], "white_check_mark")
    await wait_message(alice, items[0]["id"], r"^☑")
    await bob.react(items[0]["id"], "heavy_check_mark")
    await bot.wait_for_log("reaction.handled", outcome="unchanged")
    await alice.unreact(items[0]["id"], "white_check_mark")
    await bot.wait_for_log("reaction.handled", outcome="kept:other-tick")
    post = await wait_message(alice, items[0]["id"], rf"^☑ ~~1\. Confirm impact~~ — @{re.escape(bob.username)}")
    assert post
    await bob.unreact(items[0]["id"], "heavy_check_mark")
    await wait_message(alice, items[0]["id"], r"^☐ 1\. Confirm impact$")


async def test_non_member_and_bot_reactions_change_nothing(world: World, bot: BotProcess):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Ignored ticks --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    # carol is not in the channel: the fake lets the test post a reaction event as if she could
    if world.fake is not None:
        await world.fake.faults.send_event(
            "reaction_added",
            {
                "reaction": {
                    "user_id": world.carol.user_id,
                    "post_id": items[0]["id"],
                    "emoji_name": "white_check_mark",
                    "create_at": 1,
                }
            },
            {"channel_id": channel["id"]},
            user=world.bot_user_id,
        )
        await bot.wait_for_log("reaction.handled", outcome="ignored:not-a-member")
    # the bot's own reaction (made with its token) is ignored too
    as_bot = Person(world.url, world.bot_token, world.bot_username, world.bot_user_id)
    try:
        await as_bot.react(items[1]["id"], "white_check_mark")
    finally:
        await as_bot.close()
    # the bot handles a channel's events in order: once a later ✅ there is handled, so was its own
    probe = await alice.post(channel["id"], "not a checklist item")
    await alice.react(probe, "white_check_mark")
    await bot.wait_for_log("reaction.handled", post=probe["id"])
    assert bot.db("select count(*) from checklist_items where done_by is not null") == [(0,)]
    assert (await alice.get_post(items[1]["id"]))["message"].startswith("☐")


async def test_twenty_people_tick_twenty_items_at_once(world: World, bot: BotProcess):
    alice = world.alice
    items_text = "; ".join(f"step {i}" for i in range(1, 21))
    p = await alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} playbook create twenty {items_text}")
    await alice.wait_for_reply(p, contains="Created playbook")
    _number, channel, *_ = await start_incident(world, alice, "Twenty --playbook twenty")
    header, items = await checklist_posts(alice, channel["id"])
    assert len(items) == 20
    # 20 reactions at the same moment (by the members of the channel, several emoji per person)
    people = [alice]
    emojis = ["white_check_mark", "heavy_check_mark", "ballot_box_with_check"]
    await asyncio.gather(*(people[0].react(post["id"], emojis[i % 3]) for i, post in enumerate(items)))
    await wait_message(alice, header["id"], r"20/20 done", timeout=60)
    pinned = (await alice.pinned(channel["id"]))[0]
    await wait_message(alice, pinned["id"], r"\| Checklist \| 20/20 done \|", timeout=30)
    assert bot.db("select count(*) from checklist_items where done_by is not null") == [(20,)]


async def test_checklist_commands(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, "Commands --playbook basic")
    ch = channel["id"]

    async def say(text: str) -> str:
        post = await alice.post(ch, f"{mention(world)} {text}")
        return (await alice.wait_for_reply(post))["message"]

    assert await say("check 1") == "Ticked item 1 (Confirm impact) — 1/2 done."
    assert await say("check 1") == "Item 1 is already ticked."
    assert await say("uncheck 1") == "Unticked item 1 (Confirm impact) — 0/2 done."
    assert await say("add Roll back the deploy") == f"Added item 3 to the checklist of incident #{number} (0/3 done)."
    assert (await say("remove 2")).startswith("Removed item 2 (Post a status update)")
    assert await say("add Tell support") == f"Added item 4 to the checklist of incident #{number} (0/3 done)."
    assert await say("rename 3 Roll back deploy 42") == "Item 3 now reads: Roll back deploy 42 (was: Roll back the deploy)"
    assert await say(f"assign 3 @{bob.username}") == f"Item 3 (Roll back deploy 42) is assigned to @{bob.username}."
    bob_dm = await bob.dm_channel(world.bot_user_id)
    dm = await bob.wait_for_post(bob_dm["id"], lambda p: "assigned you checklist item 3" in p["message"])
    assert f"incident #{number}" in dm["message"]
    assert await say("unassign 3") == "Item 3 (Roll back deploy 42) has no assignee now."
    assert await say("unassign 3") == "Item 3 has no assignee."
    assert await say("check 2") == f"Incident #{number} has no checklist item 2. `{mention(world)} checklist` shows them."
    assert (await say("check 99")).startswith(f"Incident #{number} has no checklist item 99.")
    assert (await say("check x")).startswith("`x` is not an item number.")
    assert "The text is empty." in (await say("add"))
    assert await say(f"assign 1 @{world.dave.username}") == f"@{world.dave.username} is not in the team of incident #{number}."
    text = await say("checklist")
    assert text.splitlines() == [
        f"Checklist of incident #{number}: 0/3 done",
        "☐ 1. Confirm impact",
        "☐ 3. Roll back deploy 42",
        "☐ 4. Tell support",
    ]
    _header, items = await checklist_posts(alice, ch)
    assert "~~2. Post a status update~~ (removed)" in [p["message"] for p in items]
    # a non-member cannot change it
    p = await world.carol.post(world.channel_ids["ops/incidents"], f"{mention(world)} join {number}")
    await world.carol.wait_for_reply(p)
    p = await bob.dm(world.bot_user_id, "check 1")
    r = await bob.wait_for_reply(p)
    assert "works only in an incident channel" in r["message"]


async def test_ticks_on_ended_incident_are_refused(world: World, bot: BotProcess):
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Over --playbook basic")
    header, items = await checklist_posts(alice, channel["id"])
    p = await alice.post(channel["id"], f"{mention(world)} end")
    await alice.wait_for_reply(p)
    await alice.react(items[0]["id"], "white_check_mark")
    refusal = await alice.wait_for_post(channel["id"], lambda q: "Ticks are not recorded" in q["message"])
    assert refusal["root_id"] == header["id"]
    assert f"Incident #{number} already ended" in refusal["message"]
    assert bot.db("select count(*) from checklist_items where done_by is not null") == [(0,)]


@pytest.mark.fake_only  # redelivery needs the fake's fault injection
async def test_duplicated_reaction_event_has_one_effect(world: World, bot: BotProcess):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Dupe tick --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    await alice.react(items[0]["id"], "white_check_mark")
    await wait_message(alice, items[0]["id"], r"^☑")
    await world.fake.faults.redeliver_last("reaction_added", world.bot_user_id)
    await bot.wait_for_log("event.duplicate")
    kinds = [k for (k,) in bot.db("select kind from timeline where kind = 'checklist_checked'")]
    assert kinds == ["checklist_checked"]


async def test_playbooks_from_config_database_default_and_unknown(world: World, default_playbook_bot: BotProcess):
    bot = default_playbook_bot
    if True:  # (kept indented: the body reads as before)
        alice = world.alice
        ch = world.channel_ids["ops/incidents"]

        async def say(text: str) -> str:
            post = await alice.post(ch, f"{mention(world)} {text}")
            return (await alice.wait_for_reply(post))["message"]

        listing = await say("playbooks")
        assert "`database`" in listing and "`basic` (default)" in listing and "read-only" in listing
        assert (await say("playbook create oncall Page primary; Page secondary")) == "Created playbook `oncall` with 2 items."
        assert (await say("playbook add oncall Open a bridge")) == "Added item 3 to playbook `oncall`."
        assert (await say("playbook remove oncall 2")).startswith("Removed item 2 (Page secondary)")
        shown = await say("playbook show oncall")
        assert "1. Page primary" in shown and "2. Open a bridge" in shown
        assert "read-only" in await say("playbook add database Extra step")
        assert "already exists" in await say("playbook create ONCALL x")
        unknown = await say("start Broken --playbook nope")
        assert (
            unknown.startswith("There is no playbook `nope` in this team.") and "`oncall`" in unknown and "`database`" in unknown
        )
        # dave's team does not see ops' playbook
        p = await world.dave.post(world.channel_ids["web/incidents"], f"{mention(world)} playbook show oncall")
        r = await world.dave.wait_for_reply(p)
        assert r["message"].startswith("There is no playbook `oncall`")

        # default playbook
        _, channel, *_ = await start_incident(world, alice, "Defaulted")
        _, items = await checklist_posts(alice, channel["id"])
        assert [p["message"] for p in items] == ["☐ 1. Confirm impact", "☐ 2. Post a status update"]
        # database playbook
        _number, channel, *_ = await start_incident(world, alice, "From db --playbook oncall")
        _, items = await checklist_posts(alice, channel["id"])
        assert [p["message"] for p in items] == ["☐ 1. Page primary", "☐ 2. Open a bridge"]
        assert (await say("playbook delete oncall")) == "Deleted playbook `oncall`."
        assert bot.db("select count(*) from incidents") == [(2,)]
