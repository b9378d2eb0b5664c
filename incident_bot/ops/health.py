"""Is the bot well: ready (for /readyz) and, while it is degraded, one summary line a minute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from incident_bot.app.resync import Resync
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.stream import EventStream
from incident_bot.store.base import Store, StoreUnavailable

log = structlog.get_logger("incident_bot.health")

WRITE_CHECK_TIMEOUT = 2.0  # a transaction holding the write lock longer than this: not ready
RATE_LIMITED_WINDOW = 60.0  # a 429 within this many seconds counts as rate-limited
SUMMARY_EVERY = 60.0  # at most one degraded summary line per this many seconds
TICK = 5.0


@dataclass(frozen=True)
class State:
    """The connection state: what makes the bot degraded, if anything."""

    reconnecting: bool
    catching_up: bool
    rate_limited: bool

    @property
    def degraded(self) -> bool:
        return self.reconnecting or self.catching_up or self.rate_limited

    def reasons(self) -> list[str]:
        return [
            name
            for name, on in (
                ("reconnecting", self.reconnecting),
                ("catching up", self.catching_up),
                ("rate-limited", self.rate_limited),
            )
            if on
        ]


class Health:
    """Reads the running bot's parts; never changes them."""

    def __init__(self, stream: EventStream, resync: Resync, store: Store, chat: MattermostClient) -> None:
        self.stream = stream
        self.resync = resync
        self.store = store
        self.chat = chat

    def state(self) -> State:
        now = asyncio.get_running_loop().time()
        limited = self.chat.last_rate_limited
        return State(
            reconnecting=not self.stream.authenticated,
            catching_up=self.resync.catching_up,
            rate_limited=limited is not None and now - limited < RATE_LIMITED_WINDOW,
        )

    async def not_ready(self) -> list[str]:
        """Why the bot is not ready; empty when it is (WebSocket authenticated, caught up, database writable)."""
        reasons = []
        if not self.stream.authenticated:
            reasons.append("websocket not connected and authenticated")
        if not self.resync.caught_up_once:
            reasons.append("catch-up not finished" if self.resync.catching_up else "not connected yet since start")
        try:
            await asyncio.wait_for(self.store.check_writable(), WRITE_CHECK_TIMEOUT)
        except TimeoutError:
            reasons.append(f"database busy for more than {WRITE_CHECK_TIMEOUT:g}s")
        except (StoreUnavailable, RuntimeError) as exc:
            reasons.append(f"database not writable: {exc}")
        return reasons


class DegradedSummary:
    """Decides when to log the state: once when it turns degraded, then at most every
    ``every`` seconds while it stays so, and once when it recovers."""

    def __init__(self, every: float = SUMMARY_EVERY) -> None:
        self.every = every
        self.since: float | None = None  # when the current degraded spell began
        self.last: float | None = None  # when it was last logged

    def tick(self, state: State, now: float) -> tuple[str, dict[str, object]] | None:
        """The (event, fields) to log now, if any."""
        if state.degraded:
            if self.since is None:
                self.since = now
            if self.last is not None and now - self.last < self.every:
                return None
            self.last = now
            return "bot.degraded", {"state": state.reasons(), "degraded_for_s": round(now - self.since, 1)}
        if self.since is None:
            return None
        fields: dict[str, object] = {"degraded_for_s": round(now - self.since, 1)}
        self.since = self.last = None
        return "bot.recovered", fields


async def report_degraded(state: Callable[[], State], stop: asyncio.Event, tick: float = TICK) -> None:
    """Every ``tick`` seconds until ``stop``: log a summary when DegradedSummary says so."""
    summary = DegradedSummary()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:  # first wait: a bot that is still connecting at start is not degraded yet
            await asyncio.wait_for(stop.wait(), tick)
            return
        except TimeoutError:
            pass
        line = summary.tick(state(), loop.time())
        if line is not None:
            event, fields = line
            (log.warning if event == "bot.degraded" else log.info)(event, **fields)
