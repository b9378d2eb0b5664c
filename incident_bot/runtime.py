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

from incident_bot.app.actions import Actions
from incident_bot.app.backlog import Backlog
from incident_bot.app.catchup import CatchUp
from incident_bot.app.channel import ChannelWriter
from incident_bot.app.checklists import Checklists
from incident_bot.app.core import Core
from incident_bot.app.cursor import Cursor
from incident_bot.app.directory import Directory
from incident_bot.app.incidents import Incidents
from incident_bot.app.leadership import LEASE_SECONDS, Leadership, replica_name
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
from incident_bot.chat.retry import Backoff, sleep_unless_stopped
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
from incident_bot.store.base import Store, StoreUnavailable
from incident_bot.store.factory import describe, open_lease, open_store
from incident_bot.web import dialogs, slash
from incident_bot.web.actions import ActionRoutes
from incident_bot.web.wiring import Wiring

log = structlog.get_logger("incident_bot.bot")

LOGIN_FIRST_WAIT = 1.0
LOGIN_MAX_WAIT = 30.0
TERM_RETRY_SECONDS = 2.0  # a term that could not start (database away) is tried again after this


class StartupError(Exception):
    """The bot cannot start; the message says why (for the operator)."""


class TokenRefused(StartupError):
    """Mattermost refused the token: restarting will not help (the CLI exits 1 for this)."""


TOKEN_FIX = "check the bot's access token (incident-bot check tells more)"


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
        self.runner = runner = Runner(core)
        self.incidents = Incidents(core, channel, teams, self.backlog, self.outbox)
        checklists = Checklists(core, channel, self.outbox)
        self.timeline = Timeline(core, channel, self.outbox)
        reports = Reports(core, teams)
        self.actions = Actions(core, runner, self.incidents, checklists, self.timeline, reports)
        plugins = [
            IncidentPlugin(runner, self.incidents, Help(core)),
            ChecklistPlugin(runner, checklists, settings.check_emojis),
            PlaybookPlugin(runner, Playbooks(core, teams)),
            TimelinePlugin(runner, self.timeline, reports, settings.timeline_emoji),
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
        # PostgreSQL: replicas elect a leader and only it serves; SQLite: always the leader.
        self.leadership = Leadership(open_lease(self.store, replica_name(), LEASE_SECONDS))
        self.chat = MattermostClient(
            settings.mattermost_url,
            settings.token(),
            on_response=self._rest_response,
            may_write=None if self.leadership.solo else self.leadership.may_write,
        )
        self._stopping = asyncio.Event()
        self._logged_in = False
        self._refused = False  # Mattermost refused the token once running
        self._frozen = False  # gc.freeze() done (the first term as leader)
        self._background: set[asyncio.Task[Any]] = set()
        self.health: Health | None = None  # once logged in and wired
        self.ops: OpsServer | None = None
        self.action_routes = ActionRoutes()  # answers once the bot is wired (bind)
        self.slash: slash.SlashCommand | None = None
        tokens = settings.slash_secrets()
        if tokens:
            dialog = dialogs.StartDialog(tokens[0], self._callback_base)
            self.slash = slash.SlashCommand(tokens, dialog)

    def _callback_base(self) -> str | None:
        return self.settings.callback_base(self.ops.address if self.ops is not None else None)

    def request_stop(self) -> None:
        self._stopping.set()

    def _rest_response(self, status: int) -> None:
        self.metrics.rest_response(status)
        if status == 401 and self._logged_in:
            self.token_refused()

    def _doubt_token(self) -> None:
        self._spawn(self._verify_token())

    async def _verify_token(self) -> None:
        """The WebSocket could not authenticate: ask REST, whose 401 is unambiguous (and
        reaches ``token_refused`` through ``_rest_response``)."""
        try:
            await self.chat.get_me()
        except MattermostError as exc:
            log.info("bot.token_checked", error=type(exc).__name__)

    def token_refused(self) -> None:
        """Mattermost no longer takes the token (revoked, or the bot account deactivated):
        retrying cannot help, so the bot stops; ``run`` then raises ``TokenRefused`` (exit 1).
        Work left unfinished is read again at the next start, with a valid token."""
        if not self._refused:
            self._refused = True
            log.error("bot.token_refused", fix=TOKEN_FIX)
        self.request_stop()

    async def _login(self) -> User:
        """Who am I; waits for a server that is down rather than giving up."""
        backoff = Backoff(LOGIN_FIRST_WAIT, cap=LOGIN_MAX_WAIT, jitter="none")
        while True:
            try:
                return await self.chat.get_me()
            except Unauthorized:
                raise TokenRefused(f"bot_token: Mattermost refused the token (401); {TOKEN_FIX}") from None
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
                self._logged_in = True
            except StartupError:
                if self._stopping.is_set():  # asked to stop while waiting for Mattermost: a clean stop
                    log.info("bot.stopped", clean=True, connected=False)
                    return
                raise
            # A term as leader ends with a stop, or with the lease lost: then stand by again.
            while await self.leadership.campaign(self._stopping):
                bot = Bot(self.settings, self.store, self.chat, me, observer=self.metrics)
                bot.stream.on_auth_doubt(self._doubt_token)
                if not await self._serve(bot, me):
                    break
            if self._refused:
                raise TokenRefused(f"bot_token: Mattermost refused the token while running (401); {TOKEN_FIX}")
        finally:
            await self.leadership.close()
            if self.ops is not None:
                await self.ops.stop()
            await self.chat.close()
            await self.store.close()

    async def _serve(self, bot: Bot, me: User) -> bool:
        """One term as the leader, the lease renewed throughout; True when it ended because
        the lease was lost. After a clean stop the lease is let go for a standby to take."""
        holding = asyncio.create_task(self.leadership.hold())
        try:
            try:
                await bot.cursor.load()
            except StoreUnavailable as exc:
                # The database went away (or another replica took over) between winning the
                # lease and starting: stand by again rather than exit, and try after a pause.
                log.warning("bot.term_not_started", error=str(exc)[:300])
                await sleep_unless_stopped(TERM_RETRY_SECONDS, self._stopping)
                return True
            return await self._term(bot, me)
        finally:
            holding.cancel()
            await asyncio.gather(holding, return_exceptions=True)
            if not self.leadership.lost.is_set():
                try:
                    await self.leadership.release()
                except StoreUnavailable as exc:  # it runs out by itself within the lease's lifetime
                    log.warning("lease.release_failed", error=str(exc)[:300])

    async def _term(self, bot: Bot, me: User) -> bool:
        if self.slash is not None:
            wiring = Wiring(bot.core, bot.pipeline, bot.runner, bot.incidents, bot.timeline)
            self.slash.wiring = self.slash.dialog.wiring = wiring
        bot.manager.start()
        try:
            resumed = await bot.incidents.resume_unfinished()
            if resumed:
                log.info("bot.resumed_starts", incidents=resumed)
        except Exception as exc:  # noqa: BLE001 - finished when its command is read again
            log.warning("bot.resume_failed", error=type(exc).__name__, detail=str(exc)[:200])
        self.action_routes.bind(bot.actions)
        log.info(
            "bot.starting",
            user=me.username,
            database=describe(self.settings.database),
            buttons=self.settings.buttons() is not None,
        )
        self.health = Health(bot.stream, bot.resync, self.store, self.chat)
        term = asyncio.Event()  # the end of this term as leader: a stop, or the lease lost
        self._spawn(report_degraded(self.health.state, term))
        # What is built by now (modules, the wiring, ~65,000 objects) lives as long as the
        # process: kept out of the collector's full passes, each of which otherwise walked it
        # all (30-190 ms measured on the 2-core machine, a pause in the middle of commands).
        if not self._frozen:  # once: a later term's freeze would keep the earlier term's garbage
            gc.collect()
            gc.freeze()
            self._frozen = True
        stream_task = self._spawn(bot.stream.run())
        self._spawn(bot.timeline.run_reminders(term))
        self._spawn(bot.cursor.run(term))
        self._spawn(bot.retention.run(term))
        self._spawn(bot.resync.run_retries())
        self._spawn(self._repair(bot))
        ends = {stream_task, self._spawn(self._stopping.wait()), self._spawn(self.leadership.lost.wait())}
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        lost = self.leadership.lost.is_set()
        log.info("bot.stopping", in_flight=bot.pipeline.queues.pending, lease_lost=lost)
        if not lost:
            self._stopping.set()
        term.set()
        # Mattermost's calls (slash command, dialogs, buttons) are answered 503 until a next term.
        if self.slash is not None:
            self.slash.wiring = self.slash.dialog.wiring = None
        self.action_routes.bind(None)
        await bot.stream.stop()
        # Deposed: nothing in flight could be written anyway; the new leader reads it again.
        finished = await bot.pipeline.drain(0 if lost else self.settings.shutdown_grace_seconds)
        await bot.resync.stop()
        for task in list(self._background):
            if task is not stream_task:
                task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if not lost:
            try:
                await bot.cursor.flush()  # never past work left unfinished: read again next start
            except StoreUnavailable as exc:  # kept where it was saved last: catch-up reads a little more
                log.warning("cursor.flush_failed", error=str(exc)[:300])
        bot.manager.stop()
        log.info("bot.stopped", clean=finished and not lost)
        return lost

    # --- the operator's listener ----------------------------------------------------------

    async def _start_ops(self) -> None:
        """Serve /healthz, /readyz, /metrics if configured. A port in use is logged, not fatal:
        handling incidents matters more, and the missing scrape raises the operator's alert."""
        listen = self.settings.ops_listen()
        if listen is None:
            if self.slash is not None:
                log.warning("slash.no_listener", reason="ops_address is off: Mattermost cannot call the slash command")
            return
        server = OpsServer(listen[0], listen[1], self.metrics, self._not_ready, self._refresh_metrics)
        if self.slash is not None:
            server.add_route("POST", slash.PATH, self.slash.handle)
            server.add_route("POST", dialogs.PATH, self.slash.dialog.handle)
        for method, path, handler in self.action_routes.routes():
            server.add_route(method, path, handler)
        try:
            await server.start()
        except OSError as exc:
            log.error("ops.listen_failed", address=self.settings.ops_address, error=exc.strerror or str(exc))
            return
        self.ops = server

    async def _not_ready(self) -> list[str]:
        if not self.leadership.leading:
            return [self.leadership.standby_reason()]
        if self.health is None:
            return ["not logged in to Mattermost yet"]
        return await self.health.not_ready()

    async def _refresh_metrics(self) -> None:
        """Gauges read at scrape time: active incidents by severity, outbox depth, readiness."""
        self.metrics.ready.set(0 if await self._not_ready() else 1)
        self.metrics.leader.set(1 if self.leadership.leading else 0)
        if not self.leadership.leading:
            return  # the leader reports the incidents and the outbox (one count, not one per replica)
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
