"""ChatPort matches MattermostClient and the app tests' chat double (mypy checks the app against it)."""

from __future__ import annotations

import inspect

from incident_bot.chat import ChatPort, MattermostClient
from tests.support.chat_double import ChatDouble


def port_methods() -> set[str]:
    return {name for name, value in vars(ChatPort).items() if inspect.iscoroutinefunction(value)}


def test_every_port_method_has_the_clients_exact_signature() -> None:
    for name in sorted(port_methods()):
        ours = inspect.signature(getattr(ChatPort, name))
        theirs = inspect.signature(getattr(MattermostClient, name))
        assert str(ours) == str(theirs), name
        assert inspect.iscoroutinefunction(getattr(MattermostClient, name)), name


def test_the_app_tests_chat_double_speaks_the_same_port() -> None:
    """app/ types its chat as ChatPort (mypy holds it to the port); the double its unit tests
    run on must take the same calls."""
    for name in sorted(port_methods()):
        ours = inspect.signature(getattr(ChatPort, name))
        double = inspect.signature(getattr(ChatDouble, name))
        assert list(ours.parameters) == list(double.parameters), name
