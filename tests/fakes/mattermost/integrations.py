"""Slash commands, their response URLs, interactive dialogs and ephemeral posts, as the
real server does them (server/channels/app/command.go, integration_action.go, web/webhook.go):

- ``POST /commands`` (and ``PUT /commands/{id}``, ``GET /commands?team_id=``) registers a
  custom command; only admins may (Mattermost's default: integrations managed by admins).
  The answer carries the ``token`` the server sends with every call.
- ``POST /commands/execute`` {channel_id, team_id, command, root_id}: the caller must be
  able to post in the channel; the server POSTs a form (token, team_id, team_domain,
  channel_id, channel_name, user_id, user_name, command, text, trigger_id, root_id,
  response_url) to the command's URL, with ``Authorization: Token …``, and answers with the
  command's response: ``ephemeral`` text goes to the user as an ``ephemeral_message`` event,
  ``in_channel`` becomes a post of the user (``from_webhook``). Not 200: a 500.
- ``POST /hooks/commands/{id}`` (the response URL, no token): the same, up to 5 times within
  30 minutes; answers ``ok`` as text.
- ``POST /actions/dialogs/open`` {trigger_id, url, dialog}: the trigger id (made by execute,
  for that user, good for the outgoing timeout) opens the dialog for its user: an
  ``open_dialog`` event whose ``dialog`` is the request as a JSON string.
- ``POST /actions/dialogs/submit`` {url, callback_id, state, channel_id, team_id,
  submission, cancelled}: the server adds ``user_id`` (the caller) and ``type``, POSTs the
  JSON to ``url``, and answers with what came back (``{}`` for an empty body).
- ``POST /posts/ephemeral`` {user_id, post}: needs ``create_post_ephemeral`` (admins).
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.mattermost.common import ApiFailure, bad_body, forbidden, is_valid_id, new_id

HOOK_USES = 5  # real: MaxIntegrationResponseUses … a response URL answers 5 times
HOOK_LIFETIME = 30 * 60  # seconds
OUTGOING_TIMEOUT = 30  # seconds: ServiceSettings.OutgoingIntegrationRequestsTimeout; also the trigger's life


class Integrations:
    """Mixed into the fake server with the REST routes; holds commands, hooks and triggers."""

    users: dict[str, dict[str, Any]]
    teams: dict[str, dict[str, Any]]
    channels: dict[str, dict[str, Any]]
    url: str
    bot_user_id: str | None

    def _init_integrations(self) -> None:
        self.commands_enabled = True  # ServiceSettings.EnableCommands
        self.slash_commands: dict[str, dict[str, Any]] = {}
        self._command_hooks: dict[str, dict[str, Any]] = {}
        self._triggers: dict[str, tuple[str, float]] = {}  # trigger id -> (user id, time)
        self.dialogs_opened: list[dict[str, Any]] = []  # for assertions: {user_id, request}
        self.outgoing: list[dict[str, Any]] = []  # calls the server made: {url, status}

    def _integration_routes(self) -> list[tuple[str, str, Any, bool]]:
        return [
            ("POST", "/commands/execute", self.h_execute_command, True),
            ("POST", "/commands", self.h_create_command, True),
            ("GET", "/commands", self.h_list_commands, True),
            ("PUT", "/commands/{command_id}", self.h_update_command, True),
            ("POST", "/actions/dialogs/open", self.h_open_dialog, True),
            ("POST", "/actions/dialogs/submit", self.h_submit_dialog, True),
            ("POST", "/posts/ephemeral", self.h_post_ephemeral, True),
            ("GET", "/config/client", self.h_client_config, False),
        ]

    async def h_client_config(self, ctx: Any) -> tuple[int, Any]:
        """``GET /config/client?format=old``: what the bot reads of it."""
        return 200, {"EnableCommands": str(self.commands_enabled).lower(), "Version": "fake"}

    # ---------------------------------------------------------------------------- registering

    def _require_command_admin(self, user_id: str, team_id: str) -> None:
        if not self.commands_enabled:
            raise ApiFailure(501, "api.command.disabled.app_error")
        if team_id not in self.teams:
            raise ApiFailure(400, "model.command.is_valid.team_id.app_error")
        if not self._is_admin(user_id):
            raise forbidden()

    async def h_create_command(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("command")
        if not isinstance(body, dict):
            raise bad_body("command")
        self._require_command_admin(ctx.user_id, str(body.get("team_id") or ""))
        trigger = str(body.get("trigger") or "").lower()
        if not trigger or trigger.startswith("/") or " " in trigger:
            raise ApiFailure(400, "model.command.is_valid.trigger.app_error")
        if any(
            c["team_id"] == body["team_id"] and c["trigger"] == trigger and not c["delete_at"]
            for c in self.slash_commands.values()
        ):
            raise ApiFailure(400, "api.command.duplicate_trigger.app_error")
        url = str(body.get("url") or "")
        if not url.startswith(("http://", "https://")):
            raise ApiFailure(400, "model.command.is_valid.url_http.app_error")
        now = int(time.time() * 1000)
        command = {
            "id": new_id(),
            "token": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "creator_id": ctx.user_id,
            "team_id": body["team_id"],
            "trigger": trigger,
            "method": body.get("method") or "P",
            "url": url,
            "username": body.get("username") or "",
            "icon_url": body.get("icon_url") or "",
            "auto_complete": bool(body.get("auto_complete")),
            "auto_complete_desc": body.get("auto_complete_desc") or "",
            "auto_complete_hint": body.get("auto_complete_hint") or "",
            "display_name": body.get("display_name") or "",
            "description": body.get("description") or "",
        }
        self.slash_commands[command["id"]] = command
        return 201, dict(command)

    async def h_list_commands(self, ctx: Any) -> tuple[int, Any]:
        team_id = ctx.request.query.get("team_id", "")
        self._require_command_admin(ctx.user_id, team_id)
        return 200, [dict(c) for c in self.slash_commands.values() if c["team_id"] == team_id and not c["delete_at"]]

    async def h_update_command(self, ctx: Any, command_id: str) -> tuple[int, Any]:
        body = await ctx.json("command")
        if not isinstance(body, dict) or body.get("id") != command_id:
            raise bad_body("command")
        command = self.slash_commands.get(command_id)
        if command is None or command["delete_at"]:
            raise ApiFailure(404, "app.command.getcommand.app_error")
        self._require_command_admin(ctx.user_id, command["team_id"])
        if body.get("team_id") and body["team_id"] != command["team_id"]:
            raise ApiFailure(400, "api.command.team_mismatch.app_error")
        for field in ("trigger", "method", "url", "username", "icon_url", "auto_complete", "auto_complete_desc",
                      "auto_complete_hint", "display_name", "description"):  # fmt: skip
            if field in body:
                command[field] = body[field]
        command["update_at"] = int(time.time() * 1000)
        return 200, dict(command)

    # ---------------------------------------------------------------------------- running

    async def h_execute_command(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("command_args")
        if not isinstance(body, dict):
            raise bad_body("command_args")
        text = str(body.get("command") or "")
        channel_id = str(body.get("channel_id") or "")
        if len(text) <= 1 or not text.startswith("/") or not is_valid_id(channel_id):
            raise ApiFailure(400, "api.command.execute_command.app_error")
        ch = self.channels.get(channel_id)
        if ch is None or not self._can_write_channel(ctx.user_id, ch):
            raise forbidden()
        team_id = ch["team_id"] or str(body.get("team_id") or "")
        trigger, _, message = text[1:].partition(" ")
        command = next(
            (
                c
                for c in self.slash_commands.values()
                if c["team_id"] == team_id and c["trigger"] == trigger.lower() and not c["delete_at"]
            ),
            None,
        )
        if command is None or not self.commands_enabled:
            raise ApiFailure(404, "api.command.execute_command.not_found.app_error", Trigger=trigger)
        user = self.users[ctx.user_id]
        trigger_id = new_id()
        self._triggers[trigger_id] = (ctx.user_id, time.time())
        hook_id = new_id()
        root_id = str(body.get("root_id") or "")
        self._command_hooks[hook_id] = {
            "command": command, "user_id": ctx.user_id, "channel_id": channel_id, "root_id": root_id,
            "team_id": team_id, "uses": 0, "created": time.time(),
        }  # fmt: skip
        form = {
            "token": command["token"],
            "team_id": command["team_id"],
            "team_domain": self.teams[command["team_id"]]["name"],
            "channel_id": channel_id,
            "channel_name": ch["name"],
            "user_id": ctx.user_id,
            "user_name": user["username"],
            "command": "/" + trigger.lower(),
            "text": message,
            "trigger_id": trigger_id,
            "root_id": root_id,
            "response_url": f"{self.url}/hooks/commands/{hook_id}",
        }
        status, response = await self._call_out(command["url"], form=form, token=command["token"])
        if status != 200:
            raise ApiFailure(500, "api.command.execute_command.failed_resp.app_error", Trigger=trigger)
        if response is None:
            raise ApiFailure(500, "api.command.execute_command.failed_empty.app_error", Trigger=trigger)
        self._command_response(response, ctx.user_id, channel_id, root_id)
        return 200, response

    async def _call_out(
        self, url: str, *, form: dict[str, str] | None = None, body: Any = None, token: str = ""
    ) -> tuple[int, Any]:
        """The server's outgoing request; (status, decoded answer: JSON, or text as {"text": …})."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = "Token " + token
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OUTGOING_TIMEOUT)) as http,
                http.post(url, data=form, json=body if form is None else None, headers=headers) as resp,
            ):
                raw = await resp.read()
                status = resp.status
                content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        except (aiohttp.ClientError, TimeoutError):
            self.outgoing.append({"url": url, "status": 0})
            raise ApiFailure(500, "api.command.execute_command.failed.app_error") from None
        self.outgoing.append({"url": url, "status": status})
        if status != 200:
            return status, None
        if content_type == "application/json":
            try:
                return status, json.loads(raw) if raw else None
            except ValueError:
                raise ApiFailure(500, "api.command.execute_command.failed.app_error") from None
        return status, {"text": raw.decode("utf-8", "replace")}

    def _command_response(self, response: dict[str, Any], user_id: str, channel_id: str, root_id: str) -> None:
        """Real HandleCommandResponsePost: in_channel posts as the user; ephemeral text (only
        when there is some) goes to the user alone."""
        text = str(response.get("text") or "")
        if response.get("response_type") == "in_channel":
            body = {"channel_id": channel_id, "message": text, "root_id": root_id, "props": {"from_webhook": "true"}}
            self._create_post(self.users[user_id], self.channels[channel_id], body)
        elif text:
            self._send_ephemeral(user_id, channel_id, text, root_id, author=user_id)

    def _send_ephemeral(self, user_id: str, channel_id: str, message: str, root_id: str = "", *, author: str) -> dict[str, Any]:
        """Real SendEphemeralPost: a post never stored, sent to ``user_id`` alone (a command's
        response is the user's own; ``/posts/ephemeral`` the caller's)."""
        now = int(time.time() * 1000)
        post = {
            "id": new_id(), "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0, "user_id": author,
            "channel_id": channel_id, "root_id": root_id, "message": message, "type": "system_ephemeral", "props": {},
        }  # fmt: skip
        self._publish("ephemeral_message", {"post": json.dumps(post)}, user_id=user_id)
        return post

    async def h_command_hook(self, request: web.Request) -> web.StreamResponse:
        """``POST /hooks/commands/{id}``: not under /api/v4, no token."""
        hook = self._command_hooks.get(request.match_info["hook_id"])
        if hook is None or time.time() - hook["created"] > HOOK_LIFETIME or hook["uses"] >= HOOK_USES:
            raise ApiFailure(400, "web.command_webhook.general.app_error")
        try:
            response = json.loads(await request.read())
        except ValueError:
            raise ApiFailure(400, "web.command_webhook.parse.app_error") from None
        if not isinstance(response, dict):
            raise ApiFailure(400, "web.command_webhook.parse.app_error")
        hook["uses"] += 1
        self._command_response(response, hook["user_id"], hook["channel_id"], hook["root_id"])
        return web.Response(text="ok", content_type="text/plain")

    # ---------------------------------------------------------------------------- dialogs

    async def h_open_dialog(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("dialog")
        if not isinstance(body, dict):
            raise bad_body("dialog")
        trigger = self._triggers.get(str(body.get("trigger_id") or ""))
        if trigger is None:
            raise ApiFailure(400, "interactive_message.decode_trigger_id.signature_decode_failed")
        if time.time() - trigger[1] > OUTGOING_TIMEOUT:
            raise ApiFailure(400, "interactive_message.decode_trigger_id.expired")
        dialog = body.get("dialog")
        if not body.get("url") or not isinstance(dialog, dict):
            raise ApiFailure(400, "interactive_message.generate_trigger_id.app_error")
        self.dialogs_opened.append({"user_id": trigger[0], "request": body})
        self._publish("open_dialog", {"dialog": json.dumps(body)}, user_id=trigger[0])
        return 200, {"status": "OK"}

    async def h_submit_dialog(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("dialog")
        if not isinstance(body, dict) or not body.get("url"):
            raise bad_body("dialog")
        ch = self.channels.get(str(body.get("channel_id") or ""))
        if ch is None or not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        url = body.pop("url")
        body["user_id"] = ctx.user_id
        body["type"] = "dialog_submission"
        status, response = await self._call_out(url, body=body)
        if status != 200:  # real DoActionRequest: any other status is a 400
            raise ApiFailure(400, "api.post.do_action.action_integration.app_error")
        return 200, response or {}

    async def h_post_ephemeral(self, ctx: Any) -> tuple[int, Any]:
        body = await ctx.json("post")
        if not isinstance(body, dict) or not isinstance(body.get("post"), dict):
            raise bad_body("post")
        if not self._is_admin(ctx.user_id):
            raise forbidden()  # create_post_ephemeral: system admins only by default
        post = body["post"]
        return 201, self._send_ephemeral(
            str(body.get("user_id") or ""), str(post.get("channel_id") or ""), str(post.get("message") or "")
        )
