"""The fake's interactive messages as the real server makes them (app/integration_action.go):
message buttons and selects (``POST /posts/{post_id}/actions/{action_id}``) and interactive
dialogs (``/actions/dialogs/open`` and ``/submit``).

A person's click makes the server POST the action's ``integration.context`` (plus
``selected_option`` for a select) with who, where and a ``trigger_id`` to the action's URL; a
non-200 answer is a 400 for the person. The integration's ``update`` replaces the post's
message (and props, when given); its ``ephemeral_text`` reaches only that person, as an
``ephemeral_message`` WebSocket event. The person's own answer is ``{"status": "OK",
"trigger_id": …}``. A dialog opened with a trigger id (valid for ``trigger_ttl`` seconds) is an
``open_dialog`` event to the person; its submission is POSTed to the URL the client sends, and
the integration's answer (``errors``, ``error``) is the person's answer."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.mattermost.common import API, ApiFailure, bad_body, forbidden, new_id

TRIGGER_TTL = 30.0  # real: ServiceSettings.OutgoingIntegrationRequestsTimeout (30 s by default)
INTEGRATION_TIMEOUT = 30.0


class IntegrationActions:
    """Mixed into the fake server with the state and REST parts (``_endpoint``, posts, ``_publish``)."""

    def _init_actions(self) -> None:
        self.trigger_ttl = TRIGGER_TTL
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger id -> (user id, when made)
        # Every call the fake made to an integration: {"url", "body", "status", "answer"}.
        self.integration_calls: list[dict[str, Any]] = []
        self.dialogs_opened: list[dict[str, Any]] = []

    def _register_action_routes(self, router: web.UrlDispatcher) -> None:
        table = [
            ("POST", "/posts/{post_id}/actions/{action_id}", self.h_post_action, True),
            ("POST", "/actions/dialogs/open", self.h_open_dialog, False),
            ("POST", "/actions/dialogs/submit", self.h_submit_dialog, True),
        ]
        for method, path, handler, auth in table:
            router.add_route(method, API + path, self._endpoint(handler, auth))  # type: ignore[attr-defined]

    async def _call_integration(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the integration; its JSON answer ({} when empty). Real: 400 unless 200."""
        record: dict[str, Any] = {"url": url, "body": body, "status": None, "answer": None}
        self.integration_calls.append(record)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=INTEGRATION_TIMEOUT)) as session,
                session.post(url, json=body, headers={"Accept": "application/json"}) as resp,
            ):
                record["status"] = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            raise ApiFailure(400, "api.post.do_action.action_integration.app_error") from None
        if record["status"] != 200:
            raise ApiFailure(400, "api.post.do_action.action_integration.app_error")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise ApiFailure(400, "api.post.do_action.action_integration.app_error") from None
        record["answer"] = answer
        return answer if isinstance(answer, dict) else {}

    async def h_post_action(self, ctx: Any, post_id: str, action_id: str) -> tuple[int, Any]:
        body = await ctx.json("action")
        selected = body.get("selected_option", "") if isinstance(body, dict) else ""
        post = self._live_post(ctx.id_param(post_id, "post_id"))  # type: ignore[attr-defined]
        if post is None:
            raise forbidden()  # real: the read permission is checked by post first
        channel = self.channels[post["channel_id"]]  # type: ignore[attr-defined]
        if not self._can_read_channel(ctx.user_id, channel):  # type: ignore[attr-defined]
            raise forbidden()
        action = next(
            (
                a
                for attachment in (post["props"] or {}).get("attachments") or []
                for a in attachment.get("actions") or []
                if a.get("id") == action_id
            ),
            None,
        )
        if action is None or not isinstance(action.get("integration"), dict):
            raise ApiFailure(404, "api.post.do_action.action_id.app_error")
        integration = action["integration"]
        context = dict(integration.get("context") or {})
        if action.get("type") == "select" and selected:
            context["selected_option"] = selected
        trigger_id = new_id()
        self._triggers[trigger_id] = (ctx.user_id, time.monotonic())
        user = self.users[ctx.user_id]  # type: ignore[attr-defined]
        team = self.teams.get(channel["team_id"]) if channel["team_id"] else None  # type: ignore[attr-defined]
        upstream = {
            "user_id": ctx.user_id,
            "user_name": user["username"],
            "channel_id": channel["id"],
            "channel_name": channel["name"],
            "team_id": channel["team_id"],
            "team_name": team["name"] if team else "",
            "post_id": post["id"],
            "trigger_id": trigger_id,
            "type": action.get("type") or "button",
            "data_source": action.get("data_source") or "",
            "context": context,
        }
        answer = await self._call_integration(str(integration.get("url") or ""), upstream)
        update = answer.get("update")
        if isinstance(update, dict):
            props = update.get("props")
            self._edit_post(  # type: ignore[attr-defined]
                post,
                message=update.get("message") if isinstance(update.get("message"), str) else None,
                props=props if isinstance(props, dict) else None,
            )
        text = answer.get("ephemeral_text")
        if isinstance(text, str) and text:
            ephemeral = {
                "id": new_id(),
                "channel_id": channel["id"],
                "root_id": post["root_id"] or post["id"],
                "user_id": post["user_id"],
                "message": text,
                "create_at": self.now_ms(),  # type: ignore[attr-defined]
                "type": "",
                "props": {},
            }
            self._publish("ephemeral_message", {"post": json.dumps(ephemeral)}, user_id=ctx.user_id)  # type: ignore[attr-defined]
        return 200, {"status": "OK", "trigger_id": trigger_id}

    async def h_open_dialog(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("dialog")
        if not isinstance(body, dict):
            raise bad_body("dialog")
        if not body.get("url"):
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="url")
        seen = self._triggers.get(str(body.get("trigger_id") or ""))
        if seen is None:
            raise ApiFailure(400, "interactive_message.decode_trigger_id.signature_decode_failed")
        user_id, made = seen
        if time.monotonic() - made > self.trigger_ttl:
            raise ApiFailure(400, "interactive_message.decode_trigger_id.expired")
        self.dialogs_opened.append(body)
        self._publish("open_dialog", {"dialog": json.dumps(body)}, user_id=user_id)  # type: ignore[attr-defined]
        return 200, {"status": "OK"}

    async def h_submit_dialog(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("dialog")
        if not isinstance(body, dict):
            raise bad_body("dialog")
        url = body.get("url")
        if not url:
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="url")
        channel = self.channels.get(body.get("channel_id") or "")  # type: ignore[attr-defined]
        if channel is None:
            raise ApiFailure(404, "app.channel.get.existing.app_error")
        if not self._can_read_channel(ctx.user_id, channel):  # type: ignore[attr-defined]
            raise forbidden()
        upstream = {k: v for k, v in body.items() if k != "url"}
        upstream["user_id"] = ctx.user_id
        upstream["type"] = "dialog_submission"
        answer = await self._call_integration(str(url), upstream)
        return 200, answer
