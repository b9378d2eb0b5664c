"""The bot's Prometheus metrics, in a registry of their own (one per bot: tests run several).

``Metrics`` implements the app's ``AppObserver`` and gives the chat client and the store
their hooks (``rest_response``, ``commit``); ``runtime.py`` builds one and hands it in by
constructor. Everything here runs on the hot path: a dict lookup and an increment.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "incident_bot"

# Seconds: a reply normally takes tens of milliseconds; the alert is on p99 > 2 s.
REPLY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

__all__ = ["CONTENT_TYPE", "Metrics"]


def status_class(status: int) -> str:
    """The REST call's label: ``2xx`` … ``5xx``, ``429`` on its own, ``error`` when no answer came."""
    if status == 429:
        return "429"
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return "error"


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.events = Counter(f"{PREFIX}_events_received", "WebSocket events received, by type", ["type"], registry=r)
        self.commands = Counter(
            f"{PREFIX}_commands", "Commands handled, by command and outcome", ["command", "outcome"], registry=r
        )
        self.reply_seconds = Histogram(
            f"{PREFIX}_reply_seconds",
            "Seconds from taking up a command to its reply having been sent",
            buckets=REPLY_BUCKETS,
            registry=r,
        )
        self.reactions = Counter(
            f"{PREFIX}_reactions_handled", "Checklist and timeline reactions applied", ["action"], registry=r
        )
        self.ws_reconnects = Counter(
            f"{PREFIX}_websocket_reconnects", "WebSocket reconnections after the first connection", registry=r
        )
        self.ws_resumes = Counter(
            f"{PREFIX}_websocket_resumes", "Reconnections the server resumed (no REST catch-up needed)", registry=r
        )
        self.caught_up_events = Counter(f"{PREFIX}_events_caught_up", "Missed events read back over REST and handled", registry=r)
        self.rest = Counter(
            f"{PREFIX}_rest_calls",
            "REST calls to Mattermost by status class (429 on its own, error = no answer), retries included",
            ["status"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_db_commit_seconds", "Seconds per database COMMIT", buckets=COMMIT_BUCKETS, registry=r
        )
        self.active = Gauge(f"{PREFIX}_active_incidents", "Active incidents by severity", ["severity"], registry=r)
        self.reminders = Counter(f"{PREFIX}_reminders_sent", "Status-update reminders posted", registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when /readyz answers 200", registry=r)
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this replica holds the leader lease (always, on SQLite); 0 on a standby", registry=r
        )
        self.outbox_depth = Gauge(
            f"{PREFIX}_outbox_depth", "Posts that follow a committed change and wait to go out (app/outbox.py)", registry=r
        )
        for severity in ("1", "2", "3", "4"):
            self.active.labels(severity)  # every severity present from the start, at 0
        # Label children are cached: the hot path does a dict lookup, not a labels() call.
        self._events: dict[str, Counter] = {}
        self._rest: dict[int, Counter] = {}

    # --- the app (AppObserver) -------------------------------------------------------------

    def event_received(self, kind: str) -> None:
        child = self._events.get(kind)
        if child is None:
            child = self._events[kind] = self.events.labels(kind)
        child.inc()

    def command_handled(self, command: str, outcome: str, seconds: float) -> None:
        self.commands.labels(command, str(outcome)).inc()
        self.reply_seconds.observe(seconds)

    def reaction_handled(self, action: str) -> None:
        self.reactions.labels(action).inc()

    def connected(self, reconnect: bool, resumed: bool) -> None:
        if reconnect:
            self.ws_reconnects.inc()
            if resumed:
                self.ws_resumes.inc()

    def caught_up(self, events: int) -> None:
        self.caught_up_events.inc(events)

    def reminder_sent(self) -> None:
        self.reminders.inc()

    # --- chat and store hooks ------------------------------------------------------------

    def rest_response(self, status: int) -> None:
        child = self._rest.get(status)
        if child is None:
            child = self._rest[status] = self.rest.labels(status_class(status))
        child.inc()

    def commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    # --- at scrape time ------------------------------------------------------------------

    def set_active(self, severities: Iterable[int]) -> None:
        counts = Tally(str(s) for s in severities)
        for severity in ("1", "2", "3", "4"):
            self.active.labels(severity).set(counts.get(severity, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
