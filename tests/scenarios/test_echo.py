"""Text people typed never gains power by being echoed, checked on the posts Mattermost holds:
an alert that says @channel starts an incident, updates and the resolution say @here and
@all, and none of the bot's posts (channel, origin thread, announcements, pinned summary,
replies) holds a channel-wide mention as Mattermost's parser reads it."""

from __future__ import annotations

from tests.support.botproc import BotProcess
from tests.support.mentions import channel_mentions
from tests.support.scenario import mention
from tests.support.world import World

LOUD = "Payments down @channel (@here) ask @{bob}; see ~town-square | # not a heading"


async def test_loud_text_is_echoed_without_its_power(world: World, announcing_bot: BotProcess):
    alice, bob = world.alice, world.bob
    loud = LOUD.format(bob=bob.username)
    ops = world.channel_ids["ops/incidents"]
    announcements = await world.admin.create_channel(world.team_ids["ops"], "announcements", "Announcements")
    await world.admin.add_member(announcements["id"], world.bot_user_id)

    alert = await alice.post(ops, loud)
    start = await alice.post(ops, f"{mention(world)} start --invite @{bob.username} @all", root_id=alert["id"])
    started = await alice.wait_for_reply(start, contains="Started incident")
    assert "Not added" in started["message"] and channel_mentions(started["message"]) == set()
    name = started["message"].split("~", 1)[1].split()[0]
    channel = await alice.channel_by_name(world.team_ids["ops"], name)
    ch = channel["id"]
    for command in (f"update {loud}\n@all hands please", f"note {loud}", f"add {loud}", "timeline", f"end {loud} @HERE."):
        post = await alice.post(ch, f"{mention(world)} {command}")
        await alice.wait_for_reply(post)
    await alice.wait_for_post(ops, lambda p: p["root_id"] == alert["id"] and "ended at" in p["message"])

    written = [
        p for where in (ch, ops, announcements["id"]) for p in await alice.posts(where) if p["user_id"] == world.bot_user_id
    ]
    assert len(written) >= 10
    assert [p["message"] for p in written if channel_mentions(p["message"])] == []
    # people are still named, channels still linked, and the text is all there
    assert any(f"ask @{bob.username}; see ~town-square" in p["message"] for p in written)
    summary = (await alice.pinned(ch))[0]["message"]
    assert summary.splitlines()[0].startswith("### Incident #") and "Payments down" in summary.splitlines()[0]
    header = (await alice.channel(ch))["header"]
    assert channel_mentions(header) == set()
