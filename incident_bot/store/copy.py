"""Copy one installation's database to another backend (``incident-bot migrate-store``).

Table by table, in foreign-key order, inside one transaction on each side: the source is
read from one snapshot, the target gets everything or nothing. A target that holds any row
is refused; afterwards the row counts of every table and the last numbers handed out
(incidents, timeline ids) are compared before the target commits.

Values cross as Python values (aware UTC datetimes, booleans); JSON columns cross as their
text, unchanged. Each backend's transaction has the few extra methods of ``Copyable``; the
table list below must match both schemas exactly (checked), so a migration that adds a
column fails here loudly until this list learns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from incident_bot.store.base import Store
from incident_bot.store.values import INCIDENT_COLUMNS, INCIDENT_TIMES


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    order_by: str
    times: frozenset[str] = field(default_factory=frozenset)
    flags: frozenset[str] = field(default_factory=frozenset)  # booleans (0/1 in SQLite)


_STAMPS = ("created_at", "updated_at")

# Parents before children (timeline and checklist_items reference incidents).
TABLES: tuple[Table, ...] = (
    Table("incidents", ("number", *INCIDENT_COLUMNS, *_STAMPS), "number", INCIDENT_TIMES | set(_STAMPS)),
    Table(
        "timeline",
        ("id", "incident_number", "at", "kind", "actor_id", "text", "post_id", "data", "deleted", "created_at"),
        "id",
        frozenset({"at", "created_at"}),
        frozenset({"deleted"}),
    ),
    Table(
        "checklist_items",
        ("incident_number", "number", "text", "post_id", "done_by", "done_at", "assignee_id", "removed", *_STAMPS),
        "incident_number, number",
        frozenset({"done_at", *_STAMPS}),
        frozenset({"removed"}),
    ),
    Table(
        "playbooks",
        ("team_id", "name", "description", "default_severity", "items", *_STAMPS),
        "team_id, name",
        frozenset(_STAMPS),
    ),
    Table("processed_events", ("key", "at", "incident_number"), "key", frozenset({"at"})),
    Table("replies", ("command_key", "reply_post_id", "at"), "command_key", frozenset({"at"})),
    Table("bot_state", ("key", "value", "updated_at"), "key", frozenset({"updated_at"})),
    Table(
        "outbox",
        ("key", "incident_number", "channel_id", "root_id", "message", "created_at", "attempts", "done_at"),
        "key",
        frozenset({"created_at", "done_at"}),
    ),
)

# What the numbering remembers beyond the rows: the last number ever handed out.
SEQUENCES = ("incidents", "timeline")


class CopyError(Exception):
    """The copy was refused or did not verify; the target was left unchanged."""


@runtime_checkable
class Copyable(Protocol):
    """What a backend's transaction offers for copying, besides the Transaction protocol."""

    async def snapshot(self) -> None:
        """Make every later read of this transaction see one snapshot (call first)."""

    async def table_columns(self, table: str) -> set[str]:
        """The table's stored columns (generated ones left out)."""

    async def count_rows(self, table: str) -> int: ...

    async def dump_rows(self, table: Table) -> list[dict[str, Any]]:
        """Every row, ordered by ``table.order_by``, as Python values (JSON as text)."""

    async def insert_rows(self, table: Table, rows: list[dict[str, Any]]) -> None: ...

    async def last_numbers(self) -> dict[str, int]:
        """The last number handed out per SEQUENCES entry (0 when none)."""

    async def set_last_numbers(self, numbers: dict[str, int]) -> None: ...


def _copyable(tx: object, side: str) -> Copyable:
    if not isinstance(tx, Copyable):
        raise CopyError(f"the {side} store cannot be copied ({type(tx).__name__})")
    return tx


async def _check_columns(tx: Copyable, side: str) -> None:
    for table in TABLES:
        found = await tx.table_columns(table.name)
        if found != set(table.columns):
            raise CopyError(
                f"{side} table {table.name} has columns {sorted(found)}, the copy knows {sorted(table.columns)}; "
                "store/copy.py must learn the newer schema first"
            )


async def copy_store(source: Store, target: Store) -> dict[str, int]:
    """Copy every table of the open ``source`` into the open, empty ``target``; the row
    count per table. CopyError (target unchanged) when the target holds rows or the
    copy does not verify."""
    async with source.transaction() as src_tx:
        src = _copyable(src_tx, "source")
        await src.snapshot()
        await _check_columns(src, "source")
        async with target.transaction() as dst_tx:
            dst = _copyable(dst_tx, "target")
            await _check_columns(dst, "target")
            filled = {t.name: n for t in TABLES if (n := await dst.count_rows(t.name))}
            if filled:
                listed = ", ".join(f"{name}: {n}" for name, n in filled.items())
                raise CopyError(f"the target database is not empty ({listed} rows); copy into a new, empty database")
            counts: dict[str, int] = {}
            for table in TABLES:
                rows = await src.dump_rows(table)
                await dst.insert_rows(table, rows)
                counts[table.name] = len(rows)
            numbers = await src.last_numbers()
            await dst.set_last_numbers(numbers)
            for table in TABLES:
                expected = await src.count_rows(table.name)
                copied = await dst.count_rows(table.name)
                if not expected == copied == counts[table.name]:
                    raise CopyError(f"table {table.name}: {expected} rows in the source, {copied} in the target")
            if await dst.last_numbers() != numbers:
                raise CopyError(f"last numbers differ after the copy: {numbers} != {await dst.last_numbers()}")
    return counts
