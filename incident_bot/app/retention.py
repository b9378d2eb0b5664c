"""Bounded bookkeeping: dedupe keys and reply records are forgotten once no redelivery or
catch-up can bring their event back.

How far back can an event come again? A reliable-WebSocket resume replays only the
server's short buffer. Catch-up reads from the cursor's safe point minus ``MARGIN_MS``
(60 s), and the safe point is never more than ``HOLD_CAP_MS`` (7 days) before the newest
event seen: ``Cursor.hold`` caps older holds there. So nothing is delivered again that
happened more than 7 days and 1 minute before the earlier of now and the saved cursor.

Keys are kept ``dedupe_retention_days`` (default 14, at least 8) before that same point,
``floor()``. Counting from the cursor as well as from the clock matters after a long
outage: a bot down for a month reads the month back on its return, and its keys from
before the outage must still be there. The pipeline ignores a post older than the floor
(``Pipeline.floor_ms``): its key may be gone, and catch-up never reads that far back, so
only a stray redelivery could bring it, and it must not be answered a second time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from incident_bot.app.catchup import MARGIN_MS
from incident_bot.app.core import Core
from incident_bot.app.cursor import HOLD_CAP_MS, Cursor
from incident_bot.chat.retry import sleep_unless_stopped

log = structlog.get_logger("incident_bot.retention")

PRUNE_EVERY_SECONDS = 3600.0
LONGEST_CATCH_UP = timedelta(milliseconds=HOLD_CAP_MS + MARGIN_MS)  # 7 days 1 minute


class Retention:
    def __init__(self, core: Core, cursor: Cursor, days: int) -> None:
        self.core = core
        self.cursor = cursor
        self.horizon = timedelta(days=days)
        self._horizon_ms = days * 86_400_000
        assert self.horizon > LONGEST_CATCH_UP, "dedupe_retention_days must exceed the longest catch-up"

    def floor(self) -> datetime:
        """Keys recorded before this are forgotten; posts created before it are not new."""
        now = self.core.now()
        safe = self.cursor.safe
        if safe is not None:
            now = min(now, datetime.fromtimestamp(safe / 1000, UTC))
        return now - self.horizon

    def floor_ms(self) -> int:
        """``floor()`` in milliseconds, without datetimes: the pipeline asks for every event."""
        now = int(self.core.now().timestamp() * 1000)
        safe = self.cursor.safe
        return (now if safe is None else min(now, safe)) - self._horizon_ms

    async def prune(self) -> dict[str, int]:
        """Forget keys, replies and delivered outbox entries older than ``floor()``; how many
        of each were removed."""
        before = self.floor()
        async with self.core.store.transaction() as tx:
            removed = {
                "events": await tx.prune_events(before),
                "replies": await tx.prune_replies(before),
                "outbox": await tx.prune_outbox(before),
            }
            kept = await tx.bookkeeping_counts()
        log.info("retention.pruned", before=before.isoformat(), removed=removed, kept=kept)
        return removed

    async def run(self, stop: asyncio.Event) -> None:
        """Prune now and then every hour until ``stop``."""
        while not stop.is_set():
            try:
                await self.prune()
            except Exception as exc:  # noqa: BLE001 - try again at the next round
                log.warning("retention.prune_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await sleep_unless_stopped(PRUNE_EVERY_SECONDS, stop)
