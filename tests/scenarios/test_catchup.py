"""Nothing lost, nothing twice: the bot stopped, killed, cut off or rate limited comes back to
the state people made meanwhile, answers each command once, and never half-does an incident.

Most of these need the fake's fault injection (kill windows, dropped and forgotten
connections, refused upgrades), so the module runs against the fake server only.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.support.botproc import BotProcess
from tests.support.scenario import checklist_posts, exactly_one_reply, mention, start_incident, wait_message
from tests.support.waiting import eventually
from tests.support.world import World

pytestmark = pytest.mark.fake_only

LATE = re.compile(r"_\(handled after a (\d+m )?\d+s outage\)_$")


async def say(world: World, person, channel_id: str, text: str, contains: str | None = None, timeout: float = 15):
    post = await person.post(channel_id, f"{mention(world)} {text}")
    return post, await person.wait_for_reply(post, contains=contains, timeout=timeout)


def lost_events(world: World) -> int:
    """Events the server sent the bot that never reached its socket."""
    return sum(1 for e in world.fake.ws_log if e["user_id"] == world.bot_user_id and not e["delivered"])


def bot_requests(world: World, method: str, pattern: str) -> list:
    rx = re.compile(pattern)
    return [r for r in world.fake.request_log if r.method == method and rx.search(r.path) and r.user_id == world.bot_user_id]


async def worked_through(world: World, person, channel_id: str | None = None) -> dict:
    """The bot has handled everything that came before in this channel (or ``person``'s DM
    with it): it handles a channel's events in order, and has now answered a later command
    (the probe, returned)."""
    if channel_id is None:
        probe = await person.dm_bot("help end")
    else:
        probe = await person.post(channel_id, f"{mention(world)} help end")
    await person.wait_for_reply(probe, timeout=30)
    return probe


# --- stopped, then back ------------------------------------------------------------------


async def test_commands_made_while_stopped_are_answered_late_once(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, f"Stopped bot --invite @{bob.username}")
    assert await bot.stop() == 0

    ops = world.channel_ids["ops/incidents"]
    info = await alice.post(ops, f"{mention(world)} info {number}")
    sev = await bob.post(channel["id"], f"{mention(world)} sev 1")
    note = await alice.post(channel["id"], f"{mention(world)} note seen from the outside")
    bad = await alice.post(channel["id"], f"{mention(world)} frobnicate")
    dm = await bob.dm_bot("list")
    chatter = await alice.post(channel["id"], "just talking, not to the bot")
    bot.skew(5)  # the bot comes back five seconds later (by its clock): its replies are late

    await bot.start()
    for person, post in [(alice, info), (bob, sev), (alice, note), (alice, bad), (bob, dm)]:
        reply = await exactly_one_reply(person, post, bot)
        assert LATE.search(reply["message"]), reply["message"]
    assert (await bob.replies_to(sev))[0]["message"].startswith(f"Incident #{number} is now Sev 1 (was Sev 3).")
    assert "Unknown command `frobnicate`" in (await alice.replies_to(bad))[0]["message"]
    assert await alice.replies_to(chatter) == []
    assert bot.db("select severity from incidents where number = ?", number) == [(1,)]
    assert bot.db("select count(*) from timeline where kind = 'note'") == [(1,)]
    await bot.wait_for_log("catchup.done", reason="start")

    # a second restart re-reads the same minute and answers nothing again
    await bot.restart()
    await bot.wait_for_log("catchup.done", reason="start")
    await worked_through(world, alice, ops)
    await worked_through(world, alice, channel["id"])
    probe = await worked_through(world, bob)
    for person, post in [(alice, info), (bob, sev), (alice, note), (alice, bad), (bob, dm)]:
        # (in the DM, every bot post after the command counts as its reply: not the probe's)
        replies = [r for r in await person.replies_to(post) if r["create_at"] < probe["create_at"]]
        assert len(replies) == 1, (post["message"], [r["message"] for r in replies])
    assert bot.db("select count(*) from timeline where kind = 'severity_changed'") == [(1,)]


async def test_ticks_and_unticks_while_down_end_in_the_right_state(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, *_ = await start_incident(world, alice, f"Ticks offline --playbook database --invite @{bob.username}")
    header, items = await checklist_posts(alice, channel["id"])
    await alice.react(items[0]["id"])
    await wait_message(alice, items[0]["id"], r"^☑")
    await bob.react(items[3]["id"])
    await wait_message(alice, items[3]["id"], r"^☑")
    assert await bot.stop() == 0

    await alice.unreact(items[0]["id"])  # 1: ticked before, unticked while down
    await bob.react(items[1]["id"], "heavy_check_mark")  # 2: ticked while down
    await alice.react(items[2]["id"])  # 3: ticked and unticked while down: no change
    await alice.unreact(items[2]["id"])
    await alice.react(items[3]["id"])  # 4: bob's tick stays, alice adds hers, bob takes his off
    await bob.unreact(items[3]["id"])

    await bot.start()
    await wait_message(alice, items[0]["id"], r"^☐ 1\. ")
    await wait_message(alice, items[1]["id"], rf"^☑ ~~2\. Check replication lag~~ — @{bob.username}")
    await wait_message(alice, header["id"], r"2/4 done")
    await bot.wait_for_log("catchup.done", reason="start")
    rows = bot.db("select number, done_by is not null from checklist_items where incident_number = ? order by number", number)
    assert rows == [(1, 0), (2, 1), (3, 0), (4, 1)]
    assert (await alice.get_post(items[2]["id"]))["message"].startswith("☐ 3.")
    assert (await alice.get_post(items[3]["id"]))["message"].startswith("☑")

    # and the live path goes on from there
    await bob.unreact(items[1]["id"], "heavy_check_mark")
    await wait_message(alice, items[1]["id"], r"^☐ 2\. ")
    assert bot.db("select count(*) from checklist_items where done_by is not null") == [(1,)]


async def test_a_restart_does_not_reapply_ticks_already_handled(world: World, bot: BotProcess):
    """✅ then `uncheck` by command: the reaction is still there, but was handled before the
    restart; catch-up must not tick the item again."""
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Unticked by command --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    await alice.react(items[0]["id"])
    await wait_message(alice, items[0]["id"], r"^☑")
    await say(world, alice, channel["id"], "uncheck 1", contains="Unticked item 1")
    await bot.restart()
    await bot.wait_for_log("catchup.done", reason="start")
    await worked_through(world, alice, channel["id"])
    assert bot.db("select done_by from checklist_items where incident_number = ? and number = 1", number) == [(None,)]
    assert (await alice.get_post(items[0]["id"]))["message"].startswith("☐ 1.")


async def test_reactions_and_commands_while_down_apply_in_the_order_they_were_made(world: World, bot: BotProcess):
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Order offline --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    await alice.react(items[1]["id"])
    await wait_message(alice, items[1]["id"], r"^☑")
    assert await bot.stop() == 0
    # item 1: `check 1` by command, then a ✅ added and taken off again: as live, the removal unticks
    # item 2 (ticked by ✅ before): `uncheck 2`, then ✅ again by carol... by alice: ticked at the end
    cmd1 = await alice.post(channel["id"], f"{mention(world)} uncheck 2")
    await alice.unreact(items[1]["id"])
    await alice.react(items[1]["id"])
    cmd2 = await alice.post(channel["id"], f"{mention(world)} check 1")
    await bot.start()
    await exactly_one_reply(alice, cmd1, bot)
    await exactly_one_reply(alice, cmd2, bot)
    await bot.wait_for_log("catchup.done", reason="start")
    await wait_message(alice, items[1]["id"], r"^☑")
    await wait_message(alice, items[0]["id"], r"^☑")
    rows = bot.db("select number, done_by is not null from checklist_items where incident_number = ? order by number", number)
    assert rows == [(1, 1), (2, 1)]


# --- the socket ---------------------------------------------------------------------------


async def test_drop_the_server_forgot_is_caught_up_over_rest(world: World, bot: BotProcess):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Forgotten socket --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    await world.fake.faults.drop_socket(refuse_for=2.0)
    world.fake.faults.forget_connections()
    missed = await alice.post(channel["id"], f"{mention(world)} note while the socket was away")
    await alice.react(items[0]["id"])
    reply = await exactly_one_reply(alice, missed, bot)
    assert "note" in reply["message"].lower() or "timeline" in reply["message"].lower()
    await wait_message(alice, items[0]["id"], r"^☑")
    await bot.wait_for_log("catchup.done", reason="reconnect")
    await bot.wait_for_log("bot.ready", resumed=False, count=2)
    assert bot.db("select count(*) from timeline where kind = 'note'") == [(1,)]


async def test_events_lost_on_a_live_socket_are_caught_up(world: World, bot: BotProcess):
    """The server used a seq but the frame never arrived: the next frame shows the gap."""
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Lost in flight")
    world.fake.faults.lose_events(1)
    lost = await alice.post(channel["id"], f"{mention(world)} sev 2")
    await eventually(lambda: lost_events(world) == 1, what="the event lost in flight")
    later = await alice.post(channel["id"], f"{mention(world)} note after the lost one")
    assert (await exactly_one_reply(alice, lost, bot))["message"].startswith(f"Incident #{number} is now Sev 2")
    await exactly_one_reply(alice, later, bot)
    await bot.wait_for_log("mattermost.ws.gap")
    assert bot.db("select severity from incidents") == [(2,)]


async def test_resumable_drop_replays_without_duplicates(world: World, bot: BotProcess):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Resume me --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    world.fake.faults.lose_events(3)  # sent by the server, never received: only a resume brings them
    first = await alice.post(channel["id"], f"{mention(world)} note one")
    second = await alice.post(channel["id"], f"{mention(world)} note two")
    await alice.react(items[1]["id"])
    await eventually(lambda: lost_events(world) == 3, what="three events lost in flight")
    await world.fake.faults.drop_socket()
    await bot.wait_for_log("bot.ready", resumed=True)
    await exactly_one_reply(alice, first, bot)
    await exactly_one_reply(alice, second, bot)
    await wait_message(alice, items[1]["id"], r"^☑")
    # everything was seen exactly once: two notes, one tick
    assert bot.db("select count(*) from timeline where kind = 'note'") == [(2,)]
    assert bot.db("select count(*) from timeline where kind = 'checklist_checked'") == [(1,)]
    replayed = [e for e in world.fake.ws_log if e.get("replayed") and e["user_id"] == world.bot_user_id]
    assert len(replayed) >= 3
    assert not [e for e in bot.current_log() if e.get("event") == "catchup.done" and e.get("reason") != "start"]


# --- kill -9 at the worst moment -----------------------------------------------------------


async def test_kill_while_creating_the_channel_makes_one_channel(world: World, bot: BotProcess):
    alice = world.alice
    held = world.fake.faults.delay(r"^/api/v4/channels$", 1.0, method="POST", user=world.bot_user_id)
    post = await alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} start Killed mid-way --playbook basic")
    await eventually(lambda: held.hits == 1, what="the channel request on its way")
    await bot.kill()
    await eventually(lambda: len(bot_requests(world, "POST", r"^/api/v4/channels$")) == 1, what="the channel request")
    bot.skew(5)  # it comes back five seconds later (by its clock): the reply is late
    await bot.start()
    reply = await exactly_one_reply(alice, post, bot)
    assert reply["message"].startswith("Started incident #1"), reply["message"]
    assert LATE.search(reply["message"])
    channels = [c for c in world.fake.channels.values() if c["name"].startswith("incident-")]
    assert [c["name"] for c in channels] == ["incident-1-killed-mid-way"]
    assert bot.db("select number, status from incidents") == [(1, "active")]
    _, items = await checklist_posts(alice, channels[0]["id"])
    assert len(items) == 2
    assert len(await alice.pinned(channels[0]["id"])) == 1


@pytest.mark.parametrize("landed", [True, False], ids=["restart-after-it-landed", "restart-while-in-flight"])
async def test_kill_while_posting_the_summary_makes_one_summary(world: World, bot: BotProcess, landed: bool):
    """The summary post was sent when the bot died; the server saves it (at once, or while the
    bot is restarting); the restarted bot finds it rather than making a second one."""
    alice, bob = world.alice, world.bob
    # the summary post is held: 1 s (it lands before the restart) or 4 s (while restarting)
    held = world.fake.faults.delay(r"^/api/v4/posts$", 1.0 if landed else 4.0, method="POST", user=world.bot_user_id)
    post = await alice.post(
        world.channel_ids["ops/incidents"],
        f"{mention(world)} start Killed at the summary --playbook database --invite @{bob.username}",
    )
    await eventually(lambda: held.hits == 1, what="the summary post on its way")
    await bot.kill()
    if landed:
        await eventually(lambda: len(bot_requests(world, "POST", r"^/api/v4/posts$")) == 1, what="the summary post")
    await bot.start()
    await exactly_one_reply(alice, post, bot)
    channel = next(c for c in world.fake.channels.values() if c["name"].startswith("incident-"))
    mine = [p for p in world.fake.all_posts(channel["id"]) if p["user_id"] == world.bot_user_id and not p["type"]]
    summaries = [p for p in mine if p["message"].startswith("### Incident #1:")]
    assert len(summaries) == 1 and summaries[0]["is_pinned"], [p["message"][:40] for p in mine]
    assert len([p for p in mine if p["is_pinned"]]) == 1
    assert len([p for p in mine if p["message"].startswith("**Checklist of incident")]) == 1
    _, items = await checklist_posts(alice, channel["id"])
    assert len(items) == 4
    assert bob.user_id in await alice.channel_members(channel["id"]), "the invite was lost in the crash"
    assert bot.db("select status, summary_post_id from incidents") == [("active", summaries[0]["id"])]


async def test_kill_after_the_reply_left_but_before_it_was_noted(world: World, bot: BotProcess):
    """Read-only and state-changing commands alike: the reply went out, the bot died before
    writing it down; the restart must not answer again."""
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Reply then die")
    for text in (f"info {number}", "sev 2"):
        where = world.channel_ids["ops/incidents"] if text.startswith("info") else channel["id"]
        held = world.fake.faults.delay(r"^/api/v4/posts$", 1.0, method="POST", user=world.bot_user_id)
        before = len(bot_requests(world, "POST", r"^/api/v4/posts$"))
        post = await alice.post(where, f"{mention(world)} {text}")
        await eventually(lambda held=held: held.hits == 1, what="the reply on its way")
        await bot.kill()
        await eventually(lambda before=before: len(bot_requests(world, "POST", r"^/api/v4/posts$")) > before, what="the reply")
        await bot.start()
        await bot.wait_for_log("catchup.done", reason="start")
        await worked_through(world, alice, where)
        assert len(await alice.replies_to(post)) == 1, text
    assert bot.db("select severity from incidents") == [(2,)]


async def test_kill_between_commit_and_reply_answers_once_with_the_effect(world: World, bot: BotProcess):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Commit then die --playbook basic")
    # the edit of the item's post after the commit is held: the tick is in the database, no reply yet
    # (not the header: a tick leaves it as it is, and the bot does not write it again)
    patch = r"^/api/v4/posts/[a-z0-9]+/patch$"
    world.fake.faults.delay(patch, 1.0, method="PUT", user=world.bot_user_id)
    post = await alice.post(channel["id"], f"{mention(world)} check 2")
    await eventually(
        lambda: bot.db("select count(*) from checklist_items where done_by is not null") == [(1,)], what="the tick committed"
    )
    await bot.kill()
    await eventually(lambda: bot_requests(world, "PUT", patch), what="the held refresh done by the server")
    bot.skew(5)  # it comes back five seconds later (by its clock): the reply is late
    await bot.start()
    reply = await exactly_one_reply(alice, post, bot)
    assert LATE.search(reply["message"])
    _, items = await checklist_posts(alice, channel["id"])
    await wait_message(alice, items[1]["id"], r"^☑ ~~2\.")
    assert bot.db("select count(*) from timeline where kind = 'checklist_checked'") == [(1,)]


# --- Mattermost down -----------------------------------------------------------------------


async def test_mattermost_down_then_back_the_bot_waits_and_catches_up(world: World, bot: BotProcess):
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Server outage")
    fake = world.fake
    outage = fake.faults.outage(user=world.bot_user_id)
    fake.faults.refuse_websockets(120)
    await fake.faults.restart()  # sockets drop, nothing can be resumed
    during = await alice.post(channel["id"], f"{mention(world)} sev 1")
    info = await alice.dm_bot(f"info {number}")
    # the bot keeps trying (and stays up) while the server is away
    await bot.wait_for_log("mattermost.ws.connect_failed", count=2)
    assert bot.proc.returncode is None
    fake.faults.remove(outage)
    fake.faults.accept_websockets()
    reply = await exactly_one_reply(alice, during, bot)
    assert reply["message"].startswith(f"Incident #{number} is now Sev 1"), reply["message"]
    await exactly_one_reply(alice, info, bot)
    assert bot.db("select severity from incidents") == [(1,)]
    assert bot.proc.returncode is None


async def test_rest_down_while_the_socket_stays_up_is_retried_when_it_returns(world: World, bot: BotProcess):
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "REST outage")
    outage = world.fake.faults.outage(status=502, user=world.bot_user_id)
    post = await alice.post(channel["id"], f"{mention(world)} sev 2")
    await bot.wait_for_log("command.unanswered", timeout=60)
    world.fake.faults.remove(outage)
    reply = await exactly_one_reply(alice, post, bot)
    assert reply["message"].startswith(f"Incident #{number} is now Sev 2"), reply["message"]
    assert LATE.search(reply["message"])
    assert bot.db("select severity from incidents") == [(2,)]
    await bot.wait_for_log("bot.retrying")


async def test_garbage_rest_answers_do_not_crash_the_bot(world: World, bot: BotProcess):
    alice = world.alice
    fake = world.fake
    fake.faults.fail(r"^/api/v4/users/me/teams$", 200, method="GET", body="<html>proxy error</html>", user=world.bot_user_id)
    dm = await alice.dm_bot("list")
    reply = await exactly_one_reply(alice, dm, bot)
    assert reply["message"].startswith("Something went wrong (ref "), reply["message"]
    shape = fake.faults.fail(
        r"^/api/v4/teams/[a-z0-9]+/members/[a-z0-9]+$", 200, method="GET", body=[1, 2, 3], times=2, user=world.bot_user_id
    )
    dm = await alice.dm_bot("list")
    reply = await exactly_one_reply(alice, dm, bot)
    assert shape.hits >= 1 and reply["message"].startswith("Something went wrong (ref "), reply["message"]
    fake.faults.remove(shape)
    _number, *_ = await start_incident(world, alice, "Still fine")
    assert bot.proc.returncode is None


# --- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_finishes_in_flight_work_and_exits_0(world: World, bot: BotProcess, sig):
    alice = world.alice
    _number, channel, *_ = await start_incident(world, alice, "Graceful")
    world.fake.faults.delay(r"^/api/v4/posts$", 1.5, method="POST", user=world.bot_user_id)
    post = await alice.post(channel["id"], f"{mention(world)} sev 1")
    await eventually(lambda: bot.db("select severity from incidents") == [(1,)], what="the change committed")
    assert await bot.stop(sig) == 0
    assert len(await alice.replies_to(post)) == 1
    stopped = next(e for e in bot.current_log() if e.get("event") == "bot.stopped")
    assert stopped["clean"] is True
    await bot.start()
    await bot.wait_for_log("catchup.done", reason="start")
    await worked_through(world, alice, channel["id"])
    assert len(await alice.replies_to(post)) == 1


async def test_edits_failing_after_a_change_still_answer_truthfully_and_are_repaired(world: World, bot: BotProcess):
    """The tick is saved, then Mattermost refuses every edit for longer than the retries last:
    the reply says what happened (not "nothing was changed"), the posts catch up later."""
    alice = world.alice
    number, channel, *_ = await start_incident(world, alice, "Edits refused --playbook basic")
    _, items = await checklist_posts(alice, channel["id"])
    refused = world.fake.faults.fail(r"/patch$", 503, method="PUT", times=None, user=world.bot_user_id)
    post, reply = await say(world, alice, channel["id"], "check 1", timeout=40)
    assert reply["message"].startswith("Ticked item 1 (Confirm impact)"), reply["message"]
    assert bot.db("select count(*) from checklist_items where done_by is not null") == [(1,)]
    await bot.wait_for_log("refresh.failed", incident=number)
    assert (await alice.get_post(items[0]["id"]))["message"].startswith("☐")  # not yet shown
    world.fake.faults.remove(refused)
    await wait_message(alice, items[0]["id"], r"^☑ ~~1\. Confirm impact~~", timeout=30)
    await bot.wait_for_log("incident.repaired", incident=number)
    assert len(await alice.replies_to(post)) == 1
