"""What every use case shares: the clock, one lock per incident, the one commit of a change,
the one reply to a command, and finding the incident a command is about."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog

from incident_bot.app.directory import Directory
from incident_bot.app.observe import AppObserver, NullObserver, note_incident
from incident_bot.app.request import Applied, Clock, Request, UserError
from incident_bot.chat.errors import Forbidden, NotFound
from incident_bot.chat.models import Post, User
from incident_bot.chat.port import ChatPort
from incident_bot.config import Settings
from incident_bot.domain import messages, rules
from incident_bot.domain.commands import COMMANDS, Access, Outcome
from incident_bot.domain.format import format_short_duration
from incident_bot.domain.models import ChecklistItem, Incident, OutboxEntry, Playbook, TimelineEvent, TimelineKind
from incident_bot.domain.rules import RuleError
from incident_bot.store.base import Store, StoreUnavailable, Transaction

log = structlog.get_logger("incident_bot.app")

REPLY_PROP = "incident_bot_reply_to"

Write = Callable[[Transaction], Awaitable[object]]


def pending_id(*what: str) -> str:
    """The same ``pending_post_id`` for the same post, also from a restarted bot: for 30 s
    Mattermost answers a repeat with the post already made (a request in flight when the
    bot died). Past that, part and reply props find it."""
    # A SHA-1 of the name, as uuid5 takes, without building a UUID (uuid5 was 2% of a `help` in py-spy).
    return hashlib.sha1(("incident-bot:" + ":".join(what)).encode(), usedforsecurity=False).hexdigest()[:32]


def error_ref(event: str, **fields: Any) -> str:
    """Log ``event`` as an error with a new ref, the one the person is told to quote."""
    ref = secrets.token_hex(3)
    log.error(event, ref=ref, **fields)
    return ref


class Core:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        chat: ChatPort,
        directory: Directory,
        clock: Clock | None = None,
        observer: AppObserver | None = None,
    ) -> None:
        self.settings = settings
        self.observer: AppObserver = observer or NullObserver()
        self.store = store
        self.chat = chat
        self.directory = directory
        self.clock = clock or Clock()
        self._locks: dict[int, asyncio.Lock] = {}

    @property
    def bot_id(self) -> str:
        return self.directory.bot.id

    @property
    def bot_name(self) -> str:
        """The bot's username (without @): how people address it, as the texts show."""
        return self.directory.bot.username

    def now(self) -> datetime:
        return self.clock.now()

    def lock(self, number: int) -> asyncio.Lock:
        """Changes to one incident are applied one at a time."""
        return self._locks.setdefault(number, asyncio.Lock())

    # --- the one commit of a change ------------------------------------------------------

    def event(
        self, number: int, kind: TimelineKind, actor: str | None = None, text: str = "", data: dict[str, Any] | None = None
    ) -> TimelineEvent:
        """A timeline event of incident ``number`` happening now."""
        return TimelineEvent(incident_number=number, at=self.now(), kind=kind, actor_id=actor, text=text, data=data or {})

    async def commit(
        self,
        key: str | None,
        number: int | None = None,
        *,
        incident: Incident | None = None,
        item: ChecklistItem | None = None,
        event: TimelineEvent | None = None,
        write: Write | None = None,
        outbox: Sequence[OutboxEntry] = (),
    ) -> list[ChecklistItem]:
        """One transaction: ``write`` (what only this change does), then the incident, the
        item, the timeline event, the posts that follow from the change (``outbox``, sent
        after the commit by ``Outbox.send``) and the dedupe key ``key``. Returns the
        incident's checklist (empty without an incident), for the channel refresh that follows."""
        number = number if number is not None else incident.number if incident else None
        note_incident(number)
        async with self.store.transaction() as tx:
            if write is not None:
                await write(tx)
            if incident is not None:
                await tx.save_incident(incident)
            if item is not None:
                await tx.save_checklist_item(item)
            if event is not None:
                await tx.add_timeline(event)
            for entry in outbox:
                await tx.add_outbox(entry)
            if key:
                await tx.record_event(key, event.at if event else self.now(), number)
            return await tx.list_checklist(number) if number is not None else []

    async def fresh(self, incident: Incident) -> Incident:
        """The incident as the database has it now (call under its lock)."""
        async with self.store.transaction() as tx:
            return await tx.get_incident(incident.number) or incident

    @asynccontextmanager
    async def changing(self, incident: Incident, *, active: bool = True) -> AsyncIterator[Incident]:
        """Hold the incident's lock and give it as the database has it now; ``active``: refuse
        an ended one (ended incidents are read-only until reopened)."""
        async with self.lock(incident.number):
            fresh = await self.fresh(incident)
            if active:
                try:
                    rules.require_active(fresh)
                except RuleError as exc:
                    raise UserError(messages.refusal(exc)) from None
            yield fresh

    async def checklist(self, number: int, *, include_removed: bool = False) -> list[ChecklistItem]:
        async with self.store.transaction() as tx:
            return await tx.list_checklist(number, include_removed=include_removed)

    # --- replies ---------------------------------------------------------------------------

    async def reply(self, req: Request, text: str, file_ids: list[str] | None = None) -> Post | None:
        """The one reply to a command: in its thread (in a DM: in the DM). Recorded so a
        redelivered command is not answered twice."""
        if req.replied:
            log.error("reply.twice", key=req.key)
            return None
        if req.answer is not None:
            return await self._answer(req, text, file_ids)
        if req.late_by is not None:
            text = messages.late(text, format_short_duration(req.late_by))
        root = "" if req.is_dm else req.thread_root
        post = await self.chat.create_post(
            req.channel_id,
            text,
            root_id=root,
            props={REPLY_PROP: req.post.id},
            file_ids=file_ids,
            pending_post_id=pending_id("reply", req.key),
        )
        req.replied = True
        try:
            await self.note_reply(req, post, applied=True)
        except StoreUnavailable as exc:  # the reply names its command: catch-up finds it later
            log.warning("reply.unrecorded", key=req.key, error=str(exc)[:300])
        return post

    def store_down(self, exc: StoreUnavailable, **fields: Any) -> str:
        """Log why the database cannot be written (with a ref) and word the refusal."""
        ref = secrets.token_hex(3)
        log.error("store.unwritable", ref=ref, detail=str(exc)[:300], **fields)
        return messages.store_unwritable(ref)

    def failure(self, exc: Exception, event: str, **fields: Any) -> str:
        """The answer to a request that failed (a command, a click, the slash command, a
        dialog): a database that cannot be written as ``store_down`` words it, anything else
        logged as ``event`` with where it was raised and a ref the person is told (never the
        traceback)."""
        if isinstance(exc, StoreUnavailable):
            return self.store_down(exc, **fields)
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{frame.filename}:{frame.lineno}" if frame else None
        ref = error_ref(event, **fields, error=type(exc).__name__, detail=str(exc)[:300], where=where)
        return messages.internal_error(ref)

    async def _answer(self, req: Request, text: str, file_ids: list[str] | None) -> Post | None:
        """The reply to a command that came without a post: what only the requester needs
        (the command table's ``private_answer``, refusals, usage errors, help) through
        ``req.answer``; the rest is posted in the channel (in the thread it came from) as
        the reply to a mention would be."""
        assert req.answer is not None
        spec = COMMANDS.get(req.command)
        private = req.answer_privately or req.outcome != Outcome.OK or spec is None or spec.private_answer
        if private and not file_ids:
            await self._answer_privately(req, text)
            return None
        try:
            post = await self.chat.create_post(
                req.channel_id,
                text,
                root_id=req.thread_root,  # a slash command's stand-in has no id: its thread, if any
                props={REPLY_PROP: req.key},
                file_ids=file_ids,
                pending_post_id=pending_id("reply", req.key),
            )
        except (Forbidden, NotFound):  # a channel the bot is not in (a DM of two others): tell the requester
            if file_ids:
                raise
            await self._answer_privately(req, text)
            return None
        req.replied = True
        await self.note_reply(req, post, applied=True)
        return post

    async def _answer_privately(self, req: Request, text: str) -> None:
        assert req.answer is not None
        await req.answer.private(text)
        req.replied = True
        async with self.store.transaction() as tx:
            await tx.record_event(req.key, self.now(), req.incident)  # a no-op when already recorded
        req.noted = True

    async def note_reply(self, req: Request, post: Post, *, applied: bool = False) -> None:
        """Remember ``post`` as the reply to ``req`` (``applied``: and the command as handled).

        Through ``store.later()``: on SQLite the record rides along with the next trip to the
        database (the next command's claim reads it), so a ``help`` costs one trip instead of
        two; a duplicate of the command claimed meanwhile reads it first. If the bot dies
        before it is written, the reply names its command and catch-up finds it there."""
        async with self.store.later() as tx:
            await tx.record_reply(req.key, post.id, self.now())
            if applied:
                await tx.record_event(req.key, self.now(), req.incident)  # a no-op when already recorded
        req.noted = True

    async def find_reply(self, req: Request) -> Post | None:
        """The bot's reply to this command already in Mattermost (posted, perhaps never noted)."""
        if req.is_dm:
            candidates = await self.chat.get_posts_since(req.channel_id, max(req.post.create_at - 1, 1))
        else:
            candidates = await self.chat.get_thread(req.thread_root)
        for post in candidates:
            if post.user_id == self.bot_id and not post.delete_at and post.props.get(REPLY_PROP) == req.post.id:
                return post
        return None

    async def recover_reply(self, req: Request, command_text: str) -> Applied:
        """The command's effect is committed but its reply was not recorded: if the reply was
        posted (the bot died before noting it), note it; otherwise answer now."""
        post = await self.find_reply(req)
        if post is not None:
            await self.note_reply(req, post)
            return Applied.FOUND
        await self.reply(req, messages.recovered(command_text))
        return Applied.ANSWERED

    # --- who and what a command is about -------------------------------------------------

    async def team_member(self, username: str, incident: Incident) -> User:
        """The active user ``@username`` in the incident's team, or a refusal saying why not."""
        user = await self.directory.user_by_name(username)
        if user is None or user.delete_at:
            raise UserError(messages.unknown_user(username))
        if not await self.directory.in_team(incident.team_id, user.id):
            raise UserError(messages.user_not_in_team(user.username, incident))
        return user

    async def incident_for(
        self,
        req: Request,
        number: int | None,
        command: str,
        *,
        channel_only: bool = False,
    ) -> Incident:
        """The incident a command is about: by number (team members only; the same reply
        whether it exists elsewhere or not) or the incident of the channel it was posted in.
        Then the access the command table asks for: commands that change the incident or
        quote its channel need the requester in the incident channel."""
        incident: Incident | None
        if number is not None and not channel_only:
            async with self.store.transaction() as tx:
                incident = await tx.get_incident(number)
            if incident is None or not await self.reachable(incident, self.directory.in_team(incident.team_id, req.user_id)):
                raise UserError(messages.not_found(number))
        else:
            async with self.store.transaction() as tx:
                incident = await tx.get_incident_by_channel(req.channel_id)
            if incident is None:
                if channel_only:
                    raise UserError(messages.need_incident_channel_only(self.bot_name, command))
                raise UserError(messages.need_incident_channel(self.bot_name, command))
            if number is not None and number != incident.number:
                raise UserError(messages.need_incident_channel_only(self.bot_name, command))
        req.incident = incident.number
        note_incident(incident.number)
        # The requester is in the team here (found by channel, or checked above).
        if not rules.allowed(command, Access.TEAM):
            in_channel = await self.reachable(incident, self.directory.in_channel(incident.channel_id, req.user_id), "channel")
            level = rules.access(in_team=True, in_channel=in_channel)
            if not rules.allowed(command, level):
                raise UserError(messages.not_a_member(incident, command))
        return incident

    async def reachable(self, incident: Incident, membership: Awaitable[bool], where: str = "team") -> bool:
        """A membership answer about the incident's team or channel; when Mattermost refuses
        the bot the question, the bot was removed from there: a refusal that says so."""
        try:
            return await membership
        except Forbidden:
            log.warning("incident.unreachable", incident=incident.number, removed_from=where)
            text = messages.bot_removed_from_team if where == "team" else messages.bot_removed_from_channel
            raise UserError(text(self.bot_name, incident)) from None

    # --- playbooks -----------------------------------------------------------------------

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
