"""app/leadership.py against a lease double and a clock the test moves (no real waiting)."""

from __future__ import annotations

import asyncio

from incident_bot.app.leadership import Leadership
from incident_bot.store.base import LeaseView, StoreUnavailable


class Clock:
    """Sleeping moves it; ``until(t)`` returns once something has slept past ``t``."""

    def __init__(self) -> None:
        self.now = 100.0
        self._alarms: list[tuple[float, asyncio.Event]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)
        for at, alarm in self._alarms:
            if self.now >= at:
                alarm.set()
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would

    async def until(self, at: float) -> None:
        alarm = asyncio.Event()
        self._alarms.append((at, alarm))
        await alarm.wait()


class LeaseDouble:
    """The database's side: who holds the lease; scripted failures of the calls."""

    holder = "me"

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owner = "other"
        self.generation = 1
        self.failing = False  # the database cannot be reached
        self.fenced: list[int] = []
        self.released: list[int] = []
        self.renewals: list[float] = []

    async def acquire(self) -> LeaseView:
        if self.failing:
            raise StoreUnavailable("database down")
        if self.owner in ("", self.holder):
            self.owner, self.generation = self.holder, self.generation + 1
            return LeaseView(self.holder, self.generation, 5.0, ours=True)
        return LeaseView(self.owner, self.generation, 3.0, ours=False)

    async def renew(self, generation: int, timeout: float) -> bool:
        self.renewals.append(self.clock.now)
        if self.failing:
            raise StoreUnavailable("database down")
        return self.owner == self.holder and self.generation == generation

    async def release(self, generation: int) -> None:
        self.released.append(generation)
        self.owner = ""

    async def view(self) -> LeaseView:
        return LeaseView(self.owner, self.generation, 1.0, ours=self.owner == self.holder)

    def fence(self, generation: int) -> None:
        self.fenced.append(generation)

    async def close(self) -> None:
        pass


def make() -> tuple[Leadership, LeaseDouble, Clock]:
    clock = Clock()
    lease = LeaseDouble(clock)
    return Leadership(lease, clock=clock, sleep=clock.sleep), lease, clock


async def test_sqlite_always_leads_and_never_waits() -> None:
    solo = Leadership(None)
    assert solo.solo and solo.leading and solo.may_write()
    assert await solo.campaign(asyncio.Event()) is True
    await solo.hold()  # returns at once
    assert not solo.lost.is_set()


async def test_a_standby_polls_until_the_lease_is_free_then_leads() -> None:
    leadership, lease, _clock = make()
    stop = asyncio.Event()
    campaign = asyncio.create_task(leadership.campaign(stop))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not campaign.done() and not leadership.leading and not leadership.may_write()
    assert leadership.standby_reason() == "standby: other leads (lease generation 1)"
    lease.owner = ""  # the leader let it go
    assert await campaign is True
    assert leadership.leading and leadership.generation == 2


async def test_a_standby_stops_campaigning_when_asked_and_outlives_a_database_outage() -> None:
    leadership, lease, _clock = make()
    lease.failing = True
    stop = asyncio.Event()
    campaign = asyncio.create_task(leadership.campaign(stop))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not campaign.done()
    stop.set()
    assert await campaign is False
    assert not leadership.leading


async def test_the_leader_renews_every_second_and_keeps_leading() -> None:
    leadership, lease, clock = make()
    lease.owner = ""
    await leadership.campaign(asyncio.Event())
    started = clock.now
    holding = asyncio.create_task(leadership.hold())
    await clock.until(started + 30)
    assert leadership.leading and not leadership.lost.is_set()
    gaps = [b - a for a, b in zip(lease.renewals, lease.renewals[1:], strict=False)]
    assert gaps and max(gaps) <= 1.0 + 1e-9
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
    await leadership.release()
    assert lease.released == [2] and not leadership.leading


async def test_a_leader_that_cannot_renew_stops_writing_before_the_lease_runs_out() -> None:
    leadership, lease, clock = make()
    lease.owner = ""
    await leadership.campaign(asyncio.Event())
    holding = asyncio.create_task(leadership.hold())
    await clock.until(102)
    lease.failing = True  # the database is cut off
    last_renewed = max(t for t in lease.renewals if t < 102)
    await holding
    assert leadership.lost.is_set() and not leadership.leading and not leadership.may_write()
    # Stepped down at most ttl - margin after the last renewal that was sent: before the
    # database lets anyone else take the lease (ttl after it received that renewal).
    assert clock.now <= last_renewed + leadership.ttl - leadership.margin + 1e-9
    assert lease.fenced == [0, 0]  # as a standby, and when it stepped down


async def test_a_leader_whose_lease_was_taken_over_steps_down_at_once() -> None:
    leadership, lease, clock = make()
    lease.owner = ""
    await leadership.campaign(asyncio.Event())
    holding = asyncio.create_task(leadership.hold())
    lease.owner, lease.generation = "other", 3
    await holding
    assert leadership.lost.is_set() and not leadership.leading
    assert lease.fenced == [0, 0]  # as a standby, and when it stepped down
    assert clock.now <= 101 + 1e-9  # at the next renewal


async def test_an_unexpected_error_of_a_renewal_is_a_failed_renewal_not_a_crash() -> None:
    leadership, lease, clock = make()
    lease.owner = ""
    await leadership.campaign(asyncio.Event())

    async def broken(generation: int, timeout: float) -> bool:
        lease.renewals.append(clock.now)
        raise RuntimeError("cannot switch to state 11; another operation is in progress")

    lease.renew = broken  # type: ignore[method-assign]  # the driver failing in a way nobody listed
    await leadership.hold()
    assert leadership.lost.is_set() and not leadership.leading
    assert len(lease.renewals) > 1, "retried while the lease lasted"
