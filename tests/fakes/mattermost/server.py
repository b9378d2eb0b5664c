"""The fake server: state + REST routes + WebSocket + faults on one aiohttp application.

A REST request goes through one middleware: the caller is looked up from its token, a
``pending_post_id`` is claimed (``POST /posts``), fault rules apply (delay, then failure),
aiohttp's router picks the handler, an ``ApiFailure`` (or an unknown path or method)
becomes the real error JSON, and the request is recorded (``requests``, ``request_log``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.mattermost.actions import IntegrationActions
from tests.fakes.mattermost.common import API, PENDING_POST_ID_TTL, ApiFailure, error_body, new_id, token_from
from tests.fakes.mattermost.faults import Faults
from tests.fakes.mattermost.integrations import Integrations
from tests.fakes.mattermost.routes import CTX_KEY, RestRoutes, _Ctx, std_headers
from tests.fakes.mattermost.state import State
from tests.fakes.mattermost.websocket import WebSocketEvents


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    user_id: str | None
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)
    started: float = 0.0  # time.monotonic() when the request came in
    elapsed: float = 0.0  # seconds the fake spent on it (faults' delays included)


class FakeMattermost(Integrations, IntegrationActions, RestRoutes, WebSocketEvents, State):
    """The fake server. ``await start()`` returns the base URL; ``await stop()`` ends it.

    Public state for assertions: ``requests`` [(method, path, status)], ``request_log``
    [RequestRecord], ``ws_log`` [{user_id, connection_id, envelope, delivered}], and the
    data (``users``, ``channels``, ``all_posts()`` …). Faults: ``faults`` (see faults.py).
    """

    def __init__(
        self,
        *,
        resume_window: float = 300.0,
        ws_auth_timeout: float = 5.0,
        system_posts: bool = True,
        per_recipient_mentions: bool = True,
        hello_on_resume: bool = False,
    ) -> None:
        self._init_state(system_posts=system_posts, per_recipient_mentions=per_recipient_mentions)
        self._init_websocket(resume_window=resume_window, ws_auth_timeout=ws_auth_timeout, hello_on_resume=hello_on_resume)
        self._init_integrations()
        self.faults = Faults(self)
        self.requests: list[tuple[str, str, int]] = []
        self.request_log: list[RequestRecord] = []
        # pending_post_id -> (post id, or "" while the request is in flight; when; that request)
        self._pending_ids: dict[str, tuple[str, float, Any]] = {}
        # seconds a pending_post_id makes POST /posts idempotent (real: 30 s)
        self.pending_post_id_ttl = PENDING_POST_ID_TTL
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get(API + "/websocket", self._ws_handler)
        app.router.add_get(API + "/websocket/", self._ws_handler)
        self._register_routes(app.router)
        app.router.add_post("/hooks/commands/{hook_id}", self.h_command_hook)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for sock in list(self._sockets):
            self._close_socket(sock, abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeMattermost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------------------- what happened

    def count_requests(self, method: str, path_regex: str, status: int | None = None) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, s in self.requests if method in ("*", m) and rx.search(p) and (status is None or s == status))

    def _record(self, request: web.Request, status: int, user_id: str | None, body: Any, started: float = 0.0) -> None:
        self.requests.append((request.method, request.path, status))
        elapsed = time.monotonic() - started if started else 0.0
        self.request_log.append(
            RequestRecord(
                request.method, request.path, status, user_id, dict(request.query), body, started=started, elapsed=elapsed
            )
        )

    # ---------------------------------------------------------------------------- REST dispatch

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "GET" and request.path.rstrip("/") == API + "/websocket":
            return await handler(request)  # the upgrade records itself
        started = time.monotonic()
        request_id = new_id()
        token = token_from(request)
        user_id = self.tokens.get(token) if token else None
        ctx = _Ctx(self, request, request_id, user_id)
        request[CTX_KEY] = ctx
        claim = await self._claim_pending(request) if request.method == "POST" and request.path == API + "/posts" else None
        try:
            response = await self._handle(request, handler, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the fake should be loud (a 500 and a traceback), not a hang
            traceback.print_exc()
            response = web.json_response(
                error_body(500, "app.fake.internal.app_error", f"fake bug: {exc!r}", request_id), status=500
            )
        finally:
            entry = self._pending_ids.get(claim) if claim else None
            if entry is not None and not entry[0] and entry[2] is request:
                del self._pending_ids[claim]  # real: a failed create lets the client retry
        if isinstance(response, web.Response) and response.content_type == "application/json":
            # Real: exactly "application/json", no charset; mattermostautodriver compares the
            # header with that string and treats anything else as not JSON.
            response.charset = None
        self._record(request, response.status, user_id, ctx.body_value, started)
        return response

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], ctx: _Ctx
    ) -> web.StreamResponse:
        fail = await self.faults.before(request, ctx.user_id)
        if fail is not None and not fail.after_effect:
            return self.faults.response(fail, ctx.request_id)
        try:
            if not request.path.startswith((API + "/", "/hooks/")):
                raise ApiFailure(404, "api.context.404.app_error")
            response = await handler(request)
        except ApiFailure as exc:
            response = self._error_response(exc.status, exc.error_id, ctx.request_id, **exc.params)
        except web.HTTPMethodNotAllowed:
            response = self._error_response(405, "api.context.405.app_error", ctx.request_id)
        except web.HTTPNotFound:
            response = self._error_response(404, "api.context.404.app_error", ctx.request_id)
        if fail is not None and fail.after_effect:
            return self.faults.response(fail, ctx.request_id)
        return response

    def _error_response(self, status: int, error_id: str, request_id: str, **params: Any) -> web.Response:
        return web.json_response(
            error_body(status, error_id, request_id=request_id, **params), status=status, headers=std_headers(request_id)
        )

    async def _claim_pending(self, request: web.Request) -> str | None:
        """Real: the pending id is claimed as the request comes in, before the post is saved."""
        try:
            body = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            return None
        pending = body.get("pending_post_id") if isinstance(body, dict) else None
        if not isinstance(pending, str) or not pending:
            return None
        seen = self._pending_ids.get(pending)
        if seen is not None and time.monotonic() - seen[1] < self.pending_post_id_ttl:
            return None  # someone else's claim, or a post already made
        self._pending_ids[pending] = ("", time.monotonic(), request)
        return pending
