"""Numbered SQL migrations for every store backend, each applied in its own transaction.

The idea is mautrix-python's upgrade table: ``migrations/NNNN_name.sql`` files numbered
1, 2, 3… without gaps; the versions applied are rows of ``schema_version``; opening a
database applies the files above its version, one transaction per file, and refuses a
database whose version is above the newest file (written by a newer incident-bot).

One list for all backends: ``NNNN_name.sql`` is the migration (SQLite's dialect, and
every backend's when the SQL is portable); ``NNNN_name.postgresql.sql`` next to it
replaces it on PostgreSQL where the dialects differ. A backend file without its
``NNNN_name.sql`` is an error, so the versions cannot drift apart. Both record the
same name (``NNNN_name.sql``) in ``schema_version``.

A migration file holds plain SQL statements separated by ``;`` and no transaction
control (``BEGIN``/``COMMIT``): the runner wraps each file. ``PRAGMA foreign_keys`` has
no effect inside a transaction; a file that rebuilds a table can use
``PRAGMA defer_foreign_keys = ON`` instead. PostgreSQL files run as one script (the
simple query protocol), so dollar-quoted function bodies need no special care. A
backend's file of comments only records its version and changes nothing there.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import asyncpg
import structlog

from incident_bot import __version__
from incident_bot.store.base import SchemaTooNew

log = structlog.get_logger("incident_bot.store")

Dialect = Literal["sqlite", "postgresql"]
DIALECTS: tuple[Dialect, ...] = ("sqlite", "postgresql")

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(sqlite|postgresql))?\.sql$")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)

# Any constant shared by every incident-bot: two processes migrating one PostgreSQL database
# at once take turns on it (pg_advisory_xact_lock, released at commit or rollback).
_PG_MIGRATION_LOCK = 0x1_C1DE_4B07

_CREATE_VERSION_TABLE_PG = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


class MigrationError(Exception):
    """A migration file is malformed or failed to apply (its transaction was rolled back)."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str  # the file name, e.g. "0001_initial.sql"
    sql: str

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql, self.name)


def split_statements(sql: str, name: str = "<sql>") -> list[str]:
    """Cut a script into single statements.

    ``executescript`` would commit any open transaction first, so the runner executes
    statement by statement; ``sqlite3.complete_statement`` knows about string literals,
    comments and trigger bodies, so a ``;`` inside them does not end a statement.
    """
    statements: list[str] = []
    pieces = sql.split(";")
    buffer = ""
    for piece in pieces[:-1]:
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if not _only_comments(buffer):
                statements.append(buffer.strip())
            buffer = ""
    buffer += pieces[-1]
    if not _only_comments(buffer):
        raise MigrationError(f"{name}: the last statement does not end with ';': {buffer.strip()[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return _COMMENTS.sub("", text).strip().strip(";").strip() == ""


def migrations_dir() -> Traversable:
    """Where the shipped migration files live (inside the installed package)."""
    return resources.files("incident_bot.store").joinpath("migrations")


def load_migrations(directory: Traversable | Path | None = None, dialect: Dialect = "sqlite") -> list[Migration]:
    """Read every ``NNNN_name.sql`` file, ordered, with ``dialect``'s own file where there is
    one; versions must run 1, 2, 3… without gaps.

    Synchronous file reads: call it through ``asyncio.to_thread`` from the event loop.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    folder = directory if directory is not None else migrations_dir()
    base: dict[str, Migration] = {}
    variants: dict[str, Traversable | Path] = {}
    any_variant: set[str] = set()
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise MigrationError(
                    f"{entry.name}: migration files are named NNNN_name.sql (or NNNN_name.postgresql.sql for one backend)"
                )
            continue
        name = f"{match.group(1)}_{match.group(2)}.sql"
        if match.group(3) is None:
            base[name] = Migration(int(match.group(1)), name, entry.read_text(encoding="utf-8"))
        else:
            any_variant.add(name)
            if match.group(3) == dialect:
                variants[name] = entry
    for name in sorted(any_variant - set(base)):
        raise MigrationError(f"{name.removesuffix('.sql')}.<backend>.sql has no {name}: every version needs its common file")
    found = [
        Migration(m.version, m.name, variants[m.name].read_text(encoding="utf-8")) if m.name in variants else m
        for m in base.values()
    ]
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration versions must run 1, 2, 3… without gaps or repeats; expected {expected:04d}, found {migration.name}"
            )
    return found


async def current_version(conn: aiosqlite.Connection) -> int:
    """The highest version recorded in ``schema_version`` (0 for a new database)."""
    rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
    return int(rows[0][0])


async def upgrade(conn: aiosqlite.Connection, database: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations above the database's version; return the version reached.

    ``conn`` must be in autocommit mode (``isolation_level=None``): each file runs in its
    own ``BEGIN IMMEDIATE`` … ``COMMIT`` together with its ``schema_version`` row, so a
    failure leaves the database at the previous version. Raises ``SchemaTooNew`` when the
    database is newer than the newest migration; ``database`` names it in that message.
    """
    await conn.execute(_CREATE_VERSION_TABLE)
    newest = migrations[-1] if migrations else None
    newest_version = newest.version if newest else 0
    version = await current_version(conn)
    _refuse_newer(version, newest, database)
    for migration in migrations:
        if migration.version <= version:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            version = await current_version(conn)
            if migration.version <= version:
                await conn.execute("COMMIT")
                continue
            _refuse_newer(version, newest, database)
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (migration.version, migration.name))
            await conn.execute("COMMIT")
        except BaseException as exc:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back on its own (e.g. disk full)
            if isinstance(exc, sqlite3.Error):
                raise MigrationError(
                    f"migration {migration.name} failed on {database}: {exc}; the database stays at schema version {version}"
                ) from exc
            raise
        version = migration.version
        log.info("store.migrated", database=database, version=version, file=migration.name)
    if version != newest_version:  # pragma: no cover - guarded by _refuse_newer above
        raise MigrationError(f"{database}: expected schema version {newest_version}, found {version}")
    return version


def _refuse_newer(version: int, newest: Migration | None, database: str) -> None:
    newest_version = newest.version if newest else 0
    if version > newest_version:
        newest_name = newest.name if newest else "none"
        raise SchemaTooNew(
            f"The database {database} has schema version {version}, but this incident-bot "
            f"({__version__}) knows schema versions up to {newest_version} (newest migration: "
            f"{newest_name}). It was written by a newer incident-bot: run that version, or "
            f"restore a backup made with this one."
        )


# --- PostgreSQL -------------------------------------------------------------------------


async def current_version_pg(conn: Any) -> int:
    """``current_version`` on an asyncpg connection (0 when ``schema_version`` is missing)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


async def upgrade_pg(conn: Any, database: str, migrations: Sequence[Migration]) -> int:
    """``upgrade`` on an asyncpg connection (``conn``, outside any transaction).

    Each file runs as one script in its own transaction together with its
    ``schema_version`` row, after an advisory lock that makes concurrent starts of several
    incident-bots take turns; a failure leaves the database at the previous version.
    """
    newest = migrations[-1] if migrations else None
    newest_version = newest.version if newest else 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
        version = await current_version_pg(conn)
        _refuse_newer(version, newest, database)  # before creating anything
        await conn.execute(_CREATE_VERSION_TABLE_PG)
    for migration in migrations:
        if migration.version <= version:
            continue
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
                version = await current_version_pg(conn)  # another process may have migrated meanwhile
                if migration.version <= version:
                    continue
                _refuse_newer(version, newest, database)
                if not _only_comments(migration.sql):  # a file of comments only: nothing to do on this backend
                    await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.name} failed on {database}: {exc}; the database stays at schema version {version}"
            ) from exc
        version = migration.version
        log.info("store.migrated", database=database, version=version, file=migration.name)
    if version != newest_version:  # pragma: no cover - guarded by _refuse_newer above
        raise MigrationError(f"{database}: expected schema version {newest_version}, found {version}")
    return version
