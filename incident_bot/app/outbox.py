"""Posts that follow from a committed change, delivered after the commit and again after a
crash or an outage until Mattermost has them (or they are obsolete): never lost, never twice.

A change writes its posts (``OutboxEntry``) in its own transaction (``Core.commit``), then
hands them to ``send``. Each delivery first notes an attempt, then posts with a marker prop
and a ``pending_post_id`` derived from the entry's key: a retry within 30 s gets the post
Mattermost already made; a later one, after a restart, looks for the marker first."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

from incident_bot.app.backlog import Backlog
from incident_bot.app.buttons import button_props
from incident_bot.app.core import Core, pending_id
from incident_bot.chat.errors import BadRequest, Forbidden, MattermostError, NotFound
from incident_bot.domain import buttons
from incident_bot.domain.models import OutboxEntry

log = structlog.get_logger("incident_bot.outbox")

OUTBOX_PROP = "incident_bot_outbox"
ANNOUNCE_SUFFIX = ":announce"  # the key of every post to a team's announcement channel ends so (ChannelWriter)
FIND_MARGIN = timedelta(minutes=1)  # a post made by an earlier attempt is this much after the entry at the earliest
BATCH = 100
# A post Mattermost refused as a bad request (4xx, not 429) this often is given up and logged
# rather than retried forever; an outage (5xx, no answer, 429) is waited out however long it lasts.
MAX_REFUSALS = 5


class Outbox:
    def __init__(self, core: Core, backlog: Backlog) -> None:
        self.core = core
        self.backlog = backlog
        self._inflight: set[str] = set()

    def entry(self, key: str, channel_id: str, message: str, root_id: str = "", incident: int | None = None) -> OutboxEntry:
        """A post to queue with a change (``Core.commit(outbox=…)``); ``key`` says what it is
        (the change's dedupe key and the post's role), so it is queued and posted once."""
        return OutboxEntry(
            key=key, incident_number=incident, channel_id=channel_id, root_id=root_id, message=message, created_at=self.core.now()
        )

    async def send(self, entries: list[OutboxEntry]) -> bool:
        """Deliver what a change just committed; what fails stays queued for ``deliver_pending``.
        True when all of it was delivered."""
        delivered = True
        for entry in entries:
            delivered = await self._deliver(entry.key) and delivered
        return delivered

    async def deliver_pending(self) -> bool:
        """Deliver everything still queued, oldest first; True when nothing is left."""
        async with self.core.store.transaction() as tx:
            pending = await tx.pending_outbox(BATCH)
        ok = True
        for entry in pending:
            ok = await self._deliver(entry.key) and ok
        return ok and len(pending) < BATCH

    async def _deliver(self, key: str) -> bool:
        """Post one entry unless it is done or in flight; False when Mattermost failed (kept)."""
        if key in self._inflight:
            return True
        self._inflight.add(key)
        try:
            async with self.core.store.transaction() as tx:
                entry = await tx.get_outbox(key)
            if entry is None or entry.done_at is not None:
                return True
            try:
                if entry.attempts == 0 or not await self._posted_before(entry):
                    entry.attempts += 1
                    await self._save(entry)  # from here on, a restart looks for the post first
                    await self.core.chat.create_post(
                        entry.channel_id,
                        entry.message,
                        root_id=entry.root_id,
                        props={OUTBOX_PROP: entry.key} | self._buttons(entry),
                        pending_post_id=pending_id("outbox", entry.key),
                    )
            except MattermostError as exc:
                refused = 400 <= exc.status < 500 and exc.status != 429
                if isinstance(exc, (NotFound, Forbidden)) or (
                    isinstance(exc, BadRequest) and await self._archived(entry.channel_id)
                ):
                    # The channel or thread is gone or archived, or the bot was removed: nobody can read it there.
                    log.warning("outbox.obsolete", key=key, incident=entry.incident_number, status=exc.status)
                elif not refused or entry.attempts < MAX_REFUSALS:
                    log.warning(
                        "outbox.failed", key=key, incident=entry.incident_number, status=exc.status, attempts=entry.attempts
                    )
                    self.backlog.outbox_waiting()
                    return False
                else:
                    log.error(
                        "outbox.abandoned", key=key, incident=entry.incident_number, status=exc.status, attempts=entry.attempts
                    )
            entry.done_at = self.core.now()
            await self._save(entry)
            return True
        finally:
            self._inflight.discard(key)

    def _buttons(self, entry: OutboxEntry) -> dict[str, Any]:
        """Posts to the announcement channel carry Join (when buttons are on)."""
        if not entry.key.endswith(ANNOUNCE_SUFFIX):
            return {}
        return button_props(self.core.settings, entry.incident_number, buttons.ANNOUNCE)

    async def _archived(self, channel_id: str) -> bool:
        """The channel was archived: a post there is refused (400) for good."""
        try:
            return bool((await self.core.chat.get_channel(channel_id)).delete_at)
        except MattermostError:
            return False

    async def _posted_before(self, entry: OutboxEntry) -> bool:
        """An earlier attempt may have posted it before the bot stopped: look for its marker."""
        since = int((entry.created_at - FIND_MARGIN).timestamp() * 1000)
        for post in await self.core.chat.get_posts_since(entry.channel_id, max(since, 1)):
            if post.user_id == self.core.bot_id and not post.delete_at and post.props.get(OUTBOX_PROP) == entry.key:
                log.info("outbox.found", key=entry.key, post=post.id)
                return True
        return False

    async def _save(self, entry: OutboxEntry) -> None:
        async with self.core.store.transaction() as tx:
            await tx.save_outbox(entry)
