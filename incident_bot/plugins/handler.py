"""The one way in for events: typed event -> dedupe -> ordered per channel -> listeners."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import structlog
from mmpy_bot.event_handler import EventHandler
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.core import Core, Request
from incident_bot.app.ordering import ChannelQueues
from incident_bot.chat.events import Malformed, PostDeleted, PostEdited, Posted, ReactionAdded, ReactionRemoved
from incident_bot.plugins.framework import IncidentMessage, IncidentPluginManager, PostChangeEvent, ReactionEvent

log = structlog.get_logger("incident_bot.events")


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
        name = re.escape(driver.username)
        self._mention = re.compile(rf"^\s*@{name}\b[:,]?\s*", re.IGNORECASE)

    def start(self) -> None:  # mmpy_bot's blocking entry point is not used
        raise RuntimeError("IncidentEventHandler is driven by incident_bot.app.bot")

    # --- the way in ------------------------------------------------------------------

    async def handle(self, event: Any, late_by: timedelta | None = None) -> None:
        """Called by the stream (and by catch-up) for every event, in arrival order; returns quickly."""
        if isinstance(event, Malformed):
            log.warning("event.malformed", reason=event.reason, frame=event.raw[:200])
            return
        if isinstance(event, Posted):
            self.queues.submit(event.post.channel_id, lambda: self._handle_posted(event, late_by))
        elif isinstance(event, (ReactionAdded, ReactionRemoved)):
            channel = event.channel_id or f"post:{event.reaction.post_id}"
            self.queues.submit(channel, lambda: self._handle_reaction(event))
        elif isinstance(event, (PostEdited, PostDeleted)):
            self.queues.submit(event.post.channel_id, lambda: self._handle_post_change(event))

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

    async def _handle_posted(self, event: Posted, late_by: timedelta | None) -> None:
        text = self.command_text(event)
        if text is None:
            return
        key = event.dedupe_key
        state = await self._claim(key)
        if state == "unanswered":
            await self._answer_late(event, key, text, late_by)
            return
        if state != "new":
            log.info("event.duplicate", key=key, channel=event.post.channel_id, user=event.post.user_id)
            return
        try:
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
                return
            matched = [
                (function, [group for group in match.groups() if group])
                for matcher, functions in self.plugin_manager.message_listeners.items()
                if (match := matcher.search(text))
                for function in functions
            ]
            for function, groups in matched:
                await function.plugin.call_function(function, message, groups=groups)
        finally:
            self._inflight.discard(key)

    async def _answer_late(self, event: Posted, key: str, text: str, late_by: timedelta | None) -> None:
        """A command applied before a crash but never answered: find its reply or send one."""
        self._inflight.add(key)
        try:
            req = Request(
                key=key, post=event.post, user_id=event.post.user_id, channel_id=event.post.channel_id,
                channel_type=event.channel_type, team_id=event.team_id, late_by=late_by,
            )
            outcome = await self.core.recover_reply(req, text)
            log.info("command.recovered", key=key, channel=req.channel_id, user=req.user_id, outcome=outcome)
        except Exception as exc:  # noqa: BLE001 - try again at the next catch-up
            log.warning("command.recover_failed", key=key, error=type(exc).__name__)
        finally:
            self._inflight.discard(key)

    # --- reactions -------------------------------------------------------------------

    async def _handle_reaction(self, event: ReactionAdded | ReactionRemoved) -> None:
        reaction = event.reaction
        if reaction.user_id == self.core.bot_id:
            return
        added = isinstance(event, ReactionAdded)
        functions = self.plugin_manager.reactions_for(reaction.emoji_name, added)  # type: ignore[attr-defined]
        if not functions:
            return
        key = event.dedupe_key
        if await self._claim(key) != "new":
            log.info("event.duplicate", key=key, user=reaction.user_id)
            return
        try:
            wrapped = ReactionEvent(event=event, key=key, added=added)
            for function in functions:
                await function.plugin.call_function(function, wrapped)
        finally:
            self._inflight.discard(key)

    # --- edits and deletions -----------------------------------------------------------

    async def _handle_post_change(self, event: PostEdited | PostDeleted) -> None:
        listeners = self.plugin_manager.post_change_listeners  # type: ignore[attr-defined]
        if not listeners or event.post.user_id == self.core.bot_id:
            return
        wrapped = PostChangeEvent(event=event, key=event.dedupe_key)
        for function in listeners:
            await function.plugin.call_function(function, wrapped)
