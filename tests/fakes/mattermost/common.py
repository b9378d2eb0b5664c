"""Shared by the fake's parts: constants, ids, the real server's error JSON."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

API = "/api/v4"
SERVER_VERSION = "10.11.0.0.fake.false"
MAX_POST_RUNES = 16383
DEAD_QUEUE_SIZE = 128  # events kept per connection for resume, as the real server
PENDING_POST_ID_TTL = 30.0  # seconds a pending_post_id makes POST /posts idempotent (real: 30 s)
SEND_QUEUE_SIZE = 256  # events queued for a disconnected connection before it is dropped
CHANNEL_NAME_MAX = 64
CHANNEL_DISPLAY_NAME_MAX = 64
CHANNEL_HEADER_MAX = 1024
CHANNEL_PURPOSE_MAX = 250

_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"  # Mattermost's base32 alphabet
ID_RE = re.compile(r"^[a-z0-9]{26}$")
# The stricter, older rule (must start and end with a letter or digit); newer servers also
# accept a trailing - or _, so a name valid here is valid there.
CHANNEL_NAME_RE = re.compile(r"^[a-z0-9]+([a-z\-_0-9]+|(__)?)[a-z0-9]+$")
EMOJI_RE = re.compile(r"^[a-zA-Z0-9\-+_]+$")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9.\-_]{0,63}$")
MENTION_RE = re.compile(r"(?<![A-Za-z0-9_.\-@])@([A-Za-z0-9_.\-]+)")

MESSAGES: dict[str, str] = {
    "api.context.session_expired.app_error": "Invalid or expired session, please login again.",
    "api.context.permissions.app_error": "You do not have the appropriate permissions.",
    "api.context.invalid_url_param.app_error": "Invalid or missing {name} parameter in request URL.",
    "api.context.invalid_body_param.app_error": "Invalid or missing {name} in request body.",
    "api.context.invalid_param.app_error": "Invalid {name} parameter.",
    "api.context.404.app_error": "Sorry, we could not find the page.",
    "api.context.405.app_error": "Method not allowed.",
    "app.user.missing_account.const": "Unable to find the user.",
    "app.user.get_by_username.app_error": "Unable to find an existing account matching your username.",
    "app.team.get.find.app_error": "Unable to find the existing team.",
    "app.team.get_by_name.missing.app_error": "Unable to find the existing team.",
    "app.team.get_member.missing.app_error": "No team member found for that user ID and team ID.",
    "app.channel.get.existing.app_error": "Unable to find the existing channel.",
    "app.channel.get_by_name.missing.app_error": "Channel does not exist.",
    "app.channel.get_member.missing.app_error": "No channel member found for that user ID and channel ID.",
    "app.channel.get_channels.not_found.app_error": "No channels were found.",
    "store.sql_channel.save_channel.exists.app_error": "A channel with that name already exists on the same team.",
    "model.channel.is_valid.2_or_more.app_error": "Name must be 2 or more lowercase alphanumeric characters.",
    "model.channel.is_valid.name.app_error": "Invalid channel name. User ids are not permitted in channel name for non-direct message channels.",
    "model.channel.is_valid.display_name.app_error": "Invalid display name.",
    "model.channel.is_valid.header.app_error": "Invalid header.",
    "model.channel.is_valid.purpose.app_error": "Invalid purpose.",
    "model.channel.is_valid.type.app_error": "Invalid type.",
    "api.channel.create_channel.direct_channel.app_error": "Must use createDirectChannel API service for direct message channel creation.",
    "api.channel.create_direct_channel.invalid_user.app_error": "Invalid user ID for direct channel creation.",
    "api.channel.add_user_to_channel.type.app_error": "Can not add user to this channel type.",
    "api.channel.remove_user_from_channel.app_error": "Can not remove user from this channel type.",
    "app.post.get.app_error": "Unable to get post.",
    "model.post.is_valid.msg.app_error": "Invalid Message.",
    "api.post.create_post.root_id.app_error": "Invalid RootId parameter.",
    "api.post.create_post.channel_root_id.app_error": "Invalid ChannelId for RootId parameter.",
    "api.reaction.save_reaction.user_id.app_error": "You cannot save reaction for the other user.",
    "app.file_info.get.app_error": "Unable to get the file info.",
    "api.file.upload_file.read_request.app_error": "Unable to upload file(s). Error reading or parsing request data.",
    "api.web_socket_router.no_action.app_error": "No websocket action.",
    "api.web_socket_router.bad_seq.app_error": "Invalid sequence for WebSocket message.",
    "api.web_socket_router.not_authenticated.app_error": "Connection is not authenticated. Please log in and try again.",
    "api.web_socket_router.bad_action.app_error": "Unknown WebSocket action.",
    "app.fake.injected_fault.app_error": "Injected fault.",
    "api.post.deduplicate_create_post.pending": "Rejected post since another client made the same request.",
}


def new_id() -> str:
    """A fresh 26-character id in Mattermost's alphabet."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(
    status: int, error_id: str, message: str | None = None, request_id: str | None = None, **params: Any
) -> dict[str, Any]:
    """The real server's AppError JSON."""
    text = message if message is not None else MESSAGES.get(error_id, error_id)
    if params:
        try:
            text = text.format(**params)
        except (KeyError, IndexError):
            pass
    return {
        "id": error_id,
        "message": text,
        "detailed_error": "",
        "request_id": request_id or new_id(),
        "status_code": status,
    }


class ApiFailure(Exception):
    """Raised by handlers and setup helpers; becomes an error response."""

    def __init__(self, status: int, error_id: str, **params: Any) -> None:
        super().__init__(f"{status} {error_id} {params or ''}")
        self.status = status
        self.error_id = error_id
        self.params = params


def forbidden() -> ApiFailure:
    return ApiFailure(403, "api.context.permissions.app_error")


def bad_url(name: str) -> ApiFailure:
    return ApiFailure(400, "api.context.invalid_url_param.app_error", name=name)


def bad_body(name: str) -> ApiFailure:
    return ApiFailure(400, "api.context.invalid_body_param.app_error", name=name)


def mentioned_usernames(message: str) -> set[str]:
    """Lowercased ``@name`` words of a message, with trailing ``. _ -`` also stripped."""
    names: set[str] = set()
    for match in MENTION_RE.finditer(message):
        name = match.group(1).lower()
        names.add(name)
        names.add(name.rstrip("._-"))
    return names


def token_from(request: Any) -> str | None:
    """The caller's token: ``Authorization: Bearer``/``Token``, or the MMAUTHTOKEN cookie."""
    header = request.headers.get("Authorization", "")
    if len(header) > 7 and header[:6].upper() == "BEARER":
        return header[7:].strip()
    if len(header) > 6 and header[:5].lower() == "token":
        return header[6:].strip()
    cookie = request.cookies.get("MMAUTHTOKEN")
    return cookie or None
