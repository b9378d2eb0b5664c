"""Speed targets as ratios against a baseline measured in the same run (`make bench`).

Timings vary from machine to machine; ratios to plain-library baselines doing the
irreducible part of the same work do not vary much. Each target says how much overhead
our layer may add on top of that baseline.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from incident_bot.chat.events import parse_frame
from incident_bot.domain.grammar import parse
from incident_bot.domain.models import Incident, Status
from incident_bot.store.sqlite import SQLiteStore

pytestmark = pytest.mark.bench

POST = {
    "id": "p" * 26,
    "create_at": 1764165720000,
    "update_at": 1764165720000,
    "edit_at": 0,
    "delete_at": 0,
    "is_pinned": False,
    "user_id": "u" * 26,
    "channel_id": "c" * 26,
    "root_id": "",
    "original_id": "",
    "message": "@incident-bot start DB primary down --sev 1 --invite @bob @carol",
    "type": "",
    "props": {},
    "hashtags": "",
    "file_ids": [],
    "pending_post_id": "",
    "reply_count": 0,
    "metadata": {},
}
FRAME = json.dumps(
    {
        "event": "posted",
        "data": {
            "channel_display_name": "Incidents",
            "channel_name": "incidents",
            "channel_type": "O",
            "post": json.dumps(POST),
            "sender_name": "@alice",
            "set_online": True,
            "team_id": "t" * 26,
            "mentions": json.dumps(["b" * 26]),
        },
        "broadcast": {"omit_users": None, "user_id": "", "channel_id": "c" * 26, "team_id": ""},
        "seq": 7,
    }
)


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, ours: float, base: float, limit: float) -> None:
    ratio = ours / base
    print(f"\n{name}: ours {ours * 1000:.1f} ms, baseline {base * 1000:.1f} ms, ratio {ratio:.2f} (target ≤ {limit})")
    assert ratio <= limit, f"{name}: {ratio:.2f}x the baseline, target ≤ {limit}x"


def test_frame_parsing_vs_plain_json():
    """Typed, validated events from a frame: at most 8x decoding the same JSON by hand."""
    n = 5000

    def ours():
        for _ in range(n):
            parse_frame(FRAME)

    def base():
        for _ in range(n):
            env = json.loads(FRAME)
            json.loads(env["data"]["post"])
            json.loads(env["data"]["mentions"])

    report("parse_frame", best_of(ours), best_of(base), 8.0)


def test_command_parsing_vs_split():
    """The command grammar: at most 80x a bare str.split of the same text (~15 µs a command)."""
    text = "DB primary down --sev 1 --playbook database --invite @bob @carol"
    n = 20000

    def ours():
        for _ in range(n):
            word, rest = ("start " + text).split(None, 1)
            parse(word, rest)

    def base():
        for _ in range(n):
            ("start " + text).split()

    report("command parse", best_of(ours), best_of(base), 80.0)


def test_store_transactions_vs_raw_sqlite(tmp_path):
    """A committed transaction through the store (incident save + event key): at most 4x the
    same two writes committed through aiosqlite by hand, i.e. the repository, its models and
    its lock may cost three times the bare database round trips."""
    n = 300

    async def ours_async():
        store = SQLiteStore(tmp_path / f"ours-{time.monotonic_ns()}.db")
        await store.open()
        try:
            async with store.transaction() as tx:
                incident = await tx.create_incident(
                    Incident(
                        team_id="t",
                        title="bench",
                        severity=2,
                        status=Status.ACTIVE,
                        commander_id="u",
                        started_by="u",
                        origin_channel_id="c",
                        started_at=datetime.now(UTC),
                    )
                )
            start = time.perf_counter()
            for i in range(n):
                async with store.transaction() as tx:
                    incident.severity = 1 + i % 4
                    await tx.save_incident(incident)
                    await tx.record_event(f"posted:{i}", datetime.now(UTC), incident.number)
            return time.perf_counter() - start
        finally:
            await store.close()

    async def base_async():
        import aiosqlite

        con = await aiosqlite.connect(tmp_path / f"base-{time.monotonic_ns()}.db", isolation_level=None)
        try:
            await con.execute("PRAGMA journal_mode=WAL")
            await con.execute("PRAGMA synchronous=NORMAL")
            await con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
            await con.execute("CREATE TABLE e (k TEXT PRIMARY KEY)")
            await con.execute("INSERT INTO t VALUES ('x', 0)")
            start = time.perf_counter()
            for i in range(n):
                await con.execute("BEGIN IMMEDIATE")
                await con.execute("UPDATE t SET v = ? WHERE k = 'x'", (i,))
                await con.execute("INSERT INTO e VALUES (?)", (f"posted:{i}",))
                await con.execute("COMMIT")
            return time.perf_counter() - start
        finally:
            await con.close()

    ours = min(asyncio.run(ours_async()) for _ in range(3))
    base = min(asyncio.run(base_async()) for _ in range(3))
    report("store transaction", ours, base, 4.0)
