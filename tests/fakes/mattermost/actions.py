"""The fake's message buttons and selects as the real server makes them
(app/integration_action.go): ``POST /posts/{post_id}/actions/{action_id}``. The dialogs a
click's trigger id opens are integrations.py's (one trigger table for commands and clicks).

A person's click makes the server POST the action's ``integration.context`` (plus
``selected_option`` for a select) with who, where and a ``trigger_id`` to the action's URL; a
non-200 answer is a 400 for the person. The integration's ``update`` replaces the post's
message (and props, when given); its ``ephemeral_text`` reaches only that person, as an
``ephemeral_message`` WebSocket event. The person's own answer is ``{"status": "OK",
"trigger_id": …}``."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.fakes.mattermost.common import ApiFailure, forbidden, new_id

INTEGRATION_TIMEOUT = 30.0


class IntegrationActions:
    """Mixed into the fake server with the state and REST parts (``_endpoint``, posts, ``_publish``)."""

    def _action_routes(self) -> list[tuple[str, str, Any, bool]]:
        return [("POST", "/posts/{post_id}/actions/{action_id}", self.h_post_action, True)]

    async def _call_integration(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to the integration (integrations.py's outgoing call); its JSON answer
        ({} when empty). Real DoActionRequest: anything but a 200 is a 400 for the person."""
        failed = ApiFailure(400, "api.post.do_action.action_integration.app_error")
        try:
            status, answer = await self._call_out(url, body=body)  # type: ignore[attr-defined]  # integrations.py
        except ApiFailure:
            raise failed from None
        if status != 200:
            raise failed
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
        self._triggers[trigger_id] = (ctx.user_id, time.time())  # type: ignore[attr-defined]  # integrations.py's table
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
