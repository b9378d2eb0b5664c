"""The whole bot against stock mmpy_bot, end to end (`make bench`).

incident-bot runs as operators run it (``python -m incident_bot run``, its own process) against
the fake Mattermost; in the same run a stock mmpy_bot bot (tests/bench/stock_bot.py) answers
``help`` against the same fake, as the baseline. Measured: reply time (p50/p99, with and without
the fake's own time, see harness.py), CPU per 1,000 commands from the process's own counters,
the highest sustained rate with p99 under 100 ms, RSS; checklist ticks by three people at once;
a database of 12,000 incidents (start-up memory and time, bot time of the read commands, `stats`
against a SQL reference count); catch-up of 1,000 commands posted while the bot was down.

Both bots run at once, each in its own channels (one, and twenty for spread load), so neither
gets the other's load as events. The fixed-rate figures are taken at the fake's own ~0 ms per
request, in ROUNDS rounds whose blocks alternate between the bots (load on the shared machine
drifts; alternating spreads it over both). The sustained-rate ladders, which alternate rung by
rung, run with the real server's request time modelled by the fake (SERVER_TIME_*, measured by
`make bench-server`): against ~0 ms both bots are only CPU-bound and the ladders cannot show
what serving channels in parallel buys.

One table is printed and the figures are written to ``test-artifacts/bench-e2e.json``. Targets
are ratios to the baseline measured in the same run, or absolute where there is no baseline;
the test fails naming every target missed. Timings move with the machine's load; the ratios
much less.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from incident_bot.app.channel import PART_PROP
from incident_bot.domain.models import Incident, Status, TimelineEvent, TimelineKind
from incident_bot.store import migrations
from incident_bot.store.sqlite import SQLiteStore
from tests.bench.harness import (
    LoadResult,
    Sender,
    Watch,
    cpu_seconds,
    gc_paused,
    idle,
    load,
    median,
    pooled,
    rss_mb,
    wait_replies,
)
from tests.fakes.mattermost import FakeMattermost
from tests.fakes.world import close_world, make_fake_world
from tests.support.botproc import REPO, TEST_CONFIG, BotProcess
from tests.support.people import Person
from tests.support.waiting import eventually
from tests.support.world import World

pytestmark = pytest.mark.bench

ARTIFACTS = REPO / "test-artifacts"
CHANNELS = 20
# The sustained-rate ladder, commands/s: about 1.2x apart from 30/s up, so that the ratio of two
# bots' rungs is not off by the ~1.5x of a coarser ladder.
RATES = (5, 10, 20, 30, 40, 50, 60, 70, 85, 100, 120, 150, 180, 220, 270, 330, 400, 500)
P99_LIMIT_MS = 100.0
# The fixed-rate load is measured in ROUNDS rounds, the two bots' blocks alternated (see
# live_figures); the counts are per round, so each bot gets ~1,100 commands (with the warm-up).
ROUNDS = 4
ONE_CHANNEL_RATE, ONE_CHANNEL_COUNT = 20, 30
SPREAD_RATE, SPREAD_COUNT = 100, 250
# The real server's time per request, which the fake adds (asyncio.sleep, no CPU) to every
# request of both bots during the sustained-rate ladders only; the fixed-rate figures are taken
# at the fake's own ~0 ms. Against a server that answers in ~0 ms both bots are CPU-bound and
# the ladders compare CPU; with real request times stock mmpy_bot (the synchronous driver, called
# from its listener) serves one reply at a time while incident-bot serves channels in parallel,
# which is what the twenty-channel target was set on. The model's server has no limit on
# parallel requests (a real one is bounded by its cores and database), so a bot that serves many
# channels at once is not slowed by the server here as it would be on a small shared machine.
# Measured 2026-12-02 with `make bench-server` (tests/bench/test_server_time.py: the pinned
# Mattermost 11.4.0 of tests/integration with PostgreSQL on this 2-core machine, 300 sequential
# requests each as the bot user over one keep-alive aiohttp connection), p50 (p90/p99) in ms:
# reply in a thread 15.62 (25.78/36.23), patch 21.00 (31.59/44.27), GET /users/me 0.57
# (0.79/1.45); two more runs gave p50 12.21 and 15.41, 26.54 and 28.56, 0.58 and 0.66 (`help`
# makes only the reply). Measure again with `make bench-server` (test-artifacts/server-time.json)
# and put the p50 figures here.
SERVER_TIME_MEASURED = "2026-12-02, make bench-server, p50"
SERVER_TIME_POST = 0.0156  # POST /api/v4/posts
SERVER_TIME_PATCH = 0.0210  # PUT /api/v4/posts/{id}/patch
SERVER_TIME_OTHER = 0.0006  # any other request, as GET /api/v4/users/me
CATCH_UP = 1000
TICKS = 30

# The scale database: made once through the store and kept in test-artifacts/bench-cache,
# keyed by the schema and these numbers (seeding 300,000 rows one store call at a time takes
# a minute or two on a loaded 2-core machine; later runs copy the file).
SEED_VERSION = 1
SEED_INCIDENTS = 12_000  # past the 10,000 an old `stats` could see
SEED_ITEMS = 200_000
SEED_TIMELINE = 100_000
SEED_ACTIVE = 40
FOCUS_ITEMS, FOCUS_TIMELINE = 30, 60  # the incident `info`, `timeline` and `export` read
SCALE_REPEAT = 5
FIXED = {  # ids fixed so the cached database fits every run's fake
    "bot": "b" * 26,
    "alice": "a" * 26,
    "bob": "c" * 26,
    "ops": "d" * 26,
}

_STEPS = ", ".join(json.dumps(f"Step {i}") for i in range(1, TICKS + 1))
CONFIG = TEST_CONFIG.replace('log_level = "debug"', 'log_level = "info"') + (
    f'\n[[playbooks]]\nname = "bench30"\ndescription = "Thirty items"\ndefault_severity = 2\nitems = [{_STEPS}]\n'
)


# ---------------------------------------------------------------------------- the two bots


class Contender:
    """A bot under test: its process, its user, how it is mentioned."""

    def __init__(self, name: str, user_id: str, mention: str) -> None:
        self.name = name
        self.user_id = user_id
        self.mention = mention
        self.pid = 0
        self.one: list[str] = []  # its own channel for one-channel load
        self.spread: list[str] = []  # its own CHANNELS channels for spread load


class OperatorBotProcess(BotProcess):
    """As an operator runs it: without the tests' clock file (the bot would read it on every clock read)."""

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["INCIDENT_BOT_CLOCK_SKEW_FILE"]
        return env


class IncidentBot(Contender):
    def __init__(self, world: World, workdir: Path) -> None:
        super().__init__("incident-bot", world.bot_user_id, "@incident-bot")
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = OperatorBotProcess(world, workdir)
        self.proc.config_path.write_text(CONFIG)

    async def start(self, wait_ready: bool = True) -> None:
        await self.proc.start(wait_ready=wait_ready)
        assert self.proc.proc is not None
        self.pid = self.proc.proc.pid

    async def stop(self) -> None:
        code = await self.proc.stop()
        assert code == 0, f"incident-bot exited with {code}"


class StockBot(Contender):
    def __init__(self, world: World, user_id: str, token: str, workdir: Path) -> None:
        super().__init__("stock mmpy_bot", user_id, "@stock-bot")
        self.world = world
        self.token = token
        self.log = workdir / "stock-bot.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = dict(os.environ, STOCK_BOT_URL=self.world.url, STOCK_BOT_TOKEN=self.token)
        with open(self.log, "wb") as out:  # noqa: ASYNC230 - a local log file opened once; the child writes it
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bench.stock_bot",
                cwd=str(REPO),
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.pid = self.proc.pid
        fake = self.world.fake
        await eventually(lambda: fake.events_for(user=self.user_id, event="hello"), timeout=30, what="stock bot connected")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# ---------------------------------------------------------------------------- live load


async def live_figures(bots: list[Contender], fake: FakeMattermost, sender: Sender, watch: Watch) -> dict[str, Any]:
    """Fixed-rate figures at the fake's own ~0 ms, then the sustained-rate ladders with the
    modelled server time; per bot, by name.

    Both bots run throughout, each in its own channels. The fixed-rate blocks alternate between
    the bots, and which bot goes first flips from block to block (a round is A B in one channel
    then B A in twenty, the next round B A then A B, and so on), so load that
    drifts on the shared machine falls on both alike; a bot's blocks are pooled (samples
    together, CPU summed)."""
    single: dict[str, list[LoadResult]] = {b.name: [] for b in bots}
    wide: dict[str, list[LoadResult]] = {b.name: [] for b in bots}
    for bot in bots:
        await load(sender, watch, bot.pid, bot.user_id, bot.one, f"{bot.mention} help", 20, 20)  # warm up
        await idle(bot.pid)
    for round_ in range(ROUNDS):
        order = bots if round_ % 2 == 0 else bots[::-1]
        for bot in order:
            message = f"{bot.mention} help"
            single[bot.name].append(
                await load(sender, watch, bot.pid, bot.user_id, bot.one, message, ONE_CHANNEL_RATE, ONE_CHANNEL_COUNT)
            )
            await idle(bot.pid)
        for bot in order[::-1]:
            message = f"{bot.mention} help"
            wide[bot.name].append(
                await load(sender, watch, bot.pid, bot.user_id, bot.spread, message, SPREAD_RATE, SPREAD_COUNT, timeout=30)
            )
            await idle(bot.pid)
    figures: dict[str, Any] = {}
    for bot in bots:
        one, spread = pooled(single[bot.name]), pooled(wide[bot.name])
        figures[bot.name] = {
            "one_channel": fixed_rate(single[bot.name]),
            "twenty_channels": fixed_rate(wide[bot.name]),
            "rss_mb_after_1000": round(rss_mb(bot.pid), 1),
            "cpu_s_per_1000_help": round((one.cpu + spread.cpu) / (len(one.samples) + len(spread.samples)) * 1000, 3),
        }
    rules = [
        fake.faults.delay(path, seconds, method=method, times=None, user=bot.user_id)
        for bot in bots
        for method, path, seconds in (
            ("POST", r"^/api/v4/posts$", SERVER_TIME_POST),
            ("PUT", r"^/api/v4/posts/[^/]+/patch$", SERVER_TIME_PATCH),
            ("*", r"", SERVER_TIME_OTHER),  # the first matching delay applies, so: the rest
        )
    ]
    try:
        for name, key in (("sustained_one_channel", "one"), ("sustained_twenty_channels", "spread")):
            ladders = await sustained(bots, sender, watch, key)
            for bot in bots:
                figures[bot.name][name] = ladders[bot.name]
    finally:
        for rule in rules:
            fake.faults.remove(rule)
    return figures


def server_time_model() -> dict[str, Any]:
    return {
        "applies_to": "the sustained-rate ladders, every request of both bots",
        "measured": SERVER_TIME_MEASURED,
        "post_ms": SERVER_TIME_POST * 1000,
        "patch_ms": SERVER_TIME_PATCH * 1000,
        "other_ms": SERVER_TIME_OTHER * 1000,
    }


def fixed_rate(blocks: list[LoadResult]) -> dict[str, Any]:
    """One rate's blocks pooled; each block's p99 minus the fake and CPU shown too, so a stall
    of the machine in one block can be told from a bot that is slow throughout."""
    result = pooled(blocks)
    return {
        "rate": result.rate,
        "commands": len(result.samples),
        "answered": len(result.answered),
        "p50_ms": round(result.p(50, net=False), 2),
        "p99_ms": round(result.p(99, net=False), 2),
        "p50_net_ms": round(result.p(50), 2),
        "p99_net_ms": round(result.p(99), 2),
        "cpu_s_per_1000": round(result.cpu_per_1000, 3),
        "blocks_p99_net_ms": [round(b.p(99), 2) for b in blocks],
        "blocks_cpu_s_per_1000": [round(b.cpu_per_1000, 3) for b in blocks],
    }


async def sustained(bots: list[Contender], sender: Sender, watch: Watch, key: str) -> dict[str, Any]:
    """Up the ladder while every command is answered with p99 (end to end) under 100 ms; the
    bots alternate rung by rung (the first bot first on even rungs), in their own channels
    (``key``: "one" or "spread").

    A rung that misses is run once more before that bot's climb stops: on a machine shared with
    other work one stall of another process is enough to put a short run's p99 over. A rung
    is one second of commands (at least 30): with two seconds, both bots climbing the whole
    ladder on a quiet machine took make bench past its 5 minutes (5 min 8 s)."""
    best = {b.name: 0 for b in bots}
    steps: dict[str, list[dict[str, Any]]] = {b.name: [] for b in bots}
    climbing = list(bots)
    for n, rate in enumerate(RATES):
        for bot in climbing if n % 2 == 0 else climbing[::-1]:
            channels: list[str] = getattr(bot, key)
            for _attempt in range(2):
                result = await load(
                    sender, watch, bot.pid, bot.user_id, channels, f"{bot.mention} help", rate, max(30, rate), timeout=10
                )
                p99 = result.p(99, net=False)
                steps[bot.name].append(
                    {"rate": rate, "p99_ms": round(p99, 1), "answered": len(result.answered), "sent": len(result.samples)}
                )
                await idle(bot.pid, timeout=30)
                if p99 < P99_LIMIT_MS:
                    break
            if p99 < P99_LIMIT_MS:
                best[bot.name] = rate
        climbing = [b for b in climbing if best[b.name] == rate]
        if not climbing:
            break
    return {b.name: {"rate": best[b.name], "steps": steps[b.name]} for b in bots}


# ---------------------------------------------------------------------------- ticks


async def tick_figures(bot: IncidentBot, world: World, watch: Watch, sender: Sender) -> dict[str, Any]:
    """30 items on one checklist ticked by three people at once: until every item post shows it."""
    room = world.channel_ids["ops/incidents"]
    command = sender.post(room, "@incident-bot start Bench ticks --playbook bench30 --invite @bob @carol")
    await wait_replies(watch, [command], 30)
    fake: FakeMattermost = world.fake

    def item_posts() -> list[dict[str, Any]] | None:
        found = [
            p
            for p in fake.all_posts()
            if p["user_id"] == bot.user_id and ":item:" in str(p["props"].get(PART_PROP, "")) and not p["delete_at"]
        ]
        return found if len(found) == TICKS else None

    items = await eventually(item_posts, timeout=30, what="30 checklist item posts")
    await idle(bot.pid)
    ids = {p["id"] for p in items}

    def all_ticked() -> float | None:
        shown: dict[str, float] = {}
        for when, post_id, message in watch.edits:
            if post_id in ids and message.startswith("☑"):
                shown.setdefault(post_id, when)
        return max(shown.values()) if len(shown) == len(ids) else None

    cpu0 = cpu_seconds(bot.pid)
    with gc_paused():
        t0 = time.monotonic()
        people = [world.alice, world.bob, world.carol]
        await asyncio.gather(*(people[i % 3].react(post["id"]) for i, post in enumerate(items)))
        done = await eventually(all_ticked, timeout=60, interval=0.01, what="every item post ticked")
    await idle(bot.pid)
    cpu = cpu_seconds(bot.pid) - cpu0
    return {"items": TICKS, "people": 3, "all_shown_s": round(done - t0, 3), "cpu_s_per_tick": round(cpu / TICKS, 5)}


# ---------------------------------------------------------------------------- catch-up


async def catch_up_figures(bot: IncidentBot, sender: Sender, watch: Watch, spread: list[str]) -> dict[str, Any]:
    """1,000 commands live (posted at once) against the same 1,000 posted while the bot was down."""
    message = "@incident-bot help"
    await idle(bot.pid)
    with gc_paused():
        t0 = time.monotonic()
        live = [sender.post(spread[i % len(spread)], message, i) for i in range(CATCH_UP)]
        await wait_replies(watch, live, 120)
        live_s = max(s.replied or float("inf") for s in live) - t0
    await bot.stop()
    missed = [sender.post(spread[i % len(spread)], message, i) for i in range(CATCH_UP)]
    with gc_paused():
        t1 = time.monotonic()
        await bot.start(wait_ready=False)
        await wait_replies(watch, missed, 180)
        caught_s = max(s.replied or float("inf") for s in missed) - t1
    return {
        "commands": CATCH_UP,
        "live_s": round(live_s, 2),
        "catch_up_s": round(caught_s, 2),
        "answered_live": sum(s.replied is not None for s in live),
        "answered_catch_up": sum(s.replied is not None for s in missed),
    }


# ---------------------------------------------------------------------------- scale


def seed_key() -> str:
    digest = hashlib.sha256(f"{SEED_VERSION} {SEED_INCIDENTS} {SEED_ITEMS} {SEED_TIMELINE} {SEED_ACTIVE} {FIXED}".encode())
    for migration in migrations.load_migrations():
        digest.update(migration.name.encode())
        digest.update(migration.sql.encode())
    return digest.hexdigest()[:16]


async def seeded_database() -> tuple[Path, float | None]:
    """The scale database (cached); the seconds seeding took, None when the cache served."""
    cache = ARTIFACTS / "bench-cache" / f"seed-{seed_key()}.db"
    if cache.exists():
        return cache, None
    cache.parent.mkdir(parents=True, exist_ok=True)
    for old in cache.parent.glob("seed-*"):
        old.unlink()
    tmp = cache.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    began = time.monotonic()
    await seed(tmp)
    tmp.replace(cache)
    return cache, time.monotonic() - began


async def seed(path: Path) -> None:
    """Through the store, 250 incidents and their rows a transaction. Incident 1 is the focus:
    ended, FOCUS_ITEMS items, FOCUS_TIMELINE timeline rows. The newest SEED_ACTIVE are active."""
    rnd = random.Random(10)
    store = SQLiteStore(path)
    await store.open()
    now = datetime.now(UTC)
    people = [FIXED["alice"], FIXED["bob"]]
    rest = SEED_INCIDENTS - 1
    items_each = (SEED_ITEMS - FOCUS_ITEMS) / rest
    events_each = (SEED_TIMELINE - FOCUS_TIMELINE) / rest
    items_made = events_made = 0
    try:
        for first in range(0, SEED_INCIDENTS, 250):
            async with store.transaction() as tx:
                for n in range(first, min(first + 250, SEED_INCIDENTS)):
                    active = n >= SEED_INCIDENTS - SEED_ACTIVE
                    started = now - timedelta(days=300) + timedelta(minutes=35 * n) if not active else now - timedelta(hours=2)
                    ended = started + timedelta(seconds=rnd.randint(60, 6 * 3600))
                    if not active and ended > now - timedelta(days=2):
                        ended = now - timedelta(days=2)  # outside the restart's repair window
                    incident = await tx.create_incident(
                        Incident(
                            team_id=FIXED["ops"],
                            title=f"Seeded incident {n + 1}",
                            severity=rnd.randint(1, 4),
                            status=Status.ACTIVE if active else Status.ENDED,
                            commander_id=people[n % 2],
                            started_by=people[n % 2],
                            origin_channel_id="o" * 26,
                            started_at=started,
                            ended_at=None if active else ended,
                            ended_by=None if active else people[n % 2],
                            resolution=None if active else "rolled back",
                        )
                    )
                    items = FOCUS_ITEMS if n == 0 else round(items_each * n) - items_made
                    events = FOCUS_TIMELINE if n == 0 else round(events_each * n) - events_made
                    if n:
                        items_made += items
                        events_made += events
                    for i in range(items):
                        await tx.add_checklist_item(incident.number, f"Seeded step {i + 1}")
                    for i in range(events):
                        kind = TimelineKind.STARTED if i == 0 else TimelineKind.NOTE
                        await tx.add_timeline(
                            TimelineEvent(
                                incident_number=incident.number,
                                at=started + timedelta(minutes=i),
                                kind=kind,
                                actor_id=people[i % 2],
                                text=f"note {i}",
                            )
                        )
    finally:
        await store.close()


def scale_world(fake: FakeMattermost, url: str) -> World:
    bot, bot_token = fake.create_user("incident-bot", is_bot=True, user_id=FIXED["bot"])
    alice, alice_token = fake.create_user("alice", first_name="Alice", user_id=FIXED["alice"])
    bob, bob_token = fake.create_user("bob", first_name="Bob", user_id=FIXED["bob"])
    admin, admin_token = fake.create_user("admin", system_admin=True)
    ops = fake.create_team("ops", team_id=FIXED["ops"])
    for uid in (bot["id"], alice["id"], bob["id"]):
        fake.add_team_member(ops["id"], uid)

    def person(user: dict[str, Any], token: str) -> Person:
        return Person(url, token, user["username"], user["id"], bot_user_id=bot["id"])

    return World(
        url=url,
        bot_token=bot_token,
        bot_username="incident-bot",
        bot_user_id=bot["id"],
        admin=person(admin, admin_token),
        people={"alice": person(alice, alice_token), "bob": person(bob, bob_token)},
        team_ids={"ops": ops["id"]},
        channel_ids={},
        fake=fake,
    )


def log_time(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


async def start_measured(bot: IncidentBot) -> dict[str, float]:
    """Start; time to `bot.ready` (by its log's clock), then RSS once the restart repair is done."""
    spawned = time.time()
    await bot.start()
    ready = await bot.proc.wait_for_log("bot.ready")
    await bot.proc.wait_for_log("bot.repaired", timeout=60)
    await idle(bot.pid)
    return {"ready_s": round(log_time(ready) - spawned, 3), "rss_mb": round(rss_mb(bot.pid), 1)}


async def scale_figures(tmp_path: Path) -> dict[str, Any]:
    seeded, seed_s = await seeded_database()
    fake = FakeMattermost()
    url = await fake.start()
    world = scale_world(fake, url)
    watch = Watch(fake)
    watch.bots.add(world.bot_user_id)
    try:
        empty = IncidentBot(world, tmp_path / "empty")
        empty_start = await start_measured(empty)
        await empty.stop()

        bot = IncidentBot(world, tmp_path / "seeded")
        shutil.copy(seeded, bot.proc.db_path)
        # The focus incident gets a real channel, through the store as the bot would.
        channel = fake.create_channel(FIXED["ops"], "incident-1-seeded", "P", creator_id=FIXED["bot"])
        fake.add_channel_member(channel["id"], FIXED["alice"])
        store = SQLiteStore(bot.proc.db_path)
        await store.open()
        try:
            async with store.transaction() as tx:
                focus = await tx.get_incident(1)
                assert focus is not None
                focus.channel_id, focus.channel_name = channel["id"], channel["name"]
                await tx.save_incident(focus)
        finally:
            await store.close()
        seeded_start = await start_measured(bot)
        dm = fake.direct_channel(FIXED["alice"], FIXED["bot"])["id"]
        sender = Sender(fake, watch, [FIXED["alice"]])
        commands = {
            "list": (dm, "list"),
            "history": (dm, "history"),
            "info": (dm, "info 1"),
            "stats": (dm, "stats --days 3650"),
            "timeline": (channel["id"], "@incident-bot timeline"),
            "export": (channel["id"], "@incident-bot export"),
        }
        times: dict[str, Any] = {}
        stats_reply = ""
        for name, (where, text) in commands.items():
            runs = []
            for _ in range(SCALE_REPEAT):
                before = len([e for e in bot.proc.current_log() if e.get("event") == "command.handled"])
                sample = sender.post(where, text)
                await wait_replies(watch, [sample], 30)
                assert sample.replied is not None, f"no reply to {text!r}"
                entry = await bot.proc.wait_for_log("command.handled", count=before + 1)
                watch.fake_time(world.bot_user_id, [sample])
                runs.append((float(entry["ms"]), sample.fake * 1000, (sample.latency or 0) * 1000))
                if name == "stats":
                    stats_reply = next(
                        p["message"] for p in fake.all_posts() if p["props"].get("incident_bot_reply_to") == sample.post_id
                    )
                await idle(bot.pid, quiet=0.1)
            times[name] = {
                "bot_ms": round(median([log_ms - fake_ms for log_ms, fake_ms, _ in runs]), 2),
                "log_ms": round(median([r[0] for r in runs]), 2),
                "fake_ms": round(median([r[1] for r in runs]), 2),
                "reply_ms": round(median([r[2] for r in runs]), 2),
            }
        await bot.stop()
        return {
            "incidents": SEED_INCIDENTS,
            "items": SEED_ITEMS,
            "timeline": SEED_TIMELINE,
            "seed_s": round(seed_s, 1) if seed_s is not None else "cached",
            "empty": empty_start,
            "seeded": seeded_start,
            "commands": times,
            "stats": stats_check(stats_reply, bot.proc.db_path),
        }
    finally:
        for p in world.people.values():
            await p.close()
        await fake.stop()


def stats_check(reply: str, db_path: Path) -> dict[str, Any]:
    """The figures `stats` replied against a plain SQL count over every incident."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        by_sev = dict(con.execute("SELECT severity, COUNT(*) FROM incidents GROUP BY severity").fetchall())
        open_now = con.execute("SELECT COUNT(*) FROM incidents WHERE status IN ('active', 'starting')").fetchone()[0]
        ended = con.execute("SELECT COUNT(*) FROM incidents WHERE status = 'ended' AND ended_at IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    expected_row = f"| {by_sev.get(1, 0)} | {by_sev.get(2, 0)} | {by_sev.get(3, 0)} | {by_sev.get(4, 0)} | {open_now} |"
    total = sum(by_sev.values())
    ok = f": {total}**" in reply and expected_row in reply and f"({ended} ended)" in reply
    return {"sql_total": total, "sql_row": expected_row, "sql_ended": ended, "matches": ok, "reply": reply[:400]}


# ---------------------------------------------------------------------------- the run


@pytest.fixture
async def world() -> AsyncIterator[World]:
    world, _fake = await make_fake_world()
    try:
        yield world
    finally:
        await close_world(world)


async def test_whole_bot_against_stock_mmpy_bot(world: World, tmp_path: Path) -> None:
    began = time.monotonic()
    fake: FakeMattermost = world.fake
    stock_user, stock_token = fake.create_user("stock-bot", is_bot=True)
    ops = world.team_ids["ops"]
    fake.add_team_member(ops, stock_user["id"])
    people = [world.alice.id, world.bob.id, world.carol.id]
    watch = Watch(fake)
    sender = Sender(fake, watch, people)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "rounds": ROUNDS,
        "server_time_model": server_time_model(),
    }

    stock = StockBot(world, stock_user["id"], stock_token, tmp_path)
    ours = IncidentBot(world, tmp_path / "ib")
    # Each bot its own channels, made before either starts: neither gets the other's load as events.
    for bot, tag in ((stock, "stock"), (ours, "ib")):
        for i in range(1 + CHANNELS):
            channel = fake.create_channel(ops, f"{tag}-load-{i:02d}", "O")
            for uid in (*people, bot.user_id):
                fake.add_channel_member(channel["id"], uid)
            (bot.one if i == 0 else bot.spread).append(channel["id"])
    watch.bots.update({stock.user_id, ours.user_id})
    try:
        await stock.start()
        await ours.start()
        live = await live_figures([stock, ours], fake, sender, watch)
        results["stock"], results["incident_bot"] = live[stock.name], live[ours.name]
        await stock.stop()
        results["ticks"] = await tick_figures(ours, world, watch, sender)
        results["catch_up"] = await catch_up_figures(ours, sender, watch, ours.spread)
        await ours.stop()
    finally:
        await stock.stop()
        if ours.proc.proc is not None and ours.proc.proc.returncode is None:
            await ours.proc.stop()
        ours.proc.close()
    results["scale"] = await scale_figures(tmp_path)
    results["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = round(time.monotonic() - began, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "bench-e2e.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))  # kept even if a target check breaks
    results["targets"] = targets(results)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print("\n" + table(results))
    missed = [t for t in results["targets"] if not t["met"]]
    assert not missed, "targets missed: " + "; ".join(f"{t['name']}: {t['value']} (target {t['target']})" for t in missed)


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    ib, st, scale = r["incident_bot"], r["stock"], r["scale"]
    out: list[dict[str, Any]] = []

    def ratio(a: float, b: float) -> float:
        return a / b if b else (float("inf") if a else 1.0)

    def check(name: str, value: float, limit: float, higher: bool = False, unit: str = "") -> None:
        met = value >= limit if higher else value <= limit
        out.append({"name": name, "value": round(value, 3), "target": f"{'≥' if higher else '≤'} {limit}{unit}", "met": met})

    stock_help = st["cpu_s_per_1000_help"]
    check("CPU per help vs stock", ratio(ib["cpu_s_per_1000_help"], stock_help), 1.0, unit="x")
    check("CPU per tick vs stock help", ratio(r["ticks"]["cpu_s_per_tick"] * 1000, stock_help), 2.0, unit="x")
    check(
        "sustained rate, one channel, vs stock",
        ratio(ib["sustained_one_channel"]["rate"], st["sustained_one_channel"]["rate"]),
        1.0,
        True,
        "x",
    )
    check(
        "sustained rate, 20 channels, vs stock",
        ratio(ib["sustained_twenty_channels"]["rate"], st["sustained_twenty_channels"]["rate"]),
        3.0,
        True,
        "x",
    )
    check("bot-added p99 at 100/s over 20 channels", ib["twenty_channels"]["p99_net_ms"], 5.0, unit=" ms")
    check("RSS after start, seeded vs empty", ratio(scale["seeded"]["rss_mb"], scale["empty"]["rss_mb"]), 1.1, unit="x")
    check("time to ready, seeded vs empty", ratio(scale["seeded"]["ready_s"], scale["empty"]["ready_s"]), 1.5, unit="x")
    for name in ("list", "history", "info", "stats", "timeline"):
        check(f"{name} bot time on 12,000 incidents", scale["commands"][name]["bot_ms"], 10.0, unit=" ms")
    check("stats equals the SQL count", float(scale["stats"]["matches"]), 1.0, True)
    check("catch-up vs live, 1,000 commands", ratio(r["catch_up"]["catch_up_s"], r["catch_up"]["live_s"]), 1.5, unit="x")
    return out


def table(r: dict[str, Any]) -> str:
    ib, st = r["incident_bot"], r["stock"]
    rows = [
        f"make bench, {r['date']}, {r['machine']['cpus']} CPUs, load {r['machine']['load_avg_at_start']} -> {r['load_avg_at_end']}"
    ]
    m = r["server_time_model"]
    rows.append(
        f"fixed rates: {r['rounds']} alternated rounds per bot, fake at ~0 ms; sustained rates: server time modelled "
        f"({m['measured']}): post {m['post_ms']:.1f} ms, patch {m['patch_ms']:.1f} ms, other {m['other_ms']:.1f} ms"
    )
    rows.append(f"{'':44} {'incident-bot':>14} {'stock mmpy_bot':>15}")

    def row(label: str, a: Any, b: Any = "") -> None:
        rows.append(f"{label:44} {a!s:>14} {b!s:>15}")

    for key, label in (("one_channel", f"1 channel @{ONE_CHANNEL_RATE}/s"), ("twenty_channels", f"20 channels @{SPREAD_RATE}/s")):
        a, b = ib[key], st[key]
        row(f"{label}: p50/p99 ms", f"{a['p50_ms']}/{a['p99_ms']}", f"{b['p50_ms']}/{b['p99_ms']}")
        row(f"{label}: p50/p99 ms minus fake", f"{a['p50_net_ms']}/{a['p99_net_ms']}", f"{b['p50_net_ms']}/{b['p99_net_ms']}")
    row("CPU s per 1,000 help", ib["cpu_s_per_1000_help"], st["cpu_s_per_1000_help"])
    row("sustained rate (p99 < 100 ms), 1 ch, model", ib["sustained_one_channel"]["rate"], st["sustained_one_channel"]["rate"])
    row("sustained rate, 20 channels, model", ib["sustained_twenty_channels"]["rate"], st["sustained_twenty_channels"]["rate"])
    row("RSS MB after ~1,100 commands", ib["rss_mb_after_1000"], st["rss_mb_after_1000"])
    t = r["ticks"]
    row("30 ticks by 3 people: all shown, s", t["all_shown_s"])
    row("CPU s per tick", t["cpu_s_per_tick"])
    c = r["catch_up"]
    row("1,000 commands live / catch-up, s", f"{c['live_s']}/{c['catch_up_s']}")
    s = r["scale"]
    row("empty DB: ready s / RSS MB", f"{s['empty']['ready_s']}/{s['empty']['rss_mb']}")
    row("12,000 incidents: ready s / RSS MB", f"{s['seeded']['ready_s']}/{s['seeded']['rss_mb']}")
    for name, fig in s["commands"].items():
        row(f"{name}: bot ms (log {fig['log_ms']} - fake {fig['fake_ms']})", fig["bot_ms"])
    row("stats equals SQL count", s["stats"]["matches"])
    rows.append("targets:")
    for tgt in r["targets"]:
        rows.append(f"  {'ok  ' if tgt['met'] else 'MISS'} {tgt['name']}: {tgt['value']} (target {tgt['target']})")
    return "\n".join(rows)
