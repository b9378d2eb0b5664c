"""Staying in step with Mattermost: live events in, catch-up after a restart, a reconnect the
server could not resume or a gap in the sequence, and retries of what failed meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from incident_bot.app.backlog import Backlog
from incident_bot.app.catchup import CatchUp
from incident_bot.app.cursor import Cursor, wall_ms
from incident_bot.app.pipeline import Pipeline
from incident_bot.chat.events import (
    Event,
    Hello,
    Malformed,
    OtherEvent,
    PostDeleted,
    Posted,
    PostEdited,
    ReactionAdded,
    ReactionRemoved,
)
from incident_bot.chat.retry import Backoff

log = structlog.get_logger("incident_bot.resync")

RETRY_FIRST = 2.0  # seconds before the first retry of failed work
RETRY_MAX = 60.0

# Metric labels of the event types (a fixed set: the server's other event names stay "other").
_KINDS: dict[type, str] = {
    Hello: "hello",
    Posted: "posted",
    PostEdited: "post_edited",
    PostDeleted: "post_deleted",
    ReactionAdded: "reaction_added",
    ReactionRemoved: "reaction_removed",
    Malformed: "malformed",
}


class Resync:
    """Feeds the pipeline. While a catch-up reads what was missed, live events wait behind
    it (``_gate``) so nothing overtakes what came before it."""

    def __init__(
        self,
        pipeline: Pipeline,
        catchup: CatchUp,
        cursor: Cursor,
        backlog: Backlog,
        repair_stale: Callable[[], Awaitable[bool]],
        deliver_outbox: Callable[[], Awaitable[bool]],
    ) -> None:
        self.pipeline = pipeline
        self.catchup = catchup
        self.cursor = cursor
        self.backlog = backlog
        self.repair_stale = repair_stale
        self.deliver_outbox = deliver_outbox
        self._gate: list[Event] | None = None
        self._catchups = 0
        self._connected_once = False
        self._tasks: set[asyncio.Task[bool]] = set()

    # --- from the stream -------------------------------------------------------------

    @property
    def catching_up(self) -> bool:
        """A catch-up is reading what was missed (live events wait behind it)."""
        return self._catchups > 0

    @property
    def caught_up_once(self) -> bool:
        """Connected at least once and no catch-up running: the bot is in step with the server."""
        return self._connected_once and not self.catching_up

    async def on_event(self, event: Event) -> None:
        self.pipeline.core.observer.event_received(_KINDS.get(type(event), "other"))
        if isinstance(event, Hello):
            return
        if isinstance(event, OtherEvent):
            self.pipeline.core.directory.observe(event)  # memberships, teams, names, headers: in arrival order
            return
        if isinstance(event, (Posted, PostEdited, PostDeleted)):
            self.cursor.see(max(event.post.update_at, event.post.create_at))
        elif isinstance(event, (ReactionAdded, ReactionRemoved)):
            self.cursor.see(max(event.reaction.update_at, event.reaction.create_at, event.reaction.delete_at))
        if self._gate is not None:
            self._gate.append(event)  # after what catch-up feeds, in arrival order
            return
        self.pipeline.handle(event)

    async def on_connect(self, hello: Hello, resumed: bool) -> None:
        log.info("bot.ready", connection=hello.connection_id, resumed=resumed, server=hello.server_version)
        reason = "reconnect" if self._connected_once else "start"
        self.pipeline.core.observer.connected(self._connected_once, resumed)
        self._connected_once = True
        if resumed:
            return
        self.pipeline.core.directory.forget()  # the events that would have said what changed are lost
        if self.cursor.value is None and self.cursor.safe is None:  # first start ever: nothing to catch up
            self.cursor.see(wall_ms())
            await self.cursor.flush()
            return
        self.catch_up(reason)

    async def on_gap(self, expected: int, received: int) -> None:
        """Frames the server sent never arrived: read them over REST before the next one is handled."""
        log.warning("bot.gap", expected=expected, received=received)
        self.pipeline.core.directory.forget()
        self.catch_up("gap")

    # --- catch-up --------------------------------------------------------------------

    def catch_up(self, reason: str, since: int | None = None) -> asyncio.Task[bool]:
        """Start a catch-up now; live events wait until it has fed what came before them."""
        if since is None:
            since = self.cursor.safe
        self._catchups += 1
        if self._gate is None:
            self._gate = []
        task = asyncio.create_task(self._run_catchup(reason, since))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_catchup(self, reason: str, since: int | None) -> bool:
        complete = False
        try:
            complete = await self.catchup.run(reason, since)
        except Exception as exc:  # noqa: BLE001 - tried again below
            log.warning("catchup.crashed", reason=reason, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            self._catchups -= 1
            if self._catchups == 0 and self._gate is not None:
                waiting, self._gate = self._gate, None
                for event in waiting:
                    self.pipeline.handle(event)
        if not complete and since is not None:
            self.backlog.unfinished(f"catchup:{reason}", since)
        return complete

    # --- retries ---------------------------------------------------------------------

    async def run_retries(self) -> None:
        """While something failed because Mattermost did: wait (backing off), then read it
        again from its time, repair channels whose edits failed and deliver queued posts."""
        backoff = Backoff(RETRY_FIRST, cap=RETRY_MAX, jitter="equal")
        while True:
            await self.backlog.wakeup.wait()
            self.backlog.wakeup.clear()
            while self.backlog:
                await backoff.wait()
                ok = True
                if self.backlog.stale:
                    ok = await self.repair_stale()
                if self.backlog.outbox:
                    self.backlog.outbox = False
                    if not await self.deliver_outbox():  # failed again, or more is queued
                        self.backlog.outbox, ok = True, False
                pending = self.backlog.pending()
                if pending:
                    since = min(ms for ms, _ in pending.values())
                    log.info("bot.retrying", items=len(pending), since=since)
                    if await self.catch_up("retry", since):
                        self.backlog.done(pending)
                    else:
                        ok = False
                if ok:
                    backoff.reset()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
