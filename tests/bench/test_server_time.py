"""How long a real Mattermost server takes to serve a bot's requests (`make bench-server`).

Runs only under the real-server harness (tests/integration/run.sh): as the bot user, over one
keep-alive aiohttp session (as the bot's own client), a few hundred sequential requests of each
kind the bot's replies are made of: a reply in a thread (``POST /api/v4/posts``), an edit
(``PUT /api/v4/posts/{id}/patch``) and a cheap read (``GET /api/v4/users/me``). Prints p50/p90/p99
per kind and writes them to ``test-artifacts/server-time.json``. The fake Mattermost models these
figures in the sustained-rate ladders of test_e2e.py (SERVER_TIME_*), where the real server's
request time, not the bots' CPU, decides how many commands a second each bot can serve.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.bench.harness import percentile
from tests.support.botproc import REPO
from tests.support.world import World

pytestmark = [pytest.mark.bench, pytest.mark.integration]

REQUESTS = 300  # of each kind, one at a time
WARM_UP = 20


@pytest.fixture
async def world() -> AsyncIterator[World]:
    if not os.environ.get("INCIDENT_BOT_TEST_MM_URL"):
        # Selected only by `make bench-server`, which runs it inside the harness: run by hand
        # without one, it says how instead of passing for a measurement it never made.
        pytest.fail("needs the real-server harness: run it with make bench-server", pytrace=False)
    from tests.integration.bootstrap import real_world

    async with real_world() as w:
        yield w
    for person in [*w.people.values(), w.admin]:
        await person.close()


async def timed(call: Callable[[int], Awaitable[None]], count: int) -> list[float]:
    """Seconds per call, ``count`` calls one after another (after WARM_UP untimed ones)."""
    for i in range(WARM_UP):
        await call(i)
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - t0)
    return times


async def test_real_server_request_times(world: World) -> None:
    channel = world.channel_ids["ops/incidents"]
    headers = {"Authorization": f"Bearer {world.bot_token}", "X-Requested-With": "XMLHttpRequest"}
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, reused
    async with aiohttp.ClientSession(base_url=world.url, headers=headers, connector=connector) as http:
        version = ""

        async def request(method: str, path: str, body: Any = None) -> Any:
            nonlocal version
            async with http.request(method, path, json=body) as response:
                payload = await response.json(content_type=None)
                assert response.status in (200, 201), f"{method} {path}: {response.status} {payload}"
                version = response.headers.get("X-Version-Id", version)
                return payload

        root = await request("POST", "/api/v4/posts", {"channel_id": channel, "message": "server time root"})
        target = await request("POST", "/api/v4/posts", {"channel_id": channel, "message": "to patch", "root_id": root["id"]})

        async def reply(i: int) -> None:
            await request("POST", "/api/v4/posts", {"channel_id": channel, "root_id": root["id"], "message": f"reply {i}"})

        async def patch(i: int) -> None:
            await request("PUT", f"/api/v4/posts/{target['id']}/patch", {"message": f"edit {i}"})

        async def read(i: int) -> None:
            await request("GET", "/api/v4/users/me")

        kinds = {"post_reply": reply, "patch_post": patch, "get_users_me": read}
        figures: dict[str, Any] = {}
        for name, call in kinds.items():
            times = await timed(call, REQUESTS)
            figures[name] = {
                "requests": REQUESTS,
                **{f"p{q}_ms": round(percentile(times, q) * 1000, 2) for q in (50, 90, 99)},
            }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "server": "the pinned Mattermost of tests/integration (PostgreSQL), same machine, loopback",
        "server_version": version,
        "machine": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
        **figures,
    }
    out = REPO / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "server-time.json").write_text(json.dumps(result, indent=2))
    print(f"\nreal server ({version}), one request at a time, ms:")
    for name in kinds:
        f = figures[name]
        print(f"  {name:14} p50 {f['p50_ms']:7.2f}  p90 {f['p90_ms']:7.2f}  p99 {f['p99_ms']:7.2f}")
