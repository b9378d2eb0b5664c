"""Who is who: usernames, teams and memberships, read from Mattermost with a small cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from incident_bot.chat.models import Reaction, Team, User
from incident_bot.chat.port import ChatPort
from incident_bot.domain import messages, rules
from incident_bot.domain.messages import Names
from incident_bot.domain.rules import Actor
from incident_bot.store.base import Store

_TEAM_TTL = 60.0  # seconds a bot-team list is trusted


class Directory:
    """Caches usernames (they rarely change) and the bot's teams; membership is always asked live."""

    def __init__(self, client: ChatPort, bot: User, store: Store | None = None) -> None:
        self.client = client
        self.bot = bot
        self.store = store
        self._users: dict[str, User] = {bot.id: bot}
        self._bot_teams: tuple[float, list[Team]] | None = None

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
        flags = await asyncio.gather(*(self.client.is_team_member(team.id, user_id) for team in mine))
        return [team for team, member in zip(mine, flags, strict=True) if member]

    async def in_team(self, team_id: str, user_id: str) -> bool:
        return await self.client.is_team_member(team_id, user_id)

    async def in_channel(self, channel_id: str | None, user_id: str) -> bool:
        if not channel_id:
            return False
        return await self.client.is_channel_member(channel_id, user_id)

    async def actor(self, user_id: str) -> Actor:
        """What kind of account ``user_id`` is now: asked live, so a deactivation or a guest
        demotion counts at once (the name cache stays as it is)."""
        if user_id == self.bot.id:
            return Actor.BOT
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
