"""Typed events parsed from Mattermost WebSocket frames.

A frame is ``{"event": name, "data": {...}, "broadcast": {...}, "seq": n}``; for posts and
reactions ``data.post`` / ``data.reaction`` hold the object as a JSON *string*.
``parse_frame`` never raises: replies to our own requests (``{"status": "OK",
"seq_reply": 1}``) give None, anything unusable gives ``Malformed``.

Dedupe keys (``dedupe_key``) name one user-visible happening, so the same frame
redelivered (reliable-WebSocket replay, REST catch-up) gives the same key:

- ``posted:{post_id}`` / ``deleted:{post_id}``: a post is created or deleted once.
- ``edited:{post_id}:{edit_at or update_at}``: each edit has its own time.
- ``reaction+:{user}:{post}:{emoji}:{stamp}`` with stamp = ``update_at or create_at``, and
  ``reaction-:{user}:{post}:{emoji}:{stamp}`` with stamp = ``delete_at or update_at or
  create_at``. Why not ``create_at`` alone: when a user ticks, unticks and ticks again,
  the server *upserts* the reaction row and keeps the first ``create_at`` in its
  database, so a reaction read back over REST during catch-up carries the old
  ``create_at`` and its key would collide with the first tick's. ``update_at`` is set
  anew on every add and every removal, and the value in the WebSocket event is the one
  stored, so WS and REST agree on the key and each tick/untick gets its own. A removal
  event carries ``create_at`` 0 (the server builds it from the URL), so ``create_at``
  alone would make every untick of one emoji the same key. Old servers without
  ``update_at`` fall back to ``create_at``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

# pydantic-core's JSON parser (Rust): frames and the post inside them parsed ~2.8x faster than
# json.loads (py-spy: json.loads was 2.6% of a `help`, the client's response decoding 1.0%); it refuses lone surrogate escapes,
# which Mattermost's encoder never writes.
from pydantic_core import from_json

from incident_bot.chat.models import Post, Reaction

RAW_LIMIT = 500
_T = TypeVar("_T")


class _Event(BaseModel):
    model_config = {"extra": "ignore"}

    seq: int | None = None


class Hello(_Event):
    """First frame of a fresh connection; ``connection_id`` is the reliable-WebSocket id."""

    connection_id: str = ""
    server_version: str = ""


class _PostEvent(_Event):
    post: Post


class _ReactionEvent(_Event):
    reaction: Reaction
    channel_id: str = ""


class Posted(_PostEvent):
    channel_type: str = ""  # "O", "P", "D", "G"
    channel_name: str = ""
    channel_display_name: str = ""
    sender_name: str = ""  # "@alice"
    team_id: str = ""
    mentions: list[str] = []  # user ids mentioned in the post

    @property
    def dedupe_key(self) -> str:
        return f"posted:{self.post.id}"


class PostEdited(_PostEvent):
    @property
    def dedupe_key(self) -> str:
        return f"edited:{self.post.id}:{self.post.edit_at or self.post.update_at}"


class PostDeleted(_PostEvent):
    @property
    def dedupe_key(self) -> str:
        return f"deleted:{self.post.id}"


class ReactionAdded(_ReactionEvent):
    @property
    def dedupe_key(self) -> str:
        r = self.reaction
        return f"reaction+:{r.user_id}:{r.post_id}:{r.emoji_name}:{r.update_at or r.create_at}"


class ReactionRemoved(_ReactionEvent):
    @property
    def dedupe_key(self) -> str:
        r = self.reaction
        stamp = r.delete_at or r.update_at or r.create_at
        return f"reaction-:{r.user_id}:{r.post_id}:{r.emoji_name}:{stamp}"


class OtherEvent(_Event):
    """Any event the bot has no type for (typing, status_change, channel_updated …)."""

    name: str
    data: dict[str, Any] = {}
    broadcast: dict[str, Any] = {}


class Malformed(_Event):
    """A frame that could not be understood; ``raw`` is cut to 500 characters.

    ``seq`` is set when the envelope itself was readable, so sequence tracking stays right.
    """

    raw: str
    reason: str
    seq: int | None = None


class Reply(_Event):
    """The server's answer to one of our WebSocket requests (``seq_reply`` = our seq)."""

    seq_reply: int
    status: str = ""
    error_id: str = ""
    error_message: str = ""


KeyedEvent = Posted | PostEdited | PostDeleted | ReactionAdded | ReactionRemoved
Event = Hello | Posted | PostEdited | PostDeleted | ReactionAdded | ReactionRemoved | OtherEvent | Malformed


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _truncate(text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)[:RAW_LIMIT]


def _load_object(text: str | bytes) -> Any:
    try:
        return from_json(text)
    except (ValueError, TypeError):
        raise _Bad("not JSON") from None


def _reply(obj: Any) -> Reply | None:
    if not isinstance(obj, dict) or "event" in obj or not isinstance(obj.get("seq_reply"), int):
        return None
    error = obj.get("error")
    if not isinstance(error, dict):
        error = {}
    return Reply(
        seq_reply=obj["seq_reply"],
        status=str(obj.get("status") or ""),
        error_id=str(error.get("id") or ""),
        error_message=str(error.get("message") or ""),
    )


def parse_reply(text: str | bytes) -> Reply | None:
    """The reply frame in ``text``, or None when it is anything else. Never raises."""
    try:
        return _reply(from_json(text))
    except Exception:  # noqa: BLE001 - "never raises": any frame we cannot read (even a RecursionError) is not a reply
        return None


def parse_frame(text: str | bytes) -> Event | None:
    """The typed event in one WebSocket text frame; None for replies; never raises."""
    return _guarded(text, lambda: _parse(_load_object(text), text))


def parse_message(text: str | bytes) -> Reply | Event | None:
    """``parse_reply`` if it is a reply, else ``parse_frame``, decoding the JSON once (the
    stream reads every frame this way: decoding it twice was a tenth of the loop's time
    per event in the profile). Never raises."""

    def parse() -> Reply | Event | None:
        obj = _load_object(text)
        reply = _reply(obj)
        return reply if reply is not None else _parse(obj, text)

    return _guarded(text, parse)


def _guarded(text: str | bytes, parse: Callable[[], _T]) -> _T | Malformed:
    try:
        return parse()
    except _Bad as bad:
        return Malformed(raw=_truncate(text), reason=bad.reason)
    except Exception as exc:  # noqa: BLE001 - a bug in parsing must not kill the stream; the frame is kept as Malformed
        return Malformed(raw=_truncate(text), reason=f"unexpected {type(exc).__name__}")


_KNOWN = {"hello", "posted", "post_edited", "post_deleted", "reaction_added", "reaction_removed"}


def _parse(obj: Any, text: str | bytes) -> Event | None:
    if not isinstance(obj, dict):
        raise _Bad(f"not a JSON object ({type(obj).__name__})")
    if "event" not in obj:
        if "seq_reply" in obj or "status" in obj:
            return None  # a reply to one of our requests, not an event
        raise _Bad("no event name")
    name = obj["event"]
    if not isinstance(name, str) or not name:
        raise _Bad("event name is not a string")
    seq = obj.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise _Bad("seq is not an integer")
    try:
        return _parse_event(name, obj, seq)
    except _Bad as bad:
        return Malformed(raw=_truncate(text), reason=f"{name}: {bad.reason}", seq=seq)


def _parse_event(name: str, obj: dict[str, Any], seq: int | None) -> Event:
    if "data" not in obj:
        raise _Bad("no data")
    data = obj["data"]
    if data is None and name not in _KNOWN:
        data = {}
    if not isinstance(data, dict):
        raise _Bad("data is not an object")
    broadcast = obj.get("broadcast")
    if not isinstance(broadcast, dict):
        broadcast = {}

    if name == "hello":
        return Hello(
            connection_id=_str(data.get("connection_id")),
            server_version=_str(data.get("server_version")),
            seq=seq,
        )
    if name == "posted":
        return Posted(
            post=_embedded(data, "post", Post),
            channel_type=_str(data.get("channel_type")),
            channel_name=_str(data.get("channel_name")),
            channel_display_name=_str(data.get("channel_display_name")),
            sender_name=_str(data.get("sender_name")),
            team_id=_str(data.get("team_id")) or _str(broadcast.get("team_id")),
            mentions=_mentions(data.get("mentions")),
            seq=seq,
        )
    if name == "post_edited":
        return PostEdited(post=_embedded(data, "post", Post), seq=seq)
    if name == "post_deleted":
        return PostDeleted(post=_embedded(data, "post", Post), seq=seq)
    if name in ("reaction_added", "reaction_removed"):
        reaction = _embedded(data, "reaction", Reaction)
        channel_id = _str(broadcast.get("channel_id")) or reaction.channel_id
        cls = ReactionAdded if name == "reaction_added" else ReactionRemoved
        return cls(reaction=reaction, channel_id=channel_id, seq=seq)
    return OtherEvent(name=name, data=data, broadcast=broadcast, seq=seq)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _embedded(data: dict[str, Any], field: str, model: type[Any]) -> Any:
    """data[field] as ``model``: a JSON string (what the server sends) or an object."""
    if field not in data:
        raise _Bad(f"data.{field} missing")
    value = data[field]
    if isinstance(value, str):
        try:
            value = from_json(value)
        except ValueError:
            raise _Bad(f"data.{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise _Bad(f"data.{field} is not an object")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise _Bad(f"data.{field} invalid at {where or '?'}: {first.get('type', 'error')}") from None


def _mentions(value: Any) -> list[str]:
    """data.mentions is a JSON string of user ids; anything odd counts as no mentions."""
    if isinstance(value, str):
        try:
            value = from_json(value)
        except ValueError:
            return []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
