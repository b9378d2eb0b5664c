"""Use cases of the incident itself: start, end, reopen, info, list, history, join, commander, sev."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

import structlog

from incident_bot.app.backlog import Backlog
from incident_bot.app.channel import PART_PROP, ChannelWriter, item_names
from incident_bot.app.core import Core
from incident_bot.app.outbox import ANNOUNCE_SUFFIX, Outbox
from incident_bot.app.request import Request, UserError
from incident_bot.app.teams import Teams
from incident_bot.chat.errors import ChannelNameTaken, MattermostError
from incident_bot.chat.models import Channel, Post
from incident_bot.domain import commands, grammar, messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import ChecklistItem, Incident, OutboxEntry, Status, TimelineKind
from incident_bot.domain.rules import channel_name, clean_title, display_name, reminder_due
from incident_bot.store.base import Transaction

log = structlog.get_logger("incident_bot.app")

LIST_LIMIT = 20
HISTORY_LIMIT = 10
REPAIR_ENDED_WITHIN = timedelta(days=1)  # ended incidents whose channel a restart still mends


class Incidents:
    def __init__(self, core: Core, channel: ChannelWriter, teams: Teams, backlog: Backlog, outbox: Outbox) -> None:
        self.core = core
        self.channel = channel
        self.teams = teams
        self.backlog = backlog
        self.outbox = outbox

    # --- start -------------------------------------------------------------------------

    async def start(self, req: Request, cmd: Command) -> None:
        core = self.core
        team = await self.teams.one(req, cmd.team, choose=partial(messages.choose_team, self.core.bot_name), channel_decides=True)
        title = clean_title(cmd.text)
        origin_post_id: str | None = req.post.id or None  # a slash command has no post: the channel itself
        if req.post.root_id and not req.is_dm:
            origin_post_id = req.post.root_id
            if not title:
                root = await core.chat.get_post(req.post.root_id)
                if root is not None:
                    first_line = next((line for line in root.message.splitlines() if line.strip()), "")
                    title = clean_title(first_line.lstrip("#> ").strip())
        if not title:
            raise UserError(messages.bad_arguments(self.core.bot_name, "start", messages.empty_title()))

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
            command_post_id=req.post.id or None,
            playbook=playbook.name if playbook else None,
            started_at=now,
        )
        created: list[Incident] = []
        announce: list[OutboxEntry] = []
        names = await core.directory.names([req.user_id])
        announcements = await self.channel.announcement_channel(team.id)

        async def create(tx: Transaction) -> None:
            made = await tx.create_incident(incident)
            created.append(made)
            if announcements:  # the number is known only now: the post is queued with the incident
                text = messages.announcement(core.bot_name, made, names)
                announce.append(self.channel.notice(req.key + ANNOUNCE_SUFFIX, announcements, text, incident=made.number))
                await tx.add_outbox(announce[0])
            await tx.set_state(f"team:{team.id}", team.name)
            for item_text in playbook.items if playbook else []:
                await tx.add_checklist_item(made.number, item_text)
            await tx.add_timeline(
                core.event(
                    made.number, TimelineKind.STARTED, req.user_id, title, {"severity": severity, "playbook": made.playbook}
                )
            )
            await tx.record_event(req.key, now, made.number)

        await core.commit(None, write=create)
        incident = created[0]
        req.incident = incident.number
        log.info("incident.starting", incident=incident.number, team=team.name, user=req.user_id)
        incident = await self.finish_start(incident, [u.id for u in invited])
        reply = await core.reply(req, messages.started_reply(incident, names, [u.username for u in invited], not_invited))
        if incident.origin_post_id is None and reply is not None:
            # Started without a post (slash command, dialog): the answer in the channel is
            # the thread that later notices (updates, the end) go to.
            async with core.changing(incident, active=False) as fresh:
                fresh.origin_post_id = reply.id
                await core.commit(None, incident=fresh)
        await self.outbox.send(announce)

    async def finish_start(self, incident: Incident, invite_ids: list[str], resuming: bool = False) -> Incident:
        """Create (or find again) the channel and its posts; safe to run again after a crash.

        ``resuming``: an earlier run may have made posts it never noted; they carry
        part props and are found rather than made twice."""
        core = self.core
        async with core.lock(incident.number):
            channel = await self._ensure_channel(incident)
            if incident.channel_id != channel.id:
                incident.channel_id, incident.channel_name = channel.id, channel.name
                await core.commit(None, incident=incident)
            for user_id in [incident.commander_id, *invite_ids]:
                await core.directory.add_to_channel(channel.id, user_id)
            names = await core.directory.names([incident.commander_id, incident.started_by])
            items = await core.checklist(incident.number)
            made = await self.channel.made_parts(incident) if resuming else {}
            await self.channel.ensure_summary(incident, items, names, made)
            await self.channel.ensure_checklist(incident, items, made)
            incident.status = Status.ACTIVE
            incident.last_update_at = incident.started_at
            incident.next_reminder_at = reminder_due(incident.started_at, core.settings.reminders.minutes_for(incident.severity))
            await core.commit(None, incident=incident)
            await self.channel.refresh(incident, items)
        log.info("incident.started", incident=incident.number, channel=incident.channel_name)
        return incident

    async def resume_unfinished(self) -> int:
        """Incidents a crash left half set up: finish them and answer their `start` once."""
        core = self.core
        async with core.store.transaction() as tx:
            starting = await tx.list_incidents_in_status([Status.STARTING])
        for incident in starting:
            post = await core.chat.get_post(incident.command_post_id) if incident.command_post_id else None
            incident = await self.finish_start(incident, await self._invites_of(incident, post), resuming=True)
            if post is not None:
                channel = await core.chat.get_channel(post.channel_id)
                req = Request.of(post, channel.type, channel.team_id, late_by=core.now() - post.created)
                await self._answer_start(incident, req)
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
        await self._answer_start(incident, req)
        log.info("incident.resumed", incident=incident.number, channel=incident.channel_name)
        return True

    async def _answer_start(self, incident: Incident, req: Request) -> None:
        core = self.core
        async with core.store.transaction() as tx:
            if await tx.get_reply(req.key) is not None:
                return
        req.incident = incident.number
        if req.late_by is not None and req.late_by < timedelta(seconds=2):
            req.late_by = None
        mine = await core.find_reply(req)
        if mine is not None:
            await core.note_reply(req, mine)
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

    # --- repair after a restart or a Mattermost outage --------------------------------------

    async def repair(self) -> int:
        """After a restart: bring every open (or lately ended) incident's channel in line with the database.

        A crash between a change and the edits that show it leaves a stale header, summary or
        checklist post, or an item without its post; this mends them. Returns how many
        incidents were looked at."""
        core = self.core
        async with core.store.transaction() as tx:
            # Only what may need mending: old ended incidents stay in the database.
            incidents = await tx.list_incidents_to_repair(core.now() - REPAIR_ENDED_WITHIN)
        count = 0
        for incident in incidents:
            count += 1
            try:
                await self._repair_one(incident.number)
            except MattermostError as exc:
                self.backlog.mark_stale(incident.number, exc)  # tried again while Mattermost recovers
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
            if await self.channel.archived(incident):
                await self._mark_archived(incident)
                self.backlog.repaired(number)
                return
            live = [i for i in items if not i.removed]
            # Posts an earlier run made but never noted: the header among the channel's posts
            # (only when it is missing), the items in the checklist thread.
            lost_summary = incident.summary_post_id is None and incident.status != Status.STARTING  # deleted, not yet made again
            made = (
                await self.channel.made_parts(incident) if (incident.checklist_post_id is None and live) or lost_summary else {}
            )
            if lost_summary:
                names = await core.directory.names([incident.commander_id, *item_names(items)])
                await self.channel.ensure_summary(incident, live, names, made)
            thread: dict[str, Post] = {}
            if incident.checklist_post_id:
                thread = {p.id: p for p in await core.chat.get_thread(incident.checklist_post_id)}
                prefix = f"{number}:"
                for post in thread.values():
                    mark = post.props.get(PART_PROP)
                    if post.user_id == core.bot_id and isinstance(mark, str) and mark.startswith(prefix):
                        made.setdefault(mark[len(prefix) :], post)
            thread.update({p.id: p for p in made.values()})
            thread.update(await self.channel.ensure_checklist(incident, items, made))
            for item in items:
                if item.post_id and item.post_id in thread:
                    await self.channel.refresh_item(incident, item, strict=True, shown=thread[item.post_id].message)
            await self.channel.refresh(incident, live, strict=True)
            self.backlog.repaired(number)

    async def _mark_archived(self, incident: Incident) -> None:
        """Note once, on the timeline, that the channel was archived: the incident stays as it
        is (it can still be ended, reopened and exported from elsewhere), only its channel
        is no longer kept current, and nothing is retried there."""
        core = self.core
        async with core.store.transaction() as tx:
            events = await tx.list_timeline(incident.number)
        if any(e.kind == TimelineKind.CHANNEL_ARCHIVED for e in events):
            return
        log.warning("incident.channel_archived", incident=incident.number, channel=incident.channel_id)
        await core.commit(None, incident.number, event=core.event(incident.number, TimelineKind.CHANNEL_ARCHIVED))

    async def repair_stale(self) -> bool:
        """Repair the incidents whose channel edits failed; True when none is left."""
        for number in sorted(self.backlog.stale):
            try:
                await self._repair_one(number)
                log.info("incident.repaired", incident=number)
            except MattermostError as exc:
                log.warning("incident.repair_failed", incident=number, error=type(exc).__name__)
        return not self.backlog.stale

    async def _ensure_channel(self, incident: Incident) -> Channel:
        core = self.core
        if incident.channel_id:
            return await core.chat.get_channel(incident.channel_id)
        purpose = messages.channel_purpose(incident.number)
        for attempt in range(20):
            name = channel_name(incident.number, incident.title, attempt)
            try:
                return await core.chat.create_channel(
                    incident.team_id, name, display_name(incident.number, incident.title), type="P", purpose=purpose
                )
            except ChannelNameTaken:
                existing = await core.chat.get_channel_by_name(incident.team_id, name)
                # Ours from an earlier, interrupted try: use it rather than make a second one.
                if existing is not None and existing.creator_id == core.bot_id and existing.purpose == purpose:
                    return existing
        raise UserError(messages.no_free_channel_name(incident))

    # --- end / reopen -------------------------------------------------------------------

    async def _apply(
        self,
        req: Request,
        incident: Incident,
        kind: TimelineKind,
        text: str = "",
        data: dict[str, Any] | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> list[ChecklistItem]:
        """Commit a change of the incident with its timeline event (and the posts that follow
        from it), then show it in the channel."""
        event = self.core.event(incident.number, kind, req.user_id, text, data)
        items = await self.core.commit(req.key, incident=incident, event=event, outbox=outbox)
        await self.channel.refresh(incident, items)
        return items

    async def end(self, req: Request, cmd: Command) -> None:
        core = self.core
        found = await core.incident_for(req, cmd.incident, "end")
        async with core.changing(found) as incident:
            incident.status = Status.ENDED
            incident.ended_at = now = core.now()
            incident.ended_by = req.user_id
            incident.resolution = cmd.text or None
            incident.next_reminder_at = None
            names = await core.directory.names([incident.commander_id, incident.ended_by])
            summary = []
            if incident.channel_id:
                final = messages.final_summary(core.bot_name, incident, names, await core.checklist(incident.number), now)
                summary.append(self.channel.notice(f"{req.key}:final", incident.channel_id, final, incident=incident.number))
            text = messages.ended_notice(incident, names, now)
            notice = await self.channel.to_origin(req.key, incident, text, unless_in=(req.channel_id, req.thread_root))
            await self._apply(req, incident, TimelineKind.ENDED, cmd.text, outbox=summary + notice)
        await self.outbox.send(summary)
        await core.reply(req, messages.ended_reply(incident, core.now()))
        await self.outbox.send(notice)
        log.info("incident.ended", incident=incident.number, channel=incident.channel_name, user=req.user_id)

    async def reopen(self, req: Request, cmd: Command) -> None:
        core = self.core
        found = await core.incident_for(req, cmd.incident, "reopen")
        async with core.changing(found, active=False) as incident:
            if incident.status != Status.ENDED:
                raise UserError(messages.not_ended(incident))
            now = core.now()
            incident.status = Status.ACTIVE
            incident.ended_at = None
            incident.ended_by = None
            incident.resolution = None
            incident.last_update_at = now
            incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
            await self._apply(req, incident, TimelineKind.REOPENED, cmd.text)
        await core.reply(req, messages.reopened(incident))

    # --- read-only -------------------------------------------------------------------

    async def info(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "info")
        items = await core.checklist(incident.number)
        names = await core.directory.names([incident.commander_id])
        await core.reply(req, messages.info(incident, names, items, core.now()))

    async def list(self, req: Request, cmd: Command) -> None:
        core = self.core
        teams = {t.id: t.name for t in await self.teams.scope(req, None)}
        async with core.store.transaction() as tx:
            incidents, total = await tx.list_incidents(list(teams), [Status.ACTIVE, Status.STARTING], LIST_LIMIT)
        names = await core.directory.names([i.commander_id for i in incidents])
        await core.reply(req, messages.incident_list(incidents, total, names, teams, core.now()))

    async def history(self, req: Request, cmd: Command) -> None:
        core = self.core
        teams = {t.id: t.name for t in await self.teams.scope(req, cmd.team)}
        limit = cmd.limit or HISTORY_LIMIT
        page = cmd.page or 1
        async with core.store.transaction() as tx:
            incidents, total = await tx.list_incidents(list(teams), [Status.ENDED], limit, (page - 1) * limit)
        names = await core.directory.names([i.commander_id for i in incidents])
        await core.reply(
            req, messages.history(self.core.bot_name, incidents, total, page, limit, names, teams, core.now(), team=cmd.team)
        )

    # --- people and severity ------------------------------------------------------------

    async def join(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, cmd.incident, "join")
        if incident.channel_id is None:
            raise UserError(messages.still_starting(incident))
        if await core.reachable(incident, core.directory.in_channel(incident.channel_id, req.user_id), "channel"):
            raise UserError(messages.already_member(incident))
        names = await core.directory.names([req.user_id])
        notice = []
        if req.channel_id != incident.channel_id:
            text = messages.joined_notice(incident, names, req.user_id)
            notice.append(self.channel.notice(f"{req.key}:joined", incident.channel_id, text, incident=incident.number))
        async with core.lock(incident.number):
            await core.directory.add_to_channel(incident.channel_id, req.user_id)
            event = core.event(incident.number, TimelineKind.MEMBER_JOINED, req.user_id)
            await core.commit(req.key, incident.number, event=event, outbox=notice)
        await self.outbox.send(notice)
        await core.reply(req, messages.joined(incident))

    async def commander(self, req: Request, cmd: Command) -> None:
        core = self.core
        found = await core.incident_for(req, cmd.incident, "commander", channel_only=True)
        assert cmd.user is not None
        user = await core.team_member(cmd.user, found)
        async with core.changing(found) as incident:
            names = await core.directory.names([user.id, incident.commander_id])
            if incident.commander_id == user.id:
                raise UserError(messages.same_commander(incident, names(user.id)))
            assert incident.channel_id is not None
            await core.directory.add_to_channel(incident.channel_id, user.id)
            previous = incident.commander_id
            incident.commander_id = user.id
            change = messages.change(names(previous), names(user.id))
            await self._apply(req, incident, TimelineKind.COMMANDER_CHANGED, change, {"from": previous, "to": user.id})
        await core.reply(req, messages.commander_changed(incident, names, previous))

    async def sev(self, req: Request, cmd: Command) -> None:
        core = self.core
        found = await core.incident_for(req, cmd.incident, "sev", channel_only=True)
        assert cmd.severity is not None
        async with core.changing(found) as incident:
            if incident.severity == cmd.severity:
                raise UserError(messages.same_severity(incident))
            previous = incident.severity
            incident.severity = cmd.severity
            last = incident.last_update_at or incident.started_at
            incident.next_reminder_at = reminder_due(last, core.settings.reminders.minutes_for(incident.severity))
            change = messages.change(messages.sev(previous), messages.sev(cmd.severity))
            await self._apply(req, incident, TimelineKind.SEVERITY_CHANGED, change, {"from": previous, "to": cmd.severity})
        await core.reply(req, messages.severity_changed(incident, previous))
