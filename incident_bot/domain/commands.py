"""Command grammar: words, case-insensitive, options as ``--long value`` or ``-s value``.

``parse(name, rest)`` turns the text after the command word into a ``Command`` or
raises ``UsageError`` naming what was wrong; the caller replies with the reason and
the command's usage line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    usage: str
    purpose: str
    where: str


# Order is the order of `help`.
SPECS: dict[str, Spec] = {
    "start": Spec(
        "start <title> [--sev 1-4] [--playbook NAME] [--invite @a @b] [--team NAME]",
        "open an incident: private channel, you as commander, the playbook's checklist",
        "any channel, thread reply, or DM",
    ),
    "end": Spec("end [<id>] [resolution…]", "end an incident and record its duration", "incident channel, or anywhere with an id"),
    "info": Spec("info [<id>]", "title, status, severity, commander, times, checklist progress", "incident channel, or anywhere with an id"),
    "list": Spec("list", "active incidents in your teams, newest first", "anywhere"),
    "history": Spec("history [--team NAME] [--limit N] [--page N]", "ended incidents in your teams, newest first", "anywhere"),
    "join": Spec("join <id>", "add yourself to an incident's private channel", "anywhere"),
    "commander": Spec("commander @user", "hand the commander role to someone in the team", "incident channel"),
    "sev": Spec("sev <1-4>", "change the severity", "incident channel"),
    "update": Spec("update <text>", "post a status update here and in the origin thread", "incident channel"),
    "checklist": Spec("checklist", "show the checklist with progress", "incident channel"),
    "check": Spec("check <n>", "tick checklist item n", "incident channel"),
    "uncheck": Spec("uncheck <n>", "untick checklist item n", "incident channel"),
    "add": Spec("add <text>", "add an item to the checklist", "incident channel"),
    "remove": Spec("remove <n>", "remove checklist item n", "incident channel"),
    "rename": Spec("rename <n> <text>", "change the text of checklist item n", "incident channel"),
    "assign": Spec("assign <n> @user", "make someone responsible for item n", "incident channel"),
    "unassign": Spec("unassign <n>", "clear the assignee of item n", "incident channel"),
    "note": Spec("note <text>", "add a note to the timeline", "incident channel"),
    "timeline": Spec("timeline", "the timeline as a table", "incident channel"),
    "export": Spec("export [<id>] [--format md|json]", "upload a postmortem file", "incident channel, or a DM with an id"),
    "reopen": Spec("reopen [<id>]", "make an ended incident active again", "incident channel"),
    "stats": Spec("stats [--team NAME] [--days N]", "incident counts and time to resolve", "anywhere"),
    "playbooks": Spec("playbooks [--team NAME]", "list the predefined checklists of your team", "anywhere"),
    "playbook": Spec(
        "playbook show|create|add|remove|delete NAME […] [--team NAME]",
        "show or edit a team playbook (create NAME item; item, add NAME item, remove NAME n)",
        "anywhere",
    ),
    "help": Spec("help [command]", "what each command does", "anywhere"),
}

COMMAND_WORDS: tuple[str, ...] = tuple(SPECS)

SEVERITIES = (1, 2, 3, 4)

_OPTION_NAMES = {
    "--sev": "sev",
    "--severity": "sev",
    "-s": "sev",
    "--playbook": "playbook",
    "-p": "playbook",
    "--invite": "invite",
    "-i": "invite",
    "--team": "team",
    "-t": "team",
    "--limit": "limit",
    "-n": "limit",
    "--page": "page",
    "--format": "format",
    "-f": "format",
    "--days": "days",
    "-d": "days",
}

# Which options each command takes.
_ALLOWED: dict[str, set[str]] = {
    "start": {"sev", "playbook", "invite", "team"},
    "history": {"team", "limit", "page"},
    "export": {"format"},
    "stats": {"team", "days"},
    "playbooks": {"team"},
    "playbook": {"team"},
}

_ID = re.compile(r"^#?(\d{1,9})$")
_USER = re.compile(r"^@([a-z0-9][a-z0-9._-]{0,63})$", re.IGNORECASE)
_INT = re.compile(r"^\d{1,9}$")


class UsageError(Exception):
    """The command's arguments are wrong; ``reason`` is one short sentence."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(reason)
        self.command = command
        self.reason = reason


@dataclass
class Command:
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
    sub: str | None = None  # playbook sub-command
    items: list[str] = field(default_factory=list)


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


def _split_options(name: str, tokens: list[str]) -> tuple[list[str], dict[str, object]]:
    """Separate positional words from options; options may appear anywhere."""
    words: list[str] = []
    options: dict[str, object] = {}
    allowed = _ALLOWED.get(name, set())
    i = 0
    while i < len(tokens):
        token = tokens[i]
        lowered = token.lower()
        key: str | None = None
        inline: str | None = None
        if lowered.startswith("--") and "=" in lowered:
            flag, inline = token.split("=", 1)
            key = _OPTION_NAMES.get(flag.lower())
        elif lowered in _OPTION_NAMES:
            key = _OPTION_NAMES[lowered]
        elif lowered.startswith("-") and len(lowered) > 1 and not _INT.match(lowered[1:]):
            raise UsageError(name, f"Unknown option `{token}`.")
        if key is None:
            words.append(token)
            i += 1
            continue
        if key not in allowed:
            raise UsageError(name, f"`{name}` takes no option `{token}`.")
        if key in options:
            raise UsageError(name, f"Option `{token}` is given twice.")
        if key == "invite":
            users: list[str] = []
            if inline:
                users.append(inline)
            i += 1
            while i < len(tokens) and tokens[i].startswith("@"):
                users.append(tokens[i])
                i += 1
            if not users:
                raise UsageError(name, "`--invite` needs at least one @user.")
            parsed = []
            for user in users:
                username = parse_user(user)
                if username is None:
                    raise UsageError(name, f"`{user}` is not a @username.")
                if username not in parsed:
                    parsed.append(username)
            options[key] = parsed
            continue
        if inline is not None:
            value = inline
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise UsageError(name, f"Option `{token}` needs a value.")
            value = tokens[i + 1]
            i += 2
        options[key] = value
    return words, options


def _severity(name: str, value: str) -> int:
    match = re.match(r"^(?:sev)?([1-4])$", value.strip(), re.IGNORECASE)
    if not match:
        raise UsageError(name, f"Severity must be 1, 2, 3 or 4, not `{value}`.")
    return int(match.group(1))


def _positive(name: str, option: str, value: str, maximum: int) -> int:
    if not _INT.match(value) or not 1 <= int(value) <= maximum:
        raise UsageError(name, f"`{option}` must be a number from 1 to {maximum}, not `{value}`.")
    return int(value)


def _item_number(name: str, token: str | None) -> int:
    if token is None:
        raise UsageError(name, "Give the item number.")
    value = token.lstrip("#")
    if not _INT.match(value) or int(value) < 1:
        raise UsageError(name, f"`{token}` is not an item number.")
    return int(value)


def parse(name: str, rest: str) -> Command:
    """Parse the words after command ``name`` (already lower-case and known)."""
    tokens = tokenize(rest)
    words, options = _split_options(name, tokens)
    command = Command(name=name)
    if "sev" in options:
        command.severity = _severity(name, str(options["sev"]))
    if "playbook" in options:
        command.playbook = str(options["playbook"])
    if "invite" in options:
        command.invite = list(options["invite"])  # type: ignore[arg-type]
    if "team" in options:
        command.team = str(options["team"]).lstrip("~").lower()
    if "limit" in options:
        command.limit = _positive(name, "--limit", str(options["limit"]), 100)
    if "page" in options:
        command.page = _positive(name, "--page", str(options["page"]), 10000)
    if "days" in options:
        command.days = _positive(name, "--days", str(options["days"]), 3650)
    if "format" in options:
        fmt = str(options["format"]).lower()
        if fmt not in ("md", "json"):
            raise UsageError(name, f"Format must be `md` or `json`, not `{options['format']}`.")
        command.format = fmt

    def leading_id() -> None:
        if words and parse_incident_id(words[0]) is not None:
            command.incident = parse_incident_id(words.pop(0))

    if name == "start":
        command.text = " ".join(words).strip()
    elif name in ("end", "reopen"):
        leading_id()
        command.text = " ".join(words).strip()
    elif name in ("info", "export"):
        leading_id()
        if words:
            raise UsageError(name, f"`{words[0]}` is not an incident number.")
    elif name == "join":
        if len(words) != 1 or parse_incident_id(words[0]) is None:
            raise UsageError(name, "Give the incident number, e.g. `join 12`.")
        command.incident = parse_incident_id(words[0])
    elif name == "commander":
        leading_id()
        if len(words) != 1 or parse_user(words[0]) is None:
            raise UsageError(name, "Name exactly one @user.")
        command.user = parse_user(words[0])
    elif name == "sev":
        if len(words) == 2:  # `sev 12 2`: incident 12 to Sev 2
            leading_id()
        if len(words) != 1:
            raise UsageError(name, "Give one severity, 1 (worst) to 4.")
        command.severity = _severity(name, words[0])
    elif name in ("update", "note", "add"):
        command.text = " ".join(words).strip()
        if not command.text:
            raise UsageError(name, "The text is empty.")
    elif name in ("check", "uncheck", "remove", "unassign"):
        if len(words) != 1:
            raise UsageError(name, "Give exactly one item number.")
        command.item = _item_number(name, words[0])
    elif name == "rename":
        command.item = _item_number(name, words[0] if words else None)
        command.text = " ".join(words[1:]).strip()
        if not command.text:
            raise UsageError(name, "The new text is empty.")
    elif name == "assign":
        command.item = _item_number(name, words[0] if words else None)
        if len(words) != 2 or parse_user(words[1]) is None:
            raise UsageError(name, "Name exactly one @user after the item number.")
        command.user = parse_user(words[1])
    elif name == "playbook":
        _parse_playbook(command, words)
    elif name == "help":
        if len(words) > 1:
            raise UsageError(name, "Name at most one command.")
        command.text = words[0].lower() if words else ""
    elif words:  # list, history, checklist, timeline, stats, playbooks
        raise UsageError(name, f"`{name}` takes no words, but got `{' '.join(words)}`.")
    return command


_PLAYBOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _parse_playbook(command: Command, words: list[str]) -> None:
    if not words:
        raise UsageError("playbook", "Say what to do: show, create, add, remove or delete.")
    sub = words[0].lower()
    if sub not in ("show", "create", "add", "remove", "delete"):
        raise UsageError("playbook", f"`{words[0]}` is not one of show, create, add, remove, delete.")
    command.sub = sub
    if len(words) < 2:
        raise UsageError("playbook", f"`playbook {sub}` needs the playbook's NAME.")
    if not _PLAYBOOK_NAME.match(words[1]):
        raise UsageError("playbook", f"`{words[1]}` is not a valid name (letters, digits, - _ . ; up to 64).")
    command.playbook = words[1]
    rest = words[2:]
    if sub in ("show", "delete") and rest:
        raise UsageError("playbook", f"`playbook {sub}` takes only the NAME.")
    if sub == "create":
        joined = " ".join(rest)
        command.items = [item.strip() for item in joined.split(";") if item.strip()]
    elif sub == "add":
        command.text = " ".join(rest).strip()
        if not command.text:
            raise UsageError("playbook", "The item text is empty.")
    elif sub == "remove":
        if len(rest) != 1:
            raise UsageError("playbook", "Give exactly one item number.")
        command.item = _item_number("playbook", rest[0])


def split_command(text: str) -> tuple[str, str]:
    """First word (lower-case) and the rest of the text."""
    stripped = text.strip()
    if not stripped:
        return "", ""
    parts = stripped.split(None, 1)
    return parts[0].lower(), parts[1] if len(parts) > 1 else ""
