"""The Transaction protocol once, in the SQL both backends speak.

Statements use ``?`` placeholders (PostgreSQL's transaction numbers them ``$1, $2…``);
each backend says how a time, a flag and the current time are written (``_time``,
``_flag``, ``now_sql``) and how a time is read (``_read_time``), and keeps to itself only
what its SQL cannot share: how incident and item numbers are handed out, how playbook names
fold case, the queries tuned to its planner, and copying (store/copy.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from incident_bot.domain.models import ChecklistItem, Incident, OutboxEntry, Playbook, Status, TimelineEvent
from incident_bot.store.values import INCIDENT_COLUMNS, INCIDENT_FIELDS, INCIDENT_TIMES, from_json, incident_values, to_json

Row = Any  # sqlite3.Row or an asyncpg Record: both read by column name
_KEYS_PER_STATEMENT = 400  # command_states: twice this many parameters, well under either backend's limit


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ?`` for ``values``."""
    return ", ".join("?" * len(values))


class SQLTransaction(ABC):
    """A transaction on one connection, valid inside its store's ``async with`` only."""

    now_sql: ClassVar[str]  # the current time as the backend stores it

    def __init__(self, conn: Any) -> None:
        self._connection: Any | None = conn

    def _finish(self) -> None:
        self._connection = None

    @property
    def _conn(self) -> Any:
        if self._connection is None:
            raise RuntimeError("this transaction has ended; use the store inside `async with store.transaction()`")
        return self._connection

    # --- what each backend says ---------------------------------------------------------------

    @abstractmethod
    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """Every row the statement returns."""

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def _run(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Run one statement whose row count nobody needs."""
        await self._write(sql, params)

    @abstractmethod
    def _time(self, value: datetime | None) -> Any:
        """A time as the backend stores it (to the millisecond, UTC)."""

    @abstractmethod
    def _read_time(self, value: Any) -> datetime | None:
        """A stored time as an aware UTC datetime."""

    @abstractmethod
    def _flag(self, value: bool) -> Any:
        """A boolean as the backend stores it."""

    def _at(self, value: Any) -> datetime:
        """A time column that is never NULL."""
        read = self._read_time(value)
        if read is None:
            raise ValueError("a NOT NULL time column read NULL")
        return read

    # --- rows and models -------------------------------------------------------------------------

    def _incident_params(self, incident: Incident) -> list[Any]:
        return [self._time(v) if isinstance(v, datetime) else v for v in incident_values(incident)]

    def _incident(self, row: Row) -> Incident:
        values = {name: row[name] for name in INCIDENT_FIELDS}
        for name in INCIDENT_TIMES:
            values[name] = self._read_time(values[name])
        return Incident.model_validate(values)

    def _timeline(self, row: Row) -> TimelineEvent:
        return TimelineEvent(
            id=row["id"],
            incident_number=row["incident_number"],
            at=self._at(row["at"]),
            kind=row["kind"],
            actor_id=row["actor_id"],
            text=row["text"],
            post_id=row["post_id"],
            data=from_json(row["data"]),
            deleted=bool(row["deleted"]),
        )

    def _item(self, row: Row) -> ChecklistItem:
        values = {name: row[name] for name in ChecklistItem.model_fields}
        return ChecklistItem.model_validate(
            values | {"done_at": self._read_time(values["done_at"]), "removed": bool(values["removed"])}
        )

    def _outbox(self, row: Row) -> OutboxEntry:
        values = {name: row[name] for name in OutboxEntry.model_fields}
        return OutboxEntry.model_validate(
            values | {"created_at": self._at(values["created_at"]), "done_at": self._read_time(values["done_at"])}
        )

    @staticmethod
    def _playbook(row: Row) -> Playbook:
        return Playbook(
            team_id=row["team_id"],
            name=row["name"],
            description=row["description"],
            default_severity=row["default_severity"],
            items=from_json(row["items"]),
        )

    async def _update(self, table: str, values: dict[str, Any], where: dict[str, Any], missing: str, stamp: bool = True) -> None:
        """UPDATE one row of ``table`` (and its ``updated_at``, ``stamp``); KeyError ``missing`` when there is none."""
        assignments = ", ".join(f"{column} = ?" for column in values) + (f", updated_at = {self.now_sql}" if stamp else "")
        condition = " AND ".join(f"{column} = ?" for column in where)
        if await self._write(f"UPDATE {table} SET {assignments} WHERE {condition}", [*values.values(), *where.values()]) == 0:
            raise KeyError(missing)

    async def _require_incident(self, number: int) -> None:
        if await self._one("SELECT 1 FROM incidents WHERE number = ?", (number,)) is None:
            raise KeyError(f"no incident #{number}")

    # --- idempotency -------------------------------------------------------------------

    async def event_seen(self, key: str) -> bool:
        return await self._one("SELECT 1 FROM processed_events WHERE key = ?", (key,)) is not None

    async def record_event(self, key: str, at: datetime, incident_number: int | None = None) -> None:
        await self._run(
            "INSERT INTO processed_events (key, at, incident_number) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (key, self._time(at), incident_number),
        )

    async def prune_events(self, before: datetime) -> int:
        return await self._write("DELETE FROM processed_events WHERE at < ?", (self._time(before),))

    async def prune_replies(self, before: datetime) -> int:
        return await self._write("DELETE FROM replies WHERE at < ?", (self._time(before),))

    async def prune_outbox(self, before: datetime) -> int:
        return await self._write("DELETE FROM outbox WHERE done_at < ?", (self._time(before),))

    async def bookkeeping_counts(self) -> dict[str, int]:
        row = await self._one(
            "SELECT (SELECT COUNT(*) FROM processed_events) AS events, (SELECT COUNT(*) FROM replies) AS replies, "
            "(SELECT COUNT(*) FROM outbox) AS outbox"
        )
        assert row is not None
        return {name: int(row[name]) for name in ("events", "replies", "outbox")}

    # --- replies -------------------------------------------------------------------------

    async def get_reply(self, command_key: str) -> str | None:
        row = await self._one("SELECT reply_post_id FROM replies WHERE command_key = ?", (command_key,))
        return str(row["reply_post_id"]) if row else None

    async def record_reply(self, command_key: str, reply_post_id: str, at: datetime) -> None:
        await self._run(
            "INSERT INTO replies (command_key, reply_post_id, at) VALUES (?, ?, ?) ON CONFLICT (command_key) DO NOTHING",
            (command_key, reply_post_id, self._time(at)),
        )

    async def command_state(self, key: str) -> tuple[bool, bool]:
        row = await self._one(
            "SELECT EXISTS (SELECT 1 FROM replies WHERE command_key = ?) AS replied, "
            "EXISTS (SELECT 1 FROM processed_events WHERE key = ?) AS seen",
            (key, key),
        )
        assert row is not None
        return bool(row["replied"]), bool(row["seen"])

    async def command_states(self, keys: Sequence[str]) -> dict[str, tuple[bool, bool]]:
        states = {key: (False, False) for key in keys}
        unique = list(states)
        for first in range(0, len(unique), _KEYS_PER_STATEMENT):
            chunk = unique[first : first + _KEYS_PER_STATEMENT]
            rows = await self._all(
                f"SELECT 'r' AS part, command_key AS k FROM replies WHERE command_key IN ({marks(chunk)}) "
                f"UNION ALL SELECT 'e', key FROM processed_events WHERE key IN ({marks(chunk)})",
                (*chunk, *chunk),
            )
            for row in rows:
                replied, seen = states[row["k"]]
                states[row["k"]] = (True, seen) if row["part"] == "r" else (replied, True)
        return states

    # --- incidents -------------------------------------------------------------------------

    async def save_incident(self, incident: Incident) -> None:
        values = dict(zip(INCIDENT_COLUMNS, self._incident_params(incident), strict=True))
        await self._update("incidents", values, {"number": incident.number}, f"no incident #{incident.number}")

    async def get_incident(self, number: int) -> Incident | None:
        row = await self._one("SELECT * FROM incidents WHERE number = ?", (number,))
        return self._incident(row) if row else None

    async def get_incident_by_channel(self, channel_id: str) -> Incident | None:
        row = await self._one("SELECT * FROM incidents WHERE channel_id = ?", (channel_id,))
        return self._incident(row) if row else None

    async def get_incident_by_command_post(self, post_id: str) -> Incident | None:
        row = await self._one("SELECT * FROM incidents WHERE command_post_id = ? ORDER BY number LIMIT 1", (post_id,))
        return self._incident(row) if row else None

    async def list_incidents(
        self,
        team_ids: list[str],
        statuses: list[Status],
        limit: int,
        offset: int = 0,
    ) -> tuple[list[Incident], int]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must not be negative (got {limit}, {offset})")
        if not team_ids or not statuses:
            return [], 0
        where = f"team_id IN ({marks(team_ids)}) AND status IN ({marks(statuses)})"
        params = [*team_ids, *(Status(s).value for s in statuses)]
        count = await self._one(f"SELECT COUNT(*) AS n FROM incidents WHERE {where}", params)
        total = int(count["n"]) if count else 0
        if limit == 0 or offset >= total:
            return [], total
        rows = await self._all(
            f"SELECT * FROM incidents WHERE {where} ORDER BY number DESC LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return [self._incident(row) for row in rows], total

    async def list_incidents_in_status(self, statuses: list[Status]) -> list[Incident]:
        if not statuses:
            return []
        rows = await self._all(
            f"SELECT * FROM incidents WHERE status IN ({marks(statuses)}) ORDER BY number",
            [Status(s).value for s in statuses],
        )
        return [self._incident(row) for row in rows]

    async def due_reminders(self, now: datetime) -> list[Incident]:
        rows = await self._all(
            "SELECT * FROM incidents WHERE status = ? AND next_reminder_at IS NOT NULL AND next_reminder_at <= ? "
            "ORDER BY next_reminder_at, number",
            (Status.ACTIVE.value, self._time(now)),
        )
        return [self._incident(row) for row in rows]

    # --- timeline ------------------------------------------------------------------------------

    async def add_timeline(self, event: TimelineEvent) -> TimelineEvent:
        await self._require_incident(event.incident_number)
        row = await self._one(
            "INSERT INTO timeline (incident_number, at, kind, actor_id, text, post_id, data, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                event.incident_number,
                self._time(event.at),
                event.kind.value,
                event.actor_id,
                event.text,
                event.post_id,
                to_json(event.data),
                self._flag(event.deleted),
            ),
        )
        assert row is not None
        return event.model_copy(update={"id": row["id"]})

    async def update_timeline(self, event: TimelineEvent) -> None:
        values = {
            "at": self._time(event.at),
            "kind": event.kind.value,
            "actor_id": event.actor_id,
            "text": event.text,
            "post_id": event.post_id,
            "data": to_json(event.data),
            "deleted": self._flag(event.deleted),
        }
        where = {"id": event.id, "incident_number": event.incident_number}
        await self._update(
            "timeline", values, where, f"no timeline event {event.id} in incident #{event.incident_number}", stamp=False
        )

    async def list_timeline(self, incident_number: int, include_deleted: bool = False) -> list[TimelineEvent]:
        live = "" if include_deleted else "AND NOT deleted"
        rows = await self._all(f"SELECT * FROM timeline WHERE incident_number = ? {live} ORDER BY at, id", (incident_number,))
        return [self._timeline(row) for row in rows]

    async def get_timeline_by_post(self, incident_number: int, post_id: str) -> TimelineEvent | None:
        row = await self._one(
            "SELECT * FROM timeline WHERE incident_number = ? AND post_id = ? AND kind = 'post_pinned' "
            "AND NOT deleted ORDER BY id LIMIT 1",
            (incident_number, post_id),
        )
        return self._timeline(row) if row else None

    # --- checklist ---------------------------------------------------------------------------

    async def save_checklist_item(self, item: ChecklistItem) -> None:
        values = {
            "text": item.text,
            "post_id": item.post_id,
            "done_by": item.done_by,
            "done_at": self._time(item.done_at),
            "assignee_id": item.assignee_id,
            "removed": self._flag(item.removed),
        }
        where = {"incident_number": item.incident_number, "number": item.number}
        await self._update(
            "checklist_items", values, where, f"no checklist item {item.number} in incident #{item.incident_number}"
        )

    async def list_checklist(self, incident_number: int, include_removed: bool = False) -> list[ChecklistItem]:
        live = "" if include_removed else "AND NOT removed"
        rows = await self._all(
            f"SELECT * FROM checklist_items WHERE incident_number = ? {live} ORDER BY number", (incident_number,)
        )
        return [self._item(row) for row in rows]

    async def get_checklist_item_by_post(self, post_id: str) -> ChecklistItem | None:
        row = await self._one("SELECT * FROM checklist_items WHERE post_id = ?", (post_id,))
        return self._item(row) if row else None

    # --- outbox ----------------------------------------------------------------------------

    async def add_outbox(self, entry: OutboxEntry) -> bool:
        added = await self._write(
            "INSERT INTO outbox (key, incident_number, channel_id, root_id, message, created_at, attempts, done_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (
                entry.key,
                entry.incident_number,
                entry.channel_id,
                entry.root_id,
                entry.message,
                self._time(entry.created_at),
                entry.attempts,
                self._time(entry.done_at),
            ),
        )
        return added > 0

    async def pending_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        rows = await self._all("SELECT * FROM outbox WHERE done_at IS NULL ORDER BY created_at, key LIMIT ?", (limit,))
        return [self._outbox(row) for row in rows]

    async def outbox_depth(self) -> int:
        row = await self._one("SELECT COUNT(*) AS n FROM outbox WHERE done_at IS NULL")
        return int(row["n"]) if row else 0

    async def get_outbox(self, key: str) -> OutboxEntry | None:
        row = await self._one("SELECT * FROM outbox WHERE key = ?", (key,))
        return self._outbox(row) if row else None

    async def save_outbox(self, entry: OutboxEntry) -> None:
        await self._write(
            "UPDATE outbox SET attempts = ?, done_at = ? WHERE key = ?", (entry.attempts, self._time(entry.done_at), entry.key)
        )

    # --- state -------------------------------------------------------------------------------

    async def get_state(self, key: str) -> Any | None:
        row = await self._one("SELECT value FROM bot_state WHERE key = ?", (key,))
        return from_json(row["value"]) if row else None

    async def set_state(self, key: str, value: Any) -> None:
        await self._run(
            "INSERT INTO bot_state (key, value) VALUES (?, ?) "
            f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = {self.now_sql}",
            (key, to_json(value)),
        )
