"""People start, look after and end incidents, and see what the bot answers."""

from __future__ import annotations

import asyncio
import re

from tests.support.botproc import BotProcess
from tests.support.scenario import mention, start_incident
from tests.support.world import World


async def test_lifecycle_start_info_commander_sev_end(world: World, bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, post, reply = await start_incident(world, alice, "DB primary down --sev 1")
    assert number == 1
    assert channel["name"] == "incident-1-db-primary-down"
    assert channel["display_name"] == "#1 DB primary down"
    assert channel["type"] == "P"
    assert re.fullmatch(
        rf"Commander @{re.escape(alice.username)} · Sev 1 · Active · started \d{{4}}-\d\d-\d\d \d\d:\d\d UTC",
        channel["header"],
    ), channel["header"]
    assert reply["root_id"] == post["id"]
    assert f"~{channel['name']}" in reply["message"]
    members = await alice.channel_members(channel["id"])
    assert alice.user_id in members and bob.user_id not in members
    pinned = await alice.pinned(channel["id"])
    assert len(pinned) == 1 and "Incident #1: DB primary down" in pinned[0]["message"]
    # the summary is the bot's first post there (the server adds its own join messages)
    first_by_bot = next(p for p in await alice.posts(channel["id"]) if p["user_id"] == world.bot_user_id and not p["type"])
    assert first_by_bot["id"] == pinned[0]["id"]

    # bob cannot see the private channel but can read info from the team channel
    info = await bob.post(world.channel_ids["ops/incidents"], f"{mention(world)} info 1")
    info_reply = await bob.wait_for_reply(info)
    assert "#1 DB primary down" in info_reply["message"] and "Active" in info_reply["message"]
    assert f"@{alice.username}" in info_reply["message"]

    # commander handover, in the incident channel
    cmd = await alice.post(channel["id"], f"{mention(world)} commander @{bob.username}")
    r = await alice.wait_for_reply(cmd)
    assert r["message"] == f"Commander of incident #1 is now @{bob.username} (was @{alice.username})."
    assert bob.user_id in await alice.channel_members(channel["id"])
    # severity
    cmd = await alice.post(channel["id"], f"{mention(world)} sev 2")
    r = await alice.wait_for_reply(cmd)
    assert r["message"] == "Incident #1 is now Sev 2 (was Sev 1)."
    header = (await alice.channel(channel["id"]))["header"]
    assert header.startswith(f"Commander @{bob.username} · Sev 2 · Active")
    summary = (await alice.get_post(pinned[0]["id"]))["message"]
    assert f"| Commander | @{bob.username} |" in summary and "| Severity | Sev 2 |" in summary

    # end with a resolution
    cmd = await alice.post(channel["id"], f"{mention(world)} end rolled back the migration")
    r = await alice.wait_for_reply(cmd)
    assert re.fullmatch(
        r"Ended incident #1 \(~incident-1-db-primary-down\) at \d\d:\d\d UTC after 0h 0\dm\. Resolution: rolled back the migration",
        r["message"],
    ), r["message"]
    header = (await alice.channel(channel["id"]))["header"]
    assert "· Ended ·" in header and "ended" in header
    summary = (await alice.get_post(pinned[0]["id"]))["message"]
    assert "| Status | Ended |" in summary and "rolled back the migration" in summary
    # the origin thread hears about it
    notice = await alice.wait_for_post(
        world.channel_ids["ops/incidents"], lambda p: p["root_id"] == post["id"] and "ended at" in p["message"]
    )
    assert "Incident #1" in notice["message"]
    # ending twice is a conflict with the spec's wording
    cmd = await alice.post(channel["id"], f"{mention(world)} end")
    r = await alice.wait_for_reply(cmd)
    assert re.fullmatch(r"Incident #1 already ended at \d\d:\d\d UTC \(after 0h 0\dm\)\.", r["message"]), r["message"]
    rows = bot.db("select status, severity, resolution from incidents where number = 1")
    assert rows == [("ended", 2, "rolled back the migration")]
    kinds = [k for (k,) in bot.db("select kind from timeline where incident_number = 1 order by id")]
    assert kinds == ["started", "commander_changed", "severity_changed", "ended"]


async def test_thread_reply_start_uses_root_as_origin_and_title(world: World, bot: BotProcess):
    alice = world.alice
    alert = await world.bob.post(world.channel_ids["ops/incidents"], "ALERT: checkout latency p99 > 5s\nsource: grafana")
    cmd = await alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} start", root_id=alert["id"])
    reply = await alice.wait_for_reply(cmd, contains="Started incident")
    assert reply["root_id"] == alert["id"]
    channel = await alice.channel_by_name(world.team_ids["ops"], "incident-1-alert-checkout-latency-p99-5s")
    assert channel is not None, reply["message"]
    assert channel["display_name"] == "#1 ALERT: checkout latency p99 > 5s"
    rows = bot.db("select origin_post_id, title from incidents")
    assert rows == [(alert["id"], "ALERT: checkout latency p99 > 5s")]


async def test_dm_start_with_and_without_team(world: World, bot: BotProcess):
    # bob shares one team with the bot: no --team needed
    dm = await world.bob.dm(world.bot_user_id, "start Payment errors")
    r = await world.bob.wait_for_reply(dm)
    assert r["message"].startswith("Started incident #1")
    assert await world.bob.channel_by_name(world.team_ids["ops"], "incident-1-payment-errors") is not None
    # alice shares two: she is asked, and nothing is created
    dm = await world.alice.dm(world.bot_user_id, "start Checkout down")
    r = await world.alice.wait_for_reply(dm)
    assert "--team" in r["message"] and "ops" in r["message"] and "web" in r["message"]
    assert bot.db("select count(*) from incidents") == [(1,)]
    dm = await world.alice.dm(world.bot_user_id, "start Checkout down --team web")
    r = await world.alice.wait_for_reply(dm)
    assert r["message"].startswith("Started incident #2")
    assert await world.alice.channel_by_name(world.team_ids["web"], "incident-2-checkout-down") is not None
    # a mention works in DMs too
    dm = await world.alice.dm(world.bot_user_id, f"{mention(world)} list")
    r = await world.alice.wait_for_reply(dm)
    assert "#" in r["message"] and "Checkout down" in r["message"] and "Payment errors" in r["message"]


async def test_two_people_start_at_the_same_moment(world: World, bot: BotProcess):
    a, b = await asyncio.gather(
        world.alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} start Disk full"),
        world.bob.post(world.channel_ids["ops/incidents"], f"{mention(world)} start Disk full"),
    )
    ra, rb = await asyncio.gather(world.alice.wait_for_reply(a), world.bob.wait_for_reply(b))
    numbers = sorted(int(re.search(r"#(\d+)", r["message"]).group(1)) for r in (ra, rb))
    assert numbers == [1, 2]
    names = sorted(re.search(r"~(incident-\S+?)\s", r["message"] + " ").group(1) for r in (ra, rb))
    assert names == ["incident-1-disk-full", "incident-2-disk-full"]
    assert bot.db("select count(distinct channel_id) from incidents") == [(2,)]


async def test_non_member_end_refused_then_join_and_end(world: World, bot: BotProcess):
    number, channel, _post, _ = await start_incident(world, world.alice, "Queue backlog")
    carol = world.carol
    cmd = await carol.post(world.channel_ids["ops/incidents"], f"{mention(world)} end {number}")
    r = await carol.wait_for_reply(cmd)
    assert r["message"] == (f"Only members of ~{channel['name']} can end incident #{number}. Use `join {number}` first.")
    assert bot.db("select status from incidents") == [("active",)]
    cmd = await carol.post(world.channel_ids["ops/incidents"], f"{mention(world)} join {number}")
    r = await carol.wait_for_reply(cmd)
    assert r["message"] == f"Added you to ~{channel['name']} (incident #{number})."
    assert carol.user_id in await carol.channel_members(channel["id"])
    cmd = await carol.post(world.channel_ids["ops/incidents"], f"{mention(world)} end {number} fixed")
    r = await carol.wait_for_reply(cmd)
    assert r["message"].startswith(f"Ended incident #{number}")
    assert bot.db("select status, ended_by from incidents") == [("ended", carol.user_id)]


async def test_other_team_sees_nothing(world: World, bot: BotProcess):
    number, channel, *_ = await start_incident(world, world.alice, "Secret ops outage")
    dave = world.dave
    for text in (f"info {number}", f"join {number}", f"end {number}", "info 999"):
        dm = await dave.dm(world.bot_user_id, text)
        r = await dave.wait_for_reply(dm)
        wanted = 999 if "999" in text else number
        assert r["message"] == f"No incident #{wanted} in your teams.", (text, r["message"])
    dm = await dave.dm(world.bot_user_id, "list")
    r = await dave.wait_for_reply(dm)
    assert r["message"] == "No active incidents in your teams."
    dm = await world.bob.dm(world.bot_user_id, "list")
    r = await world.bob.wait_for_reply(dm)
    assert "Secret ops outage" in r["message"]
    assert dave.user_id not in await world.alice.channel_members(channel["id"])


async def test_list_in_dm_only_requesters_teams_newest_first(world: World, bot: BotProcess):
    await start_incident(world, world.alice, "Ops one")
    await start_incident(world, world.alice, "Ops two")
    post = await world.dave.post(world.channel_ids["web/incidents"], f"{mention(world)} start Web one")
    await world.dave.wait_for_reply(post, contains="Started")
    dm = await world.dave.dm(world.bot_user_id, "list")
    r = await world.dave.wait_for_reply(dm)
    assert "Web one" in r["message"] and "Ops" not in r["message"]
    dm = await world.alice.dm(world.bot_user_id, "list")
    r = await world.alice.wait_for_reply(dm)
    text = r["message"]
    assert text.index("Web one") < text.index("Ops two") < text.index("Ops one")


async def test_unknown_command_and_bad_arguments(world: World, bot: BotProcess):
    ch = world.channel_ids["ops/incidents"]
    p = await world.alice.post(ch, f"{mention(world)} frob the widget")
    r = await world.alice.wait_for_reply(p)
    assert r["message"] == f"Unknown command `frob`. Try `{mention(world)} help`."
    p = await world.alice.post(ch, f"{mention(world)} start DB down --sev 7")
    r = await world.alice.wait_for_reply(p)
    assert r["message"].splitlines()[0] == "Severity must be 1, 2, 3 or 4, not `7`."
    assert r["message"].splitlines()[1].startswith(f"Usage: `{mention(world)} start <title>")
    p = await world.alice.post(ch, f"{mention(world)} join")
    r = await world.alice.wait_for_reply(p)
    assert "Usage:" in r["message"] and "join <id>" in r["message"]
    p = await world.alice.post(ch, f"{mention(world)} sev 2")
    r = await world.alice.wait_for_reply(p)
    assert "works only in an incident channel" in r["message"]
    p = await world.alice.post(ch, f"{mention(world)} help end")
    r = await world.alice.wait_for_reply(p)
    assert r["message"].startswith(f"`{mention(world)} end [<id>] [resolution…]`")
    p = await world.alice.post(ch, f"{mention(world)} start")
    r = await world.alice.wait_for_reply(p)
    assert "needs a title" in r["message"]
    assert bot.db("select count(*) from incidents") == [(0,)]
    # exactly one reply each, and nothing for a post that does not address the bot: the bot
    # handles a channel's posts in order, so once a later command is answered it has read it
    quiet = await world.alice.post(ch, "just chatting about the bot")
    later = await world.alice.post(ch, f"{mention(world)} help end")
    await world.alice.wait_for_reply(later)
    assert await world.alice.replies_to(quiet) == []


async def test_commander_must_be_in_team(world: World, bot: BotProcess):
    number, channel, *_ = await start_incident(world, world.alice, "Cache stampede")
    cmd = await world.alice.post(channel["id"], f"{mention(world)} commander @{world.dave.username}")
    r = await world.alice.wait_for_reply(cmd)
    assert r["message"] == f"@{world.dave.username} is not in the team of incident #{number}."
    cmd = await world.alice.post(channel["id"], f"{mention(world)} commander @nobody-here")
    r = await world.alice.wait_for_reply(cmd)
    assert r["message"] == "There is no user @nobody-here."
    assert bot.db("select commander_id from incidents") == [(world.alice.user_id,)]


async def test_invite_adds_team_members_and_names_the_rest(world: World, bot: BotProcess):
    p = await world.alice.post(
        world.channel_ids["ops/incidents"],
        f"{mention(world)} start Login broken --invite @{world.bob.username} @{world.dave.username}",
    )
    r = await world.alice.wait_for_reply(p)
    assert f"Added @{world.bob.username}." in r["message"]
    assert f"Not added (not in this team or unknown): @{world.dave.username}." in r["message"]
    channel = await world.alice.channel_by_name(world.team_ids["ops"], "incident-1-login-broken")
    members = await world.alice.channel_members(channel["id"])
    assert world.bob.user_id in members and world.dave.user_id not in members
