"""structlog setup: JSON lines when not on a terminal, readable console output on one."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_secrets: list[str] = []
_BEARER = re.compile(r"(?i)(bearer\s+)[a-z0-9]+")


def register_secret(secret: str) -> None:
    """Never let this value reach a log line, whatever field it hides in."""
    if secret and secret not in _secrets:
        _secrets.append(secret)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "[redacted]")
        return _BEARER.sub(r"\1[redacted]", value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(item) for item in value)
    return value


def _redact(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key.lower() in ("token", "authorization", "bot_token", "password"):
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def setup_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and route stdlib logging, e.g. aiohttp's, through it)."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        exc = structlog.processors.format_exc_info
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        exc = structlog.processors.format_exc_info
    structlog.configure(
        processors=[*shared, exc, _redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        # The bot configures once, at start: each module's logger is built on its first line
        # instead of on every line (structlog's lazy proxy was ~1/5 of a log line's cost).
        cache_logger_on_first_use=True,
    )
    # Third-party libraries log through the stdlib; keep them quiet and in the same stream,
    # in the same format (a JSON log must be JSON on every line, for jq and log shippers).
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared, exc],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.WARNING))
