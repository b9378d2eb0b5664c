"""What every use case shares: the request, replies, incident lookup with permissions, refresh of
the incident's channel header, pinned summary and checklist header."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from incident_bot.app.directory import Directory
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import MattermostError, NotFound
from incident_bot.chat.models import Post
from incident_bot.config import Settings
from incident_bot.domain import messages, rules
from incident_bot.domain.models import ChecklistItem, Incident, Playbook, Status, TimelineEvent, utcnow
from incident_bot.domain.format import format_short_duration
from incident_bot.domain.rules import RuleError
from incident_bot.store.base import Store, Transaction

log = structlog.get_logger("incident_bot.app")

REPLY_PROP = "incident_bot_reply_to"
PART_PROP = "incident_bot_part"  # which part of an incident channel a bot post is: found again after a crash


def part_props(incident: int, part: str) -> dict[str, str]:
    """Props marking a post as one part of incident ``incident``'s channel (``summary``,
    ``checklist``, ``item:3``), so a restart finds a post it made but never noted."""
    return {PART_PROP: f"{incident}:{part}"}


def pending_id(*what: str) -> str:
    """The same ``pending_post_id`` for the same post, also from a restarted bot: for 30 s
    Mattermost answers a repeat with the post already made (a request in flight when the
    bot died). Past that, ``part_props`` and the reply's props find it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, "incident-bot:" + ":".join(what)).hex


class UserError(Exception):
    """Ends a use case with this reply; nothing was changed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class Request:
    """One command from a person, as the use cases see it."""

    key: str  # dedupe key of the event that carried it
    post: Post
    user_id: str
    channel_id: str
    channel_type: str  # O, P, D, G
    team_id: str  # "" in a DM
    late_by: timedelta | None = None  # set when handled after an outage (catch-up)
    outcome: str = "ok"
    incident: int | None = None
    replied: bool = False

    @property
    def is_dm(self) -> bool:
        return self.channel_type in ("D", "G")

    @property
    def thread_root(self) -> str:
        return self.post.root_id or self.post.id


class Clock:
    """UTC now, optionally shifted.

    ``INCIDENT_BOT_CLOCK_SKEW_FILE`` names a file holding a number of seconds to add to
    the real time; tests use it to move the bot's clock (reminders, durations) without
    waiting. Unset in production.
    """

    def __init__(self, skew_file: str | None = None) -> None:
        self.skew_file = skew_file if skew_file is not None else os.environ.get("INCIDENT_BOT_CLOCK_SKEW_FILE")

    def offset(self) -> timedelta:
        if not self.skew_file:
            return timedelta(0)
        try:
            with open(self.skew_file, encoding="utf-8") as handle:
                return timedelta(seconds=float(handle.read().strip() or 0))
        except (OSError, ValueError):
            return timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset()


@dataclass
class Core:
    settings: Settings
    store: Store
    client: MattermostClient
    directory: Directory
    clock: Clock = field(default_factory=Clock)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # Incidents whose channel shows an older state: a change was saved but Mattermost refused
    # the edits. Repaired as a whole once it answers again (``on_stale`` says when to try).
    stale: set[int] = field(default_factory=set)
    on_stale: Callable[[], None] | None = None

    @property
    def bot_id(self) -> str:
        return self.directory.bot.id

    def now(self) -> datetime:
        return self.clock.now()

    def lock(self, number: int) -> asyncio.Lock:
        """Changes to one incident are applied one at a time."""
        return self._locks.setdefault(number, asyncio.Lock())

    # --- replies -------------------------------------------------------------------

    async def reply(self, req: Request, text: str, file_ids: list[str] | None = None) -> Post | None:
        """The one reply to a command: in its thread (in a DM: in the DM). Recorded so a
        redelivered command is not answered twice."""
        if req.replied:
            log.error("reply.twice", key=req.key)
            return None
        if req.late_by is not None:
            text = messages.late(text, format_short_duration(req.late_by))
        root = "" if req.is_dm else req.thread_root
        post = await self.client.create_post(
            req.channel_id, text, root_id=root, props={REPLY_PROP: req.post.id}, file_ids=file_ids,
            pending_post_id=pending_id("reply", req.key),
        )
        req.replied = True
        async with self.store.transaction() as tx:
            await tx.record_reply(req.key, post.id, self.now())
            if not await tx.event_seen(req.key):
                await tx.record_event(req.key, self.now(), req.incident)
        return post

    async def find_reply(self, req: Request) -> Post | None:
        """The bot's reply to this command already in Mattermost (posted, perhaps never noted)."""
        if req.is_dm:
            candidates = await self.client.get_posts_since(req.channel_id, max(req.post.create_at - 1, 1))
        else:
            candidates = await self.client.get_thread(req.thread_root)
        for post in candidates:
            if post.user_id == self.bot_id and not post.delete_at and post.props.get(REPLY_PROP) == req.post.id:
                return post
        return None

    async def recover_reply(self, req: Request, command_text: str) -> str:
        """The command's effect is committed but its reply was not recorded: if the reply was
        posted (the bot died before noting it), note it; otherwise answer now."""
        post = await self.find_reply(req)
        if post is not None:
            async with self.store.transaction() as tx:
                await tx.record_reply(req.key, post.id, self.now())
            return "found"
        await self.reply(req, messages.recovered(command_text))
        return "answered"

    async def fresh(self, incident: Incident) -> Incident:
        """The incident as the database has it now (call under its lock)."""
        async with self.store.transaction() as tx:
            return await tx.get_incident(incident.number) or incident

    async def commit_change(self, key: str, incident: Incident, event: TimelineEvent) -> list[ChecklistItem]:
        """Save the incident, its timeline event and the command's dedupe key in one
        transaction; returns the checklist for the refresh that follows."""
        async with self.store.transaction() as tx:
            await tx.save_incident(incident)
            await tx.add_timeline(event)
            await tx.record_event(key, event.at, incident.number)
            return await tx.list_checklist(incident.number)

    # --- lookups with the visibility rules -------------------------------------------

    async def incident_for(
        self,
        req: Request,
        number: int | None,
        command: str,
        *,
        member_action: str | None = None,
        channel_only: bool = False,
    ) -> Incident:
        """The incident a command is about: by number (team members only; the same reply
        whether it exists elsewhere or not) or the incident of the channel it was posted in.
        ``member_action`` set: the requester must be in the incident channel."""
        incident: Incident | None
        if number is not None and not channel_only:
            async with self.store.transaction() as tx:
                incident = await tx.get_incident(number)
            if incident is None or not await self.directory.in_team(incident.team_id, req.user_id):
                raise UserError(messages.not_found(number))
        else:
            async with self.store.transaction() as tx:
                incident = await tx.get_incident_by_channel(req.channel_id)
            if incident is None:
                if channel_only:
                    raise UserError(messages.need_incident_channel_only(self.directory.bot.username, command))
                raise UserError(messages.need_incident_channel(self.directory.bot.username, command))
            if number is not None and number != incident.number:
                raise UserError(messages.need_incident_channel_only(self.directory.bot.username, command))
        req.incident = incident.number
        if member_action:
            # The requester is in the team here (found by channel, or checked above).
            level = rules.access(in_team=True, in_channel=await self.directory.in_channel(incident.channel_id, req.user_id))
            if not rules.allowed(command, level):
                raise UserError(messages.not_a_member(incident, member_action))
        return incident

    async def playbooks(self, team_id: str) -> list[Playbook]:
        """Config playbooks (read-only, every team) then the team's own, by name."""
        config = self.settings.config_playbooks()
        async with self.store.transaction() as tx:
            team = await tx.list_playbooks(team_id)
        names = {p.name.lower() for p in config}
        return config + sorted((p for p in team if p.name.lower() not in names), key=lambda p: p.name.lower())

    async def find_playbook(self, team_id: str, name: str) -> Playbook | None:
        for playbook in await self.playbooks(team_id):
            if playbook.name.lower() == name.lower():
                return playbook
        return None

    # --- keeping the channel current --------------------------------------------------

    async def origin_link(self, incident: Incident) -> str | None:
        if not incident.origin_post_id or incident.origin_channel_id == incident.channel_id:
            return None
        try:
            team = await self.client.get_team(incident.team_id)
        except MattermostError:
            return None
        return f"{self.settings.mattermost_url}/{team.name}/pl/{incident.origin_post_id}"

    async def refresh(self, incident: Incident, items: list[ChecklistItem] | None = None, *, strict: bool = False) -> None:
        """Bring header, pinned summary and checklist header in line with the database.

        A change is saved before its channel is edited: when Mattermost fails here the change
        stands, the incident is marked stale and repaired later (``strict``: raise instead)."""
        if incident.channel_id is None:
            return
        if not strict and incident.number in self.stale:
            return  # repaired as a whole once Mattermost answers again
        try:
            await self._refresh(incident, items)
        except MattermostError as exc:
            if strict:
                raise
            self.mark_stale(incident.number, exc)

    async def _refresh(self, incident: Incident, items: list[ChecklistItem] | None) -> None:
        assert incident.channel_id is not None
        if items is None:
            async with self.store.transaction() as tx:
                items = await tx.list_checklist(incident.number)
        names = await self.directory.names(
            [incident.commander_id, incident.started_by, incident.ended_by]
            + [i.done_by for i in items]
            + [i.assignee_id for i in items]
        )
        now = self.now()
        await self.client.patch_channel(incident.channel_id, header=messages.header(incident, names))
        if incident.summary_post_id:
            text = messages.summary(self.directory.bot.username, incident, names, items, now, await self.origin_link(incident))
            await self._patch(incident.summary_post_id, text)
        if incident.checklist_post_id:
            await self._patch(incident.checklist_post_id, messages.checklist_header(self.directory.bot.username, incident, items, names))

    async def refresh_item(self, incident: Incident, item: ChecklistItem, *, strict: bool = False) -> None:
        if not item.post_id or (not strict and incident.number in self.stale):
            return
        try:
            names = await self.directory.names([item.done_by, item.assignee_id])
            await self._patch(item.post_id, messages.checklist_item(item, names))
        except MattermostError as exc:
            if strict:
                raise
            self.mark_stale(incident.number, exc)

    def mark_stale(self, number: int, exc: Exception) -> None:
        log.warning("refresh.failed", incident=number, error=type(exc).__name__)
        self.stale.add(number)
        if self.on_stale is not None:
            self.on_stale()

    async def _patch(self, post_id: str, text: str) -> None:
        try:
            await self.client.patch_post(post_id, message=text)
        except NotFound:
            log.warning("post.gone", post=post_id)

    async def post_in_channel(self, channel_id: str, text: str, root_id: str = "") -> Post | None:
        try:
            return await self.client.create_post(channel_id, text, root_id=root_id)
        except MattermostError as exc:
            log.warning("post.failed", channel=channel_id, status=exc.status, error=exc.error_id)
            return None


def rule(fn: Callable[[], None]) -> None:
    """Run a domain rule check, turning its refusal into a reply."""
    try:
        fn()
    except RuleError as exc:
        raise UserError(messages.refusal(exc)) from None


async def seen(tx: Transaction, key: str) -> bool:
    return await tx.event_seen(key)


__all__ = ["Core", "Request", "UserError", "Clock", "rule", "Status"]
