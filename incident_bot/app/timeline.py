"""Use cases of the record: notes, 📌 posts, the timeline view, status updates and reminders."""

from __future__ import annotations

import asyncio

import structlog

from incident_bot.app.channel import ChannelWriter
from incident_bot.app.core import Core
from incident_bot.app.outbox import Outbox
from incident_bot.app.request import Applied, Request
from incident_bot.chat.models import Post, Reaction
from incident_bot.chat.retry import sleep_unless_stopped
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Incident, Status, TimelineEvent, TimelineKind
from incident_bot.domain.rules import reminder_due
from incident_bot.store.base import Transaction

log = structlog.get_logger("incident_bot.app")

REMINDER_TICK = 1.0  # seconds between checks for due reminders


class Timeline:
    def __init__(self, core: Core, channel: ChannelWriter, outbox: Outbox) -> None:
        self.core = core
        self.channel = channel
        self.outbox = outbox

    # --- notes and the timeline view -------------------------------------------------

    async def note(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, None, "note", channel_only=True)
        async with core.lock(incident.number):
            await core.commit(
                req.key,
                incident.number,
                event=core.event(incident.number, TimelineKind.NOTE, req.user_id, cmd.text),
            )
        await core.reply(req, messages.note_added(incident))

    async def show(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await core.incident_for(req, None, "timeline", channel_only=True)
        async with core.store.transaction() as tx:
            events = await tx.list_timeline(incident.number)
        names = await core.directory.names(e.actor_id for e in events)
        parts = messages.timeline_tables(incident, events, names)
        # The reply is the first part; the rest follow in the same thread.
        first = await core.reply(req, parts[0])
        root = "" if req.is_dm else req.thread_root
        for part in parts[1:]:
            if first is not None:
                await core.chat.create_post(req.channel_id, part, root_id=root)

    # --- 📌 posts ---------------------------------------------------------------------

    async def _pinners(self, incident: Incident, post: Post, *, skip: str | None = None) -> list[str]:
        """Channel members whose 📌 is on the post, oldest first (not ``skip``, who just took theirs off)."""
        pins = await self.core.directory.member_reactions(post.id, [self.core.settings.timeline_emoji], incident.channel_id)
        return [r.user_id for r in pins if r.user_id != skip]

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

    async def pin_reaction(self, key: str, reaction: Reaction, added: bool) -> Applied:
        core = self.core
        async with core.store.transaction() as tx:
            if await tx.event_seen(key):
                return Applied.DUPLICATE
        post = await core.chat.get_post(reaction.post_id)
        if post is None:
            return Applied.POST_GONE
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
        if incident is None:
            return Applied.NOT_AN_INCIDENT_CHANNEL
        if not await core.directory.acting_member(incident.channel_id, reaction.user_id):
            return Applied.NOT_A_MEMBER
        permalink = (await self.channel.permalink(incident.team_id, post.id) or "") if added else ""
        still_pinned = False if added else bool(await self._pinners(incident, post, skip=reaction.user_id))
        outcome = Applied.UNCHANGED
        async with core.lock(incident.number):

            async def pin(tx: Transaction) -> None:
                nonlocal outcome
                existing = await tx.get_timeline_by_post(incident.number, post.id)
                if added and existing is None:
                    await tx.add_timeline(self._pinned_event(incident, post, reaction.user_id, permalink))
                    outcome = Applied.PINNED
                elif not added and existing is not None:
                    if still_pinned:
                        outcome = Applied.KEPT_OTHER_PIN
                        return
                    existing.deleted = True
                    existing.data = {**existing.data, "unpinned_by": reaction.user_id}
                    await tx.update_timeline(existing)
                    outcome = Applied.UNPINNED

            async with core.store.transaction() as tx:
                if await tx.event_seen(key):
                    return Applied.DUPLICATE
            await core.commit(key, incident.number, write=pin)
        return outcome

    async def reconcile_pins(self, post: Post) -> Applied:
        """After missed events: the timeline holds this post exactly when a member's 📌 is on it."""
        core = self.core
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
        if incident is None:
            return Applied.IGNORED
        pinners = await self._pinners(incident, post)
        permalink = (await self.channel.permalink(incident.team_id, post.id) or "") if pinners else ""
        async with core.lock(incident.number), core.store.transaction() as tx:
            existing = await tx.get_timeline_by_post(incident.number, post.id)
            if existing is not None and existing.data.get("post_deleted"):
                return Applied.UNCHANGED  # the post is gone; its entry stays marked deleted
            if pinners and existing is None:
                await tx.add_timeline(self._pinned_event(incident, post, pinners[0], permalink))
                return Applied.PINNED
            if existing is not None and not pinners:
                existing.deleted = True
                await tx.update_timeline(existing)
                return Applied.UNPINNED
        return Applied.UNCHANGED

    async def is_pinned(self, post: Post) -> bool:
        """The post is on its channel's incident timeline (pinned, or once pinned)."""
        async with self.core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
            return incident is not None and await tx.get_timeline_by_post(incident.number, post.id) is not None

    async def post_changed(self, key: str, post: Post, deleted: bool) -> Applied:
        """A post on the timeline was edited or deleted: the timeline follows."""
        core = self.core
        async with core.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
            if incident is None:
                return Applied.IGNORED
            if await tx.event_seen(key):
                return Applied.DUPLICATE
            existing = await tx.get_timeline_by_post(incident.number, post.id)
            if existing is None:
                return Applied.IGNORED
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
        return Applied.DELETED if deleted else Applied.EDITED

    # --- status updates and reminders ------------------------------------------------

    async def update(self, req: Request, cmd: Command) -> None:
        core = self.core
        found = await core.incident_for(req, None, "update", channel_only=True)
        async with core.changing(found) as incident:
            now = core.now()
            incident.last_update_at = now
            incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
            names = await core.directory.names([incident.commander_id, req.user_id])
            text = messages.status_update(incident, names, req.user_id, cmd.text, now)
            assert incident.channel_id is not None
            # The update goes to the channel, the thread it started from and the announcements.
            copies = [
                self.channel.notice(f"{req.key}:copy", incident.channel_id, text, incident=incident.number),
                *await self.channel.to_origin(req.key, incident, text),
                *await self.channel.to_announcements(req.key, incident, text),
            ]
            event = core.event(incident.number, TimelineKind.STATUS_UPDATE, req.user_id, cmd.text)
            await core.commit(req.key, incident=incident, event=event, outbox=copies)
        await self.outbox.send(copies)
        await core.reply(req, messages.update_posted(incident, incident.next_reminder_at))

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
                due_at = incident.next_reminder_at
                incident.next_reminder_at = reminder_due(now, core.settings.reminders.minutes_for(incident.severity))
                since = incident.last_update_at or incident.started_at
                names = await core.directory.names([incident.commander_id])
                reminder = []
                if incident.channel_id:
                    text = messages.reminder(core.bot_name, incident, names, since, now)
                    key = f"reminder:{incident.number}:{due_at.isoformat()}"
                    reminder.append(self.channel.notice(key, incident.channel_id, text, incident=incident.number))
                # The next due time, the record and the post in one commit: a crash after it
                # neither repeats the reminder nor loses it (the outbox posts it).
                event = core.event(incident.number, TimelineKind.REMINDER_SENT, None, messages.no_update_for(now - since))
                await core.commit(None, incident=incident, event=event, outbox=reminder)
                sent += 1
                self.core.observer.reminder_sent()
                if await self.outbox.send(reminder):
                    log.info("reminder.sent", incident=incident.number, channel=incident.channel_name, user=incident.commander_id)
                else:  # queued: the outbox posts it once Mattermost takes it
                    log.warning("reminder.not_sent", incident=incident.number, channel=incident.channel_name)
        return sent

    async def run_reminders(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_due_reminders()
            except Exception as exc:  # noqa: BLE001 - Mattermost down: try again next tick
                log.warning("reminder.failed", error=type(exc).__name__, detail=str(exc)[:200])
            await sleep_unless_stopped(REMINDER_TICK, stop)
