"""The incident's record: the timeline (automatic events, notes, 📌 posts and their edits),
status updates and reminders, history and reopen, stats, the postmortem export, and who may
see which of these."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.botproc import REPO, BotProcess
from tests.support.scenario import checklist_posts, exported_file, mention, start_incident, wait_message
from tests.support.waiting import eventually
from tests.support.world import World

MINUTE = 60
TABLE_HEAD = "| Time (UTC) | Offset | Event | Who |"
REMINDER_MARK = "no status update on incident"


# --- helpers: what people do and read ---------------------------------------------------


async def say(world: World, person, channel_id: str, text: str, contains: str | None = None) -> str:
    """Post a command to the bot in a channel and return the text of its reply."""
    post = await person.post(channel_id, f"{mention(world)} {text}")
    return (await person.wait_for_reply(post, contains=contains))["message"]


async def say_post(world: World, person, channel_id: str, text: str) -> dict[str, Any]:
    """Post a command to the bot in a channel and return its whole reply post."""
    post = await person.post(channel_id, f"{mention(world)} {text}")
    return await person.wait_for_reply(post)


async def dm(person, text: str) -> dict[str, Any]:
    """Write to the bot directly; the whole reply post."""
    post = await person.dm_bot(text)
    return await person.wait_for_reply(post)


def cells(line: str) -> tuple[str, ...]:
    """The cells of one Markdown table row (``\\|`` inside a cell is text)."""
    return tuple(c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1])


def table(message: str, head: str = TABLE_HEAD) -> list[tuple[str, ...]]:
    lines = message.splitlines()
    start = lines.index(head)
    assert re.fullmatch(r"\|(---\|)+", lines[start + 1]), lines[start + 1]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return rows


async def timeline(world: World, person, channel_id: str) -> list[tuple[str, ...]]:
    """`timeline` in the incident channel: the rows (time, offset, event, who) of its one reply."""
    post = await person.post(channel_id, f"{mention(world)} timeline")
    reply = await person.wait_for_reply(post)
    assert "Part 1 of" not in reply["message"]
    return table(reply["message"])


def parse_db_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def minute(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def post_time(post: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(post["create_at"] / 1000, tz=UTC)


def incident_row(bot: BotProcess, number: int) -> dict[str, Any]:
    """An incident's times (as UTC datetimes), status and severity, read from the bot's database."""
    con_rows = bot.db(
        "select started_at, ended_at, last_update_at, next_reminder_at, status, severity from incidents where number = ?",
        number,
    )
    keys = ("started_at", "ended_at", "last_update_at", "next_reminder_at", "status", "severity")
    row = dict(zip(keys, con_rows[0], strict=False))
    for key in ("started_at", "ended_at", "last_update_at", "next_reminder_at"):
        row[key] = parse_db_time(row[key]) if row[key] else None
    return row


async def pin_outcome(bot: BotProcess, count: int) -> str:
    """The outcome of the ``count``-th 📌 reaction the bot handled."""
    return (await bot.wait_for_log("pin.handled", count=count))["outcome"]


async def reminders(person, channel_id: str) -> list[dict[str, Any]]:
    return [p for p in await person.posts(channel_id) if p["user_id"] == person.bot_user_id and REMINDER_MARK in p["message"]]


async def wait_reminders(person, channel_id: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = await reminders(person, channel_id)
        if len(found) > count:
            pytest.fail(f"{len(found)} reminders, wanted {count}: {[p['message'] for p in found]}")
        return found if len(found) == count else None

    return await eventually(enough, timeout=timeout, what=f"{count} reminders in {channel_id}")


async def still_reminders(bot: BotProcess, person, channel_id: str, count: int, tick: bool = True) -> None:
    """A whole reminder tick of the bot runs on its clock as set now (``tick``), and the number
    of reminders is still ``count``."""
    if tick:
        await bot.reminder_ticks_pass()
    found = await reminders(person, channel_id)
    assert len(found) == count, [p["message"] for p in found]


def reminder_text(world: World, commander: str, number: int, took: str, sev: int) -> str:
    return (
        f"@{commander}: no status update on incident #{number} for {took} (Sev {sev}). "
        f"Post one with `{mention(world)} update <text>`."
    )


async def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m incident_bot ARGS`` as an operator runs it (without blocking the fake server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENT_BOT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "incident_bot",
        *args,
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


# --- the timeline: automatic events and notes ---------------------------------------------


async def test_timeline_records_every_change_with_time_and_actor(world: World, bot: BotProcess):
    alice, bob, carol = world.alice, world.bob, world.carol
    number, channel, *_ = await start_incident(world, alice, f"Checkout errors --playbook basic --invite @{bob.username}")
    ch = channel["id"]
    name = channel["name"]
    ops = world.channel_ids["ops/incidents"]

    assert await say(world, carol, ops, f"join {number}") == f"Added you to ~{name} (incident #{number})."
    assert await say(world, alice, ch, "sev 2") == f"Incident #{number} is now Sev 2 (was Sev 3)."
    assert (await say(world, alice, ch, f"commander @{bob.username}")).startswith("Commander of incident")
    assert (await say(world, bob, ch, "check 1")).startswith("Ticked item 1")
    assert (await say(world, alice, ch, "uncheck 1")).startswith("Unticked item 1")
    assert (await say(world, alice, ch, "add Roll back")).startswith("Added item 3")
    assert (await say(world, alice, ch, "rename 3 Roll back deploy 42")).startswith("Item 3 now reads")
    assert (await say(world, alice, ch, f"assign 3 @{carol.username}")).startswith("Item 3 (Roll back deploy 42) is assigned")
    assert (await say(world, alice, ch, "unassign 3")).endswith("has no assignee now.")
    assert (await say(world, alice, ch, "remove 2")).startswith("Removed item 2")
    # Twelve minutes later (by the bot's clock) someone writes down what they saw.
    bot.skew(12 * MINUTE)
    assert await say(world, alice, ch, "note Rolled back | deploy 41") == f"Added a note to the timeline of incident #{number}."
    assert (await say(world, bob, ch, "update Error rate back to normal")).startswith("Posted the status update")
    assert (await say(world, alice, ch, "end Rolled back")).startswith(f"Ended incident #{number}")
    assert await say(world, alice, ch, "reopen") == f"Reopened incident #{number} (~{name}); it is active again."
    assert await say(world, carol, ch, "reopen") == f"Incident #{number} is still active; nothing to reopen."
    assert (await say(world, carol, ch, "end")).startswith(f"Ended incident #{number}")

    post = await alice.post(ch, f"{mention(world)} timeline")
    reply = await alice.wait_for_reply(post)
    assert reply["message"].splitlines()[0] == f"**Timeline of incident #{number}: Checkout errors**"
    rows = table(reply["message"])
    started = incident_row(bot, number)["started_at"]
    assert rows[0] == (minute(started), "+0h 00m", "Incident started: Checkout errors", f"@{alice.username}")
    for time_, _offset, *_ in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", time_), time_
    a, b, c = f"@{alice.username}", f"@{bob.username}", f"@{carol.username}"
    assert [(offset, event, who) for _, offset, event, who in rows] == [
        ("+0h 00m", "Incident started: Checkout errors", a),
        ("+0h 00m", "Joined", c),
        ("+0h 00m", "Severity changed: Sev 3 → Sev 2", a),
        ("+0h 00m", f"Commander changed: {a} → {b}", a),
        ("+0h 00m", "Ticked 1: Confirm impact", b),
        ("+0h 00m", "Unticked 1: Confirm impact", a),
        ("+0h 00m", "Checklist item added 3: Roll back", a),
        ("+0h 00m", "Checklist item renamed 3: Roll back → Roll back deploy 42", a),
        ("+0h 00m", f"Checklist item assigned 3: {c}", a),
        ("+0h 00m", "Checklist item unassigned 3", a),
        ("+0h 00m", "Checklist item removed 2: Post a status update", a),
        ("+0h 12m", "Note: Rolled back \\| deploy 41", a),
        ("+0h 12m", "Status update: Error rate back to normal", b),
        ("+0h 12m", "Incident ended: Rolled back", a),
        ("+0h 12m", "Incident reopened", a),
        ("+0h 12m", "Incident ended", c),
    ]
    # the times are UTC: the note is twelve minutes after the start
    assert rows[11][0] in {minute(started + timedelta(minutes=12, seconds=s)) for s in range(0, 60)}


async def test_long_timeline_is_split_across_posts_not_cut(world: World, bot: BotProcess):
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Chatty incident")
    ch = channel["id"]
    notes = [(f"N{i:02d} " + " ".join(f"word{i}x{j}" for j in range(400)))[:1900].rstrip() for i in range(9)]
    assert all(1800 < len(n) < 1990 for n in notes)
    # and one note longer than a table cell may be: shown cut, with a mark, and whole in the export
    long_note = (" ".join(f"long{j}" for j in range(600)))[:2500]
    for note in [*notes, long_note]:
        assert (await say(world, alice, ch, f"note {note}")).startswith("Added a note")
    post = await alice.post(ch, f"{mention(world)} timeline")
    await alice.wait_for_reply(post, contains="_Part 2 of 2_")
    await bot.wait_answered(post)  # the last of the two parts is out, and noted
    parts = await alice.replies_to(post)
    assert len(parts) == 2, [p["message"][:80] for p in parts]
    assert all(p["root_id"] == post["id"] for p in parts)
    first, second = (p["message"] for p in parts)
    assert first.startswith(f"**Timeline of incident #{number}: Chatty incident**")
    assert first.endswith("_Part 1 of 2_") and second.endswith("_Part 2 of 2_")
    assert second.startswith(f"_(timeline of incident #{number}, continued)_")
    assert all(len(p) <= 16383 for p in (first, second))
    rows = table(first) + table(second)
    assert rows[0][2] == "Incident started: Chatty incident"
    # every note whole, once, in order (a cell longer than 2000 characters ends in a visible …)
    assert [r[2] for r in rows[1:]] == [f"Note: {n}" for n in notes] + [f"Note: {long_note}"[:1999] + "…"]
    reply = await say_post(world, alice, ch, "export")
    assert f"| Note: {long_note} | @{alice.username} |" in (await exported_file(alice, reply))[1]


# --- 📌 posts --------------------------------------------------------------------------


async def test_pushpin_adds_a_post_once_and_removing_takes_it_out(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, f"Slow API --invite @{bob.username}")
    ch = channel["id"]
    said = await bob.post(ch, "Grafana shows p99 at 8s since 14:02")
    link = f"{world.url}/ops/pl/{said['id']}"
    row = (minute(post_time(said)), "+0h 00m", f"[Post]({link}): Grafana shows p99 at 8s since 14:02", f"@{bob.username}")

    def pinned(rows):
        return [r for r in rows if "Post" in r[2] and "Grafana" in r[2]]

    await alice.react(said, "pushpin")
    assert await pin_outcome(bot, 1) == "pinned"
    assert pinned(await timeline(world, alice, ch)) == [row]
    # a second person pins it, the first pins it again, the event arrives twice: still one entry
    await bob.react(said, "pushpin")
    assert await pin_outcome(bot, 2) == "unchanged"
    await alice.react(said, "pushpin")
    assert await pin_outcome(bot, 3) == "unchanged"
    if world.fake is not None:
        await world.fake.faults.redeliver_last("reaction_added", world.bot_user_id)
        await bot.wait_for_log("event.duplicate")
    assert pinned(await timeline(world, alice, ch)) == [row]
    # alice takes hers off: bob's 📌 keeps it; bob takes his off: gone
    await alice.unreact(said, "pushpin")
    assert await pin_outcome(bot, 4) == "kept:other-pin"
    assert pinned(await timeline(world, alice, ch)) == [row]
    await bob.unreact(said, "pushpin")
    assert await pin_outcome(bot, 5) == "unpinned"
    assert pinned(await timeline(world, alice, ch)) == []
    # pinned again: back once, with the post's own time and author
    await bob.react(said, "pushpin")
    assert await pin_outcome(bot, 6) == "pinned"
    assert pinned(await timeline(world, alice, ch)) == [row]
    assert bot.db("select count(*) from timeline where post_id = ? and deleted = 0", said["id"]) == [(1,)]

    # a 📌 outside an incident channel, or by someone outside the channel, adds nothing
    elsewhere = await bob.post(world.channel_ids["ops/incidents"], "unrelated chatter")
    await alice.react(elsewhere, "pushpin")
    assert await pin_outcome(bot, 7) == "ignored:not-an-incident-channel"
    other = await bob.post(ch, "a post only carol pins")
    if world.fake is not None:
        await world.fake.faults.send_event(
            "reaction_added",
            {
                "reaction": json.dumps(
                    {
                        "user_id": world.carol.user_id,
                        "post_id": other["id"],
                        "emoji_name": "pushpin",
                        "create_at": other["create_at"] + 1,
                        "update_at": other["create_at"] + 1,
                        "delete_at": 0,
                        "channel_id": ch,
                    }
                )
            },
            {"channel_id": ch},
            user=world.bot_user_id,
        )
        assert await pin_outcome(bot, 8) == "ignored:not-a-member"
    # the bot's own posts can be pinned like any other
    status = await alice.post(ch, f"{mention(world)} update Still slow, scaling out")
    await alice.wait_for_reply(status)
    update_post = await alice.wait_for_post(ch, lambda p: p["message"].startswith("#### Status update") and not p["root_id"])
    await alice.react(update_post, "pushpin")
    assert (await bot.wait_for_log("pin.handled", post=update_post["id"]))["outcome"] == "pinned"
    rows = await timeline(world, alice, ch)
    assert not any("carol pins" in r[2] or "unrelated" in r[2] for r in rows)
    bot_rows = [r for r in rows if "Status update — incident" in r[2]]
    assert len(bot_rows) == 1 and bot_rows[0][3] == f"@{world.bot_username}"
    assert bot_rows[0][2].startswith(f"[Post]({world.url}/ops/pl/{update_post['id']}): #### Status update — incident #{number}")


async def test_pinned_posts_follow_edits_and_deletions(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    _number, channel, *_ = await start_incident(world, alice, f"Edits --invite @{bob.username}")
    ch = channel["id"]
    edited = await bob.post(ch, "Root cause: DNS")
    deleted = await bob.post(ch, "Password is hunter2 oops")
    unpinned = await bob.post(ch, "Just a thought")
    await alice.react(edited, "pushpin")
    await alice.react(deleted, "pushpin")
    assert [await pin_outcome(bot, 1), await pin_outcome(bot, 2)] == ["pinned", "pinned"]

    await bob.edit(unpinned, "Just a thought, edited")
    await bob.edit(edited, "Root cause: expired TLS certificate")
    assert (await bot.wait_for_log("post_change.handled", post=edited["id"]))["outcome"] == "edited"
    await bob.delete(deleted)
    assert (await bot.wait_for_log("post_change.handled", post=deleted["id"]))["outcome"] == "deleted"

    rows = await timeline(world, alice, ch)
    posts = [r for r in rows if r[2].startswith(("[Post]", "Post"))]
    assert posts == [
        (
            minute(post_time(edited)),
            "+0h 00m",
            f"[Post]({world.url}/ops/pl/{edited['id']}) (edited): Root cause: expired TLS certificate",
            f"@{bob.username}",
        ),
        (minute(post_time(deleted)), "+0h 00m", "Post (deleted)", f"@{bob.username}"),
    ]
    assert not any("thought" in r[2] for r in rows)
    # a deleted post's words are not kept: the timeline follows the deletion
    assert not any("hunter2" in r[2] for r in rows)
    assert bot.db("select count(*) from timeline where text like '%hunter2%'") == [(0,)]
    # a second edit shows the latest text
    await bob.edit(edited, "Root cause: expired TLS certificate on the LB")
    await bot.wait_for_log("post_change.handled", post=edited["id"], count=2)
    rows = await timeline(world, alice, ch)
    assert any(r[2].endswith("(edited): Root cause: expired TLS certificate on the LB") for r in rows)


# --- status updates and reminders ----------------------------------------------------------


async def test_update_goes_to_channel_origin_thread_and_announcements(world: World, announcing_bot: BotProcess):
    bot = announcing_bot
    alice, bob = world.alice, world.bob
    announcements = await world.admin.create_channel(world.team_ids["ops"], "announcements", "Announcements")
    await world.admin.add_member(announcements["id"], world.bot_user_id)
    number, channel, start_post, _ = await start_incident(world, alice, f"Checkout errors --invite @{bob.username}")
    ch = channel["id"]

    post = await alice.post(ch, f"{mention(world)} update Error rate falling after rollback")
    reply = await alice.wait_for_reply(post)
    row = incident_row(bot, number)
    assert row["next_reminder_at"] == row["last_update_at"] + timedelta(minutes=60)  # Sev 3
    assert reply["message"] == (
        f"Posted the status update of incident #{number}. Next one due by {row['next_reminder_at']:%H:%M} UTC."
    )
    text = (
        f"#### Status update — incident #{number}: Checkout errors\n"
        f"Sev 3 · Active · commander @{alice.username} · {utc(row['last_update_at'])} by @{alice.username}\n\n"
        "Error rate falling after rollback"
    )
    in_channel = await alice.wait_for_post(ch, lambda p: p["message"].startswith("#### Status update"))
    assert in_channel["message"] == text and in_channel["root_id"] == ""
    in_origin = await alice.wait_for_post(
        world.channel_ids["ops/incidents"], lambda p: p["message"].startswith("#### Status update")
    )
    assert in_origin["message"] == text and in_origin["root_id"] == start_post["id"]
    announced = await alice.wait_for_post(announcements["id"], lambda p: p["message"].startswith("#### Status update"))
    assert announced["message"] == text

    # another member updates: their name on it, and the reminder moves again
    reply = await say(world, bob, ch, "update Fully recovered")
    assert reply.startswith(f"Posted the status update of incident #{number}.")
    by_bob = await alice.wait_for_post(
        ch, lambda p: p["message"].startswith("#### Status update") and p["message"].endswith("Fully recovered")
    )
    assert f"by @{bob.username}\n\nFully recovered" in by_bob["message"]
    rows = await timeline(world, alice, ch)
    assert [(r[2], r[3]) for r in rows if r[2].startswith("Status update")] == [
        ("Status update: Error rate falling after rollback", f"@{alice.username}"),
        ("Status update: Fully recovered", f"@{bob.username}"),
    ]

    # wrong place, no text, ended incident
    assert await say(world, alice, world.channel_ids["ops/incidents"], "update hello") == (
        f"`update` works only in an incident channel.\nUsage: `{mention(world)} update <text>`"
    )
    assert await say(world, alice, ch, "update") == f"The text is empty.\nUsage: `{mention(world)} update <text>`"
    await say(world, alice, ch, "end")
    assert re.fullmatch(
        rf"Incident #{number} already ended at \d\d:\d\d UTC \(after 0h 00m\)\.", await say(world, alice, ch, "update too late")
    )
    assert len([p for p in await alice.posts(ch) if p["message"].startswith("#### Status update")]) == 2


async def test_reminder_fires_repeats_each_interval_resets_on_update_stops_at_end(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, "Payments down --sev 1")
    ch = channel["id"]
    await still_reminders(bot, alice, ch, 0)

    if world.fake is not None:  # Mattermost refuses the first try: the reminder is not lost
        world.fake.faults.fail(r"^/api/v4/posts$", 400, method="POST", user=world.bot_user_id)
    bot.skew(15 * MINUTE + 5)  # Sev 1: every 15 minutes
    took = "0h 15m"
    if world.fake is not None:
        await bot.wait_for_log("reminder.not_sent", incident=number)
        # Recorded and queued with the next due time: the outbox posts it once Mattermost takes it.
        assert bot.db("select count(*) from timeline where kind = 'reminder_sent'") == [(1,)]
    first = (await wait_reminders(alice, ch, 1))[0]
    assert first["message"] == reminder_text(world, alice.username, number, took, 1)
    assert first["root_id"] == ""
    await still_reminders(bot, alice, ch, 1)  # one reminder, not one per tick

    await say(world, alice, ch, f"commander @{bob.username}")
    bot.skew(31 * MINUTE + 10)  # the next one an interval after the last reminder
    second = (await wait_reminders(alice, ch, 2))[1]
    assert second["message"] == reminder_text(world, bob.username, number, "0h 31m", 1)

    reply = await say(world, bob, ch, "update Failover in progress")
    assert reply.startswith(f"Posted the status update of incident #{number}. Next one due by ")
    bot.skew(40 * MINUTE)
    await still_reminders(bot, alice, ch, 2)
    bot.skew(46 * MINUTE + 20)
    third = (await wait_reminders(alice, ch, 3))[2]
    assert third["message"] == reminder_text(world, bob.username, number, "0h 15m", 1)

    await say(world, alice, ch, "end")
    assert incident_row(bot, number)["next_reminder_at"] is None
    bot.skew(3 * 60 * MINUTE)
    await still_reminders(bot, alice, ch, 3)
    assert bot.db("select count(*) from timeline where kind = 'reminder_sent'") == [(3,)]


async def test_overdue_reminder_after_restart_fires_once_and_none_is_forgotten(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    one, ch1, *_ = await start_incident(world, alice, "Sev one outage --sev 1")
    two, ch2, *_ = await start_incident(world, bob, "Sev two outage --sev 2")
    assert await bot.stop() == 0

    # The bot is down for an hour: four Sev 1 intervals and two Sev 2 intervals pass.
    bot.skew(61 * MINUTE)
    await bot.start()
    r1 = await wait_reminders(alice, ch1["id"], 1)
    r2 = await wait_reminders(bob, ch2["id"], 1)
    assert r1[0]["message"] == reminder_text(world, alice.username, one, "1h 01m", 1)
    assert r2[0]["message"] == reminder_text(world, bob.username, two, "1h 01m", 2)
    await still_reminders(bot, alice, ch1["id"], 1)
    await still_reminders(bot, bob, ch2["id"], 1, tick=False)
    # the next one is due an interval after the reminder, and that is kept in the database
    now = datetime.now(UTC) + timedelta(minutes=61)
    due1 = incident_row(bot, one)["next_reminder_at"]
    due2 = incident_row(bot, two)["next_reminder_at"]
    assert now + timedelta(minutes=14) < due1 <= now + timedelta(minutes=15)
    assert now + timedelta(minutes=29) < due2 <= now + timedelta(minutes=30)

    # a second restart repeats nothing
    await bot.restart()
    await still_reminders(bot, alice, ch1["id"], 1)
    await still_reminders(bot, bob, ch2["id"], 1, tick=False)
    # and the schedule goes on: one Sev 1 interval later, one more for #1 only
    bot.skew(61 * MINUTE + 15 * MINUTE + 5)
    later = await wait_reminders(alice, ch1["id"], 2)
    assert later[1]["message"] == reminder_text(world, alice.username, one, "1h 16m", 1)
    await still_reminders(bot, bob, ch2["id"], 1)


# --- history and reopen -----------------------------------------------------------------


async def test_history_pages_newest_first_and_reopen_keeps_both_in_the_timeline(world: World, bot: BotProcess):
    alice, bob, dave = world.alice, world.bob, world.dave
    ops = world.channel_ids["ops/incidents"]
    n1, c1, *_ = await start_incident(world, alice, "Cache down --sev 2")
    bot.skew(5 * MINUTE)
    await say(world, alice, c1["id"], "end")
    n2, c2, *_ = await start_incident(world, alice, "Queue stuck")
    bot.skew(25 * MINUTE)
    await say(world, alice, c2["id"], "end")
    post = await dave.post(world.channel_ids["web/incidents"], f"{mention(world)} start Web checkout --sev 1")
    r = await dave.wait_for_reply(post, contains="Started incident")
    n3 = int(re.search(r"#(\d+)", r["message"]).group(1))
    c3 = await dave.channel_by_name(world.team_ids["web"], re.search(r"~(\S+)", r["message"]).group(1).rstrip(")."))
    await say(world, dave, c3["id"], "end")
    n4, _c4, *_ = await start_incident(world, alice, "Still burning")
    n5, c5, *_ = await start_incident(world, bob, "Flapping alert --sev 4")
    await say(world, bob, c5["id"], "end")
    assert (n1, n2, n3, n4, n5) == (1, 2, 3, 4, 5)

    def expected(number: int, title: str, sev: int, took: str, commander, team: str) -> tuple[str, ...]:
        ended = incident_row(bot, number)["ended_at"]
        return (str(number), title, str(sev), took, f"@{commander.username}", utc(ended), team)

    head = "| # | Title | Sev | Duration | Commander | Ended | Team |"
    page1 = (await dm(alice, "history --limit 2"))["message"]
    assert page1.splitlines()[0] == "**Ended incidents 1–2 of 4**"
    assert table(page1, head) == [
        expected(5, "Flapping alert", 4, "0h 00m", bob, "ops"),
        expected(3, "Web checkout", 1, "0h 00m", dave, "web"),
    ]
    assert page1.splitlines()[-1] == f"More: `{mention(world)} history --page 2 --limit 2`"
    page2 = (await dm(alice, "history --page 2 --limit 2"))["message"]
    assert page2.splitlines()[0] == "**Ended incidents 3–4 of 4**"
    assert table(page2, head) == [
        expected(2, "Queue stuck", 3, "0h 20m", alice, "ops"),
        expected(1, "Cache down", 2, "0h 05m", alice, "ops"),
    ]
    assert "More:" not in page2
    assert (await dm(alice, "history --page 3 --limit 2"))["message"] == "No page 3: there are 4 ended incidents."
    # one team, and the next-page hint keeps the team
    ops_page = (await dm(alice, "history --team ops --limit 1"))["message"]
    assert [r[0] for r in table(ops_page, head)] == ["5"]
    assert ops_page.splitlines()[-1] == f"More: `{mention(world)} history --team ops --page 2 --limit 1`"
    assert [r[0] for r in table((await dm(alice, "history --team ops --page 2 --limit 1"))["message"], head)] == ["2"]
    # people see their own teams only
    assert [r[0] for r in table((await dm(bob, "history"))["message"], head)] == ["5", "2", "1"]
    assert [r[0] for r in table((await dm(dave, "history"))["message"], head)] == ["3"]
    assert (await dm(world.erin, "history"))["message"] == "No ended incidents in your teams."
    # the history works in a channel too, answered in the thread
    assert [r[0] for r in table(await say(world, bob, ops, "history --limit 5"), head)] == ["5", "2", "1"]

    # reopen: active again, out of the history, and the timeline keeps the end and the reopen
    assert await say(world, alice, c1["id"], "reopen") == f"Reopened incident #1 (~{c1['name']}); it is active again."
    assert incident_row(bot, 1)["status"] == "active" and incident_row(bot, 1)["ended_at"] is None
    assert (await alice.channel(c1["id"]))["header"].startswith(f"Commander @{alice.username} · Sev 2 · Active")
    assert [r[0] for r in table((await dm(alice, "history"))["message"], head)] == ["5", "3", "2"]
    assert await say(world, alice, c1["id"], "reopen") == "Incident #1 is still active; nothing to reopen."
    assert (await say(world, alice, c1["id"], "end second time")).startswith("Ended incident #1")
    rows = await timeline(world, alice, c1["id"])
    assert [(r[1], r[2]) for r in rows] == [
        ("+0h 00m", "Incident started: Cache down"),
        ("+0h 05m", "Incident ended"),
        ("+0h 25m", "Incident reopened"),
        ("+0h 25m", "Incident ended: second time"),
    ]
    assert [r[0] for r in table((await dm(alice, "history"))["message"], head)] == ["5", "3", "2", "1"]
    # reopen needs the incident channel's membership; other teams hear nothing of it
    assert (await dm(world.carol, "reopen 2"))["message"] == (
        f"Only members of ~{c2['name']} can reopen incident #2. Use `join 2` first."
    )
    assert (await dm(dave, "reopen 2"))["message"] == "No incident #2 in your teams."


# --- stats ---------------------------------------------------------------------------------


async def test_stats_counts_by_severity_open_now_median_and_mean(world: World, bot: BotProcess):
    alice, dave = world.alice, world.dave

    async def incident(title: str, start_at: float, minutes: float | None) -> None:
        bot.skew(start_at)
        _number, channel, *_ = await start_incident(world, alice, title)
        if minutes is not None:
            bot.skew(start_at + minutes * MINUTE)
            await say(world, alice, channel["id"], "end")

    await incident("Old outage --sev 1", -3 * 24 * 3600, 45)  # three days ago, 45 minutes
    await incident("Two a --sev 2", 0, 10)
    await incident("Two b --sev 2", 10 * MINUTE, 20)
    await incident("Three --sev 3", 30 * MINUTE, 60)
    await incident("Four open --sev 4", 90 * MINUTE, None)
    post = await dave.post(world.channel_ids["web/incidents"], f"{mention(world)} start Web thing --sev 3")
    await dave.wait_for_reply(post, contains="Started incident")

    head = "| Sev 1 | Sev 2 | Sev 3 | Sev 4 | Open now |"
    text = (await dm(alice, "stats --team ops"))["message"]
    assert text.splitlines()[0] == "**Incidents in ops, last 30 days: 5**"
    assert table(text, head) == [("1", "2", "1", "1", "1")]
    # 10, 20, 45, 60 minutes
    assert text.splitlines()[-1] == "Time to resolve (4 ended): median 0h 32m, mean 0h 33m."

    text = (await dm(alice, "stats --team ops --days 1"))["message"]
    assert text.splitlines()[0] == "**Incidents in ops, last 1 days: 4**"
    assert table(text, head) == [("0", "2", "1", "1", "1")]
    assert text.splitlines()[-1] == "Time to resolve (3 ended): median 0h 20m, mean 0h 30m."

    text = (await dm(alice, "stats"))["message"]
    assert re.fullmatch(r"\*\*Incidents in (ops, web|web, ops), last 30 days: 6\*\*", text.splitlines()[0])
    assert table(text, head) == [("1", "2", "2", "1", "2")]

    text = (await dm(dave, "stats"))["message"]
    assert text.splitlines()[0] == "**Incidents in web, last 30 days: 1**"
    assert table(text, head) == [("0", "0", "1", "0", "1")]
    assert text.splitlines()[-1] == "None ended in that time, so no time to resolve yet."
    text = (await dm(world.erin, "stats"))["message"]
    assert text.splitlines()[0] == "**Incidents in your teams, last 30 days: 0**"
    # stats in a team channel is answered in its thread
    text = await say(world, world.carol, world.channel_ids["ops/incidents"], "stats --days 1")
    assert text.splitlines()[0] == "**Incidents in ops, last 1 days: 4**"
    assert (await dm(alice, "stats --days 0"))["message"].startswith("`--days` must be a number from 1 to 3650, not `0`.")


# --- export -------------------------------------------------------------------------------


async def test_export_postmortem_markdown_json_dm_and_cli(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, f"Payments failing --playbook basic --invite @{bob.username}")
    ch = channel["id"]
    _, items = await checklist_posts(alice, ch)
    await bob.react(items[0], "white_check_mark")
    await wait_message(alice, items[0]["id"], r"^☑")
    await say(world, alice, ch, "update Payments recovering")
    await say(world, alice, ch, "note Suspect the TLS cert rotation")
    evidence = await bob.post(ch, "cert expired at 09:00")
    await alice.react(evidence, "pushpin")
    assert await pin_outcome(bot, 1) == "pinned"
    await say(world, alice, ch, "end Renewed the certificate")

    post = await alice.post(ch, f"{mention(world)} export")
    reply = await alice.wait_for_reply(post)
    assert reply["message"] == f"Postmortem starter for incident #{number}: `incident-{number}-postmortem.md` (attached)."
    name, md = await exported_file(alice, reply)
    assert name == f"incident-{number}-postmortem.md"

    row = incident_row(bot, number)
    (done_at,) = bot.db("select done_at from checklist_items where incident_number = ? and number = 1", number)[0]
    (update_at,) = bot.db("select at from timeline where kind = 'status_update'")[0]
    sections = md.split("\n## ")
    assert sections[0] == f"# Incident #{number}: Payments failing\n"
    assert [s.splitlines()[0] for s in sections[1:]] == [
        "Summary",
        "Participants",
        "Status updates",
        "Checklist",
        "Timeline",
        "Analysis",
    ]
    summary, participants, updates, checklist, timeline_, analysis = sections[1:]
    took = re.search(r"\| Duration \| (0h 0\dm) \|", summary).group(1)
    assert summary.splitlines()[2:] == [
        "| | |",
        "|---|---|",
        "| Status | ended |",
        "| Severity | Sev 3 |",
        "| Team | ops |",
        f"| Channel | ~{channel['name']} |",
        f"| Commander | @{alice.username} |",
        f"| Started | {utc(row['started_at'])} by @{alice.username} |",
        f"| Ended | {utc(row['ended_at'])} by @{alice.username} |",
        f"| Duration | {took} |",
        "| Resolution | Renewed the certificate |",
        "| Playbook | basic |",
    ]
    assert participants.splitlines()[2:] == [f"- @{alice.username}", f"- @{bob.username}"]
    assert updates.splitlines()[2:] == [
        f"### {utc(parse_db_time(update_at))} — @{alice.username}",
        "",
        "> Payments recovering",  # quoted: an update's own headings cannot open a section of the export
    ]
    assert checklist.splitlines()[2:] == [
        f"- [x] 1. Confirm impact (done by @{bob.username} at {utc(parse_db_time(done_at))})",
        "- [ ] 2. Post a status update",
    ]
    assert timeline_.splitlines()[2] == TABLE_HEAD
    rows = table(timeline_)
    for time_, offset, *_ in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", time_) and re.fullmatch(r"\+0h 0\dm", offset)
    assert [(r[2], r[3]) for r in rows] == [
        ("Incident started: Payments failing", f"@{alice.username}"),
        ("Ticked 1: Confirm impact", f"@{bob.username}"),
        ("Status update: Payments recovering", f"@{alice.username}"),
        ("Note: Suspect the TLS cert rotation", f"@{alice.username}"),
        (f"[Post]({world.url}/ops/pl/{evidence['id']}): cert expired at 09:00", f"@{bob.username}"),
        ("Incident ended: Renewed the certificate", f"@{alice.username}"),
    ]
    assert rows[4][0] == utc(post_time(evidence))
    assert analysis.startswith("Analysis\n")

    # the same data as JSON
    post = await alice.post(ch, f"{mention(world)} export --format json")
    reply = await alice.wait_for_reply(post)
    assert reply["message"] == f"Postmortem starter for incident #{number}: `incident-{number}-postmortem.json` (attached)."
    name, raw = await exported_file(alice, reply)
    assert name == f"incident-{number}-postmortem.json"
    data = json.loads(raw)
    assert {
        k: data["incident"][k]
        for k in (
            "number",
            "title",
            "team",
            "channel",
            "status",
            "severity",
            "commander",
            "started_by",
            "ended_by",
            "resolution",
            "playbook",
            "duration",
        )
    } == {
        "number": number,
        "title": "Payments failing",
        "team": "ops",
        "channel": channel["name"],
        "status": "ended",
        "severity": 3,
        "commander": alice.username,
        "started_by": alice.username,
        "ended_by": alice.username,
        "resolution": "Renewed the certificate",
        "playbook": "basic",
        "duration": took,
    }
    assert parse_db_time(data["incident"]["started_at"]) == row["started_at"]
    assert parse_db_time(data["incident"]["ended_at"]) == row["ended_at"]
    assert data["participants"] == [alice.username, bob.username]
    assert [(u["by"], u["text"]) for u in data["status_updates"]] == [(alice.username, "Payments recovering")]
    assert [(i["number"], i["text"], i["done"], i["done_by"]) for i in data["checklist"]] == [
        (1, "Confirm impact", True, bob.username),
        (2, "Post a status update", False, None),
    ]
    assert parse_db_time(data["checklist"][0]["done_at"]) == parse_db_time(done_at)
    assert [(e["kind"], e["text"], e["by"]) for e in data["timeline"]] == [
        ("started", "Incident started: Payments failing", alice.username),
        ("checklist_checked", "Ticked 1: Confirm impact", bob.username),
        ("status_update", "Status update: Payments recovering", alice.username),
        ("note", "Note: Suspect the TLS cert rotation", alice.username),
        ("post_pinned", f"[Post]({world.url}/ops/pl/{evidence['id']}): cert expired at 09:00", bob.username),
        ("ended", "Incident ended: Renewed the certificate", alice.username),
    ]
    assert [e["offset"] for e in data["timeline"]] == [r[1] for r in rows]

    # `export <n>` in a direct message: the same file, in the DM
    reply = await dm(alice, f"export {number}")
    assert reply["channel_id"] == (await alice.dm_channel(world.bot_user_id))["id"]
    assert await exported_file(alice, reply) == (f"incident-{number}-postmortem.md", md)
    # `export` alone in a DM does not know which incident
    reply = await dm(alice, "export")
    assert "file_ids" not in reply or not reply["file_ids"]
    assert reply["message"].startswith("`export` works in an incident channel")
    # not in a team channel, where people outside the incident would read the file
    ops = world.channel_ids["ops/incidents"]
    for text in (f"export {number}", "export"):
        post = await alice.post(ops, f"{mention(world)} {text}")
        reply = await alice.wait_for_reply(post)
        assert not reply.get("file_ids"), text
        assert "direct message" in reply["message"], reply["message"]
    assert (await say(world, alice, ch, "export --format pdf")).startswith("Format must be `md` or `json`, not `pdf`.")

    # the command line prints the same without Mattermost
    out = await run_cli("export", str(number), "--db", str(bot.db_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == md
    out = await run_cli("export", str(number), "--format", "json", "--db", str(bot.db_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == data
    out = await run_cli("export", "99", "--db", str(bot.db_path))
    assert out.returncode == 1 and "no incident #99" in out.stderr and out.stdout == ""


# --- who sees what ------------------------------------------------------------------------


async def test_visibility_member_team_member_outside_and_other_team(world: World, bot: BotProcess):
    alice, carol, dave, erin = world.alice, world.carol, world.dave, world.erin
    n1, c1, *_ = await start_incident(world, alice, "Secret outage")
    await say(world, alice, c1["id"], "note only for the channel")
    n2, c2, *_ = await start_incident(world, alice, "Ended outage")
    await say(world, alice, c2["id"], "end")

    # the member: timeline and export in the channel
    rows = await timeline(world, alice, c1["id"])
    assert ("Note: only for the channel", f"@{alice.username}") in [(r[2], r[3]) for r in rows]
    reply = await dm(alice, f"export {n1}")
    assert (await exported_file(alice, reply))[0] == f"incident-{n1}-postmortem.md"

    # carol, in the team but not in the channels: info, list, history, stats yes
    assert (await dm(carol, f"info {n1}"))["message"].startswith(f"**#{n1} Secret outage** — Active · Sev 3")
    assert "Secret outage" in (await dm(carol, "list"))["message"]
    assert "Ended outage" in (await dm(carol, "history"))["message"]
    assert (await dm(carol, "stats"))["message"].splitlines()[0] == "**Incidents in ops, last 30 days: 2**"
    # … timeline, notes and export no
    for number, channel in ((n1, c1), (n2, c2)):
        reply = await dm(carol, f"export {number}")
        assert reply["message"] == (
            f"Only members of ~{channel['name']} can read the export of incident #{number}. Use `join {number}` first."
        )
        assert not reply.get("file_ids")
    assert (await dm(carol, "timeline"))["message"] == (
        f"`timeline` works only in an incident channel.\nUsage: `{mention(world)} timeline`"
    )
    assert (await dm(carol, "note hello"))["message"] == (
        f"`note` works only in an incident channel.\nUsage: `{mention(world)} note <text>`"
    )
    if world.fake is not None:
        # Even a post that reached the private channel (the fake skips the server's check) is refused.
        for text, wanted in (
            ("timeline", f"Only members of ~{c1['name']} can read the timeline of incident #{n1}. Use `join {n1}` first."),
            ("note sneaky", f"Only members of ~{c1['name']} can add notes to incident #{n1}. Use `join {n1}` first."),
            ("export", f"Only members of ~{c1['name']} can read the export of incident #{n1}. Use `join {n1}` first."),
        ):
            post = world.fake.create_post(carol.user_id, c1["id"], f"{mention(world)} {text}")
            reply = await alice.wait_for_reply(post)
            assert reply["message"] == wanted
            assert not reply.get("file_ids")
        assert bot.db("select count(*) from timeline where text like '%sneaky%'") == [(0,)]
    # after joining, carol may read them
    await dm(carol, f"join {n1}")
    reply = await dm(carol, f"export {n1}")
    name, md = await exported_file(carol, reply)
    assert name == f"incident-{n1}-postmortem.md" and "Note: only for the channel" in md

    # dave, of another team, and erin, of none: nothing, and the same words whether it exists or not
    for person in (dave, erin):
        for text, number in (
            (f"info {n1}", n1),
            (f"export {n1}", n1),
            (f"export {n2}", n2),
            ("export 99", 99),
            (f"join {n1}", n1),
            (f"reopen {n2}", n2),
            ("info 99", 99),
            (f"end {n1}", n1),
        ):
            reply = await dm(person, text)
            assert reply["message"] == f"No incident #{number} in your teams.", (person, text, reply["message"])
            assert not reply.get("file_ids")
        assert (await dm(person, "list"))["message"] == "No active incidents in your teams."
        assert (await dm(person, "history"))["message"] == "No ended incidents in your teams."
        assert "Secret" not in (await dm(person, "stats"))["message"]
    assert (await dm(dave, "stats"))["message"].splitlines()[0] == "**Incidents in web, last 30 days: 0**"
    for command in ("history", "stats"):
        known = (await dm(dave, f"{command} --team ops"))["message"]
        unknown = (await dm(dave, f"{command} --team nope"))["message"]
        assert known == "You are in no team named `ops` that I am in (yours: web)."
        assert unknown == known.replace("`ops`", "`nope`")
    assert dave.user_id not in await alice.channel_members(c1["id"])
