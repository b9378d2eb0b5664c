"""ChatPort matches MattermostClient and covers every call the app makes (mypy checks it statically too)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from incident_bot.chat import ChatPort, MattermostClient

PACKAGE = Path(__file__).resolve().parents[2] / "incident_bot"


def port_methods() -> set[str]:
    return {name for name, value in vars(ChatPort).items() if inspect.iscoroutinefunction(value)}


def test_every_port_method_has_the_clients_exact_signature() -> None:
    for name in sorted(port_methods()):
        ours = inspect.signature(getattr(ChatPort, name))
        theirs = inspect.signature(getattr(MattermostClient, name))
        assert str(ours) == str(theirs), name
        assert inspect.iscoroutinefunction(getattr(MattermostClient, name)), name


def test_port_covers_every_client_call_in_app_and_plugins() -> None:
    called: set[str] = set()
    for folder in ("app", "plugins"):
        for path in (PACKAGE / folder).rglob("*.py"):
            called |= set(re.findall(r"\bclient\.(\w+)\(", path.read_text(encoding="utf-8")))
    assert called, "no client calls found: did the app stop calling the chat port through `client`?"
    assert called - port_methods() == set()
