"""What every plugin shares: turning a message into a Request, one reply per command, logging."""

from __future__ import annotations

import re
import secrets
import traceback
from collections.abc import Awaitable, Callable

import structlog
from mmpy_bot import Plugin

from incident_bot.app.core import Core, Request, UserError
from incident_bot.domain import commands, grammar, messages
from incident_bot.plugins.framework import IncidentMessage

log = structlog.get_logger("incident_bot.commands")

FLAGS = re.IGNORECASE | re.DOTALL


def command(word: str) -> str:
    """The listener pattern of one command word; its arguments are the one group."""
    return commands.listener_pattern(word)


UseCase = Callable[[Request, commands.Command], Awaitable[None]]


class IncidentBotPlugin(Plugin):
    def __init__(self, core: Core) -> None:
        super().__init__()
        self.core = core

    @staticmethod
    def request(message: IncidentMessage) -> Request:
        post = message.event.post
        return Request(
            key=message.key,
            post=post,
            user_id=post.user_id,
            channel_id=post.channel_id,
            channel_type=message.event.channel_type,
            team_id=message.event.team_id or "",
            late_by=message.late_by,
        )

    async def run(self, message: IncidentMessage, name: str, rest: str | None, use_case: UseCase) -> None:
        """Parse, run the use case, and make sure exactly one reply goes out."""
        req = self.request(message)
        try:
            cmd = grammar.parse(name, rest or "")
            await use_case(req, cmd)
            if not req.replied:  # a use case must reply; a missing one is a bug worth seeing
                log.error("command.no_reply", command=name, key=req.key)
        except commands.UsageError as exc:
            req.outcome = "usage"
            await self._safe_reply(req, messages.bad_arguments(self.core.directory.bot.username, exc.command, exc.reason))
        except UserError as exc:
            req.outcome = "refused"
            await self._safe_reply(req, exc.text)
        except Exception as exc:  # noqa: BLE001 - the bot must survive anything
            req.outcome = "error"
            ref = secrets.token_hex(3)
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            log.error(
                "command.failed",
                ref=ref,
                command=name,
                incident=req.incident,
                error=type(exc).__name__,
                detail=str(exc)[:300],
                where=f"{frame.filename}:{frame.lineno}" if frame else None,
            )
            await self._safe_reply(req, messages.internal_error(ref))
        log.info(
            "command.handled",
            command=name,
            incident=req.incident,
            channel=req.channel_id,
            user=req.user_id,
            outcome=req.outcome,
            late=bool(req.late_by),
        )

    async def _safe_reply(self, req: Request, text: str) -> None:
        if req.replied:
            return
        try:
            await self.core.reply(req, text)
        except Exception as exc:  # noqa: BLE001 - Mattermost may be the thing that is down
            log.warning("reply.failed", key=req.key, error=type(exc).__name__)
