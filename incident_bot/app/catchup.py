"""Nothing lost: after a restart, a reconnect the server could not resume, or a gap in the
event sequence, read what was missed over REST and feed it through the same path as live
events.

The bot remembers how far it has seen (kept in the database). That point never passes an
event still being handled: every event holds the cursor at its time until its work is done,
so a crash at any moment leaves a cursor from which re-reading finds everything not yet
applied. Catch-up asks every channel the bot is in for posts created or updated since then
(minus a safety margin; dedupe keys make re-reading harmless):

- a post addressed to the bot becomes a ``Posted`` event, answered late;
- an edited or deleted post becomes ``PostEdited`` / ``PostDeleted`` (the timeline follows);
- a post whose reactions changed (Mattermost bumps ``update_at``) is reconciled: checklist
  items take the state their ✅ reactions say, 📌 pins are added or taken off the timeline.

Within a channel the work is fed in the order it happened (a reaction's time is its post's
``update_at``), and live events arriving meanwhile wait until catch-up has fed its part, so
a command made while the bot was away never overtakes, or is overtaken by, a later one.
"""

from __future__ import annotations

import asyncio
import time
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
LATE_AFTER = timedelta(seconds=2)  # older than this when handled: the reply says it is late
PAGE = 1000  # the most posts Mattermost answers to one ?since= request
FUTURE_LIMIT_MS = 10 * 60_000  # an event time this far ahead of our clock is not believed


def wall_ms() -> int:
    """Real time in milliseconds (never the test clock skew): server timestamps are real."""
    return int(time.time() * 1000)


class Cursor:
    """How far the bot has seen, and the point from which nothing unfinished is lost.

    ``see(ms)`` records the newest server timestamp seen. ``hold(key, ms)`` marks work not yet
    done (an event received or read but not applied); ``release(key)`` when it is. What is
    saved (about once a second, and at a clean stop) is ``safe``: the oldest held time, or
    the newest seen when nothing is held.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.value: int | None = None
        self._saved: int | None = None
        self._holds: dict[str, tuple[int, int]] = {}  # key -> (time, how many holds)

    async def load(self) -> int | None:
        async with self.core.store.transaction() as tx:
            value = await tx.get_state(CURSOR_KEY)
        self.value = self._saved = int(value) if value is not None else None
        return self.value

    @staticmethod
    def _believable(ms: int) -> bool:
        """A server time, not garbage: a broken event must not move the cursor years ahead."""
        return 0 < ms <= wall_ms() + FUTURE_LIMIT_MS

    def see(self, ms: int) -> None:
        if self._believable(ms) and (self.value is None or ms > self.value):
            self.value = ms

    def hold(self, key: str, ms: int) -> None:
        """Keep the saved cursor at or before ``ms`` until ``release(key)``. Holds of one key
        count (each hold needs its release); the earliest time wins."""
        if not self._believable(ms) or (self.value is not None and ms < self.value - 7 * 86_400_000):
            ms = self.value or wall_ms()  # no usable time: hold where we are
        held = self._holds.get(key)
        self._holds[key] = (min(ms, held[0]), held[1] + 1) if held else (ms, 1)

    def release(self, key: str) -> None:
        held = self._holds.get(key)
        if held is None:
            return
        if held[1] <= 1:
            del self._holds[key]
        else:
            self._holds[key] = (held[0], held[1] - 1)

    def held(self, key: str) -> bool:
        return key in self._holds

    @property
    def safe(self) -> int | None:
        if self._holds:
            oldest = min(ms for ms, _ in self._holds.values())
            return oldest - 1 if self.value is None else min(oldest - 1, self.value)
        return self.value

    async def flush(self) -> None:
        value = self.safe
        if value is not None and value != self._saved:
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


Feed = Callable[..., Awaitable[None]]  # feed(event, late_by, replayed=True)
Reconcile = Callable[[Post], Awaitable[None]]
Submit = Callable[[str, Callable[[], Awaitable[None]]], bool]


class CatchUp:
    """``feed`` is the live path's entry (event, late_by, replayed=True); ``submit`` queues work
    in a channel's order, so reconciling a post never overtakes its live events."""

    def __init__(self, core: Core, cursor: Cursor, feed: Feed, submit: Submit, reconcile: Reconcile) -> None:
        self.core = core
        self.cursor = cursor
        self.feed = feed
        self.submit = submit
        self._reconcile = reconcile
        self._lock = asyncio.Lock()
        self.on_unfinished: Callable[[str, int], None] | None = None  # (key, ms): Mattermost failed, try later

    async def reconcile(self, post: Post) -> None:
        key = f"reconcile:{post.id}:{post.update_at}"
        self.cursor.hold(key, post.update_at or post.create_at)

        async def work() -> None:
            try:
                await self._reconcile(post)
            except Exception as exc:  # noqa: BLE001 - one post must not stop catch-up
                log.warning("catchup.reconcile_failed", post=post.id, error=type(exc).__name__, detail=str(exc)[:200])
                if isinstance(exc, MattermostError) and self.on_unfinished is not None:
                    self.on_unfinished(key, post.update_at or post.create_at)  # read again once it answers
            self.cursor.release(key)

        self.submit(post.channel_id, work)

    async def channels(self) -> list[Channel]:
        """Every channel the bot is in: team channels and direct messages."""
        seen: dict[str, Channel] = {}
        for team in await self.core.directory.bot_teams():
            for channel in await self.core.client.get_user_channels(team.id, "me"):
                seen.setdefault(channel.id, channel)
        return list(seen.values())

    async def run(self, reason: str, since: int | None = None) -> bool:
        """Read and feed what was missed since ``since`` (default: the cursor's safe point).

        True when every channel was read; False when Mattermost failed (try again later)."""
        async with self._lock:
            if since is None:
                since = self.cursor.safe
            if since is None:
                log.info("catchup.skipped", reason=reason, why="first start: nothing seen before")
                return True
            since_ms = max(since - MARGIN_MS, 1)
            hold = f"catchup:{reason}:{id(asyncio.current_task())}"
            self.cursor.hold(hold, since)  # nothing after `since` is safe until it is fed
            try:
                return await self._run(reason, since_ms)
            finally:
                self.cursor.release(hold)

    async def _run(self, reason: str, since_ms: int) -> bool:
        now = self.core.now()
        count = 0
        try:
            channels = await self.channels()
        except (MattermostError, ValueError) as exc:
            log.warning("catchup.failed", reason=reason, error=type(exc).__name__)
            return False
        complete = True
        for channel in channels:
            try:
                posts = await self._posts_since(channel.id, since_ms)
            except (MattermostError, ValueError) as exc:
                log.warning("catchup.channel_failed", channel=channel.id, error=type(exc).__name__)
                complete = False
                continue
            work: list[tuple[int, int, Post]] = []
            for post in posts:
                self.cursor.see(max(post.update_at, post.create_at))
                work.extend(self._work_for(post, since_ms))
            work.sort(key=lambda w: (w[0], w[1], w[2].id))
            for _, kind, post in work:
                count += 1
                await self._replay(channel, kind, post, now)
        log.info("catchup.done", reason=reason, channels=len(channels), posts=count, since=since_ms, complete=complete)
        return complete

    async def _posts_since(self, channel_id: str, since_ms: int) -> list[Post]:
        """Every post changed since ``since_ms``: the server answers at most PAGE per call,
        oldest changes first, so ask again from the newest change seen until less comes."""
        found: dict[str, Post] = {}
        while True:
            batch = await self.core.client.get_posts_since(channel_id, since_ms)
            fresh = [p for p in batch if p.id not in found or found[p.id].update_at < p.update_at]
            for post in batch:
                found[post.id] = post
            if len(batch) < PAGE or not fresh:
                return sorted(found.values(), key=lambda p: (p.create_at, p.id))
            since_ms = max(p.update_at for p in batch) - 1

    # Kinds of work, in the order they apply when they happened at the same millisecond.
    POSTED, EDITED, DELETED, RECONCILE = range(4)

    def _work_for(self, post: Post, since_ms: int) -> list[tuple[int, int, Post]]:
        """(when it happened, kind, post) for everything this post may carry that was missed."""
        if post.original_id:
            return []  # an edit-history row: the edited post itself comes too
        if post.delete_at:
            # Only a person's deleted post matters (to the timeline).
            if post.user_id == self.core.bot_id or post.delete_at < since_ms:
                return []
            return [(post.delete_at, self.DELETED, post)]
        work = []
        if post.user_id != self.core.bot_id and post.create_at >= since_ms:
            work.append((post.create_at, self.POSTED, post))
        if post.user_id != self.core.bot_id and post.edit_at and post.edit_at >= since_ms:
            work.append((post.edit_at, self.EDITED, post))
        if post.update_at >= since_ms:
            # Reactions move update_at; so do replies and edits (reconciling again is harmless).
            work.append((post.update_at, self.RECONCILE, post))
        return work

    async def _replay(self, channel: Channel, kind: int, post: Post, now) -> None:
        if kind == self.DELETED:
            await self.feed(PostDeleted(post=post), None, replayed=True)
        elif kind == self.POSTED:
            late = now - post.created
            event = Posted(
                post=post,
                channel_type=channel.type,
                channel_name=channel.name,
                channel_display_name=channel.display_name,
                team_id=channel.team_id,
            )
            await self.feed(event, late if late > LATE_AFTER else None, replayed=True)
        elif kind == self.EDITED:
            await self.feed(PostEdited(post=post), None, replayed=True)
        else:
            await self.reconcile(post)
