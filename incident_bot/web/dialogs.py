"""The start dialog: ``/incident start`` alone opens it; ``POST /mattermost/dialog`` takes
its submission.

Mattermost calls the dialog URL without a token, so the dialog carries a signed ``state``
(domain/signing.py, keyed by the slash command's token) naming who opened it, where and when: a
submission without a valid state, or from someone else, is refused. Field errors answer in
the dialog's own format (``{"errors": {field: text}}``) and keep it open; a refusal of the
`start` itself answers as ``{"error": text}``. Otherwise the incident starts exactly as
``start`` does (the same Runner and use case), from the channel the dialog was opened in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from incident_bot.app.core import error_ref
from incident_bot.app.request import Request
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.models import Post
from incident_bot.domain import messages, signing
from incident_bot.domain.commands import Command, Outcome
from incident_bot.domain.rules import TITLE_MAX, clean_title
from incident_bot.web.wiring import Wiring, not_ready

log = structlog.get_logger("incident_bot.web")

PATH = "/mattermost/dialog"
CALLBACK_ID = "incident-start"
FINISH_WITHIN = 20.0  # seconds the submission waits for the start (Mattermost waits 30)
UPDATE_MAX = 3000


class DialogAnswer:
    """Private answers to a submission, kept while it waits: a refusal's are the dialog's
    error; once an incident started (or the answer went), they go to the person ephemeral."""

    def __init__(self, post_ephemeral: Callable[[str], Awaitable[None]]) -> None:
        self.texts: list[str] = []
        self.responded = False
        self.late = post_ephemeral

    async def private(self, text: str) -> None:
        if not self.responded:
            self.texts.append(text)
        else:
            await self.late(text)


class StartDialog:
    """Opens the start dialog and handles its submission."""

    def __init__(self, secret: str, base_url: Callable[[], str | None]) -> None:
        self._key = hashlib.sha256(b"incident-bot dialog state\0" + secret.encode()).digest()
        self._base_url = base_url
        self.wiring: Wiring | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # what a late start still does

    # --- state ---------------------------------------------------------------------------

    def state_for(self, user_id: str, channel_id: str, team_id: str) -> str:
        fields = {"user": user_id, "channel": channel_id, "team": team_id, "at": int(time.time()), "nonce": secrets.token_hex(8)}
        return signing.sign_text(self._key, fields)

    def read_state(self, state: str) -> tuple[str, str, str, str] | None:
        """(user, channel, team, nonce) of a state this bot signed and that is not too old."""
        fields = signing.verify_text(self._key, state)
        if fields is None:
            return None
        if not signing.fresh(fields, time.time()):
            return None
        return str(fields.get("user")), str(fields.get("channel")), str(fields.get("team")), str(fields.get("nonce"))

    # --- opening -------------------------------------------------------------------------

    async def open(self, wiring: Wiring, trigger_id: str, user_id: str, channel_id: str, team_id: str) -> str:
        """Open the dialog; the text to show the person instead ("" when it opened)."""
        core = wiring.core
        base = self._base_url()
        if not base:
            return messages.dialog_not_opened()
        playbooks = await core.playbooks(team_id) if team_id else core.settings.config_playbooks()
        playbook_options = [{"text": messages.no_playbook_option(), "value": ""}]
        playbook_options += [{"text": p.name, "value": p.name} for p in playbooks]
        default_playbook = core.settings.default_playbook or ""
        labels, helps = messages.DIALOG_LABELS, messages.DIALOG_HELP
        dialog = {
            "callback_id": CALLBACK_ID,
            "title": messages.dialog_title(),
            "introduction_text": messages.dialog_intro(),
            "submit_label": messages.dialog_submit(),
            "notify_on_cancel": False,
            "state": self.state_for(user_id, channel_id, team_id),
            "elements": [
                {"display_name": labels["title"], "name": "title", "type": "text", "max_length": TITLE_MAX,
                 "help_text": helps["title"]},
                {"display_name": labels["severity"], "name": "severity", "type": "select",
                 "default": str(core.settings.default_severity), "help_text": helps["severity"],
                 "options": [{"text": messages.severity_option(n), "value": str(n)} for n in range(1, 5)]},
                {"display_name": labels["playbook"], "name": "playbook", "type": "select", "optional": True,
                 "default": default_playbook, "options": playbook_options, "help_text": helps["playbook"]},
                {"display_name": labels["responders"], "name": "responders", "type": "select", "data_source": "users",
                 "multiselect": True, "optional": True, "help_text": helps["responders"]},
                {"display_name": labels["update"], "name": "update", "type": "textarea", "optional": True,
                 "max_length": UPDATE_MAX, "help_text": helps["update"]},
            ],
        }  # fmt: skip
        try:
            await core.chat.open_dialog(trigger_id, base + PATH, dialog)
        except MattermostError as exc:
            log.warning("dialog.open_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return messages.dialog_not_opened()
        log.info("dialog.opened", user=user_id, channel=channel_id)
        return ""

    # --- submission ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="expected JSON\n")
        if not isinstance(body, dict):
            return web.Response(status=400, text="expected a JSON object\n")
        state = self.read_state(str(body.get("state") or ""))
        if state is None or state[0] != body.get("user_id") or body.get("callback_id") != CALLBACK_ID:
            log.warning("dialog.refused", reason="state", remote=request.remote)
            return web.Response(status=401, text="unauthorized\n")
        if body.get("cancelled"):
            return web.json_response({})
        wiring = self.wiring
        if wiring is None:
            return not_ready()
        submission = body.get("submission")
        try:
            return await self._submit(wiring, state, submission if isinstance(submission, dict) else {})
        except Exception as exc:  # noqa: BLE001 - answer in the dialog rather than with a 500
            return web.json_response({"error": wiring.core.failure(exc, "dialog.failed", command="start", user=state[0])})

    async def _submit(self, wiring: Wiring, state: tuple[str, str, str, str], submission: dict[str, Any]) -> web.Response:
        core = wiring.core
        user_id, channel_id, team_id, nonce = state
        errors: dict[str, str] = {}
        title = clean_title(str(submission.get("title") or ""))
        if not title:
            errors["title"] = messages.dialog_need_title()
        severity = _int(submission.get("severity"))
        if severity is None or not 1 <= severity <= 4:
            errors["severity"] = messages.dialog_bad_severity()
        playbook = str(submission.get("playbook") or "").strip() or None
        if playbook and team_id and await core.find_playbook(team_id, playbook) is None:
            errors["playbook"] = messages.dialog_unknown_playbook(playbook)
        invite: list[str] = []
        missing: list[str] = []
        chosen = _ids(submission.get("responders"))
        users = {user.id: user for user in await core.chat.get_users_by_ids(chosen)} if chosen else {}
        for uid in chosen:
            user = users.get(uid)
            if user is None or user.delete_at or (team_id and not await core.directory.in_team(team_id, uid)):
                missing.append(user.username if user else uid)
            elif uid != user_id:
                invite.append(user.username)
        if missing:
            errors["responders"] = messages.dialog_unknown_users(missing)
        if errors:
            return web.json_response({"errors": errors})
        team = None
        if team_id:
            try:
                team = (await core.chat.get_team(team_id)).name
            except MattermostError:
                team = None
        cmd = Command(name="start", text=title, severity=severity, playbook=playbook, invite=invite, team=team)
        digest = hashlib.sha256(json.dumps(submission, sort_keys=True, default=str).encode()).hexdigest()[:16]
        req = self._request(wiring, f"dialog:{nonce}:{digest}", user_id, channel_id, "/incident start")
        answer = req.answer
        assert isinstance(answer, DialogAnswer)
        try:
            channel = await core.chat.get_channel(channel_id)
            req.channel_type, req.team_id = channel.type, channel.team_id
        except MattermostError:
            req.channel_type, req.team_id = "O", team_id
        form_key = f"dialog:{nonce}"  # recorded once an incident started from this form
        already: list[bool] = []

        async def start_once(r: Request, c: Command) -> None:
            # In the channel's lane, after any earlier submission of the same form: one form
            # starts one incident, whatever was edited before it was submitted again.
            async with core.store.transaction() as tx:
                if await tx.event_seen(form_key):
                    already.append(True)
                    r.outcome, r.replied = Outcome.IGNORED, True  # answered by its first submission
                    return
            await wiring.incidents.start(r, c)

        async def start() -> None:
            await wiring.runner.run(req, "start", None, start_once, parsed=cmd)
            if req.incident is not None and not already:
                try:
                    async with core.store.transaction() as tx:
                        await tx.record_event(form_key, core.now(), req.incident)
                except Exception as exc:  # noqa: BLE001 - it started; a resubmission may start another
                    core.failure(exc, "dialog.unrecorded", key=form_key, incident=req.incident)

        update = str(submission.get("update") or "").strip()[:UPDATE_MAX]
        ran = wiring.pipeline.direct(req, start)
        try:
            applied = await asyncio.wait_for(asyncio.shield(ran), FINISH_WITHIN)
        except TimeoutError:
            answer.responded = True  # what the start still answers goes to the person directly
            log.info("dialog.answer_later", key=req.key)
            task = asyncio.ensure_future(self._after_late_start(wiring, req, ran, already, update))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return web.json_response({})
        answer.responded = True
        if not applied or already:
            if already:
                log.info("dialog.already_started", key=req.key)
            return web.json_response({})
        if req.incident is None:  # refused: shown in the dialog, which stays open
            return web.json_response(
                {"error": "\n".join(answer.texts) or messages.internal_error(error_ref("dialog.no_answer", key=req.key))}
            )
        # Started: the dialog closes; what was answered privately (e.g. the bot could not post
        # in the channel) reaches the person as the late path's answers do.
        for text in answer.texts:
            await answer.late(text)
        await self._after_start(wiring, req, update)
        return web.json_response({})

    async def _after_late_start(
        self, wiring: Wiring, req: Request, ran: asyncio.Future[bool], already: list[bool], update: str
    ) -> None:
        if await ran and not already and req.incident is not None:
            await self._after_start(wiring, req, update)

    async def _after_start(self, wiring: Wiring, req: Request, update: str) -> None:
        """The form's first update, if any, once its incident started."""
        if not update or req.incident is None:
            return
        try:
            await self._first_update(wiring, req, update)
        except Exception as exc:  # noqa: BLE001 - the incident started; say the update failed
            await self._tell(req, wiring.core.failure(exc, "dialog.update_failed", command="update", key=req.key))

    @staticmethod
    async def _tell(req: Request, text: str) -> None:
        answer = req.answer
        assert isinstance(answer, DialogAnswer)
        await answer.late(text)

    def _request(self, wiring: Wiring, key: str, user_id: str, channel_id: str, message: str) -> Request:
        chat = wiring.core.chat

        async def late(text: str) -> None:
            try:
                await chat.post_ephemeral(user_id, channel_id, text)
            except MattermostError as exc:
                log.warning("dialog.late_answer_lost", key=key, error=type(exc).__name__)

        post = Post(id="", channel_id=channel_id, user_id=user_id, message=message, create_at=int(time.time() * 1000))
        return Request(
            key=key,
            post=post,
            user_id=user_id,
            channel_id=channel_id,
            channel_type="O",
            team_id="",
            answer=DialogAnswer(late),
        )

    async def _first_update(self, wiring: Wiring, started: Request, text: str) -> None:
        """The form's first update, posted as `update` in the new incident channel would be."""
        async with wiring.core.store.transaction() as tx:
            incident = await tx.get_incident(started.incident) if started.incident is not None else None
        if incident is None or incident.channel_id is None:
            return
        req = self._request(wiring, f"{started.key}:update", started.user_id, incident.channel_id, "/incident update")
        req.channel_type, req.team_id = "P", incident.team_id
        assert isinstance(req.answer, DialogAnswer)
        req.answer.responded = True  # nothing waits for its answers: the person gets them directly
        cmd = Command(name="update", text=text)
        await wiring.pipeline.direct(req, partial(wiring.runner.run, req, "update", None, wiring.timeline.update, parsed=cmd))


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _ids(value: Any) -> list[str]:
    """User ids of a multi-select: a list, or (older servers) one comma-separated string."""
    if isinstance(value, list):
        items = [str(v) for v in value]
    elif isinstance(value, str):
        items = value.split(",")
    else:
        items = []
    return [item.strip() for item in items if item.strip()]
