"""Rules: channel naming, durations, who may do what, and state transitions."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from enum import StrEnum

from incident_bot.domain.commands import COMMANDS, Access
from incident_bot.domain.models import Incident, Status

CHANNEL_NAME_MAX = 64
DISPLAY_NAME_MAX = 64
TITLE_MAX = 200


class RuleError(Exception):
    """A rule says no; ``messages.refusal`` words the reply."""


class IncidentEnded(RuleError):
    """The incident has ended: it is read-only until reopened."""

    def __init__(self, incident: Incident, what: str = "change") -> None:
        super().__init__(f"incident {incident.number} has ended")
        self.incident = incident
        self.what = what


def slugify(title: str) -> str:
    """lowercase a-z, 0-9 and single dashes; accents folded to ASCII."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    return slug


def channel_name(number: int, title: str, attempt: int = 0) -> str:
    """``incident-<n>-<slug>``, at most 64 characters; ``attempt`` > 0 adds a ``-<k>`` suffix."""
    prefix = f"incident-{number}"
    suffix = f"-{attempt + 1}" if attempt else ""
    room = CHANNEL_NAME_MAX - len(prefix) - len(suffix) - 1
    slug = slugify(title)[: max(room, 0)].strip("-")
    name = f"{prefix}-{slug}" if slug else prefix
    return f"{name}{suffix}"


def display_name(number: int, title: str) -> str:
    name = f"#{number} {title}"
    if len(name) <= DISPLAY_NAME_MAX:
        return name
    return name[: DISPLAY_NAME_MAX - 1].rstrip() + "…"


def clean_title(text: str) -> str:
    """One line, collapsed spaces, at most TITLE_MAX characters."""
    line = " ".join(text.split())
    if len(line) > TITLE_MAX:
        line = line[: TITLE_MAX - 1].rstrip() + "…"
    return line


def duration(incident: Incident, now: datetime) -> timedelta:
    end = incident.ended_at or now
    return end - incident.started_at


def require_active(incident: Incident, what: str = "change") -> None:
    """Raise when the incident is not active (ended ones are read-only until reopened)."""
    if incident.status == Status.ENDED:
        raise IncidentEnded(incident, what)


def reminder_due(last: datetime, minutes: int) -> datetime | None:
    """Next reminder after ``last`` for an interval of ``minutes`` (0 = off)."""
    if minutes <= 0:
        return None
    return last + timedelta(minutes=minutes)


# --- who may do what ---------------------------------------------------------------


def access(in_team: bool, in_channel: bool) -> Access:
    if in_channel:
        return Access.CHANNEL
    return Access.TEAM if in_team else Access.NONE


def required_access(command: str) -> Access:
    """The access ``command`` needs on an incident, from the command table; the strictest
    for words that are not about one incident (or not commands at all)."""
    spec = COMMANDS.get(command)
    return spec.access if spec is not None and spec.access is not None else Access.CHANNEL


def allowed(command: str, level: Access) -> bool:
    """May someone with ``level`` run ``command`` on an incident?"""
    return level >= required_access(command)


class Actor(StrEnum):
    """What kind of account did something. Only people act on incidents: a guest account
    (an outsider let into some channels) is refused, a bot or a deactivated account is
    ignored (no reply: nobody would read it, and two bots must not answer each other)."""

    PERSON = "person"
    GUEST = "guest"
    BOT = "bot"
    DEACTIVATED = "deactivated"
    UNKNOWN = "unknown"  # Mattermost does not know the account (any more)


GUEST_ROLE = "system_guest"


def actor(*, known: bool, is_bot: bool = False, roles: str = "", delete_at: int = 0) -> Actor:
    """The kind of account, from what Mattermost says of it now."""
    if not known:
        return Actor.UNKNOWN
    if delete_at:
        return Actor.DEACTIVATED
    if is_bot:
        return Actor.BOT
    if GUEST_ROLE in roles.split():
        return Actor.GUEST
    return Actor.PERSON
