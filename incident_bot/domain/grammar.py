"""Command grammar: words, case-insensitive, options as ``--long value`` or ``-s value``.

``parse(name, rest)`` turns the text after the command word into a ``Command`` or raises
``UsageError`` naming what was wrong; the caller replies with the reason and the command's
usage line. What a command takes comes from its entry in ``commands.COMMANDS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from incident_bot.domain import messages
from incident_bot.domain.commands import COMMANDS, OPTION_FLAGS, Command, Grammar, Option, PlaybookAction, UsageError

_ID = re.compile(r"^#?(\d{1,9})$")
_USER = re.compile(r"^@([a-z0-9][a-z0-9._-]{0,63})$", re.IGNORECASE)
_INT = re.compile(r"^\d{1,9}$")
_SEVERITY = re.compile(r"^(?:sev)?([1-4])$", re.IGNORECASE)
_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FORMATS = ("md", "json")


def tokenize(text: str) -> list[str]:
    """Split on whitespace; keep "double quoted" parts together. Apostrophes are text."""
    tokens: list[str] = []
    for match in re.finditer(r'"([^"]*)"|(\S+)', text):
        tokens.append(match.group(1) if match.group(1) is not None else match.group(2))
    return tokens


def parse_incident_id(token: str) -> int | None:
    match = _ID.match(token)
    return int(match.group(1)) if match else None


def parse_user(token: str) -> str | None:
    match = _USER.match(token)
    return match.group(1).lower().rstrip(".") if match else None


@dataclass
class _Options:
    """Option values as typed, before they are checked."""

    values: dict[Option, str] = field(default_factory=dict)
    invite: list[str] = field(default_factory=list)


def _split_options(name: str, tokens: list[str]) -> tuple[list[str], _Options]:
    """Separate positional words from options; options may appear anywhere."""
    words: list[str] = []
    options = _Options()
    seen: set[Option] = set()
    allowed = COMMANDS[name].options
    i = 0
    while i < len(tokens):
        token = tokens[i]
        lowered = token.lower()
        key: Option | None = None
        inline: str | None = None
        if lowered.startswith("--") and "=" in lowered:
            flag, inline = token.split("=", 1)
            key = OPTION_FLAGS.get(flag.lower())
        elif lowered in OPTION_FLAGS:
            key = OPTION_FLAGS[lowered]
        elif lowered.startswith("-") and len(lowered) > 1 and not _INT.match(lowered[1:]):
            raise UsageError(name, messages.unknown_option(token))
        if key is None:
            words.append(token)
            i += 1
            continue
        if key not in allowed:
            raise UsageError(name, messages.option_not_taken(name, token))
        if key in seen:
            raise UsageError(name, messages.option_twice(token))
        seen.add(key)
        if key == Option.INVITE:
            users: list[str] = []
            if inline:
                users.append(inline)
            i += 1
            while i < len(tokens) and tokens[i].startswith("@"):
                users.append(tokens[i])
                i += 1
            if not users:
                raise UsageError(name, messages.invite_needs_user())
            for user in users:
                username = parse_user(user)
                if username is None:
                    raise UsageError(name, messages.not_a_username(user))
                if username not in options.invite:
                    options.invite.append(username)
            continue
        if inline is not None:
            value = inline
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise UsageError(name, messages.option_needs_value(token))
            value = tokens[i + 1]
            i += 2
        options.values[key] = value
    return words, options


def _severity(name: str, value: str) -> int:
    match = _SEVERITY.match(value.strip())
    if not match:
        raise UsageError(name, messages.bad_severity(value))
    return int(match.group(1))


def _positive(name: str, option: str, value: str, maximum: int) -> int:
    if not _INT.match(value) or not 1 <= int(value) <= maximum:
        raise UsageError(name, messages.bad_number(option, maximum, value))
    return int(value)


def _item_number(name: str, token: str | None) -> int:
    if token is None:
        raise UsageError(name, messages.give_item_number())
    value = token.lstrip("#")
    if not _INT.match(value) or int(value) < 1:
        raise UsageError(name, messages.not_an_item_number(token))
    return int(value)


def _apply_options(command: Command, options: _Options) -> None:
    """Check option values and fill them in, in a fixed order (the first bad one is named)."""
    name, values = command.name, options.values
    if Option.SEV in values:
        command.severity = _severity(name, values[Option.SEV])
    if Option.PLAYBOOK in values:
        command.playbook = values[Option.PLAYBOOK]
    command.invite = options.invite
    if Option.TEAM in values:
        command.team = values[Option.TEAM].lstrip("~").lower()
    if Option.LIMIT in values:
        command.limit = _positive(name, "--limit", values[Option.LIMIT], 100)
    if Option.PAGE in values:
        command.page = _positive(name, "--page", values[Option.PAGE], 10000)
    if Option.DAYS in values:
        command.days = _positive(name, "--days", values[Option.DAYS], 3650)
    if Option.FORMAT in values:
        fmt = values[Option.FORMAT].lower()
        if fmt not in _FORMATS:
            raise UsageError(name, messages.bad_format(values[Option.FORMAT]))
        command.format = fmt


# --- one function per grammar kind: (command, positional words) -> fills the command ---


def _leading_id(command: Command, words: list[str]) -> None:
    """An incident number first is the incident the command is about."""
    if words and parse_incident_id(words[0]) is not None:
        command.incident = parse_incident_id(words.pop(0))


def _text(command: Command, words: list[str]) -> None:
    command.text = " ".join(words).strip()


def _id_text(command: Command, words: list[str]) -> None:
    _leading_id(command, words)
    command.text = " ".join(words).strip()


def _id(command: Command, words: list[str]) -> None:
    _leading_id(command, words)
    if words:
        raise UsageError(command.name, messages.not_an_incident_number(words[0]))


def _id_required(command: Command, words: list[str]) -> None:
    if len(words) != 1 or parse_incident_id(words[0]) is None:
        raise UsageError(command.name, messages.join_needs_number())
    command.incident = parse_incident_id(words[0])


def _user(command: Command, words: list[str]) -> None:
    _leading_id(command, words)
    if len(words) != 1 or parse_user(words[0]) is None:
        raise UsageError(command.name, messages.one_user())
    command.user = parse_user(words[0])


def _severity_words(command: Command, words: list[str]) -> None:
    if len(words) == 2:  # `sev 12 2`: incident 12 to Sev 2
        _leading_id(command, words)
    if len(words) != 1:
        raise UsageError(command.name, messages.one_severity())
    command.severity = _severity(command.name, words[0])


def _required_text(command: Command, words: list[str]) -> None:
    command.text = " ".join(words).strip()
    if not command.text:
        raise UsageError(command.name, messages.empty_text())


def _item(command: Command, words: list[str]) -> None:
    if len(words) != 1:
        raise UsageError(command.name, messages.one_item_number())
    command.item = _item_number(command.name, words[0])


def _item_text(command: Command, words: list[str]) -> None:
    command.item = _item_number(command.name, words[0] if words else None)
    command.text = " ".join(words[1:]).strip()
    if not command.text:
        raise UsageError(command.name, messages.empty_new_text())


def _item_user(command: Command, words: list[str]) -> None:
    command.item = _item_number(command.name, words[0] if words else None)
    if len(words) != 2 or parse_user(words[1]) is None:
        raise UsageError(command.name, messages.one_user_after_item())
    command.user = parse_user(words[1])


def _playbook(command: Command, words: list[str]) -> None:
    name = command.name
    if not words:
        raise UsageError(name, messages.playbook_needs_action())
    try:
        sub = PlaybookAction(words[0].lower())
    except ValueError:
        raise UsageError(name, messages.playbook_bad_action(words[0])) from None
    command.sub = sub
    if len(words) < 2:
        raise UsageError(name, messages.playbook_needs_name(sub))
    if not _PLAYBOOK_NAME.match(words[1]):
        raise UsageError(name, messages.bad_playbook_name(words[1]))
    command.playbook = words[1]
    rest = words[2:]
    if sub in (PlaybookAction.SHOW, PlaybookAction.DELETE) and rest:
        raise UsageError(name, messages.playbook_takes_only_name(sub))
    if sub == PlaybookAction.CREATE:
        joined = " ".join(rest)
        command.items = [item.strip() for item in joined.split(";") if item.strip()]
    elif sub == PlaybookAction.ADD:
        command.text = " ".join(rest).strip()
        if not command.text:
            raise UsageError(name, messages.empty_item_text())
    elif sub == PlaybookAction.REMOVE:
        if len(rest) != 1:
            raise UsageError(name, messages.one_item_number())
        command.item = _item_number(name, rest[0])


def _help(command: Command, words: list[str]) -> None:
    if len(words) > 1:
        raise UsageError(command.name, messages.help_one_command())
    command.text = words[0].lower() if words else ""


def _none(command: Command, words: list[str]) -> None:
    if words:
        raise UsageError(command.name, messages.takes_no_words(command.name, " ".join(words)))


GRAMMARS: dict[Grammar, Callable[[Command, list[str]], None]] = {
    Grammar.TEXT: _text,
    Grammar.ID_TEXT: _id_text,
    Grammar.ID: _id,
    Grammar.ID_REQUIRED: _id_required,
    Grammar.USER: _user,
    Grammar.SEVERITY: _severity_words,
    Grammar.REQUIRED_TEXT: _required_text,
    Grammar.ITEM: _item,
    Grammar.ITEM_TEXT: _item_text,
    Grammar.ITEM_USER: _item_user,
    Grammar.PLAYBOOK: _playbook,
    Grammar.HELP: _help,
    Grammar.NONE: _none,
}


def parse(name: str, rest: str) -> Command:
    """Parse the words after command ``name`` (already lower-case and in ``COMMANDS``)."""
    words, options = _split_options(name, tokenize(rest))
    command = Command(name=name)
    _apply_options(command, options)
    GRAMMARS[COMMANDS[name].grammar](command, words)
    return command
