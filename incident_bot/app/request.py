"""One command from a person as the use cases see it, and the refusal that ends one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from incident_bot.chat.events import Posted
from incident_bot.chat.models import Post
from incident_bot.domain.commands import Outcome
from incident_bot.domain.models import utcnow


class Applied(StrEnum):
    """What became of a reaction, an edit or a recovered command (logged as ``outcome``)."""

    IGNORED_BOT = "ignored:bot"
    DUPLICATE = "duplicate"
    NOT_AN_ITEM = "ignored:not-an-item"
    NOT_A_MEMBER = "ignored:not-a-member"
    REFUSED_ENDED = "refused:ended"
    UNCHANGED = "unchanged"
    CHECKED = "checked"
    KEPT_OTHER_TICK = "kept:other-tick"
    UNCHECKED = "unchecked"
    IGNORED = "ignored"
    REPAIRED = "repaired"
    POST_GONE = "ignored:post-gone"
    NOT_AN_INCIDENT_CHANNEL = "ignored:not-an-incident-channel"
    PINNED = "pinned"
    KEPT_OTHER_PIN = "kept:other-pin"
    UNPINNED = "unpinned"
    DELETED = "deleted"
    EDITED = "edited"
    FOUND = "found"
    ANSWERED = "answered"
    RESUMED = "resumed"
    ERROR = "error"  # the handler failed (logged with the error type)


class UserError(Exception):
    """Ends a use case with this reply; nothing was changed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Answer(Protocol):
    """How the private answer to a command that came without a post (the slash command,
    a dialog) reaches the person: only they see it."""

    async def private(self, text: str) -> None: ...


@dataclass
class Collected:
    """An ``Answer`` kept for the HTTP response (a button click, a dialog submission)."""

    texts: list[str] = field(default_factory=list)

    async def private(self, text: str) -> None:
        self.texts.append(text)

    def joined(self) -> str | None:
        return "\n\n".join(self.texts) or None


@dataclass
class Request:
    """One command from a person, as the use cases see it."""

    key: str  # dedupe key of the event that carried it
    post: Post
    user_id: str
    channel_id: str
    channel_type: str  # O, P, D, G
    team_id: str  # "" in a DM
    late_by: timedelta | None = None  # set when handled after an outage (catch-up)
    outcome: Outcome = Outcome.OK
    incident: int | None = None
    replied: bool = False
    noted: bool = False  # its reply is recorded in the database (by this run, in this request)
    command: str = ""  # the command word being run (set by the Runner)
    # Set when the command came without a post (slash command, dialog): ``post`` is then a
    # stand-in without id, private answers go through ``answer``, the others are posted.
    answer: Answer | None = None
    # With ``answer``: every reply of this request is for the requester alone, even a change
    # others need not see (Join by button: "Added you to …" is news to the clicker only).
    answer_privately: bool = False

    @classmethod
    def of(cls, post: Post, channel_type: str, team_id: str | None, late_by: timedelta | None = None) -> Request:
        """The request a post carries; its key is the post's dedupe key."""
        return cls(
            key=Posted(post=post).dedupe_key,
            post=post,
            user_id=post.user_id,
            channel_id=post.channel_id,
            channel_type=channel_type,
            team_id=team_id or "",
            late_by=late_by,
        )

    @property
    def is_dm(self) -> bool:
        return self.channel_type in ("D", "G")

    @property
    def thread_root(self) -> str:
        return self.post.root_id or self.post.id


class Clock:
    """UTC now, optionally shifted.

    ``INCIDENT_BOT_CLOCK_SKEW_FILE`` names a file holding a number of seconds to add to
    the real time; tests use it to move the bot's clock (reminders, durations) without
    waiting. Unset in production, where ``now()`` touches no file.
    """

    def __init__(self, skew_file: str | None = None) -> None:
        self.skew_file = skew_file if skew_file is not None else os.environ.get("INCIDENT_BOT_CLOCK_SKEW_FILE")

    def offset(self) -> timedelta:
        if not self.skew_file:
            return timedelta(0)
        try:
            with open(self.skew_file, encoding="utf-8") as handle:  # a few bytes, test runs only
                return timedelta(seconds=float(handle.read().strip() or 0))
        except (OSError, ValueError):
            return timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset()
