"""What every plugin shares: a listener hands its command to the runner with its use case."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from mmpy_bot import Plugin

from incident_bot.app.runner import Runner, UseCase
from incident_bot.plugins.framework import IncidentMessage

FLAGS = re.IGNORECASE | re.DOTALL


def command(word: str) -> str:
    """The listener pattern of one command word; its arguments are the one group."""
    return rf"^{word}(?:\s+(.*))?$"


class IncidentBotPlugin(Plugin):
    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    async def run(self, message: IncidentMessage, name: str, rest: str | None, use_case: UseCase) -> None:
        """Run command ``name`` (its arguments ``rest``) through the one runner."""
        await self.runner.run(message.request, name, rest, use_case)


async def guarded(what: Callable[[], Awaitable[str]]) -> str:
    """A reaction or edit handler's outcome for the log; an error is an outcome, never a crash."""
    try:
        return await what()
    except Exception as exc:  # noqa: BLE001 - a reaction must never stop the bot
        return f"error:{type(exc).__name__}"
