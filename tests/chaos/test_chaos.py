"""Chaos: a long scripted workload while the bot is SIGKILLed and its socket dropped at random;
at the end the database and the posts in Mattermost are what a model of the workload says.

How to run::

    make chaos                                   # pytest -q -m slow tests/chaos
    CHAOS_SEED=1234 make chaos PYTEST_ARGS=-s    # replay a seed, and see the figures

Knobs (environment): ``CHAOS_SEED`` (printed at the start; default fixed), ``CHAOS_OPS``
(operations, default 2000), ``CHAOS_KILLS`` (at least this many SIGKILLs, default 24),
``CHAOS_RATE`` (operations per second, default 25). The seed fixes the workload (who does
what, where, in which order) and the chaos schedule (when to kill or drop, relative to the
start); the exact interleaving with the bot still varies run to run, which is the point.

The workload: five people in one team start eight incidents (playbook checklists, everyone
invited) and then, in the incident channels, post updates, notes, severity changes, add,
tick, untick and remove checklist items by command, tick and untick the playbook items with
two different check emojis, ask for info and checklists, make mistakes (unknown words,
bad arguments), talk to the bot in DMs, and finally end half of the incidents. The model
applies each operation in the order the server received it, the way the product spec says;
playbook items are ticked only by reaction and added items only by command (how a reaction
and a command on one item combine after an outage is a product question, not this test's).

Compared at the end, after a clean stop: every command post has exactly one reply; one
incident, one channel, one pinned summary and one checklist header per `start`; each
incident's status, severity, note and status-update counts; every checklist item's text,
removal and done state, in the database and on its post; the header's progress; the posts
that follow a change (status update copies in the channel and in the thread the incident was
started from, the final summary and the end notice), each exactly once. The closing
line gives the figures: operations, kills, drops, lost, duplicated, wrong, runtime.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from incident_bot.app.core import REPLY_PROP
from tests.fakes.world import close_world, make_fake_world
from tests.support.botproc import BotProcess
from tests.support.people import Person
from tests.support.waiting import eventually
from tests.support.world import World

pytestmark = [pytest.mark.slow, pytest.mark.fake_only]

SEED = int(os.environ.get("CHAOS_SEED", "20261127"))
OPS = int(os.environ.get("CHAOS_OPS", "2000"))
MIN_KILLS = int(os.environ.get("CHAOS_KILLS", "24"))
RATE = float(os.environ.get("CHAOS_RATE", "25"))
INCIDENTS = 8
EMOJIS = ("white_check_mark", "heavy_check_mark")
PLAYBOOKS = {"database": (2, 4), "basic": (3, 2)}  # name -> (default severity, items), as tests/support/botproc.py


# --- the model ---------------------------------------------------------------------------------


@dataclass
class MItem:
    number: int
    text: str
    by_reaction: bool  # playbook items: ticked by reaction only; added items: by command only
    post_id: str | None = None
    done: bool = False  # command items
    reactions: set[tuple[str, str]] = field(default_factory=set)  # (user id, emoji) on the post
    removed: bool = False

    @property
    def is_done(self) -> bool:
        return bool(self.reactions) if self.by_reaction else self.done


@dataclass
class MIncident:
    number: int
    title: str
    severity: int
    playbook: str
    command_post: str
    channel_id: str = ""
    ended: bool = False
    items: dict[int, MItem] = field(default_factory=dict)
    notes: int = 0
    updates: int = 0

    def next_item(self) -> int:
        return max(self.items, default=0) + 1


@dataclass
class Figures:
    ops: int = 0
    commands: int = 0
    reactions: int = 0
    kills: int = 0
    drops: int = 0
    faults: int = 0  # bursts of 5xx / 429 and short outages
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, kind: str, text: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.problems) < 40:
            self.problems.append(f"{kind}: {text}")


class Workload:
    """Chooses and performs operations; the model follows each one as the server took it."""

    def __init__(self, world: World, people: list[Person], bot: BotProcess, rng: random.Random, figures: Figures) -> None:
        self.world = world
        self.people = people
        self.bot = bot
        self.rng = rng
        self.figures = figures
        self.incidents: list[MIncident] = []
        self.commands: list[tuple[Person, dict[str, Any], str]] = []  # (who, command post, text)
        self.ops_channel = world.channel_ids["ops/incidents"]

    # --- doing things --------------------------------------------------------------------------

    async def command(self, person: Person, channel_id: str, text: str, dm: bool = False) -> dict[str, Any]:
        if dm:
            post = await person.dm_bot(text)
        else:
            post = await person.post(channel_id, f"@{self.world.bot_username} {text}")
        self.commands.append((person, post, text))
        self.figures.commands += 1
        return post

    async def start(self, k: int) -> None:
        rng = self.rng
        starter = rng.choice(self.people)
        playbook = rng.choice(sorted(PLAYBOOKS))
        title = f"Chaos {k} {rng.choice(['db', 'api', 'queue', 'dns', 'disk'])}"
        invites = " ".join(f"@{p.username}" for p in self.people if p is not starter)
        post = await self.command(starter, self.ops_channel, f"start {title} --playbook {playbook} --invite {invites}")
        severity, count = PLAYBOOKS[playbook]
        incident = MIncident(
            number=len(self.incidents) + 1, title=title, severity=severity, playbook=playbook, command_post=post["id"]
        )
        self.incidents.append(incident)

        # The channel and the item posts are the bot's to make, killed or not: wait for them.
        def set_up() -> tuple[list[tuple], list[tuple]] | None:
            rows = self._db("select number, channel_id, status from incidents where command_post_id = ?", post["id"])
            if rows and rows[0][2] == "active":
                items = self._db(
                    "select number, text, post_id from checklist_items where incident_number = ? order by number", rows[0][0]
                )
                if len(items) == count and all(p for _, _, p in items):
                    return rows, items
            return None

        rows, items = await eventually(set_up, timeout=180, what=f"incident {k} set up")
        number, channel_id, _ = rows[0]
        if number != incident.number:
            self.figures.problem("duplicated", f"start {k} got incident #{number}, expected #{incident.number}")
        incident.channel_id = channel_id
        for n, text, post_id in items:
            incident.items[n] = MItem(number=n, text=text, by_reaction=True, post_id=post_id)

    def _db(self, sql: str, *params: Any) -> list[tuple]:
        """Rows, or none while the file does not exist yet or is mid-checkpoint (asked again)."""
        try:
            return self.bot.db(sql, *params)
        except sqlite3.Error:
            return []

    async def one(self) -> None:
        """One random operation on the incidents there are."""
        rng = self.rng
        person = rng.choice(self.people)
        open_ = [i for i in self.incidents if not i.ended]
        incident = rng.choice(open_) if open_ else rng.choice(self.incidents)
        ch = incident.channel_id
        roll = rng.random()
        if roll < 0.36 and not incident.ended:
            await self.react(person, incident)
            return
        if roll < 0.46:
            incident.notes += 1
            await self.command(person, ch, f"note {rng.choice(['saw', 'tried', 'rolled', 'paged'])} {rng.randint(1, 999)}")
        elif roll < 0.51:
            if not incident.ended:
                incident.updates += 1
            await self.command(person, ch, f"update status {rng.randint(1, 999)}")
        elif roll < 0.59:
            sev = rng.randint(1, 4)
            if not incident.ended:
                incident.severity = sev
            await self.command(person, ch, f"sev {sev}")
        elif roll < 0.65:
            text = f"step {rng.randint(1, 9999)}"
            if not incident.ended:
                n = incident.next_item()
                incident.items[n] = MItem(number=n, text=text, by_reaction=False)
            await self.command(person, ch, f"add {text}")
        elif roll < 0.77:
            own = [i for i in incident.items.values() if not i.by_reaction]
            n = rng.choice(own).number if own and rng.random() < 0.9 else rng.randint(1, incident.next_item() + 1)
            done = rng.random() < 0.55
            item = incident.items.get(n)
            if item is not None and not item.by_reaction and not item.removed and not incident.ended:
                item.done = done
            elif item is not None and item.by_reaction:
                n = incident.next_item() + 5  # never a reaction item: no such item, an error
            await self.command(person, ch, f"{'check' if done else 'uncheck'} {n}")
        elif roll < 0.79:
            own = [i for i in incident.items.values() if not i.by_reaction and not i.removed]
            if own:
                item = rng.choice(own)
                if not incident.ended:
                    item.removed = True
                await self.command(person, ch, f"remove {item.number}")
            else:
                await self.command(person, ch, "checklist")
        elif roll < 0.86:
            await self.command(person, ch, rng.choice(["info", "checklist", "info", "checklist", "timeline"]))
        elif roll < 0.92:
            await self.command(
                person, ch, rng.choice(["frob", "sev 9", "check x", "add", "commander @nobody", "note", "uncheck"])
            )
        elif roll < 0.96:
            await self.command(person, "", rng.choice(["list", "help", f"info {incident.number}", "history"]), dm=True)
        else:
            await self.command(person, self.ops_channel, rng.choice([f"info {incident.number}", "list", "playbooks"]))

    async def react(self, person: Person, incident: MIncident) -> None:
        items = [i for i in incident.items.values() if i.by_reaction]
        item = self.rng.choice(items)
        emoji = self.rng.choice(EMOJIS)
        mine = (person.user_id, emoji)
        if mine in item.reactions:
            item.reactions.discard(mine)
            await person.unreact(item.post_id, emoji)
        else:
            item.reactions.add(mine)
            await person.react(item.post_id, emoji)
        self.figures.reactions += 1

    async def end(self, incident: MIncident) -> None:
        person = self.rng.choice(self.people)
        incident.ended = True
        await self.command(person, incident.channel_id, f"end chaos over {incident.number}")


class Monkey:
    """Kills the bot and drops its socket at random moments, from its own seeded schedule."""

    def __init__(self, bot: BotProcess, world: World, rng: random.Random, figures: Figures) -> None:
        self.bot = bot
        self.world = world
        self.rng = rng
        self.figures = figures
        self.stop = asyncio.Event()

    async def run(self) -> None:
        rng, fake = self.rng, self.world.fake
        while not (self.stop.is_set() and self.figures.kills >= MIN_KILLS):
            await asyncio.sleep(rng.uniform(1.5, 6.5))
            roll = rng.random()
            bot_id = self.world.bot_user_id
            if roll < 0.60:
                await self.bot.kill()
                self.figures.kills += 1
                await asyncio.sleep(rng.uniform(0.0, 2.5))
                await self.bot.start(wait_ready=False)
            elif roll < 0.70:
                await fake.faults.drop_socket(bot_id)  # resumable: the server replays
                self.figures.drops += 1
            elif roll < 0.79:
                await fake.faults.drop_socket(bot_id, refuse_for=rng.uniform(0.2, 2.0))
                fake.faults.forget_connections()  # the server cannot replay: REST catch-up
                self.figures.drops += 1
            elif roll < 0.85:
                fake.faults.lose_events(rng.randint(1, 3))  # frames lost in flight on a live socket
                self.figures.drops += 1
            elif roll < 0.89:
                # a slow server: the bot's next requests are held, so a kill lands mid-way more often
                fake.faults.delay(r"^/api/v4/", rng.uniform(0.2, 1.5), times=rng.randint(1, 6), user=bot_id)
                self.figures.faults += 1
            elif roll < 0.94:
                # a burst of server errors or rate limiting on the bot's next requests
                status = rng.choice([500, 502, 503, 429])
                fake.faults.fail(r"^/api/v4/", status, times=rng.randint(1, 5), user=bot_id)
                self.figures.faults += 1
            else:
                # Mattermost away for a moment: REST fails, the socket drops and is refused
                seconds = rng.uniform(0.5, 4.0)
                outage = fake.faults.outage(user=bot_id)
                await fake.faults.drop_socket(bot_id, refuse_for=seconds)
                if rng.random() < 0.5:
                    fake.faults.forget_connections()
                await asyncio.sleep(seconds)  # the outage lasts this long (the chaos schedule)
                fake.faults.remove(outage)
                self.figures.drops += 1
                self.figures.faults += 1


# --- the test ------------------------------------------------------------------------------------


async def _add_person(world: World, name: str) -> Person:
    fake = world.fake
    user, token = fake.create_user(name, first_name=name.capitalize())
    fake.add_team_member(world.team_ids["ops"], user["id"])
    fake.add_channel_member(world.channel_ids["ops/incidents"], user["id"])
    person = Person(world.url, token, name, user["id"], bot_user_id=world.bot_user_id, bot_username=world.bot_username)
    world.people[name] = person
    return person


async def test_chaos_nothing_lost_nothing_twice(tmp_path: Path):
    print(f"\nCHAOS_SEED={SEED} ops={OPS} kills>={MIN_KILLS} rate={RATE}/s")
    began = time.monotonic()
    world, _fake = await make_fake_world()
    figures = Figures()
    bot = BotProcess(world, tmp_path)
    try:
        people = [world.alice, world.bob, world.carol, await _add_person(world, "frank"), await _add_person(world, "grace")]
        await bot.start()
        work_rng, chaos_rng = random.Random(SEED), random.Random(SEED * 7919 + 1)
        workload = Workload(world, people, bot, work_rng, figures)
        monkey = Monkey(bot, world, chaos_rng, figures)
        monkey_task = asyncio.create_task(monkey.run())
        try:
            start_at = {round(i * OPS * 0.3 / INCIDENTS) for i in range(INCIDENTS)}
            end_from = int(OPS * 0.92)
            to_end = work_rng.sample(range(INCIDENTS), INCIDENTS // 2)
            for op in range(OPS):
                if op in start_at:
                    await workload.start(len(workload.incidents) + 1)
                elif op >= end_from and to_end and work_rng.random() < 0.05:
                    await workload.end(workload.incidents[to_end.pop()])
                else:
                    await workload.one()
                figures.ops += 1
                await asyncio.sleep(work_rng.expovariate(RATE))
                if monkey_task.done():
                    monkey_task.result()
            for index in to_end:
                await workload.end(workload.incidents[index])
                figures.ops += 1
        finally:
            monkey.stop.set()
            await monkey_task
        # The bot is up (maybe still starting); let it finish, then stop it cleanly.
        if bot.proc.returncode is not None:
            await bot.start(wait_ready=False)
        await bot.wait_for_log("bot.ready", timeout=60)
        print(
            f"workload done after {time.monotonic() - began:.0f}s: {figures.ops} ops, {figures.commands} commands, "
            f"{figures.reactions} reactions, {figures.kills} kills, {figures.drops} drops, {figures.faults} faults"
        )
        await settle(world, bot, workload)
        assert await bot.stop() == 0, "the bot did not stop cleanly on SIGTERM"
        compare(world, bot, workload, figures)
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            await bot.kill()
        await close_world(world)
    runtime = time.monotonic() - began
    print(
        f"CHAOS seed={SEED} operations={figures.ops} (commands={figures.commands}, reactions={figures.reactions}) "
        f"kills={figures.kills} drops={figures.drops} faults={figures.faults} lost={figures.lost} duplicated={figures.duplicated} "
        f"wrong={figures.wrong} runtime={runtime:.0f}s"
    )
    for line in figures.problems:
        print("  ", line)
    seen = [e.get("event") for e in bot.log_events()]
    print(
        "recovery paths taken:",
        {
            name: seen.count(name)
            for name in (
                "catchup.done",
                "bot.gap",
                "bot.ready",
                "incident.resumed",
                "command.recovered",
                "command.already_answered",
                "event.duplicate",
                "command.unanswered",
                "reaction.unfinished",
                "bot.retrying",
                "incident.repair_failed",
                "mattermost.retry",
                "command.failed",
                "reply.failed",
                "command.abandoned",
            )
        },
    )
    text = await asyncio.to_thread(lambda: "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("bot-*.log")))
    assert "Traceback" not in text, "a stack trace appeared in the bot's log"
    assert (figures.kills >= 20 and figures.ops >= 2000) or OPS < 2000
    assert (figures.lost, figures.duplicated, figures.wrong) == (0, 0, 0), figures.problems


async def settle(world: World, bot: BotProcess, workload: Workload, timeout: float = 240) -> None:
    """Wait until every command has an answer and the checklists look as the model says (or
    the timeout: ``compare`` then reports what is missing), then until the bot has worked
    through every channel (it handles a channel's events in order: a later command answered
    there means everything before it was handled)."""

    def settled() -> bool:
        probe = Figures()
        compare(world, bot, workload, probe, posts_only=False)
        return probe.lost == probe.duplicated == probe.wrong == 0

    try:
        await eventually(settled, timeout=timeout, interval=1.0, what="the model's state")
    except AssertionError:
        return
    asker = workload.people[0]
    for channel_id in [workload.ops_channel, *(i.channel_id for i in workload.incidents)]:
        probe_post = await asker.post(channel_id, f"@{world.bot_username} help end")
        await asker.wait_for_reply(probe_post, timeout=60)
    for person in workload.people:
        probe_post = await person.dm_bot("help end")
        await person.wait_for_reply(probe_post, timeout=60)


def replies_by_command(world: World) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for post in world.fake.all_posts():
        target = post["props"].get(REPLY_PROP)
        if post["user_id"] == world.bot_user_id and target:
            found.setdefault(target, []).append(post)
    return found


def compare(world: World, bot: BotProcess, workload: Workload, figures: Figures, posts_only: bool = False) -> None:
    fake = world.fake
    replies = replies_by_command(world)
    for _person, post, text in workload.commands:
        n = len(replies.get(post["id"], []))
        if n == 0:
            figures.problem("lost", f"no reply to {text!r} ({post['id']})")
        elif n > 1:
            figures.problem("duplicated", f"{n} replies to {text!r}: {[r['message'][:50] for r in replies[post['id']]]}")

    rows = bot.db(
        "select number, title, severity, status, channel_id, summary_post_id, checklist_post_id, command_post_id "
        "from incidents order by number"
    )
    if len(rows) != len(workload.incidents):
        kind = "duplicated" if len(rows) > len(workload.incidents) else "lost"
        figures.problem(kind, f"{len(rows)} incidents in the database, {len(workload.incidents)} started")
    channels = [c for c in fake.channels.values() if c["name"].startswith("incident-")]
    if len(channels) != len(workload.incidents):
        figures.problem(
            "duplicated" if len(channels) > len(workload.incidents) else "lost",
            f"{len(channels)} incident channels for {len(workload.incidents)} starts",
        )
    by_number = {r[0]: r for r in rows}
    for m in workload.incidents:
        row = by_number.get(m.number)
        if row is None:
            continue
        number, _title, severity, status, channel_id, summary_id, header_id, command_post = row
        expected_status = "ended" if m.ended else "active"
        if (status, severity, command_post) != (expected_status, m.severity, m.command_post):
            figures.problem("wrong", f"#{number}: {(status, severity)} != {(expected_status, m.severity)}")
        kinds = dict(bot.db("select kind, count(*) from timeline where incident_number = ? group by kind", number))
        if kinds.get("note", 0) != m.notes:
            figures.problem(
                "lost" if kinds.get("note", 0) < m.notes else "duplicated",
                f"#{number}: {kinds.get('note', 0)} notes, {m.notes} made",
            )
        if kinds.get("status_update", 0) != m.updates:
            figures.problem(
                "lost" if kinds.get("status_update", 0) < m.updates else "duplicated",
                f"#{number}: {kinds.get('status_update', 0)} updates, {m.updates} posted",
            )
        if kinds.get("started", 0) != 1:
            figures.problem("duplicated", f"#{number}: {kinds.get('started', 0)} started events")

        mine = [p for p in fake.all_posts(channel_id) if p["user_id"] == world.bot_user_id and not p["type"]]
        # The posts that follow a change (the outbox): status update copies here and in the
        # thread the incident was started from, the final summary, the end notice there.
        origin = [
            p
            for p in fake.all_posts(workload.ops_channel)
            if p["user_id"] == world.bot_user_id and p["root_id"] == m.command_post and not p["props"].get(REPLY_PROP)
        ]
        update_head = f"#### Status update — incident #{number}:"
        expected = (
            ("status update copies", mine, update_head, m.updates),
            ("status updates in the origin thread", origin, update_head, m.updates),
            ("final summaries", mine, f"**Incident #{number} ended**", int(m.ended)),
            ("end notices in the origin thread", origin, f"Incident #{number} (", int(m.ended)),
        )
        for what, posts, head, want in expected:
            got = len([p for p in posts if p["message"].startswith(head)])
            if got != want:
                figures.problem("lost" if got < want else "duplicated", f"#{number}: {got} {what}, {want} expected")
        summaries = [p for p in mine if p["message"].startswith(f"### Incident #{number}:")]
        pinned = [p for p in mine if p["is_pinned"]]
        if len(summaries) != 1 or len(pinned) != 1 or summaries[0]["id"] != summary_id:
            figures.problem(
                "duplicated" if len(summaries) > 1 else "wrong", f"#{number}: {len(summaries)} summaries, {len(pinned)} pinned"
            )
        headers = [p for p in mine if p["message"].startswith(f"**Checklist of incident #{number}**")]
        if len(headers) != 1 or headers[0]["id"] != header_id:
            figures.problem("duplicated" if len(headers) > 1 else "wrong", f"#{number}: {len(headers)} checklist headers")
        item_posts: dict[int, list[dict[str, Any]]] = {}
        for p in mine:
            if header_id and p["root_id"] == header_id:
                match = re.match(r"^(?:☐ |☑ ~~|~~)(\d+)\.", p["message"])
                if match:
                    item_posts.setdefault(int(match.group(1)), []).append(p)

        db_items = {
            n: (text, post_id, done_by, removed)
            for n, text, post_id, done_by, removed in bot.db(
                "select number, text, post_id, done_by, removed from checklist_items where incident_number = ?", number
            )
        }
        if set(db_items) != set(m.items):
            extra, missing = set(db_items) - set(m.items), set(m.items) - set(db_items)
            if extra:
                figures.problem("duplicated", f"#{number}: items {sorted(extra)} nobody added")
            if missing:
                figures.problem("lost", f"#{number}: items {sorted(missing)} missing")
        live = done = 0
        for n, item in m.items.items():
            if n not in db_items:
                continue
            text, post_id, done_by, removed = db_items[n]
            if text != item.text or bool(removed) != item.removed:
                figures.problem("wrong", f"#{number} item {n}: {(text, removed)} != {(item.text, item.removed)}")
            if not item.removed:
                live += 1
                done += item.is_done
                if bool(done_by) != item.is_done:
                    figures.problem(
                        "lost" if item.is_done else "wrong",
                        f"#{number} item {n} ({'reaction' if item.by_reaction else 'command'}): "
                        f"done={bool(done_by)} in the database, {item.is_done} made",
                    )
            posts = item_posts.get(n, [])
            if len(posts) != 1 or posts[0]["id"] != post_id:
                figures.problem("duplicated" if len(posts) > 1 else "lost", f"#{number} item {n}: {len(posts)} posts")
            elif not item.removed and posts[0]["message"].startswith("☑") != item.is_done:
                figures.problem("wrong", f"#{number} item {n}: post reads {posts[0]['message'][:30]!r}, done={item.is_done}")
        if headers and f"{done}/{live} done" not in headers[0]["message"]:
            figures.problem("wrong", f"#{number}: header {headers[0]['message'].splitlines()[0]!r}, expected {done}/{live}")
