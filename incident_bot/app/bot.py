"""The bot's lifecycle: open the store, log in, wire plugins to the event stream, stop cleanly."""

from __future__ import annotations

import asyncio
import random
import signal

import structlog
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.core import Core
from incident_bot.app.directory import Directory
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import MattermostError, ServerUnavailable, Unauthorized
from incident_bot.app.catchup import CatchUp, Cursor, wall_ms
from incident_bot.chat.events import Event, Hello, PostDeleted, PostEdited, Posted, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Post, User
from incident_bot.chat.stream import EventStream
from incident_bot.config import Settings
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
        # Live events wait here while a catch-up reads what came before them.
        self._gate: list[Event] | None = None
        self._catchups = 0
        # Work that failed because Mattermost did: key -> (time to read again from, version).
        self._retry: dict[str, tuple[int, int]] = {}
        self._retry_version = 0
        self._retry_wakeup = asyncio.Event()

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
            try:
                me = await self._login()
            except StartupError:
                if self._stopping.is_set():  # asked to stop while waiting for Mattermost: a clean stop
                    log.info("bot.stopped", clean=True, connected=False)
                    return
                raise
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
                on_gap=self._on_gap,
            )
            self.cursor = Cursor(core)
            await self.cursor.load()
            handler.tracker = self.cursor
            handler.on_unfinished = self._on_unfinished
            handler.resume_start = incidents.incidents.resume_command
            core.on_stale = self._retry_wakeup.set
            self._repair_stale = incidents.incidents.repair_stale
            self.catchup = CatchUp(core, self.cursor, feed=handler.handle, submit=handler.queues.submit, reconcile=self._reconcile)
            self.catchup.on_unfinished = self._on_unfinished
            self._checklists = checklist.checklists
            self._timeline = timeline.timeline
            manager.start()
            try:
                resumed = await incidents.incidents.resume_unfinished()
                if resumed:
                    log.info("bot.resumed_starts", incidents=resumed)
            except Exception as exc:  # noqa: BLE001 - finished when its command is read again
                log.warning("bot.resume_failed", error=type(exc).__name__, detail=str(exc)[:200])
            log.info("bot.starting", user=me.username, database=str(self.settings.database))
            stream_task = asyncio.create_task(self.stream.run())
            reminders_task = asyncio.create_task(timeline.timeline.run_reminders(self._stopping))
            cursor_task = asyncio.create_task(self.cursor.run(self._stopping))
            retry_task = asyncio.create_task(self._retry_loop())
            self._spawn(self._repair(incidents.incidents.repair))
            stop_task = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({stream_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            log.info("bot.stopping", in_flight=handler.queues.pending)
            await self.stream.stop()
            finished = await handler.queues.drain(self.settings.shutdown_grace_seconds)
            stop_task.cancel()
            retry_task.cancel()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(stream_task, stop_task, reminders_task, cursor_task, retry_task, *self._background, return_exceptions=True)
            await self.cursor.flush()  # never past work left unfinished: read again next start
            manager.stop()
            log.info("bot.stopped", clean=finished)
        finally:
            await self.client.close()
            await self.store.close()

    def _spawn(self, coro) -> asyncio.Task[object]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _repair(self, repair) -> None:
        try:
            count = await repair()
            log.info("bot.repaired", incidents=count)
        except Exception as exc:  # noqa: BLE001 - repaired at the next start
            log.warning("bot.repair_failed", error=type(exc).__name__, detail=str(exc)[:200])

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
        if self._gate is not None:
            self._gate.append(event)  # after what catch-up feeds, in arrival order
            return
        await self.handler.handle(event)

    async def _on_connect(self, hello: Hello, resumed: bool) -> None:
        log.info("bot.ready", connection=hello.connection_id, resumed=resumed, server=hello.server_version)
        reason = "reconnect" if self._connected_once else "start"
        self._connected_once = True
        if resumed:
            return
        if self.cursor.value is None and self.cursor.safe is None:  # first start ever: nothing to catch up
            self.cursor.see(wall_ms())
            await self.cursor.flush()
            return
        self._catch_up(reason)

    async def _on_gap(self, expected: int, received: int) -> None:
        """Frames the server sent never arrived: read them over REST before the next one is handled."""
        log.warning("bot.gap", expected=expected, received=received)
        self._catch_up("gap")

    def _catch_up(self, reason: str, since: int | None = None) -> asyncio.Task[object]:
        """Start a catch-up now; live events wait until it has fed what came before them."""
        if since is None:
            since = self.cursor.safe
        self._catchups += 1
        if self._gate is None:
            self._gate = []
        return self._spawn(self._run_catchup(reason, since))

    async def _run_catchup(self, reason: str, since: int | None) -> bool:
        complete = False
        try:
            complete = await self.catchup.run(reason, since)
        except Exception as exc:  # noqa: BLE001 - tried again below
            log.warning("catchup.crashed", reason=reason, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            self._catchups -= 1
            if self._catchups == 0 and self._gate is not None:
                waiting, self._gate = self._gate, None
                for event in waiting:
                    await self.handler.handle(event)
        if not complete and since is not None:
            self._on_unfinished(f"catchup:{reason}", since)
        return complete

    def _on_unfinished(self, key: str, ms: int) -> None:
        """Something could not be applied because Mattermost failed: read it again later."""
        self._retry_version += 1
        previous = self._retry.get(key)
        self._retry[key] = (min(ms, previous[0]) if previous else ms, self._retry_version)
        self.cursor.hold(f"retry:{key}", ms)  # one hold per key in _retry, released when it leaves
        if previous is not None:
            self.cursor.release(f"retry:{key}")
        self._retry_wakeup.set()

    async def _retry_loop(self) -> None:
        """While something failed because Mattermost did: wait (backing off), then read it
        again from its time, and repair channels whose edits failed."""
        assert self.core is not None
        delay = 2.0
        while True:
            await self._retry_wakeup.wait()
            self._retry_wakeup.clear()
            while self._retry or self.core.stale:
                await asyncio.sleep(random.uniform(delay / 2, delay))
                ok = True
                if self.core.stale:
                    ok = await self._repair_stale()
                if self._retry:
                    snapshot = dict(self._retry)
                    since = min(ms for ms, _ in snapshot.values())
                    log.info("bot.retrying", items=len(snapshot), since=since)
                    if await self._catch_up("retry", since):
                        for key, (_, version) in snapshot.items():
                            if self._retry.get(key, (0, -1))[1] == version:  # not failed again meanwhile
                                del self._retry[key]
                                self.cursor.release(f"retry:{key}")
                    else:
                        ok = False
                delay = 2.0 if ok else min(delay * 2, 60.0)

    async def _reconcile(self, post: Post) -> None:
        await self._checklists.reconcile(post.id)
        if post.has_reactions or await self._on_timeline(post):  # a 📌 added, or one taken off
            await self._timeline.reconcile_pins(post)

    async def _on_timeline(self, post: Post) -> bool:
        async with self.store.transaction() as tx:
            incident = await tx.get_incident_by_channel(post.channel_id)
            return incident is not None and await tx.get_timeline_by_post(incident.number, post.id) is not None
