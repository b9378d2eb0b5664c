"""The repository interface the app layer talks to; no SQL here.

Every read and write happens inside ``async with store.transaction() as tx``: one
transaction at a time (the store serialises them), committed on normal exit, rolled
back on exception. Two backends implement the two protocols: SQLite
(store/sqlite.py, the default) and PostgreSQL (store/postgres.py); ``store.open_store``
picks one from the ``database`` setting.

What every backend guarantees (tests/store/test_contract.py checks it):

- Datetimes go in aware or naive (naive = UTC) and come back timezone-aware UTC,
  truncated to the millisecond (what Mattermost keeps).
- Saving or updating a row that does not exist raises ``KeyError``; so does adding a
  timeline event or checklist item to an incident that does not exist.
- A task must not open a transaction inside its own transaction (``RuntimeError``), and
  a Transaction object must not be used after its ``async with`` block (``RuntimeError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from incident_bot.domain.models import ChecklistItem, Incident, IncidentStats, OutboxEntry, Playbook, Status, TimelineEvent


class SchemaTooNew(Exception):
    """The database was written by a newer incident-bot than this one."""


class StoreUnavailable(Exception):
    """The database cannot be reached (PostgreSQL down, wrong host or credentials); the
    message names it without its password."""


class Fenced(StoreUnavailable):
    """This replica's lease generation is no longer the database's: another replica leads
    now, and this transaction was refused before it could change anything."""


class Transaction(Protocol):
    # --- idempotency -------------------------------------------------------------
    async def event_seen(self, key: str) -> bool:
        """True when an event with this key was already recorded as handled."""

    async def record_event(self, key: str, at: datetime, incident_number: int | None = None) -> None:
        """Remember that the event with this key has been handled (same transaction as its effect).

        Recording a key again is a no-op: the first record stays."""

    # --- replies (at most one per command post) ------------------------------------
    async def get_reply(self, command_key: str) -> str | None:
        """Post id of the reply already sent for this command key, if any."""

    async def record_reply(self, command_key: str, reply_post_id: str, at: datetime) -> None:
        """Remember the reply to this command; a second record for the same key is a no-op
        (the first reply stays the one)."""

    async def command_state(self, key: str) -> tuple[bool, bool]:
        """(a reply is recorded for ``key``, the event ``key`` is recorded): both in one read."""

    async def command_states(self, keys: Sequence[str]) -> dict[str, tuple[bool, bool]]:
        """``command_state`` of each key, read together (a few statements for many keys)."""

    async def prune_events(self, before: datetime) -> int:
        """Forget event keys recorded before ``before`` (older than any redelivery or catch-up
        window, see app/retention.py); returns how many were removed."""

    async def prune_replies(self, before: datetime) -> int:
        """Forget reply records made before ``before``; returns how many were removed."""

    async def prune_outbox(self, before: datetime) -> int:
        """Forget outbox entries delivered (or given up) before ``before``; pending ones stay."""

    async def bookkeeping_counts(self) -> dict[str, int]:
        """How many event keys, reply records and outbox entries are kept:
        ``{"events": n, "replies": m, "outbox": k}``."""

    # --- incidents -------------------------------------------------------------
    async def create_incident(self, incident: Incident) -> Incident:
        """Insert with the next number (1, 2, 3…); returns a copy with its number.

        ``incident.number`` is ignored and the argument is not changed. Numbers are never
        handed out twice (a rolled-back insert leaves no trace). ``channel_id`` is unique."""

    async def save_incident(self, incident: Incident) -> None:
        """Update every field of an existing incident (by number); KeyError if there is none."""

    async def get_incident(self, number: int) -> Incident | None: ...

    async def get_incident_by_channel(self, channel_id: str) -> Incident | None: ...

    async def get_incident_by_command_post(self, post_id: str) -> Incident | None:
        """The incident started by this post (the lowest number, should there be several)."""

    async def list_incidents(
        self,
        team_ids: list[str],
        statuses: list[Status],
        limit: int,
        offset: int = 0,
    ) -> tuple[list[Incident], int]:
        """Incidents of these teams in these statuses, newest (highest number) first,
        and the total count matching.

        An empty ``team_ids`` or ``statuses`` gives ``([], 0)``; ``limit=0`` gives only the
        count; negative ``limit`` or ``offset`` raise ValueError."""

    async def list_incidents_in_status(self, statuses: list[Status]) -> list[Incident]:
        """Incidents of every team in these statuses, oldest (lowest number) first.

        For start-up work across teams (finishing incidents left ``starting`` by a crash,
        catch-up of active checklists); user-facing lists go through ``list_incidents``."""

    async def list_incidents_to_repair(self, ended_since: datetime) -> list[Incident]:
        """Active incidents of every team, and ended ones whose ``ended_at`` is at or after
        ``ended_since``; oldest (lowest number) first.

        What a restart mends; older ended incidents are never read (their number grows
        without bound, the restart's work must not)."""

    async def incident_stats(self, team_ids: list[str], since: datetime) -> IncidentStats:
        """Figures over all incidents of these teams, whatever their number, computed by the
        database: by severity and resolved (with median and mean time to resolve, seconds to
        the millisecond) for incidents started at or after ``since``; open now (starting or
        active) whenever started. An empty ``team_ids`` gives empty figures."""

    # --- timeline ----------------------------------------------------------------
    async def add_timeline(self, event: TimelineEvent) -> TimelineEvent:
        """Append; returns a copy with its id (``event.id`` is ignored). KeyError if the
        incident does not exist. ``data`` must be JSON-serialisable (pydantic's rules)."""

    async def update_timeline(self, event: TimelineEvent) -> None:
        """Rewrite the event with this id (and incident number); KeyError if there is none.
        Set ``deleted`` to take a pinned post out of the timeline."""

    async def list_timeline(self, incident_number: int, include_deleted: bool = False) -> list[TimelineEvent]:
        """Ordered by time, then id; deleted events only with ``include_deleted``."""

    async def get_timeline_by_post(self, incident_number: int, post_id: str) -> TimelineEvent | None:
        """The live (not deleted) `post_pinned` event for this post, if any."""

    # --- checklist -----------------------------------------------------------------
    async def add_checklist_item(self, incident_number: int, text: str) -> ChecklistItem:
        """Append with the next item number of that incident (never reused, also after removal).

        KeyError if the incident does not exist. Remove an item by saving it with
        ``removed=True``; there is no delete."""

    async def save_checklist_item(self, item: ChecklistItem) -> None:
        """Update the item (incident_number, number); KeyError if there is none.
        ``post_id`` is unique across all items."""

    async def list_checklist(self, incident_number: int, include_removed: bool = False) -> list[ChecklistItem]:
        """Ordered by item number; removed items only with ``include_removed``."""

    async def get_checklist_item_by_post(self, post_id: str) -> ChecklistItem | None:
        """The item posted as this post, removed ones included (check ``removed``)."""

    # --- playbooks (team playbooks kept in the database) -------------------------------
    async def get_playbook(self, team_id: str, name: str) -> Playbook | None:
        """Case-insensitive name match (ASCII letters at least)."""

    async def list_playbooks(self, team_id: str) -> list[Playbook]:
        """The team's stored playbooks, by name, case-insensitively; all with read_only False."""

    async def save_playbook(self, playbook: Playbook) -> None:
        """Insert or replace (team_id, name); a replace takes the new spelling of the name.

        ValueError when ``team_id`` is None (config playbooks are never stored)."""

    async def delete_playbook(self, team_id: str, name: str) -> bool:
        """Case-insensitive; True when a playbook was deleted."""

    # --- reminders and cursor ----------------------------------------------------
    async def due_reminders(self, now: datetime) -> list[Incident]:
        """Active incidents whose next_reminder_at is at or before now, earliest due first."""

    async def add_outbox(self, entry: OutboxEntry) -> bool:
        """Queue a post; False (and nothing changes) when an entry with its key exists."""

    async def pending_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Entries not yet done, oldest first."""

    async def get_outbox(self, key: str) -> OutboxEntry | None: ...

    async def outbox_depth(self) -> int:
        """How many entries wait to be delivered."""

    async def save_outbox(self, entry: OutboxEntry) -> None:
        """Store the entry's ``attempts`` and ``done_at``."""

    async def get_state(self, key: str) -> Any | None:
        """Small persisted bot state (JSON values): last event time seen, connection id…

        None when the key was never set (or was set to None)."""

    async def set_state(self, key: str, value: Any) -> None:
        """Insert or replace; ``value`` must be JSON-serialisable. Read back as plain JSON
        (a datetime comes back as its ISO string)."""


class Store(Protocol):
    async def open(self) -> None:
        """Open the database, apply pending migrations; raises SchemaTooNew."""

    async def close(self) -> None:
        """Wait for a running transaction to end, then close; closing twice is fine."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.transaction() as tx``: one at a time, in arrival order;
        commit on normal exit, rollback on any exception (re-raised), cancellation too."""

    def read(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.read() as tx``: a block that only reads, in turn with the
        transactions. Each statement sees committed data only (never a transaction's half);
        several statements may see different commits. It must not write (SQLite's raises
        RuntimeError)."""

    def later(self) -> AbstractAsyncContextManager[Transaction]:
        """``async with store.later() as tx``: writes nobody waits for, that may run twice
        (``record_reply``, ``record_event``). Committed by the time any later ``read()`` or
        ``transaction()`` block reads, and within a moment anyway; lost if the process dies
        in that moment (a reply's record: catch-up finds the reply in the chat). SQLite sends
        them along with the next trip to its thread; PostgreSQL commits them at once."""

    async def schema_version(self) -> int:
        """The version of the newest migration applied to the database."""

    async def check_writable(self) -> None:
        """Raise StoreUnavailable when the database cannot take a write now (for /readyz)."""


# --- active/standby (PostgreSQL only; store/lease.py) --------------------------------------------


@dataclass(frozen=True)
class LeaseView:
    """The leader lease as one replica saw it in the database."""

    holder: str  # "" when nobody ever held it
    generation: int  # bumped at every takeover: the fencing token
    expires_in: float  # seconds by the database's clock; 0 or less: run out
    ours: bool  # this replica holds it (after acquire: it just took it, or still had it)


class Lease(Protocol):
    """The lease several replicas on one database compete for; one holds it at a time."""

    holder: str  # this replica's name in the lease row

    async def acquire(self) -> LeaseView:
        """Take the lease when it is free or has run out (a new generation), else just look.

        Raises StoreUnavailable when the database cannot be reached."""

    async def renew(self, generation: int, timeout: float) -> bool:
        """Extend our lease of this generation; False when it is no longer ours (taken over).

        Raises StoreUnavailable when the database cannot be reached within ``timeout`` seconds."""

    async def release(self, generation: int) -> None:
        """Let the lease run out now (a clean stop), so a standby takes over at once."""

    async def view(self) -> LeaseView:
        """Look without taking (for ``incident-bot check``)."""

    def fence(self, generation: int) -> None:
        """Refuse every store transaction unless the lease is still at ``generation`` (0: refuse all)."""

    async def close(self) -> None: ...
