"""The repository contract (store/base.py), run against every backend in conftest.BACKENDS.

Tests that take ``store``/``backend`` speak only the Protocol and run on SQLite and
PostgreSQL; the sections at the end check what only one backend has (PRAGMAs, the
migration runners and files, how times are stored).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import aiosqlite
import asyncpg
import pytest

from incident_bot.domain.models import (
    ChecklistItem,
    Incident,
    IncidentStats,
    OutboxEntry,
    Playbook,
    Status,
    TimelineEvent,
    TimelineKind,
)
from incident_bot.store import migrations
from incident_bot.store.base import SchemaTooNew, Store, StoreUnavailable
from incident_bot.store.postgres import PostgresStore
from incident_bot.store.sqlite import SQLiteStore, from_db_time, to_db_time
from tests.store.conftest import Backend, PostgresBackend, SQLiteBackend
from tests.support.waiting import eventually

T0 = datetime(2026, 11, 26, 14, 2, 0, 123000, tzinfo=UTC)
CEST = timezone(timedelta(hours=2))


def make_incident(**changes: object) -> Incident:
    values: dict[str, object] = {
        "team_id": "team-ops",
        "title": "DB primary down",
        "severity": 2,
        "commander_id": "u-alice",
        "started_by": "u-alice",
        "origin_channel_id": "ch-incidents",
        "started_at": T0,
    }
    values.update(changes)
    return Incident.model_validate(values)


async def create(store: Store, **changes: object) -> Incident:
    async with store.transaction() as tx:
        return await tx.create_incident(make_incident(**changes))


class Boom(Exception):
    pass


# --- opening, reopening, versions ------------------------------------------------------


async def test_new_database_is_at_the_newest_schema_version(store: Store, backend: Backend) -> None:
    assert await store.schema_version() == backend.latest_version >= 1


async def test_reopening_keeps_data_and_does_not_migrate_again(store: Store, backend: Backend) -> None:
    incident = await create(store, channel_id="ch-1")
    async with store.transaction() as tx:
        await tx.add_checklist_item(incident.number, "Page the DBA")
        await tx.record_event("post:p1", T0, incident.number)
        await tx.set_state("cursor", {"last": 1})
    await store.close()
    await store.close()  # closing twice is fine

    again = backend.make()
    await again.open()
    try:
        assert await again.schema_version() == backend.latest_version
        async with again.transaction() as tx:
            assert await tx.get_incident(incident.number) == incident
            assert [i.text for i in await tx.list_checklist(incident.number)] == ["Page the DBA"]
            assert await tx.event_seen("post:p1")
            assert await tx.get_state("cursor") == {"last": 1}
            assert (await tx.create_incident(make_incident())).number == incident.number + 1
    finally:
        await again.close()


async def test_a_newer_schema_is_refused_naming_both_versions(store: Store, backend: Backend) -> None:
    await store.close()
    future = backend.latest_version + 7
    await backend.set_schema_version(future)

    newer = backend.make()
    with pytest.raises(SchemaTooNew) as caught:
        await newer.open()
    message = str(caught.value)
    assert f"schema version {future}" in message
    assert f"up to {backend.latest_version}" in message
    assert backend.location in message
    with pytest.raises(RuntimeError):  # not half-open
        async with newer.transaction():
            pass
    await newer.close()


async def test_using_a_closed_store_is_an_error(store: Store) -> None:
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        async with store.transaction():
            pass


# --- transactions ------------------------------------------------------------------------


async def test_exception_rolls_everything_back_and_is_reraised(store: Store) -> None:
    error = Boom("half way")
    with pytest.raises(Boom) as caught:
        async with store.transaction() as tx:
            incident = await tx.create_incident(make_incident(channel_id="ch-1"))
            await tx.add_timeline(TimelineEvent(incident_number=incident.number, at=T0, kind=TimelineKind.STARTED))
            await tx.add_checklist_item(incident.number, "Page the DBA")
            await tx.record_event("post:p1", T0, incident.number)
            await tx.record_reply("post:p1", "reply-1", T0)
            await tx.set_state("cursor", 5)
            await tx.save_playbook(Playbook(team_id="team-ops", name="db"))
            raise error
    assert caught.value is error

    async with store.transaction() as tx:
        assert await tx.get_incident(1) is None
        assert await tx.get_incident_by_channel("ch-1") is None
        assert await tx.list_timeline(1, include_deleted=True) == []
        assert await tx.list_checklist(1, include_removed=True) == []
        assert not await tx.event_seen("post:p1")
        assert await tx.get_reply("post:p1") is None
        assert await tx.get_state("cursor") is None
        assert await tx.list_playbooks("team-ops") == []
    # The rolled-back number was never handed out.
    assert (await create(store)).number == 1


async def test_cancellation_rolls_back_and_frees_the_store(store: Store) -> None:
    inside = asyncio.Event()

    async def handler() -> None:
        async with store.transaction() as tx:
            await tx.create_incident(make_incident())
            await tx.record_event("post:p1", T0, 1)
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(handler())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with store.transaction() as tx:
        assert await tx.get_incident(1) is None
        assert not await tx.event_seen("post:p1")


async def test_concurrent_creates_get_distinct_numbers(store: Store) -> None:
    async def start(i: int) -> int:
        async with store.transaction() as tx:
            await asyncio.sleep(0)  # give the others a chance to interleave
            incident = await tx.create_incident(make_incident(title=f"outage {i}", channel_id=f"ch-{i}"))
            await asyncio.sleep(0)
            await tx.add_checklist_item(incident.number, "first")
            return incident.number

    numbers = await asyncio.gather(*(start(i) for i in range(10)))
    assert sorted(numbers) == list(range(1, 11))
    async with store.transaction() as tx:
        incidents, total = await tx.list_incidents(["team-ops"], [Status.STARTING], 50)
    assert total == 10
    assert {i.title for i in incidents} == {f"outage {i}" for i in range(10)}


async def test_two_stores_on_one_database_never_share_a_number(store: Store, backend: Backend) -> None:
    """Two processes (here: two stores, two connections) starting incidents at once."""
    other = backend.make()
    await other.open()
    started = asyncio.Event()

    async def start(on: Store, i: int) -> int:
        async with on.transaction() as tx:
            incident = await tx.create_incident(make_incident(title=f"outage {i}", channel_id=f"ch-{i}"))
            started.set()
            await asyncio.sleep(0.001)  # hold the transaction open while the other store tries
            await tx.add_checklist_item(incident.number, "first")
            return incident.number

    async def rolled_back(on: Store) -> None:
        await started.wait()
        with pytest.raises(Boom):
            async with on.transaction() as tx:
                await tx.create_incident(make_incident(title="rolled back"))
                raise Boom

    try:
        numbers = await asyncio.gather(
            *(start(store if i % 2 else other, i) for i in range(12)), rolled_back(other), rolled_back(store)
        )
    finally:
        await other.close()
    taken = [n for n in numbers if n is not None]
    assert sorted(taken) == list(range(1, 13))  # distinct, and the rolled-back ones gave theirs back
    assert (await create(store)).number == 13


async def test_transactions_run_one_at_a_time(store: Store) -> None:
    log: list[str] = []

    async def work(name: str) -> None:
        async with store.transaction() as tx:
            log.append(f"{name} begin")
            await tx.get_state("x")
            await asyncio.sleep(0.01)
            await tx.set_state("x", name)
            log.append(f"{name} end")

    await asyncio.gather(work("a"), work("b"), work("c"))
    assert log == ["a begin", "a end", "b begin", "b end", "c begin", "c end"]
    async with store.transaction() as tx:
        assert await tx.get_state("x") == "c"


async def test_nested_transaction_in_one_task_is_refused(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.set_state("outer", 1)
        with pytest.raises(RuntimeError, match="already open"):
            async with store.transaction():
                pass
    async with store.transaction() as tx:  # the outer one still committed
        assert await tx.get_state("outer") == 1


async def test_transaction_object_is_dead_after_its_block(store: Store) -> None:
    async with store.transaction() as tx:
        pass
    with pytest.raises(RuntimeError, match="ended"):
        await tx.get_state("x")


# --- idempotency and replies ------------------------------------------------------------------


async def test_event_keys(store: Store) -> None:
    incident = await create(store)
    async with store.transaction() as tx:
        assert not await tx.event_seen("post:p1")
        await tx.record_event("post:p1", T0, incident.number)
        await tx.record_event("reaction:u:p:x:added", T0)
        assert await tx.event_seen("post:p1")
    async with store.transaction() as tx:
        assert await tx.event_seen("post:p1")
        assert await tx.event_seen("reaction:u:p:x:added")
        assert not await tx.event_seen("post:p2")
        await tx.record_event("post:p1", T0 + timedelta(hours=1))  # again: no error, no change
        assert await tx.event_seen("post:p1")


async def test_replies_keep_the_first(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.get_reply("post:p1") is None
        await tx.record_reply("post:p1", "reply-1", T0)
    async with store.transaction() as tx:
        assert await tx.get_reply("post:p1") == "reply-1"
        await tx.record_reply("post:p1", "reply-2", T0)
        assert await tx.get_reply("post:p1") == "reply-1"
        assert await tx.get_reply("post:p2") is None


async def test_command_state_reads_reply_and_key_together(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.command_state("post:p1") == (False, False)
        await tx.record_event("post:p1", T0)
        assert await tx.command_state("post:p1") == (False, True)
        await tx.record_reply("post:p1", "reply-1", T0)
        await tx.record_reply("post:p2", "reply-2", T0)
    async with store.transaction() as tx:
        assert await tx.command_state("post:p1") == (True, True)
        assert await tx.command_state("post:p2") == (True, False)
        assert await tx.command_state("post:p3") == (False, False)


async def test_command_states_read_many_keys_together(store: Store) -> None:
    keys = [f"post:p{i}" for i in range(1000)]  # more than one statement's worth
    async with store.transaction() as tx:
        for i in range(0, 1000, 3):
            await tx.record_event(keys[i], T0)
        for i in range(0, 1000, 5):
            await tx.record_reply(keys[i], f"reply-{i}", T0)
    async with store.read() as tx:
        states = await tx.command_states([*keys, keys[0], "post:none"])
    assert states["post:none"] == (False, False)
    assert len(states) == 1001
    for i, key in enumerate(keys):
        assert states[key] == (i % 5 == 0, i % 3 == 0), key


async def test_read_sees_what_is_committed_and_waits_for_a_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.record_event("post:p1", T0)
    async with store.read() as tx:
        assert await tx.command_state("post:p1") == (False, True)
    inside = asyncio.Event()
    go_on = asyncio.Event()

    async def writer() -> None:
        async with store.transaction() as tx:
            await tx.record_reply("post:p2", "reply-2", T0)
            await tx.record_event("post:p2", T0)
            await tx.get_reply("post:p2")  # the writes have reached the database
            inside.set()
            await go_on.wait()
            raise Boom("rolled back")

    task = asyncio.create_task(writer())
    await inside.wait()
    reading = asyncio.create_task(_read_state(store, "post:p2"))
    go_on.set()
    with pytest.raises(Boom):
        await task
    assert await reading == (False, False)  # never inside the other block's transaction


async def test_later_writes_are_read_by_the_next_block_and_survive_close(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    try:
        async with store.later() as tx:
            await tx.record_reply("post:p1", "reply-1", T0)
            await tx.record_event("post:p1", T0)
        async with store.read() as tx:  # a duplicate claimed at once reads the record
            assert await tx.command_state("post:p1") == (True, True)
        async with store.later() as tx:
            await tx.record_reply("post:p2", "reply-2", T0)
        async with store.transaction() as tx:
            assert await tx.get_reply("post:p2") == "reply-2"
        async with store.later() as tx:
            await tx.record_reply("post:p3", "reply-3", T0)
    finally:
        await store.close()  # sends what still waits
    again = backend.make()
    await again.open()
    try:
        async with again.read() as tx:
            assert await tx.command_state("post:p3") == (True, False)
    finally:
        await again.close()


async def _read_state(store: Store, key: str) -> tuple[bool, bool]:
    async with store.read() as tx:
        return await tx.command_state(key)


async def test_prune_forgets_old_keys_and_replies_each_in_its_table(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.bookkeeping_counts() == {"events": 0, "replies": 0, "outbox": 0}
        await tx.record_event("old", T0 - timedelta(days=10))
        await tx.record_event("edge", T0 - timedelta(days=1))  # exactly at ``before``: kept
        await tx.record_event("new", T0)
        await tx.record_reply("old", "r-old", T0 - timedelta(days=10))
        await tx.record_reply("new", "r-new", T0)
    async with store.transaction() as tx:
        assert await tx.bookkeeping_counts() == {"events": 3, "replies": 2, "outbox": 0}
        assert await tx.prune_events(T0 - timedelta(days=1)) == 1
        assert await tx.bookkeeping_counts() == {"events": 2, "replies": 2, "outbox": 0}  # replies untouched
        assert await tx.get_reply("old") == "r-old"
        assert await tx.prune_replies(T0 - timedelta(days=1)) == 1
        assert await tx.prune_replies(T0 - timedelta(days=1)) == 0
    async with store.transaction() as tx:
        assert not await tx.event_seen("old")
        assert await tx.event_seen("edge") and await tx.event_seen("new")
        assert await tx.get_reply("old") is None
        assert await tx.get_reply("new") == "r-new"
        assert await tx.bookkeeping_counts() == {"events": 2, "replies": 1, "outbox": 0}


async def test_a_pruned_key_can_be_recorded_again(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.record_event("k", T0 - timedelta(days=30))
        await tx.record_reply("k", "r1", T0 - timedelta(days=30))
        await tx.prune_events(T0)
        await tx.prune_replies(T0)
        await tx.record_event("k", T0)
        await tx.record_reply("k", "r2", T0)
        assert await tx.get_reply("k") == "r2" and await tx.event_seen("k")


# --- incidents ----------------------------------------------------------------------------


async def test_create_numbers_and_full_round_trip(store: Store) -> None:
    full = make_incident(
        title="Payment errors ✨",
        severity=1,
        status=Status.ENDED,
        commander_id="u-bob",
        origin_post_id="p-origin",
        command_post_id="p-command",
        channel_id="ch-42",
        channel_name="incident-1-payment-errors",
        summary_post_id="p-summary",
        checklist_post_id="p-checklist",
        playbook="payments",
        ended_at=T0 + timedelta(hours=1, minutes=2),
        ended_by="u-carol",
        resolution="rolled back",
        last_update_at=T0 + timedelta(minutes=30),
        next_reminder_at=T0 + timedelta(minutes=45),
    )
    unset = [name for name in Incident.model_fields if name != "number" and getattr(full, name) is None]
    assert unset == []  # every field is exercised

    async with store.transaction() as tx:
        first = await tx.create_incident(full)
        second = await tx.create_incident(make_incident(number=99))
    assert (first.number, second.number) == (1, 2)
    assert full.number == 0  # the argument is left alone
    async with store.transaction() as tx:
        assert await tx.get_incident(1) == first
        assert await tx.get_incident(2) == second
        assert await tx.get_incident(3) is None
        assert await tx.get_incident(99) is None


async def test_save_incident_updates_every_field(store: Store) -> None:
    incident = await create(store)
    changed = incident.model_copy(
        update={
            "team_id": "team-web",
            "title": "renamed",
            "severity": 4,
            "status": Status.ACTIVE,
            "commander_id": "u-bob",
            "started_by": "u-carol",
            "origin_channel_id": "ch-other",
            "origin_post_id": "p-o",
            "command_post_id": "p-c",
            "channel_id": "ch-7",
            "channel_name": "incident-1-renamed",
            "summary_post_id": "p-s",
            "checklist_post_id": "p-h",
            "playbook": "db",
            "started_at": T0 - timedelta(days=1),
            "ended_at": T0,
            "ended_by": "u-dave",
            "resolution": "done",
            "last_update_at": T0,
            "next_reminder_at": T0 + timedelta(minutes=15),
        }
    )
    async with store.transaction() as tx:
        await tx.save_incident(changed)
    async with store.transaction() as tx:
        assert await tx.get_incident(incident.number) == changed
    cleared = changed.model_copy(update={"ended_at": None, "ended_by": None, "resolution": None, "channel_id": None})
    async with store.transaction() as tx:
        await tx.save_incident(cleared)
        assert await tx.get_incident(incident.number) == cleared


async def test_save_unknown_incident_is_a_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        async with store.transaction() as tx:
            await tx.save_incident(make_incident(number=5))


async def test_lookup_by_channel_and_command_post(store: Store) -> None:
    a = await create(store, channel_id="ch-a", command_post_id="p-a")
    b = await create(store, channel_id="ch-b", command_post_id="p-b")
    async with store.transaction() as tx:
        assert await tx.get_incident_by_channel("ch-a") == a
        assert await tx.get_incident_by_channel("ch-b") == b
        assert await tx.get_incident_by_channel("ch-zzz") is None
        assert await tx.get_incident_by_command_post("p-b") == b
        assert await tx.get_incident_by_command_post("p-zzz") is None


async def test_channel_id_is_unique(store: Store) -> None:
    await create(store, channel_id="ch-a")
    with pytest.raises(Exception):  # noqa: B017 - the Store protocol names no error for a duplicate; each backend raises its own
        await create(store, channel_id="ch-a")
    async with store.transaction() as tx:
        _incidents, total = await tx.list_incidents(["team-ops"], list(Status), 10)
    assert total == 1


async def test_list_incidents_filters_orders_pages_and_counts(store: Store) -> None:
    plan = [
        ("team-ops", Status.ACTIVE),  # 1
        ("team-web", Status.ACTIVE),  # 2
        ("team-ops", Status.ENDED),  # 3
        ("team-ops", Status.STARTING),  # 4
        ("team-ops", Status.ACTIVE),  # 5
        ("team-other", Status.ACTIVE),  # 6
        ("team-ops", Status.ENDED),  # 7
    ]
    for team, status in plan:
        await create(store, team_id=team, status=status)

    async def numbers(teams: list[str], statuses: list[Status], limit: int, offset: int = 0) -> tuple[list[int], int]:
        async with store.transaction() as tx:
            incidents, total = await tx.list_incidents(teams, statuses, limit, offset)
        return [i.number for i in incidents], total

    assert await numbers(["team-ops"], [Status.ACTIVE, Status.STARTING], 20) == ([5, 4, 1], 3)
    assert await numbers(["team-ops", "team-web"], [Status.ACTIVE], 20) == ([5, 2, 1], 3)
    assert await numbers(["team-ops"], [Status.ENDED], 20) == ([7, 3], 2)
    assert await numbers(["team-ops", "team-web"], list(Status), 2) == ([7, 5], 6)
    assert await numbers(["team-ops", "team-web"], list(Status), 2, 2) == ([4, 3], 6)
    assert await numbers(["team-ops", "team-web"], list(Status), 2, 4) == ([2, 1], 6)
    assert await numbers(["team-ops", "team-web"], list(Status), 2, 6) == ([], 6)
    assert await numbers(["team-ops"], list(Status), 0) == ([], 5)
    assert await numbers([], list(Status), 20) == ([], 0)
    assert await numbers(["team-ops"], [], 20) == ([], 0)
    assert await numbers(["team-nobody"], list(Status), 20) == ([], 0)
    with pytest.raises(ValueError):
        await numbers(["team-ops"], list(Status), -1)


async def test_list_incidents_in_status_spans_teams(store: Store) -> None:
    for team, status in [("a", Status.STARTING), ("b", Status.ACTIVE), ("c", Status.STARTING), ("a", Status.ENDED)]:
        await create(store, team_id=team, status=status)
    async with store.transaction() as tx:
        assert [i.number for i in await tx.list_incidents_in_status([Status.STARTING])] == [1, 3]
        assert [i.number for i in await tx.list_incidents_in_status([Status.STARTING, Status.ACTIVE])] == [1, 2, 3]
        assert await tx.list_incidents_in_status([]) == []


async def test_list_incidents_to_repair_reads_active_and_lately_ended_only(store: Store) -> None:
    since = T0 + timedelta(hours=1)
    plan = [
        ("a", Status.ACTIVE, None),  # 1
        ("b", Status.ENDED, T0),  # 2: ended long ago
        ("a", Status.ENDED, since),  # 3: ended exactly at the bound
        ("c", Status.STARTING, None),  # 4: resume_unfinished's work, not repair's
        ("b", Status.ENDED, since + timedelta(minutes=5)),  # 5
        ("a", Status.ENDED, None),  # 6: ended without a time
        ("c", Status.ACTIVE, None),  # 7
    ]
    for team, status, ended_at in plan:
        await create(store, team_id=team, status=status, ended_at=ended_at)
    async with store.transaction() as tx:
        assert [i.number for i in await tx.list_incidents_to_repair(since)] == [1, 3, 5, 7]
        assert [i.number for i in await tx.list_incidents_to_repair(since + timedelta(days=1))] == [1, 7]


async def test_incident_stats_aggregates_every_incident(store: Store) -> None:
    since = T0
    minutes = timedelta(minutes=1)
    plan = [
        # team, severity, status, started, duration
        ("team-ops", 1, Status.ENDED, T0, 10 * minutes),
        ("team-ops", 2, Status.ENDED, T0 + minutes, 30 * minutes),
        ("team-ops", 2, Status.ENDED, T0 + minutes, timedelta(milliseconds=1500)),
        ("team-ops", 2, Status.ENDED, T0 + minutes, 40 * minutes),
        ("team-web", 3, Status.ENDED, T0, 99 * minutes),  # another team
        ("team-ops", 4, Status.ENDED, T0 - timedelta(days=1), 5 * minutes),  # before the period
        ("team-ops", 3, Status.ACTIVE, T0 + minutes, None),
        ("team-ops", 1, Status.STARTING, T0 + 2 * minutes, None),
        ("team-ops", 1, Status.ACTIVE, T0 - timedelta(days=9), None),  # open, started before
    ]
    for team, severity, status, started, duration in plan:
        ended = started + duration if duration is not None else None
        await create(store, team_id=team, severity=severity, status=status, started_at=started, ended_at=ended)
    async with store.transaction() as tx:
        ops = await tx.incident_stats(["team-ops"], since)
        both = await tx.incident_stats(["team-ops", "team-web"], since)
        empty = await tx.incident_stats([], since)
        later = await tx.incident_stats(["team-ops"], T0 + timedelta(days=30))
    assert ops.by_severity == {1: 2, 2: 3, 3: 1}
    assert ops.open_now == 3
    assert ops.resolved == 4
    # durations 1.5 s, 600 s, 1800 s, 2400 s: median (600 + 1800) / 2, mean their sum / 4
    assert ops.median_seconds == 1200.0
    assert ops.mean_seconds == (1.5 + 600 + 1800 + 2400) / 4
    assert both.by_severity == {1: 2, 2: 3, 3: 2} and both.resolved == 5 and both.median_seconds == 1800.0
    assert empty.by_severity == {} and empty.open_now == 0 and empty.resolved == 0 and empty.median_seconds is None
    assert later.by_severity == {} and later.open_now == 3 and later.resolved == 0 and later.mean_seconds is None


async def test_incident_stats_median_of_one_two_and_three(store: Store) -> None:
    """The median's middle: one value, the mean of two, the middle of three; an ended incident
    without an end time counts by severity but not as resolved; read() gives the same figures."""
    minutes = timedelta(minutes=1)
    await create(store, severity=4, status=Status.ENDED, ended_at=None)  # no end time
    medians = []
    for duration in (7 * minutes, 3 * minutes, 20 * minutes):
        await create(store, severity=1, status=Status.ENDED, ended_at=T0 + duration)
        async with store.read() as tx:
            stats = await tx.incident_stats(["team-ops"], T0)
        assert stats.by_severity == {1: len(medians) + 1, 4: 1} and stats.open_now == 0
        assert stats.resolved == len(medians) + 1
        medians.append(stats.median_seconds)
    assert medians == [420.0, 300.0, 420.0]
    assert stats.mean_seconds == (7 + 3 + 20) * 60 / 3
    async with store.transaction() as tx:
        assert await tx.incident_stats(["team-ops"], T0) == stats


def reference_stats(incidents: list[Incident], team_ids: list[str], since: datetime) -> IncidentStats:
    """What incident_stats must say, counted in Python over the incidents themselves."""
    mine = [i for i in incidents if i.team_id in team_ids]
    period = [i for i in mine if i.started_at >= since]
    by_severity: dict[int, int] = {}
    for i in period:
        by_severity[i.severity] = by_severity.get(i.severity, 0) + 1
    ms = sorted(
        round((i.ended_at - i.started_at).total_seconds() * 1000)
        for i in period
        if i.status == Status.ENDED and i.ended_at is not None
    )
    open_now = sum(i.status in (Status.STARTING, Status.ACTIVE) for i in mine)
    if not ms:
        return IncidentStats(by_severity=by_severity, open_now=open_now)
    middle = ms[(len(ms) - 1) // 2 : len(ms) // 2 + 1]
    return IncidentStats(
        by_severity=by_severity,
        open_now=open_now,
        resolved=len(ms),
        median_seconds=sum(middle) / len(middle) / 1000,
        mean_seconds=sum(ms) / len(ms) / 1000,
    )


async def test_incident_stats_follow_every_change_whatever_the_period(store: Store) -> None:
    """Periods that hold every incident of the teams (SQLite answers those from totals kept by
    triggers) and periods that do not, after creates, severity and team changes, ends without
    and with a time, and a reopen: always what a count over the incidents says."""
    minutes = timedelta(minutes=1)
    plan = [
        ("team-ops", 1, Status.ENDED, T0, 10 * minutes),
        ("team-ops", 2, Status.ENDED, T0 + minutes, 31 * minutes),
        ("team-ops", 2, Status.ACTIVE, T0 + 2 * minutes, None),
        ("team-ops", 3, Status.ENDED, T0 + 3 * minutes, None),  # ended without a time
        ("team-web", 3, Status.ENDED, T0 + minutes, 99 * minutes),
        ("team-web", 4, Status.STARTING, T0 + 5 * minutes, None),
        ("team-ops", 4, Status.ENDED, T0 + 6 * minutes, timedelta(milliseconds=1500)),
    ]
    for team, severity, status, started, duration in plan:
        ended = started + duration if duration is not None else None
        await create(store, team_id=team, severity=severity, status=status, started_at=started, ended_at=ended)

    async def check() -> None:
        async with store.transaction() as tx:
            incidents = [i for n in range(1, len(plan) + 1) if (i := await tx.get_incident(n)) is not None]
            for teams in (["team-ops"], ["team-web"], ["team-ops", "team-web"], ["team-none"]):
                for since in (T0 - timedelta(days=365), T0, T0 + minutes, T0 + 4 * minutes, T0 + timedelta(days=1)):
                    assert await tx.incident_stats(teams, since) == reference_stats(incidents, teams, since), (teams, since)

    await check()
    changes = [
        (1, {"severity": 4}),
        (2, {"status": Status.ACTIVE, "ended_at": None}),  # reopened
        (3, {"status": Status.ENDED, "ended_at": T0 + 50 * minutes}),
        (4, {"ended_at": T0 + 9 * minutes}),  # the missing end time, set
        (5, {"team_id": "team-ops"}),
        (6, {"status": Status.ACTIVE}),
        (2, {"status": Status.ENDED, "ended_at": T0 + 5 * minutes}),  # ended again, sooner
    ]
    for number, change in changes:
        async with store.transaction() as tx:
            incident = await tx.get_incident(number)
            assert incident is not None
            await tx.save_incident(incident.model_copy(update=change))
        await check()


async def test_incident_stats_has_no_cap_on_the_number_of_incidents(store: Store) -> None:
    """Past 10,000 incidents the figures still count every one (an old version loaded at most 10,000)."""
    n = 10_050
    async with store.transaction() as tx:
        for i in range(n):
            await tx.create_incident(
                make_incident(severity=1 + i % 4, status=Status.ENDED, ended_at=T0 + timedelta(seconds=1 + i % 3))
            )
    async with store.transaction() as tx:
        stats = await tx.incident_stats(["team-ops"], T0)
    assert sum(stats.by_severity.values()) == n == stats.resolved
    assert stats.by_severity[1] == (n + 3) // 4
    assert stats.median_seconds == 2.0


# --- timeline --------------------------------------------------------------------------------


async def test_timeline_add_list_update(store: Store) -> None:
    incident = await create(store)
    n = incident.number
    async with store.transaction() as tx:
        started = await tx.add_timeline(
            TimelineEvent(
                incident_number=n,
                at=T0,
                kind=TimelineKind.STARTED,
                actor_id="u-alice",
                text="DB down",
                data={"severity": 2, "playbook": None, "nested": {"list": [1, "two", 3.5, True]}},
            )
        )
        later = await tx.add_timeline(
            TimelineEvent(incident_number=n, at=T0 + timedelta(minutes=5), kind=TimelineKind.NOTE, text="a")
        )
        # Added after, but happened earlier: listed by time; equal times by id.
        earlier = await tx.add_timeline(
            TimelineEvent(incident_number=n, at=T0 + timedelta(minutes=1), kind=TimelineKind.NOTE, text="b")
        )
        same_time = await tx.add_timeline(
            TimelineEvent(incident_number=n, at=T0 + timedelta(minutes=5), kind=TimelineKind.NOTE, text="c")
        )
    assert 0 < started.id < later.id < earlier.id < same_time.id
    async with store.transaction() as tx:
        events = await tx.list_timeline(n)
    assert events == [started, earlier, later, same_time]
    assert events[0].data == {"severity": 2, "playbook": None, "nested": {"list": [1, "two", 3.5, True]}}

    edited = later.model_copy(update={"text": "a, edited", "actor_id": "u-bob", "data": {"x": 1}})
    async with store.transaction() as tx:
        await tx.update_timeline(edited)
        assert (await tx.list_timeline(n))[2] == edited
        with pytest.raises(KeyError):
            await tx.update_timeline(edited.model_copy(update={"id": 9999}))
        with pytest.raises(KeyError):
            await tx.update_timeline(edited.model_copy(update={"incident_number": n + 1}))


async def test_timeline_of_unknown_incident_is_a_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        async with store.transaction() as tx:
            await tx.add_timeline(TimelineEvent(incident_number=42, at=T0, kind=TimelineKind.NOTE))


async def test_pinned_posts_and_deleted_events(store: Store) -> None:
    n = (await create(store)).number
    other = (await create(store)).number
    async with store.transaction() as tx:
        pin = await tx.add_timeline(
            TimelineEvent(incident_number=n, at=T0, kind=TimelineKind.POST_PINNED, actor_id="u-bob", post_id="p-9", text="look")
        )
        await tx.add_timeline(TimelineEvent(incident_number=n, at=T0, kind=TimelineKind.NOTE, post_id="p-8"))
        assert await tx.get_timeline_by_post(n, "p-9") == pin
        assert await tx.get_timeline_by_post(n, "p-8") is None  # not a pin
        assert await tx.get_timeline_by_post(other, "p-9") is None  # other incident

        unpinned = pin.model_copy(update={"deleted": True})
        await tx.update_timeline(unpinned)
        assert await tx.get_timeline_by_post(n, "p-9") is None
        assert [e.kind for e in await tx.list_timeline(n)] == [TimelineKind.NOTE]
        assert await tx.list_timeline(n, include_deleted=True) == [unpinned, *await tx.list_timeline(n)]

        again = await tx.add_timeline(TimelineEvent(incident_number=n, at=T0, kind=TimelineKind.POST_PINNED, post_id="p-9"))
        assert await tx.get_timeline_by_post(n, "p-9") == again


# --- checklist -------------------------------------------------------------------------------


async def test_checklist_numbers_are_never_reused(store: Store) -> None:
    n = (await create(store)).number
    other = (await create(store)).number
    async with store.transaction() as tx:
        items = [await tx.add_checklist_item(n, text) for text in ("one", "two", "three")]
        assert [i.number for i in items] == [1, 2, 3]
        assert (await tx.add_checklist_item(other, "elsewhere")).number == 1  # per incident
        for item in items[1:]:  # remove 2 and the last one, 3
            await tx.save_checklist_item(item.model_copy(update={"removed": True}))
    async with store.transaction() as tx:
        four = await tx.add_checklist_item(n, "four")
        assert four == ChecklistItem(incident_number=n, number=4, text="four")
        assert [i.number for i in await tx.list_checklist(n)] == [1, 4]
        assert [(i.number, i.removed) for i in await tx.list_checklist(n, include_removed=True)] == [
            (1, False),
            (2, True),
            (3, True),
            (4, False),
        ]


async def test_checklist_save_and_lookup_by_post(store: Store) -> None:
    n = (await create(store)).number
    async with store.transaction() as tx:
        item = await tx.add_checklist_item(n, "Page the DBA")
        assert item == ChecklistItem(incident_number=n, number=1, text="Page the DBA")
        assert await tx.get_checklist_item_by_post("p-1") is None
        done = item.model_copy(
            update={"post_id": "p-1", "done_by": "u-bob", "done_at": T0, "assignee_id": "u-carol", "text": "Page DBA"}
        )
        await tx.save_checklist_item(done)
    async with store.transaction() as tx:
        assert await tx.list_checklist(n) == [done]
        assert await tx.get_checklist_item_by_post("p-1") == done
        undone = done.model_copy(update={"done_by": None, "done_at": None, "assignee_id": None})
        await tx.save_checklist_item(undone)
        assert await tx.get_checklist_item_by_post("p-1") == undone
        removed = undone.model_copy(update={"removed": True})
        await tx.save_checklist_item(removed)
        assert await tx.get_checklist_item_by_post("p-1") == removed  # still found, flagged
        with pytest.raises(KeyError):
            await tx.save_checklist_item(ChecklistItem(incident_number=n, number=7, text="x"))
        with pytest.raises(KeyError):
            await tx.add_checklist_item(n + 100, "no such incident")


async def test_checklist_post_id_is_unique(store: Store) -> None:
    n = (await create(store)).number
    async with store.transaction() as tx:
        a = await tx.add_checklist_item(n, "a")
        b = await tx.add_checklist_item(n, "b")
        await tx.save_checklist_item(a.model_copy(update={"post_id": "p-1"}))
    with pytest.raises(Exception):  # noqa: B017 - the Store protocol names no error for a duplicate; each backend raises its own
        async with store.transaction() as tx:
            await tx.save_checklist_item(b.model_copy(update={"post_id": "p-1"}))


# --- playbooks ---------------------------------------------------------------------------------


async def test_playbooks(store: Store) -> None:
    db = Playbook(
        team_id="team-ops", name="Database", description="DB outages", default_severity=2, items=["Page DBA", "Check replicas"]
    )
    async with store.transaction() as tx:
        await tx.save_playbook(db)
        await tx.save_playbook(Playbook(team_id="team-ops", name="api", items=[]))
        await tx.save_playbook(Playbook(team_id="team-web", name="database", items=["web item"]))
    async with store.transaction() as tx:
        assert await tx.get_playbook("team-ops", "DATABASE") == db
        assert await tx.get_playbook("team-ops", "database") == db
        assert await tx.get_playbook("team-ops", "nope") is None
        assert [p.name for p in await tx.list_playbooks("team-ops")] == ["api", "Database"]
        assert [p.items for p in await tx.list_playbooks("team-web")] == [["web item"]]
        assert await tx.list_playbooks("team-none") == []
        assert all(not p.read_only for p in await tx.list_playbooks("team-ops"))

        replaced = Playbook(team_id="team-ops", name="DataBase", description="new", default_severity=1, items=["only"])
        await tx.save_playbook(replaced)
        assert await tx.get_playbook("team-ops", "database") == replaced
        assert [p.name for p in await tx.list_playbooks("team-ops")] == ["api", "DataBase"]

        assert await tx.delete_playbook("team-ops", "DATABASE") is True
        assert await tx.delete_playbook("team-ops", "database") is False
        assert await tx.get_playbook("team-ops", "database") is None
        assert await tx.get_playbook("team-web", "database") is not None  # other team untouched

        with pytest.raises(ValueError):
            await tx.save_playbook(Playbook(name="from config", read_only=True))


# --- reminders and state ------------------------------------------------------------------------


async def test_due_reminders(store: Store) -> None:
    now = T0 + timedelta(hours=1)
    await create(store, status=Status.ACTIVE, next_reminder_at=now - timedelta(minutes=1))  # 1 due
    await create(store, status=Status.ACTIVE, next_reminder_at=now)  # 2 due (exactly now)
    await create(store, status=Status.ACTIVE, next_reminder_at=now + timedelta(milliseconds=1))  # 3 not yet
    await create(store, status=Status.ACTIVE, next_reminder_at=None)  # 4 reminders off
    await create(store, status=Status.ENDED, next_reminder_at=now - timedelta(hours=1))  # 5 ended
    await create(store, status=Status.STARTING, next_reminder_at=now - timedelta(hours=1))  # 6 starting
    await create(store, status=Status.ACTIVE, next_reminder_at=now - timedelta(minutes=30))  # 7 due first
    async with store.transaction() as tx:
        assert [i.number for i in await tx.due_reminders(now)] == [7, 1, 2]
        assert [i.number for i in await tx.due_reminders(now.astimezone(CEST))] == [7, 1, 2]
        assert await tx.due_reminders(T0) == []


async def test_state(store: Store) -> None:
    values = {"last_event_at": 1764165720123, "conn": "abc", "flags": [True, None, 1.5], "nested": {"a": {"b": []}}}
    async with store.transaction() as tx:
        assert await tx.get_state("missing") is None
        for key, value in values.items():
            await tx.set_state(key, value)
    async with store.transaction() as tx:
        for key, value in values.items():
            assert await tx.get_state(key) == value
        await tx.set_state("conn", "def")
        assert await tx.get_state("conn") == "def"
        await tx.set_state("when", T0)
        assert await tx.get_state("when") == "2026-11-26T14:02:00.123000Z"


async def test_json_comes_back_as_written(store: Store) -> None:
    """Key order, number spelling and non-ASCII text survive on every backend (no jsonb-style rewriting)."""
    value = {"z": 1, "a": [1.0, 10000000000000000000000, 1e100, -0.5], "ü": "✨ \" '", "m": {"b": None, "a": True}}
    n = (await create(store)).number
    async with store.transaction() as tx:
        await tx.set_state("j", value)
        event = await tx.add_timeline(TimelineEvent(incident_number=n, at=T0, kind=TimelineKind.NOTE, data=value))
        await tx.save_playbook(Playbook(team_id="t", name="p", items=["✨", "a;b", "'"]))
    async with store.transaction() as tx:
        got = await tx.get_state("j")
        (listed,) = await tx.list_timeline(n)
        playbook = await tx.get_playbook("t", "P")
    for back in (got, listed.data):
        assert back == value and list(back) == ["z", "a", "ü", "m"] and list(back["m"]) == ["b", "a"]
        assert [type(x) for x in back["a"]] == [float, int, float, float]
    assert listed == event
    assert playbook is not None and playbook.items == ["✨", "a;b", "'"]


async def test_playbook_names_fold_ascii_letters_only(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_playbook(Playbook(team_id="t", name="Émile"))
        await tx.save_playbook(Playbook(team_id="t", name="b"))
        await tx.save_playbook(Playbook(team_id="t", name="Z"))
        assert await tx.get_playbook("t", "éMILE") is None  # É is not folded (SQLite's NOCASE)
        assert await tx.get_playbook("t", "ÉMILE") is not None
        assert [p.name for p in await tx.list_playbooks("t")] == ["b", "Z", "Émile"]  # folded, then code point order


# --- times -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (T0, T0),
        (T0.astimezone(CEST), T0),  # another zone: same instant, back in UTC
        (T0.replace(tzinfo=None), T0),  # naive counts as UTC
        (T0.replace(microsecond=123999), T0),  # finer than a millisecond is dropped
        (datetime(2026, 1, 1, 0, 0, 0, 999000, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 999000, tzinfo=UTC)),
    ],
)
async def test_times_round_trip_in_utc_to_the_millisecond(store: Store, given: datetime, expected: datetime) -> None:
    n = (await create(store, started_at=given, ended_at=given, last_update_at=given, next_reminder_at=given)).number
    async with store.transaction() as tx:
        await tx.add_timeline(TimelineEvent(incident_number=n, at=given, kind=TimelineKind.NOTE))
        item = await tx.add_checklist_item(n, "x")
        await tx.save_checklist_item(item.model_copy(update={"done_by": "u", "done_at": given}))
    async with store.transaction() as tx:
        incident = await tx.get_incident(n)
        (event,) = await tx.list_timeline(n)
        (item,) = await tx.list_checklist(n)
    assert incident is not None and item.done_at is not None
    for value in (
        incident.started_at,
        incident.ended_at,
        incident.last_update_at,
        incident.next_reminder_at,
        event.at,
        item.done_at,
    ):
        assert value == expected
        assert value is not None and value.utcoffset() == timedelta(0)
        assert value.tzinfo == UTC


# --- SQLite only ------------------------------------------------------------------------------------


async def test_sqlite_read_refuses_to_write(sqlite_store: SQLiteStore) -> None:
    async with sqlite_store.read() as tx:
        with pytest.raises(RuntimeError, match="reading"):
            await tx.record_event("post:p1", T0)
        with pytest.raises(RuntimeError, match="reading"):
            await tx.create_incident(make_incident())  # an INSERT that returns rows
    async with sqlite_store.read() as tx:
        assert await tx.command_state("post:p1") == (False, False)


async def _raw_replies(path: Path) -> list[str]:
    async with aiosqlite.connect(path) as conn:
        return [r[0] for r in await conn.execute_fetchall("SELECT command_key FROM replies ORDER BY command_key")]


async def test_sqlite_later_rides_along_or_goes_on_its_own(sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend) -> None:
    async with sqlite_store.later() as tx:
        await tx.record_reply("post:p1", "reply-1", T0)
        with pytest.raises(RuntimeError, match="only writes"):
            await tx.get_reply("post:p1")
    assert await _raw_replies(sqlite_backend.path) == []  # nothing sent yet: no trip of its own
    async with sqlite_store.read() as tx:
        assert await tx.command_state("post:p9") == (False, False)
    assert await _raw_replies(sqlite_backend.path) == ["post:p1"]  # committed with that read
    async with sqlite_store.later() as tx:
        await tx.record_reply("post:p2", "reply-2", T0)

    async def sent_on_its_own() -> bool:
        return await _raw_replies(sqlite_backend.path) == ["post:p1", "post:p2"]

    await eventually(sent_on_its_own, timeout=5, what="the kept write committed by the timer")


async def test_sqlite_later_kept_when_the_transaction_carrying_it_fails(sqlite_store: SQLiteStore) -> None:
    async with sqlite_store.later() as tx:
        await tx.record_reply("post:p1", "reply-1", T0)
    with pytest.raises(Boom):
        async with sqlite_store.transaction() as tx:
            await tx.record_event("post:p2", T0)
            await tx.get_reply("post:p2")  # sent: the carried write and this one reached SQLite
            raise Boom("rolled back")
    async with sqlite_store.read() as tx:
        assert await tx.command_state("post:p1") == (True, False)  # sent again with this read
        assert await tx.command_state("post:p2") == (False, False)


async def test_sqlite_later_waits_out_a_database_locked_by_another_process(
    sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend
) -> None:
    other = sqlite3.connect(sqlite_backend.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a backup or migrate-store holding the write lock past busy_timeout
    try:
        async with sqlite_store.later() as tx:
            await tx.record_reply("post:p1", "reply-1", T0)

        def failed_once() -> bool:
            flush = sqlite_store._later_flush
            return flush is not None and flush.done()

        await eventually(failed_once, timeout=20, what="the timer's flush to give up on the lock")
        flush = sqlite_store._later_flush
        assert flush is not None and flush.exception() is None  # logged store.later_waiting, no stray traceback
    finally:
        other.rollback()
        other.close()

    async def written() -> bool:
        return await _raw_replies(sqlite_backend.path) == ["post:p1"]

    await eventually(written, timeout=10, what="the kept write once the lock is gone")


async def test_sqlite_pragmas(sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend) -> None:
    assert await sqlite_store.pragmas() == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000, "synchronous": 1}
    # WAL is a property of the file: another connection sees it too.
    async with aiosqlite.connect(sqlite_backend.path) as conn:
        assert list(await conn.execute_fetchall("PRAGMA journal_mode")) == [("wal",)]


async def test_sqlite_incident_totals_follow_deletes_and_match_a_recount(
    sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend
) -> None:
    """incident_totals (kept by triggers, migration 0006) equal a GROUP BY over incidents, also
    after rows are deleted by hand (no store method deletes an incident)."""
    for i in range(6):
        ended = T0 + timedelta(minutes=i + 1) if i % 3 else None
        status = Status.ENDED if i % 2 else Status.ACTIVE
        await create(sqlite_store, team_id=f"team-{i % 2}", severity=1 + i % 4, status=status, ended_at=ended)
    recount = (
        "SELECT team_id, severity, COUNT(*), "
        "COUNT(*) FILTER (WHERE status = 'ended' AND resolve_ms IS NOT NULL), "
        "COALESCE(SUM(resolve_ms) FILTER (WHERE status = 'ended'), 0) FROM incidents GROUP BY team_id, severity"
    )
    kept = "SELECT team_id, severity, incidents, resolved, resolve_ms FROM incident_totals WHERE incidents > 0"
    async with aiosqlite.connect(sqlite_backend.path) as conn:
        assert sorted(await conn.execute_fetchall(kept)) == sorted(await conn.execute_fetchall(recount))
        await conn.execute("DELETE FROM incidents WHERE number IN (2, 3)")
        await conn.commit()
        assert sorted(await conn.execute_fetchall(kept)) == sorted(await conn.execute_fetchall(recount))


async def test_sqlite_schema(sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend) -> None:
    async with aiosqlite.connect(sqlite_backend.path) as conn:
        tables = {r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        indexes = {r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")}
        fks = list(await conn.execute_fetchall("PRAGMA foreign_key_list(checklist_items)"))
    assert {
        "incidents",
        "timeline",
        "checklist_items",
        "playbooks",
        "processed_events",
        "replies",
        "bot_state",
        "schema_version",
    } <= tables
    assert {
        "incidents_command_post",
        "incidents_team_status",
        "incidents_status_ended",
        "incidents_team_severity",
        "incidents_team_resolve",
    } <= indexes
    assert [(fk[2], fk[3], fk[4]) for fk in fks] == [("incidents", "incident_number", "number")]


async def test_sqlite_keeps_times_as_utc_text_with_milliseconds(sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend) -> None:
    await create(sqlite_store, started_at=T0.astimezone(CEST))
    async with aiosqlite.connect(sqlite_backend.path) as conn:
        rows = list(await conn.execute_fetchall("SELECT started_at, created_at FROM incidents"))
    started_at, created_at = rows[0]
    assert started_at == "2026-11-26T14:02:00.123Z"
    assert from_db_time(created_at) is not None and len(created_at) == len(started_at)
    assert to_db_time(datetime(999, 1, 2, 3, 4, 5, 6000)) == "0999-01-02T03:04:05.006Z"  # fixed width


async def test_sqlite_reopen_does_not_run_migrations_again(sqlite_store: SQLiteStore, sqlite_backend: SQLiteBackend) -> None:
    async def applied() -> list[tuple[int, str, str]]:
        async with aiosqlite.connect(sqlite_backend.path) as conn:
            return [
                tuple(r)
                for r in await conn.execute_fetchall("SELECT version, name, applied_at FROM schema_version ORDER BY version")
            ]

    before = await applied()
    assert [v for v, _, _ in before] == list(range(1, sqlite_backend.latest_version + 1))
    await sqlite_store.close()
    again = sqlite_backend.make()
    await again.open()
    await again.close()
    assert await applied() == before


def _copy_shipped_migrations(target: Path) -> Path:
    target.mkdir()
    for migration in migrations.load_migrations():
        (target / migration.name).write_text(migration.sql)
    return target


async def test_sqlite_runner_applies_only_new_files_each_in_a_transaction(tmp_path: Path) -> None:
    folder = _copy_shipped_migrations(tmp_path / "migrations")
    latest = len(migrations.load_migrations(folder))
    db = str(tmp_path / "runner.db")
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        assert await migrations.upgrade(conn, db, migrations.load_migrations(folder)) == latest

        (folder / f"{latest + 1:04d}_notes.sql").write_text(
            "-- a trigger body and a string hold ';' without ending the statement\n"
            "CREATE TABLE extra (id INTEGER PRIMARY KEY, note TEXT NOT NULL DEFAULT 'a;b');\n"
            "CREATE TRIGGER extra_touch AFTER INSERT ON extra BEGIN\n"
            "  UPDATE extra SET note = note || ';' WHERE id = new.id;\n"
            "END;\n"
            "INSERT INTO extra (id) VALUES (1);\n"
        )
        assert await migrations.upgrade(conn, db, migrations.load_migrations(folder)) == latest + 1
        assert list(await conn.execute_fetchall("SELECT note FROM extra")) == [("a;b;",)]

        (folder / f"{latest + 2:04d}_broken.sql").write_text(
            "CREATE TABLE half_done (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
        )
        with pytest.raises(migrations.MigrationError, match=f"{latest + 2:04d}_broken.sql"):
            await migrations.upgrade(conn, db, migrations.load_migrations(folder))
        assert await migrations.current_version(conn) == latest + 1
        tables = {r[0] for r in await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables  # the whole file was rolled back
        assert not conn.in_transaction


async def test_sqlite_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    folder = _copy_shipped_migrations(tmp_path / "migrations")
    (folder / "0009_skipped.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="without gaps"):
        migrations.load_migrations(folder)
    (folder / "0009_skipped.sql").unlink()
    (folder / "2-bad-name.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match=r"NNNN_name\.sql"):
        migrations.load_migrations(folder)


def test_sqlite_split_statements() -> None:
    assert migrations.split_statements("-- only a comment\n") == []
    assert migrations.split_statements("SELECT 1; SELECT ';'; /* c; */ SELECT 2;\n-- end\n") == [
        "SELECT 1;",
        "SELECT ';';",
        "/* c; */ SELECT 2;",
    ]
    with pytest.raises(migrations.MigrationError, match="does not end"):
        migrations.split_statements("SELECT 1; SELECT 2")


async def test_sqlite_store_creates_nothing_when_refusing(tmp_path: Path, sqlite_backend: SQLiteBackend) -> None:
    # A schema from the future is refused before any migration touches it.
    store = sqlite_backend.make()
    await store.open()
    await store.close()
    await sqlite_backend.set_schema_version(50)
    shutil.copy(sqlite_backend.path, tmp_path / "copy.db")
    with pytest.raises(SchemaTooNew, match="schema version 50"):
        await SQLiteStore(tmp_path / "copy.db").open()
    async with aiosqlite.connect(tmp_path / "copy.db") as conn:
        assert list(await conn.execute_fetchall("SELECT MAX(version) FROM schema_version")) == [(50,)]


# --- PostgreSQL only --------------------------------------------------------------------------------


def test_each_backend_reads_its_own_file_of_one_list(tmp_path: Path) -> None:
    shipped = migrations.load_migrations()
    on_pg = migrations.load_migrations(dialect="postgresql")
    assert [m.name for m in on_pg] == [m.name for m in shipped]  # one list, same names recorded
    assert "TIMESTAMPTZ" in on_pg[0].sql and "TIMESTAMPTZ" not in shipped[0].sql

    folder = _copy_shipped_migrations(tmp_path / "migrations")
    (folder / "0009_orphan.postgresql.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match=r"no 0009_orphan\.sql"):
        migrations.load_migrations(folder, dialect="sqlite")  # an orphan breaks every backend's list


async def test_postgres_keeps_times_as_timestamptz_to_the_millisecond(pg_backend: PostgresBackend) -> None:
    store = pg_backend.make()
    await store.open()
    try:
        await create(store, started_at=T0.astimezone(CEST).replace(microsecond=123999))
    finally:
        await store.close()
    conn = await asyncpg.connect(pg_backend.dsn)
    try:
        row = await conn.fetchrow("SELECT started_at, pg_typeof(started_at)::text AS type, created_at FROM incidents")
    finally:
        await conn.close()
    assert row["type"] == "timestamp with time zone"
    assert row["started_at"] == T0
    assert row["created_at"].microsecond % 1000 == 0


async def test_postgres_runner_applies_only_new_files_each_in_a_transaction(pg_backend: PostgresBackend, tmp_path: Path) -> None:
    folder = _copy_shipped_migrations(tmp_path / "migrations")
    for migration in migrations.load_migrations(dialect="postgresql"):
        (folder / migration.name.replace(".sql", ".postgresql.sql")).write_text(migration.sql)
    latest = len(migrations.load_migrations(folder, dialect="postgresql"))
    conn = await asyncpg.connect(pg_backend.dsn)
    try:
        assert await migrations.upgrade_pg(conn, "db", migrations.load_migrations(folder, dialect="postgresql")) == latest
        (folder / f"{latest + 1:04d}_notes.sql").write_text("CREATE TABLE extra (id INTEGER);")  # SQLite's
        (folder / f"{latest + 1:04d}_notes.postgresql.sql").write_text(
            "CREATE TABLE extra (id INTEGER, note TEXT NOT NULL DEFAULT 'a;b');\n"
            "CREATE FUNCTION extra_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := NEW.note || ';'; RETURN NEW; END $$;\n"
            "CREATE TRIGGER extra_touch BEFORE INSERT ON extra FOR EACH ROW EXECUTE FUNCTION extra_touch();\n"
            "INSERT INTO extra (id) VALUES (1);\n"
        )
        assert await migrations.upgrade_pg(conn, "db", migrations.load_migrations(folder, dialect="postgresql")) == latest + 1
        assert await conn.fetchval("SELECT note FROM extra") == "a;b;"

        (folder / f"{latest + 2:04d}_broken.sql").write_text(
            "CREATE TABLE half_done (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
        )
        with pytest.raises(migrations.MigrationError, match=f"{latest + 2:04d}_broken.sql"):
            await migrations.upgrade_pg(conn, "db", migrations.load_migrations(folder, dialect="postgresql"))
        assert await migrations.current_version_pg(conn) == latest + 1
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None  # the whole file was rolled back
        assert not conn.is_in_transaction()
    finally:
        await conn.close()


async def test_postgres_store_creates_nothing_when_refusing(pg_backend: PostgresBackend) -> None:
    conn = await asyncpg.connect(pg_backend.dsn)
    try:
        await conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES (50, '0050_future.sql')")
        with pytest.raises(SchemaTooNew, match="schema version 50"):
            await pg_backend.make().open()
        assert await conn.fetchval("SELECT to_regclass('incidents')") is None
    finally:
        await conn.close()


async def test_postgres_unreachable_is_store_unavailable_without_the_password(tmp_path: Path) -> None:
    store = PostgresStore(f"postgresql://bot:s3cret@/db?host={tmp_path}")
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "s3cret" not in str(caught.value) and "bot:***@" in str(caught.value)


# --- outbox ---------------------------------------------------------------------------------


def outbox_entry(key: str, **changes: object) -> OutboxEntry:
    fields: dict[str, object] = {
        "key": key,
        "incident_number": None,
        "channel_id": "c" * 26,
        "root_id": "",
        "message": f"post {key}",
        "created_at": T0,
    }
    fields.update(changes)
    return OutboxEntry.model_validate(fields)


async def test_outbox_queues_once_per_key_and_lists_pending_oldest_first(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.add_outbox(outbox_entry("b", created_at=T0 + timedelta(seconds=1), root_id="r" * 26))
        assert await tx.add_outbox(outbox_entry("a"))
        assert not await tx.add_outbox(outbox_entry("a", message="other"))
        pending = await tx.pending_outbox()
    assert [e.key for e in pending] == ["a", "b"]
    assert (
        pending[0].message == "post a" and pending[1].root_id == "r" * 26 and pending[1].created_at == T0 + timedelta(seconds=1)
    )


async def test_outbox_remembers_attempts_and_forgets_done_entries(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add_outbox(outbox_entry("a", incident_number=None))
        await tx.add_outbox(outbox_entry("b"))
        entry = await tx.get_outbox("a")
        assert entry is not None and entry.attempts == 0 and entry.done_at is None
        entry.attempts = 2
        await tx.save_outbox(entry)
        done = await tx.get_outbox("b")
        assert done is not None
        done.done_at = T0
        await tx.save_outbox(done)
    async with store.transaction() as tx:
        again = await tx.get_outbox("a")
        assert again is not None and again.attempts == 2
        assert [e.key for e in await tx.pending_outbox()] == ["a"]
        finished = await tx.get_outbox("b")
        assert finished is not None and finished.done_at == T0
        assert await tx.get_outbox("nope") is None


async def test_outbox_rolls_back_with_its_change(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.add_outbox(outbox_entry("a"))
            raise RuntimeError("the change failed")
    async with store.transaction() as tx:
        assert await tx.pending_outbox() == []


async def test_check_reads_a_postgresql_database_without_changing_it(pg_backend: PostgresBackend) -> None:
    from incident_bot.ops.check import Mark, check_database

    empty = await check_database(pg_backend.dsn)
    assert empty.mark is Mark.OK and "(postgresql) is empty" in empty.text
    store = pg_backend.make()
    await store.open()
    await store.close()
    current = await check_database(pg_backend.dsn)
    assert current.text.endswith(f"(postgresql), schema version {pg_backend.latest_version} (current)")
    await pg_backend.set_schema_version(pg_backend.latest_version + 1)
    newer = await check_database(pg_backend.dsn)
    assert newer.mark is Mark.FAIL and "newer than this incident-bot knows" in newer.text


async def test_outbox_prune_forgets_delivered_entries_only(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.add_outbox(outbox_entry("old-done", created_at=T0 - timedelta(days=10)))
        await tx.add_outbox(outbox_entry("old-pending", created_at=T0 - timedelta(days=10)))
        await tx.add_outbox(outbox_entry("new-done"))
        for key, done in (("old-done", T0 - timedelta(days=10)), ("new-done", T0)):
            entry = await tx.get_outbox(key)
            assert entry is not None
            entry.done_at = done
            await tx.save_outbox(entry)
    async with store.transaction() as tx:
        assert await tx.prune_outbox(T0 - timedelta(days=1)) == 1
        assert await tx.get_outbox("old-done") is None
        assert [e.key for e in await tx.pending_outbox()] == ["old-pending"]  # never dropped while pending
        assert await tx.outbox_depth() == 1
        assert (await tx.bookkeeping_counts())["outbox"] == 2
