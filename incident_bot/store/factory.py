"""Which backend a ``database`` setting names, and the store for it.

- ``postgresql://…`` or ``postgres://…`` (asyncpg's DSN forms, e.g.
  ``postgresql://bot@db.internal/incidents`` or ``postgresql://bot@/incidents?host=/run/postgresql``):
  PostgreSQL;
- ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or a plain path: SQLite (the default).

config.py reads the setting in the same shape (it may not import this layer): a Path for
SQLite, the URL text for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from incident_bot.store import migrations
from incident_bot.store.base import Lease, LeaseView, Store, StoreUnavailable
from incident_bot.store.lease import PostgresLease
from incident_bot.store.postgres import PostgresStore, redact
from incident_bot.store.sqlite import SQLiteStore

Backend = Literal["sqlite", "postgresql"]
POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_PREFIX = "sqlite:///"


def backend_of(database: str | os.PathLike[str]) -> Backend:
    """``"postgresql"`` for a PostgreSQL URL, ``"sqlite"`` for anything else."""
    if isinstance(database, str) and database.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in database:
        return "postgresql"
    return "sqlite"


def sqlite_path(database: str | os.PathLike[str]) -> Path:
    """The file a SQLite setting names (``sqlite:///x.db`` → ``x.db``)."""
    if isinstance(database, str) and database.lower().startswith(SQLITE_PREFIX):
        return Path(database[len(SQLITE_PREFIX) :])
    return Path(database)


def describe(database: str | os.PathLike[str]) -> str:
    """The database for logs and messages: the path, or the URL without its password."""
    return redact(str(database)) if backend_of(database) == "postgresql" else str(sqlite_path(database))


def open_store(database: str | os.PathLike[str], on_commit: Callable[[float], None] | None = None) -> Store:
    """The store for this ``database`` setting, not connected yet: ``await store.open()``
    connects and migrates (and raises SchemaTooNew or StoreUnavailable). ``on_commit`` is
    told how many seconds each COMMIT took."""
    if backend_of(database) == "postgresql":
        return PostgresStore(str(database), on_commit=on_commit)
    return SQLiteStore(sqlite_path(database), on_commit=on_commit)


async def peek_schema_version(database: str | os.PathLike[str]) -> int:
    """The schema version of an existing database, read without changing it (0 for an empty
    PostgreSQL database); raises StoreUnavailable when it cannot be read as one of ours.
    A SQLite file must exist (``incident-bot check`` looks before it asks)."""
    if backend_of(database) == "postgresql":
        return await PostgresStore(str(database)).peek_schema_version()
    return await asyncio.to_thread(_sqlite_schema_version, sqlite_path(database))


def _sqlite_schema_version(path: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc


def newest_schema_version(database: str | os.PathLike[str]) -> int:
    """The schema version this code migrates ``database`` to (synchronous file reads)."""
    dialect: Literal["sqlite", "postgresql"] = backend_of(database)
    return max((m.version for m in migrations.load_migrations(dialect=dialect)), default=0)


def open_lease(store: Store, holder: str, ttl: float) -> Lease | None:
    """The leader lease replicas of ``store``'s database compete for, on its own connection
    (connected at first use); None for SQLite, whose one process always leads."""
    if isinstance(store, PostgresStore):
        return PostgresLease(store, holder, ttl)
    return None


async def peek_lease(database: str | os.PathLike[str]) -> LeaseView | None:
    """The leader lease as it stands, read without taking it (None for SQLite: no lease);
    raises StoreUnavailable when it cannot be read (no such database, schema older than 4)."""
    if backend_of(database) != "postgresql":
        return None
    lease = PostgresLease(PostgresStore(str(database)), holder="", ttl=0.0)
    try:
        return await lease.view()
    finally:
        await lease.close()
