"""The command table: each command declared once (word, usage, help, options, grammar, access).

Parsing (``grammar.parse``), help (``messages.help_all``/``help_one``), the permission
check (``rules.allowed``) and the listener patterns of the plugins all read ``COMMANDS``.
This module imports nothing of ours, so every other domain module may read the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final


class Access(IntEnum):
    """How close a person is to an incident."""

    NONE = 0  # not in the incident's team: sees nothing, not even that it exists
    TEAM = 1  # in the team: may read the summary (info, list, history, stats) and join
    CHANNEL = 2  # in the incident channel: may change it and read what quotes the channel


class Option(StrEnum):
    """Options a command may take, as ``--long value`` or ``-s value`` (see ``OPTION_FLAGS``)."""

    SEV = "sev"
    PLAYBOOK = "playbook"
    INVITE = "invite"
    TEAM = "team"
    LIMIT = "limit"
    PAGE = "page"
    FORMAT = "format"
    DAYS = "days"


# How each option may be written.
OPTION_FLAGS: Final[dict[str, Option]] = {
    "--sev": Option.SEV,
    "--severity": Option.SEV,
    "-s": Option.SEV,
    "--playbook": Option.PLAYBOOK,
    "-p": Option.PLAYBOOK,
    "--invite": Option.INVITE,
    "-i": Option.INVITE,
    "--team": Option.TEAM,
    "-t": Option.TEAM,
    "--limit": Option.LIMIT,
    "-n": Option.LIMIT,
    "--page": Option.PAGE,
    "--format": Option.FORMAT,
    "-f": Option.FORMAT,
    "--days": Option.DAYS,
    "-d": Option.DAYS,
}


class Grammar(StrEnum):
    """What a command's positional words are (options aside); ``grammar.parse`` implements each."""

    TEXT = "text"  # free text, may be empty (start: the title)
    ID_TEXT = "id_text"  # [<id>] [text…]
    ID = "id"  # [<id>] and nothing else
    ID_REQUIRED = "id_required"  # <id>
    USER = "user"  # [<id>] @user
    SEVERITY = "severity"  # [<id>] <1-4>
    REQUIRED_TEXT = "required_text"  # <text>, not empty
    ITEM = "item"  # <n>
    ITEM_TEXT = "item_text"  # <n> <text>
    ITEM_USER = "item_user"  # <n> @user
    PLAYBOOK = "playbook"  # show|create|add|remove|delete NAME […]
    HELP = "help"  # [command]
    NONE = "none"  # no words at all


class PlaybookAction(StrEnum):
    """The sub-commands of ``playbook``."""

    SHOW = "show"
    CREATE = "create"
    ADD = "add"
    REMOVE = "remove"
    DELETE = "delete"


class Outcome(StrEnum):
    """How a command ended, as logged (``command.handled outcome=…``)."""

    OK = "ok"
    USAGE = "usage"  # the arguments were wrong
    REFUSED = "refused"  # a rule or the state said no
    ERROR = "error"  # the bot failed
    UNKNOWN = "unknown"  # not a command word
    HELP = "help"  # addressed to the bot with no word at all: the help was the answer
    IGNORED = "ignored"  # from a bot or a deactivated account: no reply (rules.Actor)


@dataclass(frozen=True)
class CommandSpec:
    """One command. ``access`` is set for commands about one incident, None for the others."""

    word: str
    usage: str  # the syntax line of help and of usage errors, without the bot's mention
    purpose: str  # one line for help, lower-case first
    where: str  # where it may be used, for `help <command>`
    example: str  # a valid use, for tests and docs
    grammar: Grammar
    options: frozenset[Option] = field(default_factory=frozenset)
    access: Access | None = None
    changes_state: bool = True
    private_answer: bool = False


_ANYWHERE = "anywhere"
_CHANNEL = "incident channel"
_CHANNEL_OR_ID = "incident channel, or anywhere with an id"

# Order is the order of `help`. Everything that changes an incident needs the channel; so do
# timeline, notes and export, which quote channel posts.
_TABLE = (
    CommandSpec(
        "start",
        "start <title> [--sev 1-4] [--playbook NAME] [--invite @a @b] [--team NAME]",
        "open an incident: private channel, you as commander, the playbook's checklist",
        "any channel, thread reply, or DM",
        "start DB primary down --sev 1 --playbook db --invite @bob --team ops",
        Grammar.TEXT,
        frozenset({Option.SEV, Option.PLAYBOOK, Option.INVITE, Option.TEAM}),
    ),
    CommandSpec(
        "end",
        "end [<id>] [resolution…]",
        "end an incident and record its duration",
        _CHANNEL_OR_ID,
        "end 12 rolled back",
        Grammar.ID_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "info",
        "info [<id>]",
        "title, status, severity, commander, times, checklist progress",
        _CHANNEL_OR_ID,
        "info 12",
        Grammar.ID,
        access=Access.TEAM,
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "list",
        "list",
        "active incidents in your teams, newest first",
        _ANYWHERE,
        "list",
        Grammar.NONE,
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "history",
        "history [--team NAME] [--limit N] [--page N]",
        "ended incidents in your teams, newest first",
        _ANYWHERE,
        "history --team ops --limit 5 --page 2",
        Grammar.NONE,
        frozenset({Option.TEAM, Option.LIMIT, Option.PAGE}),
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "join",
        "join <id>",
        "add yourself to an incident's private channel",
        _ANYWHERE,
        "join 12",
        Grammar.ID_REQUIRED,
        access=Access.TEAM,
    ),
    CommandSpec(
        "commander",
        "commander @user",
        "hand the commander role to someone in the team",
        _CHANNEL,
        "commander @bob",
        Grammar.USER,
        access=Access.CHANNEL,
    ),
    CommandSpec("sev", "sev <1-4>", "change the severity", _CHANNEL, "sev 2", Grammar.SEVERITY, access=Access.CHANNEL),
    CommandSpec(
        "update",
        "update <text>",
        "post a status update here and in the origin thread",
        _CHANNEL,
        "update Failover done, watching errors",
        Grammar.REQUIRED_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "checklist",
        "checklist",
        "show the checklist with progress",
        _CHANNEL,
        "checklist",
        Grammar.NONE,
        access=Access.TEAM,
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec("check", "check <n>", "tick checklist item n", _CHANNEL, "check 3", Grammar.ITEM, access=Access.CHANNEL),
    CommandSpec("uncheck", "uncheck <n>", "untick checklist item n", _CHANNEL, "uncheck 3", Grammar.ITEM, access=Access.CHANNEL),
    CommandSpec(
        "add",
        "add <text>",
        "add an item to the checklist",
        _CHANNEL,
        "add Tell support",
        Grammar.REQUIRED_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec("remove", "remove <n>", "remove checklist item n", _CHANNEL, "remove 3", Grammar.ITEM, access=Access.CHANNEL),
    CommandSpec(
        "rename",
        "rename <n> <text>",
        "change the text of checklist item n",
        _CHANNEL,
        "rename 3 Page the on-call DBA",
        Grammar.ITEM_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "assign",
        "assign <n> @user",
        "make someone responsible for item n",
        _CHANNEL,
        "assign 3 @bob",
        Grammar.ITEM_USER,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "unassign", "unassign <n>", "clear the assignee of item n", _CHANNEL, "unassign 3", Grammar.ITEM, access=Access.CHANNEL
    ),
    CommandSpec(
        "note",
        "note <text>",
        "add a note to the timeline",
        _CHANNEL,
        "note Replica lag back to normal",
        Grammar.REQUIRED_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "timeline",
        "timeline",
        "the timeline as a table",
        _CHANNEL,
        "timeline",
        Grammar.NONE,
        access=Access.CHANNEL,
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "export",
        "export [<id>] [--format md|json]",
        "upload a postmortem file",
        "incident channel, or a DM with an id",
        "export 12 --format json",
        Grammar.ID,
        frozenset({Option.FORMAT}),
        access=Access.CHANNEL,
        changes_state=False,
    ),
    CommandSpec(
        "reopen",
        "reopen [<id>]",
        "make an ended incident active again",
        _CHANNEL,
        "reopen 12",
        Grammar.ID_TEXT,
        access=Access.CHANNEL,
    ),
    CommandSpec(
        "stats",
        "stats [--team NAME] [--days N]",
        "incident counts and time to resolve",
        _ANYWHERE,
        "stats --team ops --days 30",
        Grammar.NONE,
        frozenset({Option.TEAM, Option.DAYS}),
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "playbooks",
        "playbooks [--team NAME]",
        "list the predefined checklists of your team",
        _ANYWHERE,
        "playbooks --team ops",
        Grammar.NONE,
        frozenset({Option.TEAM}),
        changes_state=False,
        private_answer=True,
    ),
    CommandSpec(
        "playbook",
        "playbook show|create|add|remove|delete NAME […] [--team NAME]",
        "show or edit a team playbook (create NAME item; item, add NAME item, remove NAME n)",
        _ANYWHERE,
        "playbook create db Page the DBA; Fail over --team ops",
        Grammar.PLAYBOOK,
        frozenset({Option.TEAM}),
    ),
    CommandSpec(
        "help",
        "help [command]",
        "what each command does",
        _ANYWHERE,
        "help start",
        Grammar.HELP,
        changes_state=False,
        private_answer=True,
    ),
)
COMMANDS: Final[dict[str, CommandSpec]] = {spec.word: spec for spec in _TABLE}

COMMAND_WORDS: Final[tuple[str, ...]] = tuple(COMMANDS)


def listener_pattern(word: str) -> str:
    """The message pattern of one command word; its arguments are the one group (match it
    case-insensitively, with ``re.DOTALL``)."""
    return rf"^{re.escape(word)}(?:\s+(.*))?$"


# Anything that does not start with a command word; the first word is the one group.
UNKNOWN_PATTERN: Final[str] = rf"^(?!(?:{'|'.join(re.escape(word) for word in COMMANDS)})(?:\s|$))(\S*)"


class UsageError(Exception):
    """The command's arguments are wrong; ``reason`` is one short sentence."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(reason)
        self.command = command
        self.reason = reason


@dataclass
class Command:
    """A parsed command: the fields its grammar and options fill, the others left empty."""

    name: str
    incident: int | None = None
    text: str = ""
    severity: int | None = None
    playbook: str | None = None
    invite: list[str] = field(default_factory=list)
    team: str | None = None
    limit: int | None = None
    page: int | None = None
    format: str | None = None
    days: int | None = None
    user: str | None = None  # username without the @
    item: int | None = None
    sub: PlaybookAction | None = None  # playbook sub-command
    items: list[str] = field(default_factory=list)
