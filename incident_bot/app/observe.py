"""What the app reports as it works (for metrics), and the trace of the event being handled
(for its log line: how long it took, which incident it touched).

The app only knows this Protocol; ``incident_bot.ops.metrics.Metrics`` implements it and
``runtime.py`` hands it in through ``Core``. Every method is called on the hot path: an
implementation must be cheap and must not raise.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol


class AppObserver(Protocol):
    def event_received(self, kind: str) -> None:
        """A WebSocket event arrived (``posted``, ``reaction_added``, …)."""

    def command_handled(self, command: str, outcome: str, seconds: float) -> None:
        """A command got its reply (or failed to); ``seconds`` since the bot took it up."""

    def reaction_handled(self, action: str) -> None:
        """A reaction the bot cares about was applied (``added`` or ``removed``)."""

    def connected(self, reconnect: bool, resumed: bool) -> None:
        """The WebSocket is authenticated again; ``resumed``: the server replayed what was missed."""

    def caught_up(self, events: int) -> None:
        """A catch-up over REST fed this many missed events to the pipeline."""

    def reminder_sent(self) -> None:
        """A status-update reminder was posted."""


class NullObserver:
    """Reports nothing (tests, ``export``)."""

    def event_received(self, kind: str) -> None:
        pass

    def command_handled(self, command: str, outcome: str, seconds: float) -> None:
        pass

    def reaction_handled(self, action: str) -> None:
        pass

    def connected(self, reconnect: bool, resumed: bool) -> None:
        pass

    def caught_up(self, events: int) -> None:
        pass

    def reminder_sent(self) -> None:
        pass


@dataclass
class Trace:
    """One event's handling, from when the pipeline took it up."""

    started: float = field(default_factory=time.monotonic)
    incident: int | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fields(self) -> dict[str, Any]:
        """``duration_ms`` and ``incident``, for the event's log line."""
        return {"duration_ms": round(self.elapsed() * 1000, 1), "incident": self.incident}


_trace: ContextVar[Trace | None] = ContextVar("incident_bot_trace", default=None)


def begin_trace() -> Trace:
    """Start the trace of the event handled in this task (each pipeline work item runs in its own task)."""
    trace = Trace()
    _trace.set(trace)
    return trace


def current_trace() -> Trace:
    """The trace of the event being handled; a fresh one outside the pipeline."""
    trace = _trace.get()
    if trace is None:
        trace = begin_trace()
    return trace


def note_incident(number: int | None) -> None:
    """The event being handled is about incident ``number`` (its log line will say so)."""
    if number is not None:
        trace = _trace.get()
        if trace is not None and trace.incident is None:
            trace.incident = number
