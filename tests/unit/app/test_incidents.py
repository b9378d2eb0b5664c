"""Start, end, reopen, join, commander, sev, info, list, history: the use cases in-process."""

from __future__ import annotations

from incident_bot.app.channel import PART_PROP
from incident_bot.domain.models import Status
from tests.support.inprocess import App


async def incident(app: App, number: int):
    async with app.store.transaction() as tx:
        found = await tx.get_incident(number)
    assert found is not None
    return found


async def test_start_opens_a_private_channel_with_summary_checklist_and_announcement(app: App) -> None:
    reply = await app.say(app.alice, "start DB primary down --playbook database --invite @bob")
    assert "#1" in reply and "@bob" in reply
    channel = app.channel_of(1)
    assert channel.type == "P"
    assert app.chat.members[channel.id] >= {app.alice.id, app.bob.id}
    posts = app.chat.bot_posts(channel)
    summary = next(p for p in posts if p.props.get(PART_PROP) == "1:summary")
    assert summary.is_pinned and "DB primary down" in summary.message
    items = [p for p in posts if str(p.props.get(PART_PROP, "")).startswith("1:item:")]
    assert [p.message.split(". ", 1)[1] for p in items] == ["Page the DBA", "Check lag"]
    assert "Commander @alice" in app.chat.channels[channel.id].header
    found = await incident(app, 1)
    assert found.status == Status.ACTIVE and found.severity == 2 and found.commander_id == app.alice.id
    announcements = next(c for c in app.chat.channels.values() if c.name == "announcements")
    assert len(app.chat.bot_posts(announcements)) == 1


async def test_start_refusals_change_nothing(app: App) -> None:
    assert (
        await app.say(app.alice, "start X --playbook nope") == "There is no playbook `nope` in this team. Playbooks: `database`."
    )
    assert (await app.say(app.alice, "start")).startswith("An incident needs a title")
    async with app.store.transaction() as tx:
        assert await tx.get_incident(1) is None


async def test_start_from_a_dm_needs_a_team_when_there_are_two(app: App) -> None:
    reply = await app.dm(app.alice, "start Checkout down")
    assert "--team" in reply and "ops" in reply and "web" in reply
    assert "#1" in await app.dm(app.alice, "start Checkout down --team web")
    assert (await incident(app, 1)).team_id == app.web.id


async def test_end_then_reopen(app: App) -> None:
    channel = await app.start()
    reply = await app.say(app.alice, "end fixed the disk", channel)
    assert "ended" in reply.lower()
    ended = await incident(app, 1)
    assert ended.status == Status.ENDED and ended.resolution == "fixed the disk" and ended.ended_by == app.alice.id
    assert "already" in (await app.say(app.alice, "end", channel)).lower()
    await app.say(app.alice, "reopen", channel)
    assert (await incident(app, 1)).status == Status.ACTIVE
    # the origin thread heard about the end
    assert any("ended" in p.message.lower() for p in app.chat.bot_posts(app.room) if p.root_id)


async def test_join_commander_and_sev(app: App) -> None:
    channel = await app.start()
    assert (await app.say(app.bob, "sev 1", channel)).startswith("Only members of ~incident-1-db-down can change the severity")
    await app.say(app.bob, "join 1")
    assert app.bob.id in app.chat.members[channel.id]
    assert "already" in (await app.say(app.bob, "join 1")).lower()
    await app.say(app.alice, "commander @bob", channel)
    assert (await incident(app, 1)).commander_id == app.bob.id
    await app.say(app.bob, "sev 1", channel)
    assert (await incident(app, 1)).severity == 1
    assert "Sev 1" in app.chat.channels[channel.id].header


async def test_people_outside_the_team_cannot_tell_an_incident_exists(app: App) -> None:
    await app.start()
    exists = await app.dm(app.dave, "info 1")
    missing = await app.dm(app.dave, "info 99")
    assert exists == missing.replace("99", "1")


async def test_info_list_history(app: App) -> None:
    channel = await app.start(title="Cache cold")
    assert "Cache cold" in await app.say(app.bob, "info 1")
    assert "Cache cold" in await app.dm(app.bob, "list")
    await app.say(app.alice, "end", channel)
    assert "Cache cold" in await app.dm(app.bob, "history")
    assert "Cache cold" not in await app.dm(app.bob, "list")
