"""mmpy_bot, extended: reaction listeners, typed events, and an event handler on our async transport.

mmpy_bot's own ``EventHandler`` only knows ``posted`` and drives a synchronous driver.
We keep its model — ``Plugin`` classes, ``@listen_to`` message listeners, a
``PluginManager`` that collects them — and add ``@listen_to_reaction`` plus an
``IncidentEventHandler`` that takes typed events from our WebSocket stream.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmpy_bot.function import Function, MessageFunction
from mmpy_bot.plugins import PluginManager
from mmpy_bot.wrappers import Message

from incident_bot.app.request import Request
from incident_bot.chat.events import PostDeleted, Posted, PostEdited, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Post, Reaction


class IncidentMessage(Message):
    """A posted message addressed to the bot: mmpy_bot's Message plus the request it carries."""

    def __init__(self, event: Posted, request: Request, command_text: str, bot_id: str) -> None:
        super().__init__(
            {
                "event": "posted",
                "data": {
                    "post": event.post.model_dump(),
                    "channel_type": event.channel_type,
                    "channel_name": event.channel_name,
                    "sender_name": event.sender_name,
                    "team_id": event.team_id,
                    # A DM or a leading mention addresses the bot, whatever the server listed.
                    "mentions": [*event.mentions, bot_id],
                },
                "seq": event.seq,
            }
        )
        self.request = request
        self.command_text = command_text

    @property
    def text(self) -> str:  # mmpy_bot sets a plain attribute; ours is the text after the mention
        return self.command_text


@dataclass
class ReactionEvent:
    """A reaction added or removed, as reaction listeners receive it."""

    event: ReactionAdded | ReactionRemoved
    key: str
    added: bool

    @property
    def reaction(self) -> Reaction:
        return self.event.reaction

    @property
    def emoji(self) -> str:
        return self.event.reaction.emoji_name


class ReactionFunction(Function):
    """A Plugin method that runs when a reaction whose emoji name matches is added or removed."""

    def __init__(self, *args: Any, added: bool | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.added = added
        self.name = self.function.__qualname__

    def __call__(self, event: ReactionEvent, *args: Any) -> Any:
        return self.function(self.plugin, event, *args)


def listen_to_reaction(emoji_regexp: str, *, added: bool | None = None, **metadata: Any) -> Callable[[Any], ReactionFunction]:
    """Like mmpy_bot's ``listen_to``, for reactions: ``added=True`` only additions, ``False``
    only removals, ``None`` (the default) both."""

    def wrapped(func: Any) -> ReactionFunction:
        return ReactionFunction(func, matcher=re.compile(emoji_regexp), added=added, **metadata)

    return wrapped


@dataclass
class PostChangeEvent:
    """A post edited or deleted, as post-change listeners receive it."""

    event: PostEdited | PostDeleted
    key: str

    @property
    def post(self) -> Post:
        return self.event.post

    @property
    def deleted(self) -> bool:
        return isinstance(self.event, PostDeleted)


class PostChangeFunction(Function):
    """A Plugin method that runs when a post is edited or deleted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = self.function.__qualname__

    def __call__(self, event: PostChangeEvent, *args: Any) -> Any:
        return self.function(self.plugin, event, *args)


def listen_to_post_change(**metadata: Any) -> Callable[[Any], PostChangeFunction]:
    """Listen to ``post_edited`` and ``post_deleted`` events."""

    def wrapped(func: Any) -> PostChangeFunction:
        return PostChangeFunction(func, matcher=re.compile(".*"), **metadata)

    return wrapped


class IncidentPluginManager(PluginManager):
    """mmpy_bot's PluginManager that also collects reaction listeners."""

    def __init__(self, plugins: Any) -> None:
        super().__init__(plugins)
        self.reaction_listeners: dict[re.Pattern[str], list[ReactionFunction]] = defaultdict(list)
        self.post_change_listeners: list[PostChangeFunction] = []

    def initialize(self, driver: Any, settings: Any) -> None:
        """mmpy_bot's registration loop, knowing one more listener type."""
        for plugin in self.plugins:
            plugin.initialize(driver, self, settings)
            for name in dir(plugin):
                attribute = getattr(plugin, name)
                if not isinstance(attribute, Function):
                    continue
                for function in [attribute, *attribute.siblings]:
                    function.plugin = plugin
                    if isinstance(function, ReactionFunction):
                        self.reaction_listeners[function.matcher].append(function)
                    elif isinstance(function, PostChangeFunction):
                        self.post_change_listeners.append(function)
                    elif isinstance(function, MessageFunction):
                        self.message_listeners[function.matcher].append(function)
                    else:
                        raise TypeError(f"{type(plugin).__name__}.{name}: unsupported listener {type(function)}")

    def reactions_for(self, emoji: str, added: bool) -> list[ReactionFunction]:
        return [
            function
            for matcher, functions in self.reaction_listeners.items()
            if matcher.fullmatch(emoji)
            for function in functions
            if function.added in (None, added)
        ]
