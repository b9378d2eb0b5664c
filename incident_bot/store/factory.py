"""Which backend a ``database`` setting names, and the store for it.

- ``postgresql://…`` or ``postgres://…`` (asyncpg's DSN forms, e.g.
  ``postgresql://bot@db.internal/incidents`` or ``postgresql://bot@/incidents?host=/run/postgresql``):
  PostgreSQL;
- ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` or a plain path: SQLite (the default).

config.py reads the setting in the same shape (it may not import this layer): a Path for
SQLite, the URL text for PostgreSQL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from incident_bot.store.base import Store
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


def open_store(database: str | os.PathLike[str]) -> Store:
    """The store for this ``database`` setting, not connected yet: ``await store.open()``
    connects and migrates (and raises SchemaTooNew or StoreUnavailable)."""
    if backend_of(database) == "postgresql":
        return PostgresStore(str(database))
    return SQLiteStore(sqlite_path(database))
