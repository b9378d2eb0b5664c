"""Faults from the server's side (issue 11, part 5): what a person and the operator see, and
that nothing is lost. Each runs against the fake and against a real server."""

from __future__ import annotations

import asyncio

from tests.support.admin import new_bot_token, revoke_bot_tokens
from tests.support.botproc import BotProcess
from tests.support.scenario import checklist_posts, exported_file, mention, start_incident
from tests.support.world import World

EXIT_FAILED = 1  # incident_bot.cli: the bot cannot go on, and restarting will not help


async def test_a_token_revoked_while_running_stops_the_bot_with_exit_1_and_the_fix(world: World, bot: BotProcess):
    number, channel, *_ = await start_incident(world, world.alice, "Token soon gone")
    await revoke_bot_tokens(world)
    post = await world.alice.post(channel["id"], f"{mention(world)} update Still investigating")

    assert bot.proc is not None
    assert await asyncio.wait_for(bot.proc.wait(), 30) == EXIT_FAILED
    refused = [e for e in bot.current_log() if e.get("event") == "bot.token_refused"]
    assert len(refused) == 1 and "access token" in refused[0]["fix"]
    text = bot.log_path.read_text()
    assert "incident-bot: bot_token: Mattermost refused the token while running (401" in text
    assert "check the bot's access token" in text

    # With a new token the update made meanwhile is applied and answered: nothing lost.
    await new_bot_token(world)
    await bot.start()
    await world.alice.wait_for_reply(post, contains=f"Posted the status update of incident #{number}", timeout=30)
    assert bot.db("select count(*) from timeline where incident_number = ? and kind = 'status_update'", number) == [(1,)]


async def test_the_bot_removed_from_the_channel_then_the_team_says_so_and_changes_nothing(world: World, bot: BotProcess):
    number, channel, *_ = await start_incident(world, world.alice, "Bot kicked out")
    before = bot.db("select * from incidents")

    await world.admin.remove_member(channel["id"], world.bot_user_id)
    end = await world.alice.dm_bot(f"end {number} fixed")
    reply = await world.alice.wait_for_reply(end)
    assert reply["message"] == (
        f"I can no longer reach incident #{number}: @{world.bot_username} was removed from its channel. "
        f"Ask someone in ~{channel['name']} to add me back (`/invite @{world.bot_username}`); nothing was changed."
    )
    join = await world.carol.dm_bot(f"join {number}")
    assert "was removed from its channel" in (await world.carol.wait_for_reply(join))["message"]
    await bot.wait_for_log("incident.unreachable", incident=number, removed_from="channel")

    await world.admin.request("DELETE", f"/teams/{world.team_ids['ops']}/members/{world.bot_user_id}")
    again = await world.alice.dm_bot(f"end {number} fixed")
    assert (await world.alice.wait_for_reply(again))["message"] == (
        f"I can no longer reach incident #{number}: @{world.bot_username} was removed from its team. "
        "Ask a team admin to add me back; nothing was changed."
    )
    await bot.wait_for_log("incident.unreachable", incident=number, removed_from="team")

    # Nothing changed, each command was answered once and is not tried again, and the bot goes on.
    assert bot.db("select * from incidents") == before
    for post in (end, join, again):
        assert len(await world.alice.replies_to(post) if post is not join else await world.carol.replies_to(post)) == 1
    assert not [e for e in bot.current_log() if e.get("event") in ("command.unanswered", "command.failed")]
    help_post = await world.alice.dm_bot("help")
    await world.alice.wait_for_reply(help_post)


async def test_an_archived_incident_channel_is_marked_and_end_still_works_from_a_dm(world: World, bot: BotProcess):
    number, channel, *_ = await start_incident(world, world.alice, "Archived too early")
    await world.alice.request("DELETE", f"/channels/{channel['id']}")

    end = await world.alice.dm_bot(f"end {number} rolled back")
    reply = await world.alice.wait_for_reply(end)
    assert reply["message"].startswith(f"Ended incident #{number}"), reply["message"]
    assert bot.db("select status from incidents where number = ?", number) == [("ended",)]
    await bot.wait_for_log("incident.channel_archived", incident=number)

    # Marked once on its timeline; the final summary meant for the channel is dropped, not retried.
    export = await world.alice.dm_bot(f"export {number}")
    _name, text = await exported_file(world.alice, await world.alice.wait_for_reply(export))
    assert text.count("Incident channel archived (the bot no longer posts there)") == 1
    assert "Incident ended" in text
    await bot.wait_for_log("outbox.obsolete", incident=number)
    reopen = await world.alice.dm_bot(f"reopen {number}")
    assert (await world.alice.wait_for_reply(reopen))["message"].startswith(f"Reopened incident #{number}")
    log = bot.current_log()
    assert [e["event"] for e in log].count("incident.channel_archived") == 1
    assert not [e for e in log if e.get("event") in ("outbox.abandoned", "command.failed")]


async def test_a_deleted_item_post_and_pinned_summary_are_posted_again(world: World, bot: BotProcess):
    _number, channel, *_ = await start_incident(world, world.alice, "Posts deleted --playbook basic")
    _header, items = await checklist_posts(world.alice, channel["id"])
    await world.alice.react(items[0])
    ticked = await world.alice.wait_for_message(items[0]["id"], "☑")
    [summary] = [p for p in await world.alice.pinned(channel["id"]) if p["user_id"] == world.bot_user_id]
    summary = await world.alice.wait_for_message(summary["id"], "1/2 done")  # refreshed just after the item

    await world.admin.delete(items[0])
    await world.admin.delete(summary)

    await bot.wait_for_log("part.restored", part="item:1")
    await bot.wait_for_log("part.restored", part="summary")
    [again] = [p for p in await world.alice.pinned(channel["id"]) if p["user_id"] == world.bot_user_id]
    assert again["id"] != summary["id"] and again["message"] == summary["message"]
    # Item 1 is posted again, at the end of the checklist thread, still ticked by alice.
    _header, now = await checklist_posts(world.alice, channel["id"])
    assert [p["message"] for p in now] == [items[1]["message"], ticked["message"]]
    assert now[0]["id"] == items[1]["id"] and now[1]["id"] != items[0]["id"]
    # A tick taken off the new post counts as for the old one.
    await world.alice.react(now[1])
    await world.alice.unreact(now[1])
    await world.alice.wait_for_message(now[1]["id"], "☐")
