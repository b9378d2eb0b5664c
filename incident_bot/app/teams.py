"""Which team a command is about: the one team resolution every use case asks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from incident_bot.app.core import Core
from incident_bot.app.request import Request, UserError
from incident_bot.chat.models import Team
from incident_bot.domain import messages


class Teams:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _shared(self, req: Request) -> list[Team]:
        return await self.core.directory.shared_teams(req.user_id)

    async def scope(self, req: Request, name: str | None) -> list[Team]:
        """The teams a listing covers: every team the asker shares with the bot, or the one named."""
        shared = await self._shared(req)
        if not name:
            return shared
        named = [t for t in shared if t.name.lower() == name]
        if not named:
            raise UserError(messages.unknown_team(name, [t.name for t in shared]))
        return named

    async def one(
        self, req: Request, name: str | None, *, choose: Callable[[Iterable[str]], str], channel_decides: bool = False
    ) -> Team:
        """The one team a command acts in: the channel's team, the one named, or the only one
        the asker shares with the bot; ``choose`` words the refusal when several remain.
        ``channel_decides``: outside a DM, only the channel's own team will do."""
        shared = await self._shared(req)
        if not req.is_dm:
            team_id = req.team_id or (await self.core.chat.get_channel(req.channel_id)).team_id
            here = next((t for t in shared if t.id == team_id), None)
            if here is not None and (not name or name == here.name.lower()):
                return here
            if channel_decides:
                if here is None:
                    raise UserError(messages.no_shared_team())
                raise UserError(messages.unknown_team(name or "", [here.name]))
        if name:
            for team in shared:
                if team.name.lower() == name:
                    return team
            raise UserError(messages.unknown_team(name, [t.name for t in shared]))
        if not shared:
            raise UserError(messages.no_shared_team())
        if len(shared) == 1:
            return shared[0]
        raise UserError(choose(t.name for t in shared))
