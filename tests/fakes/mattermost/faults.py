"""Fault injection, the public way tests make the fake misbehave: ``fake.faults``.

REST faults are rules matched against each request (method, path regex searched in the
full path such as ``/api/v4/posts``, optionally one caller); each returns a ``FaultRule``
whose ``hits`` and ``remaining`` tests may read, and which ``faults.remove(rule)`` ends::

    fake.faults.fail(r"^/api/v4/posts$", 503, method="POST", user=bot_id)     # next request
    fake.faults.fail(r"/patch$", 503, times=None)                              # until removed
    fake.faults.fail(r"/users/me/teams$", 200, body="<html>proxy</html>")      # garbage answer
    fake.faults.fail(r"^/api/v4/posts$", 502, after_effect=True)               # lost response
    fake.faults.rate_limit(r"^/api/v4/channels$", times=2)                     # 429 + headers
    fake.faults.delay(r"^/api/v4/posts$", 2.0, user=bot_id)                    # a slow server
    outage = fake.faults.outage(user=bot_id); ...; fake.faults.remove(outage)  # every REST call 503

WebSocket faults act at once::

    await fake.faults.drop_socket()                 # every socket (or one user's), resumable
    await fake.faults.drop_socket(refuse_for=2.0)   # ... and upgrades refused (503) for 2 s
    fake.faults.refuse_websockets(4.0); fake.faults.accept_websockets()
    fake.faults.forget_connections()                # dropped connections cannot be resumed
    await fake.faults.restart(refuse_for=1.0)       # a server restart: drop all, forget all
    fake.faults.lose_events(3)                      # next 3 events use a seq but never arrive
    await fake.faults.send_raw("{not json")         # any frame, no seq
    await fake.faults.send_event("posted", data, broadcast)   # a well-formed event, next seq
    await fake.faults.redeliver_last("reaction_added")        # the same event again, new seq

``user`` is a user id or username; for events it defaults to the bot.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.mattermost.common import SERVER_VERSION, error_body

if TYPE_CHECKING:
    from tests.fakes.mattermost.server import FakeMattermost


@dataclass
class FaultRule:
    """One injected REST fault; ``remaining`` None means until removed."""

    kind: str  # "fail" | "delay"
    method: str
    pattern: re.Pattern[str]
    remaining: int | None
    status: int = 0
    headers: dict[str, str] | None = None
    body: Any = None
    seconds: float = 0.0
    user_id: str | None = None
    after_effect: bool = False
    hits: int = 0

    def matches(self, method: str, path: str, user_id: str | None) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method not in ("*", method):
            return False
        if self.user_id is not None and self.user_id != user_id:
            return False
        return bool(self.pattern.search(path))

    def take(self) -> None:
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1


RATE_LIMIT_HEADERS = {"Retry-After": "1", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}


class Faults:
    """``fake.faults``: see the module docstring."""

    def __init__(self, fake: FakeMattermost) -> None:
        self._fake = fake
        self._rules: list[FaultRule] = []

    # ---------------------------------------------------------------------------- REST

    def fail(
        self,
        path: str,
        status: int,
        *,
        method: str = "*",
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        user: str | None = None,
        after_effect: bool = False,
    ) -> FaultRule:
        """The next ``times`` matching requests (None: all until removed) get ``status``.

        With ``after_effect`` the request is applied first and only its response is replaced
        (a lost response). A 429 gets the real rate limiter's headers and text body unless
        overridden; ``body`` a dict (or list) replaces the error JSON, a str is sent as text.
        """
        return self._add(
            FaultRule(
                "fail",
                method.upper(),
                re.compile(path),
                times,
                status=status,
                headers=headers,
                body=body,
                user_id=self._fake._user_ref(user),
                after_effect=after_effect,
            )
        )

    def rate_limit(
        self,
        path: str = r"^/api/v4/",
        *,
        method: str = "*",
        times: int | None = 1,
        retry_after: float | None = 1,
        headers: dict[str, str] | None = None,
        user: str | None = None,
    ) -> FaultRule:
        """429 ``limit exceeded`` with the rate limiter's headers (``Retry-After`` unless None)."""
        hdrs = dict(RATE_LIMIT_HEADERS)
        if retry_after is None:
            del hdrs["Retry-After"]
        else:
            hdrs["Retry-After"] = f"{retry_after:g}"
        hdrs.update(headers or {})
        return self.fail(path, 429, method=method, times=times, headers=hdrs, user=user)

    def delay(self, path: str, seconds: float, *, method: str = "*", times: int | None = 1, user: str | None = None) -> FaultRule:
        """Hold the next ``times`` matching requests for ``seconds`` before handling them."""
        return self._add(
            FaultRule("delay", method.upper(), re.compile(path), times, seconds=seconds, user_id=self._fake._user_ref(user))
        )

    def outage(self, *, status: int = 503, user: str | None = None) -> FaultRule:
        """Every REST request (of ``user``) fails with ``status`` until ``remove``d."""
        return self.fail(r"^/api/v4/", status, times=None, user=user)

    def remove(self, rule: FaultRule) -> None:
        """End a rule now (also one with ``times=None``)."""
        rule.remaining = 0
        if rule in self._rules:
            self._rules.remove(rule)

    def clear(self) -> None:
        """No more REST faults, and WebSocket upgrades accepted again."""
        self._rules.clear()
        self.accept_websockets()

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def _add(self, rule: FaultRule) -> FaultRule:
        self._rules.append(rule)
        return rule

    # ---------------------------------------------------------------------------- WebSocket

    async def drop_socket(self, user: str | None = None, *, refuse_for: float = 0.0, abrupt: bool = True) -> int:
        """Close open websockets (all, or one user's) without a close frame; how many.

        Their connections stay resumable for ``fake.resume_window`` seconds. ``refuse_for``
        also refuses new upgrades (503) for that many seconds.
        """
        return await self._fake._drop_sockets(user, refuse_for=refuse_for, abrupt=abrupt)

    def refuse_websockets(self, seconds: float) -> None:
        """WebSocket upgrades get 503 for ``seconds`` (or until ``accept_websockets``)."""
        self._fake._refuse_websockets(seconds)

    def accept_websockets(self) -> None:
        self._fake.refuse_websocket_until = 0.0

    def forget_connections(self) -> None:
        """Lose the resume buffers of dropped connections (their resume gets a new hello)."""
        self._fake._forget_connections()

    async def restart(self, *, refuse_for: float = 0.0) -> None:
        """Act like a server restart: every socket drops and no connection can be resumed
        (data is kept)."""
        await self._fake._restart(refuse_for=refuse_for)

    def lose_events(self, count: int, user: str | None = None) -> None:
        """The next ``count`` events to a user's connections (default the bot) use up their
        seq and are kept for resume, but never reach the socket (lost in flight)."""
        self._fake._lose_next_events(count, user)

    async def send_raw(self, text: str, user: str | None = None) -> int:
        """An arbitrary text frame (no seq) to every socket of a user (default the bot)."""
        return await self._fake._send_raw(text, user)

    async def send_event(
        self, event: str, data: dict[str, Any], broadcast: dict[str, Any] | None = None, user: str | None = None
    ) -> int:
        """A well-formed event (next seq) to a user's connections (default the bot)."""
        return await self._fake._send_event(event, data, broadcast, user)

    async def redeliver_last(self, event: str, user: str | None = None) -> dict[str, Any]:
        """The most recent ``event`` envelope of a user (default the bot) again, with a new seq."""
        return await self._fake._redeliver_last(event, user)

    # ---------------------------------------------------------------------------- used by the server

    async def before(self, request: web.Request, user_id: str | None) -> FaultRule | None:
        """Apply a matching delay; the failure rule for this request, if any (taken)."""
        method, path = request.method, request.path
        for rule in self._rules:
            if rule.kind == "delay" and rule.matches(method, path, user_id):
                rule.take()
                if request.can_read_body and not request.content_type.startswith("multipart/"):
                    # Real: the request is in and gets handled even if its client is gone by
                    # then (a slow server, not a lost request); aiohttp fails a body read after
                    # the client hung up, so read it now.
                    await request.read()
                await asyncio.sleep(rule.seconds)
                break
        fail = next((r for r in self._rules if r.kind == "fail" and r.matches(method, path, user_id)), None)
        if fail is not None:
            fail.take()
        return fail

    @staticmethod
    def response(rule: FaultRule, request_id: str) -> web.Response:
        headers = {"X-Request-Id": request_id, "X-Version-Id": SERVER_VERSION}
        if rule.status == 429:
            headers.update(RATE_LIMIT_HEADERS)
        if rule.headers:
            headers.update(rule.headers)
        if isinstance(rule.body, (str, bytes)):
            return web.Response(
                status=rule.status,
                body=rule.body if isinstance(rule.body, bytes) else rule.body.encode(),
                headers=headers,
                content_type="text/plain",
            )
        if rule.body is not None:
            return web.json_response(rule.body, status=rule.status, headers=headers)
        if rule.status == 429:
            return web.Response(status=429, text="limit exceeded\n", headers=headers, content_type="text/plain")
        return web.json_response(
            error_body(rule.status, "app.fake.injected_fault.app_error", request_id=request_id),
            status=rule.status,
            headers=headers,
        )
