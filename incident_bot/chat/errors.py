"""Errors raised by the Mattermost client, built from the server's error JSON.

The server answers errors with ``{"id", "message", "detailed_error", "request_id",
"status_code"}``. ``str(error)`` names the call, the status, the error id and message; it
never holds the request's headers or the bot's token.
"""

from __future__ import annotations

import json
from typing import Any

CHANNEL_NAME_TAKEN_ID = "store.sql_channel.save_channel.exists.app_error"


class MattermostError(Exception):
    """A call to the Mattermost API failed.

    ``status`` is the HTTP status (0 when no answer came at all), ``error_id`` the
    server's stable error id (``api.context.permissions.app_error`` …), ``message`` its
    human text, ``request_id`` what to quote when reading the server's logs.
    """

    def __init__(
        self,
        status: int,
        message: str = "",
        *,
        error_id: str = "",
        request_id: str = "",
        detailed_error: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.message = message
        self.error_id = error_id
        self.request_id = request_id
        self.detailed_error = detailed_error
        self.method = method
        self.path = path
        super().__init__(status, message)

    def __str__(self) -> str:
        where = f"{self.method} {self.path} " if self.method or self.path else ""
        text = f"{where}-> {self.status}"
        if self.error_id:
            text += f" {self.error_id}"
        if self.message:
            text += f": {self.message}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class BadRequest(MattermostError):
    """400: the request was refused as invalid."""


class ChannelNameTaken(BadRequest):
    """400 on channel creation: a channel (maybe archived) already has that name in the team."""


class Unauthorized(MattermostError):
    """401: the token is missing, wrong, revoked or expired."""


class Forbidden(MattermostError):
    """403: the bot lacks the permission for this call."""


class NotFound(MattermostError):
    """404: no such object, or the bot may not see it."""


class ServerUnavailable(MattermostError):
    """Retries ran out on 5xx answers, timeouts or connection errors.

    ``status`` is the last HTTP status seen, or 0 when the last attempt got no answer.
    Callers treat this as "try again later": nothing says whether a write took effect.
    """


class RateLimited(ServerUnavailable):
    """429 answers kept coming after every retry the client allows."""


_BY_STATUS: dict[int, type[MattermostError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
}


def error_from_response(status: int, body: bytes | str, *, method: str = "", path: str = "") -> MattermostError:
    """Build the error for a non-2xx answer from its body (JSON or not)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    payload: Any = None
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error_id = str(payload.get("id") or "")
        message = str(payload.get("message") or "")
        request_id = str(payload.get("request_id") or "")
        detailed = str(payload.get("detailed_error") or "")
    else:
        # A proxy's HTML page or the rate limiter's plain "limit exceeded": keep it short.
        error_id, request_id, detailed = "", "", ""
        message = " ".join(text.split())[:200]
    cls = _BY_STATUS.get(status, MattermostError)
    if status == 400 and error_id == CHANNEL_NAME_TAKEN_ID:
        cls = ChannelNameTaken
    return cls(
        status,
        message,
        error_id=error_id,
        request_id=request_id,
        detailed_error=detailed,
        method=method,
        path=path,
    )
