"""The operator's side in-process: metrics, the degraded summary, the listener, the offline checks."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from incident_bot.config import ConfigError, load_settings
from incident_bot.ops.check import Mark, check_database, check_playbooks
from incident_bot.ops.health import DegradedSummary, State
from incident_bot.ops.http import OpsServer
from incident_bot.ops.metrics import Metrics, status_class
from incident_bot.store import migrations
from incident_bot.store.sqlite import SQLiteStore

NEWEST = max(m.version for m in migrations.load_migrations())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_rest_status_classes_keep_429_apart():
    assert [status_class(s) for s in (200, 201, 404, 429, 500, 503, 0)] == ["2xx", "2xx", "4xx", "429", "5xx", "5xx", "error"]


def test_metrics_count_what_they_are_told_in_their_own_registry():
    one, two = Metrics(), Metrics()
    one.event_received("posted")
    one.event_received("posted")
    one.command_handled("start", "ok", 0.2)
    one.rest_response(429)
    one.rest_response(200)
    one.connected(reconnect=True, resumed=True)
    one.connected(reconnect=False, resumed=False)
    one.caught_up(3)
    one.set_active([1, 3, 3])
    assert sample(one, "incident_bot_events_received_total", type="posted") == 2
    assert sample(one, "incident_bot_commands_total", command="start", outcome="ok") == 1
    assert sample(one, "incident_bot_reply_seconds_count") == 1
    assert sample(one, "incident_bot_rest_calls_total", status="429") == 1
    assert sample(one, "incident_bot_rest_calls_total", status="2xx") == 1
    assert sample(one, "incident_bot_websocket_reconnects_total") == 1
    assert sample(one, "incident_bot_websocket_resumes_total") == 1
    assert sample(one, "incident_bot_events_caught_up_total") == 3
    assert [sample(one, "incident_bot_active_incidents", severity=s) for s in "1234"] == [1, 0, 2, 0]
    assert sample(two, "incident_bot_events_received_total", type="posted") == 0  # not a shared global registry
    assert b"incident_bot_db_commit_seconds_bucket" in one.render()


def test_degraded_summary_at_most_once_a_minute_then_recovered():
    summary = DegradedSummary(every=60)
    well = State(reconnecting=False, catching_up=False, rate_limited=False)
    down = State(reconnecting=True, catching_up=False, rate_limited=False)
    assert summary.tick(well, 0) is None
    first = summary.tick(down, 10)
    assert first is not None and first[0] == "bot.degraded" and first[1]["state"] == ["reconnecting"]
    assert summary.tick(down, 15) is None
    assert summary.tick(State(True, True, True), 69) is None
    again = summary.tick(State(True, True, True), 70)
    assert again == ("bot.degraded", {"state": ["reconnecting", "catching up", "rate-limited"], "degraded_for_s": 60.0})
    assert summary.tick(well, 75) == ("bot.recovered", {"degraded_for_s": 65.0})
    assert summary.tick(well, 80) is None


def test_ops_address_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("INCIDENT_BOT_MATTERMOST_URL", "http://mm.test")
    monkeypatch.setenv("INCIDENT_BOT_BOT_TOKEN", "t0ken")
    monkeypatch.chdir(tmp_path)
    assert load_settings().ops_listen() == ("127.0.0.1", 9102)
    monkeypatch.setenv("INCIDENT_BOT_OPS_ADDRESS", "off")
    assert load_settings().ops_listen() is None
    monkeypatch.setenv("INCIDENT_BOT_OPS_ADDRESS", "[::1]:0")
    assert load_settings().ops_listen() == ("::1", 0)
    monkeypatch.setenv("INCIDENT_BOT_OPS_ADDRESS", "9102")
    with pytest.raises(ConfigError, match="ops_address"):
        load_settings()


async def test_listener_serves_health_readiness_and_metrics():
    metrics = Metrics()
    reasons: list[str] = ["catch-up not finished"]
    refreshed = []

    async def not_ready() -> list[str]:
        return list(reasons)

    async def refresh() -> None:
        refreshed.append(True)
        metrics.set_active([2])

    server = OpsServer("127.0.0.1", 0, metrics, not_ready, refresh)
    address = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{address}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://{address}/readyz") as resp:
                assert resp.status == 503 and "catch-up not finished" in await resp.text()
            reasons.clear()
            async with http.get(f"http://{address}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"http://{address}/metrics") as resp:
                text = await resp.text()
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert 'incident_bot_active_incidents{severity="2"} 1.0' in text
        assert "incident_bot_ready 1.0" in text and refreshed
    finally:
        await server.stop()


async def test_database_check_creates_nothing(tmp_path):
    path = tmp_path / "bot.db"
    result = await check_database(path)
    assert result.mark is Mark.OK and "will be created at" in result.text and str(path) in result.text
    assert list(tmp_path.iterdir()) == []
    assert (await check_database(tmp_path / "missing-dir" / "bot.db")).mark is Mark.FAIL


async def test_database_check_reads_the_schema_version(tmp_path):
    path = tmp_path / "bot.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    assert (await check_database(path)).text.endswith(f"schema version {NEWEST} (current)")
    con = sqlite3.connect(path)
    con.execute("INSERT INTO schema_version (version, name) VALUES (?, 'future')", (NEWEST + 1,))
    con.commit()
    con.close()
    newer = await check_database(path)
    assert newer.mark is Mark.FAIL and f"schema version {NEWEST + 1}, newer" in newer.text and "Fix:" in newer.line()


async def test_database_check_refuses_a_file_that_is_no_database(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    assert (await check_database(tmp_path / "junk.db")).mark is Mark.FAIL


def test_playbooks_check(tmp_path, monkeypatch):
    monkeypatch.setenv("INCIDENT_BOT_MATTERMOST_URL", "http://mm.test")
    monkeypatch.setenv("INCIDENT_BOT_BOT_TOKEN", "t0ken")
    config = tmp_path / "c.toml"
    config.write_text('[[playbooks]]\nname = "db"\nitems = ["a"]\n[[playbooks]]\nname = "empty"\n')
    results = check_playbooks(load_settings(config))
    assert [r.mark for r in results] == [Mark.OK, Mark.WARN]
    assert "2 in the config (db, empty)" in results[0].text
