"""Nothing lost: after a restart or a reconnect the server could not resume, read what was
missed over REST and feed it through the same path as live events.

The bot remembers how far it has seen (the newest server timestamp of any event, kept in
the database). Catch-up asks every channel the bot is in for posts created or updated
since then (minus a safety margin; dedupe keys make re-reading harmless):

- a post addressed to the bot becomes a ``Posted`` event, answered late;
- an edited or deleted post becomes ``PostEdited`` / ``PostDeleted`` (the timeline follows);
- a post whose reactions changed (Mattermost bumps ``update_at``) is reconciled: checklist
  items take the state their ✅ reactions say, 📌 pins are added or taken off the timeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog

from incident_bot.app.core import Core
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.events import Posted, PostDeleted, PostEdited
from incident_bot.chat.models import Channel, Post

log = structlog.get_logger("incident_bot.catchup")

CURSOR_KEY = "last_event_ms"
MARGIN_MS = 60_000  # re-read a minute before the cursor: clocks and in-flight events
FLUSH_SECONDS = 1.0


class Cursor:
    """The newest server timestamp seen, flushed to the database about once a second."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.value: int | None = None
        self._saved: int | None = None

    async def load(self) -> int | None:
        async with self.core.store.transaction() as tx:
            value = await tx.get_state(CURSOR_KEY)
        self.value = self._saved = int(value) if value is not None else None
        return self.value

    def see(self, ms: int) -> None:
        if ms and (self.value is None or ms > self.value):
            self.value = ms

    async def flush(self) -> None:
        if self.value is not None and self.value != self._saved:
            value = self.value
            async with self.core.store.transaction() as tx:
                await tx.set_state(CURSOR_KEY, value)
            self._saved = value

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=FLUSH_SECONDS)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - try again next second
                log.warning("cursor.flush_failed", error=type(exc).__name__)


Feed = Callable[[object, timedelta | None], Awaitable[None]]
Reconcile = Callable[[Post], Awaitable[None]]
Submit = Callable[[str, Callable[[], Awaitable[None]]], bool]


class CatchUp:
    """``feed`` is the live path's entry (event, late_by); ``submit`` queues work in a channel's
    order, so reconciling a post never overtakes its live events."""

    def __init__(self, core: Core, cursor: Cursor, feed: Feed, submit: Submit, reconcile: Reconcile) -> None:
        self.core = core
        self.cursor = cursor
        self.feed = feed
        self.submit = submit
        self._reconcile = reconcile
        self._lock = asyncio.Lock()

    async def reconcile(self, post: Post) -> None:
        async def work() -> None:
            try:
                await self._reconcile(post)
            except Exception as exc:  # noqa: BLE001 - one post must not stop catch-up
                log.warning("catchup.reconcile_failed", post=post.id, error=type(exc).__name__, detail=str(exc)[:200])

        self.submit(post.channel_id, work)

    async def channels(self) -> list[Channel]:
        """Every channel the bot is in: team channels and direct messages."""
        seen: dict[str, Channel] = {}
        for team in await self.core.directory.bot_teams():
            for channel in await self.core.client.get_user_channels(team.id, "me"):
                seen.setdefault(channel.id, channel)
        return list(seen.values())

    async def run(self, reason: str) -> int:
        """Read and feed what was missed since the cursor; returns how many posts were read."""
        async with self._lock:
            since = self.cursor.value
            if since is None:
                log.info("catchup.skipped", reason=reason, why="first start: nothing seen before")
                return 0
            since_ms = max(since - MARGIN_MS, 0)
            now = self.core.now()
            count = 0
            try:
                channels = await self.channels()
            except MattermostError as exc:
                log.warning("catchup.failed", reason=reason, error=type(exc).__name__)
                return 0
            for channel in channels:
                try:
                    posts = await self.core.client.get_posts_since(channel.id, since_ms)
                except MattermostError as exc:
                    log.warning("catchup.channel_failed", channel=channel.id, error=type(exc).__name__)
                    continue
                for post in posts:
                    count += 1
                    await self._replay(channel, post, since_ms, now)
            log.info("catchup.done", reason=reason, channels=len(channels), posts=count,
                     since=since_ms)
            return count

    async def _replay(self, channel: Channel, post: Post, since_ms: int, now) -> None:
        self.cursor.see(post.update_at or post.create_at)
        if post.user_id == self.core.bot_id:
            if post.update_at >= since_ms:
                await self.reconcile(post)  # reactions on the bot's own checklist posts
            return
        if post.delete_at:
            await self.feed(PostDeleted(post=post), None)
            return
        if post.create_at >= since_ms:
            late = now - post.created
            event = Posted(
                post=post,
                channel_type=channel.type,
                channel_name=channel.name,
                channel_display_name=channel.display_name,
                team_id=channel.team_id,
            )
            await self.feed(event, late if late > timedelta(seconds=2) else None)
        if post.edit_at and post.edit_at >= since_ms:
            await self.feed(PostEdited(post=post), None)
        await self.reconcile(post)
