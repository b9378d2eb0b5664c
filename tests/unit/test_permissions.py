"""Who may do what with an incident."""

import pytest

from incident_bot.domain.commands import COMMANDS, Access
from incident_bot.domain.rules import access, allowed, required_access


def test_access_levels():
    assert access(in_team=False, in_channel=False) is Access.NONE
    assert access(in_team=True, in_channel=False) is Access.TEAM
    assert access(in_team=True, in_channel=True) is Access.CHANNEL


@pytest.mark.parametrize("command", ["info", "join", "checklist"])
def test_team_members_may_read_and_join(command):
    assert allowed(command, Access.TEAM)
    assert not allowed(command, Access.NONE)


@pytest.mark.parametrize(
    "command",
    [
        "end",
        "reopen",
        "commander",
        "sev",
        "update",
        "check",
        "uncheck",
        "add",
        "remove",
        "rename",
        "assign",
        "unassign",
        "note",
        "timeline",
        "export",
    ],
)
def test_changes_and_channel_quotes_need_the_channel(command):
    assert allowed(command, Access.CHANNEL)
    assert not allowed(command, Access.TEAM)
    assert not allowed(command, Access.NONE)


def test_unknown_commands_default_to_the_strictest():
    assert "frob" not in COMMANDS
    assert not allowed("frob", Access.TEAM)


@pytest.mark.parametrize("word", list(COMMANDS))
def test_allowed_reads_the_command_table(word):
    spec = COMMANDS[word]
    assert required_access(word) == (spec.access if spec.access is not None else Access.CHANNEL)
    for level in Access:
        assert allowed(word, level) == (level >= required_access(word))
