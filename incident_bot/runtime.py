"""The composition root: log in, build store, chat, use cases, plugins, pipeline and stream
by their constructors, run until asked to stop, and stop cleanly."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Coroutine
from typing import Any

import structlog
from mmpy_bot.settings import Settings as MMSettings

from incident_bot.app.backlog import Backlog
from incident_bot.app.catchup import CatchUp
from incident_bot.app.channel import ChannelWriter
from incident_bot.app.checklists import Checklists
from incident_bot.app.core import Core
from incident_bot.app.cursor import Cursor
from incident_bot.app.directory import Directory
from incident_bot.app.incidents import Incidents
from incident_bot.app.observe import AppObserver
from incident_bot.app.outbox import Outbox
from incident_bot.app.pipeline import Pipeline
from incident_bot.app.playbooks import Playbooks
from incident_bot.app.reports import Reports
from incident_bot.app.resync import Resync
from incident_bot.app.retention import Retention
from incident_bot.app.runner import Help, Runner
from incident_bot.app.teams import Teams
from incident_bot.app.timeline import Timeline
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import MattermostError, Unauthorized
from incident_bot.chat.models import User
from incident_bot.chat.port import ChatPort
from incident_bot.chat.retry import Backoff
from incident_bot.chat.stream import EventStream
from incident_bot.config import Settings
from incident_bot.domain.models import Status
from incident_bot.ops.health import Health, report_degraded
from incident_bot.ops.http import OpsServer
from incident_bot.ops.metrics import Metrics
from incident_bot.plugins.checklist import ChecklistPlugin
from incident_bot.plugins.framework import IncidentPluginManager
from incident_bot.plugins.handler import BotDriver, IncidentEventHandler
from incident_bot.plugins.incidents import IncidentPlugin
from incident_bot.plugins.playbooks import PlaybookPlugin
from incident_bot.plugins.timeline import TimelinePlugin
from incident_bot.store.base import Store
from incident_bot.store.factory import describe, open_store

log = structlog.get_logger("incident_bot.bot")

LOGIN_FIRST_WAIT = 1.0
LOGIN_MAX_WAIT = 30.0


class StartupError(Exception):
    """The bot cannot start; the message says why (for the operator)."""


class TokenRefused(StartupError):
    """Mattermost refused the token: restarting will not help (the CLI exits 1 for this)."""


class Bot:
    """Everything the running bot is made of, wired once the bot knows who it is."""

    def __init__(self, settings: Settings, store: Store, chat: ChatPort, me: User, observer: AppObserver | None = None) -> None:
        self.settings = settings
        self.core = core = Core(settings, store, chat, Directory(chat, me, store), observer=observer)
        self.cursor = Cursor(store)
        self.backlog = Backlog(self.cursor)
        self.outbox = Outbox(core, self.backlog)
        channel = ChannelWriter(core, self.backlog, self.outbox)
        teams = Teams(core)
        runner = Runner(core)
        self.incidents = Incidents(core, channel, teams, self.backlog, self.outbox)
        checklists = Checklists(core, channel, self.outbox)
        self.timeline = Timeline(core, channel, self.outbox)
        plugins = [
            IncidentPlugin(runner, self.incidents, Help(core)),
            ChecklistPlugin(runner, checklists, settings.check_emojis),
            PlaybookPlugin(runner, Playbooks(core, teams)),
            TimelinePlugin(runner, self.timeline, Reports(core, teams), settings.timeline_emoji),
        ]
        self.manager = IncidentPluginManager(plugins)
        mm_settings = MMSettings(MATTERMOST_URL=settings.mattermost_url, BOT_TOKEN="unused")
        driver = BotDriver(me)
        self.manager.initialize(driver, mm_settings)
        handler = IncidentEventHandler(driver, mm_settings, self.manager)
        self.retention = Retention(core, self.cursor, settings.dedupe_retention_days)
        self.pipeline = Pipeline(
            core,
            handler,
            self.cursor,
            self.backlog,
            resume_start=self.incidents.resume_command,
            floor_ms=self.retention.floor_ms,
        )
        catchup = CatchUp(core, self.cursor, self.pipeline, checklists, self.timeline)
        self.resync = Resync(
            self.pipeline,
            catchup,
            self.cursor,
            self.backlog,
            repair_stale=self.incidents.repair_stale,
            deliver_outbox=self.outbox.deliver_pending,
        )
        self.stream = EventStream(
            settings.mattermost_url,
            settings.token(),
            on_event=self.resync.on_event,
            on_connect=self.resync.on_connect,
            on_gap=self.resync.on_gap,
        )


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = open_store(settings.database, on_commit=self.metrics.commit)
        self.chat = MattermostClient(settings.mattermost_url, settings.token(), on_response=self.metrics.rest_response)
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self.health: Health | None = None  # once logged in and wired
        self.ops: OpsServer | None = None

    def request_stop(self) -> None:
        self._stopping.set()

    async def _login(self) -> User:
        """Who am I; waits for a server that is down rather than giving up."""
        backoff = Backoff(LOGIN_FIRST_WAIT, cap=LOGIN_MAX_WAIT, jitter="none")
        while True:
            try:
                return await self.chat.get_me()
            except Unauthorized:
                raise TokenRefused(
                    "bot_token: Mattermost refused the token (401); check the bot's access token (incident-bot check tells more)"
                ) from None
            except MattermostError as exc:
                delay = backoff.next_delay()
                log.warning("mattermost.unreachable", url=self.settings.mattermost_url, error=type(exc).__name__, retry_in=delay)
                if not await backoff.pause(delay, self._stopping):
                    raise StartupError("stopped before Mattermost was reachable") from None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        await self.store.open()
        try:
            await self._start_ops()
            try:
                me = await self._login()
            except StartupError:
                if self._stopping.is_set():  # asked to stop while waiting for Mattermost: a clean stop
                    log.info("bot.stopped", clean=True, connected=False)
                    return
                raise
            await self._serve(Bot(self.settings, self.store, self.chat, me, observer=self.metrics), me)
        finally:
            if self.ops is not None:
                await self.ops.stop()
            await self.chat.close()
            await self.store.close()

    async def _serve(self, bot: Bot, me: User) -> None:
        await bot.cursor.load()
        bot.manager.start()
        try:
            resumed = await bot.incidents.resume_unfinished()
            if resumed:
                log.info("bot.resumed_starts", incidents=resumed)
        except Exception as exc:  # noqa: BLE001 - finished when its command is read again
            log.warning("bot.resume_failed", error=type(exc).__name__, detail=str(exc)[:200])
        log.info("bot.starting", user=me.username, database=describe(self.settings.database))
        self.health = Health(bot.stream, bot.resync, self.store, self.chat)
        self._spawn(report_degraded(self.health.state, self._stopping))
        # What is built by now (modules, the wiring, ~65,000 objects) lives as long as the
        # process: kept out of the collector's full passes, each of which otherwise walked it
        # all (30-190 ms measured on the 2-core machine, a pause in the middle of commands).
        gc.freeze()
        stream_task = self._spawn(bot.stream.run())
        self._spawn(bot.timeline.run_reminders(self._stopping))
        self._spawn(bot.cursor.run(self._stopping))
        self._spawn(bot.retention.run(self._stopping))
        self._spawn(bot.resync.run_retries())
        self._spawn(self._repair(bot))
        await asyncio.wait({stream_task, self._spawn(self._stopping.wait())}, return_when=asyncio.FIRST_COMPLETED)
        log.info("bot.stopping", in_flight=bot.pipeline.queues.pending)
        self._stopping.set()
        await bot.stream.stop()
        finished = await bot.pipeline.drain(self.settings.shutdown_grace_seconds)
        await bot.resync.stop()
        for task in list(self._background):
            if task is not stream_task:
                task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await bot.cursor.flush()  # never past work left unfinished: read again next start
        bot.manager.stop()
        log.info("bot.stopped", clean=finished)

    # --- the operator's listener ----------------------------------------------------------

    async def _start_ops(self) -> None:
        """Serve /healthz, /readyz, /metrics if configured. A port in use is logged, not fatal:
        handling incidents matters more, and the missing scrape raises the operator's alert."""
        listen = self.settings.ops_listen()
        if listen is None:
            return
        server = OpsServer(listen[0], listen[1], self.metrics, self._not_ready, self._refresh_metrics)
        try:
            await server.start()
        except OSError as exc:
            log.error("ops.listen_failed", address=self.settings.ops_address, error=exc.strerror or str(exc))
            return
        self.ops = server

    async def _not_ready(self) -> list[str]:
        if self.health is None:
            return ["not logged in to Mattermost yet"]
        return await self.health.not_ready()

    async def _refresh_metrics(self) -> None:
        """Gauges read at scrape time: active incidents by severity, outbox depth, readiness."""
        self.metrics.ready.set(0 if await self._not_ready() else 1)
        async with self.store.transaction() as tx:
            active = await tx.list_incidents_in_status([Status.ACTIVE])
            depth = await tx.outbox_depth()
        self.metrics.set_active(incident.severity for incident in active)
        self.metrics.outbox_depth.set(depth)

    async def _repair(self, bot: Bot) -> None:
        """After a start: posts queued before the stop go out, and open channels are mended."""
        try:
            if not await bot.outbox.deliver_pending():
                bot.backlog.outbox_waiting()
            count = await bot.incidents.repair()
            log.info("bot.repaired", incidents=count)
        except Exception as exc:  # noqa: BLE001 - repaired at the next start
            log.warning("bot.repair_failed", error=type(exc).__name__, detail=str(exc)[:200])
