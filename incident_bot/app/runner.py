"""Running one command: parse it by the command table, call its use case, and make sure
exactly one reply goes out, whatever happens; one log line per command."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

from incident_bot.app.core import Core
from incident_bot.app.observe import current_trace
from incident_bot.app.request import Request, UserError
from incident_bot.domain import commands, grammar, messages
from incident_bot.domain.commands import Command, Outcome
from incident_bot.domain.rules import Actor

log = structlog.get_logger("incident_bot.commands")

UseCase = Callable[[Request, Command], Awaitable[None]]


class Runner:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def run(self, req: Request, name: str, rest: str | None, use_case: UseCase, *, parsed: Command | None = None) -> None:
        """Parse ``rest`` as command ``name``'s arguments (or take ``parsed``, filled by a
        dialog), run the use case, reply once."""
        trace = current_trace()
        began = time.perf_counter()
        req.command = name
        try:
            if not await self._ignored(req, name):
                if parsed is not None:
                    cmd = parsed
                elif name in commands.COMMANDS:
                    cmd = grammar.parse(name, rest or "")
                else:
                    cmd = Command(name=name, text=rest or "")
                await use_case(req, cmd)
                if not req.replied:  # a use case must reply; a missing one is a bug worth seeing
                    log.error("command.no_reply", command=name, key=req.key)
        except commands.UsageError as exc:
            req.outcome = Outcome.USAGE
            await self._safe_reply(req, messages.bad_arguments(self.core.bot_name, exc.command, exc.reason))
        except UserError as exc:
            req.outcome = Outcome.REFUSED
            await self._safe_reply(req, exc.text)
        except Exception as exc:  # noqa: BLE001 - the bot must survive anything, a database that cannot be written too
            req.outcome = Outcome.ERROR
            await self._safe_reply(req, self.core.failure(exc, "command.failed", command=name, incident=req.incident))
        self.core.observer.command_handled(name, req.outcome, trace.elapsed())
        log.info(
            "command.handled",
            command=name,
            key=req.key,
            **(trace.fields() | {"incident": req.incident or trace.incident}),
            channel=req.channel_id,
            user=req.user_id,
            outcome=req.outcome,
            late=bool(req.late_by),
            ms=round((time.perf_counter() - began) * 1000, 2),  # parse to reply, Mattermost's answers included
        )

    async def _ignored(self, req: Request, name: str) -> bool:
        """Who sent it decides first: a guest is refused (``UserError``); a bot or a
        deactivated account is not answered at all, and the command is noted as handled."""
        kind = await self.admit(req.user_id)
        if kind == Actor.PERSON:
            return False
        req.outcome = Outcome.IGNORED
        await self.core.commit(req.key)
        log.info("command.ignored", command=name, key=req.key, channel=req.channel_id, user=req.user_id, actor=kind)
        return True

    async def admit(self, user_id: str) -> Actor:
        """What kind of account ``user_id`` is, a guest refused (``UserError``): the one rule
        for commands and buttons. Only a ``PERSON`` goes on; the others get no answer."""
        kind = await self.core.directory.actor(user_id)
        if kind == Actor.GUEST:
            raise UserError(messages.guest_refused(self.core.bot_name))
        return kind

    async def _safe_reply(self, req: Request, text: str) -> None:
        if req.replied:
            return
        try:
            await self.core.reply(req, text)
        except Exception as exc:  # noqa: BLE001 - Mattermost may be the thing that is down
            log.warning("reply.failed", key=req.key, error=type(exc).__name__)


class Help:
    """`help`, and anything addressed to the bot that is no command."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def help(self, req: Request, cmd: Command) -> None:
        if not cmd.text:
            await self.core.reply(
                req,
                messages.help_all(
                    self.core.bot_name,
                ),
            )
        elif cmd.text in commands.COMMANDS:
            await self.core.reply(req, messages.help_one(self.core.bot_name, cmd.text))
        else:
            await self.core.reply(req, messages.help_unknown(self.core.bot_name, cmd.text))

    async def unknown(self, req: Request, cmd: Command) -> None:
        """``cmd.text`` is the first word (empty: the bot was only mentioned, so it helps)."""
        req.outcome = Outcome.UNKNOWN if cmd.text else Outcome.HELP
        await self.core.reply(
            req,
            messages.unknown_command(self.core.bot_name, cmd.text)
            if cmd.text
            else messages.help_all(
                self.core.bot_name,
            ),
        )
