"""mmpy_bot's EventHandler on our pipeline: finds the listeners an event matches and calls them."""

from __future__ import annotations

from typing import Any

from mmpy_bot.event_handler import EventHandler
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.request import Request
from incident_bot.chat.events import PostDeleted, Posted, PostEdited, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import User
from incident_bot.plugins.framework import IncidentMessage, IncidentPluginManager, PostChangeEvent, ReactionEvent


class BotDriver:
    """What mmpy_bot's Plugin and MessageFunction read from ``plugin.driver``."""

    def __init__(self, bot: User) -> None:
        self.user_id = bot.id
        self.username = bot.username
        self.threadpool = None  # every listener of ours is a coroutine


class IncidentEventHandler(EventHandler):
    """The pipeline's listeners (``app.pipeline.Listeners``): mmpy_bot's listener matching,
    fed by our pipeline instead of its synchronous driver."""

    def __init__(self, driver: BotDriver, settings: MMSettings, plugin_manager: IncidentPluginManager) -> None:
        super().__init__(driver, settings=settings, plugin_manager=plugin_manager)  # BotDriver stands in for its Driver
        self.manager = plugin_manager
        self.bot_id = driver.user_id

    def start(self) -> None:  # mmpy_bot's blocking entry point is not used
        raise RuntimeError("IncidentEventHandler is driven by incident_bot.app.pipeline")

    async def command(self, req: Request, text: str, event: Posted) -> None:
        message = IncidentMessage(event, req, text, self.bot_id)
        if self._should_ignore(message):
            return
        matched: list[tuple[Any, list[str]]] = [
            (function, [group for group in match.groups() if group])
            for matcher, functions in self.manager.message_listeners.items()
            if (match := matcher.search(text))
            for function in functions
        ]
        for function, groups in matched:
            await function.plugin.call_function(function, message, groups=groups)

    def wants_reaction(self, emoji: str, added: bool) -> bool:
        return bool(self.manager.reactions_for(emoji, added))

    async def reaction(self, key: str, event: ReactionAdded | ReactionRemoved) -> None:
        added = isinstance(event, ReactionAdded)
        wrapped = ReactionEvent(event=event, key=key, added=added)
        for function in self.manager.reactions_for(event.reaction.emoji_name, added):
            await function.plugin.call_function(function, wrapped)

    async def post_change(self, key: str, event: PostEdited | PostDeleted) -> None:
        wrapped = PostChangeEvent(event=event, key=key)
        for function in self.manager.post_change_listeners:
            await function.plugin.call_function(function, wrapped)
