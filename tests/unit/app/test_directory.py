"""The directory's cache: asked once, dropped by the events that change it, by a gap, and
never refilled by an answer read while such an event arrived."""

from __future__ import annotations

import asyncio
import json

from incident_bot.app.directory import Directory
from incident_bot.chat.events import OtherEvent
from incident_bot.chat.models import User
from incident_bot.domain.rules import Actor
from tests.support.chat_double import ChatDouble


def world() -> tuple[ChatDouble, Directory, User, str, str]:
    chat = ChatDouble(bot=User(id="bot", username="incident-bot", is_bot=True))
    alice = chat.add_user("alice")
    team = chat.add_team("ops", alice)
    channel = chat.add_channel(team, "incident-1", alice)
    return chat, Directory(chat, chat.bot), alice, team.id, channel.id


def event(name: str, data: dict[str, object] | None = None, **broadcast: str) -> OtherEvent:
    return OtherEvent(name=name, data=data or {}, broadcast=broadcast)


async def test_membership_is_asked_once_until_an_event_changes_it() -> None:
    chat, directory, alice, _team, channel = world()
    assert await directory.in_channel(channel, alice.id)
    assert await directory.in_channel(channel, alice.id)
    assert len(chat.called("is_channel_member")) == 1
    chat.members[channel].discard(alice.id)
    directory.observe(event("user_removed", {"user_id": alice.id}, channel_id=channel))
    assert not await directory.in_channel(channel, alice.id)
    chat.members[channel].add(alice.id)
    directory.observe(event("user_added", {"user_id": alice.id}, channel_id=channel))
    assert await directory.in_channel(channel, alice.id)
    assert len(chat.called("is_channel_member")) == 3


async def test_the_removed_users_own_event_names_the_channel_in_its_data() -> None:
    chat, directory, alice, _team, channel = world()
    assert await directory.in_channel(channel, alice.id)
    chat.members[channel].discard(alice.id)
    directory.observe(event("user_removed", {"channel_id": channel}, user_id=alice.id))
    assert not await directory.in_channel(channel, alice.id)


async def test_team_events_and_a_gap_drop_teams_and_memberships() -> None:
    chat, directory, alice, team, channel = world()
    assert (await directory.team(team)).name == "ops"
    assert await directory.in_channel(channel, alice.id)
    chat.team_members[team].discard(alice.id)
    chat.members[channel].discard(alice.id)
    directory.observe(event("leave_team", {"user_id": alice.id, "team_id": team}, team_id=team))
    assert not await directory.in_team(team, alice.id)  # always asked live
    assert not await directory.in_channel(channel, alice.id)
    await directory.team(team)
    assert len(chat.called("get_team")) == 2
    chat.members[channel].add(alice.id)
    assert not await directory.in_channel(channel, alice.id)  # no event said so: the cached answer
    directory.forget()
    assert await directory.in_channel(channel, alice.id)
    assert len(chat.called("is_channel_member")) == 3


async def test_an_answer_read_while_an_event_arrives_is_not_kept() -> None:
    chat, directory, alice, _team, channel = world()
    release = asyncio.Event()
    asked = chat.is_channel_member

    async def slow(channel_id: str, user_id: str) -> bool:
        answer = await asked(channel_id, user_id)
        await release.wait()
        return answer

    chat.is_channel_member = slow  # type: ignore[method-assign]
    reading = asyncio.create_task(directory.in_channel(channel, alice.id))
    await asyncio.sleep(0)
    chat.members[channel].discard(alice.id)
    directory.observe(event("user_removed", {"user_id": alice.id}, channel_id=channel))
    release.set()
    assert await reading  # the answer of its time
    assert not await directory.in_channel(channel, alice.id)  # asked again


async def test_a_header_someone_else_wrote_is_written_again() -> None:
    _chat, directory, _alice, _team, channel = world()
    directory.header_set(channel, "Commander @alice")
    assert directory.header_shown(channel, "Commander @alice")
    directory.observe(event("channel_updated", {"channel": json.dumps({"id": channel, "header": "Commander @alice"})}))
    assert directory.header_shown(channel, "Commander @alice")  # the bot's own edit coming back
    directory.observe(event("channel_updated", {"channel": json.dumps({"id": channel, "header": "hand written"})}))
    assert not directory.header_shown(channel, "Commander @alice")


async def test_a_renamed_user_is_looked_up_again() -> None:
    chat, directory, alice, _team, _channel = world()
    assert (await directory.names([alice.id]))(alice.id) == "@alice"
    chat.users[alice.id] = alice.model_copy(update={"username": "alice2"})
    directory.observe(event("user_updated", {"user": {"id": alice.id, "username": "alice2"}}))
    assert (await directory.names([alice.id]))(alice.id) == "@alice2"


def user_updated(user: User) -> OtherEvent:
    """The event as the server sends it to a bot (sendUpdatedUserEvent: the sanitised user as a JSON object)."""
    return event("user_updated", {"user": user.model_dump(mode="json")})


async def test_the_kind_of_account_is_asked_once_until_user_updated_says_it_changed() -> None:
    chat, directory, alice, _team, _channel = world()
    assert await directory.actor(alice.id) == Actor.PERSON
    assert await directory.actor(alice.id) == Actor.PERSON
    assert len(chat.called("get_users_by_ids")) == 1  # the second from the cache
    chat.users[alice.id] = guest = alice.model_copy(update={"roles": "system_guest"})
    directory.observe(user_updated(guest))  # demoted to a guest
    assert await directory.actor(alice.id) == Actor.GUEST
    chat.users[alice.id] = gone = guest.model_copy(update={"delete_at": 1_700_000_000_000})
    directory.observe(user_updated(gone))  # deactivated
    assert await directory.actor(alice.id) == Actor.DEACTIVATED
    assert len(chat.called("get_users_by_ids")) == 3


async def test_another_accounts_event_keeps_the_answer_and_a_gap_drops_it() -> None:
    chat, directory, alice, _team, _channel = world()
    bob = chat.add_user("bob")
    assert await directory.actor(alice.id) == Actor.PERSON
    directory.observe(user_updated(bob))
    assert await directory.actor(alice.id) == Actor.PERSON
    assert len(chat.called("get_users_by_ids")) == 1
    chat.users[alice.id] = alice.model_copy(update={"delete_at": 1})
    directory.forget()  # a reconnect that was not resumed: the event may be among the lost
    assert await directory.actor(alice.id) == Actor.DEACTIVATED
    assert len(chat.called("get_users_by_ids")) == 2


async def test_a_kind_read_while_user_updated_arrives_is_not_kept() -> None:
    chat, directory, alice, _team, _channel = world()
    release = asyncio.Event()
    asked = chat.get_users_by_ids

    async def slow(ids: list[str]) -> list[User]:
        answer = await asked(ids)
        await release.wait()
        return answer

    chat.get_users_by_ids = slow  # type: ignore[method-assign]
    reading = asyncio.create_task(directory.actor(alice.id))
    await asyncio.sleep(0)
    chat.users[alice.id] = gone = alice.model_copy(update={"delete_at": 1})
    directory.observe(user_updated(gone))
    release.set()
    assert await reading == Actor.PERSON  # the answer of its time
    assert await directory.actor(alice.id) == Actor.DEACTIVATED  # asked again
