"""Pydantic models of what the bot keeps: incidents, checklist items, timeline, playbooks."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator


def utcnow() -> datetime:
    """Current time, timezone-aware UTC, to the millisecond (what Mattermost keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def ensure_utc(value: datetime) -> datetime:
    """Treat naive datetimes as UTC; convert aware ones to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


SEVERITIES = (1, 2, 3, 4)  # Incident.severity, and the schema's CHECK (severity BETWEEN 1 AND 4)


class Status(StrEnum):
    STARTING = "starting"  # number taken, channel not yet fully set up
    ACTIVE = "active"
    ENDED = "ended"


class TimelineKind(StrEnum):
    STARTED = "started"
    SEVERITY_CHANGED = "severity_changed"
    COMMANDER_CHANGED = "commander_changed"
    MEMBER_JOINED = "member_joined"
    ENDED = "ended"
    REOPENED = "reopened"
    CHECKLIST_CHECKED = "checklist_checked"
    CHECKLIST_UNCHECKED = "checklist_unchecked"
    CHECKLIST_ADDED = "checklist_added"
    CHECKLIST_REMOVED = "checklist_removed"
    CHECKLIST_RENAMED = "checklist_renamed"
    CHECKLIST_ASSIGNED = "checklist_assigned"
    CHECKLIST_UNASSIGNED = "checklist_unassigned"
    STATUS_UPDATE = "status_update"
    NOTE = "note"
    POST_PINNED = "post_pinned"
    REMINDER_SENT = "reminder_sent"
    CHANNEL_ARCHIVED = "channel_archived"  # someone archived the incident channel: the bot no longer writes there


class _UTCModel(BaseModel):
    model_config = {"validate_assignment": True}


class Incident(_UTCModel):
    number: int = 0  # assigned by the store, 1, 2, 3… per installation
    team_id: str
    title: str
    severity: int = Field(ge=1, le=4)
    status: Status = Status.STARTING
    commander_id: str
    started_by: str
    origin_channel_id: str
    origin_post_id: str | None = None  # root of the thread where the reply goes
    command_post_id: str | None = None  # the post that said `start`
    channel_id: str | None = None
    channel_name: str | None = None
    summary_post_id: str | None = None
    checklist_post_id: str | None = None
    playbook: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    ended_by: str | None = None
    resolution: str | None = None
    last_update_at: datetime | None = None
    next_reminder_at: datetime | None = None

    @field_validator("started_at", "ended_at", "last_update_at", "next_reminder_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return ensure_utc(value) if value is not None else None


class TimelineEvent(_UTCModel):
    id: int = 0  # assigned by the store
    incident_number: int
    at: datetime
    kind: TimelineKind
    actor_id: str | None = None
    text: str = ""
    post_id: str | None = None  # for posts pinned to the timeline
    data: dict[str, Any] = Field(default_factory=dict)
    deleted: bool = False

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return ensure_utc(value)


class ChecklistItem(_UTCModel):
    incident_number: int
    number: int  # fixed when the item is added, never reused
    text: str
    post_id: str | None = None
    done_by: str | None = None
    done_at: datetime | None = None
    assignee_id: str | None = None
    removed: bool = False

    @field_validator("done_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return ensure_utc(value) if value is not None else None

    @property
    def done(self) -> bool:
        return self.done_by is not None


class IncidentStats(BaseModel):
    """Counts over a team's incidents, aggregated by the store (no incident is loaded)."""

    by_severity: dict[int, int] = Field(default_factory=dict)  # started in the period, any status
    open_now: int = 0  # starting or active now, whenever started
    resolved: int = 0  # ended, and started in the period
    median_seconds: float | None = None  # time to resolve of those, None when there are none
    mean_seconds: float | None = None


class Playbook(BaseModel):
    name: str
    description: str = ""
    default_severity: int = Field(default=3, ge=1, le=4)
    items: list[str] = Field(default_factory=list)
    team_id: str | None = None  # None: from the config file, for every team
    read_only: bool = False  # config playbooks cannot be edited from chat


class OutboxEntry(_UTCModel):
    """A post that follows from a committed change, kept until Mattermost has it.

    Written in the change's transaction, delivered after the commit and again after a
    restart until it is posted or obsolete. ``key`` names what it is (the command's dedupe
    key and the post's role), so a change queues it once and a delivery finds it again."""

    key: str
    incident_number: int | None = None
    channel_id: str
    root_id: str = ""
    message: str
    created_at: datetime
    attempts: int = 0  # deliveries started: above 0, the post may exist already
    done_at: datetime | None = None  # posted, or given up as obsolete

    @field_validator("created_at", "done_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return ensure_utc(value) if value is not None else None
