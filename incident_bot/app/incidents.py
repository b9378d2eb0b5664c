"""Use cases of the incident itself: start, end, reopen, info, list, history, join, commander, sev."""

from __future__ import annotations

import re
from datetime import timedelta

import structlog

from incident_bot.app.core import PART_PROP, Core, Request, UserError, part_props, pending_id
from incident_bot.chat.errors import ChannelNameTaken, MattermostError
from incident_bot.chat.models import Channel, Post, Team
from incident_bot.domain import commands, grammar, messages
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
                raise UserError(messages.choose_team(core.directory.bot.username, (t.name for t in shared)))
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
            raise UserError(messages.bad_arguments(core.directory.bot.username, "start", messages.empty_title()))

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

    async def finish_start(self, incident: Incident, invite_ids: list[str], resuming: bool = False) -> Incident:
        """Create (or find again) the channel and its posts; safe to run again after a crash.

        ``resuming``: an earlier run may have made posts it never noted; they carry
        ``part_props`` and are found rather than made twice."""
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
            made = await self._made_parts(incident, channel.id) if resuming else {}
            if incident.summary_post_id is None:
                summary = made.get("summary")
                if summary is None:
                    text = messages.summary(core.directory.bot.username, incident, names, items, core.now(), await core.origin_link(incident))
                    summary = await core.client.create_post(
                        channel.id, text, props=part_props(incident.number, "summary"), pending_post_id=pending_id(channel.id, "summary")
                    )
                if not summary.is_pinned:
                    await core.client.pin_post(summary.id)
                incident.summary_post_id = summary.id
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            if incident.checklist_post_id is None and items:
                header = made.get("checklist")
                if header is None:
                    header = await core.client.create_post(
                        channel.id, messages.checklist_header(core.directory.bot.username, incident, items, names), props=part_props(incident.number, "checklist"),
                        pending_post_id=pending_id(channel.id, "checklist"),
                    )
                incident.checklist_post_id = header.id
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            if incident.checklist_post_id:
                for item in items:
                    if item.post_id is None and not item.removed:
                        post = made.get(f"item:{item.number}")
                        if post is None:
                            post = await core.client.create_post(
                                channel.id, messages.checklist_item(item, names), root_id=incident.checklist_post_id,
                                props=part_props(incident.number, f"item:{item.number}"),
                                pending_post_id=pending_id(channel.id, f"item:{item.number}"),
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

    async def _made_parts(self, incident: Incident, channel_id: str) -> dict[str, Post]:
        """The bot's posts in the incident channel marked as parts of this incident, by part."""
        prefix = f"{incident.number}:"
        found: dict[str, Post] = {}
        for post in await self.core.client.get_posts_since(channel_id, 1):
            mark = post.props.get(PART_PROP)
            if post.user_id == self.core.bot_id and not post.delete_at and isinstance(mark, str) and mark.startswith(prefix):
                found.setdefault(mark[len(prefix):], post)
        return found

    async def resume_unfinished(self) -> int:
        """Incidents a crash left half set up: finish them and answer their `start` once."""
        core = self.core
        async with core.store.transaction() as tx:
            starting = await tx.list_incidents_in_status([Status.STARTING])
        for incident in starting:
            post = await core.client.get_post(incident.command_post_id) if incident.command_post_id else None
            incident = await self.finish_start(incident, await self._invites_of(incident, post), resuming=True)
            if post is not None:
                await self._answer_start(incident, post, None)
            log.info("incident.resumed", incident=incident.number, channel=incident.channel_name)
        return len(starting)

    async def resume_command(self, req: Request) -> bool:
        """``req`` is a `start` whose incident a crash left half set up: finish it and answer.
        False when the command started no unfinished incident."""
        async with self.core.store.transaction() as tx:
            incident = await tx.get_incident_by_command_post(req.post.id)
        if incident is None or incident.status != Status.STARTING:
            return False
        incident = await self.finish_start(incident, await self._invites_of(incident, req.post), resuming=True)
        await self._answer_start(incident, req.post, req)
        log.info("incident.resumed", incident=incident.number, channel=incident.channel_name)
        return True

    async def _answer_start(self, incident: Incident, post: Post, req: Request | None) -> None:
        core = self.core
        key = f"posted:{post.id}"
        async with core.store.transaction() as tx:
            if await tx.get_reply(key) is not None:
                return
        if req is None:
            channel = await core.client.get_channel(post.channel_id)
            req = Request(key=key, post=post, user_id=post.user_id, channel_id=post.channel_id, channel_type=channel.type,
                          team_id=channel.team_id, late_by=core.now() - post.created)
        req.incident = incident.number
        if req.late_by is not None and req.late_by < timedelta(seconds=2):
            req.late_by = None
        mine = await core.find_reply(req)
        if mine is not None:
            async with core.store.transaction() as tx:
                await tx.record_reply(key, mine.id, core.now())
            return
        names = await core.directory.names([incident.commander_id])
        await core.reply(req, messages.started_reply(incident, names, [], []))

    async def _invites_of(self, incident: Incident, post: Post | None) -> list[str]:
        """The users a `start` invited, read again from its post (they are not stored)."""
        if post is None:
            return []
        core = self.core
        text = re.sub(rf"^\s*@{re.escape(core.directory.bot.username)}\b[:,]?\s*", "", post.message, flags=re.IGNORECASE)
        word, _, rest = text.strip().partition(" ")
        if word.lower() != "start":
            return []
        try:
            cmd = grammar.parse("start", rest)
        except commands.UsageError:
            return []
        ids = []
        for username in cmd.invite:
            user = await core.directory.user_by_name(username)
            if user is not None and user.id != incident.started_by and await core.directory.in_team(incident.team_id, user.id):
                ids.append(user.id)
        return ids

    async def repair(self) -> int:
        """After a restart: bring every open incident's channel in line with the database.

        A crash between a change and the edits that show it leaves a stale header, summary or
        checklist post, or an item without its post; this mends them. Returns how many
        incidents were looked at."""
        core = self.core
        async with core.store.transaction() as tx:
            incidents = await tx.list_incidents_in_status([Status.ACTIVE, Status.ENDED])
        recent = core.now() - timedelta(days=1)
        count = 0
        for incident in incidents:
            if incident.status == Status.ENDED and (incident.ended_at is None or incident.ended_at < recent):
                continue
            count += 1
            try:
                await self._repair_one(incident.number)
            except MattermostError as exc:
                core.mark_stale(incident.number, exc)  # tried again while Mattermost recovers
            except Exception as exc:  # noqa: BLE001 - one incident must not stop the others
                log.warning("incident.repair_failed", incident=incident.number, error=type(exc).__name__, detail=str(exc)[:200])
        return count

    async def _repair_one(self, number: int) -> None:
        core = self.core
        async with core.lock(number):
            async with core.store.transaction() as tx:
                incident = await tx.get_incident(number)
                items = await tx.list_checklist(number, include_removed=True)
            if incident is None or incident.channel_id is None:
                return
            names = await core.directory.names([i.done_by for i in items] + [i.assignee_id for i in items])
            live = [i for i in items if not i.removed]
            if incident.checklist_post_id is None and live:  # the first `add` died before noting its header
                header = (await self._made_parts(incident, incident.channel_id)).get("checklist")
                if header is None:
                    header = await core.client.create_post(
                        incident.channel_id, messages.checklist_header(core.directory.bot.username, incident, live, names), props=part_props(number, "checklist"),
                        pending_post_id=pending_id(incident.channel_id, "checklist"),
                    )
                incident.checklist_post_id = header.id
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
            if incident.checklist_post_id:
                thread = {p.id: p for p in await core.client.get_thread(incident.checklist_post_id)}
                marked = {
                    p.props.get(PART_PROP): p for p in thread.values()
                    if p.user_id == core.bot_id and isinstance(p.props.get(PART_PROP), str)
                }
                for item in items:
                    if item.post_id is None and not item.removed:
                        post = marked.get(f"{number}:item:{item.number}")
                        if post is None:
                            post = await core.client.create_post(
                                incident.channel_id, messages.checklist_item(item, names), root_id=incident.checklist_post_id,
                                props=part_props(number, f"item:{item.number}"),
                                pending_post_id=pending_id(incident.channel_id, f"item:{item.number}"),
                            )
                        item.post_id = post.id
                        thread[post.id] = post
                        async with core.store.transaction() as tx:
                            await tx.save_checklist_item(item)
                    if item.post_id and item.post_id in thread and thread[item.post_id].message != messages.checklist_item(item, names):
                        await core.refresh_item(incident, item, strict=True)
            await core.refresh(incident, live, strict=True)
            core.stale.discard(number)

    async def repair_stale(self) -> bool:
        """Repair the incidents whose channel edits failed; True when none is left."""
        for number in sorted(self.core.stale):
            try:
                await self._repair_one(number)
                log.info("incident.repaired", incident=number)
            except MattermostError as exc:
                log.warning("incident.repair_failed", incident=number, error=type(exc).__name__)
        return not self.core.stale

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
        await core.post_in_channel(channel.id, messages.announcement(core.directory.bot.username, incident, names))

    # --- end / reopen -------------------------------------------------------------------

    async def end(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "end", member_action="end")
        async with core.lock(incident.number):
            incident = await core.fresh(incident)
            if incident.status == Status.ENDED:
                raise UserError(messages.already_ended(incident))
            now = core.now()
            incident.status = Status.ENDED
            incident.ended_at = now
            incident.ended_by = req.user_id
            incident.resolution = cmd.text or None
            incident.next_reminder_at = None
            items = await core.commit_change(req.key, incident, TimelineEvent(
                incident_number=incident.number, at=now, kind=TimelineKind.ENDED,
                actor_id=req.user_id, text=cmd.text,
            ))
            await core.refresh(incident, items)
        names = await core.directory.names([incident.commander_id, incident.ended_by])
        if incident.channel_id:
            await core.post_in_channel(incident.channel_id, messages.final_summary(core.directory.bot.username, incident, names, items, core.now()))
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
        # In a DM the bot answers without threads, as it did to the `start` there.
        root = "" if await self._is_dm(incident.origin_channel_id) else incident.origin_post_id
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
            incident = await core.fresh(incident)
            if incident.status != Status.ENDED:
                raise UserError(messages.not_ended(incident))
            now = core.now()
            incident.status = Status.ACTIVE
            incident.ended_at = None
            incident.ended_by = None
            incident.resolution = None
            incident.last_update_at = now
            incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
            items = await core.commit_change(
                req.key, incident,
                TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.REOPENED, actor_id=req.user_id, text=cmd.text),
            )
            await core.refresh(incident, items)
        await core.reply(req, messages.reopened(incident))

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
        await core.reply(req, messages.history(core.directory.bot.username, incidents, total, page, limit, names, teams, core.now(), team=cmd.team))

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
            incident = await core.fresh(incident)
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
            items = await core.commit_change(req.key, incident, TimelineEvent(
                incident_number=incident.number, at=now, kind=TimelineKind.COMMANDER_CHANGED,
                actor_id=req.user_id, data={"from": previous, "to": user.id},
                text=f"{names(previous)} → {names(user.id)}",
            ))
            await core.refresh(incident, items)
        await core.reply(req, messages.commander_changed(incident, names, previous))

    async def sev(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "sev", member_action="change the severity of", channel_only=True)
        assert cmd.severity is not None
        async with core.lock(incident.number):
            incident = await core.fresh(incident)
            if incident.status == Status.ENDED:
                raise UserError(messages.already_ended(incident))
            if incident.severity == cmd.severity:
                raise UserError(messages.same_severity(incident))
            previous = incident.severity
            incident.severity = cmd.severity
            now = core.now()
            last = incident.last_update_at or incident.started_at
            incident.next_reminder_at = reminder_due(last, core.settings.reminders.minutes_for(incident.severity))
            items = await core.commit_change(req.key, incident, TimelineEvent(
                incident_number=incident.number, at=now, kind=TimelineKind.SEVERITY_CHANGED,
                actor_id=req.user_id, data={"from": previous, "to": cmd.severity},
                text=f"Sev {previous} → Sev {cmd.severity}",
            ))
            await core.refresh(incident, items)
        await core.reply(req, messages.severity_changed(incident, previous))
