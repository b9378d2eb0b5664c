"""`incident-bot migrate-store`: a seeded SQLite installation to PostgreSQL and back, every table compared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from incident_bot.cli import _migrate_store
from incident_bot.domain.models import Incident, Playbook, Status, TimelineEvent, TimelineKind
from incident_bot.store.base import Store
from incident_bot.store.copy import TABLES, Copyable
from incident_bot.store.factory import open_store
from tests.store.conftest import PostgresBackend

T0 = datetime(2026, 11, 26, 14, 2, 0, 123000, tzinfo=UTC)


async def seed(path: Path) -> None:
    store = open_store(path)
    await store.open()
    try:
        async with store.transaction() as tx:
            for i in range(1, 6):
                incident = await tx.create_incident(
                    Incident(
                        team_id="team-ops" if i % 2 else "team-web",
                        title=f"Outage {i} ✨",
                        severity=1 + i % 4,
                        status=Status.ENDED if i < 3 else Status.ACTIVE,
                        commander_id="u-alice",
                        started_by="u-bob",
                        origin_channel_id="ch-incidents",
                        channel_id=f"ch-{i}",
                        started_at=T0 + timedelta(hours=i),
                        ended_at=T0 + timedelta(hours=i, minutes=30) if i < 3 else None,
                        next_reminder_at=None if i < 3 else T0 + timedelta(days=1),
                    )
                )
                n = incident.number
                for k in range(3):
                    event = await tx.add_timeline(
                        TimelineEvent(
                            incident_number=n,
                            at=T0 + timedelta(minutes=k),
                            kind=TimelineKind.NOTE,
                            text=f"note {k}",
                            data={"k": k, "z": [1.5, None]},
                        )
                    )
                item = await tx.add_checklist_item(n, "Page the DBA")
                await tx.save_checklist_item(
                    item.model_copy(update={"post_id": f"p-item-{n}", "done_by": "u-carol", "done_at": T0})
                )
                removed = await tx.add_checklist_item(n, "gone")
                await tx.save_checklist_item(removed.model_copy(update={"removed": True}))
                await tx.record_event(f"post:p{n}", T0, n)
                await tx.record_reply(f"post:p{n}", f"reply-{n}", T0)
            await tx.update_timeline(event.model_copy(update={"deleted": True}))
            await tx.save_playbook(Playbook(team_id="team-ops", name="Database", items=["a", "b"]))
            await tx.set_state("cursor", {"last": 1764165720123, "conn": "abc"})
    finally:
        await store.close()
    # Incident 5 deleted by hand: its number is still taken (AUTOINCREMENT remembers it).
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("DELETE FROM incidents WHERE number = 5")
        await conn.commit()


async def dump(database: str | Path) -> dict[str, list[dict[str, Any]]]:
    store = open_store(database)
    await store.open()
    try:
        async with store.transaction() as tx:
            assert isinstance(tx, Copyable)
            tables = {t.name: await tx.dump_rows(t) for t in TABLES}
            tables["last numbers"] = [await tx.last_numbers()]
            return tables
    finally:
        await store.close()


async def next_number(store: Store) -> int:
    await store.open()
    try:
        async with store.transaction() as tx:
            incident = await tx.create_incident(
                Incident(
                    team_id="t", title="after", severity=3, commander_id="u", started_by="u", origin_channel_id="c", started_at=T0
                )
            )
            return incident.number
    finally:
        await store.close()


async def test_sqlite_to_postgresql_and_back_keeps_every_row(
    tmp_path: Path, pg_backend: PostgresBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "old.db"
    await seed(source)
    before = await dump(source)
    assert (
        len(before["incidents"]) == 4
        and len(before["timeline"]) == 12
        and before["last numbers"] == [{"incidents": 5, "timeline": 15}]
    )

    assert await _migrate_store(str(source), pg_backend.dsn) == 0
    out = capsys.readouterr().out
    assert "incidents: 4 rows" in out and "timeline: 12 rows" in out and "row counts verified" in out
    assert await dump(pg_backend.dsn) == before

    back = tmp_path / "back.db"
    assert await _migrate_store(pg_backend.dsn, f"sqlite:///{back}") == 0
    assert await dump(back) == before

    # Numbers go on from the last one ever handed out, on both.
    assert await next_number(pg_backend.make()) == 6
    assert await next_number(open_store(back)) == 6


async def test_a_non_empty_target_is_refused_and_left_alone(
    tmp_path: Path, pg_backend: PostgresBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "old.db"
    await seed(source)
    assert await next_number(pg_backend.make()) == 1
    assert await _migrate_store(str(source), pg_backend.dsn) == 1
    assert "not empty (incidents: 1" in capsys.readouterr().err
    after = await dump(pg_backend.dsn)
    assert [i["title"] for i in after["incidents"]] == ["after"] and after["timeline"] == []


async def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _migrate_store(str(tmp_path / "missing.db"), f"sqlite:///{tmp_path / 'new.db'}") == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "new.db").exists() and not (tmp_path / "missing.db").exists()
    assert await _migrate_store("mysql://x/y", str(tmp_path / "new.db")) == 2
    assert await _migrate_store(str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'a.db'}") == 2
    assert "same database" in capsys.readouterr().err
