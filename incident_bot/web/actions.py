"""POST /mattermost/action (a click on a message button) and POST /mattermost/action-dialog (a
dialog the bot opened, submitted): JSON in, the integration response out, app/actions.py between.

The routes are served from the start, before the bot has logged in and wired its use cases;
until then (``bind``) a click is answered 503 with the adapters' "starting" text (web/wiring.py)
and Mattermost shows the person an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from incident_bot.app.actions import Actions, Answer, Click, Submission
from incident_bot.domain.buttons import ACTION_PATH, DIALOG_PATH
from incident_bot.web.wiring import NOT_READY

log = structlog.get_logger("incident_bot.web")

MAX_BODY = 64 * 1024  # a click or a dialog is a few hundred bytes

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


class ActionRoutes:
    def __init__(self) -> None:
        self._actions: Actions | None = None

    def bind(self, actions: Actions | None) -> None:
        """Start answering clicks with ``actions`` (the bot is logged in and wired); None:
        answer 503 again (a replica that stopped leading, app/leadership.py)."""
        self._actions = actions

    def routes(self) -> list[Route]:
        return [("POST", ACTION_PATH, self._click), ("POST", DIALOG_PATH, self._submit)]

    async def _click(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, Click, lambda actions, body: actions.click(body))

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, Submission, lambda actions, body: actions.submit(body))

    async def _handle(
        self, request: web.Request, model: type[BaseModel], call: Callable[[Actions, Any], Awaitable[Answer]]
    ) -> web.StreamResponse:
        if self._actions is None:
            return web.json_response({"error": NOT_READY}, status=503)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": "too large"}, status=413)
        try:
            body = model.model_validate_json(await request.read())
        except ValidationError:
            log.warning("action.bad_request", path=request.path)
            return web.json_response({"error": "bad request"}, status=400)
        answer = await call(self._actions, body)
        return web.json_response(answer.json())
