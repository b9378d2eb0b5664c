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
(Read-only commands, ``changes_state`` False, are not ordered: the pipeline starts them at
once, as it does live.)
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from enum import IntEnum

import structlog

from incident_bot.app.checklists import Checklists
from incident_bot.app.core import REPLY_PROP, Core
from incident_bot.app.cursor import Cursor
from incident_bot.app.pipeline import Pipeline
from incident_bot.app.timeline import Timeline
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.events import PostDeleted, Posted, PostEdited
from incident_bot.chat.models import Channel, Post

log = structlog.get_logger("incident_bot.catchup")

MARGIN_MS = 60_000  # re-read a minute before the cursor: clocks and in-flight events
LATE_AFTER = timedelta(seconds=2)  # older than this when handled: the reply says it is late


class Work(IntEnum):
    """Kinds of work a missed post carries, in the order they apply at the same millisecond."""

    POSTED = 0
    EDITED = 1
    DELETED = 2
    RECONCILE = 3


class CatchUp:
    """Reads what was missed and feeds it to the pipeline, in each channel's order."""

    def __init__(self, core: Core, cursor: Cursor, pipeline: Pipeline, checklists: Checklists, timeline: Timeline) -> None:
        self.core = core
        self.cursor = cursor
        self.pipeline = pipeline
        self.checklists = checklists
        self.timeline = timeline
        self._lock = asyncio.Lock()

    def reconcile(self, post: Post) -> None:
        """Queue a post whose reactions may have changed: checklist ticks and 📌 pins follow them."""
        ms = post.update_at or post.create_at

        async def work() -> bool:
            try:
                await self.checklists.reconcile(post.id)
                if post.has_reactions or await self.timeline.is_pinned(post):  # a 📌 added, or one taken off
                    await self.timeline.reconcile_pins(post)
            except Exception as exc:  # noqa: BLE001 - one post must not stop catch-up
                log.warning("catchup.reconcile_failed", post=post.id, error=type(exc).__name__, detail=str(exc)[:200])
                return not isinstance(exc, MattermostError)  # read again once Mattermost answers
            return True

        self.pipeline.submit(post.channel_id, f"reconcile:{post.id}:{post.update_at}", ms, work)

    async def channels(self) -> list[Channel]:
        """Every channel the bot is in: team channels and direct messages."""
        seen: dict[str, Channel] = {}
        for team in await self.core.directory.bot_teams():
            for channel in await self.core.chat.get_user_channels(team.id, "me"):
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
                posts = await self.core.chat.get_posts_since(channel.id, since_ms)
            except (MattermostError, ValueError) as exc:
                log.warning("catchup.channel_failed", channel=channel.id, error=type(exc).__name__)
                complete = False
                continue
            # Checklist items and 📌 pins live in incident channels only: elsewhere a post
            # whose reactions changed has nothing to reconcile (no store lookups per post).
            async with self.core.store.transaction() as tx:
                incident_channel = await tx.get_incident_by_channel(channel.id) is not None
            # The bot's replies among them: a reply comes after its command, so the listing
            # that holds a missed command holds its reply too, if one went out.
            replies = {
                str(post.props[REPLY_PROP]): post
                for post in posts
                if post.user_id == self.core.bot_id and not post.delete_at and not post.original_id and REPLY_PROP in post.props
            }
            work: list[tuple[int, Work, Post]] = []
            for post in posts:
                self.cursor.see(max(post.update_at, post.create_at))
                work.extend(self._work_for(post, since_ms, reconcile=incident_channel))
            work.sort(key=lambda w: (w[0], w[1], w[2].id))
            for _, kind, post in work:
                count += 1
                self._replay(channel, kind, post, now, replies)
        log.info("catchup.done", reason=reason, channels=len(channels), posts=count, since=since_ms, complete=complete)
        self.core.observer.caught_up(count)
        return complete

    def _work_for(self, post: Post, since_ms: int, reconcile: bool = True) -> list[tuple[int, Work, Post]]:
        """(when it happened, kind, post) for everything this post may carry that was missed."""
        if post.original_id:
            return []  # an edit-history row: the edited post itself comes too
        if post.delete_at:
            # Only a person's deleted post matters (to the timeline).
            if post.user_id == self.core.bot_id or post.delete_at < since_ms:
                return []
            return [(post.delete_at, Work.DELETED, post)]
        work = []
        if post.user_id != self.core.bot_id and post.create_at >= since_ms:
            work.append((post.create_at, Work.POSTED, post))
        if post.user_id != self.core.bot_id and post.edit_at and post.edit_at >= since_ms:
            work.append((post.edit_at, Work.EDITED, post))
        if reconcile and post.update_at >= since_ms:
            # Reactions move update_at; so do replies and edits (reconciling again is harmless).
            work.append((post.update_at, Work.RECONCILE, post))
        return work

    def _replay(self, channel: Channel, kind: Work, post: Post, now: datetime, replies: dict[str, Post] | None = None) -> None:
        if kind == Work.DELETED:
            self.pipeline.handle(PostDeleted(post=post), None, replayed=True)
        elif kind == Work.POSTED:
            late = now - post.created
            event = Posted(
                post=post,
                channel_type=channel.type,
                channel_name=channel.name,
                channel_display_name=channel.display_name,
                team_id=channel.team_id,
            )
            self.pipeline.handle(event, late if late > LATE_AFTER else None, replayed=True, replies=replies)
        elif kind == Work.EDITED:
            self.pipeline.handle(PostEdited(post=post), None, replayed=True)
        else:
            self.reconcile(post)
