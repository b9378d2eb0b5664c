"""Use cases of playbooks: predefined checklists from the config file (read-only) and per team."""

from __future__ import annotations

from incident_bot.app.core import Core
from incident_bot.app.request import Request, UserError
from incident_bot.app.teams import Teams
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Playbook
from incident_bot.store.base import Transaction


class Playbooks:
    def __init__(self, core: Core, teams: Teams) -> None:
        self.core = core
        self.teams = teams

    async def list(self, req: Request, cmd: Command) -> None:
        team = await self.teams.one(req, cmd.team, choose=messages.playbook_needs_team)
        playbooks = await self.core.playbooks(team.id)
        await self.core.reply(req, messages.playbook_list(self.core.bot_name, playbooks, self.core.settings.default_playbook))

    async def playbook(self, req: Request, cmd: Command) -> None:
        core = self.core
        team = await self.teams.one(req, cmd.team, choose=messages.playbook_needs_team)
        assert cmd.playbook is not None and cmd.sub is not None
        existing = await core.find_playbook(team.id, cmd.playbook)
        if cmd.sub == "create":
            if existing is not None:
                raise UserError(messages.playbook_exists(self.core.bot_name, existing.name))
            playbook = Playbook(
                name=cmd.playbook, items=cmd.items, team_id=team.id, default_severity=core.settings.default_severity
            )
            await self._save(req, playbook)
            await core.reply(req, messages.playbook_created(playbook))
            return
        if existing is None:
            raise UserError(messages.unknown_playbook(cmd.playbook, await core.playbooks(team.id)))
        if cmd.sub == "show":
            await core.reply(req, messages.playbook_show(existing))
            return
        if existing.read_only:
            raise UserError(messages.playbook_read_only(existing.name))
        if cmd.sub == "add":
            existing.items.append(cmd.text)
            await self._save(req, existing)
            await core.reply(req, messages.playbook_item_added(existing))
        elif cmd.sub == "remove":
            assert cmd.item is not None
            if cmd.item > len(existing.items):
                raise UserError(messages.playbook_no_item(existing, cmd.item))
            text = existing.items.pop(cmd.item - 1)
            await self._save(req, existing)
            await core.reply(req, messages.playbook_item_removed(existing, cmd.item, text))
        elif cmd.sub == "delete":
            name = existing.name

            async def delete(tx: Transaction) -> None:
                await tx.delete_playbook(team.id, name)

            await core.commit(req.key, write=delete)
            await core.reply(req, messages.playbook_deleted(name))

    async def _save(self, req: Request, playbook: Playbook) -> None:
        async def save(tx: Transaction) -> None:
            await tx.save_playbook(playbook)

        await self.core.commit(req.key, write=save)
