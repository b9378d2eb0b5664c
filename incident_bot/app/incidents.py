"""Use cases of the incident itself: start, end, reopen, info, list, history, join, commander, sev."""

from __future__ import annotations

import structlog

from incident_bot.app.core import REPLY_PROP, Core, Request, UserError
from incident_bot.chat.errors import ChannelNameTaken, MattermostError
from incident_bot.chat.models import Channel, Team
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Incident, Status, TimelineEvent, TimelineKind
from incident_bot.domain.rules import channel_name, clean_title, display_name, reminder_due

log = structlog.get_logger("incident_bot.app")

LIST_LIMIT = 20
HISTORY_LIMIT = 10
CHANNEL_PURPOSE = "Incident #{n}, managed by incident-bot"


class Incidents:
    def __init__(self, core: Core) -> None:
        self.core = core

    # --- start -------------------------------------------------------------------------

    async def _team_for_start(self, req: Request, cmd: Command) -> Team:
        core = self.core
        shared = await core.directory.shared_teams(req.user_id)
        if req.is_dm:
            if cmd.team:
                for team in shared:
                    if team.name.lower() == cmd.team:
                        return team
                raise UserError(messages.unknown_team(cmd.team, [t.name for t in shared]))
            if not shared:
                raise UserError(messages.no_shared_team())
            if len(shared) > 1:
                raise UserError(messages.choose_team(t.name for t in shared))
            return shared[0]
        team_id = req.team_id
        if not team_id:
            team_id = (await core.client.get_channel(req.channel_id)).team_id
        for team in shared:
            if team.id == team_id:
                if cmd.team and cmd.team != team.name.lower():
                    raise UserError(messages.unknown_team(cmd.team, [team.name]))
                return team
        raise UserError(messages.no_shared_team())

    async def start(self, req: Request, cmd: Command) -> None:
        core = self.core
        team = await self._team_for_start(req, cmd)
        title = clean_title(cmd.text)
        origin_post_id = req.post.id
        if req.post.root_id and not req.is_dm:
            origin_post_id = req.post.root_id
            if not title:
                root = await core.client.get_post(req.post.root_id)
                if root is not None:
                    first_line = next((line for line in root.message.splitlines() if line.strip()), "")
                    title = clean_title(first_line.lstrip("#> ").strip())
        if not title:
            raise UserError(messages.bad_arguments("start", messages.empty_title()))

        playbook_name = cmd.playbook or core.settings.default_playbook
        playbook = None
        if playbook_name:
            playbook = await core.find_playbook(team.id, playbook_name)
            if playbook is None:
                raise UserError(messages.unknown_playbook(playbook_name, await core.playbooks(team.id)))
        severity = cmd.severity or (playbook.default_severity if playbook else core.settings.default_severity)

        invited, not_invited = [], []
        for username in cmd.invite:
            user = await core.directory.user_by_name(username)
            if user is None or user.id == req.user_id or not await core.directory.in_team(team.id, user.id):
                if user is None or user.id != req.user_id:
                    not_invited.append(username)
                continue
            invited.append(user)

        now = core.now()
        incident = Incident(
            team_id=team.id,
            title=title,
            severity=severity,
            status=Status.STARTING,
            commander_id=req.user_id,
            started_by=req.user_id,
            origin_channel_id=req.channel_id,
            origin_post_id=origin_post_id,
            command_post_id=req.post.id,
            playbook=playbook.name if playbook else None,
            started_at=now,
        )
        async with core.store.transaction() as tx:
            incident = await tx.create_incident(incident)
            await tx.set_state(f"team:{team.id}", team.name)
            await tx.add_timeline(
                TimelineEvent(
                    incident_number=incident.number,
                    at=now,
                    kind=TimelineKind.STARTED,
                    actor_id=req.user_id,
                    text=title,
                    data={"severity": severity, "playbook": incident.playbook},
                )
            )
            for item_text in playbook.items if playbook else []:
                await tx.add_checklist_item(incident.number, item_text)
            await tx.record_event(req.key, now, incident.number)
        req.incident = incident.number
        log.info("incident.starting", incident=incident.number, team=team.name, user=req.user_id)
        incident = await self.finish_start(incident, [u.id for u in invited])
        names = await core.directory.names([incident.commander_id])
        await core.reply(req, messages.started_reply(incident, names, [u.username for u in invited], not_invited))
        await self._announce(team, incident)

    async def finish_start(self, incident: Incident, invite_ids: list[str]) -> Incident:
        """Create (or find again) the channel and its posts; safe to run again after a crash."""
        core = self.core
        async with core.lock(incident.number):
            channel = await self._ensure_channel(incident)
            if incident.channel_id != channel.id:
                incident.channel_id, incident.channel_name = channel.id, channel.name
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            for user_id in [incident.commander_id, *invite_ids]:
                await core.client.add_channel_member(channel.id, user_id)
            names = await core.directory.names([incident.commander_id, incident.started_by])
            async with core.store.transaction() as tx:
                items = await tx.list_checklist(incident.number)
            if incident.summary_post_id is None:
                text = messages.summary(incident, names, items, core.now(), await core.origin_link(incident))
                summary = await core.client.create_post(channel.id, text)
                await core.client.pin_post(summary.id)
                incident.summary_post_id = summary.id
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            if incident.checklist_post_id is None and items:
                header = await core.client.create_post(channel.id, messages.checklist_header(incident, items, names))
                incident.checklist_post_id = header.id
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            if incident.checklist_post_id:
                for item in items:
                    if item.post_id is None and not item.removed:
                        post = await core.client.create_post(
                            channel.id, messages.checklist_item(item, names), root_id=incident.checklist_post_id
                        )
                        item.post_id = post.id
                        async with core.store.transaction() as tx:
                            await tx.save_checklist_item(item)
            incident.status = Status.ACTIVE
            incident.last_update_at = incident.started_at
            incident.next_reminder_at = reminder_due(
                incident.started_at, core.settings.reminders.minutes_for(incident.severity)
            )
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
            await core.refresh(incident, items)
        log.info("incident.started", incident=incident.number, channel=incident.channel_name)
        return incident

    async def resume_unfinished(self) -> int:
        """Incidents a crash left half set up: finish them and answer their `start` once."""
        core = self.core
        async with core.store.transaction() as tx:
            starting = await tx.list_incidents_in_status([Status.STARTING])
        for incident in starting:
            incident = await self.finish_start(incident, [])
            if not incident.command_post_id:
                continue
            key = f"posted:{incident.command_post_id}"
            async with core.store.transaction() as tx:
                if await tx.get_reply(key) is not None:
                    continue
            post = await core.client.get_post(incident.command_post_id)
            if post is None:
                continue
            channel = await core.client.get_channel(post.channel_id)
            req = Request(
                key=key, post=post, user_id=post.user_id, channel_id=post.channel_id, channel_type=channel.type,
                team_id=channel.team_id, late_by=core.now() - post.created, incident=incident.number,
            )
            thread = await core.client.get_thread(req.thread_root) if not req.is_dm else await core.client.get_posts_since(post.channel_id, post.create_at)
            mine = next((p for p in thread if p.user_id == core.bot_id and p.props.get(REPLY_PROP) == post.id), None)
            if mine is not None:
                async with core.store.transaction() as tx:
                    await tx.record_reply(key, mine.id, core.now())
                continue
            names = await core.directory.names([incident.commander_id])
            await core.reply(req, messages.started_reply(incident, names, [], []))
            log.info("incident.resumed", incident=incident.number, channel=incident.channel_name)
        return len(starting)

    async def _ensure_channel(self, incident: Incident) -> Channel:
        core = self.core
        if incident.channel_id:
            return await core.client.get_channel(incident.channel_id)
        purpose = CHANNEL_PURPOSE.format(n=incident.number)
        for attempt in range(20):
            name = channel_name(incident.number, incident.title, attempt)
            try:
                return await core.client.create_channel(
                    incident.team_id, name, display_name(incident.number, incident.title), type="P", purpose=purpose
                )
            except ChannelNameTaken:
                existing = await core.client.get_channel_by_name(incident.team_id, name)
                # Ours from an earlier, interrupted try: use it rather than make a second one.
                if existing is not None and existing.creator_id == core.bot_id and existing.purpose == purpose:
                    return existing
        raise UserError(f"Could not find a free channel name for incident #{incident.number}.")

    async def _announce(self, team: Team, incident: Incident) -> None:
        core = self.core
        channel_name_ = core.settings.announcement_channels.get(team.name.lower())
        if not channel_name_:
            return
        try:
            channel = await core.client.get_channel_by_name(team.id, channel_name_)
        except MattermostError:
            channel = None
        if channel is None:
            log.warning("announce.channel_missing", team=team.name, channel=channel_name_)
            return
        names = await core.directory.names([incident.commander_id])
        await core.post_in_channel(channel.id, messages.announcement(incident, names))

    # --- end / reopen -------------------------------------------------------------------

    async def end(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "end", member_action="end")
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                incident = await tx.get_incident(incident.number) or incident
            if incident.status == Status.ENDED:
                raise UserError(messages.already_ended(incident))
            now = core.now()
            incident.status = Status.ENDED
            incident.ended_at = now
            incident.ended_by = req.user_id
            incident.resolution = cmd.text or None
            incident.next_reminder_at = None
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
                await tx.add_timeline(
                    TimelineEvent(
                        incident_number=incident.number, at=now, kind=TimelineKind.ENDED,
                        actor_id=req.user_id, text=cmd.text,
                    )
                )
                await tx.record_event(req.key, now, incident.number)
                items = await tx.list_checklist(incident.number)
            await core.refresh(incident, items)
        names = await core.directory.names([incident.commander_id, incident.ended_by])
        if incident.channel_id:
            await core.post_in_channel(incident.channel_id, messages.final_summary(incident, names, items, core.now()))
        await core.reply(req, messages.ended_reply(incident, core.now()))
        await self._notify_origin(req, incident, messages.ended_notice(incident, names, core.now()))
        log.info("incident.ended", incident=incident.number, channel=incident.channel_name, user=req.user_id)

    async def _notify_origin(self, req: Request, incident: Incident, text: str) -> None:
        """Tell the origin thread, unless the command itself was posted there."""
        core = self.core
        if not incident.origin_post_id or incident.origin_channel_id == incident.channel_id:
            return
        if req.channel_id == incident.origin_channel_id and req.thread_root == incident.origin_post_id:
            return
        root = "" if incident.origin_channel_id != req.channel_id and await self._is_dm(incident.origin_channel_id) else incident.origin_post_id
        await core.post_in_channel(incident.origin_channel_id, text, root_id=root)

    async def _is_dm(self, channel_id: str) -> bool:
        try:
            channel = await self.core.client.get_channel(channel_id)
        except MattermostError:
            return False
        return channel.type in ("D", "G")

    async def reopen(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "reopen", member_action="reopen")
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                incident = await tx.get_incident(incident.number) or incident
            if incident.status != Status.ENDED:
                raise UserError(messages.not_ended(incident))
            now = core.now()
            incident.status = Status.ACTIVE
            incident.ended_at = None
            incident.ended_by = None
            incident.resolution = None
            incident.last_update_at = now
            incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
                await tx.add_timeline(
                    TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.REOPENED, actor_id=req.user_id, text=cmd.text)
                )
                await tx.record_event(req.key, now, incident.number)
            await core.refresh(incident)
        await core.reply(req, f"Reopened incident #{incident.number} ({messages.link(incident)}); it is active again.")

    # --- read-only -------------------------------------------------------------------

    async def info(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "info")
        async with core.store.transaction() as tx:
            items = await tx.list_checklist(incident.number)
        names = await core.directory.names([incident.commander_id])
        await core.reply(req, messages.info(incident, names, items, core.now()))

    async def _team_scope(self, req: Request, team: str | None) -> dict[str, str]:
        shared = await self.core.directory.shared_teams(req.user_id)
        if team:
            shared = [t for t in shared if t.name.lower() == team]
            if not shared:
                raise UserError(messages.unknown_team(team, [t.name for t in await self.core.directory.shared_teams(req.user_id)]))
        return {t.id: t.name for t in shared}

    async def list(self, req: Request, cmd: Command) -> None:
        core = self.core
        teams = await self._team_scope(req, None)
        async with core.store.transaction() as tx:
            incidents, total = await tx.list_incidents(list(teams), [Status.ACTIVE, Status.STARTING], LIST_LIMIT)
        names = await core.directory.names([i.commander_id for i in incidents])
        await core.reply(req, messages.incident_list(incidents, total, names, teams, core.now()))

    async def history(self, req: Request, cmd: Command) -> None:
        core = self.core
        teams = await self._team_scope(req, cmd.team)
        limit = cmd.limit or HISTORY_LIMIT
        page = cmd.page or 1
        async with core.store.transaction() as tx:
            incidents, total = await tx.list_incidents(list(teams), [Status.ENDED], limit, (page - 1) * limit)
        names = await core.directory.names([i.commander_id for i in incidents])
        await core.reply(req, messages.history(incidents, total, page, limit, names, teams, core.now()))

    # --- people and severity ------------------------------------------------------------

    async def join(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "join")
        if incident.channel_id is None:
            raise UserError(f"Incident #{incident.number} is still being set up; try again in a moment.")
        if await core.directory.in_channel(incident.channel_id, req.user_id):
            raise UserError(messages.already_member(incident))
        async with core.lock(incident.number):
            await core.client.add_channel_member(incident.channel_id, req.user_id)
            now = core.now()
            async with core.store.transaction() as tx:
                await tx.add_timeline(
                    TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.MEMBER_JOINED, actor_id=req.user_id)
                )
                await tx.record_event(req.key, now, incident.number)
        names = await core.directory.names([req.user_id])
        if req.channel_id != incident.channel_id:
            await core.post_in_channel(incident.channel_id, messages.joined_notice(incident, names, req.user_id))
        await core.reply(req, messages.joined(incident))

    async def commander(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "commander", member_action="change the commander of", channel_only=True)
        assert cmd.user is not None
        user = await core.directory.user_by_name(cmd.user)
        if user is None or user.delete_at:
            raise UserError(messages.unknown_user(cmd.user))
        if not await core.directory.in_team(incident.team_id, user.id):
            raise UserError(messages.user_not_in_team(user.username, incident))
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                incident = await tx.get_incident(incident.number) or incident
            if incident.status == Status.ENDED:
                raise UserError(messages.already_ended(incident))
            names = await core.directory.names([user.id, incident.commander_id])
            if incident.commander_id == user.id:
                raise UserError(messages.same_commander(incident, names(user.id)))
            assert incident.channel_id is not None
            await core.client.add_channel_member(incident.channel_id, user.id)
            previous = incident.commander_id
            incident.commander_id = user.id
            now = core.now()
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
                await tx.add_timeline(
                    TimelineEvent(
                        incident_number=incident.number, at=now, kind=TimelineKind.COMMANDER_CHANGED,
                        actor_id=req.user_id, data={"from": previous, "to": user.id},
                        text=f"{names(previous)} → {names(user.id)}",
                    )
                )
                await tx.record_event(req.key, now, incident.number)
            await core.refresh(incident)
        await core.reply(req, messages.commander_changed(incident, names, previous))

    async def sev(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "sev", member_action="change the severity of", channel_only=True)
        assert cmd.severity is not None
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                incident = await tx.get_incident(incident.number) or incident
            if incident.status == Status.ENDED:
                raise UserError(messages.already_ended(incident))
            if incident.severity == cmd.severity:
                raise UserError(messages.same_severity(incident))
            previous = incident.severity
            incident.severity = cmd.severity
            now = core.now()
            last = incident.last_update_at or incident.started_at
            incident.next_reminder_at = reminder_due(last, core.settings.reminders.minutes_for(incident.severity))
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
                await tx.add_timeline(
                    TimelineEvent(
                        incident_number=incident.number, at=now, kind=TimelineKind.SEVERITY_CHANGED,
                        actor_id=req.user_id, data={"from": previous, "to": cmd.severity},
                        text=f"Sev {previous} → Sev {cmd.severity}",
                    )
                )
                await tx.record_event(req.key, now, incident.number)
            await core.refresh(incident)
        await core.reply(req, messages.severity_changed(incident, previous))
