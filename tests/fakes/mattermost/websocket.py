"""The fake's WebSocket: who receives which event, envelopes ``{"event","data","broadcast","seq"}``
(``data.post``/``data.reaction`` as JSON strings, set by the state part), per-connection seq,
and the reliable-WebSocket resume protocol (``connection_id`` + ``sequence_number`` on the
upgrade; a dead queue of the last 128 events; a successful resume sends no ``hello``)."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.mattermost.common import (
    DEAD_QUEUE_SIZE,
    SEND_QUEUE_SIZE,
    SERVER_VERSION,
    dumps,
    error_body,
    is_valid_id,
    new_id,
    token_from,
)


class _Socket:
    """One open websocket (an HTTP upgrade); ``conn`` once authenticated."""

    def __init__(self, ws: web.WebSocketResponse, transport: Any) -> None:
        self.ws = ws
        self.transport = transport
        self.conn: _Conn | None = None
        self.writer: asyncio.Task[None] | None = None
        self.user_id: str | None = None


class _Conn:
    """A logical connection: survives its socket for resume, like the real server's WebConn."""

    def __init__(self, conn_id: str, user_id: str) -> None:
        self.id = conn_id
        self.user_id = user_id
        self.next_seq = 0
        self.dead: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(maxlen=DEAD_QUEUE_SIZE)
        self.queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.wake = asyncio.Event()
        self.sock: _Socket | None = None
        self.inactive_since: float | None = None
        self.reuse_count = 0
        self.lose = 0  # fault: the next N events are "sent" (seq used, buffered) but never written


class WebSocketEvents:
    """Connections, their event queues and the upgrade handler; mixed into the fake server."""

    def _init_websocket(self, *, resume_window: float, ws_auth_timeout: float, hello_on_resume: bool) -> None:
        # How long a dropped connection's buffer is kept for resume (real: a few minutes).
        self.resume_window = resume_window
        self.ws_auth_timeout = ws_auth_timeout
        # The real server sends no hello on a successful resume; True imitates servers that do.
        self.hello_on_resume = hello_on_resume
        self.refuse_websocket_until = 0.0  # time.time() before which upgrades get 503
        self.ws_log: list[dict[str, Any]] = []
        self._conns: dict[str, _Conn] = {}
        self._sockets: set[_Socket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def events_for(self, user: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """Envelopes written (or lost) to a user's sockets (default the bot), oldest first."""
        uid = self._user_ref(user) or self.bot_user_id
        return [e["envelope"] for e in self.ws_log if e["user_id"] == uid and (event is None or e["envelope"]["event"] == event)]

    # ---------------------------------------------------------------------------- primitives for faults

    def _refuse_websockets(self, seconds: float) -> None:
        self.refuse_websocket_until = max(self.refuse_websocket_until, time.time() + seconds)

    async def _drop_sockets(self, user: str | None = None, *, refuse_for: float = 0.0, abrupt: bool = True) -> int:
        """Close open websockets (all, or one user's) without a close frame; returns how many.

        Their connections stay resumable for ``resume_window`` seconds. ``refuse_for`` also
        refuses new upgrades (503) for that many seconds.
        """
        uid = self._user_ref(user)
        if refuse_for:
            self._refuse_websockets(refuse_for)
        dropped = 0
        for sock in list(self._sockets):
            if uid is not None and sock.user_id != uid:
                continue
            self._close_socket(sock, abrupt=abrupt)
            dropped += 1
        await asyncio.sleep(0)
        return dropped

    def _forget_connections(self) -> None:
        """Lose the resume buffers of dropped connections (their resume gets a new hello)."""
        for conn in list(self._conns.values()):
            if conn.sock is None:
                del self._conns[conn.id]

    async def _restart(self, *, refuse_for: float = 0.0) -> None:
        """Act like a server restart: every socket drops and no connection can be resumed.

        Data (users, channels, posts) is kept.
        """
        await self._drop_sockets(refuse_for=refuse_for)
        self._conns.clear()

    def _lose_next_events(self, count: int, user: str | None = None) -> None:
        """The next ``count`` events to a user's connections (default the bot) use up their
        seq and are kept for resume, but never reach the socket (lost in flight)."""
        uid = self._user_ref(user) or self.bot_user_id
        for conn in self._conns.values():
            if conn.user_id == uid:
                conn.lose += count

    async def _send_raw(self, text: str, user: str | None = None) -> int:
        """Send an arbitrary text frame (no seq) to every socket of a user (default the bot)."""
        uid = self._user_ref(user) or self.bot_user_id
        n = 0
        for conn in self._conns.values():
            if conn.user_id == uid and conn.sock is not None:
                self._enqueue(conn, "frame", text)
                n += 1
        await asyncio.sleep(0)
        return n

    async def _send_event(
        self, event: str, data: dict[str, Any], broadcast: dict[str, Any] | None = None, user_id: str | None = None
    ) -> int:
        """Send a well-formed event (next seq) to a user's connections (default the bot)."""
        uid = self._user_ref(user_id) or self.bot_user_id
        bc = self._broadcast(**(broadcast or {}))
        n = 0
        for conn in self._conns.values():
            if conn.user_id == uid:
                self._enqueue(conn, "event", {"event": event, "data": data, "broadcast": bc})
                n += 1
        await asyncio.sleep(0)
        return n

    async def _redeliver_last(self, event_name: str, user_id: str | None = None) -> dict[str, Any]:
        """Send the most recent ``event_name`` envelope of a user (default the bot) again, new seq."""
        uid = self._user_ref(user_id) or self.bot_user_id
        for entry in reversed(self.ws_log):
            env = entry["envelope"]
            if entry["user_id"] == uid and env.get("event") == event_name:
                await self._send_event(event_name, env["data"], env["broadcast"], uid)
                return env
        raise LookupError(f"no {event_name} event was sent to {uid}")

    # ---------------------------------------------------------------------------- internals

    @staticmethod
    def _broadcast(
        user_id: str = "",
        channel_id: str = "",
        team_id: str = "",
        omit_users: Any = None,
        connection_id: str = "",
        omit_connection_id: str = "",
        **_: Any,
    ) -> dict[str, Any]:
        return {
            "omit_users": omit_users,
            "user_id": user_id,
            "channel_id": channel_id,
            "team_id": team_id,
            "connection_id": connection_id,
            "omit_connection_id": omit_connection_id,
        }

    def _publish(
        self,
        event: str,
        data: dict[str, Any],
        *,
        user_id: str = "",
        channel_id: str = "",
        team_id: str = "",
        omit_users: Iterable[str] = (),
        data_for: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        """Queue an event for every connection allowed to see it (also dropped-but-resumable ones)."""
        self._reap()
        omit = set(omit_users)
        bc = self._broadcast(
            user_id=user_id, channel_id=channel_id, team_id=team_id, omit_users={u: True for u in omit} if omit else None
        )
        if user_id:
            recipients = {user_id}
        elif channel_id:
            recipients = set(self.channel_members.get(channel_id, {}))
        elif team_id:
            recipients = set(self.team_members.get(team_id, {}))
        else:
            recipients = set(self.users)
        recipients -= omit
        for conn in list(self._conns.values()):
            if conn.user_id in recipients:
                d = data_for(conn.user_id) if data_for else data
                self._enqueue(conn, "event", {"event": event, "data": d, "broadcast": bc})

    def _enqueue(self, conn: _Conn, kind: str, item: Any) -> None:
        if len(conn.queue) >= SEND_QUEUE_SIZE:
            # Real: a full send queue drops the connection; a later resume gets a new id.
            self._conns.pop(conn.id, None)
            if conn.sock is not None:
                self._close_socket(conn.sock, abrupt=True)
            return
        conn.queue.append((kind, item))
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(conn.wake.set)  # a helper called from another thread
        else:
            conn.wake.set()

    def _reap(self) -> None:
        limit = time.monotonic() - self.resume_window
        for conn in list(self._conns.values()):
            if conn.sock is None and conn.inactive_since is not None and conn.inactive_since < limit:
                del self._conns[conn.id]

    def _hello(self, conn: _Conn) -> dict[str, Any]:
        return {
            "event": "hello",
            "data": {"connection_id": conn.id, "server_version": SERVER_VERSION, "server_hostname": "fake-mattermost"},
            "broadcast": self._broadcast(user_id=conn.user_id),
        }

    def _close_socket(self, sock: _Socket, abrupt: bool) -> None:
        self._detach(sock)
        if abrupt and sock.transport is not None and not sock.transport.is_closing():
            sock.transport.abort()
        else:
            self._spawn(sock.ws.close())

    def _detach(self, sock: _Socket) -> None:
        conn = sock.conn
        if conn is not None and conn.sock is sock:
            conn.sock = None
            conn.inactive_since = time.monotonic()
        if sock.writer is not None:
            sock.writer.cancel()
            sock.writer = None

    def _attach_new(self, user_id: str, sock: _Socket) -> _Conn:
        conn = _Conn(new_id(), user_id)
        self._conns[conn.id] = conn
        self._bind(conn, sock, resume_seq=None)
        self._enqueue(conn, "event", self._hello(conn))
        return conn

    def _bind(self, conn: _Conn, sock: _Socket, resume_seq: int | None) -> None:
        conn.sock = sock
        conn.inactive_since = None
        sock.conn = conn
        sock.user_id = conn.user_id
        sock.writer = asyncio.ensure_future(self._writer(conn, sock, resume_seq))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_event(self, conn: _Conn, sock: _Socket, envelope: dict[str, Any]) -> None:
        env = {"event": envelope["event"], "data": envelope["data"], "broadcast": envelope["broadcast"], "seq": conn.next_seq}
        conn.next_seq += 1
        text = dumps(env)
        conn.dead.append((env["seq"], text, env))
        lost = conn.lose > 0
        if lost:
            conn.lose -= 1
        self.ws_log.append({"user_id": conn.user_id, "connection_id": conn.id, "envelope": env, "delivered": not lost})
        if not lost:
            await sock.ws.send_str(text)

    async def _writer(self, conn: _Conn, sock: _Socket, resume_seq: int | None) -> None:
        try:
            if resume_seq is not None and resume_seq != 0:
                await self._resume(conn, sock, resume_seq)
            while True:
                conn.wake.clear()
                while conn.queue and conn.sock is sock:
                    kind, item = conn.queue.popleft()
                    if kind == "event":
                        await self._write_event(conn, sock, item)
                    else:
                        await sock.ws.send_str(item if isinstance(item, str) else dumps(item))
                await conn.wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away mid-write; the reader will notice
            return

    async def _resume(self, conn: _Conn, sock: _Socket, seq: int) -> None:
        """The real writePump's start: replay from the dead queue, or declare a loss."""
        index = next((i for i, (s, _, _) in enumerate(conn.dead) if s == seq), None)
        if index is not None:
            conn.next_seq = seq
            for s, text, env in list(conn.dead)[index:]:
                conn.next_seq = s + 1
                self.ws_log.append(
                    {"user_id": conn.user_id, "connection_id": conn.id, "envelope": env, "delivered": True, "replayed": True}
                )
                await sock.ws.send_str(text)
            if self.hello_on_resume:
                await self._write_event(conn, sock, self._hello(conn))
        elif conn.dead and conn.dead[-1][0] != seq - 1:
            old = conn.id
            conn.dead.clear()
            conn.id = new_id()
            self._conns.pop(old, None)
            self._conns[conn.id] = conn
            conn.next_seq = 0
            await self._write_event(conn, sock, self._hello(conn))
        else:
            conn.next_seq = seq
            if self.hello_on_resume:
                await self._write_event(conn, sock, self._hello(conn))

    async def _auth_timeout(self, sock: _Socket) -> None:
        await asyncio.sleep(self.ws_auth_timeout)
        if sock.conn is None:
            await sock.ws.close()

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if time.time() < self.refuse_websocket_until:
            body = error_body(503, "app.fake.injected_fault.app_error", "Websocket upgrades refused.")
            self._record(request, 503, None, None)
            resp = web.json_response(body, status=503)
            resp.force_close()
            return resp
        token = token_from(request)
        user_id = self.tokens.get(token) if token else None
        query = dict(request.query)
        conn_id = query.get("connection_id", "")
        if conn_id and user_id and not is_valid_id(conn_id):
            self._record(request, 400, user_id, None)
            return web.Response(status=400, text="invalid connection id")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        transport = request.transport
        await ws.prepare(request)
        self._record(request, 101, user_id, None)
        sock = _Socket(ws, transport)
        self._sockets.add(sock)
        auth_timer: asyncio.Task[None] | None = None
        try:
            if user_id:
                self._reap()
                conn = self._conns.get(conn_id) if conn_id else None
                if conn is not None and conn.user_id == user_id and conn.sock is None:
                    seq_text = query.get("sequence_number", "")
                    if not seq_text.isdigit():
                        await ws.close()  # real: connection_id without a valid sequence_number
                        return ws
                    conn.reuse_count += 1
                    self._bind(conn, sock, resume_seq=int(seq_text))
                else:
                    self._attach_new(user_id, sock)
            else:
                auth_timer = asyncio.ensure_future(self._auth_timeout(sock))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    break  # real: a frame that does not decode ends the connection
                if not isinstance(req, dict):
                    break
                await self._ws_request(sock, req)
                if sock.ws.closed:
                    break
        finally:
            if auth_timer is not None:
                auth_timer.cancel()
            self._detach(sock)
            self._sockets.discard(sock)
        return ws

    async def _ws_request(self, sock: _Socket, req: dict[str, Any]) -> None:
        action = req.get("action")
        seq = req.get("seq")

        async def reply(obj: dict[str, Any]) -> None:
            if sock.conn is not None:
                self._enqueue(sock.conn, "frame", obj)
            else:
                await sock.ws.send_str(dumps(obj))

        def fail(status: int, error_id: str) -> dict[str, Any]:
            return {
                "status": "FAIL",
                "seq_reply": seq if isinstance(seq, int) else 0,
                "error": error_body(status, error_id, request_id=""),
            }

        if not action:
            await reply(fail(400, "api.web_socket_router.no_action.app_error"))
        elif not isinstance(seq, int) or seq <= 0:
            await reply(fail(400, "api.web_socket_router.bad_seq.app_error"))
        elif action == "authentication_challenge":
            if sock.conn is not None:
                return  # real: ignored when already authenticated (no seq_reply)
            data = req.get("data") or {}
            token = data.get("token") if isinstance(data, dict) else None
            uid = self.tokens.get(token) if isinstance(token, str) else None
            if uid is None:
                await sock.ws.close()
                return
            # Real order: registering queues the hello, then the OK reply follows it.
            conn = self._attach_new(uid, sock)
            self._enqueue(conn, "frame", {"status": "OK", "seq_reply": seq})
        elif sock.conn is None:
            await reply(fail(401, "api.web_socket_router.not_authenticated.app_error"))
        elif action == "ping":
            await reply(
                {
                    "status": "OK",
                    "seq_reply": seq,
                    "data": {"text": "pong", "version": SERVER_VERSION, "server_time": self.now_ms(), "node_id": ""},
                }
            )
        elif action == "user_typing":
            await reply({"status": "OK", "seq_reply": seq})
        else:
            await reply(fail(501, "api.web_socket_router.bad_action.app_error"))
