"""Playbook commands."""

from __future__ import annotations

from mmpy_bot import listen_to

from incident_bot.app.playbooks import Playbooks
from incident_bot.app.runner import Runner
from incident_bot.plugins.base import FLAGS, IncidentBotPlugin, command
from incident_bot.plugins.framework import IncidentMessage


class PlaybookPlugin(IncidentBotPlugin):
    """Predefined checklists."""

    def __init__(self, runner: Runner, playbooks: Playbooks) -> None:
        super().__init__(runner)
        self.playbooks = playbooks

    @listen_to(command("playbooks"), FLAGS)
    async def list_playbooks(self, message: IncidentMessage, rest: str | None = None) -> None:
        """List playbooks."""
        await self.run(message, "playbooks", rest, self.playbooks.list)

    @listen_to(command("playbook"), FLAGS)
    async def playbook(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Show or edit a playbook."""
        await self.run(message, "playbook", rest, self.playbooks.playbook)
