"""The interactive buttons the bot's posts carry: which post has which, and their props.

Mattermost shows message buttons from ``props.attachments[].actions[]``; a click makes the
server POST the action's ``integration.context`` to ``integration.url``. Each context names
the incident, the action and the part of the channel it sits on (``summary``, ``item:3``,
``announce``) and is signed (domain/signing.py), so a click is honoured only for the post
the bot put it on."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from incident_bot.domain import messages, signing
from incident_bot.domain.models import SEVERITIES

ACTION_PATH = "/mattermost/action"
DIALOG_PATH = "/mattermost/action-dialog"


class Act(StrEnum):
    """One button; its value is also the action id Mattermost routes the click by."""

    UPDATE = "update"
    SEV = "sev"
    END = "end"
    EXPORT = "export"
    TICK = "tick"
    UNTICK = "untick"
    JOIN = "join"


SUMMARY = "summary"
ANNOUNCE = "announce"

# Which part of the channel each button belongs to ("item" stands for every "item:N").
PART_OF: dict[Act, str] = {
    Act.UPDATE: SUMMARY,
    Act.SEV: SUMMARY,
    Act.END: SUMMARY,
    Act.EXPORT: SUMMARY,
    Act.TICK: "item",
    Act.UNTICK: "item",
    Act.JOIN: ANNOUNCE,
}


def item_part(number: int) -> str:
    return f"item:{number}"


def context(key: bytes, incident: int, act: Act, part: str) -> dict[str, Any]:
    return signing.sign(key, {"incident": incident, "action": str(act), "part": part})


def _action(base_url: str, key: bytes, incident: int, act: Act, part: str) -> dict[str, Any]:
    action: dict[str, Any] = {
        "id": str(act),
        "name": messages.BUTTON_LABELS[act],
        "type": "button",
        "integration": {"url": base_url + ACTION_PATH, "context": context(key, incident, act, part)},
    }
    if act is Act.SEV:
        action["type"] = "select"
        action["options"] = [{"text": messages.sev(s), "value": str(s)} for s in SEVERITIES]
    return action


def props(base_url: str, key: bytes, incident: int, part: str) -> dict[str, Any]:
    """The props that give the post of ``part`` its buttons (one attachment, no text)."""
    kind = "item" if part.startswith("item:") else part
    acts = [act for act, where in PART_OF.items() if where == kind]
    return {"attachments": [{"actions": [_action(base_url, key, incident, act, part) for act in acts]}]}
