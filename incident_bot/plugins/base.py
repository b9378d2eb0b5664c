"""What every plugin shares: a listener hands its command to the runner with its use case."""

from __future__ import annotations

import re
from collections.abc import Awaitable

import structlog
from mmpy_bot import Plugin

from incident_bot.app.observe import current_trace
from incident_bot.app.request import Applied
from incident_bot.app.runner import Runner, UseCase
from incident_bot.domain import commands
from incident_bot.plugins.framework import IncidentMessage, ReactionEvent

log = structlog.get_logger("incident_bot.reactions")

FLAGS = re.IGNORECASE | re.DOTALL


def command(word: str) -> str:
    """The listener pattern of a word of the command table (a word not in it is a bug: KeyError)."""
    return commands.listener_pattern(commands.COMMANDS[word].word)


class IncidentBotPlugin(Plugin):
    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    async def run(self, message: IncidentMessage, name: str, rest: str | None, use_case: UseCase) -> None:
        """Run command ``name`` (its arguments ``rest``) through the one runner."""
        await self.runner.run(message.request, name, rest, use_case)


async def handled(what: str, event: ReactionEvent, outcome: Awaitable[Applied]) -> None:
    """Await a reaction's use case and log its outcome; an error is an outcome, never a crash."""
    error = None
    try:
        result = await outcome
    except Exception as exc:  # noqa: BLE001 - a reaction must never stop the bot
        result, error = Applied.ERROR, type(exc).__name__
    reaction = event.reaction
    log.info(
        what,
        channel=event.event.channel_id,
        emoji=event.emoji,
        added=event.added,
        post=reaction.post_id,
        user=reaction.user_id,
        outcome=result,
        error=error,
        **current_trace().fields(),
    )
