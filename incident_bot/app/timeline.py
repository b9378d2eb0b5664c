"""Use cases of the record: notes, 📌 posts, timeline view, status updates, reminders, stats, export."""

from __future__ import annotations

import asyncio
import statistics
from datetime import timedelta

import structlog

from incident_bot.app.core import Core, Request, UserError
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.models import Post, Reaction
from incident_bot.domain import export, messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Incident, Status, TimelineEvent, TimelineKind
from incident_bot.domain.format import format_duration
from incident_bot.domain.rules import REMINDER_MIN_GAP, reminder_due

log = structlog.get_logger("incident_bot.app")

REMINDER_TICK = 1.0  # seconds between checks for due reminders


class Timeline:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _member_incident(
        self, req: Request, number: int | None, command: str, what: str, channel_only: bool = False
    ) -> Incident:
        """Timeline, notes and exports quote the channel: members only."""
        incident = await self.core.incident_for(req, number, command, channel_only=channel_only)
        if not await self.core.directory.in_channel(incident.channel_id, req.user_id):
            raise UserError(messages.not_a_member_to_read(incident, what))
        return incident

    # --- notes and the timeline view -------------------------------------------------

    async def note(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, None, "note", member_action="add notes to", channel_only=True)
        now = core.now()
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                await tx.add_timeline(
                    TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.NOTE, actor_id=req.user_id, text=cmd.text)
                )
                await tx.record_event(req.key, now, incident.number)
        await core.reply(req, messages.note_added(incident))

    async def show(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._member_incident(req, None, "timeline", "timeline", channel_only=True)
        async with core.store.transaction() as tx:
            events = await tx.list_timeline(incident.number)
        names = await core.directory.names(e.actor_id for e in events)
        parts = messages.timeline_tables(incident, events, names)
        # The reply is the first part; the rest follow in the same thread.
        first = await core.reply(req, parts[0])
        root = "" if req.is_dm else req.thread_root
        for part in parts[1:]:
            if first is not None:
                await core.client.create_post(req.channel_id, part, root_id=root)

    # --- 📌 posts ---------------------------------------------------------------------

    async def pin_reaction(self, key: str, reaction: Reaction, added: bool) -> str:
        core = self.core
        async with core.store.transaction() as tx:
            if await tx.event_seen(key):
                return "duplicate"
        post = await core.client.get_post(reaction.post_id)
        if post is None:
            return "ignored:post-gone"
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
        if incident is None:
            return "ignored:not-an-incident-channel"
        if not await core.directory.in_channel(incident.channel_id, reaction.user_id):
            return "ignored:not-a-member"
        permalink = await self._permalink(incident, post) if added else ""
        still_pinned = False if added else await self._still_pinned(incident, post, reaction.user_id)
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                if await tx.event_seen(key):
                    return "duplicate"
                existing = await tx.get_timeline_by_post(incident.number, post.id)
                now = core.now()
                if added:
                    if existing is not None:
                        outcome = "unchanged"
                    else:
                        await tx.add_timeline(self._pinned_event(incident, post, reaction.user_id, permalink))
                        outcome = "pinned"
                elif existing is None:
                    outcome = "unchanged"
                elif still_pinned:
                    outcome = "kept:other-pin"
                else:
                    existing.deleted = True
                    existing.data = {**existing.data, "unpinned_by": reaction.user_id}
                    await tx.update_timeline(existing)
                    outcome = "unpinned"
                await tx.record_event(key, now, incident.number)
        return outcome

    async def reconcile_pins(self, post: Post) -> str:
        """After missed events: the timeline holds this post exactly when a member's 📌 is on it."""
        core = self.core
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
        if incident is None:
            return "ignored"
        pinners = []
        for r in await core.client.get_reactions(post.id):
            if r.emoji_name == core.settings.timeline_emoji and r.user_id != core.bot_id:
                if await core.directory.in_channel(incident.channel_id, r.user_id):
                    pinners.append(r.user_id)
        permalink = await self._permalink(incident, post) if pinners else ""
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                existing = await tx.get_timeline_by_post(incident.number, post.id)
                if existing is not None and existing.data.get("post_deleted"):
                    return "unchanged"  # the post is gone; its entry stays marked deleted
                if pinners and existing is None:
                    await tx.add_timeline(self._pinned_event(incident, post, pinners[0], permalink))
                    return "pinned"
                if existing is not None and not pinners:
                    existing.deleted = True
                    await tx.update_timeline(existing)
                    return "unpinned"
        return "unchanged"

    async def _still_pinned(self, incident: Incident, post: Post, remover: str) -> bool:
        reactions = await self.core.client.get_reactions(post.id)
        for r in reactions:
            if r.emoji_name == self.core.settings.timeline_emoji and r.user_id not in (remover, self.core.bot_id):
                if await self.core.directory.in_channel(incident.channel_id, r.user_id):
                    return True
        return False

    def _pinned_event(self, incident: Incident, post: Post, by: str, permalink: str) -> TimelineEvent:
        return TimelineEvent(
            incident_number=incident.number,
            at=post.created,
            kind=TimelineKind.POST_PINNED,
            actor_id=post.user_id,
            text=post.message,
            post_id=post.id,
            data={"pinned_by": by, "permalink": permalink, "edited": False},
        )

    async def _permalink(self, incident: Incident, post: Post) -> str:
        try:
            team = await self.core.client.get_team(incident.team_id)
        except MattermostError:
            return ""
        return f"{self.core.settings.mattermost_url}/{team.name}/pl/{post.id}"

    async def post_changed(self, key: str, post: Post, deleted: bool) -> str:
        """A post on the timeline was edited or deleted: the timeline follows."""
        core = self.core
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
            if incident is None:
                return "ignored"
            if await tx.event_seen(key):
                return "duplicate"
            existing = await tx.get_timeline_by_post(incident.number, post.id)
            if existing is None:
                return "ignored"
            if deleted:
                # The entry stays, marked deleted (``deleted`` would take it off the timeline,
                # as for an unpin); the words go with the post, which may have been removed
                # because it should never have been posted.
                existing.data = {**existing.data, "post_deleted": True}
                existing.text = ""
            else:
                existing.text = post.message
                existing.data = {**existing.data, "edited": True}
            await tx.update_timeline(existing)
            await tx.record_event(key, core.now(), incident.number)
        return "deleted" if deleted else "edited"

    # --- status updates and reminders ------------------------------------------------

    async def update(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, None, "update", member_action="post updates to", channel_only=True)
        if incident.status == Status.ENDED:
            raise UserError(messages.already_ended(incident))
        async with core.lock(incident.number):
            now = core.now()
            incident = await core.fresh(incident)
            incident.last_update_at = now
            incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
            await core.commit_change(
                req.key, incident,
                TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.STATUS_UPDATE, actor_id=req.user_id, text=cmd.text),
            )
        names = await core.directory.names([incident.commander_id, req.user_id])
        text = messages.status_update(incident, names, req.user_id, cmd.text, now)
        assert incident.channel_id is not None
        await core.post_in_channel(incident.channel_id, text)
        if incident.origin_post_id and incident.origin_channel_id != incident.channel_id:
            root = "" if await self._is_dm(incident.origin_channel_id) else incident.origin_post_id
            await core.post_in_channel(incident.origin_channel_id, text, root_id=root)
        await self._announce(incident, text)
        await core.reply(req, messages.update_posted(incident, incident.next_reminder_at))

    async def _is_dm(self, channel_id: str) -> bool:
        try:
            return (await self.core.client.get_channel(channel_id)).type in ("D", "G")
        except MattermostError:
            return False

    async def _announce(self, incident: Incident, text: str) -> None:
        core = self.core
        try:
            team = await core.client.get_team(incident.team_id)
        except MattermostError:
            return
        name = core.settings.announcement_channels.get(team.name.lower())
        if not name:
            return
        channel = await core.client.get_channel_by_name(team.id, name)
        if channel is not None:
            await core.post_in_channel(channel.id, text)

    async def send_due_reminders(self) -> int:
        """One reminder per overdue incident, then the next one an interval later (not a burst
        for every interval missed while the bot was down)."""
        core = self.core
        now = core.now()
        async with core.store.transaction() as tx:
            due = await tx.due_reminders(now)
        sent = 0
        for incident in due:
            async with core.lock(incident.number):
                incident = await core.fresh(incident)
                if incident.status != Status.ACTIVE or incident.next_reminder_at is None or incident.next_reminder_at > now:
                    continue
                minutes = core.settings.reminders.minutes_for(incident.severity)
                incident.next_reminder_at = reminder_due(now, minutes)
                since = incident.last_update_at or incident.started_at
                names = await core.directory.names([incident.commander_id])
                # Commit the next due time first: a crash after this never repeats the reminder.
                async with core.store.transaction() as tx:
                    await tx.save_incident(incident)
                posted = None
                if incident.channel_id:
                    posted = await core.post_in_channel(incident.channel_id, messages.reminder(core.directory.bot.username, incident, names, since, now))
                if posted is None:
                    # Mattermost refused or is down: not recorded as sent, and tried again in a
                    # minute rather than an interval later (not every tick: the refusal may last).
                    incident.next_reminder_at = now + REMINDER_MIN_GAP
                    async with core.store.transaction() as tx:
                        await tx.save_incident(incident)
                    log.warning("reminder.not_sent", incident=incident.number, channel=incident.channel_name)
                    continue
                async with core.store.transaction() as tx:
                    await tx.add_timeline(
                        TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.REMINDER_SENT,
                                      text=f"no update for {format_duration(now - since)}")
                    )
                sent += 1
                log.info("reminder.sent", incident=incident.number, channel=incident.channel_name, user=incident.commander_id)
        return sent

    async def run_reminders(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_due_reminders()
            except Exception as exc:  # noqa: BLE001 - Mattermost down: try again next tick
                log.warning("reminder.failed", error=type(exc).__name__, detail=str(exc)[:200])
            try:
                await asyncio.wait_for(stop.wait(), timeout=REMINDER_TICK)
            except TimeoutError:
                pass

    # --- stats and export ------------------------------------------------------------

    async def stats(self, req: Request, cmd: Command) -> None:
        core = self.core
        shared = await core.directory.shared_teams(req.user_id)
        if cmd.team:
            shared = [t for t in shared if t.name.lower() == cmd.team]
            if not shared:
                raise UserError(messages.unknown_team(cmd.team, [t.name for t in await core.directory.shared_teams(req.user_id)]))
        days = cmd.days or 30
        now = core.now()
        since = now - timedelta(days=days)
        team_ids = [t.id for t in shared]
        async with core.store.transaction() as tx:
            active, _ = await tx.list_incidents(team_ids, [Status.ACTIVE, Status.STARTING], 10_000)
            ended, _ = await tx.list_incidents(team_ids, [Status.ENDED], 10_000)
        recent = [i for i in active + ended if i.started_at >= since]
        by_sev: dict[int, int] = {}
        for incident in recent:
            by_sev[incident.severity] = by_sev.get(incident.severity, 0) + 1
        durations = [(i.ended_at - i.started_at).total_seconds() for i in ended if i.ended_at and i.started_at >= since]
        median = format_duration(timedelta(seconds=statistics.median(durations))) if durations else None
        mean = format_duration(timedelta(seconds=statistics.fmean(durations))) if durations else None
        label = ", ".join(t.name for t in shared) or "your teams"
        await core.reply(req, messages.stats(label, days, by_sev, len(active), median, mean, len(durations)))

    async def export(self, req: Request, cmd: Command) -> None:
        core = self.core
        if req.is_dm:
            if cmd.incident is None:
                raise UserError(messages.need_incident_channel(core.directory.bot.username, "export"))
            incident = await self._member_incident(req, cmd.incident, "export", "export")
        else:
            # The file quotes the incident channel: it goes there or to a DM, never to a channel
            # (or another incident's channel) where people outside the incident would read it.
            async with core.store.transaction() as tx:
                here = await tx.get_incident_by_channel(req.channel_id)
            if here is None or (cmd.incident is not None and cmd.incident != here.number):
                raise UserError(messages.export_where(cmd.incident))
            incident = await self._member_incident(req, None, "export", "export")
        fmt = cmd.format or "md"
        content = await self.render(incident, fmt)
        name = export.filename(incident, fmt)
        info = await core.client.upload_file(req.channel_id, name, content.encode("utf-8"),
                                             mime="application/json" if fmt == "json" else "text/markdown")
        await core.reply(req, messages.exported(incident, name), file_ids=[info.id])

    async def render(self, incident: Incident, fmt: str) -> str:
        core = self.core
        participants: set[str] = set()
        if incident.channel_id:
            try:
                participants = set(await core.client.get_channel_member_ids(incident.channel_id))
            except MattermostError:
                pass
        participants.discard(core.bot_id)
        try:
            team_name = (await core.client.get_team(incident.team_id)).name
        except MattermostError:
            team_name = incident.team_id
        async with core.store.transaction() as tx:
            items = await tx.list_checklist(incident.number, include_removed=True)
            events = await tx.list_timeline(incident.number)
        ids = export.user_ids(incident, items, events) | participants
        names = await core.directory.names(ids)
        usernames = {uid: names(uid).lstrip("@") for uid in ids}
        async with core.store.transaction() as tx:
            # Remembered so `incident-bot export` can name people without Mattermost.
            await tx.set_state(f"team:{incident.team_id}", team_name)
            for uid, username in usernames.items():
                await tx.set_state(f"user:{uid}", username)
            await tx.set_state(f"participants:{incident.number}", sorted(participants))
        data = export.record(incident, items, events, usernames, sorted(participants | export.actor_ids(events)), team_name, core.now())
        return export.render(data, fmt)
