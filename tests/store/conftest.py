"""Backends for the store contract tests: each makes fresh stores on one database per test.

A second backend (PostgreSQL) joins by subclassing Backend and adding itself to BACKENDS;
every test in test_contract.py that takes ``store`` or ``backend`` then runs against it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from incident_bot.store.base import Store
from incident_bot.store.migrations import load_migrations
from incident_bot.store.sqlite import SQLiteStore


class Backend:
    """One database for one test, and the few things a test needs to know or forge about it."""

    name: str
    location: str  # how SchemaTooNew's message names the database
    latest_version: int  # the newest schema version this code knows

    def make(self) -> Store:
        """A new, unopened store on this test's database (the same database every call)."""
        raise NotImplementedError

    async def set_schema_version(self, version: int) -> None:
        """Mark the (closed) database as written by a newer incident-bot."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "incident-bot.db"
        self.location = str(self.path)
        self.latest_version = load_migrations()[-1].version

    def make(self) -> SQLiteStore:
        return SQLiteStore(self.path)

    async def set_schema_version(self, version: int) -> None:
        async with aiosqlite.connect(self.path) as conn:
            await conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (version, f"{version:04d}_future.sql"))
            await conn.commit()


BACKENDS: dict[str, type[Backend]] = {"sqlite": SQLiteBackend}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    store = backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> SQLiteBackend:
    return SQLiteBackend(tmp_path)


@pytest.fixture
async def sqlite_store(sqlite_backend: SQLiteBackend) -> AsyncIterator[SQLiteStore]:
    store = sqlite_backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
