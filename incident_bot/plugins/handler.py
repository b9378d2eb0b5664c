"""The one way in for events: typed event -> dedupe -> ordered per channel -> listeners."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

import structlog
from mmpy_bot.event_handler import EventHandler
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.core import Core, Request
from incident_bot.app.ordering import ChannelQueues
from incident_bot.chat.events import Malformed, PostDeleted, PostEdited, Posted, ReactionAdded, ReactionRemoved
from incident_bot.plugins.framework import IncidentMessage, IncidentPluginManager, PostChangeEvent, ReactionEvent

log = structlog.get_logger("incident_bot.events")


class Tracker(Protocol):
    """Where the handler says which events are still unfinished (the catch-up cursor)."""

    def hold(self, key: str, ms: int) -> None: ...
    def release(self, key: str) -> None: ...


MAX_ATTEMPTS = 5  # a command that gets no answer is tried again at most this often


class BotDriver:
    """What mmpy_bot's Plugin and MessageFunction read from ``plugin.driver``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.user_id = core.bot_id
        self.username = core.directory.bot.username
        self.client = core.client
        self.threadpool = None  # every listener of ours is a coroutine


class IncidentEventHandler(EventHandler):
    """mmpy_bot's EventHandler fed by our WebSocket stream instead of its synchronous driver."""

    def __init__(self, driver: BotDriver, settings: MMSettings, plugin_manager: IncidentPluginManager, core: Core) -> None:
        super().__init__(driver, settings=settings, plugin_manager=plugin_manager)  # type: ignore[arg-type]
        self.core = core
        self.queues = ChannelQueues()
        self._inflight: set[str] = set()
        self.tracker: Tracker | None = None
        # Called with (key, ms) when an event could not be applied (Mattermost failing): the
        # bot reads it again later; until then it holds the cursor at ``ms``.
        self.on_unfinished: Callable[[str, int], None] | None = None
        # Finishes a `start` a crash left half set up and answers it (Incidents.resume_command).
        self.resume_start: Callable[[Request], Awaitable[bool]] | None = None
        self._attempts: dict[str, int] = {}
        name = re.escape(driver.username)
        self._mention = re.compile(rf"^\s*@{name}\b[:,]?\s*", re.IGNORECASE)

    def start(self) -> None:  # mmpy_bot's blocking entry point is not used
        raise RuntimeError("IncidentEventHandler is driven by incident_bot.app.bot")

    # --- the way in ------------------------------------------------------------------

    async def handle(self, event: Any, late_by: timedelta | None = None, *, replayed: bool = False) -> None:
        """Called by the stream (and by catch-up, ``replayed``) for every event, in arrival
        order; returns quickly. The event's work is queued behind its channel's."""
        if isinstance(event, Malformed):
            log.warning("event.malformed", reason=event.reason, frame=event.raw[:200])
            return
        if isinstance(event, Posted):
            key, channel, ms = event.dedupe_key, event.post.channel_id, event.post.create_at
            work = lambda: self._handle_posted(event, late_by, replayed)  # noqa: E731
        elif isinstance(event, (ReactionAdded, ReactionRemoved)):
            r = event.reaction
            key, channel = event.dedupe_key, event.channel_id or f"post:{r.post_id}"
            ms = max(r.update_at, r.create_at, r.delete_at)
            work = lambda: self._handle_reaction(event)  # noqa: E731
        elif isinstance(event, (PostEdited, PostDeleted)):
            key, channel = event.dedupe_key, event.post.channel_id
            ms = max(event.post.update_at, event.post.create_at, event.post.delete_at)
            work = lambda: self._handle_post_change(event)  # noqa: E731
        else:
            return
        self._submit(channel, key, ms, work)

    def _submit(self, channel: str, key: str, ms: int, work: Callable[[], Awaitable[bool | None]]) -> None:
        """Queue ``work``; the tracker holds ``key`` until it has run (and, when it returns
        False, until it is tried again)."""
        tracker = self.tracker
        if tracker is not None:
            tracker.hold(key, ms)

        async def tracked() -> None:
            finished = await work() is not False
            if not finished and self.on_unfinished is not None:
                self.on_unfinished(key, ms)
            if tracker is not None:
                tracker.release(key)

        self.queues.submit(channel, tracked)  # refused while stopping: the hold stays, read again next start

    async def _claim(self, key: str) -> str:
        """``new`` (now ours to handle), ``busy`` (being handled), ``done`` (handled and, for a
        command, answered) or ``unanswered`` (its effect committed, its reply never sent:
        the bot stopped in between)."""
        if key in self._inflight:
            return "busy"
        async with self.core.store.transaction() as tx:
            replied = await tx.get_reply(key) is not None
            seen = replied or await tx.event_seen(key)
        if replied:
            return "done"
        if seen:
            return "unanswered"
        self._inflight.add(key)
        return "new"

    # --- posts -----------------------------------------------------------------------

    def command_text(self, event: Posted) -> str | None:
        """The command in a post, or None when the post is not addressed to the bot."""
        post = event.post
        if post.user_id == self.core.bot_id or post.type:  # our own posts, system messages
            return None
        match = self._mention.match(post.message)
        if match:
            return post.message[match.end():].strip()
        if event.channel_type == "D":
            return post.message.strip()
        return None

    async def _handle_posted(self, event: Posted, late_by: timedelta | None, replayed: bool = False) -> bool:
        """False when the command got no answer and its effect was not applied: try again later."""
        text = self.command_text(event)
        if text is None:
            return True
        key = event.dedupe_key
        state = await self._claim(key)
        if state == "unanswered":
            return await self._answer_late(event, key, text, late_by)
        if state != "new":
            log.info("event.duplicate", key=key, channel=event.post.channel_id, user=event.post.user_id)
            return True
        try:
            if replayed and await self._answered_before(event, key):
                return True
            body = {
                "event": "posted",
                "data": {
                    "post": event.post.model_dump(),
                    "channel_type": event.channel_type,
                    "channel_name": event.channel_name,
                    "sender_name": event.sender_name,
                    "team_id": event.team_id,
                    # A DM or a leading mention addresses the bot, whatever the server listed.
                    "mentions": [*event.mentions, self.core.bot_id],
                },
                "seq": event.seq,
            }
            message = IncidentMessage(body, event, key, text)
            message.late_by = late_by
            if self._should_ignore(message):
                return True
            matched = [
                (function, [group for group in match.groups() if group])
                for matcher, functions in self.plugin_manager.message_listeners.items()
                if (match := matcher.search(text))
                for function in functions
            ]
            for function, groups in matched:
                await function.plugin.call_function(function, message, groups=groups)
            return await self._finished(key, event)
        finally:
            self._inflight.discard(key)

    async def _answered_before(self, event: Posted, key: str) -> bool:
        """A command read again by catch-up that the bot never noted: did a reply go out
        before the bot stopped? Then note it and leave the command alone."""
        req = self._request(event, key, None)
        try:
            reply = await self.core.find_reply(req)
        except Exception as exc:  # noqa: BLE001 - cannot tell: answer it (at worst a second time)
            log.warning("command.find_reply_failed", key=key, error=type(exc).__name__)
            return False
        if reply is None:
            return False
        async with self.core.store.transaction() as tx:
            await tx.record_reply(key, reply.id, self.core.now())
            await tx.record_event(key, self.core.now())
        log.info("command.already_answered", key=key, reply=reply.id)
        return True

    async def _finished(self, key: str, event: Posted) -> bool:
        """After the listeners ran: answered (or applied) — or to be tried again."""
        async with self.core.store.transaction() as tx:
            done = await tx.get_reply(key) is not None or await tx.event_seen(key)
        if done:
            self._attempts.pop(key, None)
            return True
        log.warning("command.unanswered", key=key, channel=event.post.channel_id, attempt=self._attempts.get(key, 0) + 1)
        return not self._try_again(key, event)

    def _try_again(self, key: str, event: Posted) -> bool:
        """Count a failed attempt; False once a command has failed MAX_ATTEMPTS times."""
        attempts = self._attempts.get(key, 0) + 1
        if attempts >= MAX_ATTEMPTS:
            self._attempts.pop(key, None)
            log.error("command.abandoned", key=key, channel=event.post.channel_id, attempts=attempts)
            return False
        self._attempts[key] = attempts
        return True

    def _request(self, event: Posted, key: str, late_by: timedelta | None) -> Request:
        return Request(
            key=key, post=event.post, user_id=event.post.user_id, channel_id=event.post.channel_id,
            channel_type=event.channel_type, team_id=event.team_id, late_by=late_by,
        )

    async def _answer_late(self, event: Posted, key: str, text: str, late_by: timedelta | None) -> bool:
        """A command applied before a crash but never answered: finish it, find its reply or send one."""
        self._inflight.add(key)
        try:
            req = self._request(event, key, late_by)
            if self.resume_start is not None and await self.resume_start(req):
                outcome = "resumed"
            else:
                outcome = await self.core.recover_reply(req, text)
            log.info("command.recovered", key=key, channel=req.channel_id, user=req.user_id, outcome=outcome)
            return True
        except Exception as exc:  # noqa: BLE001 - try again at the next catch-up
            log.warning("command.recover_failed", key=key, error=type(exc).__name__, detail=str(exc)[:200])
            return not self._try_again(key, event)
        finally:
            self._inflight.discard(key)

    # --- reactions -------------------------------------------------------------------

    async def _handle_reaction(self, event: ReactionAdded | ReactionRemoved) -> bool:
        """False when a tick on a checklist item could not be applied: reconcile it later."""
        reaction = event.reaction
        if reaction.user_id == self.core.bot_id:
            return True
        added = isinstance(event, ReactionAdded)
        functions = self.plugin_manager.reactions_for(reaction.emoji_name, added)  # type: ignore[attr-defined]
        if not functions:
            return True
        key = event.dedupe_key
        if await self._claim(key) != "new":
            log.info("event.duplicate", key=key, user=reaction.user_id)
            return True
        try:
            wrapped = ReactionEvent(event=event, key=key, added=added)
            for function in functions:
                await function.plugin.call_function(function, wrapped)
        finally:
            self._inflight.discard(key)
        if reaction.emoji_name not in self.core.settings.check_emojis:
            return True
        # Every outcome on a live checklist item records the key; none means it failed.
        async with self.core.store.transaction() as tx:
            if await tx.event_seen(key):
                return True
            item = await tx.get_checklist_item_by_post(reaction.post_id)
        if item is None or item.removed:
            return True
        log.warning("reaction.unfinished", key=key, post=reaction.post_id)
        return False

    # --- edits and deletions -----------------------------------------------------------

    async def _handle_post_change(self, event: PostEdited | PostDeleted) -> None:
        listeners = self.plugin_manager.post_change_listeners  # type: ignore[attr-defined]
        if not listeners or event.post.user_id == self.core.bot_id:
            return None
        wrapped = PostChangeEvent(event=event, key=event.dedupe_key)
        for function in listeners:
            await function.plugin.call_function(function, wrapped)
