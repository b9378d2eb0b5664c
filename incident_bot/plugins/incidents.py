"""Commands about the incident itself, and help."""

from __future__ import annotations

from mmpy_bot import listen_to

from incident_bot.app.incidents import Incidents
from incident_bot.app.runner import Help, Runner
from incident_bot.domain import commands
from incident_bot.plugins.base import FLAGS, IncidentBotPlugin, command
from incident_bot.plugins.framework import IncidentMessage


class IncidentPlugin(IncidentBotPlugin):
    """Start, end and look after incidents."""

    def __init__(self, runner: Runner, incidents: Incidents, help: Help) -> None:
        super().__init__(runner)
        self.incidents = incidents
        self.helps = help

    @listen_to(command("start"), FLAGS)
    async def start(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Open an incident channel with you as commander."""
        await self.run(message, "start", rest, self.incidents.start)

    @listen_to(command("end"), FLAGS)
    async def end(self, message: IncidentMessage, rest: str | None = None) -> None:
        """End the incident and record its duration."""
        await self.run(message, "end", rest, self.incidents.end)

    @listen_to(command("reopen"), FLAGS)
    async def reopen(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Make an ended incident active again."""
        await self.run(message, "reopen", rest, self.incidents.reopen)

    @listen_to(command("info"), FLAGS)
    async def info(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Show an incident's state."""
        await self.run(message, "info", rest, self.incidents.info)

    @listen_to(command("list"), FLAGS)
    async def list_active(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Active incidents in your teams."""
        await self.run(message, "list", rest, self.incidents.list)

    @listen_to(command("history"), FLAGS)
    async def history(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Ended incidents in your teams."""
        await self.run(message, "history", rest, self.incidents.history)

    @listen_to(command("join"), FLAGS)
    async def join(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Add yourself to an incident channel."""
        await self.run(message, "join", rest, self.incidents.join)

    @listen_to(command("commander"), FLAGS)
    async def commander(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Hand over the commander role."""
        await self.run(message, "commander", rest, self.incidents.commander)

    @listen_to(command("sev"), FLAGS)
    async def sev(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Change the severity."""
        await self.run(message, "sev", rest, self.incidents.sev)

    @listen_to(command("help"), FLAGS)
    async def help(self, message: IncidentMessage, rest: str | None = None) -> None:
        """What each command does."""
        await self.run(message, "help", rest, self.helps.help)

    @listen_to(commands.UNKNOWN_PATTERN, FLAGS)
    async def unknown(self, message: IncidentMessage, word: str | None = None) -> None:
        """Anything addressed to the bot that is not a command."""
        await self.run(message, "unknown", word, self.helps.unknown)
