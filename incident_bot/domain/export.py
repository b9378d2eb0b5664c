"""The postmortem starter: one incident's record as Markdown or JSON (same data in both)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from incident_bot.domain import messages
from incident_bot.domain.format import format_datetime, format_duration, format_offset
from incident_bot.domain.models import ChecklistItem, Incident, TimelineEvent, TimelineKind
from incident_bot.domain.rules import duration
from incident_bot.domain.text import quote, safe_inline


def filename(incident: Incident, fmt: str) -> str:
    return f"incident-{incident.number}-postmortem.{'json' if fmt == 'json' else 'md'}"


def actor_ids(events: list[TimelineEvent]) -> set[str]:
    return {e.actor_id for e in events if e.actor_id}


def user_ids(incident: Incident, items: list[ChecklistItem], events: list[TimelineEvent]) -> set[str]:
    """Every user the record names."""
    ids = actor_ids(events) | {incident.commander_id, incident.started_by}
    ids |= {i.done_by for i in items if i.done_by} | {i.assignee_id for i in items if i.assignee_id}
    if incident.ended_by:
        ids.add(incident.ended_by)
    return ids


def _iso(at: datetime | None) -> str | None:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if at else None


def record(
    incident: Incident,
    items: list[ChecklistItem],
    events: list[TimelineEvent],
    usernames: dict[str, str],
    participants: list[str],
    team_name: str,
    now: datetime,
) -> dict[str, Any]:
    """Everything the export holds, as plain data; user ids are given as usernames."""

    def who(user_id: str | None) -> str | None:
        return usernames.get(user_id, user_id) if user_id else None

    return {
        "incident": {
            "number": incident.number,
            "title": incident.title,
            "team": team_name,
            "channel": incident.channel_name,
            "status": str(incident.status),
            "severity": incident.severity,
            "commander": who(incident.commander_id),
            "started_by": who(incident.started_by),
            "started_at": _iso(incident.started_at),
            "ended_at": _iso(incident.ended_at),
            "ended_by": who(incident.ended_by),
            "duration_seconds": int(duration(incident, now).total_seconds()),
            "duration": format_duration(duration(incident, now)),
            "resolution": incident.resolution,
            "playbook": incident.playbook,
        },
        "participants": sorted({who(p) or p for p in participants}),
        "status_updates": [
            {"at": _iso(e.at), "by": who(e.actor_id), "text": e.text} for e in events if e.kind == TimelineKind.STATUS_UPDATE
        ],
        "checklist": [
            {
                "number": item.number,
                "text": item.text,
                "done": item.done,
                "done_by": who(item.done_by),
                "done_at": _iso(item.done_at),
                "assignee": who(item.assignee_id),
                "removed": item.removed,
            }
            for item in items
        ],
        "timeline": [
            {
                "at": _iso(e.at),
                "offset": format_offset(incident.started_at, e.at),
                "kind": str(e.kind),
                "by": who(e.actor_id),
                "text": messages.timeline_event_text(e),
            }
            for e in events
        ],
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_markdown(data: dict[str, Any]) -> str:
    """The record as a Markdown document. User text goes through ``domain.text`` (one line
    in cells and headings, status updates as block quotes), so mentions in it notify nobody
    when the document is pasted into a post, and it cannot break the document's layout. The
    JSON form keeps the text exactly as typed: it is data, not markup."""
    inc = data["incident"]

    def at(value: str | None) -> str:
        if not value:
            return "—"
        return format_datetime(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ"))

    def user(name: str | None) -> str:
        return f"@{name}" if name else "—"

    lines = [
        f"# Incident #{inc['number']}: {safe_inline(inc['title'])}",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| Status | {inc['status']} |",
        f"| Severity | Sev {inc['severity']} |",
        f"| Team | {safe_inline(inc['team'])} |",
        f"| Channel | ~{inc['channel']} |",
        f"| Commander | {user(inc['commander'])} |",
        f"| Started | {at(inc['started_at'])} by {user(inc['started_by'])} |",
        f"| Ended | {at(inc['ended_at'])}" + (f" by {user(inc['ended_by'])}" if inc["ended_by"] else "") + " |",
        f"| Duration | {inc['duration']} |",
        f"| Resolution | {safe_inline(inc['resolution'] or '—')} |",
        f"| Playbook | {safe_inline(inc['playbook'] or '—')} |",
        "",
        "## Participants",
        "",
        *(f"- @{p}" for p in data["participants"]),
        "",
        "## Status updates",
        "",
    ]
    if data["status_updates"]:
        for update in data["status_updates"]:
            lines += [f"### {at(update['at'])} — {user(update['by'])}", "", quote(update["text"]), ""]
    else:
        lines += ["_None._", ""]
    lines += ["## Checklist", ""]
    live = [i for i in data["checklist"] if not i["removed"]]
    if live:
        for item in live:
            box = "x" if item["done"] else " "
            extra = []
            if item["done"]:
                extra.append(f"done by {user(item['done_by'])} at {at(item['done_at'])}")
            if item["assignee"]:
                extra.append(f"assigned to {user(item['assignee'])}")
            lines.append(f"- [{box}] {item['number']}. {safe_inline(item['text'])}" + (f" ({'; '.join(extra)})" if extra else ""))
    else:
        lines.append("_No items._")
    lines += ["", "## Timeline", "", "| Time (UTC) | Offset | Event | Who |", "|---|---|---|---|"]
    for event in data["timeline"]:
        lines.append(
            f"| {at(event['at'])} | {event['offset']} | {safe_inline(event['text'])} | {user(event['by']) if event['by'] else ''} |"
        )
    lines += ["", "## Analysis", "", "_What happened, why, what we change. (Written by people.)_", ""]
    return "\n".join(lines)


def render(data: dict[str, Any], fmt: str) -> str:
    return to_json(data) if fmt == "json" else to_markdown(data)
