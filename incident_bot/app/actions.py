"""Clicks on the bot's buttons and the dialogs they open, carried to the same use cases,
rules and messages as the commands.

Mattermost POSTs a click as JSON (``Click``) to ``callback_url`` + /mattermost/action and a
dialog's submission (``Submission``) to + /mattermost/action-dialog; web/actions.py hands
them here. A click is honoured only when its context is signed with ``actions_secret`` and
names the post it came from (a context copied to another post or incident is refused and
logged), a dialog only when submitted by who opened it, within a day; either for a person
the command would allow (a guest is refused as its commands are, a bot or a deactivated
account is not answered), on an incident that has not ended. What the person alone should
read comes back as the ephemeral answer; a change others must see is posted as the
command's reply would be, in the thread of the clicked post.

Clicks are applied once: a click (post, person, action, choice) is held while in flight, so
a repeat meanwhile is one click; its key with a short time bucket is checked and stored with
the change, like every other event's dedupe key, and a repeat within the same ten seconds is
one click even across a bucket's edge; a dialog's key is the nonce signed into it when it was opened, so a
submission sent twice posts one update. Ticks, a severity, a join and an end are also
idempotent by state."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from incident_bot.app.checklists import Checklists
from incident_bot.app.core import Core
from incident_bot.app.incidents import Incidents
from incident_bot.app.outbox import ANNOUNCE_SUFFIX, OUTBOX_PROP
from incident_bot.app.reports import Reports
from incident_bot.app.request import Applied, Collected, Request, UserError
from incident_bot.app.runner import Runner
from incident_bot.app.timeline import Timeline
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.models import Post
from incident_bot.domain import buttons, messages, signing
from incident_bot.domain.buttons import Act
from incident_bot.domain.commands import Command
from incident_bot.domain.models import Incident, Status
from incident_bot.domain.rules import Actor

log = structlog.get_logger("incident_bot.actions")

CLICK_BUCKET_SECONDS = 10  # clicks of one person on one button this close together are one click
RECENT_LIMIT = 1000  # clicks remembered in memory before the old ones are forgotten
TEXT_FIELD = "text"
MAX_TEXT = 3000


class Click(BaseModel):
    """What Mattermost POSTs when a person clicks a message button or picks from its select."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    user_name: str = ""
    channel_id: str = ""
    team_id: str = ""
    post_id: str = ""
    trigger_id: str = ""
    type: str = ""
    data_source: str = ""
    context: dict[str, Any] = Field(default_factory=dict)


class Submission(BaseModel):
    """What Mattermost POSTs when a person submits (or cancels) a dialog the bot opened."""

    model_config = ConfigDict(extra="ignore")

    type: str = ""
    callback_id: str = ""
    state: str = ""
    user_id: str
    channel_id: str = ""
    team_id: str = ""
    submission: dict[str, Any] = Field(default_factory=dict)
    cancelled: bool = False


@dataclass
class Answer:
    """The integration response: an ephemeral text for the clicker, or the dialog's errors."""

    ephemeral: str | None = None
    error: str | None = None  # a dialog: shown in the dialog, which stays open
    errors: dict[str, str] = field(default_factory=dict)  # a dialog: per field

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.ephemeral:
            body["ephemeral_text"] = self.ephemeral
        if self.error:
            body["error"] = self.error
        if self.errors:
            body["errors"] = self.errors
        return body


class Refused(Exception):
    """A click that is not what the bot put on the post (logged with ``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Actions:
    def __init__(
        self, core: Core, runner: Runner, incidents: Incidents, checklists: Checklists, timeline: Timeline, reports: Reports
    ) -> None:
        self.core = core
        self.runner = runner
        self.incidents = incidents
        self.checklists = checklists
        self.timeline = timeline
        self.reports = reports
        self._inflight: set[str] = set()
        self._recent: dict[str, float] = {}  # click (without its time bucket) -> when it was handled

    # --- clicks --------------------------------------------------------------------------

    async def click(self, click: Click) -> Answer:
        """A click, answered whatever happens: a failure as a command's is (``Core.failure``)."""
        try:
            return await self._click(click)
        except Exception as exc:  # noqa: BLE001 - the person gets an answer, not an HTTP 500
            return Answer(ephemeral=self.core.failure(exc, "action.failed", user=click.user_id, post=click.post_id))

    async def _click(self, click: Click) -> Answer:
        try:
            act, incident = await self._verified(click)
        except Refused as exc:
            log.warning("action.refused", reason=exc.reason, user=click.user_id, post=click.post_id, channel=click.channel_id)
            return Answer(ephemeral=messages.button_refused())
        try:
            kind = await self.runner.admit(click.user_id)
        except UserError as exc:  # a guest: refused as its commands are
            log.info("action.guest", action=str(act), incident=incident.number, user=click.user_id)
            return Answer(ephemeral=exc.text)
        if kind != Actor.PERSON:  # a bot, a deactivated account: not answered, nothing changed
            log.info("action.ignored", action=str(act), incident=incident.number, user=click.user_id, actor=kind)
            return Answer()
        if incident.status == Status.ENDED:
            log.info("action.stale", action=str(act), incident=incident.number, user=click.user_id)
            return Answer(ephemeral=messages.button_stale(incident))
        option = str(click.context.get("selected_option") or "")
        now = self.core.now().timestamp()
        same = f"button:{click.post_id}:{click.user_id}:{act}:{option}"
        key = f"{same}:{int(now) // CLICK_BUCKET_SECONDS}"
        # In flight: the click without its time bucket, claimed before the first await, so a
        # repeat while the first still runs is one click whenever it comes (also across the
        # bucket's edge); the stored key is the bucketed one.
        if same in self._inflight or now - self._recent.get(same, float("-inf")) < CLICK_BUCKET_SECONDS:
            log.info("action.duplicate", action=str(act), incident=incident.number, user=click.user_id)
            return Answer()
        self._inflight.add(same)
        try:
            if await self._seen(key):
                log.info("action.duplicate", action=str(act), incident=incident.number, user=click.user_id)
                return Answer()
            answer = await self._apply(act, incident, click, key, option)
        finally:
            self._inflight.discard(same)
            self._remember(same, now)
        log.info("action.handled", action=str(act), incident=incident.number, user=click.user_id, answered=bool(answer.ephemeral))
        return answer

    def _remember(self, click: str, at: float) -> None:
        """A click just handled; a repeat within the window is a double click, also across the
        stored key's time bucket (the stored key is what a restarted bot still knows)."""
        self._recent[click] = at
        if len(self._recent) > RECENT_LIMIT:
            for old in [k for k, t in self._recent.items() if at - t >= CLICK_BUCKET_SECONDS]:
                del self._recent[old]

    async def _seen(self, key: str) -> bool:
        async with self.core.store.transaction() as tx:
            return await tx.event_seen(key)

    async def _verified(self, click: Click) -> tuple[Act, Incident]:
        """The action and incident of a click whose context is signed and names this post."""
        on = self.core.settings.buttons()
        if on is None:
            raise Refused("buttons-off")
        ctx = signing.verify(on[1], click.context)
        if ctx is None:
            raise Refused("signature")
        try:
            act = Act(str(ctx.get("action")))
            number = int(ctx["incident"])
            part = str(ctx["part"])
        except (KeyError, TypeError, ValueError):
            raise Refused("context") from None
        kind = "item" if part.startswith("item:") else part
        if buttons.PART_OF[act] != kind or not click.post_id:
            raise Refused("context")
        async with self.core.store.transaction() as tx:
            incident = await tx.get_incident(number)
            item = await tx.get_checklist_item_by_post(click.post_id) if kind == "item" else None
        if incident is None:
            raise Refused("incident")
        if kind != buttons.ANNOUNCE and click.channel_id != incident.channel_id:
            raise Refused("post")  # the summary and the items are in the incident channel
        if kind == buttons.SUMMARY and incident.summary_post_id != click.post_id:
            raise Refused("post")
        if kind == "item" and (item is None or item.incident_number != number or buttons.item_part(item.number) != part):
            raise Refused("post")
        if kind == buttons.ANNOUNCE and not await self._announces(click.post_id, click.channel_id, number):
            raise Refused("post")
        return act, incident

    async def _announces(self, post_id: str, channel_id: str, number: int) -> bool:
        """``post_id`` is the bot's post in ``channel_id`` announcing incident ``number``."""
        try:
            post = await self.core.chat.get_post(post_id)
        except MattermostError:
            return False
        mine = post is not None and post.user_id == self.core.bot_id and post.channel_id == channel_id
        mark = post.props.get(OUTBOX_PROP) if post is not None and mine else None
        if not isinstance(mark, str) or not mark.endswith(ANNOUNCE_SUFFIX):
            return False
        async with self.core.store.transaction() as tx:
            entry = await tx.get_outbox(mark)
        return entry is not None and entry.incident_number == number

    def _request(self, key: str, incident: Incident, user_id: str, post_id: str, channel_id: str) -> Request:
        """The request a click carries: as if ``user_id`` had posted in the clicked post's thread."""
        now_ms = int(self.core.now().timestamp() * 1000)
        post = Post(id=post_id, channel_id=channel_id, user_id=user_id, create_at=now_ms)
        channel_type = "P" if channel_id == incident.channel_id else "O"
        return Request(
            key=key,
            post=post,
            user_id=user_id,
            channel_id=channel_id,
            channel_type=channel_type,
            team_id=incident.team_id,
            answer=Collected(),
        )

    async def _apply(self, act: Act, incident: Incident, click: Click, key: str, option: str) -> Answer:
        if act in (Act.TICK, Act.UNTICK):
            outcome = await self.checklists.tick(key, click.post_id, click.user_id, act is Act.TICK)
            if outcome == Applied.REFUSED_ENDED:
                return Answer(ephemeral=messages.button_stale(incident))
            if outcome == Applied.NOT_A_MEMBER:
                return Answer(ephemeral=messages.not_a_member(incident, "check" if act is Act.TICK else "uncheck"))
            if outcome == Applied.NOT_AN_ITEM:
                return Answer(ephemeral=messages.item_gone())
            return Answer()
        req = self._request(key, incident, click.user_id, click.post_id, click.channel_id)
        if act is Act.SEV:
            await self.runner.run(req, "sev", option, self.incidents.sev)
        elif act is Act.EXPORT:
            await self.runner.run(req, "export", "", self.reports.export)
        elif act is Act.JOIN:
            req.answer_privately = True  # "Added you to …" is news to the clicker alone
            await self.runner.run(req, "join", str(incident.number), self.incidents.join)
        else:
            return await self._open_dialog(act, incident, click, req)
        return Answer(ephemeral=_collected(req))

    # --- dialogs -------------------------------------------------------------------------

    async def _open_dialog(self, act: Act, incident: Incident, click: Click, req: Request) -> Answer:
        """Post update / End incident: check the person may, then open the dialog."""
        command = "update" if act is Act.UPDATE else "end"
        try:
            await self.core.incident_for(req, incident.number, command)
        except UserError as exc:
            return Answer(ephemeral=exc.text)
        on = self.core.settings.buttons()
        assert on is not None  # a verified click means buttons are on
        url, key = on
        fields = {
            "incident": incident.number,
            "action": str(act),
            "post": click.post_id,
            "user": click.user_id,  # only who opened it may submit it
            "at": int(self.core.now().timestamp()),  # and within signing.STATE_MAX_AGE
            "nonce": secrets.token_hex(12),
        }
        state = signing.sign_text(key, fields)
        if act is Act.UPDATE:
            title, label, help_text, submit = (
                messages.update_dialog_title(incident),
                messages.UPDATE_FIELD,
                messages.UPDATE_HELP,
                messages.POST_LABEL,
            )
        else:
            title, label, help_text, submit = (
                messages.end_dialog_title(incident),
                messages.RESOLUTION_FIELD,
                messages.RESOLUTION_HELP,
                messages.END_LABEL,
            )
        dialog = {
            "callback_id": str(act),
            "title": title,
            "submit_label": submit,
            "notify_on_cancel": False,
            "state": state,
            "elements": [
                {
                    "display_name": label,
                    "name": TEXT_FIELD,
                    "type": "textarea",
                    "help_text": help_text,
                    "optional": False,
                    "max_length": MAX_TEXT,
                }
            ],
        }
        try:
            await self.core.chat.open_dialog(click.trigger_id, url + buttons.DIALOG_PATH, dialog)
        except MattermostError as exc:  # the ref the person is told is in the log line
            return Answer(ephemeral=self.core.failure(exc, "action.dialog_failed", action=str(act), incident=incident.number))
        return Answer()

    async def submit(self, sub: Submission) -> Answer:
        """A dialog's submission, answered whatever happens: a failure in the dialog."""
        try:
            return await self._submit(sub)
        except Exception as exc:  # noqa: BLE001 - the person gets an answer, not an HTTP 500
            return Answer(error=self.core.failure(exc, "action.failed", user=sub.user_id, dialog=sub.callback_id))

    async def _submit(self, sub: Submission) -> Answer:
        """A dialog's submission: validated, then the command it stands for, once."""
        on = self.core.settings.buttons()
        state = signing.verify_text(on[1], sub.state) if on is not None else None
        try:
            if state is None:
                raise Refused("signature")
            act = Act(str(state.get("action")))
            number = int(state["incident"])
            nonce = str(state["nonce"])
            post_id = str(state["post"])
            if act not in (Act.UPDATE, Act.END) or sub.callback_id != str(act):
                raise Refused("context")
            if state.get("user") != sub.user_id or not signing.fresh(state, self.core.now().timestamp()):
                raise Refused("context")  # another person's dialog (a replay), or one left open too long
        except Refused as exc:
            log.warning("action.refused", reason=exc.reason, user=sub.user_id, dialog=sub.callback_id)
            return Answer(error=messages.button_refused())
        except (KeyError, TypeError, ValueError):
            log.warning("action.refused", reason="context", user=sub.user_id, dialog=sub.callback_id)
            return Answer(error=messages.button_refused())
        if sub.cancelled:
            return Answer()
        raw = sub.submission.get(TEXT_FIELD)
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            field = messages.UPDATE_FIELD if act is Act.UPDATE else messages.RESOLUTION_FIELD
            return Answer(errors={TEXT_FIELD: messages.field_required(field)})
        key = f"dialog:{nonce}"
        async with self.core.store.transaction() as tx:
            incident = await tx.get_incident(number)
            seen = await tx.event_seen(key)
        if incident is None or incident.channel_id is None:
            log.warning("action.refused", reason="incident", user=sub.user_id, dialog=sub.callback_id)
            return Answer(error=messages.button_refused())
        if seen or key in self._inflight:
            log.info("action.duplicate", action=str(act), incident=number, user=sub.user_id)
            return Answer()
        if incident.status == Status.ENDED:
            return Answer(error=messages.button_stale(incident))
        self._inflight.add(key)
        try:
            req = self._request(key, incident, sub.user_id, post_id, incident.channel_id)
            # The dialog's fields are the command's already: the text as written (lines, quotes,
            # a "-30%"), not words for the command grammar.
            if act is Act.UPDATE:
                await self.runner.run(req, "update", None, self.timeline.update, parsed=Command(name="update", text=text))
            else:
                cmd = Command(name="end", incident=number, text=text)
                await self.runner.run(req, "end", None, self.incidents.end, parsed=cmd)
        finally:
            self._inflight.discard(key)
        log.info("action.handled", action=str(act), incident=number, user=sub.user_id, dialog=True)
        return Answer(error=_collected(req))


def _collected(req: Request) -> str | None:
    """What the request answered the person alone, for the HTTP response."""
    return req.answer.joined() if isinstance(req.answer, Collected) else None
