"""The bot's lifecycle: open the store, log in, wire plugins to the event stream, stop cleanly."""

from __future__ import annotations

import asyncio
import signal

import structlog
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.core import Core
from incident_bot.app.directory import Directory
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import MattermostError, ServerUnavailable, Unauthorized
from incident_bot.chat.events import Event, Hello
from incident_bot.chat.models import User
from incident_bot.chat.stream import EventStream
from incident_bot.config import Settings
from incident_bot.domain import messages
from incident_bot.plugins.checklist import ChecklistPlugin
from incident_bot.plugins.framework import IncidentPluginManager
from incident_bot.plugins.handler import BotDriver, IncidentEventHandler
from incident_bot.plugins.incidents import IncidentPlugin
from incident_bot.plugins.playbooks import PlaybookPlugin
from incident_bot.store.sqlite import SQLiteStore

log = structlog.get_logger("incident_bot.bot")


class StartupError(Exception):
    """The bot cannot start; the message says why (for the operator)."""


class IncidentBot:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token = settings.token()
        self.store = SQLiteStore(settings.database)
        self.client = MattermostClient(settings.mattermost_url, self.token)
        self.stream: EventStream | None = None
        self.handler: IncidentEventHandler | None = None
        self.core: Core | None = None
        self._stopping = asyncio.Event()

    async def _login(self) -> User:
        """Who am I; waits for a server that is down rather than giving up."""
        delay = 1.0
        while True:
            try:
                return await self.client.get_me()
            except Unauthorized:
                raise StartupError("bot_token: Mattermost refused the token (401); check the bot's access token") from None
            except (ServerUnavailable, MattermostError) as exc:
                log.warning("mattermost.unreachable", url=self.settings.mattermost_url, error=type(exc).__name__, retry_in=delay)
            if self._stopping.is_set():
                raise StartupError("stopped before Mattermost was reachable")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 30.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        await self.store.open()
        try:
            me = await self._login()
            messages.set_bot_name(me.username)
            directory = Directory(self.client, me)
            self.core = core = Core(settings=self.settings, store=self.store, client=self.client, directory=directory)
            plugins = [IncidentPlugin(core), ChecklistPlugin(core), PlaybookPlugin(core)]
            manager = IncidentPluginManager(plugins)
            mm_settings = MMSettings(MATTERMOST_URL=self.settings.mattermost_url, BOT_TOKEN="unused")
            driver = BotDriver(core)
            manager.initialize(driver, mm_settings)
            self.handler = handler = IncidentEventHandler(driver, mm_settings, manager, core)
            self.stream = EventStream(
                self.settings.mattermost_url,
                self.token,
                on_event=self._on_event,
                on_connect=self._on_connect,
            )
            manager.start()
            log.info("bot.starting", user=me.username, database=str(self.settings.database))
            stream_task = asyncio.create_task(self.stream.run())
            stop_task = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({stream_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            log.info("bot.stopping", in_flight=handler.queues.pending)
            await self.stream.stop()
            finished = await handler.queues.drain(self.settings.shutdown_grace_seconds)
            stop_task.cancel()
            await asyncio.gather(stream_task, stop_task, return_exceptions=True)
            manager.stop()
            log.info("bot.stopped", clean=finished)
        finally:
            await self.client.close()
            await self.store.close()

    def request_stop(self) -> None:
        self._stopping.set()

    async def _on_event(self, event: Event) -> None:
        assert self.handler is not None
        if isinstance(event, Hello):
            return
        await self.handler.handle(event)

    async def _on_connect(self, hello: Hello, resumed: bool) -> None:
        log.info("bot.ready", connection=hello.connection_id, resumed=resumed, server=hello.server_version)
