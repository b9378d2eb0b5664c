"""Every user-facing text the bot writes. Nothing else in the tree words a reply.

Texts that name the bot take ``bot``, its username without the ``@``, as first argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache

from incident_bot.domain.commands import COMMANDS
from incident_bot.domain.format import format_datetime, format_duration, format_offset, format_time
from incident_bot.domain.models import ChecklistItem, Incident, Playbook, Status, TimelineEvent
from incident_bot.domain.rules import IncidentEnded, RuleError, duration
from incident_bot.domain.text import code, safe_block, safe_inline

# A function that turns a user id into "@name" (the app layer resolves names).
Names = Callable[[str | None], str]

NOBODY = "nobody"  # where a person is named but none is set
UNKNOWN_USER = "@unknown-user"  # a user id Mattermost no longer knows

CHECK_OPEN = "☐"
CHECK_DONE = "☑"


def link(incident: Incident) -> str:
    return f"~{incident.channel_name}" if incident.channel_name else f"#{incident.number}"


def sev(severity: int) -> str:
    return f"Sev {severity}"


def status_word(incident: Incident) -> str:
    return {Status.STARTING: "Starting", Status.ACTIVE: "Active", Status.ENDED: "Ended"}[incident.status]


def usage(bot: str, command: str) -> str:
    spec = COMMANDS.get(command)
    return f"Usage: `@{bot} {spec.usage}`" if spec else f"Try `@{bot} help`."


# --- errors ---------------------------------------------------------------------


def unknown_command(bot: str, word: str) -> str:
    shown = word if len(word) <= 30 else word[:29] + "…"
    return f"Unknown command `{code(shown)}`. Try `@{bot} help`."


def bad_arguments(bot: str, command: str, reason: str) -> str:
    return f"{reason}\n{usage(bot, command)}"


# --- why a command's arguments are wrong (UsageError reasons; the usage line follows) ---


def unknown_option(token: str) -> str:
    return f"Unknown option `{code(token)}`."


def option_not_taken(command: str, token: str) -> str:
    return f"`{command}` takes no option `{code(token)}`."


def option_twice(token: str) -> str:
    return f"Option `{code(token)}` is given twice."


def option_needs_value(token: str) -> str:
    return f"Option `{code(token)}` needs a value."


def invite_needs_user() -> str:
    return "`--invite` needs at least one @user."


def not_a_username(token: str) -> str:
    return f"`{code(token)}` is not a @username."


def bad_severity(value: str) -> str:
    return f"Severity must be 1, 2, 3 or 4, not `{code(value)}`."


def bad_number(option: str, maximum: int, value: str) -> str:
    return f"`{option}` must be a number from 1 to {maximum}, not `{code(value)}`."


def bad_format(value: str) -> str:
    return f"Format must be `md` or `json`, not `{code(value)}`."


def not_an_incident_number(token: str) -> str:
    return f"`{code(token)}` is not an incident number."


def join_needs_number() -> str:
    return "Give the incident number, e.g. `join 12`."


def one_user() -> str:
    return "Name exactly one @user."


def one_severity() -> str:
    return "Give one severity, 1 (worst) to 4."


def empty_text() -> str:
    return "The text is empty."


def empty_new_text() -> str:
    return "The new text is empty."


def empty_item_text() -> str:
    return "The item text is empty."


def give_item_number() -> str:
    return "Give the item number."


def one_item_number() -> str:
    return "Give exactly one item number."


def not_an_item_number(token: str) -> str:
    return f"`{code(token)}` is not an item number."


def one_user_after_item() -> str:
    return "Name exactly one @user after the item number."


def help_one_command() -> str:
    return "Name at most one command."


def takes_no_words(command: str, words: str) -> str:
    return f"`{command}` takes no words, but got `{code(words)}`."


def playbook_needs_action() -> str:
    return "Say what to do: show, create, add, remove or delete."


def playbook_bad_action(word: str) -> str:
    return f"`{code(word)}` is not one of show, create, add, remove, delete."


def playbook_needs_name(action: str) -> str:
    return f"`playbook {action}` needs the playbook's NAME."


def bad_playbook_name(word: str) -> str:
    return f"`{code(word)}` is not a valid name (letters, digits, - _ . ; up to 64)."


def playbook_takes_only_name(action: str) -> str:
    return f"`playbook {action}` takes only the NAME."


def guest_refused(bot: str) -> str:
    """The reply to any command from a guest account."""
    return f"Guest accounts cannot use @{bot}. Ask a member of the team to do it for you."


def bot_removed_from_team(bot: str, incident: Incident) -> str:
    return (
        f"I can no longer reach incident #{incident.number}: @{bot} was removed from its team. "
        "Ask a team admin to add me back; nothing was changed."
    )


def bot_removed_from_channel(bot: str, incident: Incident) -> str:
    return (
        f"I can no longer reach incident #{incident.number}: @{bot} was removed from its channel. "
        f"Ask someone in {link(incident)} to add me back (`/invite @{bot}`); nothing was changed."
    )


def not_found(number: int) -> str:
    return f"No incident #{number} in your teams."


# What a command does to an incident, for the refusal of someone outside its channel.
_MEMBER_ACTIONS = {
    "end": "end",
    "reopen": "reopen",
    "commander": "change the commander of",
    "sev": "change the severity of",
    "update": "post updates to",
    "note": "add notes to",
    **dict.fromkeys(("check", "uncheck", "add", "remove", "rename", "assign", "unassign"), "change the checklist of"),
}


def not_a_member(incident: Incident, command: str) -> str:
    """The refusal of ``command`` to someone in the team but not in the incident channel."""
    if command not in _MEMBER_ACTIONS:  # commands that quote the channel: timeline, export
        return (
            f"Only members of {link(incident)} can read the {command} of incident #{incident.number}. "
            f"Use `join {incident.number}` first."
        )
    return f"Only members of {link(incident)} can {_MEMBER_ACTIONS[command]} incident #{incident.number}. Use `join {incident.number}` first."


def need_incident_channel(bot: str, command: str) -> str:
    return f"`{command}` works in an incident channel, or give the number: {usage(bot, command).removeprefix('Usage: ')}"


def need_incident_channel_only(bot: str, command: str) -> str:
    return f"`{command}` works only in an incident channel.\n{usage(bot, command)}"


def already_ended(incident: Incident, what: str = "change") -> str:
    assert incident.ended_at is not None
    took = format_duration(incident.ended_at - incident.started_at)
    return f"Incident #{incident.number} already ended at {format_time(incident.ended_at)} (after {took})."


def refusal(error: RuleError) -> str:
    """The reply to a rule's refusal."""
    if isinstance(error, IncidentEnded):
        return already_ended(error.incident, error.what)
    return str(error)


def not_ended(incident: Incident) -> str:
    return f"Incident #{incident.number} is still active; nothing to reopen."


def internal_error(ref: str) -> str:
    return f"Something went wrong (ref {ref}); nothing was changed."


def store_unwritable(ref: str) -> str:
    """The reply when the bot's database cannot be written (disk full, read-only, damaged)."""
    return (
        f"I cannot save anything right now, so nothing was changed: my database cannot be written (ref {ref}). "
        "An admin can see why in the bot's log; try again once it is fixed."
    )


def choose_team(bot: str, teams: Iterable[str]) -> str:
    names = ", ".join(sorted(teams))
    return f"You share several teams with me ({names}); say which with `--team NAME`.\n{usage(bot, 'start')}"


def no_shared_team() -> str:
    return "You are in no team that I am in, so I cannot open an incident for you."


def unknown_team(team: str, teams: Iterable[str]) -> str:
    names = ", ".join(sorted(teams)) or "none"
    return f"You are in no team named `{code(team)}` that I am in (yours: {names})."


def unknown_user(username: str) -> str:
    return f"There is no user {safe_inline('@' + username)}."


def user_not_in_team(username: str, incident: Incident) -> str:
    return f"{safe_inline('@' + username)} is not in the team of incident #{incident.number}."


def same_commander(incident: Incident, name: str) -> str:
    return f"{name} is already the commander of incident #{incident.number}."


def same_severity(incident: Incident) -> str:
    return f"Incident #{incident.number} is already {sev(incident.severity)}."


def empty_title() -> str:
    return "An incident needs a title (or start it as a reply to the alert post)."


def no_free_channel_name(incident: Incident) -> str:
    return f"Could not find a free channel name for incident #{incident.number}."


def still_starting(incident: Incident) -> str:
    return f"Incident #{incident.number} is still being set up; try again in a moment."


def already_member(incident: Incident) -> str:
    return f"You are already in {link(incident)} (incident #{incident.number})."


# --- start / end / info --------------------------------------------------------


def header(incident: Incident, names: Names) -> str:
    text = f"Commander {names(incident.commander_id)} · {sev(incident.severity)} · {status_word(incident)} · started {format_datetime(incident.started_at)}"
    if incident.ended_at:
        text += f" · ended {format_datetime(incident.ended_at)}"
    return text[:1024]


def progress(items: list[ChecklistItem]) -> str:
    live = [item for item in items if not item.removed]
    return f"{sum(1 for item in live if item.done)}/{len(live)}"


def summary(
    bot: str,
    incident: Incident,
    names: Names,
    items: list[ChecklistItem],
    now: datetime,
    origin_link: str | None,
) -> str:
    lines = [
        f"### Incident #{incident.number}: {safe_inline(incident.title)}",
        "",
        "| | |",
        "|---|---|",
        f"| Status | {status_word(incident)} |",
        f"| Severity | {sev(incident.severity)} |",
        f"| Commander | {names(incident.commander_id)} |",
        f"| Started | {format_datetime(incident.started_at)} by {names(incident.started_by)} |",
    ]
    if incident.ended_at:
        lines.append(f"| Ended | {format_datetime(incident.ended_at)} (after {format_duration(duration(incident, now))}) |")
    else:
        lines.append(f"| Duration | {format_duration(duration(incident, now))} so far |")
    if incident.resolution:
        lines.append(f"| Resolution | {safe_inline(incident.resolution)} |")
    if origin_link:
        lines.append(f"| Origin | {origin_link} |")
    if items:
        lines.append(f"| Checklist | {progress(items)} done |")
    if incident.playbook:
        lines.append(f"| Playbook | {safe_inline(incident.playbook)} |")
    lines += [
        "",
        (
            f"Commands: `@{bot} update <text>` · `@{bot} check <n>` · `@{bot} commander @user` · "
            f"`@{bot} sev <1-4>` · `@{bot} end [resolution]` — `@{bot} help` for all."
        ),
    ]
    return "\n".join(lines)


def started_reply(incident: Incident, names: Names, invited: list[str], not_invited: list[str]) -> str:
    text = (
        f"Started incident #{incident.number} ({sev(incident.severity)}): {link(incident)} "
        f"— commander {names(incident.commander_id)}."
    )
    if invited:
        text += " Added " + ", ".join(safe_inline(f"@{u}") for u in invited) + "."
    if not_invited:
        text += " Not added (not in this team or unknown): " + ", ".join(safe_inline(f"@{u}") for u in not_invited) + "."
    return text


def announcement(bot: str, incident: Incident, names: Names) -> str:
    return (
        f":rotating_light: Incident #{incident.number} started ({sev(incident.severity)}): **{safe_inline(incident.title)}** "
        f"— commander {names(incident.commander_id)}. Join with `@{bot} join {incident.number}`."
    )


def ended_reply(incident: Incident, now: datetime) -> str:
    assert incident.ended_at is not None
    text = (
        f"Ended incident #{incident.number} ({link(incident)}) at {format_time(incident.ended_at)} "
        f"after {format_duration(duration(incident, now))}."
    )
    if incident.resolution:
        text += f" Resolution: {safe_inline(incident.resolution)}"
    return text


def ended_notice(incident: Incident, names: Names, now: datetime) -> str:
    """Posted in the origin thread and announcement channel when an incident ends."""
    assert incident.ended_at is not None
    text = (
        f"Incident #{incident.number} ({link(incident)}) ended at {format_datetime(incident.ended_at)} "
        f"after {format_duration(duration(incident, now))} — ended by {names(incident.ended_by)}."
    )
    if incident.resolution:
        text += f" Resolution: {safe_inline(incident.resolution)}"
    return text


def final_summary(bot: str, incident: Incident, names: Names, items: list[ChecklistItem], now: datetime) -> str:
    assert incident.ended_at is not None
    lines = [
        f"**Incident #{incident.number} ended** at {format_datetime(incident.ended_at)} by {names(incident.ended_by)}.",
        f"Duration: {format_duration(duration(incident, now))} · {sev(incident.severity)} · commander {names(incident.commander_id)}",
    ]
    if items:
        lines.append(f"Checklist: {progress(items)} done")
    if incident.resolution:
        lines.append(f"Resolution: {safe_inline(incident.resolution)}")
    lines.append(f"`@{bot} timeline` and `@{bot} export` give the postmortem record.")
    return "\n".join(lines)


def info(incident: Incident, names: Names, items: list[ChecklistItem], now: datetime) -> str:
    lines = [
        f"**#{incident.number} {safe_inline(incident.title)}** — {status_word(incident)} · {sev(incident.severity)}",
        f"Commander: {names(incident.commander_id)} · Channel: {link(incident)}",
        f"Started: {format_datetime(incident.started_at)}",
    ]
    if incident.ended_at:
        lines.append(f"Ended: {format_datetime(incident.ended_at)} · Duration: {format_duration(duration(incident, now))}")
    else:
        lines.append(f"Duration: {format_duration(duration(incident, now))} so far")
    if items:
        lines.append(f"Checklist: {progress(items)} done")
    if incident.resolution:
        lines.append(f"Resolution: {safe_inline(incident.resolution)}")
    return "\n".join(lines)


def incident_list(incidents: list[Incident], total: int, names: Names, team_names: Mapping[str, str], now: datetime) -> str:
    if not incidents:
        return "No active incidents in your teams."
    lines = [
        f"**Active incidents ({total})**",
        "",
        "| # | Title | Sev | Commander | Started | Team | Channel |",
        "|---|---|---|---|---|---|---|",
    ]
    for incident in incidents:
        lines.append(
            f"| {incident.number} | {safe_inline(incident.title)} | {incident.severity} | {names(incident.commander_id)} | "
            f"{format_datetime(incident.started_at)} ({format_duration(duration(incident, now))} ago) | "
            f"{team_names.get(incident.team_id, '?')} | {link(incident)} |"
        )
    if total > len(incidents):
        lines.append(f"\n…and {total - len(incidents)} more.")
    return "\n".join(lines)


def history(
    bot: str,
    incidents: list[Incident],
    total: int,
    page: int,
    limit: int,
    names: Names,
    team_names: Mapping[str, str],
    now: datetime,
    team: str | None = None,
) -> str:
    if not incidents:
        return "No ended incidents in your teams." if page == 1 else f"No page {page}: there are {total} ended incidents."
    first = (page - 1) * limit + 1
    lines = [
        f"**Ended incidents {first}–{first + len(incidents) - 1} of {total}**",
        "",
        "| # | Title | Sev | Duration | Commander | Ended | Team |",
        "|---|---|---|---|---|---|---|",
    ]
    for incident in incidents:
        ended = format_datetime(incident.ended_at) if incident.ended_at else "?"
        lines.append(
            f"| {incident.number} | {safe_inline(incident.title)} | {incident.severity} | {format_duration(duration(incident, now))} | "
            f"{names(incident.commander_id)} | {ended} | {team_names.get(incident.team_id, '?')} |"
        )
    if first + len(incidents) - 1 < total:
        # The next page's command, whole, with the same team and page size.
        options = (f" --team {team}" if team else "") + f" --page {page + 1}" + (f" --limit {limit}" if limit != 10 else "")
        lines.append(f"\nMore: `@{bot} history{options}`")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, with a visible mark where something was left out."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def joined(incident: Incident) -> str:
    return f"Added you to {link(incident)} (incident #{incident.number})."


def joined_notice(incident: Incident, names: Names, user_id: str) -> str:
    return f"{names(user_id)} joined incident #{incident.number}."


def commander_changed(incident: Incident, names: Names, previous: str) -> str:
    return f"Commander of incident #{incident.number} is now {names(incident.commander_id)} (was {names(previous)})."


def severity_changed(incident: Incident, previous: int) -> str:
    return f"Incident #{incident.number} is now {sev(incident.severity)} (was {sev(previous)})."


# --- help ------------------------------------------------------------------------


SLASH = "/incident"  # the slash command's trigger, as `register-command` creates it


@cache  # the same text for the bot's one name; built once instead of on every `help`
def help_all(bot: str) -> str:
    lines = [
        f"**@{bot} commands** (mention me, write to me directly without the mention,"
        f" or type `{SLASH} <command>`; `{SLASH} start` alone opens a form):",
        "",
    ]
    for spec in COMMANDS.values():
        lines.append(f"- `{spec.usage}` — {spec.purpose}")
    lines.append("")
    lines.append("React ✅ on a checklist item to tick it; 📌 on any post in an incident channel adds it to the timeline.")
    return "\n".join(lines)


def help_one(bot: str, command: str) -> str:
    spec = COMMANDS[command]
    return f"`@{bot} {spec.usage}` or `{SLASH} {spec.usage}`\n{spec.purpose[0].upper()}{spec.purpose[1:]}. Where: {spec.where}."


def help_unknown(bot: str, word: str) -> str:
    return f"There is no command `{code(word)}`. Try `@{bot} help`."


def recovered(command_text: str) -> str:
    shown = " ".join(command_text.split())
    shown = (shown[:80] + "…") if len(shown) > 80 else shown
    return f"Done: `{code(shown)}` was applied just before I restarted; the channel shows its effect."


def late(text: str, outage: str) -> str:
    return f"{text}\n_(handled after a {outage} outage)_"


# --- checklist -------------------------------------------------------------------


def checklist_item(item: ChecklistItem, names: Names) -> str:
    body = f"{item.number}. {safe_inline(item.text)}"
    assignee = f" (→ {names(item.assignee_id)})" if item.assignee_id else ""
    if item.removed:
        return f"~~{body}~~ (removed)"
    if item.done and item.done_at:
        return f"{CHECK_DONE} ~~{body}~~ — {names(item.done_by)} {format_time(item.done_at)}{assignee}"
    return f"{CHECK_OPEN} {body}{assignee}"


def checklist_header(bot: str, incident: Incident, items: list[ChecklistItem], names: Names, *, buttons: bool = False) -> str:
    live = [item for item in items if not item.removed]
    lines = [f"**Checklist of incident #{incident.number}** — {progress(items)} done"]
    if not live:
        lines.append(f"_No items yet: `@{bot} add <text>`._")
    for item in live:
        lines.append(checklist_item(item, names))
    lines.append("")
    lines.append(
        "React ✅ (or click Tick) on an item in this thread to tick it."
        if buttons
        else "React ✅ on an item in this thread to tick it."
    )
    return "\n".join(lines)


def checklist_reply(bot: str, incident: Incident, items: list[ChecklistItem], names: Names) -> str:
    live = [item for item in items if not item.removed]
    if not live:
        return f"Incident #{incident.number} has no checklist items. Add one with `@{bot} add <text>`."
    lines = [f"Checklist of incident #{incident.number}: {progress(items)} done"]
    lines += [checklist_item(item, names) for item in live]
    return "\n".join(lines)


def no_item(bot: str, incident: Incident, number: int) -> str:
    return f"Incident #{incident.number} has no checklist item {number}. `@{bot} checklist` shows them."


def item_checked(incident: Incident, item: ChecklistItem, items: list[ChecklistItem]) -> str:
    return f"Ticked item {item.number} ({safe_inline(item.text)}) — {progress(items)} done."


def item_unchecked(incident: Incident, item: ChecklistItem, items: list[ChecklistItem]) -> str:
    return f"Unticked item {item.number} ({safe_inline(item.text)}) — {progress(items)} done."


def item_already(item: ChecklistItem, done: bool) -> str:
    return f"Item {item.number} is already {'ticked' if done else 'not ticked'}."


def item_added(incident: Incident, item: ChecklistItem, items: list[ChecklistItem]) -> str:
    return f"Added item {item.number} to the checklist of incident #{incident.number} ({progress(items)} done)."


def item_removed(incident: Incident, item: ChecklistItem, items: list[ChecklistItem]) -> str:
    return f"Removed item {item.number} ({safe_inline(item.text)}) from the checklist of incident #{incident.number}."


def item_renamed(item: ChecklistItem, old: str) -> str:
    return f"Item {item.number} now reads: {safe_inline(item.text)} (was: {safe_inline(old)})"


def item_assigned(item: ChecklistItem, names: Names) -> str:
    return f"Item {item.number} ({safe_inline(item.text)}) is assigned to {names(item.assignee_id)}."


def item_unassigned(item: ChecklistItem) -> str:
    return f"Item {item.number} ({safe_inline(item.text)}) has no assignee now."


def item_not_assigned(item: ChecklistItem) -> str:
    return f"Item {item.number} has no assignee."


def assigned_dm(incident: Incident, item: ChecklistItem, names: Names, by: str) -> str:
    return f"{names(by)} assigned you checklist item {item.number} of incident #{incident.number} ({link(incident)}): {safe_inline(item.text)}"


def tick_refused_ended(bot: str, incident: Incident, names: Names, user_id: str) -> str:
    return f"{names(user_id)}: {already_ended(incident)} Ticks are not recorded; `@{bot} reopen` first."


# --- playbooks ---------------------------------------------------------------------


def playbook_list(bot: str, playbooks: list[Playbook], default: str | None) -> str:
    if not playbooks:
        return f"No playbooks yet. Create one: `@{bot} playbook create NAME first step; second step`."
    lines = ["**Playbooks**", ""]
    for playbook in playbooks:
        source = "config, read-only" if playbook.read_only else "team"
        mark = " (default)" if default and playbook.name.lower() == default.lower() else ""
        description = f" — {safe_inline(playbook.description)}" if playbook.description else ""
        lines.append(
            f"- `{code(playbook.name)}`{mark}: {len(playbook.items)} items, Sev {playbook.default_severity} by default, {source}{description}"
        )
    return "\n".join(lines)


def playbook_show(playbook: Playbook) -> str:
    source = "from the config file, read-only" if playbook.read_only else "team playbook"
    lines = [f"**Playbook `{code(playbook.name)}`** ({source}, Sev {playbook.default_severity} by default)"]
    if playbook.description:
        lines.append(safe_inline(playbook.description))
    if not playbook.items:
        lines.append("_No items._")
    lines += [f"{n}. {safe_inline(item)}" for n, item in enumerate(playbook.items, start=1)]
    return "\n".join(lines)


def unknown_playbook(name: str, playbooks: list[Playbook]) -> str:
    names = ", ".join(f"`{code(p.name)}`" for p in playbooks) or "none"
    return f"There is no playbook `{code(name)}` in this team. Playbooks: {names}."


def playbook_read_only(name: str) -> str:
    return f"Playbook `{code(name)}` comes from the config file and is read-only; create a team playbook with another name."


def playbook_exists(bot: str, name: str) -> str:
    return f"A playbook `{code(name)}` already exists in this team. `@{bot} playbook show {code(name)}` shows it."


def playbook_created(playbook: Playbook) -> str:
    return f"Created playbook `{code(playbook.name)}` with {len(playbook.items)} items."


def playbook_item_added(playbook: Playbook) -> str:
    return f"Added item {len(playbook.items)} to playbook `{code(playbook.name)}`."


def playbook_item_removed(playbook: Playbook, number: int, text: str) -> str:
    return f"Removed item {number} ({safe_inline(text)}) from playbook `{code(playbook.name)}`; {len(playbook.items)} items left."


def playbook_no_item(playbook: Playbook, number: int) -> str:
    return f"Playbook `{code(playbook.name)}` has no item {number} (it has {len(playbook.items)})."


def playbook_deleted(name: str) -> str:
    return f"Deleted playbook `{code(name)}`."


def playbook_needs_team(teams: Iterable[str]) -> str:
    return f"Which team? You share several with me ({', '.join(sorted(teams))}); run this in one of its channels."


# --- timeline, status updates, reminders ------------------------------------------

_KIND_WORDS = {
    "started": "Incident started",
    "severity_changed": "Severity changed",
    "commander_changed": "Commander changed",
    "member_joined": "Joined",
    "ended": "Incident ended",
    "reopened": "Incident reopened",
    "checklist_checked": "Ticked",
    "checklist_unchecked": "Unticked",
    "checklist_added": "Checklist item added",
    "checklist_removed": "Checklist item removed",
    "checklist_renamed": "Checklist item renamed",
    "checklist_assigned": "Checklist item assigned",
    "checklist_unassigned": "Checklist item unassigned",
    "status_update": "Status update",
    "note": "Note",
    "post_pinned": "Post",
    "reminder_sent": "Reminder sent",
    "channel_archived": "Incident channel archived (the bot no longer posts there)",
}


def timeline_event_text(event: TimelineEvent) -> str:
    """One line describing an event, for the timeline table and the export."""
    word = _KIND_WORDS.get(str(event.kind), str(event.kind))
    item = event.data.get("item") if event.data else None
    text = " ".join(event.text.split())
    if item is not None:
        word = f"{word} {item}"
    if event.kind == "post_pinned":
        if event.deleted or event.data.get("post_deleted"):
            return "Post (deleted)"
        edited = " (edited)" if event.data.get("edited") else ""
        link_ = event.data.get("permalink")
        return f"[Post]({link_}){edited}: {text}" if link_ else f"Post{edited}: {text}"
    return f"{word}: {text}" if text else word


def timeline_tables(incident: Incident, events: list[TimelineEvent], names: Names, max_chars: int = 15000) -> list[str]:
    """The timeline as Markdown tables, split across posts rather than cut."""
    head = ["| Time (UTC) | Offset | Event | Who |", "|---|---|---|---|"]
    title = f"**Timeline of incident #{incident.number}: {safe_inline(incident.title)}**"
    rows = [
        f"| {event.at.strftime('%Y-%m-%d %H:%M')} | {format_offset(incident.started_at, event.at)} | "
        f"{_clip(safe_inline(timeline_event_text(event)), 2000)} | {names(event.actor_id) if event.actor_id else ''} |"
        for event in events
    ]
    posts: list[str] = []
    current = [title, "", *head]
    for row in rows:
        if len("\n".join(current)) + len(row) + 1 > max_chars and len(current) > len(head) + 2:
            posts.append("\n".join(current))
            current = [f"_(timeline of incident #{incident.number}, continued)_", "", *head]
        current.append(row)
    posts.append("\n".join(current))
    if len(posts) > 1:
        posts = [f"{post}\n\n_Part {i} of {len(posts)}_" for i, post in enumerate(posts, start=1)]
    return posts


def note_added(incident: Incident) -> str:
    return f"Added a note to the timeline of incident #{incident.number}."


def status_update(incident: Incident, names: Names, author: str, text: str, at: datetime) -> str:
    return (
        f"#### Status update — incident #{incident.number}: {safe_inline(incident.title)}\n"
        f"{sev(incident.severity)} · {status_word(incident)} · commander {names(incident.commander_id)} · "
        f"{format_datetime(at)} by {names(author)}\n\n{safe_block(text)}"
    )


def update_posted(incident: Incident, next_due: datetime | None) -> str:
    text = f"Posted the status update of incident #{incident.number}."
    if next_due:
        text += f" Next one due by {format_time(next_due)}."
    return text


def reminder(bot: str, incident: Incident, names: Names, since: datetime, now: datetime) -> str:
    return (
        f"{names(incident.commander_id)}: no status update on incident #{incident.number} for "
        f"{format_duration(now - since)} ({sev(incident.severity)}). Post one with `@{bot} update <text>`."
    )


def stats(
    teams: list[str],
    days: int,
    by_severity: Mapping[int, int],
    open_now: int,
    median: str | None,
    mean: str | None,
    resolved: int,
) -> str:
    total = sum(by_severity.values())
    team_label = ", ".join(safe_inline(t) for t in teams) or "your teams"
    lines = [
        f"**Incidents in {team_label}, last {days} days: {total}**",
        "",
        "| Sev 1 | Sev 2 | Sev 3 | Sev 4 | Open now |",
        "|---|---|---|---|---|",
        f"| {by_severity.get(1, 0)} | {by_severity.get(2, 0)} | {by_severity.get(3, 0)} | {by_severity.get(4, 0)} | {open_now} |",
        "",
    ]
    if resolved:
        lines.append(f"Time to resolve ({resolved} ended): median {median}, mean {mean}.")
    else:
        lines.append("None ended in that time, so no time to resolve yet.")
    return "\n".join(lines)


def exported(incident: Incident, filename: str) -> str:
    return f"Postmortem starter for incident #{incident.number}: `{filename}` (attached)."


def export_where(number: int | None) -> str:
    example = f"export {number}" if number is not None else "export <id>"
    return (
        "`export` uploads the incident's record, so it works only in that incident's channel, "
        f"or in a direct message to me: `{example}`."
    )


def reopened(incident: Incident) -> str:
    return f"Reopened incident #{incident.number} ({link(incident)}); it is active again."


# --- what the timeline records of a change --------------------------------------------


def at(username: str) -> str:
    """How a person is named: ``@alice``."""
    return f"@{username}"


def change(before: str, after: str) -> str:
    """``Sev 3 → Sev 1``, ``@alice → @bob``, an item's old text → its new one."""
    return f"{before} → {after}"


def no_update_for(quiet: timedelta) -> str:
    return f"no update for {format_duration(quiet)}"


def channel_purpose(number: int) -> str:
    return f"Incident #{number}, managed by incident-bot"


# --- the slash command and the start dialog (web/) ---------------------------------------


def dialog_title() -> str:
    return "Start an incident"


def dialog_intro() -> str:
    return "Opens a private incident channel with you as commander."


def dialog_submit() -> str:
    return "Start"


DIALOG_LABELS: dict[str, str] = {
    "title": "Title",
    "severity": "Severity",
    "playbook": "Playbook",
    "responders": "Responders",
    "update": "First update",
}

DIALOG_HELP: dict[str, str] = {
    "title": "What is broken, in a few words.",
    "severity": "1 is the most severe.",
    "playbook": "Its checklist is copied into the incident channel.",
    "responders": "Added to the incident channel with you.",
    "update": "Posted as the first status update.",
}


def severity_option(severity: int) -> str:
    return sev(severity)


def no_playbook_option() -> str:
    return "(none)"


def dialog_need_title() -> str:
    return "A title is required."


def dialog_bad_severity() -> str:
    return "Choose a severity from 1 to 4."


def dialog_unknown_playbook(name: str) -> str:
    return f"There is no playbook {safe_inline(name)} in this team any more."


def dialog_unknown_users(names: list[str]) -> str:
    return "Not found or not in this team: " + ", ".join(safe_inline(name) for name in names) + "."


def dialog_not_opened() -> str:
    return "I could not open the form; type `/incident start <title>` (see `/incident help start`) instead."


# --- buttons and dialogs -------------------------------------------------------------

# Labels by action id (domain/buttons.py Act); plain strings keep this module below buttons.
BUTTON_LABELS: dict[str, str] = {
    "update": "Post update",
    "sev": "Change severity",
    "end": "End incident",
    "export": "Export",
    "tick": "Tick",
    "untick": "Untick",
    "join": "Join",
}


def button_refused() -> str:
    return "This button is not valid here. Use the buttons on the incident's own posts, or a command."


def button_stale(incident: Incident) -> str:
    return f"Incident #{incident.number} has ended; its buttons do nothing until it is reopened."


def item_gone() -> str:
    return "That checklist item was removed."


def update_dialog_title(incident: Incident) -> str:
    return _clip(f"Status update for #{incident.number}", 24)


def end_dialog_title(incident: Incident) -> str:
    return _clip(f"End incident #{incident.number}", 24)


UPDATE_FIELD = "Update"
UPDATE_HELP = "Posted in the incident channel, the thread it started from and the announcements."
RESOLUTION_FIELD = "Resolution"
RESOLUTION_HELP = "What fixed it; kept in the summary and the postmortem."
POST_LABEL = "Post"
END_LABEL = "End incident"


def field_required(field: str) -> str:
    return f"{field} cannot be empty."
