"""The one way in for events: typed event -> dedupe and claim -> per-channel order ->
listeners, and what happens when they could not finish (answer late, try again, give up)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

import structlog

from incident_bot.app.backlog import Backlog
from incident_bot.app.core import Core
from incident_bot.app.cursor import Cursor
from incident_bot.app.observe import begin_trace, current_trace
from incident_bot.app.ordering import ChannelQueues
from incident_bot.app.request import Applied, Request
from incident_bot.chat.events import Event, Malformed, PostDeleted, Posted, PostEdited, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Post
from incident_bot.domain.commands import COMMANDS
from incident_bot.store.base import Store, StoreUnavailable

log = structlog.get_logger("incident_bot.events")

MAX_ATTEMPTS = 5  # a command that gets no answer is tried again at most this often
# A read-only command (help, list, info…) that arrives live within FRESH_MS of being posted is
# answered without reading the database first (see Pipeline._claim): within Mattermost's 30 s
# pending_post_id window, 10 s left for clocks apart. RECENT_READS of them are remembered.
FRESH_MS = 20_000
RECENT_READS = 10_000
SERVER_EPOCH_MS = 1_420_070_400_000  # 2015-01-01, before Mattermost: an earlier event time is garbage, not old


class Claim(StrEnum):
    NEW = "new"  # now ours to handle
    BUSY = "busy"  # being handled
    DONE = "done"  # handled and, for a command, answered
    UNANSWERED = "unanswered"  # its effect committed, its reply never sent: the bot stopped in between


class ClaimReads:
    """The claims' reads of the database, together: what is asked while a read waits for the
    store goes along with it, so a burst (catch-up's thousand commands at once) costs a trip to
    the database per batch instead of one per command. Each claim still reads the database
    after it was asked: a batch is read only once the store is free."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, list[asyncio.Future[tuple[bool, bool]]]] | None = None
        self._reading: set[asyncio.Task[None]] = set()

    async def state(self, key: str) -> tuple[bool, bool]:
        """(a reply is recorded, the event is recorded) for ``key``, as command_state reads it."""
        future: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()
        if self._waiting is None:
            self._waiting = {}
            task = asyncio.create_task(self._send())
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)
        self._waiting.setdefault(key, []).append(future)
        return await future

    async def _send(self) -> None:
        waiting: dict[str, list[asyncio.Future[tuple[bool, bool]]]] = {}
        try:
            async with self._store.read() as tx:
                waiting, self._waiting = self._waiting or {}, None  # the batch closes once the store is ours
                states = await tx.command_states(list(waiting))
        except BaseException as exc:
            if not waiting:
                waiting, self._waiting = self._waiting or {}, None
            for futures in waiting.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:  # cancelled (the bot is stopping): so are the claims
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():
                    future.set_result(states[key])


class Listeners(Protocol):
    """What the plugin layer offers: run the listeners an event matches."""

    async def command(self, req: Request, text: str, event: Posted) -> None: ...

    def wants_reaction(self, emoji: str, added: bool) -> bool: ...

    async def reaction(self, key: str, event: ReactionAdded | ReactionRemoved) -> None: ...

    async def post_change(self, key: str, event: PostEdited | PostDeleted) -> None: ...


ResumeStart = Callable[[Request], Awaitable[bool]]


class Pipeline:
    """Events of one channel are applied one after another in arrival order (channels in
    parallel); each is claimed by its dedupe key first, so a redelivered event does nothing.
    Every event holds the cursor until its work is done (or handed to the backlog)."""

    def __init__(
        self,
        core: Core,
        listeners: Listeners,
        cursor: Cursor,
        backlog: Backlog,
        resume_start: ResumeStart,
        floor_ms: Callable[[], int] | None = None,
    ) -> None:
        self.core = core
        self.listeners = listeners
        self.cursor = cursor
        self.backlog = backlog
        self.resume_start = resume_start  # finishes a `start` a crash left half set up, and answers it
        self.floor_ms = floor_ms  # posts created before this are not new: their keys may be pruned (app/retention.py)
        self.queues = ChannelQueues()
        self._inflight: set[str] = set()
        self._recent_reads: dict[str, None] = {}  # fresh read-only commands answered, oldest first
        self._claim_reads = ClaimReads(core.store)
        self._attempts: dict[str, int] = {}
        name = re.escape(core.directory.bot.username)
        self._mention = re.compile(rf"^\s*@{name}\b[:,]?\s*", re.IGNORECASE)

    # --- the way in ------------------------------------------------------------------

    def handle(
        self,
        event: Event,
        late_by: timedelta | None = None,
        *,
        replayed: bool = False,
        replies: Mapping[str, Post] | None = None,
    ) -> None:
        """Called by the stream (and by catch-up, ``replayed``) for every event, in arrival
        order; returns at once. The event's work is queued behind its channel's.

        ``replies``: catch-up read every post of the channel since before this one, so it
        knows the bot's replies there (by command post id); a command absent from it was
        never answered, and is not looked up again over REST."""
        work: Callable[[], Awaitable[bool]]
        if isinstance(event, Malformed):
            log.warning("event.malformed", reason=event.reason, frame=event.raw[:200])
            return
        # What no listener takes (the bot's own posts, edits and reactions, posts not addressed
        # to it, emoji nobody listens to) is dropped here, before a task and a queue slot: the
        # bot's own reply comes back as an event for every command.
        if isinstance(event, Posted):
            text = self.command_text(event)
            if text is None:
                return
            key, channel, ms = event.dedupe_key, event.post.channel_id, event.post.create_at
            if self._reads_only(text):
                # Its own lane: it starts at once instead of waiting behind the channel's
                # state changes, which keep their order among themselves.
                channel = f"{channel}:read:{key}"
            posted = event

            def work() -> Awaitable[bool]:
                return self._posted(posted, late_by, replayed, replies)
        elif isinstance(event, (ReactionAdded, ReactionRemoved)):
            r = event.reaction
            if r.user_id == self.core.bot_id or not self.listeners.wants_reaction(r.emoji_name, isinstance(event, ReactionAdded)):
                return
            key, channel = event.dedupe_key, event.channel_id or f"post:{r.post_id}"
            ms = max(r.update_at, r.create_at, r.delete_at)
            reacted = event

            def work() -> Awaitable[bool]:
                return self._reaction(reacted)
        elif isinstance(event, (PostEdited, PostDeleted)):
            if isinstance(event, PostEdited) and event.post.user_id == self.core.bot_id:
                return
            key, channel = event.dedupe_key, event.post.channel_id
            ms = max(event.post.update_at, event.post.create_at, event.post.delete_at)
            changed = event

            def work() -> Awaitable[bool]:
                return self._post_change(changed)
        else:
            return
        if self.floor_ms is not None and SERVER_EPOCH_MS <= ms < self.floor_ms():
            # Older than catch-up ever reads back: only a stray redelivery brings it, and its
            # dedupe key may have been pruned, so it must not be applied (again). A time before
            # SERVER_EPOCH_MS is no server time at all: handled as before, held where we are.
            log.info("event.too_old", key=key, channel=channel, at_ms=ms)
            return
        self.submit(channel, key, ms, work)

    def submit(self, channel: str, key: str, ms: int, work: Callable[[], Awaitable[bool]]) -> None:
        """Queue ``work`` behind the channel's; the cursor is held at ``ms`` until it has run
        (and, when it returns False, the backlog holds it until it is tried again)."""
        self.cursor.hold(key, ms)

        async def tracked() -> None:
            begin_trace()  # this task's: duration and incident for the event's log line
            if not await work():
                self.backlog.unfinished(key, ms)
            self.cursor.release(key)

        self.queues.submit(channel, tracked)  # refused while stopping: the hold stays, read again next start

    def direct(self, req: Request, run: Callable[[], Awaitable[None]], *, reads_only: bool = False) -> asyncio.Future[bool]:
        """A command that came without a post (the slash command, a dialog): claimed by
        ``req.key`` as a posted one is, and ``run`` (the listeners, or a use case through the
        Runner) in the channel's lane (its own lane when it ``reads_only``). The future is
        True once it ran, False when it was a duplicate (or the bot is stopping)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane = f"{req.channel_id}:read:{req.key}" if reads_only else req.channel_id

        async def work() -> None:
            begin_trace()
            try:
                if await self._claim(req.key) != Claim.NEW:
                    log.info("event.duplicate", key=req.key, channel=req.channel_id, user=req.user_id)
                    done.set_result(False)
                    return
                try:
                    await run()
                finally:
                    self._inflight.discard(req.key)
                done.set_result(True)
            except BaseException:
                if not done.done():  # it ran (and failed: the queue's guard logs it)
                    done.set_result(True)
                raise

        if not self.queues.submit(lane, work):
            done.set_result(False)
        return done

    @staticmethod
    def _reads_only(text: str) -> bool:
        """A known command that changes nothing (``changes_state`` False in the command table)."""
        if not text:
            return False
        spec = COMMANDS.get(text.split(None, 1)[0].lower())
        return spec is not None and not spec.changes_state

    async def _claim(self, key: str, *, fresh_read: bool = False) -> Claim:
        """NEW: the key is in flight, the caller discards it when done; otherwise it is not.

        ``fresh_read``: a read-only command that came live, just posted. It changes nothing,
        so a second answer is all a duplicate could cause, and none can come: a duplicate in
        this process finds it in flight or among the recent reads; the reply's
        ``pending_post_id`` makes Mattermost answer any other repeat within 30 s with the
        same post (``deduplicateCreatePost`` in the server's channels/app/post.go); an older
        duplicate (catch-up, a retry, a late event) reads the database, where the reply is
        recorded. So it is not read here: a trip to SQLite's thread is what a ``help`` cost
        beyond stock mmpy_bot's (py-spy: aiosqlite's thread 12.7% of the bot's CPU)."""
        if key in self._inflight:
            return Claim.BUSY
        if fresh_read:
            if key in self._recent_reads:
                return Claim.DONE
            self._inflight.add(key)
            return Claim.NEW
        # Taken before the first await: a duplicate in another lane (read-only commands do
        # not queue behind each other) sees it and stands back.
        self._inflight.add(key)
        try:
            replied, seen = await self._claim_reads.state(key)
        except BaseException:
            self._inflight.discard(key)
            raise
        if replied or seen:
            self._inflight.discard(key)
            return Claim.DONE if replied else Claim.UNANSWERED
        return Claim.NEW

    # --- posts -----------------------------------------------------------------------

    def command_text(self, event: Posted) -> str | None:
        """The command in a post, or None when the post is not addressed to the bot."""
        post = event.post
        if post.user_id == self.core.bot_id or post.type:  # our own posts, system messages
            return None
        match = self._mention.match(post.message)
        if match:
            return post.message[match.end() :].strip()
        if event.channel_type == "D":
            return post.message.strip()
        return None

    async def _posted(
        self, event: Posted, late_by: timedelta | None, replayed: bool, replies: Mapping[str, Post] | None = None
    ) -> bool:
        """False when the command got no answer and its effect was not applied: try again later."""
        text = self.command_text(event)
        if text is None:  # handle() passes only commands
            return True
        req = Request.of(event.post, event.channel_type, event.team_id, late_by)
        fresh_read = not replayed and late_by is None and self._reads_only(text) and self._fresh(event.post.create_at)
        try:
            claim = await self._claim(req.key, fresh_read=fresh_read)
        except StoreUnavailable as exc:
            # Nothing can be read or recorded: refuse it. The reply names the command, so a
            # catch-up once the database is back finds it answered and leaves it alone.
            await self.core.reply(req, self.core.store_down(exc, key=req.key))
            return True
        if claim == Claim.UNANSWERED:
            return await self._answer_late(req, text)
        if claim != Claim.NEW:
            log.info("event.duplicate", key=req.key, channel=req.channel_id, user=req.user_id)
            return True
        try:
            if replayed and await self._answered_before(req, replies):
                return True
            await self.listeners.command(req, text, event)
            if fresh_read and req.replied:
                self._recent_read(req.key)
            if req.replied and not req.noted:
                return True  # answered, but the database could not record it: the reply names the command
            try:
                return await self._finished(req)
            except StoreUnavailable:
                return req.replied  # refused (the runner said why); nothing could be recorded
        finally:
            self._inflight.discard(req.key)

    def _fresh(self, create_at: int) -> bool:
        """Posted within FRESH_MS of now (either way: clocks apart)."""
        age = self.core.now().timestamp() * 1000 - create_at
        return -FRESH_MS < age < FRESH_MS

    def _recent_read(self, key: str) -> None:
        self._recent_reads[key] = None
        if len(self._recent_reads) > RECENT_READS:
            del self._recent_reads[next(iter(self._recent_reads))]

    async def _answered_before(self, req: Request, replies: Mapping[str, Post] | None = None) -> bool:
        """A command read again by catch-up that the bot never noted: did a reply go out
        before the bot stopped? Then note it and leave the command alone."""
        if replies is not None:
            reply = replies.get(req.post.id)  # what find_reply would find, read with the command
        else:
            try:
                reply = await self.core.find_reply(req)
            except Exception as exc:  # noqa: BLE001 - cannot tell: answer it (at worst a second time)
                log.warning("command.find_reply_failed", key=req.key, error=type(exc).__name__)
                return False
        if reply is None:
            return False
        await self.core.note_reply(req, reply, applied=True)
        log.info("command.already_answered", key=req.key, reply=reply.id)
        return True

    async def _finished(self, req: Request) -> bool:
        """After the listeners ran: answered (or applied), or to be tried again."""
        done = req.noted  # the reply was recorded just now: no need to read it back
        if not done:
            async with self.core.store.read() as tx:
                done = any(await tx.command_state(req.key))
        if done:
            self._attempts.pop(req.key, None)
            return True
        log.warning("command.unanswered", key=req.key, channel=req.channel_id, attempt=self._attempts.get(req.key, 0) + 1)
        return not self._try_again(req)

    def _try_again(self, req: Request) -> bool:
        """Count a failed attempt; False once a command has failed MAX_ATTEMPTS times."""
        attempts = self._attempts.get(req.key, 0) + 1
        if attempts >= MAX_ATTEMPTS:
            self._attempts.pop(req.key, None)
            log.error("command.abandoned", key=req.key, channel=req.channel_id, attempts=attempts)
            return False
        self._attempts[req.key] = attempts
        return True

    async def _answer_late(self, req: Request, text: str) -> bool:
        """A command applied before a crash but never answered: finish it, find its reply or send one."""
        self._inflight.add(req.key)
        try:
            if await self.resume_start(req):
                outcome = Applied.RESUMED
            else:
                outcome = await self.core.recover_reply(req, text)
            log.info(
                "command.recovered",
                key=req.key,
                channel=req.channel_id,
                user=req.user_id,
                outcome=outcome,
                **current_trace().fields(),
            )
            return True
        except Exception as exc:  # noqa: BLE001 - try again at the next catch-up
            log.warning("command.recover_failed", key=req.key, error=type(exc).__name__, detail=str(exc)[:200])
            return not self._try_again(req)
        finally:
            self._inflight.discard(req.key)

    # --- reactions -------------------------------------------------------------------

    async def _reaction(self, event: ReactionAdded | ReactionRemoved) -> bool:
        """False when a tick on a checklist item could not be applied: reconcile it later."""
        reaction = event.reaction
        added = isinstance(event, ReactionAdded)  # handle() passes only reactions a listener wants
        key = event.dedupe_key
        try:
            claim = await self._claim(key)
        except StoreUnavailable as exc:
            log.warning("reaction.unrecorded", key=key, error=str(exc)[:300])
            return False  # reconciled once the database can be written again
        if claim != Claim.NEW:
            log.info("event.duplicate", key=key, user=reaction.user_id)
            return True
        try:
            await self.listeners.reaction(key, event)
        finally:
            self._inflight.discard(key)
        self.core.observer.reaction_handled("added" if added else "removed")
        if reaction.emoji_name not in self.core.settings.check_emojis:
            return True
        # Every outcome on a live checklist item records the key; none means it failed.
        async with self.core.store.read() as tx:
            if await tx.event_seen(key):
                return True
            item = await tx.get_checklist_item_by_post(reaction.post_id)
        if item is None or item.removed:
            return True
        log.warning("reaction.unfinished", key=key, post=reaction.post_id)
        return False

    # --- edits and deletions -----------------------------------------------------------

    async def _post_change(self, event: PostEdited | PostDeleted) -> bool:
        # handle() drops the bot's own edits (its own doing); its posts deleted by someone else come here.
        await self.listeners.post_change(event.dedupe_key, event)
        return True

    async def drain(self, timeout: float) -> bool:
        """Stop taking events and wait (bounded) for those in flight; True when all finished."""
        return await self.queues.drain(timeout)
