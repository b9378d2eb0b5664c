"""What the end-to-end benchmark measures with: a process's own CPU and memory counters,
reply times seen by the fake Mattermost, the fake's own time, and load at a fixed rate.

Times are ``time.monotonic()`` in the benchmark's process, which also runs the fake: a reply
is timed from the moment the fake stored the command post (before it sent the event) to the
moment it stored the bot's reply. The fake's own time for a command is the time it spent
serving the bot's REST requests while that command was open (the union of those requests'
intervals, so parallel requests are not counted twice); under parallel load that union also
holds other commands' requests, so "minus the fake" is a lower bound on the bot's part there.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from incident_bot.app.core import REPLY_PROP
from tests.fakes.mattermost import FakeMattermost

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (/proc/<pid>/stat, all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat(5)


def rss_mb(pid: int) -> float:
    """Resident set size in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Sample:
    post_id: str
    sent: float
    replied: float | None = None
    fake: float = 0.0  # seconds the fake served the bot's requests while this command was open

    @property
    def latency(self) -> float | None:
        return None if self.replied is None else self.replied - self.sent

    @property
    def net(self) -> float | None:
        return None if self.replied is None else max(0.0, self.replied - self.sent - self.fake)


@dataclass
class LoadResult:
    rate: float
    samples: list[Sample]
    cpu: float  # CPU seconds of the bot process during the run
    wall: float

    @property
    def answered(self) -> list[Sample]:
        return [s for s in self.samples if s.replied is not None]

    @property
    def complete(self) -> bool:
        return len(self.answered) == len(self.samples)

    def p(self, q: float, net: bool = True) -> float:
        """Percentile of reply time in ms (net: minus the fake's time); inf when any went unanswered."""
        if not self.complete:
            return float("inf")
        return percentile([(s.net if net else s.latency) or 0.0 for s in self.samples], q) * 1000

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / len(self.samples) * 1000


def pooled(results: Sequence[LoadResult]) -> LoadResult:
    """Several runs at one rate as one: samples pooled, CPU and wall time summed."""
    return LoadResult(
        results[0].rate,
        [s for r in results for s in r.samples],
        sum(r.cpu for r in results),
        sum(r.wall for r in results),
    )


class Watch:
    """Timestamps of posts as the fake stores them: commands sent, replies by the bot, edits."""

    def __init__(self, fake: FakeMattermost) -> None:
        self.fake = fake
        self.bots: set[str] = set()
        self.created: dict[str, float] = {}
        self.replies: dict[str, float] = {}  # command post id -> first reply stored
        self.edits: list[tuple[float, str, str]] = []  # (when, post id, message)
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        fake.post_watchers.append(self)

    def __call__(self, kind: str, post: dict[str, Any]) -> None:
        now = time.monotonic()
        if kind == "created":
            self.created[post["id"]] = now
            if post["user_id"] in self.bots:
                # incident-bot marks its replies (also in DMs, where it replies outside a thread);
                # stock mmpy_bot replies in the command's thread.
                command = post["props"].get(REPLY_PROP) or post["root_id"]
                if command:
                    self.replies.setdefault(command, now)
        else:
            self.edits.append((now, post["id"], post["message"]))

    def fake_time(self, user_id: str, samples: list[Sample]) -> None:
        """Fill in each sample's ``fake``: the union of the bot's request intervals inside it."""
        spans = sorted((r.started, r.started + r.elapsed) for r in self.fake.request_log if r.user_id == user_id and r.started)
        starts = [s for s, _ in spans]
        for sample in samples:
            if sample.replied is None:
                continue
            lo, hi = sample.sent, sample.replied
            # Requests start before they end: any overlapping span starts before ``hi``.
            i = bisect.bisect_left(starts, lo - 5.0)
            total, cursor = 0.0, lo
            for a, b in spans[i:]:
                if a >= hi:
                    break
                a, b = max(a, cursor, lo), min(b, hi)
                if b > a:
                    total += b - a
                    cursor = b
            sample.fake = total


@dataclass
class Sender:
    """Posts commands straight into the fake's state (as if typed): no client in the way."""

    fake: FakeMattermost
    watch: Watch
    user_ids: list[str]
    sent: list[Sample] = field(default_factory=list)

    def post(self, channel_id: str, message: str, i: int = 0) -> Sample:
        post = self.fake.create_post(self.user_ids[i % len(self.user_ids)], channel_id, message)
        sample = Sample(post["id"], self.watch.created[post["id"]])
        self.sent.append(sample)
        return sample


async def wait_replies(watch: Watch, samples: list[Sample], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for s in samples:
            if s.replied is None:
                s.replied = watch.replies.get(s.post_id)
        if all(s.replied is not None for s in samples) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection in this process (the fake and the clock) while a measured block runs.

    The fake keeps every post, event and request of the run, so a full collection of this
    process's heap took up to 290 ms (11 of them, 2.1 s in all, in one run on 2026-12-02): a
    stall of the "server" that landed in whichever bot's block it fell. Collections wait for the
    untimed gaps between blocks instead."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def load(
    sender: Sender,
    watch: Watch,
    pid: int,
    bot_user_id: str,
    channels: Sequence[str],
    message: str,
    rate: float,
    count: int,
    timeout: float = 15.0,
) -> LoadResult:
    """``count`` commands at ``rate`` per second, round robin over ``channels``; waits for the replies."""
    with gc_paused():
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        samples = []
        for i in range(count):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            samples.append(sender.post(channels[i % len(channels)], message, i))
        await wait_replies(watch, samples, timeout)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
    watch.fake_time(bot_user_id, samples)
    return LoadResult(rate, samples, cpu, wall)


async def idle(pid: int, quiet: float = 0.3, timeout: float = 20.0) -> None:
    """Wait until the process has used (almost) no CPU for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet)
        now = cpu_seconds(pid)
        if now - last <= 0.02:
            return
        last = now


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
