"""The Store on one SQLite file, through one aiosqlite connection (SQLite runs in its thread).

Times are kept as ISO-8601 UTC text with milliseconds (``2026-11-26T14:02:00.123Z``):
fixed width, so ordering and comparing the text orders the times.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from incident_bot.domain.models import (
    SEVERITIES,
    ChecklistItem,
    Incident,
    IncidentStats,
    Playbook,
    Status,
    ensure_utc,
)
from incident_bot.store import migrations
from incident_bot.store.base import StoreUnavailable, Transaction
from incident_bot.store.copy import SEQUENCES, Table
from incident_bot.store.sql import SQLTransaction, marks
from incident_bot.store.values import INCIDENT_COLUMNS, to_json

log = structlog.get_logger("incident_bot.store")

# busy_timeout first, so that switching to WAL waits for another process's lock.
_PRAGMAS = (
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

_NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

LATER_SECONDS = 0.1  # store.later(): writes wait at most this long for a trip to ride along with
LATER_MAX = 10_000  # statements kept while the database cannot take them; the oldest go first


# --- value conversion -----------------------------------------------------------------


def to_db_time(value: datetime | None) -> str | None:
    """UTC text to the millisecond (finer digits are dropped); naive values count as UTC."""
    if value is None:
        return None
    # isoformat truncates to the millisecond and pads the year to four digits.
    return ensure_utc(value).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def from_db_time(value: str | None) -> datetime | None:
    return None if value is None else db_time(value)


def db_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


# --- a file that cannot be used -----------------------------------------------------------

# SQLite's answers that no retry fixes until someone acts on the file or the disk.
_UNUSABLE = {
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "the file cannot be written (read-only)",
    "SQLITE_IOERR": "the file cannot be written (read-only or failing file system)",
    "SQLITE_CANTOPEN": "the file cannot be opened",
    "SQLITE_CORRUPT": "the file is damaged",
    "SQLITE_NOTADB": "the file is not an incident-bot database",
}


def unusable(path: Path, exc: BaseException) -> StoreUnavailable | None:
    """StoreUnavailable naming why, when ``exc`` says the database file cannot be used."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    reason = next((why for prefix, why in _UNUSABLE.items() if name.startswith(prefix)), None)
    if reason is None and ("malformed" in str(exc) or "not a database" in str(exc)):
        reason = _UNUSABLE["SQLITE_CORRUPT"]
    if reason is None:
        return None
    return StoreUnavailable(f"{path}: {reason} ({exc})")


# --- the store --------------------------------------------------------------------------


class SQLiteStore:
    """Store on the SQLite file at ``path``: ``await open()`` before use, ``await close()`` after.

    ``on_commit`` is told how many seconds each COMMIT took (the metrics' commit latency).
    """

    def __init__(self, path: str | Path, on_commit: Callable[[float], None] | None = None) -> None:
        self.path = Path(path)
        self._on_commit = on_commit
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None
        self._later: list[Statement] = []  # store.later()'s writes, not yet sent
        self._later_timer: asyncio.TimerHandle | None = None
        self._later_flush: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect, set the PRAGMAs and apply pending migrations; raises SchemaTooNew."""
        if self._conn is not None:
            raise RuntimeError(f"store {self.path} is already open")
        known = await asyncio.to_thread(migrations.load_migrations)
        # isolation_level=None: the sqlite3 module issues no BEGIN of its own; we do.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            for pragma in _PRAGMAS:
                await conn.execute_fetchall(pragma)
            mode = await self._pragma(conn, "journal_mode")
            if str(mode).lower() != "wal":
                log.warning("store.no_wal", database=str(self.path), journal_mode=mode)
            version = await migrations.upgrade(conn, str(self.path), known)
        except BaseException as exc:
            await conn.close()
            cause = unusable(self.path, exc)
            if cause is not None:  # nothing was written to it: left as it is for the operator
                raise StoreUnavailable(
                    f"{cause}. It was left unchanged: restore it from a backup, or move it away to start with an empty database"
                ) from exc
            raise
        self._conn = conn
        log.info("store.opened", database=str(self.path), schema_version=version)

    async def close(self) -> None:
        """Wait for the running transaction, if any, then close the connection."""
        if self._conn is None:
            return
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                later, self._later = self._later, []
                if later:
                    try:
                        await _trip(conn, [("BEGIN IMMEDIATE", ()), *later, ("COMMIT", ())], False)
                    except sqlite3.Error as exc:
                        log.warning("store.later_lost", database=str(self.path), statements=len(later), error=str(exc)[:200])
                try:
                    await conn.execute_fetchall("PRAGMA optimize")
                except sqlite3.Error as exc:  # a full or read-only disk: nothing to tidy
                    log.warning("store.optimize_skipped", database=str(self.path), error=str(exc))
                finally:
                    await conn.close()

    def _require_conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError(f"store {self.path} is not open")
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One transaction at a time: BEGIN IMMEDIATE, COMMIT on normal exit, ROLLBACK on any
        exception (cancellation too), which is re-raised.

        A task must not open a transaction inside its own (RuntimeError rather than a
        deadlock); the Transaction object is useless after the block.
        """
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            raise RuntimeError("a transaction is already open in this task; nested transactions are not supported")
        async with self._lock:
            conn = self._require_conn()
            self._holder = task
            later, self._later = self._later, []
            tx = _SQLiteTransaction(conn, carry=later)  # committed with this transaction
            try:
                yield tx
                started = time.monotonic()
                if await tx._commit() and self._on_commit is not None:
                    self._on_commit(time.monotonic() - started)
            except BaseException as exc:
                tx._finish()
                self._keep_later(later)  # idempotent writes: sent again even if they went through
                if tx._begun:
                    await self._rollback(conn)
                self._raise_unusable(exc)
                raise
            finally:
                self._holder = None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Transaction]:
        """Statements without BEGIN and COMMIT, one trip each (a transaction's BEGIN and
        COMMIT cost a trip to SQLite's thread of their own when nothing is written); under
        the lock, so never inside another block's transaction. The first trip commits what
        ``later()`` keeps ahead of its read, so the read sees it."""
        async with self._lock:
            conn = self._require_conn()
            later, self._later = self._later, []
            tx = _SQLiteTransaction(conn, reading=True, carry=later)  # committed ahead of the first read
            try:
                yield tx
            except BaseException as exc:
                if later and tx._begun:  # perhaps stopped between their BEGIN and COMMIT
                    self._keep_later(later)
                    await self._rollback(conn)
                self._raise_unusable(exc)
                raise
            finally:
                tx._finish()
                if not tx._begun:
                    self._keep_later(later)  # the block read nothing: they wait for the next trip

    @asynccontextmanager
    async def later(self) -> AsyncIterator[Transaction]:
        """Writes that go along with the next trip to SQLite's thread (a read's or a
        transaction's, committed before or with it), or on their own after LATER_SECONDS:
        a reply's record costs no trip of its own. Nothing is sent here, so the block may
        only write (``_run``); a read in it raises RuntimeError. Only writes that may run
        twice (``ON CONFLICT DO NOTHING``): after a failed trip they are sent again."""
        tx = _SQLiteTransaction(self._require_conn(), keeping=True)
        try:
            yield tx
        finally:
            tx._finish()
        self._keep_later(tx._pending)

    def _keep_later(self, statements: list[Statement]) -> None:
        """Queue ``statements`` (ahead of what was queued since) and make sure they are sent soon."""
        if not statements:
            return
        self._later[:0] = statements
        if len(self._later) > LATER_MAX:  # the database has refused writes for a long while
            dropped = len(self._later) - LATER_MAX
            del self._later[:dropped]
            log.warning("store.later_dropped", database=str(self.path), statements=dropped)
        if self._later_timer is None and self._conn is not None:
            self._later_timer = asyncio.get_running_loop().call_later(LATER_SECONDS, self._send_later)

    def _send_later(self) -> None:
        self._later_timer = None
        if not self._later or self._conn is None:
            return
        loop = asyncio.get_running_loop()
        if self._later_flush is not None and not self._later_flush.done():
            # The last flush still waits for the store (it takes what waits when it gets it): look again.
            self._later_timer = loop.call_later(LATER_SECONDS, self._send_later)
            return
        self._later_flush = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        """The timer's trip: a transaction that carries only what waits."""
        try:
            async with self.transaction():
                pass
        except (StoreUnavailable, sqlite3.Error) as exc:  # kept and tried again (_keep_later re-armed the timer)
            log.warning("store.later_waiting", database=str(self.path), statements=len(self._later), error=str(exc)[:200])
        except RuntimeError:  # closed meanwhile: close() sent them
            pass

    def _raise_unusable(self, exc: BaseException) -> None:
        """Raise StoreUnavailable naming why when ``exc`` says the file cannot be used."""
        cause = unusable(self.path, exc)
        if cause is not None:
            raise cause from exc

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        # aiosqlite runs statements in order on its thread, so this ROLLBACK lands after
        # anything the block queued, even if the block was cancelled mid-statement.
        try:
            await conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # no transaction: BEGIN failed, or SQLite rolled back itself
            log.debug("store.rollback_skipped", reason=str(exc))

    async def check_writable(self) -> None:
        """Take the write lock and let it go (BEGIN IMMEDIATE, ROLLBACK); raises
        StoreUnavailable when the database cannot be written (read-only file or directory, locked, disk I/O)."""
        async with self._lock:
            conn = self._require_conn()
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.path}: {exc}") from exc
            await self._rollback(conn)

    async def schema_version(self) -> int:
        async with self._lock:
            return await migrations.current_version(self._require_conn())

    async def pragmas(self) -> dict[str, Any]:
        """The connection's journal_mode, foreign_keys, busy_timeout and synchronous
        settings (for `incident-bot check` and the tests)."""
        async with self._lock:
            conn = self._require_conn()
            return {
                name: await self._pragma(conn, name) for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }

    @staticmethod
    async def _pragma(conn: aiosqlite.Connection, name: str) -> Any:
        rows = list(await conn.execute_fetchall(f"PRAGMA {name}"))
        return rows[0][0] if rows else None


Statement = tuple[str, tuple[Any, ...]]


async def _trip(conn: Any, statements: list[Statement], rows: bool) -> Any:
    """One trip to SQLite's thread running ``statements``. aiosqlite runs one callable per trip
    on its thread; ``_execute`` is how its own execute() does it, and the only way to send
    several statements in one trip."""
    return await conn._execute(_batch, conn, statements, rows)


def _batch(conn: aiosqlite.Connection, statements: list[Statement], rows: bool) -> Any:
    """On SQLite's thread: run ``statements`` in order; the last one's rows (``rows``) or row count."""
    db = conn._conn  # the sqlite3 connection, used only on this thread
    cursor = None
    for sql, params in statements:
        cursor = db.execute(sql, params)
    assert cursor is not None
    return cursor.fetchall() if rows else cursor.rowcount


class _SQLiteTransaction(SQLTransaction):
    """The Transaction protocol on SQLite (store/sql.py), plus what only SQLite's SQL says.

    Every statement goes to SQLite's thread, and each trip there costs a thread hand-off on
    both sides (profiled: about six per ``help`` were a fifth of the bot's CPU). So BEGIN
    IMMEDIATE and the writes whose result nobody reads (``_run``) wait and go along with the
    next statement that must answer, or with the COMMIT: a change that only writes is one
    trip. A deferred write that fails raises at that later statement, still inside the
    block, so the transaction rolls back as before.
    """

    now_sql = _NOW_SQL

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        reading: bool = False,
        keeping: bool = False,
        carry: list[Statement] | None = None,
    ) -> None:
        super().__init__(conn)
        self._reading = reading  # SQLiteStore.read(): no BEGIN, no writes of its own
        self._keeping = keeping  # SQLiteStore.later(): writes kept, nothing sent
        carried = carry or []
        if keeping:
            self._pending: list[Statement] = []
        elif reading:
            # store.later()'s writes, committed ahead of the first read of this block
            self._pending = [("BEGIN IMMEDIATE", ()), *carried, ("COMMIT", ())] if carried else []
        else:
            self._pending = [("BEGIN IMMEDIATE", ()), *carried]
        self._begun = False  # BEGIN has reached SQLite: a failure needs a ROLLBACK

    async def _send(self, sql: str, params: Iterable[Any], rows: bool) -> Any:
        """One trip: what waits, then ``sql``."""
        if self._keeping:
            raise RuntimeError("store.later() only writes; read in store.read() or store.transaction()")
        if self._reading and sql.lstrip()[:6].upper() != "SELECT":
            self._writing()
        statements, self._pending = [*self._pending, (sql, tuple(params))], []
        conn = self._conn
        self._begun = True
        return await _trip(conn, statements, rows)

    async def _commit(self) -> bool:
        """COMMIT, with the writes still waiting; False when the block sent nothing at all."""
        conn = self._conn
        self._finish()
        if not self._begun and len(self._pending) == 1:
            return False  # nothing read or written (or carried): no BEGIN was ever needed
        statements, self._pending = [*self._pending, ("COMMIT", ())], []
        self._begun = True
        await _trip(conn, statements, False)
        return True

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._send(sql, params, True))

    async def _run(self, sql: str, params: Iterable[Any] = ()) -> None:
        self._writing()
        self._pending.append((sql, tuple(params)))

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        self._writing()
        return int(await self._send(sql, params, False))

    def _writing(self) -> None:
        if self._reading:
            raise RuntimeError("store.read() is for reading; write in store.transaction()")

    async def _flush(self) -> None:
        """Send what waits (before using the connection directly)."""
        if len(self._pending) > 1 or not self._begun:
            await self._send("SELECT 1", (), False)

    def _time(self, value: datetime | None) -> str | None:
        return to_db_time(value)

    def _read_time(self, value: Any) -> datetime | None:
        return from_db_time(value)

    def _flag(self, value: bool) -> int:
        return int(value)

    async def create_incident(self, incident: Incident) -> Incident:
        row = await self._one(
            f"INSERT INTO incidents ({', '.join(INCIDENT_COLUMNS)}) VALUES ({marks(INCIDENT_COLUMNS)}) RETURNING number",
            self._incident_params(incident),
        )
        assert row is not None
        return incident.model_copy(update={"number": row["number"]})

    async def list_incidents_to_repair(self, ended_since: datetime) -> list[Incident]:
        # Two index ranges on (status, ended_at), not an OR that scans the table: the old
        # ended incidents are never read. Sorted here: an ORDER BY would make SQLite walk the
        # whole table in number order to merge the two parts.
        rows = await self._all(
            "SELECT * FROM incidents INDEXED BY incidents_status_ended WHERE status = ? "
            "UNION ALL SELECT * FROM incidents INDEXED BY incidents_status_ended WHERE status = ? AND ended_at >= ?",
            (Status.ACTIVE.value, Status.ENDED.value, to_db_time(ended_since)),
        )
        return sorted((self._incident(row) for row in rows), key=lambda i: i.number)

    async def incident_stats(self, team_ids: list[str], since: datetime) -> IncidentStats:
        if not team_ids:
            return IncidentStats()
        # Numbered parameters: the teams are ?1..?n, then the period's start and the statuses.
        n = len(team_ids)
        teams = f"team_id IN ({', '.join(f'?{i}' for i in range(1, n + 1))})"
        start, ended, starting, active = (f"?{n + i}" for i in range(1, 5))
        # resolve_ms: a virtual column (migration 0003), indexed per team and status in its order.
        resolved = (
            f"FROM incidents INDEXED BY incidents_team_resolve "
            f"WHERE {teams} AND status = {ended} AND resolve_ms IS NOT NULL AND started_at >= {start}"
        )
        totals = f"FROM incident_totals WHERE {teams}"
        # When no incident of these teams started before the period, the period holds them all
        # and the totals kept by triggers (migration 0006) are its figures: no row is counted.
        # Otherwise each figure is counted over the period (CASE evaluates only the branch it
        # takes; a MATERIALIZED CTE runs where first read, so `walk` runs only when needed).
        whole = (
            f"SELECT NOT EXISTS (SELECT 1 FROM incidents INDEXED BY incidents_team_severity "
            f"WHERE {teams} AND severity IN ({', '.join(map(str, SEVERITIES))}) AND started_at < {start}) AS yes"
        )
        # Each severity's count over the period is a range of incidents_team_severity (0005).
        severities = ", ".join(
            f"CASE WHEN (SELECT yes FROM whole) THEN (SELECT COALESCE(SUM(incidents), 0) {totals} AND severity = {k}) "
            f"ELSE (SELECT COUNT(*) FROM incidents INDEXED BY incidents_team_severity "
            f"WHERE {teams} AND severity = {k} AND started_at >= {start}) END AS sev{k}"
            for k in SEVERITIES
        )
        # One statement, so one trip to SQLite's thread (each trip costs a thread hand-off both
        # ways) and one snapshot for every figure. The median is the middle value, or the mean
        # of the two middle ones, found by LIMIT/OFFSET along the index in resolve_ms order
        # (LIMIT 0 when nothing was resolved: no walk looking for rows that are not there).
        # Wrapped in SELECT * because store.read() takes statements that begin with SELECT.
        rows = await self._all(
            f"SELECT * FROM (WITH whole AS MATERIALIZED ({whole}), "
            f"walk AS MATERIALIZED (SELECT COUNT(*) AS n, SUM(resolve_ms) AS total {resolved}), "
            f"ended AS MATERIALIZED (SELECT "
            f"CASE WHEN (SELECT yes FROM whole) THEN (SELECT COALESCE(SUM(resolved), 0) {totals}) "
            f"ELSE (SELECT n FROM walk) END AS n, "
            f"CASE WHEN (SELECT yes FROM whole) THEN (SELECT SUM(resolve_ms) {totals}) "
            f"ELSE (SELECT total FROM walk) END AS total) "
            f"SELECT (SELECT COUNT(*) FROM incidents WHERE {teams} AND status IN ({starting}, {active})) AS open_now, "
            f"{severities}, n, total, "
            f"(SELECT AVG(resolve_ms) FROM (SELECT resolve_ms {resolved} ORDER BY resolve_ms "
            f"LIMIT (2 - (SELECT n FROM ended) % 2) * ((SELECT n FROM ended) > 0) "
            f"OFFSET ((SELECT n FROM ended) - 1) / 2)) AS median "
            f"FROM ended)",
            [*team_ids, to_db_time(since), Status.ENDED.value, Status.STARTING.value, Status.ACTIVE.value],
        )
        row = rows[0]
        by_severity = {k: int(row[f"sev{k}"]) for k in SEVERITIES if row[f"sev{k}"]}
        count = int(row["n"])
        if count == 0:
            return IncidentStats(by_severity=by_severity, open_now=int(row["open_now"]))
        return IncidentStats(
            by_severity=by_severity,
            open_now=int(row["open_now"]),
            resolved=count,
            median_seconds=float(row["median"]) / 1000,
            # The sum is exact (integer milliseconds), so this is AVG(resolve_ms) to the last bit.
            mean_seconds=int(row["total"]) / count / 1000,
        )

    async def add_checklist_item(self, incident_number: int, text: str) -> ChecklistItem:
        await self._require_incident(incident_number)
        # Removed items keep their rows, so MAX + 1 never repeats a number.
        row = await self._one(
            "INSERT INTO checklist_items (incident_number, number, text) "
            "SELECT ?, COALESCE(MAX(number), 0) + 1, ? FROM checklist_items WHERE incident_number = ? "
            "RETURNING number",
            (incident_number, text, incident_number),
        )
        assert row is not None
        return ChecklistItem(incident_number=incident_number, number=row["number"], text=text)

    async def get_playbook(self, team_id: str, name: str) -> Playbook | None:
        row = await self._one("SELECT * FROM playbooks WHERE team_id = ? AND name = ?", (team_id, name))
        return self._playbook(row) if row else None

    async def list_playbooks(self, team_id: str) -> list[Playbook]:
        rows = await self._all("SELECT * FROM playbooks WHERE team_id = ? ORDER BY name", (team_id,))
        return [self._playbook(row) for row in rows]

    async def save_playbook(self, playbook: Playbook) -> None:
        if playbook.team_id is None:
            raise ValueError(f"playbook {playbook.name!r} has no team_id; config playbooks are not stored")
        await self._write(
            "INSERT INTO playbooks (team_id, name, description, default_severity, items) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (team_id, name) DO UPDATE SET name = excluded.name, description = excluded.description, "
            "default_severity = excluded.default_severity, items = excluded.items, "
            f"updated_at = {_NOW_SQL}",
            (playbook.team_id, playbook.name, playbook.description, playbook.default_severity, to_json(playbook.items)),
        )

    async def delete_playbook(self, team_id: str, name: str) -> bool:
        return await self._write("DELETE FROM playbooks WHERE team_id = ? AND name = ?", (team_id, name)) > 0

    # --- copying (store/copy.py; not part of the Transaction protocol) ------------------------

    async def snapshot(self) -> None:
        """BEGIN IMMEDIATE already keeps writers out until this transaction ends."""

    async def table_columns(self, table: str) -> set[str]:
        return {row["name"] for row in await self._all("SELECT name FROM pragma_table_info(?)", (table,))}

    async def count_rows(self, table: str) -> int:
        row = await self._one(f"SELECT COUNT(*) AS n FROM {table}")  # table names come from copy.TABLES only
        return int(row["n"]) if row else 0

    async def dump_rows(self, table: Table) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {', '.join(table.columns)} FROM {table.name} ORDER BY {table.order_by}")
        dumped = []
        for row in rows:
            values = {name: row[name] for name in table.columns}
            for name in table.times:
                values[name] = from_db_time(values[name])
            for name in table.flags:
                values[name] = bool(values[name])
            dumped.append(values)
        return dumped

    async def insert_rows(self, table: Table, rows: list[dict[str, Any]]) -> None:
        def param(name: str, value: Any) -> Any:
            if name in table.times:
                return to_db_time(value)
            return int(value) if name in table.flags else value

        sql = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks(table.columns)})"
        await self._flush()
        await self._conn.executemany(sql, [tuple(param(n, row[n]) for n in table.columns) for row in rows])

    async def last_numbers(self) -> dict[str, int]:
        rows = await self._all("SELECT name, seq FROM sqlite_sequence WHERE name IN ('incidents', 'timeline')")
        found = {row["name"]: int(row["seq"]) for row in rows}
        return {name: found.get(name, 0) for name in SEQUENCES}

    async def set_last_numbers(self, numbers: dict[str, int]) -> None:
        for name in SEQUENCES:
            await self._write("DELETE FROM sqlite_sequence WHERE name = ?", (name,))
            if numbers.get(name, 0) > 0:
                await self._write("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, numbers[name]))
