"""Signed contexts of buttons and dialogs: HMAC-SHA256 over a canonical JSON of the fields.

A context is a flat JSON object; ``sig`` holds the signature of every other field except
``selected_option``, which Mattermost adds to a select's context when a person chooses.
Pure: no I/O, the key is handed in."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIG = "sig"
ADDED_BY_SERVER = ("selected_option",)
VERSION = 1
STATE_MAX_AGE = 24 * 3600  # seconds a dialog's signed state is honoured: how long a dialog may stay open


def _canonical(fields: dict[str, Any]) -> bytes:
    signed = {k: v for k, v in fields.items() if k != SIG and k not in ADDED_BY_SERVER}
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def signature(key: bytes, fields: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(fields), hashlib.sha256).hexdigest()


def sign(key: bytes, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the version and its signature added."""
    out = {"v": VERSION, **fields}
    out[SIG] = signature(key, out)
    return out


def verify(key: bytes, context: object) -> dict[str, Any] | None:
    """The context when its signature is right (compared in constant time), else None."""
    if not isinstance(context, dict) or not isinstance(context.get(SIG), str):
        return None
    if not hmac.compare_digest(signature(key, context), str(context[SIG])):
        return None
    if context.get("v") != VERSION:
        return None
    return context


def sign_text(key: bytes, fields: dict[str, Any]) -> str:
    """A signed context as one string (a dialog's ``state``)."""
    return json.dumps(sign(key, fields), sort_keys=True, separators=(",", ":"))


def verify_text(key: bytes, text: object) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        return verify(key, json.loads(text))
    except ValueError:
        return None


def fresh(fields: dict[str, Any], now: float) -> bool:
    """The state's signed ``at`` (seconds since the epoch) is at most ``STATE_MAX_AGE`` before ``now``."""
    at = fields.get("at")
    return isinstance(at, int) and not isinstance(at, bool) and now - at <= STATE_MAX_AGE
