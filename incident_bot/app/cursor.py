"""How far the bot has seen Mattermost's events, saved so a restart reads again from there."""

from __future__ import annotations

import asyncio
import time

import structlog

from incident_bot.chat.retry import sleep_unless_stopped
from incident_bot.store.base import Store

log = structlog.get_logger("incident_bot.cursor")

CURSOR_KEY = "last_event_ms"
FLUSH_SECONDS = 1.0
FUTURE_LIMIT_MS = 10 * 60_000  # an event time this far ahead of our clock is not believed
HOLD_CAP_MS = 7 * 86_400_000  # a hold never keeps the cursor further back than this (app/retention.py relies on it)


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

    def __init__(self, store: Store) -> None:
        self.store = store
        self.value: int | None = None
        self._saved: int | None = None
        self._holds: dict[str, tuple[int, int]] = {}  # key -> (time, how many holds)

    async def load(self) -> int | None:
        async with self.store.transaction() as tx:
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
        if not self._believable(ms) or (self.value is not None and ms < self.value - HOLD_CAP_MS):
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

    @property
    def safe(self) -> int | None:
        if self._holds:
            oldest = min(ms for ms, _ in self._holds.values())
            return oldest - 1 if self.value is None else min(oldest - 1, self.value)
        return self.value

    async def flush(self) -> None:
        value = self.safe
        if value is not None and value != self._saved:
            async with self.store.transaction() as tx:
                await tx.set_state(CURSOR_KEY, value)
            self._saved = value

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await sleep_unless_stopped(FLUSH_SECONDS, stop)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - try again next second
                log.warning("cursor.flush_failed", error=type(exc).__name__)
