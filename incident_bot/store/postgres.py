"""The Store on a PostgreSQL database, through one asyncpg connection.

For several bot processes sharing one database (and, later, an active/standby pair). The
same contract as the SQLite store (tests/store runs on both); where PostgreSQL differs:

- Times are ``timestamptz`` written truncated to the millisecond (``values.utc_ms``), so
  they compare and order as SQLite's UTC text does; asyncpg reads them back aware UTC.
- Incident numbers come from a row of ``counters`` updated inside the creating
  transaction, not from a sequence: a rolled-back start gives its number back (as
  SQLite's AUTOINCREMENT does) and starts from two processes wait for each other's commit
  instead of sharing a number.
- Checklist items lock their incident's row (``FOR UPDATE``) before taking MAX + 1, so two
  processes adding to one checklist take turns.
- Within one process transactions run one at a time, in arrival order, like SQLite's;
  across processes PostgreSQL's row locks decide (READ COMMITTED).
- The connection is re-made at the next transaction when it was lost (server restart),
  so a transaction that fails on a dropped connection is the one that sees the error.

Active/standby (store/lease.py): once a replica's lease sets a fence, every transaction
first checks, right after BEGIN, that the lease row still has its generation, and holds a
KEY SHARE lock on that row until it ends; a takeover locks the row FOR UPDATE, so it waits
for those transactions and every later one sees the new generation and is refused (Fenced)
before it changes anything. A deposed replica can never commit.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from incident_bot.domain.models import SEVERITIES, ChecklistItem, Incident, IncidentStats, Playbook, Status
from incident_bot.store import migrations
from incident_bot.store.base import Fenced, StoreUnavailable, Transaction
from incident_bot.store.copy import Table
from incident_bot.store.sql import SQLTransaction, marks
from incident_bot.store.values import INCIDENT_COLUMNS, to_json, utc_ms

log = structlog.get_logger("incident_bot.store")

CONNECT_TIMEOUT = 10.0
# A transaction never waits on anything but the database (no Mattermost call inside one), so
# a session idle inside one for this long has lost its process or its network: the server
# ends it and drops its locks, among them the lease row's (store/lease.py), which a standby
# taking over waits for.
IDLE_IN_TRANSACTION = "8s"
FENCE_SQL = "SELECT 1 FROM leader_lease WHERE name = 'leader' AND generation = $1 FOR KEY SHARE"
_NOW_SQL = "date_trunc('milliseconds', now())"
# SQLite's NOCASE: ASCII letters only (see 0001_initial.postgresql.sql, playbooks.name_key).
_FOLD_SQL = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

# asyncpg ships no type hints: its connection and records are Any; these aliases say what is meant.
Connection = Any
Record = Any


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``?`` placeholders (store/sql.py) as PostgreSQL's ``$1, $2…``; SQL already numbered is left alone."""
    if "?" not in sql:
        return sql
    parts = sql.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# --- the store --------------------------------------------------------------------------


class PostgresStore:
    """Store on the PostgreSQL database at ``dsn`` (``postgresql://user@host/db``, asyncpg's forms):
    ``await open()`` before use, ``await close()`` after."""

    def __init__(self, dsn: str, on_commit: Callable[[float], None] | None = None) -> None:
        self.dsn = dsn
        self._on_commit = on_commit
        self.location = redact(dsn)
        self._conn: Connection | None = None
        self._open = False
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None
        self._fence: int | None = None  # the lease generation every transaction must see (store/lease.py)

    def fence(self, generation: int | None) -> None:
        """From now on refuse (Fenced) every transaction begun while the lease row's
        generation is not ``generation`` (0: refuse all); None: no lease, no check."""
        self._fence = generation

    async def _connect(self, **settings: str) -> Connection:
        server_settings = {"timezone": "UTC", "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION, **settings}
        try:
            return await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT, server_settings=server_settings)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot connect to the database {self.location}: {exc}") from exc

    async def open(self) -> None:
        """Connect and apply pending migrations; raises SchemaTooNew, StoreUnavailable."""
        if self._open:
            raise RuntimeError(f"store {self.location} is already open")
        known = await asyncio.to_thread(migrations.load_migrations, None, "postgresql")
        conn = await self._connect()
        try:
            version = await migrations.upgrade_pg(conn, self.location, known)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._open = conn, True
        log.info("store.opened", database=self.location, backend="postgresql", schema_version=version)

    async def close(self) -> None:
        """Wait for the running transaction, if any, then close the connection."""
        if not self._open:
            return
        async with self._lock:
            conn, self._conn, self._open = self._conn, None, False
            if conn is not None and not conn.is_closed():
                await conn.close()

    async def _require_conn(self) -> Connection:
        if not self._open:
            raise RuntimeError(f"store {self.location} is not open")
        if self._conn is None or self._conn.is_closed():
            log.warning("store.reconnecting", database=self.location)
            self._conn = await self._connect()
        return self._conn

    def later(self) -> AbstractAsyncContextManager[Transaction]:
        """A transaction of its own, committed at once: a round trip to the server is not
        the thread hand-off SQLite's ``later`` saves, and a fenced write must fail where it is made."""
        return self.transaction()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One transaction at a time in this process: BEGIN, COMMIT on normal exit, ROLLBACK
        on any exception (cancellation too), which is re-raised."""
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            raise RuntimeError("a transaction is already open in this task; nested transactions are not supported")
        async with self._lock:
            conn = await self._require_conn()
            self._holder = task
            tx = _PostgresTransaction(conn)
            pg_tx = conn.transaction()
            try:
                await pg_tx.start()
                if self._fence is not None and await conn.fetchval(FENCE_SQL, self._fence) is None:
                    raise Fenced(f"{self.location}: this replica's lease (generation {self._fence}) is gone; not writing")
                yield tx
                tx._finish()
                started = time.monotonic()
                await pg_tx.commit()
                if self._on_commit is not None:
                    self._on_commit(time.monotonic() - started)
            except BaseException:
                tx._finish()
                await self._rollback(conn, pg_tx)
                raise
            finally:
                self._holder = None

    read = transaction  # a transaction that happens to only read: PostgreSQL has no thread hand-off to save

    async def _rollback(self, conn: Connection, pg_tx: Any) -> None:
        try:
            await pg_tx.rollback()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The connection is gone or unusable: drop it; the next transaction connects again.
            log.warning("store.rollback_failed", database=self.location, reason=str(exc)[:200])
            conn.terminate()
            if self._conn is conn:
                self._conn = None

    async def schema_version(self) -> int:
        async with self._lock:
            return await migrations.current_version_pg(await self._require_conn())

    async def peek_schema_version(self) -> int:
        """The schema version, read on a connection of its own without migrating anything."""
        conn = await self._connect()
        try:
            return await migrations.current_version_pg(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"{self.location}: {exc}") from exc
        finally:
            await conn.close()

    async def check_writable(self) -> None:
        async with self._lock:
            conn = await self._require_conn()
            try:
                in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StoreUnavailable(f"{self.location}: {exc}") from exc
            if in_recovery:
                raise StoreUnavailable(f"{self.location} is a read-only standby (in recovery)")


class _PostgresTransaction(SQLTransaction):
    """The Transaction protocol on PostgreSQL (store/sql.py), plus what only PostgreSQL's SQL says."""

    now_sql = _NOW_SQL

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Record]:
        return list(await self._conn.fetch(_numbered(sql), *params))

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Record | None:
        return await self._conn.fetchrow(_numbered(sql), *params)

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """The number of rows changed, from the command tag ("UPDATE 3")."""
        status = cast(str, await self._conn.execute(_numbered(sql), *params))
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    def _time(self, value: datetime | None) -> datetime | None:
        return None if value is None else utc_ms(value)

    def _read_time(self, value: Any) -> datetime | None:
        return cast(datetime | None, value)  # asyncpg reads timestamptz as aware UTC

    def _flag(self, value: bool) -> bool:
        return value

    async def _require_incident(self, number: int, lock: bool = False) -> None:
        sql = "SELECT 1 FROM incidents WHERE number = $1" + (" FOR UPDATE" if lock else "")
        if await self._one(sql, (number,)) is None:
            raise KeyError(f"no incident #{number}")

    async def create_incident(self, incident: Incident) -> Incident:
        # The counter row stays locked until this transaction ends: a concurrent start in
        # another process waits here, then reads the committed value (or the old one, after
        # a rollback).
        row = await self._one(
            "WITH next AS (UPDATE counters SET value = value + 1 WHERE name = 'incidents' RETURNING value) "
            f"INSERT INTO incidents (number, {', '.join(INCIDENT_COLUMNS)}) "
            f"SELECT next.value, {marks(INCIDENT_COLUMNS)} FROM next RETURNING number",
            self._incident_params(incident),
        )
        if row is None:  # pragma: no cover - the row is created by migration 0001
            raise RuntimeError("the incidents counter row is missing")
        return incident.model_copy(update={"number": row["number"]})

    async def list_incidents_to_repair(self, ended_since: datetime) -> list[Incident]:
        rows = await self._all(
            "SELECT * FROM incidents WHERE status = $1 OR (status = $2 AND ended_at >= $3) ORDER BY number",
            (Status.ACTIVE.value, Status.ENDED.value, utc_ms(ended_since)),
        )
        return [self._incident(row) for row in rows]

    async def incident_stats(self, team_ids: list[str], since: datetime) -> IncidentStats:
        if not team_ids:
            return IncidentStats()
        # One statement, one round trip: every figure from one pass over the teams' rows.
        ended = "status = $4 AND resolve_ms IS NOT NULL AND started_at >= $5"
        severities = ", ".join(f"COUNT(*) FILTER (WHERE severity = {k} AND started_at >= $5) AS sev{k}" for k in SEVERITIES)
        row = await self._one(
            f"SELECT COUNT(*) FILTER (WHERE status IN ($2, $3)) AS open_now, {severities}, "
            f"COUNT(*) FILTER (WHERE {ended}) AS resolved, "
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY resolve_ms) FILTER (WHERE {ended}) AS median, "
            f"AVG(resolve_ms) FILTER (WHERE {ended}) AS mean "
            "FROM incidents WHERE team_id = ANY($1::text[])",
            (team_ids, Status.STARTING.value, Status.ACTIVE.value, Status.ENDED.value, utc_ms(since)),
        )
        assert row is not None
        by_severity = {k: int(row[f"sev{k}"]) for k in SEVERITIES if row[f"sev{k}"]}
        resolved = int(row["resolved"])
        if resolved == 0:
            return IncidentStats(by_severity=by_severity, open_now=int(row["open_now"]))
        return IncidentStats(
            by_severity=by_severity,
            open_now=int(row["open_now"]),
            resolved=resolved,
            median_seconds=float(row["median"]) / 1000,
            mean_seconds=float(row["mean"]) / 1000,
        )

    async def add_checklist_item(self, incident_number: int, text: str) -> ChecklistItem:
        # Locking the incident's row makes processes adding to one checklist take turns on MAX + 1.
        await self._require_incident(incident_number, lock=True)
        row = await self._one(
            "INSERT INTO checklist_items (incident_number, number, text) "
            "SELECT $1, COALESCE(MAX(number), 0) + 1, $2 FROM checklist_items WHERE incident_number = $1 "
            "RETURNING number",
            (incident_number, text),
        )
        assert row is not None
        return ChecklistItem(incident_number=incident_number, number=row["number"], text=text)

    async def get_playbook(self, team_id: str, name: str) -> Playbook | None:
        row = await self._one(
            f"SELECT * FROM playbooks WHERE team_id = $1 AND name_key = {_FOLD_SQL.format('$2')}", (team_id, name)
        )
        return self._playbook(row) if row else None

    async def list_playbooks(self, team_id: str) -> list[Playbook]:
        rows = await self._all('SELECT * FROM playbooks WHERE team_id = $1 ORDER BY name_key COLLATE "C"', (team_id,))
        return [self._playbook(row) for row in rows]

    async def save_playbook(self, playbook: Playbook) -> None:
        if playbook.team_id is None:
            raise ValueError(f"playbook {playbook.name!r} has no team_id; config playbooks are not stored")
        await self._write(
            "INSERT INTO playbooks (team_id, name, description, default_severity, items) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (team_id, name_key) DO UPDATE SET name = excluded.name, description = excluded.description, "
            "default_severity = excluded.default_severity, items = excluded.items, "
            f"updated_at = {_NOW_SQL}",
            (playbook.team_id, playbook.name, playbook.description, playbook.default_severity, to_json(playbook.items)),
        )

    async def delete_playbook(self, team_id: str, name: str) -> bool:
        sql = f"DELETE FROM playbooks WHERE team_id = $1 AND name_key = {_FOLD_SQL.format('$2')}"
        return await self._write(sql, (team_id, name)) > 0

    # --- copying (store/copy.py; not part of the Transaction protocol) ------------------------

    async def snapshot(self) -> None:
        """One snapshot for every read that follows (must be the transaction's first statement)."""
        await self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    async def table_columns(self, table: str) -> set[str]:
        rows = await self._all(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'",
            (table,),
        )
        return {row["column_name"] for row in rows}

    async def count_rows(self, table: str) -> int:
        return int(await self._conn.fetchval(f"SELECT COUNT(*) FROM {table}"))  # table names come from copy.TABLES only

    async def dump_rows(self, table: Table) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order_by}")
        return [dict(row.items()) for row in rows]

    async def insert_rows(self, table: Table, rows: list[dict[str, Any]]) -> None:
        sql = _numbered(f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks(table.columns)})")
        await self._conn.executemany(sql, [[row[name] for name in table.columns] for row in rows])

    async def last_numbers(self) -> dict[str, int]:
        incidents = await self._conn.fetchval("SELECT value FROM counters WHERE name = 'incidents'")
        sequence = await self._conn.fetchval("SELECT pg_get_serial_sequence('timeline', 'id')")
        row = await self._one(f"SELECT last_value, is_called FROM {sequence}")
        timeline = int(row["last_value"]) if row and row["is_called"] else 0
        return {"incidents": int(incidents or 0), "timeline": timeline}

    async def set_last_numbers(self, numbers: dict[str, int]) -> None:
        await self._write("UPDATE counters SET value = $1 WHERE name = 'incidents'", (numbers.get("incidents", 0),))
        last = numbers.get("timeline", 0)
        await self._conn.execute("SELECT setval(pg_get_serial_sequence('timeline', 'id'), $1, $2)", max(last, 1), last > 0)
