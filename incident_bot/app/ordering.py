"""Events of one channel are applied in the order they arrived; channels run in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("incident_bot.ordering")


class ChannelQueues:
    """One chain of tasks per channel; every task is kept until it is done."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True

    def submit(self, channel_id: str, work: Callable[[], Awaitable[None]]) -> bool:
        """Queue ``work`` after everything already queued for this channel."""
        if not self.accepting:
            return False
        previous = self._tails.get(channel_id)

        async def run() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - the pipeline logs its own failures; this is the last guard of the loop
                log.error("event.unhandled", channel=channel_id, error=type(exc).__name__)

        task = asyncio.create_task(run())
        self._tails[channel_id] = task
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._tails.get(channel_id) is t:
                del self._tails[channel_id]

        task.add_done_callback(done)
        return True

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def settled(self) -> None:
        """Wait until nothing is queued (work queued meanwhile is waited for too)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, timeout: float) -> bool:
        """Stop accepting and wait (bounded) for what is in flight; True when all finished."""
        self.accepting = False
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)
        return not pending
