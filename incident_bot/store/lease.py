"""The leader lease of replicas sharing one PostgreSQL database: a row with a heartbeat.

One row of ``leader_lease`` (migration 4) says who leads (``holder``), the lease's
``generation`` and when it runs out (``expires_at``). The leader renews it every second or
so; a standby takes it once it has run out, by the database's clock, with a new generation.
Every write transaction of the leader is fenced by that generation (store/postgres.py).

Why a lease row rather than a session advisory lock held on a connection:

- an advisory lock is released only when the server notices its session is gone: at once
  after a SIGKILL, but after a network cut only when TCP keepalive gives up (two hours by
  default, tunable per server). A lease runs out after its TTL whatever broke, and its
  holder knows when, by its own monotonic clock, without asking anyone (app/leadership.py
  steps down before the database's expiry);
- the row carries the generation the issue asks writes to be fenced with, and the takeover
  (``SELECT … FOR UPDATE``, then the new generation) waits for every transaction of the old
  leader still holding its KEY SHARE lock on the row: the old leader's last write commits
  before the new leader's first, or not at all;
- there is one clock: ``now()`` of the database, for expiry and renewal alike.

The lease has its own connection, so a long store transaction never delays a heartbeat; its
statements give up after a timeout and a connection that failed is replaced at the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog

from incident_bot.store.base import LeaseView, StoreUnavailable
from incident_bot.store.postgres import PostgresStore

log = structlog.get_logger("incident_bot.lease")

# A takeover waits at most this long for the old leader's last transaction (its KEY SHARE
# lock on the row); when it is longer, the standby tries again at its next poll.
LOCK_TIMEOUT_MS = "2000"
STATEMENT_TIMEOUT = 3.0  # seconds, for acquire and view (renew passes its own)

# What a statement on a lost or broken connection may raise: asyncpg has more than its
# PostgresError and InterfaceError (InternalClientError when the server cut it mid-statement).
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

_ACQUIRE_LOCK = (
    "SELECT holder, generation, EXTRACT(EPOCH FROM (expires_at - now()))::float8 AS left_s "
    "FROM leader_lease WHERE name = 'leader' FOR UPDATE"
)
_TAKE = (
    "UPDATE leader_lease SET holder = $1, generation = generation + 1, "
    "expires_at = now() + make_interval(secs => $2) WHERE name = 'leader' RETURNING generation"
)
_RENEW = (
    "UPDATE leader_lease SET expires_at = now() + make_interval(secs => $3) "
    "WHERE name = 'leader' AND holder = $1 AND generation = $2"
)
_RELEASE = "UPDATE leader_lease SET expires_at = now() WHERE name = 'leader' AND holder = $1 AND generation = $2"
_VIEW = (
    "SELECT holder, generation, EXTRACT(EPOCH FROM (expires_at - now()))::float8 AS left_s "
    "FROM leader_lease WHERE name = 'leader'"
)


class PostgresLease:
    """The ``Lease`` protocol (store/base.py) on ``store``'s database, for the replica ``holder``.

    ``ttl`` is how long a taken or renewed lease lasts by the database's clock."""

    def __init__(self, store: PostgresStore, holder: str, ttl: float) -> None:
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self._conn: Any | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.store._connect(lock_timeout=LOCK_TIMEOUT_MS)
        return self._conn

    def _drop(self) -> None:
        """Forget a connection whose last statement failed: its state is unknown."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[Any]:
        """The lease's connection, one block at a time. A block that fails (or is cancelled)
        drops it, its state unknown; a lost or broken connection raises StoreUnavailable."""
        async with self._lock:
            try:
                yield await self._connection()
            except _ERRORS as exc:
                self._drop()
                raise StoreUnavailable(f"{self.store.location}: lease: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                self._drop()
                raise

    async def acquire(self) -> LeaseView:
        row: Any = None
        async with self._statement() as conn:
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(_ACQUIRE_LOCK, timeout=STATEMENT_TIMEOUT)
                    if row is None:
                        raise StoreUnavailable(f"{self.store.location}: the leader_lease row is missing (schema too old?)")
                    left = float(row["left_s"])
                    if left > 0 and row["holder"] != self.holder:
                        return LeaseView(row["holder"], int(row["generation"]), left, ours=False)
                    generation = int(await conn.fetchval(_TAKE, self.holder, self.ttl, timeout=STATEMENT_TIMEOUT))
            except asyncpg.LockNotAvailableError:
                # The old leader's last transaction still holds the row: look again at the next poll.
                return LeaseView(row["holder"] if row else "", 0, 0.0, ours=False)
        self.store.fence(generation)
        log.info("lease.taken", holder=self.holder, generation=generation, previous=row["holder"] or None)
        return LeaseView(self.holder, generation, self.ttl, ours=True)

    async def renew(self, generation: int, timeout: float) -> bool:
        async with self._statement() as conn:
            status = await conn.execute(_RENEW, self.holder, generation, self.ttl, timeout=max(timeout, 0.05))
        return bool(status == "UPDATE 1")

    async def release(self, generation: int) -> None:
        self.store.fence(0)
        try:
            async with self._statement() as conn:
                await conn.execute(_RELEASE, self.holder, generation, timeout=STATEMENT_TIMEOUT)
        except StoreUnavailable as exc:  # it runs out by itself
            log.warning("lease.release_failed", error=type(exc.__cause__ or exc).__name__)
            return
        log.info("lease.released", holder=self.holder, generation=generation)

    async def view(self) -> LeaseView:
        async with self._statement() as conn:
            row = await conn.fetchrow(_VIEW, timeout=STATEMENT_TIMEOUT)
        if row is None:
            raise StoreUnavailable(f"{self.store.location}: the leader_lease row is missing (schema too old?)")
        return LeaseView(row["holder"], int(row["generation"]), float(row["left_s"]), ours=row["holder"] == self.holder)

    def fence(self, generation: int) -> None:
        self.store.fence(generation)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                try:
                    await self._conn.close(timeout=STATEMENT_TIMEOUT)
                except _ERRORS:
                    self._conn.terminate()
            self._conn = None
