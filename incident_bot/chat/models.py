"""Pydantic models of the Mattermost objects the bot reads and writes (API v4 payloads).

Every model ignores fields it does not name, so a newer server adding fields never breaks
parsing. Timestamps are what Mattermost sends: integer milliseconds since the epoch (UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, field_validator


class _MMModel(BaseModel):
    model_config = {"extra": "ignore"}


class User(_MMModel):
    id: str
    username: str
    is_bot: bool = False
    roles: str = ""  # system roles, space-separated ("system_user", "system_admin" …)
    delete_at: int = 0
    first_name: str = ""
    last_name: str = ""


class Team(_MMModel):
    id: str
    name: str
    display_name: str = ""


class Channel(_MMModel):
    id: str
    team_id: str = ""  # empty for direct and group channels
    name: str
    display_name: str = ""
    type: str  # "O" public, "P" private, "D" direct, "G" group
    header: str = ""
    purpose: str = ""
    creator_id: str = ""
    delete_at: int = 0  # set once the channel is archived


class Post(_MMModel):
    id: str
    channel_id: str
    user_id: str
    root_id: str = ""
    message: str = ""
    create_at: int
    update_at: int = 0
    edit_at: int = 0
    delete_at: int = 0
    is_pinned: bool = False
    has_reactions: bool = False  # the server leaves it out when false
    type: str = ""  # "" for a user's post; "system_*" for system messages
    original_id: str = ""  # set on edit-history rows, which `?since=` also returns
    props: dict[str, Any] = {}
    file_ids: list[str] = []

    # The server sends null for an empty props map or file list on some paths.
    @field_validator("props", mode="before")
    @classmethod
    def _null_props(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("file_ids", mode="before")
    @classmethod
    def _null_file_ids(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def created(self) -> datetime:
        """When the post was created, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.create_at / 1000, tz=UTC)


class Reaction(_MMModel):
    user_id: str
    post_id: str
    emoji_name: str
    create_at: int = 0
    # update_at changes on every (re-)add and on removal; the server keeps create_at of the
    # first add when a reaction is removed and added again (see events.ReactionAdded).
    update_at: int = 0
    delete_at: int = 0
    channel_id: str = ""


class FileInfo(_MMModel):
    id: str
    name: str
    size: int = 0
    mime_type: str = ""
