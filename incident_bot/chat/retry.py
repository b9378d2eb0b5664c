"""One retry/backoff policy: exponential delays with jitter, and the server's rate-limit hints.

Every loop that waits before trying again uses ``Backoff``: the REST client between
attempts of one call, the WebSocket stream between connections, the bot's own loops
(waiting for Mattermost at login, re-reading what failed). A caller keeps one ``Backoff``
per thing it retries, calls ``reset()`` when that thing succeeded, and either

- ``await backoff.wait(stop)`` (sleep the next delay; False when ``stop`` was set), or
- ``delay = backoff.next_delay()``, log it, then ``await backoff.pause(delay, stop)``.

A 429's own wait (``Retry-After``, else ``X-RateLimit-Reset``) is read by
``rate_limit_hint`` and passed as ``next_delay(hint)``: the server's word replaces the
computed delay, still capped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Literal

Jitter = Literal["none", "full", "equal"]
Uniform = Callable[[float, float], float]
Sleep = Callable[[float], Awaitable[None]]

# An X-RateLimit-Reset above this is an absolute unix time, below it a number of seconds.
# Mattermost's own limiter (throttled) sends seconds-until-reset; some proxies send unix time.
_UNIX_TIME_THRESHOLD = 1_000_000_000


class Backoff:
    """Exponential backoff: attempt n may wait up to ``min(cap, initial * factor**n)``.

    ``jitter`` spreads the wait so that many clients do not retry in step:
    ``"full"`` picks uniformly in ``[0, ceiling]``, ``"equal"`` in ``[ceiling/2, ceiling]``,
    ``"none"`` waits exactly ``ceiling``. ``uniform`` and ``sleep`` are injectable so
    tests run without randomness or real time. Not shared between tasks: keep one per loop.
    """

    def __init__(
        self,
        initial: float = 0.5,
        *,
        factor: float = 2.0,
        cap: float = 30.0,
        jitter: Jitter = "full",
        uniform: Uniform = random.uniform,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if initial < 0 or cap < 0 or factor < 1:
            raise ValueError("Backoff needs initial >= 0, cap >= 0 and factor >= 1")
        if jitter not in ("none", "full", "equal"):
            raise ValueError(f"unknown jitter {jitter!r}; expected 'none', 'full' or 'equal'")
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.jitter: Jitter = jitter
        self._uniform = uniform
        self._sleep = sleep
        self._attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, factor={self.factor}, cap={self.cap}, "
            f"jitter={self.jitter!r}, attempts={self._attempts})"
        )

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the last ``reset()``."""
        return self._attempts

    def ceiling(self) -> float:
        """The longest the next delay may be (before jitter)."""
        try:
            grown = self.initial * self.factor**self._attempts
        except OverflowError:  # a loop that failed for a very long time
            grown = self.cap
        return min(self.cap, grown)

    def next_delay(self, hint: float | None = None) -> float:
        """The delay before the next attempt, in seconds; counts one attempt.

        ``hint`` is the server's own wait (a 429's ``Retry-After``): when given, it
        replaces the computed delay, clamped to ``[0, cap]``.
        """
        if hint is not None:
            delay = min(max(hint, 0.0), self.cap)
        else:
            ceiling = self.ceiling()
            if self.jitter == "full":
                delay = self._uniform(0.0, ceiling)
            elif self.jitter == "equal":
                delay = self._uniform(ceiling / 2, ceiling)
            else:
                delay = ceiling
        self._attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial``: call after a success."""
        self._attempts = 0

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the next delay; False, at once, when ``stop`` is or becomes set."""
        if stop is not None and stop.is_set():
            return False
        return await self.pause(self.next_delay(), stop)

    async def pause(self, delay: float, stop: asyncio.Event | None = None) -> bool:
        """Sleep ``delay`` seconds (a delay from ``next_delay``); False as soon as ``stop`` is set."""
        return await sleep_unless_stopped(delay, stop, sleep=self._sleep)


async def sleep_unless_stopped(delay: float, stop: asyncio.Event | None = None, *, sleep: Sleep = asyncio.sleep) -> bool:
    """Sleep ``delay`` seconds or until ``stop`` is set; True when the delay ran out, False when stopped."""
    if stop is None:
        await sleep(delay)
        return True
    if stop.is_set():
        return False
    sleeper = asyncio.ensure_future(sleep(delay))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)
    return not stop.is_set()


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)


def rate_limit_reset_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``X-RateLimit-Reset`` as seconds to wait.

    Mattermost sends the seconds until the limit resets; a value large enough to be a unix
    time (as some proxies send) is read as the moment of the reset instead.
    """
    if not value:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > _UNIX_TIME_THRESHOLD:
        return number - (time.time() if now is None else now)
    return number


def rate_limit_hint(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """How long a 429 answer asks us to wait: ``Retry-After``, else ``X-RateLimit-Reset``, else None.

    The result may be negative (a reset time already past); ``Backoff.next_delay`` clamps it.
    """
    wait = retry_after_seconds(headers.get("Retry-After"), now=now)
    if wait is None:
        wait = rate_limit_reset_seconds(headers.get("X-RateLimit-Reset"), now=now)
    return wait
