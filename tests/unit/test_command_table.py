"""The command table: each command declared once, and everything that reads it agrees."""

import re

import pytest

from incident_bot.domain import messages
from incident_bot.domain.commands import (
    COMMAND_WORDS,
    COMMANDS,
    UNKNOWN_PATTERN,
    Access,
    Grammar,
    Option,
    Outcome,
    listener_pattern,
)
from incident_bot.domain.grammar import GRAMMARS, parse

FLAGS = re.IGNORECASE | re.DOTALL
READ_ONLY = {"help", "list", "info", "history", "timeline", "stats", "checklist", "playbooks", "export"}
PRIVATE = {"help", "list", "info", "history", "stats", "playbooks", "checklist", "timeline"}


def test_words_are_the_keys_in_help_order():
    assert tuple(COMMANDS) == COMMAND_WORDS
    assert all(spec.word == word for word, spec in COMMANDS.items())
    assert COMMAND_WORDS[0] == "start" and COMMAND_WORDS[-1] == "help"


@pytest.mark.parametrize("word", list(COMMANDS))
def test_every_entry_parses_its_example(word):
    spec = COMMANDS[word]
    example_word, _, rest = spec.example.partition(" ")
    assert example_word == word
    assert spec.usage.split()[0] == word
    command = parse(word, rest)
    assert command.name == word


@pytest.mark.parametrize("word", list(COMMANDS))
def test_every_entry_uses_only_its_own_options(word):
    spec = COMMANDS[word]
    for option in Option:
        if option not in spec.options:
            flag = f"--{option.value}"
            with pytest.raises(Exception, match="takes no option"):
                parse(word, f"{flag} 1")


def test_every_grammar_has_a_parser():
    assert set(GRAMMARS) == set(Grammar)


def test_help_lists_every_word_once_in_table_order():
    text = messages.help_all("incident-bot")
    lines = [line for line in text.splitlines() if line.startswith("- `")]
    assert [line.removeprefix("- `").split()[0].rstrip("`") for line in lines] == list(COMMANDS)
    for word, spec in COMMANDS.items():
        assert text.count(f"- `{spec.usage}` — {spec.purpose}") == 1
        assert messages.help_one("incident-bot", word).endswith(f"Where: {spec.where}.")


def test_flags_others_need():
    assert {w for w, s in COMMANDS.items() if not s.changes_state} == READ_ONLY
    assert {w for w, s in COMMANDS.items() if s.private_answer} == PRIVATE


def test_commands_about_one_incident_say_what_access_they_need():
    assert {w for w, s in COMMANDS.items() if s.access is Access.TEAM} == {"info", "join", "checklist"}
    assert {w for w, s in COMMANDS.items() if s.access is None} == {
        "start",
        "list",
        "history",
        "stats",
        "playbooks",
        "playbook",
        "help",
    }


@pytest.mark.parametrize("word", list(COMMANDS))
def test_listener_pattern_matches_the_word_and_captures_the_rest(word):
    pattern = listener_pattern(word)
    assert re.match(pattern, word, FLAGS).group(1) is None
    assert re.match(pattern, f"{word.upper()}  a\nb", FLAGS).group(1) == "a\nb"
    assert re.match(pattern, f"{word}x", FLAGS) is None


def test_unknown_pattern_excludes_exactly_the_table_words():
    for word in COMMANDS:
        for text in (word, word.upper(), f"{word} 12", f"{word}\nmore"):
            assert re.match(UNKNOWN_PATTERN, text, FLAGS) is None, text
    for text in ("frob", "starts", "checklists", "playbookx", "#12", "--sev", "s", "helpme"):
        match = re.match(UNKNOWN_PATTERN, text, FLAGS)
        assert match is not None and match.group(1) == text
    assert re.match(UNKNOWN_PATTERN, "", FLAGS).group(1) == ""


def test_outcomes_are_the_logged_words():
    assert {str(o) for o in Outcome} == {"ok", "usage", "refused", "error", "unknown", "help", "ignored"}
