"""The leader lease and the fencing of writes by its generation (store/lease.py), on PostgreSQL:
two replicas are two stores with a lease each on one database, as two processes would be.

No test waits for a lease to run out: a lease taken with ``ttl=0`` has run out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from incident_bot.store.base import Fenced, StoreUnavailable
from incident_bot.store.factory import open_lease
from incident_bot.store.lease import PostgresLease
from incident_bot.store.postgres import PostgresStore
from tests.store.conftest import PostgresBackend, SQLiteBackend
from tests.support.waiting import eventually

TTL = 30.0  # long enough that no lease runs out during a test unless it was taken with ttl=0


class Replica:
    def __init__(self, backend: PostgresBackend, name: str, ttl: float = TTL) -> None:
        self.store = backend.make()
        self.lease = PostgresLease(self.store, name, ttl)

    async def close(self) -> None:
        await self.lease.close()
        await self.store.close()


@pytest.fixture
async def replicas(pg_backend: PostgresBackend) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(pg_backend, "host-a:1:aaaa"), Replica(pg_backend, "host-b:2:bbbb")
    await a.store.open()
    await b.store.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def write_state(store: PostgresStore, key: str, value: int) -> None:
    async with store.transaction() as tx:
        await tx.set_state(key, value)


async def read_state(store: PostgresStore, key: str) -> object:
    async with store.transaction() as tx:
        return await tx.get_state(key)


async def test_one_replica_takes_the_lease_the_other_sees_who_holds_it(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    taken = await a.lease.acquire()
    assert (taken.ours, taken.holder, taken.generation) == (True, "host-a:1:aaaa", 1)
    seen = await b.lease.acquire()
    assert (seen.ours, seen.holder, seen.generation) == (False, "host-a:1:aaaa", 1)
    assert 0 < seen.expires_in <= TTL
    assert await a.lease.renew(1, timeout=5) is True
    assert (await b.lease.view()).holder == "host-a:1:aaaa"
    assert (await a.lease.view()).ours is True


async def test_a_released_lease_is_taken_at_once_with_a_new_generation(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    assert (await a.lease.acquire()).generation == 1
    await a.lease.release(1)
    taken = await b.lease.acquire()
    assert (taken.ours, taken.generation) == (True, 2)
    assert await a.lease.renew(1, timeout=5) is False, "a renewal of a lease taken over must fail"


async def test_a_lease_that_ran_out_is_taken_over(pg_backend: PostgresBackend, replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    short = PostgresLease(a.store, "host-a:1:aaaa", ttl=0.0)  # runs out as it is taken
    try:
        assert (await short.acquire()).generation == 1
        assert (await b.lease.acquire()).generation == 2
        assert await short.renew(1, timeout=5) is False
    finally:
        await short.close()


async def test_writes_of_a_deposed_leader_are_refused_and_change_nothing(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    await a.lease.acquire()
    await write_state(a.store, "k", 1)
    await a.lease.release(1)
    a.store.fence(1)  # as if a had not noticed: its store still writes with generation 1
    await b.lease.acquire()
    with pytest.raises(Fenced):
        await write_state(a.store, "k", 2)
    await write_state(b.store, "k", 3)
    assert await read_state(b.store, "k") == 3
    a.lease.fence(0)  # a standby's store refuses everything
    with pytest.raises(Fenced):
        await read_state(a.store, "k")


async def test_a_takeover_waits_for_the_old_leaders_transaction_in_flight(
    pg_backend: PostgresBackend, replicas: tuple[Replica, Replica]
) -> None:
    """The old leader's last transaction commits before the new leader's lease exists, never after."""
    a, b = replicas
    short = PostgresLease(a.store, "host-a:1:aaaa", ttl=0.0)
    try:
        await short.acquire()
        in_transaction, finish = asyncio.Event(), asyncio.Event()

        async def last_write() -> None:
            async with a.store.transaction() as tx:
                await tx.set_state("last", "from a")
                in_transaction.set()
                await finish.wait()

        writer = asyncio.create_task(last_write())
        await in_transaction.wait()
        taking = asyncio.create_task(b.lease.acquire())
        conn = await asyncpg.connect(pg_backend.dsn)
        try:
            await eventually(
                lambda: conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%leader_lease%'"
                ),
                what="the takeover waiting for the row lock",
            )
        finally:
            await conn.close()
        assert not taking.done()
        finish.set()
        await writer
        assert (await taking).generation == 2
        assert await read_state(b.store, "last") == "from a"
        with pytest.raises(Fenced):
            await write_state(a.store, "last", "too late")
    finally:
        await short.close()


async def test_the_lease_survives_a_lost_connection(replicas: tuple[Replica, Replica], pg_backend: PostgresBackend) -> None:
    a, _b = replicas
    await a.lease.acquire()
    lease_pid = a.lease._conn.get_server_pid()  # the lease's own connection, cut as a network failure would
    conn = await asyncpg.connect(pg_backend.dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", lease_pid)
    finally:
        await conn.close()
    with contextlib.suppress(StoreUnavailable):  # a connection already seen closed is replaced at once
        await a.lease.renew(1, timeout=5)
    assert await a.lease.renew(1, timeout=5) is True, "the next call connects again"
    await write_state(a.store, "after", 1)


async def test_sqlite_has_no_lease(tmp_path: Path) -> None:
    store = SQLiteBackend(tmp_path).make()
    assert open_lease(store, "me", TTL) is None


async def test_check_tells_whether_this_process_would_lead(pg_backend: PostgresBackend, tmp_path: Path) -> None:
    from incident_bot.ops.check import Mark, check_leadership

    empty = await check_leadership(pg_backend.dsn)
    assert empty.mark is Mark.WARN and "cannot be read" in empty.text  # no schema yet
    a = Replica(pg_backend, "host-a:1:aaaa")
    await a.store.open()
    try:
        free = await check_leadership(pg_backend.dsn)
        assert free.mark is Mark.OK and "this process would become the leader" in free.text
        await a.lease.acquire()
        held = await check_leadership(pg_backend.dsn)
        assert held.mark is Mark.OK and held.text.startswith("host-a:1:aaaa leads (lease generation 1")
        assert held.text.endswith("this process would start as a standby")
    finally:
        await a.close()
    solo = await check_leadership(SQLiteBackend(tmp_path).location)
    assert solo.mark is Mark.OK and "always the leader" in solo.text
