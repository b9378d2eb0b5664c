"""The one backoff policy: delays, jitter, reset, stop-aware waits, rate-limit headers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from incident_bot.chat.retry import (
    Backoff,
    rate_limit_hint,
    rate_limit_reset_seconds,
    retry_after_seconds,
    sleep_unless_stopped,
)


def top(low: float, high: float) -> float:
    """A 'random' source that always picks the highest value allowed."""
    return high


def bottom(low: float, high: float) -> float:
    return low


class Sleeps:
    """Records sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Never:
    """A sleep that never ends by itself (so only a stop can end the wait)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, delay: float) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


# --- delays -----------------------------------------------------------------------------


def test_delays_grow_by_factor_up_to_cap() -> None:
    backoff = Backoff(1.0, factor=2.0, cap=10.0, jitter="none")
    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.attempts == 6


def test_full_jitter_spans_zero_to_ceiling() -> None:
    calls: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return (low + high) / 2

    backoff = Backoff(0.5, cap=30.0, jitter="full", uniform=uniform)
    assert [backoff.next_delay() for _ in range(3)] == [0.25, 0.5, 1.0]
    assert calls == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]


def test_equal_jitter_spans_half_to_ceiling() -> None:
    low = Backoff(2.0, cap=60.0, jitter="equal", uniform=bottom)
    high = Backoff(2.0, cap=60.0, jitter="equal", uniform=top)
    assert [low.next_delay() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert [high.next_delay() for _ in range(3)] == [2.0, 4.0, 8.0]


def test_default_random_source_stays_in_range() -> None:
    backoff = Backoff(0.1, cap=1.0)
    for attempt in range(20):
        ceiling = backoff.ceiling()
        assert ceiling == min(1.0, 0.1 * 2**attempt)
        assert 0.0 <= backoff.next_delay() <= ceiling


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(1.0, cap=100.0, jitter="none")
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 1.0


def test_hint_replaces_the_computed_delay_clamped_and_counts() -> None:
    backoff = Backoff(1.0, cap=5.0, jitter="none")
    assert backoff.next_delay(2.5) == 2.5
    assert backoff.next_delay(3600.0) == 5.0
    assert backoff.next_delay(-3.0) == 0.0
    assert backoff.attempts == 3
    assert backoff.next_delay() == 5.0  # attempt 3: 1 * 2**3 capped


def test_very_long_failure_does_not_overflow() -> None:
    backoff = Backoff(1.0, factor=10.0, cap=7.0, jitter="none")
    for _ in range(2000):
        backoff.next_delay()
    assert backoff.next_delay() == 7.0


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1.0}, {"cap": -1.0}, {"factor": 0.5}, {"jitter": "decorrelated"}],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]  # invalid on purpose


# --- waiting ----------------------------------------------------------------------------


async def test_wait_sleeps_the_next_delay() -> None:
    sleeps = Sleeps()
    backoff = Backoff(1.0, cap=4.0, jitter="none", sleep=sleeps)
    assert await backoff.wait() is True
    assert await backoff.wait(asyncio.Event()) is True
    assert await backoff.wait(asyncio.Event()) is True
    assert await backoff.wait() is True
    assert sleeps.delays == [1.0, 2.0, 4.0, 4.0]


async def test_wait_returns_false_at_once_when_already_stopped() -> None:
    sleeps = Sleeps()
    backoff = Backoff(1.0, sleep=sleeps)
    stop = asyncio.Event()
    stop.set()
    assert await backoff.wait(stop) is False
    assert sleeps.delays == []
    assert backoff.attempts == 0


async def test_wait_ends_early_when_stop_is_set_and_cancels_the_sleep() -> None:
    never = Never()
    backoff = Backoff(1.0, sleep=never)
    stop = asyncio.Event()
    waiting = asyncio.create_task(backoff.wait(stop))
    await never.started.wait()
    stop.set()
    assert await waiting is False
    assert never.cancelled


async def test_pause_uses_the_given_delay() -> None:
    sleeps = Sleeps()
    backoff = Backoff(1.0, sleep=sleeps)
    assert await backoff.pause(0.75, asyncio.Event()) is True
    assert sleeps.delays == [0.75]
    assert backoff.attempts == 0


async def test_cancelling_a_wait_leaves_no_task_behind() -> None:
    never = Never()
    stop = asyncio.Event()
    waiting = asyncio.create_task(sleep_unless_stopped(10.0, stop, sleep=never))
    await never.started.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert never.cancelled
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


async def test_real_sleep_short_delay() -> None:
    assert await sleep_unless_stopped(0.0, asyncio.Event()) is True


# --- rate-limit headers -----------------------------------------------------------------

NOW = 1_700_000_000.0


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    when = format_datetime(datetime.fromtimestamp(NOW + 30, tz=UTC), usegmt=True)
    assert retry_after_seconds(when, now=NOW) == pytest.approx(30.0)
    assert retry_after_seconds("") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


def test_ratelimit_reset_is_seconds_from_now_on_mattermost_and_unix_time_elsewhere() -> None:
    assert rate_limit_reset_seconds("1") == 1.0  # Mattermost: seconds until the reset
    assert rate_limit_reset_seconds(str(int(NOW) + 3), now=NOW) == pytest.approx(3.0)
    assert rate_limit_reset_seconds("x") is None
    assert rate_limit_reset_seconds(None) is None


def test_hint_prefers_retry_after_then_reset() -> None:
    assert rate_limit_hint({"Retry-After": "2", "X-RateLimit-Reset": "9"}) == 2.0
    assert rate_limit_hint({"X-RateLimit-Reset": "9"}) == 9.0
    assert rate_limit_hint({"X-RateLimit-Limit": "10"}) is None
    assert rate_limit_hint({"Retry-After": "garbage", "X-RateLimit-Reset": "4"}) == 4.0
