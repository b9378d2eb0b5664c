"""Who is who: usernames, teams and memberships, read from Mattermost with a small cache
that the WebSocket events changing them invalidate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from incident_bot.chat.events import OtherEvent
from incident_bot.chat.models import Reaction, Team, User
from incident_bot.chat.port import ChatPort
from incident_bot.domain import messages, rules
from incident_bot.domain.messages import Names
from incident_bot.domain.rules import Actor
from incident_bot.store.base import Store

_TEAM_TTL = 60.0  # seconds a bot-team list is trusted
_TTL = 60.0  # seconds a team or a membership answer is trusted even when no event says otherwise

_K = TypeVar("_K")
_V = TypeVar("_V")

# The events that change what is cached (names as Mattermost sends them).
_MEMBERSHIP_EVENTS = {"user_added", "user_removed", "channel_deleted", "channel_restored", "channel_converted"}
_TEAM_EVENTS = {"added_to_team", "leave_team", "update_team", "delete_team", "restore_team", "update_team_scheme"}


class Directory:
    """Caches usernames, teams, channel membership, what kind each account is, and the
    headers the bot set.

    Every command in an incident channel asked Mattermost whether its author was in the
    channel, and every tick also read the team for a permalink: two REST calls of the tick's
    six in the profile; the kind of account (``actor``: person, guest, bot, deactivated) was
    one more for every command and counted reaction. Team membership stays asked live
    (``in_team``). Answers are kept for ``_TTL`` seconds at most, and dropped at once when an
    event says they changed (``observe``: user_added / user_removed, team events,
    user_updated, channel_updated) or when events may have been missed (``forget``: a
    connection that was not resumed, a gap). An answer read while such an event arrived is
    not kept (``_generation``).
    """

    def __init__(self, client: ChatPort, bot: User, store: Store | None = None) -> None:
        self.client = client
        self.bot = bot
        self.store = store
        self._users: dict[str, User] = {bot.id: bot}
        self._bot_teams: tuple[float, list[Team]] | None = None
        self._teams: dict[str, tuple[float, Team]] = {}
        self._channel_members: dict[tuple[str, str], tuple[float, bool]] = {}
        self._actors: dict[str, tuple[float, Actor]] = {}  # user id -> what kind of account it is
        self._headers: dict[str, str] = {}  # channel id -> the header the bot set there last
        self._generation = 0

    # --- keeping the cache true -------------------------------------------------------------

    def forget(self) -> None:
        """Drop every cached answer but the users' names (events may have been missed)."""
        self._generation += 1
        self._bot_teams = None
        self._teams.clear()
        self._channel_members.clear()
        self._actors.clear()
        self._headers.clear()

    def forget_channel(self, channel_id: str) -> None:
        """Drop what is cached about one channel's members (the bot changed them itself)."""
        self._generation += 1
        for key in [k for k in self._channel_members if k[0] == channel_id]:
            del self._channel_members[key]

    def observe(self, event: OtherEvent) -> None:
        """An event from the stream: drop what it changes."""
        name = event.name
        if name in _MEMBERSHIP_EVENTS:
            channel_id = _text(event.broadcast.get("channel_id")) or _text(event.data.get("channel_id"))
            if channel_id:
                self.forget_channel(channel_id)
                self._headers.pop(channel_id, None)
            else:
                self._generation += 1
                self._channel_members.clear()
        elif name in _TEAM_EVENTS:
            self._generation += 1
            self._bot_teams = None
            self._teams.clear()
            self._channel_members.clear()  # leaving a team leaves its channels
        elif name == "user_updated":
            # What the server sends everyone when an account is deactivated or reactivated, a
            # member demoted to a guest or a guest promoted (sendUpdatedUserEvent), or a
            # profile changed. Without a user id it is not known whose: drop every account.
            user = _object(event.data.get("user"))
            user_id = _text(user.get("id"))
            self._generation += 1
            if not user_id:
                self._actors.clear()
            elif user_id != self.bot.id:
                self._users.pop(user_id, None)
                self._actors.pop(user_id, None)
        elif name == "channel_updated":
            channel = _object(event.data.get("channel"))
            channel_id = _text(channel.get("id")) or _text(event.broadcast.get("channel_id"))
            if channel_id in self._headers and channel.get("header") != self._headers[channel_id]:
                del self._headers[channel_id]  # someone else edited it: the next refresh writes it again

    async def _cached(self, cache: dict[_K, tuple[float, _V]], key: _K, fetch: Callable[[], Awaitable[_V]]) -> _V:
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < _TTL:
            return hit[1]
        generation = self._generation
        value = await fetch()
        if generation == self._generation:
            cache[key] = (now, value)
        return value

    # --- the header the bot set -------------------------------------------------------------

    def header_shown(self, channel_id: str, header: str) -> bool:
        """True when the bot set exactly this header last and no event says it changed since."""
        return self._headers.get(channel_id) == header

    def header_set(self, channel_id: str, header: str) -> None:
        self._headers[channel_id] = header

    # --- who is who -------------------------------------------------------------------------

    async def user(self, user_id: str) -> User | None:
        if user_id not in self._users:
            await self._learn(await self.client.get_users_by_ids([user_id]))
        return self._users.get(user_id)

    async def _learn(self, users: list[User]) -> None:
        """Cache users; remember their names in the database so offline exports can name them."""
        for user in users:
            self._users[user.id] = user
        if self.store is not None and users:
            async with self.store.transaction() as tx:
                for user in users:
                    await tx.set_state(f"user:{user.id}", user.username)

    async def user_by_name(self, username: str) -> User | None:
        for user in self._users.values():
            if user.username.lower() == username.lower():
                return user
        found = await self.client.get_user_by_username(username.lower())
        if found is not None:
            await self._learn([found])
        return found

    async def names(self, user_ids: Iterable[str | None]) -> Names:
        """A sync ``id -> "@name"`` function with every given id looked up in one call."""
        missing = sorted({uid for uid in user_ids if uid and uid not in self._users})
        if missing:
            await self._learn(await self.client.get_users_by_ids(missing))

        def name(user_id: str | None) -> str:
            if not user_id:
                return messages.NOBODY
            user = self._users.get(user_id)
            return f"@{user.username}" if user else messages.UNKNOWN_USER

        return name

    async def bot_teams(self) -> list[Team]:
        now = time.monotonic()
        if self._bot_teams is None or now - self._bot_teams[0] > _TEAM_TTL:
            self._bot_teams = (now, await self.client.get_user_teams("me"))
        return self._bot_teams[1]

    async def shared_teams(self, user_id: str) -> list[Team]:
        """Teams both the user and the bot are in."""
        # A bot may not list another user's teams; it may ask each of its own teams.
        mine = await self.bot_teams()
        flags = await asyncio.gather(*(self.in_team(team.id, user_id) for team in mine))
        return [team for team, member in zip(mine, flags, strict=True) if member]

    async def team(self, team_id: str) -> Team:
        """The team (raises as ``ChatPort.get_team`` does)."""
        return await self._cached(self._teams, team_id, lambda: self.client.get_team(team_id))

    async def in_team(self, team_id: str, user_id: str) -> bool:
        # Asked live: when the bot itself is taken out of a team no event tells it, and only
        # this question, refused, says so (Core.reachable).
        return await self.client.is_team_member(team_id, user_id)

    async def add_to_channel(self, channel_id: str, user_id: str) -> None:
        """Add a member (the membership cached for the channel is dropped: asked again next time)."""
        await self.client.add_channel_member(channel_id, user_id)
        self.forget_channel(channel_id)

    async def in_channel(self, channel_id: str | None, user_id: str) -> bool:
        if not channel_id:
            return False
        return await self._cached(
            self._channel_members, (channel_id, user_id), lambda: self.client.is_channel_member(channel_id, user_id)
        )

    async def actor(self, user_id: str) -> Actor:
        """What kind of account ``user_id`` is now: cached like the memberships, and dropped
        when ``user_updated`` says the account changed (deactivated, reactivated, demoted to
        a guest, promoted), so those count at once. A change the server tells the bot nothing
        of (``PUT /users/{id}/roles``, a user turned into a bot) counts after ``_TTL`` at most."""
        if user_id == self.bot.id:
            return Actor.BOT
        return await self._cached(self._actors, user_id, lambda: self._ask_actor(user_id))

    async def _ask_actor(self, user_id: str) -> Actor:
        found = await self.client.get_users_by_ids([user_id])
        user = next((u for u in found if u.id == user_id), None)
        if user is None:
            return Actor.UNKNOWN
        if self._users.get(user_id) is None or self._users[user_id].username != user.username:
            await self._learn([user])
        else:
            self._users[user_id] = user
        return rules.actor(known=True, is_bot=user.is_bot, roles=user.roles, delete_at=user.delete_at)

    async def acting_member(self, channel_id: str | None, user_id: str) -> bool:
        """A person (not a guest, a bot or a deactivated account) in ``channel_id``: whose
        reactions count on an incident."""
        if not await self.in_channel(channel_id, user_id):
            return False
        return await self.actor(user_id) == Actor.PERSON

    async def member_reactions(self, post_id: str, emojis: Iterable[str], channel_id: str | None) -> list[Reaction]:
        """The reactions with one of ``emojis`` on a post made by people in ``channel_id``
        (``acting_member``: never a bot, a guest or a deactivated account), oldest first:
        the ones that count for ticks and pins."""
        wanted = set(emojis)
        member: dict[str, bool] = {}
        found = []
        for reaction in sorted(await self.client.get_reactions(post_id), key=lambda r: (r.create_at, r.update_at)):
            if reaction.emoji_name not in wanted or reaction.user_id == self.bot.id:
                continue
            if reaction.user_id not in member:
                member[reaction.user_id] = await self.acting_member(channel_id, reaction.user_id)
            if member[reaction.user_id]:
                found.append(reaction)
        return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    """An event's embedded object: a JSON string (as the server sends it) or an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}
