"""Who leads among bot replicas on one database: wait as a standby, renew while leading,
step down before the lease can run out.

Only the leader consumes events, sends reminders, delivers the outbox, repairs and prunes,
and writes to Mattermost; runtime.py runs all of that only between ``campaign()`` and the
end of the term (``lost``, or a stop). On SQLite there is no lease (``Leadership(None)``):
the one process always leads and nothing here runs.

Timing (seconds): the lease lasts ``ttl`` by the database's clock from each renewal, which
happens every ``renew_every``. The leader counts its lease valid until ``ttl - margin`` after
it *sent* the renewal that succeeded, by its own monotonic clock: the database's expiry is
later than that, so the leader stops writing (``may_write`` turns False, the store is fenced)
before any standby can take over. A standby tries every ``poll_every``: after a SIGKILL or a
network cut, a new leader starts within ``ttl + poll_every`` of the last renewal (6 s).

A lost lease ends the term: runtime.py tears the bot down without waiting for in-flight work
(it could not write anyway) and the process campaigns again as a standby. Exiting instead
would work with systemd's Restart=, but would spend its start limit on database blips.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

import structlog

from incident_bot.chat.retry import sleep_unless_stopped
from incident_bot.store.base import Lease, LeaseView, StoreUnavailable

log = structlog.get_logger("incident_bot.leadership")

LEASE_SECONDS = 5.0
RENEW_SECONDS = 1.0
POLL_SECONDS = 1.0
MARGIN_SECONDS = 1.0  # for clock rates, scheduling delays and a Mattermost call already sent
RETRY_SECONDS = 0.25  # a failed renewal is tried again this soon while the lease lasts


def replica_name() -> str:
    """This process in the lease row: host, pid and a random tag (a pid may come back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Leadership:
    """This replica's part in the lease: ``campaign()`` until leading, ``hold()`` while leading."""

    def __init__(
        self,
        lease: Lease | None,
        *,
        ttl: float = LEASE_SECONDS,
        renew_every: float = RENEW_SECONDS,
        poll_every: float = POLL_SECONDS,
        margin: float = MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < renew_every < ttl - margin:
            raise ValueError("the lease must be renewed well within its lifetime (renew_every < ttl - margin)")
        self.lease = lease
        self.ttl = ttl
        self.renew_every = renew_every
        self.poll_every = poll_every
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self.generation: int | None = None  # our lease's generation while leading
        self.seen: LeaseView | None = None  # the lease as last seen while campaigning
        self.lost = asyncio.Event()  # set when the lease was lost (the term is over)
        self._valid_until = -math.inf  # our monotonic clock: stop writing at this time
        self._renewed_at = -math.inf
        if lease is not None:
            lease.fence(0)  # a standby's store refuses every transaction until it leads

    @property
    def solo(self) -> bool:
        """No lease: SQLite's one process, always leading."""
        return self.lease is None

    @property
    def leading(self) -> bool:
        return self.lease is None or (self.generation is not None and self._clock() < self._valid_until)

    def may_write(self) -> bool:
        """Whether this replica may write to Mattermost now (the chat client asks before each write)."""
        return self.leading

    def standby_reason(self) -> str:
        """Why this replica is not leading, for /readyz (which must say "standby")."""
        seen = self.seen
        if seen is None or not seen.holder:
            return "standby: waiting for the leader lease"
        return f"standby: {seen.holder} leads (lease generation {seen.generation})"

    # --- standing by ----------------------------------------------------------------------------

    async def campaign(self, stop: asyncio.Event) -> bool:
        """Wait as a standby until this replica holds the lease (True) or ``stop`` is set (False)."""
        if self.lease is None:
            return True
        self.lost.clear()
        announced = unavailable = False
        while not stop.is_set():
            sent = self._clock()
            try:
                view = await self.lease.acquire()
            except Exception as exc:  # noqa: BLE001 - the database is away: try again at the next poll
                if not unavailable:
                    log.warning("lease.unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                unavailable = True
            else:
                unavailable = False
                self.seen = view
                if view.ours:
                    self.generation = view.generation
                    self._renewed_at = sent
                    self._valid_until = sent + self.ttl - self.margin
                    log.info("bot.leading", holder=self.lease.holder, generation=view.generation)
                    return True
                if not announced:
                    log.info("bot.standby", holder=self.lease.holder, leader=view.holder or None, generation=view.generation)
                    announced = True
            if not await sleep_unless_stopped(self.poll_every, stop, sleep=self._sleep):
                break
        return False

    # --- leading ----------------------------------------------------------------------------------

    async def hold(self) -> None:
        """Renew the lease until it is lost (then ``lost`` is set and this returns); cancel it
        to stop renewing. Returns at once when there is no lease or it is not held."""
        lease, generation = self.lease, self.generation
        if lease is None or generation is None:
            return
        next_renewal = self._renewed_at + self.renew_every
        while True:
            wake = min(next_renewal, self._valid_until)
            if wake > self._clock():
                await self._sleep(wake - self._clock())
            sent = self._clock()
            if sent >= self._valid_until:
                self._step_down("not renewed in time")
                return
            try:
                ours = await lease.renew(generation, timeout=self._valid_until - sent)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the lease runs out unless a retry succeeds
                detail = str(exc)[:200] if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("lease.renew_failed", error=detail, valid_for=round(self._valid_until - self._clock(), 2))
                next_renewal = self._clock() + RETRY_SECONDS
                continue
            if not ours:
                self._step_down("taken over")
                return
            self._renewed_at = sent
            self._valid_until = sent + self.ttl - self.margin
            next_renewal = sent + self.renew_every

    def _step_down(self, reason: str) -> None:
        assert self.lease is not None
        log.warning("bot.lease_lost", reason=reason, holder=self.lease.holder, generation=self.generation)
        self.lease.fence(0)
        self.generation = None
        self._valid_until = -math.inf
        self.lost.set()

    async def release(self) -> None:
        """After a clean stop: let the lease go now, so a standby need not wait for it to run out."""
        if self.lease is None or self.generation is None:
            return
        generation, self.generation = self.generation, None
        self._valid_until = -math.inf
        await self.lease.release(generation)

    async def close(self) -> None:
        if self.lease is not None:
            await self.lease.close()
