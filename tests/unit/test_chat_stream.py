"""EventStream against a small in-test WebSocket server: auth, order, reconnect and resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from incident_bot.chat.events import Event, Hello, Malformed, OtherEvent, Posted
from incident_bot.chat.stream import EventStream, websocket_url

TOKEN = "ws-s3cr3t-token"

Script = Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]]


def post(post_id: str, message: str = "hi") -> str:
    return json.dumps(
        {
            "id": post_id,
            "channel_id": "c1",
            "user_id": "u1",
            "message": message,
            "create_at": 1_700_000_000_000,
            "update_at": 1_700_000_000_000,
        }
    )


def hello(connection_id: str, seq: int = 0) -> str:
    return json.dumps(
        {
            "event": "hello",
            "data": {"connection_id": connection_id, "server_version": "9.11.0"},
            "broadcast": {"user_id": "bot"},
            "seq": seq,
        }
    )


def posted(seq: int, post_id: str) -> str:
    return json.dumps(
        {"event": "posted", "data": {"post": post(post_id), "channel_type": "O"}, "broadcast": {"channel_id": "c1"}, "seq": seq}
    )


async def hold(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
    """Keep the connection open until the client goes."""
    async for _ in ws:
        pass


class WSServer:
    """Runs one script per incoming connection (the last script repeats)."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.connections: list[dict[str, Any]] = []
        self.url = ""
        self.autoping = True

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        record: dict[str, Any] = {"query": dict(request.query), "headers": dict(request.headers)}
        index = len(self.connections)
        self.connections.append(record)
        record["auth"] = json.loads(await ws.receive_str(timeout=5))
        script = self.scripts[min(index, len(self.scripts) - 1)]
        await script(ws, record)
        return ws


@pytest.fixture
async def server() -> AsyncIterator[WSServer]:
    srv = WSServer()
    app = web.Application()
    app.router.add_get("/api/v4/websocket", srv.handler)
    test_server = TestServer(app)
    await test_server.start_server()
    srv.url = str(test_server.make_url("")).rstrip("/")
    yield srv
    await test_server.close()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.connects: list[tuple[Hello, bool]] = []
        self.gaps: list[tuple[int, int]] = []

    async def on_event(self, event: Event) -> None:
        self.events.append(event)

    async def on_connect(self, hello: Hello, resumed: bool) -> None:
        self.connects.append((hello, resumed))

    async def on_gap(self, expected: int, received: int) -> None:
        self.gaps.append((expected, received))

    def post_ids(self) -> list[str]:
        return [e.post.id for e in self.events if isinstance(e, Posted)]


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def make_stream(server: WSServer, rec: Recorder, **kwargs: Any) -> EventStream:
    params: dict[str, Any] = {"backoff": 0.01, "max_backoff": 0.05, "heartbeat": 5.0, "resume_grace": 0.2}
    params.update(kwargs)
    return EventStream(server.url, TOKEN, on_event=rec.on_event, on_connect=rec.on_connect, on_gap=rec.on_gap, **params)


async def run_until(stream: EventStream, condition: Callable[[], bool]) -> None:
    task = asyncio.create_task(stream.run())
    try:
        await until(condition)
    finally:
        await stream.stop()
        await asyncio.wait_for(task, 3)


# --- tests -------------------------------------------------------------------------------


def test_websocket_url() -> None:
    assert websocket_url("https://mm.example.com/") == "wss://mm.example.com/api/v4/websocket"
    assert websocket_url("http://127.0.0.1:8065/chat") == "ws://127.0.0.1:8065/chat/api/v4/websocket"


async def test_auth_challenge_then_events_in_order(server: WSServer) -> None:
    async def script(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str('{"status":"OK","seq_reply":1}')
        for seq in range(1, 21):
            await ws.send_str(posted(seq, f"p{seq}"))
        await hold(ws, record)

    server.scripts = [script]
    rec = Recorder()
    stream = make_stream(server, rec)
    await run_until(stream, lambda: len(rec.post_ids()) == 20)

    first = server.connections[0]
    assert first["auth"] == {"seq": 1, "action": "authentication_challenge", "data": {"token": TOKEN}}
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["query"] == {}
    assert rec.post_ids() == [f"p{i}" for i in range(1, 21)]
    assert isinstance(rec.events[0], Hello)  # hello frames reach on_event too
    assert [(h.connection_id, resumed) for h, resumed in rec.connects] == [("conn1", False)]
    assert stream.connection_id == "conn1" and stream.last_seq == 20
    assert rec.gaps == []


async def test_slow_consumer_still_gets_events_in_order(server: WSServer) -> None:
    async def script(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        for seq in range(1, 6):
            await ws.send_str(posted(seq, f"p{seq}"))
        await hold(ws, record)

    server.scripts = [script]
    seen: list[str] = []

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.02 if isinstance(event, Posted) and event.post.id == "p1" else 0)
        if isinstance(event, Posted):
            seen.append(event.post.id)

    stream = EventStream(server.url, TOKEN, on_event=slow, backoff=0.01)
    await run_until(stream, lambda: len(seen) == 5)
    assert seen == ["p1", "p2", "p3", "p4", "p5"]


async def test_reconnect_resumes_with_connection_id_and_sequence_number(server: WSServer) -> None:
    async def first(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.send_str(posted(2, "p2"))
        await ws.close()  # the server drops us

    async def resumed(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        # Like Mattermost: no new hello, the missed events replayed with their seq.
        await ws.send_str(posted(3, "p3"))
        await ws.send_str(posted(4, "p4"))
        await hold(ws, record)

    server.scripts = [first, resumed]
    rec = Recorder()
    stream = make_stream(server, rec)
    await run_until(stream, lambda: len(rec.post_ids()) == 4)

    assert server.connections[1]["query"] == {"connection_id": "conn1", "sequence_number": "3"}
    assert server.connections[1]["auth"]["action"] == "authentication_challenge"
    assert [resumed for _, resumed in rec.connects] == [False, True]
    assert rec.connects[1][0].connection_id == "conn1"
    assert rec.post_ids() == ["p1", "p2", "p3", "p4"]
    assert rec.gaps == []


async def test_reconnect_with_new_connection_id_is_a_gap(server: WSServer) -> None:
    async def first(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.close()

    async def fresh(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        # The server lost our connection: a new hello, seq starts again.
        await ws.send_str(hello("conn2"))
        await ws.send_str(posted(1, "p9"))
        await hold(ws, record)

    server.scripts = [first, fresh]
    rec = Recorder()
    stream = make_stream(server, rec)
    await run_until(stream, lambda: "p9" in rec.post_ids())

    assert server.connections[1]["query"] == {"connection_id": "conn1", "sequence_number": "2"}
    assert [(h.connection_id, r) for h, r in rec.connects] == [("conn1", False), ("conn2", False)]
    assert stream.connection_id == "conn2" and stream.last_seq == 1
    assert rec.gaps == []  # seq restarting with the new hello is not a gap on its own


async def test_quiet_resume_counts_as_resumed(server: WSServer) -> None:
    async def first(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.close()

    server.scripts = [first, hold]  # nothing was missed: the server sends nothing
    rec = Recorder()
    stream = make_stream(server, rec, resume_grace=0.1)
    await run_until(stream, lambda: len(rec.connects) == 2)
    assert [r for _, r in rec.connects] == [False, True]
    assert server.connections[1]["query"] == {"connection_id": "conn1", "sequence_number": "1"}


async def test_resumed_hello_with_same_id(server: WSServer) -> None:
    async def first(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.close()

    async def again(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1", seq=2))
        await ws.send_str(posted(3, "p3"))
        await hold(ws, record)

    server.scripts = [first, again]
    rec = Recorder()
    stream = make_stream(server, rec, resume_grace=5.0)
    await run_until(stream, lambda: "p3" in rec.post_ids())
    assert [r for _, r in rec.connects] == [False, True]
    assert rec.gaps == []


async def test_replay_starting_late_is_not_resumed(server: WSServer) -> None:
    async def first(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.close()

    async def late(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(posted(5, "p5"))  # 2, 3, 4 never come
        await ws.send_str(posted(6, "p6"))
        await hold(ws, record)

    server.scripts = [first, late]
    rec = Recorder()
    stream = make_stream(server, rec)
    await run_until(stream, lambda: "p6" in rec.post_ids())
    assert [r for _, r in rec.connects] == [False, False]
    assert rec.gaps == []  # already reported through on_connect
    assert stream.last_seq == 6


async def test_seq_jump_while_connected_calls_on_gap(server: WSServer) -> None:
    async def script(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.send_str(posted(4, "p4"))
        await ws.send_str(posted(4, "p4"))  # repeated: delivered, not a gap
        await ws.send_str(posted(5, "p5"))
        await hold(ws, record)

    server.scripts = [script]
    rec = Recorder()
    stream = make_stream(server, rec)
    with capture_logs() as logs:
        await run_until(stream, lambda: "p5" in rec.post_ids())
    assert rec.gaps == [(2, 4)]
    assert rec.post_ids() == ["p1", "p4", "p4", "p5"]
    assert any(e["event"] == "mattermost.ws.gap" for e in logs)


async def test_malformed_frames_and_handler_errors_do_not_stop_the_stream(server: WSServer) -> None:
    async def script(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str("{not json")
        await ws.send_str(json.dumps({"event": "posted", "data": {"post": "{{"}, "seq": 1}))
        await ws.send_str(posted(2, "boom"))
        await ws.send_str(json.dumps({"event": "typing", "data": {}, "seq": 3}))
        await ws.send_str(posted(4, "p4"))
        await hold(ws, record)

    server.scripts = [script]
    rec = Recorder()

    async def on_event(event: Event) -> None:
        await rec.on_event(event)
        if isinstance(event, Posted) and event.post.id == "boom":
            raise RuntimeError("handler bug")

    stream = EventStream(server.url, TOKEN, on_event=on_event, on_gap=rec.on_gap, backoff=0.01)
    with capture_logs() as logs:
        await run_until(stream, lambda: "p4" in rec.post_ids())
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds == ["Hello", "Malformed", "Malformed", "Posted", "OtherEvent", "Posted"]
    malformed = [e for e in rec.events if isinstance(e, Malformed)]
    assert malformed[1].seq == 1
    assert rec.gaps == []  # the malformed frame's seq still counted
    assert isinstance(rec.events[4], OtherEvent)
    failures = [e for e in logs if e["event"] == "mattermost.ws.callback_failed"]
    assert len(failures) == 1 and failures[0]["event_type"] == "Posted"
    assert TOKEN not in repr(logs)


async def test_stop_from_inside_on_event(server: WSServer) -> None:
    async def script(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello("conn1"))
        await ws.send_str(posted(1, "p1"))
        await ws.send_str(posted(2, "p2"))
        await hold(ws, record)

    server.scripts = [script]
    seen: list[Event] = []
    stream: EventStream

    async def on_event(event: Event) -> None:
        seen.append(event)
        if isinstance(event, Posted):
            await stream.stop()

    stream = EventStream(server.url, TOKEN, on_event=on_event, backoff=0.01)
    await asyncio.wait_for(stream.run(), 3)
    assert not stream.connected
    assert len(server.connections) == 1


async def test_stop_while_server_is_down_returns(server: WSServer) -> None:
    rec = Recorder()
    stream = EventStream("http://127.0.0.1:9", TOKEN, on_event=rec.on_event, backoff=0.01, max_backoff=0.02)
    task = asyncio.create_task(stream.run())
    await asyncio.sleep(0.1)
    await stream.stop()
    await asyncio.wait_for(task, 2)
    assert rec.events == []


async def test_unauthorized_upgrade_is_retried_with_backoff(server: WSServer) -> None:
    calls = {"n": 0}

    async def refuse(request: web.Request) -> web.Response:
        calls["n"] += 1
        return web.json_response({"id": "api.context.session_expired.app_error"}, status=401)

    app = web.Application()
    app.router.add_get("/api/v4/websocket", refuse)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        rec = Recorder()
        stream = EventStream(str(test_server.make_url("")), TOKEN, on_event=rec.on_event, backoff=0.01, max_backoff=0.02)
        with capture_logs() as logs:
            await run_until(stream, lambda: calls["n"] >= 3)
        assert any(e["event"] == "mattermost.ws.unauthorized" for e in logs)
        assert TOKEN not in repr(logs)
    finally:
        await test_server.close()


async def test_heartbeat_detects_a_silent_server(server: WSServer) -> None:
    server.autoping = False  # the server never answers pings: a half-open connection

    async def silent(ws: web.WebSocketResponse, record: dict[str, Any]) -> None:
        await ws.send_str(hello(f"conn{len(server.connections)}"))
        await hold(ws, record)

    server.scripts = [silent]
    rec = Recorder()
    stream = make_stream(server, rec, heartbeat=0.1)
    await run_until(stream, lambda: len(server.connections) >= 2)
    assert server.connections[1]["query"]["connection_id"] == "conn1"
