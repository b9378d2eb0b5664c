"""Work that failed because Mattermost did, kept until it answers again: events to read
again from their time, and incidents whose channel shows an older state than the database."""

from __future__ import annotations

import asyncio

import structlog

from incident_bot.app.cursor import Cursor

log = structlog.get_logger("incident_bot.backlog")


class Backlog:
    """What the resync loop retries. Each unfinished key holds the cursor at its time until
    it has been read again successfully, so a crash meanwhile loses nothing."""

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.wakeup = asyncio.Event()
        self._unfinished: dict[str, tuple[int, int]] = {}  # key -> (read again from, version)
        self._version = 0
        self.stale: set[int] = set()
        self.outbox = False  # posts wait in the outbox for Mattermost

    def __bool__(self) -> bool:
        return bool(self._unfinished or self.stale or self.outbox)

    def outbox_waiting(self) -> None:
        """A queued post could not be delivered: try the outbox again later."""
        self.outbox = True
        self.wakeup.set()

    def unfinished(self, key: str, ms: int) -> None:
        """Something could not be applied because Mattermost failed: read it again later."""
        self._version += 1
        previous = self._unfinished.get(key)
        self._unfinished[key] = (min(ms, previous[0]) if previous else ms, self._version)
        self.cursor.hold(f"retry:{key}", ms)  # one hold per key, released when it leaves
        if previous is not None:
            self.cursor.release(f"retry:{key}")
        self.wakeup.set()

    def pending(self) -> dict[str, tuple[int, int]]:
        """A snapshot to retry; pass it to ``done`` once it was read again."""
        return dict(self._unfinished)

    def done(self, snapshot: dict[str, tuple[int, int]]) -> None:
        """Forget what ``snapshot`` held, except keys that failed again since."""
        for key, (_, version) in snapshot.items():
            if self._unfinished.get(key, (0, -1))[1] == version:
                del self._unfinished[key]
                self.cursor.release(f"retry:{key}")

    def mark_stale(self, number: int, exc: Exception) -> None:
        """The change is saved but its channel edits failed: repair the channel later."""
        log.warning("refresh.failed", incident=number, error=type(exc).__name__)
        self.stale.add(number)
        self.wakeup.set()

    def repaired(self, number: int) -> None:
        self.stale.discard(number)
