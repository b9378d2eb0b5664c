"""Use cases of playbooks: predefined checklists from the config file (read-only) and per team."""

from __future__ import annotations

from incident_bot.app.core import Core, Request, UserError
from incident_bot.chat.models import Team
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Playbook


class Playbooks:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _team(self, req: Request, team_name: str | None) -> Team:
        shared = await self.core.directory.shared_teams(req.user_id)
        if team_name:
            for team in shared:
                if team.name.lower() == team_name:
                    return team
            raise UserError(messages.unknown_team(team_name, [t.name for t in shared]))
        if not req.is_dm:
            team_id = req.team_id or (await self.core.client.get_channel(req.channel_id)).team_id
            for team in shared:
                if team.id == team_id:
                    return team
        if len(shared) == 1:
            return shared[0]
        if not shared:
            raise UserError(messages.no_shared_team())
        raise UserError(messages.playbook_needs_team(t.name for t in shared))

    async def list(self, req: Request, cmd: Command) -> None:
        team = await self._team(req, cmd.team)
        playbooks = await self.core.playbooks(team.id)
        await self.core.reply(req, messages.playbook_list(self.core.directory.bot.username, playbooks, self.core.settings.default_playbook))

    async def playbook(self, req: Request, cmd: Command) -> None:
        core = self.core
        team = await self._team(req, cmd.team)
        assert cmd.playbook is not None and cmd.sub is not None
        existing = await core.find_playbook(team.id, cmd.playbook)
        if cmd.sub == "show":
            if existing is None:
                raise UserError(messages.unknown_playbook(cmd.playbook, await core.playbooks(team.id)))
            await core.reply(req, messages.playbook_show(existing))
            return
        if cmd.sub == "create":
            if existing is not None:
                raise UserError(messages.playbook_exists(core.directory.bot.username, existing.name))
            playbook = Playbook(name=cmd.playbook, items=cmd.items, team_id=team.id, default_severity=core.settings.default_severity)
            await self._save(req, playbook)
            await core.reply(req, messages.playbook_created(playbook))
            return
        if existing is None:
            raise UserError(messages.unknown_playbook(cmd.playbook, await core.playbooks(team.id)))
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
            async with core.store.transaction() as tx:
                await tx.delete_playbook(team.id, existing.name)
                await tx.record_event(req.key, core.now())
            await core.reply(req, messages.playbook_deleted(existing.name))

    async def _save(self, req: Request, playbook: Playbook) -> None:
        async with self.core.store.transaction() as tx:
            await tx.save_playbook(playbook)
            await tx.record_event(req.key, self.core.now())
