"""Active/standby: two bot processes on one PostgreSQL database, the leader SIGKILLed again and
again while people post commands and react; nothing is lost, nothing is done twice, and a
standby takes over in time.

Against the fake (``make test``) it kills twice, freezes once and only prints the failover
times; against the real server (``make test-integration``, or ``FAILOVER_TIMED=1``) it kills
``FAILOVER_KILLS`` times (default 6), freezes ``FAILOVER_FREEZES`` times (default 2) and
asserts the slowest failover after a kill took at most 10 s. A failover is timed from the
SIGKILL to the standby's /readyz answering 200 (WebSocket connected, catch-up done, database
writable): from then on it answers. A killed leader is started again and becomes the standby.

A freeze (SIGSTOP until the standby is ready, then SIGCONT) is the leader cut off without
dying: when it runs again its lease is gone; it must write nothing more (the fencing), log
``bot.lease_lost`` and stand by on its own. Its failover time is printed, not asserted: a
leader frozen inside a transaction holds the takeover back until PostgreSQL ends that
session (8 s idle in a transaction).

The model: the ops channel's incidents are started first; then each operation is a command
(note, add, check/uncheck of an added item, severity, a read-only question) or a reaction
toggling a playbook item, by one of three people, applied in the order the server took them.
Compared at the end: every command post has exactly one reply; per incident the notes, the
severity, the added items with their done state, the playbook items' done state (by
reactions) in the database and one post per item in the channel.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from incident_bot.app.core import REPLY_PROP
from tests.scenarios.conftest import real_server
from tests.support.botproc import BotProcess
from tests.support.needs import unavailable
from tests.support.people import Person
from tests.support.postgres import Cluster, ensure_installed
from tests.support.waiting import eventually
from tests.support.world import World

TIMED = real_server() or bool(os.environ.get("FAILOVER_TIMED"))
KILLS = int(os.environ.get("FAILOVER_KILLS", "6" if TIMED else "2"))
FREEZES = int(os.environ.get("FAILOVER_FREEZES", "2" if TIMED else "1"))
SEED = int(os.environ.get("FAILOVER_SEED", "20261202"))
RATE = 3.0  # operations per second
MAX_FAILOVER = 10.0  # seconds, issue #14
EMOJI = "white_check_mark"
ITEM_POST = re.compile(r"^(?:☐ |☑ ~~|~~)(\d+)\.")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL cluster (tests/support/postgres.py) and the bots' database on it."""
    bindir, why = ensure_installed()
    if bindir is None:
        unavailable(why)
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster.dsn()
    finally:
        cluster.stop()


@dataclass
class Item:
    number: int
    by_reaction: bool  # playbook items: by reaction only; added items: by command only
    done: bool = False
    reactions: set[str] = field(default_factory=set)  # user ids with the emoji on the item post
    post_id: str = ""

    @property
    def is_done(self) -> bool:
        return bool(self.reactions) if self.by_reaction else self.done


@dataclass
class Model:
    number: int
    channel_id: str
    severity: int
    notes: int = 0
    items: dict[int, Item] = field(default_factory=dict)


class Pair:
    """Two replicas of the bot on one database; which one leads is read from the lease row."""

    def __init__(self, world: World, tmp_path: Path, dsn: str) -> None:
        self.dsn = dsn
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        self.bots = [BotProcess(world, tmp_path / name, env_extra={"INCIDENT_BOT_DATABASE": dsn}) for name in ("a", "b")]

    async def start(self) -> None:
        first, second = self.bots
        await first.start()  # the leader: logs bot.ready once connected
        await second.start(wait_ready=False)
        await second.wait_for_log("bot.standby", timeout=30)
        # What an orchestrator sees: both alive, one ready, the other saying it stands by.
        async with aiohttp.ClientSession() as http:
            for bot, ready, leader in ((first, 200, 1), (second, 503, 0)):
                url = await bot.ops_url()
                async with http.get(f"{url}/healthz") as response:
                    assert response.status == 200
                await eventually(lambda url=url, ready=ready: self._status(http, f"{url}/readyz", ready), what="readiness")
                async with http.get(f"{url}/readyz") as response:
                    assert ("standby: " in await response.text()) == (ready == 503)
                async with http.get(f"{url}/metrics") as response:
                    assert f"incident_bot_leader {leader}.0" in await response.text()

    @staticmethod
    async def _status(http: aiohttp.ClientSession, url: str, status: int) -> bool:
        async with http.get(url) as response:
            return response.status == status

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def leader(self) -> BotProcess | None:
        """The running replica whose pid is in the lease row (holder ``host:pid:tag``)."""
        rows = await self.rows("SELECT holder FROM leader_lease WHERE expires_at > now()")
        if not rows or not rows[0]["holder"]:
            return None
        pid = int(rows[0]["holder"].split(":")[-2])
        return next((b for b in self.bots if b.proc and b.proc.returncode is None and b.proc.pid == pid), None)

    @staticmethod
    async def ready(bot: BotProcess) -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{await bot.ops_url()}/readyz") as response:
            return response.status == 200

    async def ready_leader(self, timeout: float) -> BotProcess:
        async def check() -> BotProcess | None:
            bot = await self.leader()
            return bot if bot is not None and await self.ready(bot) else None

        return await eventually(check, timeout=timeout, interval=0.05, what="a ready leader")


class Failover:
    def __init__(self, world: World, pair: Pair, people: list[Person], rng: random.Random) -> None:
        self.world = world
        self.pair = pair
        self.people = people
        self.rng = rng
        self.incidents: list[Model] = []
        self.commands: list[tuple[dict[str, Any], str]] = []
        self.reactions = 0
        self.failovers: list[float] = []  # seconds from a SIGKILL of the leader to the standby ready
        self.freezes: list[float] = []  # from a SIGSTOP of the leader to the standby ready
        self.done = asyncio.Event()

    async def command(self, person: Person, channel_id: str, text: str) -> dict[str, Any]:
        post = await person.post(channel_id, f"@{self.world.bot_username} {text}")
        self.commands.append((post, text))
        return post

    async def start_incident(self, k: int) -> None:
        starter, others = self.people[0], self.people[1:]
        invites = " ".join(f"@{p.username}" for p in others)
        post = await self.command(
            starter, self.world.channel_ids["ops/incidents"], f"start Failover {k} --playbook basic --invite {invites}"
        )

        async def set_up() -> list[asyncpg.Record] | None:
            rows = await self.pair.rows(
                "SELECT i.number, i.channel_id, i.severity, c.number AS item, c.post_id FROM incidents i "
                "JOIN checklist_items c ON c.incident_number = i.number WHERE i.command_post_id = $1 AND i.status = 'active' "
                "ORDER BY c.number",
                post["id"],
            )
            return rows if len(rows) == 2 and all(r["post_id"] for r in rows) else None

        rows = await eventually(set_up, timeout=60, what=f"incident {k} set up")
        model = Model(number=rows[0]["number"], channel_id=rows[0]["channel_id"], severity=rows[0]["severity"])
        for row in rows:
            model.items[row["item"]] = Item(number=row["item"], by_reaction=True, post_id=row["post_id"])
        self.incidents.append(model)

    async def one(self) -> None:
        rng = self.rng
        person = rng.choice(self.people)
        incident = rng.choice(self.incidents)
        ch = incident.channel_id
        roll = rng.random()
        if roll < 0.35:
            item = rng.choice([i for i in incident.items.values() if i.by_reaction])
            if person.user_id in item.reactions:
                item.reactions.discard(person.user_id)
                await person.unreact(item.post_id, EMOJI)
            else:
                item.reactions.add(person.user_id)
                await person.react(item.post_id, EMOJI)
            self.reactions += 1
        elif roll < 0.55:
            incident.notes += 1
            await self.command(person, ch, f"note tried {rng.randint(1, 999)}")
        elif roll < 0.65:
            n = max(incident.items) + 1
            incident.items[n] = Item(number=n, by_reaction=False)
            await self.command(person, ch, f"add step {rng.randint(1, 9999)}")
        elif roll < 0.80:
            own = [i for i in incident.items.values() if not i.by_reaction]
            if not own:
                await self.command(person, ch, "checklist")
                return
            item = rng.choice(own)
            item.done = rng.random() < 0.6
            await self.command(person, ch, f"{'check' if item.done else 'uncheck'} {item.number}")
        elif roll < 0.88:
            incident.severity = rng.randint(1, 4)
            await self.command(person, ch, f"sev {incident.severity}")
        else:
            await self.command(person, ch, rng.choice(["info", "checklist"]))

    async def workload(self) -> int:
        ops = 0
        while not self.done.is_set() or ops < 20:
            await self.one()
            ops += 1
            await asyncio.sleep(self.rng.expovariate(RATE))  # the people's pace
        return ops

    async def disrupt(self, chaos: random.Random) -> None:
        """Kill the leader ``KILLS`` times and freeze it ``FREEZES`` times, in a seeded order."""
        plan = ["kill"] * KILLS + ["freeze"] * FREEZES
        chaos.shuffle(plan)
        try:
            for what in plan:
                await asyncio.sleep(chaos.uniform(2.0, 5.0))  # the chaos schedule: strike mid-stream
                leader = await self.pair.ready_leader(timeout=60)
                standby = next(b for b in self.pair.bots if b is not leader)
                await (self.kill(leader, standby) if what == "kill" else self.freeze(leader, standby))
        finally:
            self.done.set()

    async def _standby_ready(self, standby: BotProcess, since: float) -> float:
        await eventually(lambda: self.pair.ready(standby), timeout=60, interval=0.05, what="the standby ready")
        return time.monotonic() - since

    async def kill(self, leader: BotProcess, standby: BotProcess) -> None:
        await leader.kill()
        self.failovers.append(await self._standby_ready(standby, time.monotonic()))
        await leader.start(wait_ready=False)  # back as a standby
        await leader.wait_for_log("bot.standby", timeout=30)

    async def freeze(self, leader: BotProcess, standby: BotProcess) -> None:
        """SIGSTOP the leader until the standby has taken over, then let it run on: it must see
        its lease is gone, write nothing more and stand by (a pause, a stuck VM, a network cut)."""
        assert leader.proc is not None
        standbys = sum(e.get("event") == "bot.standby" for e in leader.current_log())
        leader.proc.send_signal(signal.SIGSTOP)
        try:
            self.freezes.append(await self._standby_ready(standby, time.monotonic()))
        finally:
            leader.proc.send_signal(signal.SIGCONT)
        await leader.wait_for_log("bot.lease_lost", timeout=30)
        await leader.wait_for_log("bot.standby", timeout=30, count=standbys + 1)

    # --- the end ----------------------------------------------------------------------------------

    async def problems(self) -> tuple[list[str], list[str], list[str]]:
        """(lost, duplicated, wrong), each a list of what differs from the model."""
        lost: list[str] = []
        dup: list[str] = []
        wrong: list[str] = []
        reader = self.people[0]
        channels = [self.world.channel_ids["ops/incidents"], *(m.channel_id for m in self.incidents)]
        posts = [p for ch in channels for p in await reader.posts(ch) if p["user_id"] == self.world.bot_user_id]
        replies: dict[str, int] = {}
        for p in posts:
            target = p.get("props", {}).get(REPLY_PROP)
            if target:
                replies[target] = replies.get(target, 0) + 1
        for post, text in self.commands:
            n = replies.get(post["id"], 0)
            if n != 1:
                (lost if n == 0 else dup).append(f"{n} replies to {text!r}")
        incidents = await self.pair.rows("SELECT number, severity, checklist_post_id FROM incidents ORDER BY number")
        if len(incidents) != len(self.incidents):
            (dup if len(incidents) > len(self.incidents) else lost).append(f"{len(incidents)} incidents")
        by_number = {r["number"]: r for r in incidents}
        for m in self.incidents:
            row = by_number[m.number]
            if row["severity"] != m.severity:
                wrong.append(f"#{m.number}: severity {row['severity']}, expected {m.severity}")
            notes = (
                await self.pair.rows("SELECT count(*) AS n FROM timeline WHERE incident_number = $1 AND kind = 'note'", m.number)
            )[0]["n"]
            if notes != m.notes:
                (lost if notes < m.notes else dup).append(f"#{m.number}: {notes} notes, {m.notes} made")
            items = {
                r["number"]: r
                for r in await self.pair.rows(
                    "SELECT number, done_by, removed FROM checklist_items WHERE incident_number = $1", m.number
                )
            }
            if set(items) != set(m.items):
                (dup if len(items) > len(m.items) else lost).append(f"#{m.number}: items {sorted(items)}, {sorted(m.items)} made")
            item_posts: dict[int, int] = {}
            for p in posts:
                match = ITEM_POST.match(p["message"])
                if p["channel_id"] == m.channel_id and p.get("root_id") == row["checklist_post_id"] and match:
                    item_posts[int(match.group(1))] = item_posts.get(int(match.group(1)), 0) + 1
            for n, item in m.items.items():
                if n in items and bool(items[n]["done_by"]) != item.is_done:
                    wrong.append(f"#{m.number} item {n}: done={bool(items[n]['done_by'])}, expected {item.is_done}")
                if item_posts.get(n, 0) != 1:
                    (lost if item_posts.get(n, 0) == 0 else dup).append(f"#{m.number} item {n}: {item_posts.get(n, 0)} posts")
        return lost, dup, wrong


@pytest.fixture
async def pair(world: World, tmp_path: Path, pg_dsn: str) -> AsyncIterator[Pair]:
    pair = Pair(world, tmp_path, pg_dsn)
    try:
        yield pair
    finally:
        for bot in pair.bots:
            if bot.proc is not None and bot.proc.returncode is None:
                await bot.stop(signal.SIGKILL)
            keep = os.environ.get("INCIDENT_BOT_TEST_ARTIFACTS")
            if keep:
                from tests.support.botproc import keep_logs

                keep_logs(bot, keep)
            bot.close()


async def test_the_leader_killed_again_and_again_nothing_lost_nothing_twice(world: World, pair: Pair) -> None:
    began = time.monotonic()
    await pair.start()
    people = [world.alice, world.bob, world.carol]
    run = Failover(world, pair, people, random.Random(SEED))
    for k in (1, 2):
        await run.start_incident(k)
    killer = asyncio.create_task(run.disrupt(random.Random(SEED * 31 + 7)))
    try:
        ops = await run.workload()
    finally:
        run.done.set()
        await killer

    async def settled() -> bool:
        lost, dup, wrong = await run.problems()
        return not (lost or dup or wrong)

    try:
        await eventually(settled, timeout=120, interval=1.0, what="every command answered once, the state as made")
    except AssertionError:
        pass  # reported below
    lost, dup, wrong = await run.problems()
    times = sorted(run.failovers)
    print(
        f"\nFAILOVER kills={len(times)} failover p50={statistics.median(times):.2f}s max={max(times):.2f}s "
        f"all={[round(t, 2) for t in run.failovers]} freezes={[round(t, 2) for t in run.freezes]} ops={ops} commands={len(run.commands)} reactions={run.reactions} "
        f"lost={len(lost)} duplicated={len(dup)} wrong={len(wrong)} runtime={time.monotonic() - began:.0f}s"
    )
    for line in (lost + dup + wrong)[:30]:
        print("  ", line)
    leader = await pair.leader()
    codes = [await bot.stop() for bot in sorted(pair.bots, key=lambda b: b is leader)]  # the standby first
    assert codes == [0, 0], f"the replicas did not stop cleanly on SIGTERM: {codes}"
    for bot in pair.bots:
        text = bot.log_text()
        assert "Traceback" not in text, f"a stack trace in {bot.workdir.name}'s log"
        assert world.bot_token not in text
    assert (lost, dup, wrong) == ([], [], [])
    assert len(times) >= KILLS
    if TIMED:
        assert max(times) <= MAX_FAILOVER, f"a failover took {max(times):.1f}s (limit {MAX_FAILOVER:g}s)"
