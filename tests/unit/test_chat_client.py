"""MattermostClient against a small in-test aiohttp server: retries, errors, payloads."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from incident_bot.chat import client as client_module
from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import (
    BadRequest,
    ChannelNameTaken,
    Forbidden,
    MattermostError,
    NotFound,
    RateLimited,
    ServerUnavailable,
)

TOKEN = "s3cr3t-token-abcdef"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """Routes answered by per-test handlers; records every request it sees."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, "/api/v4" + path)] = handler

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r["method"] == method and r["path"] == "/api/v4" + path)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        # A multipart body is left for the handler to stream (request.post()).
        body = b"" if request.content_type.startswith("multipart/") else await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return mm_error(404, "api.context.404.app_error", "Sorry, we could not find the page.")
        return await handler(request)


def mm_error(status: int, error_id: str, message: str, request_id: str = "req123") -> web.Response:
    return web.json_response(
        {
            "id": error_id,
            "message": message,
            "detailed_error": "",
            "request_id": request_id,
            "status_code": status,
        },
        status=status,
    )


def ok(payload: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    return handler


def sequence(*responses: Callable[[], web.Response]) -> Handler:
    """Answer the n-th call with the n-th response; the last one repeats."""
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.Response:
        index = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        return responses[index]()

    return handler


USER = {"id": "u1", "username": "alice", "first_name": "Alice", "last_name": "A", "roles": "x"}
POST = {
    "id": "p1",
    "channel_id": "c1",
    "user_id": "u1",
    "message": "hi",
    "create_at": 1_700_000_000_000,
    "update_at": 1_700_000_000_000,
}


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    test_server = TestServer(app)
    await test_server.start_server()
    srv.url = str(test_server.make_url("")).rstrip("/")
    yield srv
    await test_server.close()


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's retry waits, recorded instead of slept."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(client_module, "_sleep", fake_sleep)
    return recorded


@pytest.fixture
async def mm(server: Server) -> AsyncIterator[MattermostClient]:
    async with MattermostClient(server.url, TOKEN, retries=3, backoff=0.01, max_backoff=5.0) as client:
        yield client


# --- retries ----------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried_then_succeeds(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    limited = lambda: web.Response(status=429, text="limit exceeded", headers={"Retry-After": "2"})
    server.on("GET", "/users/me", sequence(limited, lambda: web.json_response(USER)))
    with capture_logs() as logs:
        me = await mm.get_me()
    assert me.username == "alice"
    assert server.count("GET", "/users/me") == 2
    assert waits == [2.0]
    retry = [entry for entry in logs if entry["event"] == "mattermost.retry"]
    assert retry and retry[0]["status"] == 429 and retry[0]["path"] == "/users/me"


async def test_429_with_only_ratelimit_reset_as_unix_time(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    reset = str(int(time.time()) + 3)
    limited = lambda: web.Response(status=429, headers={"X-RateLimit-Reset": reset})
    server.on("GET", "/users/me", sequence(limited, lambda: web.json_response(USER)))
    assert (await mm.get_me()).id == "u1"
    assert len(waits) == 1 and 1.0 <= waits[0] <= 3.5


async def test_429_reset_far_away_is_capped_and_delta_form_is_understood(
    server: Server, mm: MattermostClient, waits: list[float]
) -> None:
    far = str(int(time.time()) + 3600)
    server.on(
        "GET",
        "/users/me",
        sequence(
            lambda: web.Response(status=429, headers={"X-RateLimit-Reset": far}),
            # Mattermost's own limiter sends seconds-until-reset, not a unix time.
            lambda: web.Response(status=429, headers={"X-RateLimit-Reset": "1"}),
            lambda: web.json_response(USER),
        ),
    )
    await mm.get_me()
    assert waits == [5.0, 1.0]  # max_backoff=5 caps the first


async def test_429_retries_outlast_5xx_retries_then_raise_rate_limited(
    server: Server, mm: MattermostClient, waits: list[float]
) -> None:
    server.on("GET", "/users/me", sequence(lambda: web.Response(status=429, headers={"Retry-After": "0"})))
    with pytest.raises(RateLimited) as caught:
        await mm.get_me()
    assert caught.value.status == 429
    assert isinstance(caught.value, ServerUnavailable)
    assert server.count("GET", "/users/me") == 3 * 2 + 1


async def test_503_twice_then_200_succeeds(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    unavailable = lambda: web.Response(status=503, text="<html>bad gateway</html>")
    server.on("GET", "/users/me", sequence(unavailable, unavailable, lambda: web.json_response(USER)))
    with capture_logs() as logs:
        assert (await mm.get_me()).id == "u1"
    assert server.count("GET", "/users/me") == 3
    assert len(waits) == 2
    assert all(0 <= w <= 0.01 * 2**i for i, w in enumerate(waits))  # full jitter, exponential cap
    statuses = [e["status"] for e in logs if e["event"] == "mattermost.retry"]
    assert statuses == [503, 503]


async def test_503_forever_raises_server_unavailable_after_retries(
    server: Server, mm: MattermostClient, waits: list[float]
) -> None:
    server.on("POST", "/posts", sequence(lambda: mm_error(503, "app.unavailable", "down")))
    with pytest.raises(ServerUnavailable) as caught:
        await mm.create_post("c1", "hello")
    assert caught.value.status == 503
    assert server.count("POST", "/posts") == 1 + 3  # first try + retries
    assert len(waits) == 3


async def test_retried_post_keeps_one_pending_post_id(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    server.on(
        "POST",
        "/posts",
        sequence(lambda: web.Response(status=502), lambda: web.json_response(POST, status=201)),
    )
    post = await mm.create_post("c1", "hi", root_id="r1", props={"k": 1})
    assert post.id == "p1"
    bodies = [json.loads(r["body"]) for r in server.requests if r["path"] == "/api/v4/posts"]
    assert len(bodies) == 2
    assert bodies[0]["pending_post_id"] and bodies[0]["pending_post_id"] == bodies[1]["pending_post_id"]
    assert bodies[0]["root_id"] == "r1" and bodies[0]["props"] == {"k": 1}


async def test_connection_refused_raises_server_unavailable(waits: list[float]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with MattermostClient(f"http://127.0.0.1:{port}", TOKEN, retries=2, backoff=0.01) as client:
        with pytest.raises(ServerUnavailable) as caught:
            await client.get_me()
    assert caught.value.status == 0
    assert len(waits) == 2
    assert TOKEN not in str(caught.value)


async def test_timeout_is_retried(server: Server, waits: list[float]) -> None:
    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response(USER)

    server.on("GET", "/users/me", slow)
    async with MattermostClient(server.url, TOKEN, retries=1, backoff=0.01, timeout=0.1) as client:
        with pytest.raises(ServerUnavailable):
            await client.get_me()
    assert server.count("GET", "/users/me") == 2


# --- errors -----------------------------------------------------------------------------


async def test_403_is_not_retried_and_raises_forbidden(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    server.on(
        "POST",
        "/channels/c1/members",
        ok(
            {
                "id": "api.context.permissions.app_error",
                "message": "You do not have the appropriate permissions.",
                "detailed_error": "",
                "request_id": "rq42",
                "status_code": 403,
            },
            status=403,
        ),
    )
    with pytest.raises(Forbidden) as caught:
        await mm.add_channel_member("c1", "u2")
    error = caught.value
    assert error.status == 403
    assert error.error_id == "api.context.permissions.app_error"
    assert error.request_id == "rq42"
    assert server.count("POST", "/channels/c1/members") == 1
    assert waits == []


async def test_error_text_never_holds_the_token(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    # Even a server that echoes the token back does not get it into our messages or logs.
    server.on(
        "GET",
        "/users/me",
        ok(
            {
                "id": "api.context.session_expired.app_error",
                "message": f"bad token={TOKEN}",
                "detailed_error": f"token={TOKEN}",
                "request_id": "r",
                "status_code": 401,
            },
            status=401,
        ),
    )
    with capture_logs() as logs, pytest.raises(MattermostError) as caught:
        await mm.get_me()
    assert caught.value.status == 401
    for text in (str(caught.value), repr(caught.value), caught.value.message, caught.value.detailed_error):
        assert TOKEN not in text
        assert "Bearer" not in text and "Authorization" not in text
    assert TOKEN not in repr(mm)
    assert TOKEN not in repr(logs)


async def test_retry_logs_hold_no_token(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    server.on("GET", "/users/me", sequence(lambda: web.Response(status=500), lambda: web.json_response(USER)))
    with capture_logs() as logs:
        await mm.get_me()
    assert logs and TOKEN not in repr(logs)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


async def test_channel_name_taken(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    server.on(
        "POST",
        "/channels",
        ok(
            {
                "id": "store.sql_channel.save_channel.exists.app_error",
                "message": "A channel with that name already exists on the same team.",
                "detailed_error": "",
                "request_id": "r1",
                "status_code": 400,
            },
            status=400,
        ),
    )
    with pytest.raises(ChannelNameTaken) as caught:
        await mm.create_channel("t1", "inc-1", "Incident 1")
    assert isinstance(caught.value, BadRequest)
    assert server.count("POST", "/channels") == 1


async def test_other_400_is_plain_bad_request(server: Server, mm: MattermostClient) -> None:
    server.on("POST", "/channels", ok({"id": "model.channel.is_valid.name.app_error", "message": "bad"}, 400))
    with pytest.raises(BadRequest) as caught:
        await mm.create_channel("t1", "-", "x")
    assert not isinstance(caught.value, ChannelNameTaken)


# --- payloads ---------------------------------------------------------------------------


async def test_create_channel_sends_fields_and_parses(server: Server, mm: MattermostClient) -> None:
    channel = {
        "id": "c9",
        "team_id": "t1",
        "name": "inc-1",
        "display_name": "Incident 1",
        "type": "P",
        "header": "h",
        "purpose": "p",
        "creator_id": "bot",
        "extra_field": 1,
    }
    server.on("POST", "/channels", ok(channel, 201))
    created = await mm.create_channel("t1", "inc-1", "Incident 1", header="h", purpose="p")
    assert created.id == "c9" and created.type == "P"
    sent = json.loads(server.requests[0]["body"])
    assert sent == {"team_id": "t1", "name": "inc-1", "display_name": "Incident 1", "type": "P", "header": "h", "purpose": "p"}


async def test_not_found_lookups_give_none(server: Server, mm: MattermostClient) -> None:
    assert await mm.get_user_by_username("@nobody") is None
    assert server.requests[-1]["path"] == "/api/v4/users/username/nobody"
    assert await mm.get_team_by_name("nope") is None
    assert await mm.get_channel_by_name("t1", "nope") is None
    assert await mm.get_post("gone") is None
    assert await mm.is_channel_member("c1", "u1") is False
    with pytest.raises(NotFound):
        await mm.get_user("nobody")


async def test_membership_checks(server: Server, mm: MattermostClient) -> None:
    server.on("GET", "/teams/t1/members/u1", ok({"team_id": "t1", "user_id": "u1", "delete_at": 0}))
    server.on("GET", "/teams/t1/members/u2", ok({"team_id": "t1", "user_id": "u2", "delete_at": 5}))
    server.on("GET", "/channels/c1/members/u1", ok({"channel_id": "c1", "user_id": "u1"}))
    assert await mm.is_team_member("t1", "u1") is True
    assert await mm.is_team_member("t1", "u2") is False  # left the team
    assert await mm.is_team_member("t1", "u3") is False
    assert await mm.is_channel_member("c1", "u1") is True


async def test_channel_member_ids_paginate(server: Server, mm: MattermostClient) -> None:
    async def members(request: web.Request) -> web.Response:
        page = int(request.query["page"])
        per_page = int(request.query["per_page"])
        everyone = [{"channel_id": "c1", "user_id": f"u{i}"} for i in range(per_page + 5)]
        return web.json_response(everyone[page * per_page : (page + 1) * per_page])

    server.on("GET", "/channels/c1/members", members)
    ids = await mm.get_channel_member_ids("c1")
    assert len(ids) == len(set(ids)) == 205
    assert ids[0] == "u0"
    assert server.count("GET", "/channels/c1/members") == 2


async def test_posts_since_are_oldest_first_and_keep_deleted(server: Server, mm: MattermostClient) -> None:
    posts = {
        "b": {**POST, "id": "b", "create_at": 300, "update_at": 900, "delete_at": 900, "props": None},
        "a": {**POST, "id": "a", "create_at": 100, "update_at": 800, "edit_at": 800, "file_ids": None},
        "c": {**POST, "id": "c", "create_at": 200},
    }
    server.on("GET", "/channels/c1/posts", ok({"order": ["b", "c", "a"], "posts": posts}))
    result = await mm.get_posts_since("c1", 50)
    assert [p.id for p in result] == ["a", "c", "b"]
    assert result[2].delete_at == 900 and result[2].props == {}
    assert result[0].file_ids == []
    assert server.requests[-1]["query"] == {"since": "50"}
    assert result[0].created.year == 1970 and result[0].created.tzinfo is not None


async def test_posts_since_asks_again_past_the_servers_thousand(server: Server, mm: MattermostClient) -> None:
    # The server answers at most 1000 posts to one ?since=, the oldest changes first: the
    # outbox looking for its post and find_reply in a busy DM need every one of them.
    everything = [{**POST, "id": f"p{i:04d}", "create_at": 1000 + i, "update_at": 1000 + i} for i in range(1500)]

    async def since(request: web.Request) -> web.Response:
        after = int(request.query["since"])
        hits = [p for p in everything if p["update_at"] > after][:1000]
        return web.json_response({"order": [p["id"] for p in hits], "posts": {p["id"]: p for p in hits}})

    server.on("GET", "/channels/c1/posts", since)
    result = await mm.get_posts_since("c1", 50)
    assert [p.id for p in result] == [p["id"] for p in everything]  # each once, oldest first
    assert [r["query"]["since"] for r in server.requests] == ["50", "1998"]


async def test_thread_and_empty_lists(server: Server, mm: MattermostClient) -> None:
    server.on(
        "GET",
        "/posts/r/thread",
        ok(
            {
                "order": [],
                "posts": {
                    "x": {**POST, "id": "x", "root_id": "r", "create_at": 5},
                    "r": {**POST, "id": "r", "create_at": 1},
                },
            }
        ),
    )
    server.on("GET", "/posts/r/reactions", ok(None))
    assert [p.id for p in await mm.get_thread("r")] == ["r", "x"]
    assert await mm.get_reactions("r") == []
    assert await mm.get_users_by_ids([]) == []
    assert server.count("POST", "/users/ids") == 0


async def test_patch_post_sends_only_given_fields(server: Server, mm: MattermostClient) -> None:
    server.on("PUT", "/posts/p1/patch", ok({**POST, "message": "new"}))
    post = await mm.patch_post("p1", message="new")
    assert post.message == "new"
    assert json.loads(server.requests[-1]["body"]) == {"message": "new"}


async def test_upload_file_is_multipart_and_rebuilt_on_retry(server: Server, mm: MattermostClient, waits: list[float]) -> None:
    seen: list[dict[str, Any]] = []
    calls = {"n": 0}

    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["files"]
        seen.append(
            {
                "channel_id": form["channel_id"],
                "filename": upload.filename,
                "content_type": upload.content_type,
                "content": upload.file.read(),
                "request_type": request.content_type,
            }
        )
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=500)
        return web.json_response(
            {"file_infos": [{"id": "f1", "name": upload.filename, "size": 5, "mime_type": "text/markdown"}], "client_ids": []},
            status=201,
        )

    server.on("POST", "/files", upload)
    info = await mm.upload_file("c1", "postmortem.md", b"# PM\n")
    assert info.id == "f1" and info.name == "postmortem.md" and info.size == 5
    assert len(seen) == 2
    assert seen[1] == {
        "channel_id": "c1",
        "filename": "postmortem.md",
        "content_type": "text/markdown",
        "content": b"# PM\n",
        "request_type": "multipart/form-data",
    }


async def test_reactions_and_direct_channel(server: Server, mm: MattermostClient) -> None:
    reaction = {"user_id": "u1", "post_id": "p1", "emoji_name": "white_check_mark", "create_at": 7}
    server.on("POST", "/reactions", ok(reaction, 201))
    server.on("POST", "/channels/direct", ok({"id": "d1", "name": "u1__u2", "type": "D", "team_id": ""}, 201))
    added = await mm.add_reaction("p1", "white_check_mark", "u1")
    assert added.emoji_name == "white_check_mark"
    assert json.loads(server.requests[-1]["body"]) == {"user_id": "u1", "post_id": "p1", "emoji_name": "white_check_mark"}
    direct = await mm.create_direct_channel("u1", "u2")
    assert direct.type == "D"
    assert json.loads(server.requests[-1]["body"]) == ["u1", "u2"]


async def test_given_session_is_not_closed(server: Server) -> None:
    import aiohttp

    server.on("GET", "/users/me", ok(USER))
    async with aiohttp.ClientSession() as session:
        async with MattermostClient(server.url, TOKEN, session=session) as client:
            await client.get_me()
        assert not session.closed


async def test_a_name_mattermost_reserves_for_mentions_is_no_user(server: Server, mm: MattermostClient) -> None:
    """`--invite @all` or `assign 1 @here`: the real server answers 400 for these names."""
    server.on(
        "GET",
        "/users/username/all",
        ok({"id": "api.context.invalid_body_param.app_error", "message": "Invalid or missing username", "status_code": 400}, 400),
    )
    assert await mm.get_user_by_username("@all") is None


async def test_a_replica_that_may_not_write_sends_no_write_but_still_reads(server: Server, waits: list[float]) -> None:
    """app/leadership.py: a standby or a deposed leader writes nothing to Mattermost, also
    not a retry of a write that began while it led."""
    leading = {"now": True}
    server.on("GET", "/users/me", ok(USER))

    async def refuse_then_note(request: web.Request) -> web.Response:
        leading["now"] = False  # the lease ran out while this call was being retried
        return mm_error(503, "app.unavailable", "down")

    server.on("POST", "/posts", refuse_then_note)
    async with MattermostClient(server.url, TOKEN, retries=3, backoff=0.01, may_write=lambda: leading["now"]) as client:
        with pytest.raises(ServerUnavailable, match="not the leader"):
            await client.create_post("c1", "hello")
        assert server.count("POST", "/posts") == 1, "the retry after the lease ran out was not sent"
        with pytest.raises(ServerUnavailable, match="not the leader"):
            await client.create_post("c1", "again")
        assert server.count("POST", "/posts") == 1
        assert (await client.get_me()).id == "u1"
