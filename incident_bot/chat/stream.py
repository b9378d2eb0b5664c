"""The Mattermost WebSocket event stream: connect, authenticate, deliver events in order, resume.

Reliable WebSocket, as the server implements it: every event carries ``seq`` (0 for the
``hello`` of a fresh connection, then 1, 2, …). After a drop we reconnect with
``?connection_id=<id>&sequence_number=<last seq + 1>``. If the server still holds our
connection it replays what we missed from its buffer and sends *no* new ``hello``; if it
lost the connection (restart, long outage, buffer overrun) it sends a ``hello`` with a new
``connection_id`` and restarts ``seq`` at 0. So after a reconnect:

- a ``hello`` with a new id → ``on_connect(hello, resumed=False)``: a gap, catch up over REST;
- a ``hello`` with the same id, the first event arriving with the expected ``seq``, our
  authentication reply, or ``resume_grace`` seconds of quiet → ``on_connect(h, True)``,
  where ``h`` repeats the last known ``hello`` (the server sent none).

The server only resumes connections authenticated at upgrade time, so besides the
``authentication_challenge`` frame the token also goes in the upgrade's Authorization
header. A ``seq`` jump on a live connection calls ``on_gap(expected, received)``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import aiohttp
import structlog

from incident_bot import __version__
from incident_bot.chat.events import Event, Hello, Malformed, Reply, parse_message
from incident_bot.chat.retry import Backoff

log = structlog.get_logger(__name__)

OnEvent = Callable[[Event], Awaitable[None]]
OnConnect = Callable[[Hello, bool], Awaitable[None]]
OnGap = Callable[[int, int], Awaitable[None]]

AUTH_SEQ = 1


def websocket_url(base_url: str) -> str:
    """``http(s)://host[/subpath]`` → ``ws(s)://host[/subpath]/api/v4/websocket``."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/api/v4/websocket"


class EventStream:
    """One logical event stream over as many WebSocket connections as it takes.

    ``run()`` returns only after ``stop()``; every event, ``Hello`` frames and
    ``Malformed`` ones included, is awaited through ``on_event`` in arrival order, so a
    slow consumer holds up the stream (hand work off to a queue). Exceptions raised by
    the callbacks are logged and the stream goes on. A stopped stream stays stopped.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        on_event: OnEvent,
        on_connect: OnConnect | None = None,
        on_gap: OnGap | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        heartbeat: float = 30.0,
        resume_grace: float = 2.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = websocket_url(base_url)
        self._token = token
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_gap = on_gap
        self._on_auth_doubt: Callable[[], None] | None = None  # see on_auth_doubt
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Reconnects never give up; a connection that got as far as an event resets the delay.
        self._reconnect = Backoff(backoff, cap=max_backoff, jitter="full")
        self.heartbeat = heartbeat
        self.resume_grace = resume_grace
        self._session = session

        self._connection_id = ""
        self._server_version = ""
        self._last_seq: int | None = None
        self._next_seq: int | None = None  # the seq the server should send next
        self._awaiting_resume = False  # reconnected, not yet told whether resumed

        self._running = False
        self._stop_event = asyncio.Event()  # set by stop(); never cleared
        self._done = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._authenticated = False  # this connection said hello (or resumed) after our token
        self._conn_task: asyncio.Task[bool] | None = None
        self._run_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # keeps the token out of reprs
        return f"EventStream({self.url!r})"

    @property
    def connection_id(self) -> str:
        return self._connection_id

    @property
    def last_seq(self) -> int | None:
        return self._last_seq

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    @property
    def authenticated(self) -> bool:
        """Connected, and the server accepted the token (a hello came, or the connection resumed)."""
        return self._authenticated and self.connected

    def _connect_url(self) -> str:
        if self._connection_id and self._next_seq is not None:
            query = urlencode({"connection_id": self._connection_id, "sequence_number": self._next_seq})
            return f"{self.url}?{query}"
        return self.url

    # --- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and deliver events until ``stop()``; reconnects with backoff on drops."""
        if self._running:
            raise RuntimeError("EventStream.run() is already running")
        self._running = True
        self._done.clear()
        self._run_task = asyncio.current_task()
        session = self._session or aiohttp.ClientSession()
        try:
            while not self._stopping():
                self._conn_task = asyncio.create_task(self._connect_once(session))
                healthy = False
                try:
                    healthy = await self._conn_task
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._stopping() and task is not None and not task.cancelling():
                        break  # stop() cancelled a connection attempt
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever ended this connection, the stream reconnects
                    self._log_connect_failure(exc)
                    if getattr(exc, "status", None) == 400 and self._connection_id:
                        # The server refused our resume parameters: start a fresh connection
                        # (the app then catches up over REST) instead of asking forever.
                        log.warning("mattermost.ws.resume_refused", connection=self._connection_id)
                        self._connection_id = ""
                        self._next_seq = None
                finally:
                    self._conn_task = None
                if self._stopping():
                    break
                if healthy:
                    self._reconnect.reset()
                failures = self._reconnect.attempts  # connections in a row that never got an event
                wait = self._reconnect.next_delay()
                log.info("mattermost.ws.reconnect", wait=round(wait, 3), failures=failures)
                await self._reconnect.pause(wait, self._stop_event)
        finally:
            if self._session is None:
                await session.close()
            self._running = False
            self._run_task = None
            self._done.set()

    async def stop(self) -> None:
        """Close the socket and make ``run()`` return; safe to call from a callback."""
        self._stop_event.set()
        current = asyncio.current_task()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()
        elif self._conn_task is not None and self._conn_task is not current:
            self._conn_task.cancel()  # still connecting
        if self._running and current is not self._run_task and current is not self._conn_task:
            await self._done.wait()

    def on_auth_doubt(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the token may have been refused: a 401 on upgrade, a failed
        authentication challenge, or a connection closed before it was authenticated (a real
        server just closes the socket on a revoked token). The caller asks REST to be sure."""
        self._on_auth_doubt = callback

    def _doubt_auth(self) -> None:
        if self._on_auth_doubt is not None and not self._stopping():
            self._on_auth_doubt()

    def _stopping(self) -> bool:
        return self._stop_event.is_set()

    def _log_connect_failure(self, exc: Exception) -> None:
        status = getattr(exc, "status", None)
        if status in (401, 403):
            log.error("mattermost.ws.unauthorized", status=status)
            if status == 401:
                self._doubt_auth()
        else:
            log.warning("mattermost.ws.connect_failed", error=type(exc).__name__, status=status)

    # --- one connection --------------------------------------------------------------

    async def _connect_once(self, session: aiohttp.ClientSession) -> bool:
        """Hold one connection until it closes; True when it got as far as a hello or event."""
        reconnecting = bool(self._connection_id) and self._next_seq is not None
        url = self._connect_url()
        headers = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"incident-bot/{__version__}",
        }
        loop = asyncio.get_running_loop()
        healthy = False
        async with session.ws_connect(
            url,
            headers=headers,
            heartbeat=self.heartbeat,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        ) as ws:
            self._ws = ws
            log.info(
                "mattermost.ws.connected",
                resume=reconnecting,
                connection_id=self._connection_id or None,
                sequence_number=self._next_seq if reconnecting else None,
            )
            receiving: asyncio.Future[aiohttp.WSMessage] | None = None
            try:
                if self._stopping():
                    return False
                await ws.send_str(
                    json.dumps(
                        {
                            "seq": AUTH_SEQ,
                            "action": "authentication_challenge",
                            "data": {"token": self._token},
                        }
                    )
                )
                self._awaiting_resume = reconnecting
                deadline = loop.time() + self.resume_grace
                while True:
                    if receiving is None:
                        receiving = asyncio.ensure_future(ws.receive())
                    if self._awaiting_resume:
                        done, _ = await asyncio.wait({receiving}, timeout=max(0.0, deadline - loop.time()))
                        if not done:  # quiet: a lossless resume sends nothing at all
                            await self._resumed_without_hello()
                            healthy = True
                            continue
                    msg = await receiving
                    receiving = None
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        healthy = await self._handle_text(msg.data) or healthy
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        await self._deliver(Malformed(raw=repr(msg.data[:200]), reason="binary frame"))
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        log.warning("mattermost.ws.error", error=type(msg.data).__name__)
                        break
                    else:  # CLOSE, CLOSING, CLOSED
                        break
            finally:
                if receiving is not None and not receiving.done():
                    receiving.cancel()
                self._ws = None
                unauthenticated = not self._authenticated
                self._authenticated = False
                self._awaiting_resume = False
            log.info("mattermost.ws.closed", code=ws.close_code, stopping=self._stopping())
        if unauthenticated:
            self._doubt_auth()
        return healthy

    async def _handle_text(self, text: str) -> bool:
        event = parse_message(text)
        if isinstance(event, Reply):
            reply = event
            if reply.seq_reply != AUTH_SEQ:
                return False
            if reply.status == "OK":
                if self._awaiting_resume:
                    await self._resumed_without_hello()
                return True
            log.error("mattermost.ws.auth_failed", error_id=reply.error_id or None)
            self._doubt_auth()
            if self._ws is not None:
                await self._ws.close()
            return False
        if event is None:
            return False
        if isinstance(event, Hello):
            await self._handle_hello(event)
            await self._deliver(event)
            return True

        report_gap = True
        if self._awaiting_resume:
            # First event after a reconnect and no hello: the server replayed its buffer.
            resumed = event.seq is None or self._next_seq is None or event.seq == self._next_seq
            await self._resumed_without_hello(resumed)
            if not resumed:
                report_gap = False  # on_connect(resumed=False) already said so
                self._next_seq = None
        await self._track_seq(event.seq, report_gap)
        await self._deliver(event)
        return True

    async def _handle_hello(self, hello: Hello) -> None:
        same = bool(hello.connection_id) and hello.connection_id == self._connection_id
        was_awaiting = self._awaiting_resume
        self._awaiting_resume = False
        self._server_version = hello.server_version or self._server_version
        if same:
            # Some servers repeat the hello on a resumed connection; seq numbering goes on.
            await self._track_seq(hello.seq, report_gap=False)
            if was_awaiting:
                await self._call_on_connect(hello, True)
            return
        self._connection_id = hello.connection_id
        self._last_seq = hello.seq
        self._next_seq = None if hello.seq is None else hello.seq + 1
        await self._call_on_connect(hello, False)

    async def _resumed_without_hello(self, resumed: bool = True) -> None:
        self._awaiting_resume = False
        hello = Hello(connection_id=self._connection_id, server_version=self._server_version)
        await self._call_on_connect(hello, resumed)

    async def _track_seq(self, seq: int | None, report_gap: bool) -> None:
        if seq is None:
            return
        expected = self._next_seq
        if expected is not None and seq < expected:
            log.info("mattermost.ws.seq_repeated", seq=seq, expected=expected)
            return  # an old event again: deliver it, the consumer dedupes; keep our place
        if expected is not None and seq > expected and report_gap:
            log.warning("mattermost.ws.gap", expected=expected, received=seq)
            if self._on_gap is not None:
                try:
                    await self._on_gap(expected, seq)
                except Exception:
                    log.exception("mattermost.ws.callback_failed", callback="on_gap")
        self._last_seq = seq
        self._next_seq = seq + 1

    # --- callbacks -------------------------------------------------------------------

    async def _call_on_connect(self, hello: Hello, resumed: bool) -> None:
        self._authenticated = True
        log.info(
            "mattermost.ws.ready",
            connection_id=hello.connection_id or None,
            resumed=resumed,
            server_version=hello.server_version or None,
        )
        if self._on_connect is None:
            return
        try:
            await self._on_connect(hello, resumed)
        except Exception:
            log.exception("mattermost.ws.callback_failed", callback="on_connect")

    async def _deliver(self, event: Event) -> None:
        try:
            await self._on_event(event)
        except Exception:
            log.exception(
                "mattermost.ws.callback_failed",
                callback="on_event",
                event_type=type(event).__name__,
                seq=getattr(event, "seq", None),
            )
