"""Backends for the store contract tests: each makes fresh stores on one database per test.

Every test in test_contract.py that takes ``store`` or ``backend`` runs on each backend in
BACKENDS: SQLite on a temporary file, PostgreSQL in a fresh schema of a throwaway cluster
(tests/support/postgres.py) that each pytest-xdist worker starts once, on first use. The
PostgreSQL runs are skipped only when its binaries are missing and cannot be installed.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from incident_bot.store.base import Store
from incident_bot.store.migrations import load_migrations
from incident_bot.store.postgres import PostgresStore
from incident_bot.store.sqlite import SQLiteStore
from tests.support.needs import unavailable
from tests.support.postgres import Cluster, ensure_installed


class Backend(ABC):
    """One database for one test, and the few things a test needs to know or forge about it."""

    name: str
    location: str  # how SchemaTooNew's message names the database
    latest_version: int  # the newest schema version this code knows

    @abstractmethod
    def make(self) -> Store:
        """A new, unopened store on this test's database (the same database every call)."""

    @abstractmethod
    async def set_schema_version(self, version: int) -> None:
        """Mark the (closed) database as written by a newer incident-bot."""


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


_schemas = itertools.count(1)


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, cluster: Cluster, schema: str) -> None:
        self.cluster = cluster
        self.schema = schema
        self.dsn = cluster.dsn(search_path=schema)
        self.location = self.dsn
        self.latest_version = load_migrations(dialect="postgresql")[-1].version

    @classmethod
    async def create(cls, cluster: Cluster) -> PostgresBackend:
        """A backend on a new, empty schema of the cluster (a new database for each test, cheaply)."""
        schema = f"t{next(_schemas)}"
        conn = await asyncpg.connect(cluster.dsn())
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        finally:
            await conn.close()
        return cls(cluster, schema)

    def make(self) -> PostgresStore:
        return PostgresStore(self.dsn)

    async def set_schema_version(self, version: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, f"{version:04d}_future.sql")
        finally:
            await conn.close()


BACKENDS: dict[str, type[Backend]] = {"sqlite": SQLiteBackend, "postgresql": PostgresBackend}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | str]:
    """This worker's PostgreSQL cluster, or why there is none (the tests on it skip)."""
    bindir, why = ensure_installed()
    if bindir is None:
        yield why
        return
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


async def postgres_backend(request: pytest.FixtureRequest) -> PostgresBackend:
    cluster = request.getfixturevalue("pg_cluster")
    if isinstance(cluster, str):
        unavailable(cluster)
    return await PostgresBackend.create(cluster)


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "postgresql":
        return await postgres_backend(request)
    return SQLiteBackend(tmp_path)


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


@pytest.fixture
async def pg_backend(request: pytest.FixtureRequest) -> PostgresBackend:
    return await postgres_backend(request)
