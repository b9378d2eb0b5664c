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
from incident_bot.app.catchup import CatchUp, Cursor
from incident_bot.chat.events import Event, Hello, PostDeleted, PostEdited, Posted, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Post, User
from incident_bot.chat.stream import EventStream
from incident_bot.config import Settings
from incident_bot.domain import messages
from incident_bot.plugins.checklist import ChecklistPlugin
from incident_bot.plugins.framework import IncidentPluginManager
from incident_bot.plugins.handler import BotDriver, IncidentEventHandler
from incident_bot.plugins.incidents import IncidentPlugin
from incident_bot.plugins.playbooks import PlaybookPlugin
from incident_bot.plugins.timeline import TimelinePlugin
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
        self._background: set[asyncio.Task[object]] = set()
        self._connected_once = False

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
            directory = Directory(self.client, me, self.store)
            self.core = core = Core(settings=self.settings, store=self.store, client=self.client, directory=directory)
            incidents, checklist, timeline = IncidentPlugin(core), ChecklistPlugin(core), TimelinePlugin(core)
            plugins = [incidents, checklist, PlaybookPlugin(core), timeline]
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
            self.cursor = Cursor(core)
            await self.cursor.load()
            self.catchup = CatchUp(core, self.cursor, feed=handler.handle, submit=handler.queues.submit, reconcile=self._reconcile)
            self._checklists = checklist.checklists
            self._timeline = timeline.timeline
            manager.start()
            try:
                resumed = await incidents.incidents.resume_unfinished()
                if resumed:
                    log.info("bot.resumed_starts", incidents=resumed)
            except Exception as exc:  # noqa: BLE001 - retried at the next start
                log.warning("bot.resume_failed", error=type(exc).__name__, detail=str(exc)[:200])
            log.info("bot.starting", user=me.username, database=str(self.settings.database))
            stream_task = asyncio.create_task(self.stream.run())
            reminders_task = asyncio.create_task(timeline.timeline.run_reminders(self._stopping))
            cursor_task = asyncio.create_task(self.cursor.run(self._stopping))
            stop_task = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({stream_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            log.info("bot.stopping", in_flight=handler.queues.pending)
            await self.stream.stop()
            finished = await handler.queues.drain(self.settings.shutdown_grace_seconds)
            stop_task.cancel()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(stream_task, stop_task, reminders_task, cursor_task, *self._background, return_exceptions=True)
            await self.cursor.flush()
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
        if isinstance(event, (Posted, PostEdited, PostDeleted)):
            self.cursor.see(max(event.post.update_at, event.post.create_at))
        elif isinstance(event, (ReactionAdded, ReactionRemoved)):
            self.cursor.see(max(event.reaction.update_at, event.reaction.create_at, event.reaction.delete_at))
        await self.handler.handle(event)

    async def _on_connect(self, hello: Hello, resumed: bool) -> None:
        log.info("bot.ready", connection=hello.connection_id, resumed=resumed, server=hello.server_version)
        reason = "reconnect" if self._connected_once else "start"
        self._connected_once = True
        if resumed:
            return
        if self.cursor.value is None:  # first start ever: nothing to catch up, start counting now
            self.cursor.see(int(self.core.now().timestamp() * 1000) if self.core else 0)
            await self.cursor.flush()
            return
        task = asyncio.create_task(self.catchup.run(reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconcile(self, post: Post) -> None:
        await self._checklists.reconcile(post.id)
        await self._timeline.reconcile_pins(post)
