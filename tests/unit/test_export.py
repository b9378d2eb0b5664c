"""The postmortem starter and the timeline table, rendered from plain models."""

import json
from datetime import UTC, datetime, timedelta

from incident_bot.domain import export, messages
from incident_bot.domain.models import ChecklistItem, Incident, Status, TimelineEvent, TimelineKind

T0 = datetime(2026, 11, 26, 14, 2, tzinfo=UTC)


def make():
    incident = Incident(
        number=7,
        team_id="t1",
        title="Payments | slow",
        severity=2,
        status=Status.ENDED,
        commander_id="u1",
        started_by="u1",
        origin_channel_id="c0",
        channel_name="incident-7-payments-slow",
        started_at=T0,
        ended_at=T0 + timedelta(hours=1, minutes=2),
        ended_by="u2",
        resolution="rolled back",
    )
    items = [
        ChecklistItem(incident_number=7, number=1, text="Page DBA", done_by="u2", done_at=T0 + timedelta(minutes=8)),
        ChecklistItem(incident_number=7, number=2, text="Gone", removed=True),
        ChecklistItem(incident_number=7, number=3, text="Tell support", assignee_id="u1"),
    ]
    events = [
        TimelineEvent(incident_number=7, at=T0, kind=TimelineKind.STARTED, actor_id="u1", text="Payments | slow"),
        TimelineEvent(
            incident_number=7, at=T0 + timedelta(minutes=12), kind=TimelineKind.STATUS_UPDATE, actor_id="u2", text="Rolling back"
        ),
        TimelineEvent(
            incident_number=7, at=T0 + timedelta(hours=1, minutes=2), kind=TimelineKind.ENDED, actor_id="u2", text="rolled back"
        ),
    ]
    return incident, items, events


def test_markdown_sections_and_json_hold_the_same_data():
    incident, items, events = make()
    data = export.record(incident, items, events, {"u1": "alice", "u2": "bob"}, ["u1", "u2"], "ops", T0)
    md = export.to_markdown(data)
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == ["## Summary", "## Participants", "## Status updates", "## Checklist", "## Timeline", "## Analysis"]
    assert "| Duration | 1h 02m |" in md
    assert "- [x] 1. Page DBA (done by @bob at 2026-11-26 14:10 UTC)" in md
    assert "- [ ] 3. Tell support (assigned to @alice)" in md
    assert "Gone" not in md
    assert "| 2026-11-26 14:14 UTC | +0h 12m | Status update: Rolling back | @bob |" in md
    assert "Payments \\| slow" in md  # a pipe in a title cannot break the table
    parsed = json.loads(export.to_json(data))
    assert parsed["incident"]["duration_seconds"] == 3720
    assert parsed["participants"] == ["alice", "bob"]
    assert [e["kind"] for e in parsed["timeline"]] == ["started", "status_update", "ended"]
    assert export.filename(incident, "md") == "incident-7-postmortem.md"


def test_long_timeline_is_split_not_cut():
    incident, _, _ = make()
    events = [
        TimelineEvent(
            incident_number=7, at=T0 + timedelta(minutes=i), kind=TimelineKind.NOTE, actor_id="u1", text=f"note {i} " + "x" * 300
        )
        for i in range(200)
    ]
    parts = messages.timeline_tables(incident, events, lambda uid: "@alice", max_chars=15000)
    assert len(parts) > 1 and all(len(p) <= 16000 for p in parts)
    body = "\n".join(parts)
    for i in range(200):
        assert f"note {i} " in body
    assert parts[0].endswith(f"_Part 1 of {len(parts)}_")
