"""The one way tests wait: ``await eventually(check)`` retries until ``check`` passes.

``check`` is a sync or async callable. It passes when it returns a truthy value without
raising; an ``AssertionError`` or a falsy value (None included, so a lookup that finds
nothing is not a pass) means "not yet". An assertion block ends with ``return True``. The
passing value is returned, so ``post = await eventually(find_post)`` works.
On timeout an ``AssertionError`` names ``what`` and says what the last try saw: the last
AssertionError's message, or the last falsy result.

Waiting for a condition is what this is for; the polling interval is not a way to let time
pass (move the bot's clock with ``BotProcess.skew`` instead).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 15.0
DEFAULT_INTERVAL = 0.1


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str = "the condition",
) -> T:
    """Call ``check`` until it passes (see the module docstring); its passing result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempts = 0
    while True:
        attempts += 1
        last: str
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as exc:
            last = str(exc) or repr(exc)
        else:
            if result:
                return result  # type: ignore[return-value]  # awaited above: no longer the awaitable the check returned
            last = f"got {result!r}"
        if loop.time() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s ({attempts} tries); last: {last}")
        await asyncio.sleep(interval)
