"""What the HTTP adapters reach once the bot is logged in, and how they answer before that."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from incident_bot.app.core import Core
from incident_bot.app.incidents import Incidents
from incident_bot.app.pipeline import Pipeline
from incident_bot.app.runner import Runner
from incident_bot.app.timeline import Timeline


@dataclass
class Wiring:
    """The running bot's parts the adapters call: the pipeline's claim and lanes, the
    Runner and the use cases the start dialog runs."""

    core: Core
    pipeline: Pipeline
    runner: Runner
    incidents: Incidents
    timeline: Timeline


def token_matches(given: str, tokens: list[str]) -> bool:
    """True when ``given`` is one of ``tokens``; every token is compared, in constant time."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given.encode(), token.encode())
    return bool(given) and matched


NOT_READY = "incident-bot is starting; try again in a moment"  # every adapter's answer until it is wired


def not_ready() -> web.Response:
    return web.Response(status=503, text=NOT_READY + "\n")
