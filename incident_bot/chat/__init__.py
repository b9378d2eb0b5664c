"""Mattermost transport: the chat port, async REST client, WebSocket event stream, typed events, retry policy."""

from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import (
    BadRequest,
    ChannelNameTaken,
    Forbidden,
    MattermostError,
    NotFound,
    RateLimited,
    ServerUnavailable,
    Unauthorized,
)
from incident_bot.chat.events import (
    Event,
    Hello,
    KeyedEvent,
    Malformed,
    OtherEvent,
    PostDeleted,
    Posted,
    PostEdited,
    ReactionAdded,
    ReactionRemoved,
    parse_frame,
)
from incident_bot.chat.models import Channel, FileInfo, Post, Reaction, Team, User
from incident_bot.chat.port import ChatPort
from incident_bot.chat.retry import Backoff, rate_limit_hint
from incident_bot.chat.stream import EventStream

__all__ = [
    "Backoff",
    "BadRequest",
    "Channel",
    "ChannelNameTaken",
    "ChatPort",
    "Event",
    "EventStream",
    "FileInfo",
    "Forbidden",
    "Hello",
    "KeyedEvent",
    "Malformed",
    "MattermostClient",
    "MattermostError",
    "NotFound",
    "OtherEvent",
    "Post",
    "PostDeleted",
    "PostEdited",
    "Posted",
    "RateLimited",
    "Reaction",
    "ReactionAdded",
    "ReactionRemoved",
    "ServerUnavailable",
    "Team",
    "Unauthorized",
    "User",
    "parse_frame",
    "rate_limit_hint",
]
