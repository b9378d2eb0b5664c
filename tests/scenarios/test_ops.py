"""The bot as a service: /healthz, /readyz and /metrics scraped while people use it, log
lines an operator can parse, and the exit code that keeps systemd from hammering a server
that refuses the token."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.botproc import BotProcess
from tests.support.scenario import checklist_posts, mention, start_incident, wait_message
from tests.support.waiting import eventually
from tests.support.world import World


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def status(url: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as resp:
        return resp.status, await resp.text()


async def test_health_and_metrics_follow_what_people_do(world: World, bot: BotProcess):
    url = await bot.ops_url()
    assert await status(url, "/healthz") == (200, "ok\n")

    async def ready() -> bool:
        return (await status(url, "/readyz"))[0] == 200

    await eventually(ready, timeout=15, what="/readyz 200")
    before = await scrape(url)
    assert value(before, "incident_bot_active_incidents", severity="2") == 0
    assert value(before, "incident_bot_ready") == 1

    alice, bob = world.alice, world.bob
    number, channel, _, _ = await start_incident(world, alice, f"Replica lag --playbook database --invite @{bob.username}")
    _, items = await checklist_posts(alice, channel["id"])
    await bob.react(items[0]["id"], "white_check_mark")
    await wait_message(alice, items[0]["id"], r"^☑")
    bogus = await alice.post(channel["id"], f"{mention(world)} sev 9")
    await alice.wait_for_reply(bogus)

    async def moved() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        after = await scrape(url)
        reacted = value(after, "incident_bot_reactions_handled_total", action="added") - value(
            before, "incident_bot_reactions_handled_total", action="added"
        )
        usage = value(after, "incident_bot_commands_total", command="sev", outcome="usage")
        return after if reacted >= 1 and usage >= 1 else None

    after = await eventually(moved, timeout=15, what="the reaction and the refused sev counted")
    assert value(after, "incident_bot_commands_total", command="start", outcome="ok") == 1
    assert value(after, "incident_bot_reply_seconds_count") >= 2
    assert value(after, "incident_bot_events_received_total", type="posted") > value(
        before, "incident_bot_events_received_total", type="posted"
    )
    assert value(after, "incident_bot_events_received_total", type="reaction_added") >= 1
    assert value(after, "incident_bot_rest_calls_total", status="2xx") > value(
        before, "incident_bot_rest_calls_total", status="2xx"
    )
    assert value(after, "incident_bot_db_commit_seconds_count") > value(before, "incident_bot_db_commit_seconds_count")
    assert value(after, "incident_bot_active_incidents", severity="2") == 1  # the playbook's severity
    assert ("incident_bot_outbox_depth", ()) in after and value(after, "incident_bot_outbox_depth") == 0  # all went out

    # The log: every handled event's line has its duration and incident; every line is JSON.
    handled = [e for e in bot.current_log() if e.get("event") in ("command.handled", "reaction.handled")]
    assert {e["event"] for e in handled} == {"command.handled", "reaction.handled"}
    for line in handled:
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0, line
    assert {e.get("incident") for e in handled if e.get("command") != "sev"} == {number}
    if shutil.which("jq"):  # CI installs it; without it, json.loads below checks the same
        jq = await asyncio.create_subprocess_exec(
            "jq", "-c", ".event", str(bot.log_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await jq.communicate()
        assert jq.returncode == 0, err.decode()
    for row in bot.log_path.read_text().splitlines():
        json.loads(row)


@pytest.mark.fake_only
async def test_metrics_count_429s_reconnects_and_catch_up(world: World, bot: BotProcess):
    url = await bot.ops_url()
    before = await scrape(url)
    world.fake.faults.rate_limit(r"^/api/v4/posts$", method="POST", times=1, retry_after=0.1, user=world.bot_username)
    post = await world.alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} help")
    await world.alice.wait_for_reply(post)
    await world.fake.faults.restart(refuse_for=1.0)  # sockets drop and cannot be resumed: catch-up over REST
    missed = await world.alice.post(world.channel_ids["ops/incidents"], f"{mention(world)} help")
    await world.alice.wait_for_reply(missed)
    await bot.wait_for_log("catchup.done", reason="reconnect")
    after = await scrape(url)
    assert (
        value(after, "incident_bot_rest_calls_total", status="429")
        == value(before, "incident_bot_rest_calls_total", status="429") + 1
    )
    assert value(after, "incident_bot_websocket_reconnects_total") == 1
    assert value(after, "incident_bot_websocket_resumes_total") == 0
    assert value(after, "incident_bot_events_caught_up_total") >= 1


@pytest.mark.fake_only
async def test_a_refused_token_exits_1_and_the_listener_can_be_off(world: World, tmp_path: Path):
    bot = BotProcess(world, tmp_path)
    bot.config_path.write_text(bot.config_path.read_text().replace('ops_address = "127.0.0.1:0"', 'ops_address = "off"'))
    world.fake.revoke_token(world.bot_token)
    await bot.start(wait_ready=False)
    assert bot.proc is not None
    assert await bot.proc.wait() == 1
    text = bot.log_path.read_text()
    assert "refused the token" in text and "ops.listening" not in text and "Traceback" not in text
    bot.close()
