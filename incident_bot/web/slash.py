"""``POST /mattermost/command``: the `/incident` slash command, run as the mention is.

Mattermost POSTs the form (token, team_id, channel_id, user_id, user_name, command, text,
trigger_id, root_id, response_url) and waits for the answer. The token is checked first
(constant time, against every configured one); then the text goes through the same
listeners, command table, grammar, rules and use cases as ``@incident-bot <text>``.
What only the requester needs comes back ephemeral; changes are posted by the bot as the
reply to a mention is. Whatever is not answered within ``ANSWER_WITHIN`` seconds answers
later through ``response_url`` (or, posted, by itself). The dedupe key comes from the
``trigger_id``, so a retried request runs nothing and answers nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from incident_bot.app.request import Request
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.events import Posted
from incident_bot.chat.models import Post
from incident_bot.chat.port import ChatPort
from incident_bot.domain.commands import COMMANDS
from incident_bot.web.dialogs import StartDialog
from incident_bot.web.wiring import Wiring, not_ready, token_matches

log = structlog.get_logger("incident_bot.web")

PATH = "/mattermost/command"
# Mattermost shows "command timed out" to people after 3 s, whatever its own HTTP timeout.
ANSWER_WITHIN = 2.0


class SlashAnswer:
    """Private answers to one slash command: in the HTTP response while Mattermost waits
    for it, through ``response_url`` once it has been answered."""

    def __init__(self, chat: ChatPort, response_url: str, key: str) -> None:
        self.chat = chat
        self.response_url = response_url
        self.key = key
        self.texts: list[str] = []
        self.ready = asyncio.Event()
        self.responded = False

    async def private(self, text: str) -> None:
        if not self.responded:
            self.texts.append(text)
            self.ready.set()
            return
        if not self.response_url:
            log.warning("slash.late_answer_lost", key=self.key, reason="no response_url")
            return
        await self.chat.post_command_response(self.response_url, ephemeral(text))

    def close(self) -> str:
        """The answer for the HTTP response; later ones go through ``response_url``."""
        self.responded = True
        return "\n\n".join(self.texts)


def ephemeral(text: str) -> dict[str, Any]:
    """A command response only the requester sees; empty text shows nothing at all."""
    return {"response_type": "ephemeral", "text": text, "skip_slack_parsing": True}


class SlashCommand:
    """The handler of ``POST /mattermost/command``; ``wiring`` is set once the bot is logged in."""

    def __init__(self, tokens: list[str], dialog: StartDialog, answer_within: float = ANSWER_WITHIN) -> None:
        self.tokens = tokens
        self.dialog = dialog
        self.answer_within = answer_within
        self.wiring: Wiring | None = None

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = str(form.get("token") or "")
        if not given:  # Mattermost also sends it as "Authorization: Token …"
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            given = value.strip() if scheme.lower() == "token" else ""
        if not token_matches(given, self.tokens):
            log.warning("slash.refused", reason="missing token" if not given else "wrong token", remote=request.remote)
            return web.Response(status=401, text="unauthorized\n")
        wiring = self.wiring
        if wiring is None:
            return not_ready()
        field = {name: str(form.get(name) or "") for name in _FIELDS}
        if not (field["user_id"] and field["channel_id"]):
            log.warning("slash.malformed", missing=[n for n in ("user_id", "channel_id") if not field[n]])
            return web.Response(status=400, text="user_id and channel_id are required\n")
        text = field["text"].strip()
        # The trigger id is new for every run of the command; a retry carries the same one.
        # (A real server's trigger id is a long signed blob: its digest is the key.)
        key = "slash:" + hashlib.sha256(field["trigger_id"].encode() or await request.read()).hexdigest()[:32]
        if text.lower() == "start" and field["trigger_id"]:
            return await self._open_form(wiring, key, field)
        return await self._run(wiring, key, field, text)

    async def _open_form(self, wiring: Wiring, key: str, field: dict[str, str]) -> web.Response:
        """``/incident start`` alone: the start dialog, opened once per trigger."""
        try:
            return await self._open_form_once(wiring, key, field)
        except Exception as exc:  # noqa: BLE001 - answer the person rather than with a 500
            return web.json_response(ephemeral(wiring.core.failure(exc, "slash.form_failed", command="start", key=key)))

    async def _open_form_once(self, wiring: Wiring, key: str, field: dict[str, str]) -> web.Response:
        core = wiring.core
        async with core.store.transaction() as tx:
            if await tx.event_seen(key):
                log.info("slash.duplicate", key=key)
                return web.json_response(ephemeral(""))
            await tx.record_event(key, core.now(), None)
        answer = await self.dialog.open(wiring, field["trigger_id"], field["user_id"], field["channel_id"], field["team_id"])
        return web.json_response(ephemeral(answer))

    async def _run(self, wiring: Wiring, key: str, field: dict[str, str], text: str) -> web.Response:
        core = wiring.core
        channel_type, team_id = "O", field["team_id"]
        try:
            channel = await core.chat.get_channel(field["channel_id"])
            channel_type, team_id = channel.type, channel.team_id
        except MattermostError as exc:  # a DM of two others: the bot may not read it
            log.info("slash.channel_unreadable", channel=field["channel_id"], error=type(exc).__name__)
        post = Post(
            id="",
            channel_id=field["channel_id"],
            user_id=field["user_id"],
            root_id=field["root_id"],
            message=f"{field['command'] or '/incident'} {text}".strip(),
            create_at=int(time.time() * 1000),
        )
        answer = SlashAnswer(core.chat, field["response_url"], key)
        req = Request(
            key=key,
            post=post,
            user_id=post.user_id,
            channel_id=post.channel_id,
            channel_type=channel_type,
            team_id=team_id,
            answer=answer,
        )
        event = Posted(post=post, channel_type=channel_type, team_id=team_id, sender_name="@" + field["user_name"])
        word = text.split(None, 1)[0].lower() if text else ""
        spec = COMMANDS.get(word)
        ran = wiring.pipeline.direct(
            req,
            partial(wiring.pipeline.listeners.command, req, text, event),
            reads_only=spec is not None and not spec.changes_state,  # as for a mention
        )
        ready: asyncio.Future[Any] = asyncio.ensure_future(answer.ready.wait())
        await asyncio.wait([ran, ready], timeout=self.answer_within, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if ran.done() and not ran.result():
            log.info("slash.duplicate", key=key)
            return web.json_response(ephemeral(""))
        reply = answer.close()
        if not reply and not ran.done():
            log.info("slash.answer_later", key=key, command=word)
        return web.json_response(ephemeral(reply))


_FIELDS = ("user_id", "user_name", "channel_id", "team_id", "command", "text", "trigger_id", "root_id", "response_url")
