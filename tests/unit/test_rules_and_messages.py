"""Naming, durations and the wording people see."""

from datetime import UTC, datetime, timedelta

import pytest

from incident_bot.domain import messages
from incident_bot.domain.format import format_duration, format_offset, format_short_duration
from incident_bot.domain.models import ChecklistItem, Incident, Status
from incident_bot.domain.rules import IncidentEnded, channel_name, clean_title, display_name, require_active, slugify

T0 = datetime(2026, 11, 26, 14, 2, tzinfo=UTC)


def incident(**kw):
    base = dict(
        number=12,
        team_id="t",
        title="DB primary down",
        severity=2,
        status=Status.ACTIVE,
        commander_id="u1",
        started_by="u1",
        origin_channel_id="c",
        channel_name="incident-12-db-primary-down",
        started_at=T0,
    )
    base.update(kw)
    return Incident(**base)


def names(uid):
    return {"u1": "@alice", "u2": "@bob"}.get(uid, "@?")


def test_slug_and_channel_name():
    assert slugify("DB Primary DOWN!!  (eu-west)") == "db-primary-down-eu-west"
    assert slugify("Café ünïcode") == "cafe-unicode"
    assert channel_name(12, "DB primary down") == "incident-12-db-primary-down"
    long = channel_name(12345, "x" * 200)
    assert len(long) <= 64 and long.startswith("incident-12345-")
    assert channel_name(3, "!!!") == "incident-3"
    assert channel_name(3, "db", attempt=1) == "incident-3-db-2"
    assert len(channel_name(3, "y" * 100, attempt=5)) <= 64


def test_display_name_cut_to_64():
    assert display_name(1, "short") == "#1 short"
    assert len(display_name(1, "z" * 100)) == 64


def test_title_is_one_line():
    assert clean_title("  a\n b  ") == "a b"
    assert len(clean_title("x" * 500)) == 200


def test_durations():
    assert format_duration(timedelta(hours=1, minutes=2, seconds=59)) == "1h 02m"
    assert format_duration(timedelta(days=2, hours=3, minutes=4)) == "2d 3h 04m"
    assert format_duration(timedelta(seconds=-5)) == "0h 00m"
    assert format_short_duration(timedelta(minutes=4, seconds=10)) == "4m 10s"
    assert format_offset(T0, T0 + timedelta(minutes=12)) == "+0h 12m"
    assert format_offset(T0, T0 - timedelta(minutes=3)) == "-0h 03m"


def test_header_and_conflict_wording():
    inc = incident()
    assert messages.header(inc, names) == "Commander @alice · Sev 2 · Active · started 2026-11-26 14:02 UTC"
    ended = incident(status=Status.ENDED, ended_at=T0 + timedelta(hours=1, minutes=2))
    assert messages.already_ended(ended) == "Incident #12 already ended at 15:04 UTC (after 1h 02m)."
    assert messages.not_found(99) == "No incident #99 in your teams."
    assert messages.not_a_member(inc, "end").startswith("Only members of ~incident-12-db-primary-down can end incident #12.")
    assert messages.unknown_command("incident-bot", "frob") == "Unknown command `frob`. Try `@incident-bot help`."


def test_a_rule_refusal_is_worded_by_messages():
    require_active(incident())
    ended = incident(status=Status.ENDED, ended_at=T0 + timedelta(hours=1, minutes=2))
    with pytest.raises(IncidentEnded) as refused:
        require_active(ended)
    assert messages.refusal(refused.value) == "Incident #12 already ended at 15:04 UTC (after 1h 02m)."


def test_the_bot_is_named_as_the_caller_says():
    assert messages.unknown_command("ops-bot", "frob") == "Unknown command `frob`. Try `@ops-bot help`."
    assert messages.bad_arguments("ops-bot", "sev", "Give one severity, 1 (worst) to 4.") == (
        "Give one severity, 1 (worst) to 4.\nUsage: `@ops-bot sev <1-4>`"
    )
    assert messages.usage("ops-bot", "frob") == "Try `@ops-bot help`."
    assert messages.help_all("ops-bot").startswith("**@ops-bot commands**")
    assert (
        messages.help_one("ops-bot", "join")
        == "`@ops-bot join <id>` or `/incident join <id>`\nAdd yourself to an incident's private channel. Where: anywhere."
    )


def test_checklist_item_rendering():
    item = ChecklistItem(incident_number=12, number=3, text="Page the on-call DBA")
    assert messages.checklist_item(item, names) == "☐ 3. Page the on-call DBA"
    item.done_by, item.done_at = "u2", T0 + timedelta(minutes=8)
    assert messages.checklist_item(item, names) == "☑ ~~3. Page the on-call DBA~~ — @bob 14:10 UTC"
    other = ChecklistItem(incident_number=12, number=4, text="x", removed=True)
    assert messages.progress([item, other]) == "1/1"


def test_list_caps_and_says_more():
    incs = [incident(number=n) for n in range(20, 0, -1)]
    text = messages.incident_list(incs, 23, names, {"t": "ops"}, T0)
    assert "and 3 more" in text and text.count("\n| ") == 21


def test_help_lists_every_command():
    text = messages.help_all("incident-bot")
    for word in ("start", "end", "info", "list", "join", "commander", "sev", "help", "check", "playbook"):
        assert f"`{word}" in text


def test_only_active_people_act_on_incidents():
    from incident_bot.domain.rules import Actor, actor

    assert actor(known=True) == Actor.PERSON
    assert actor(known=True, roles="system_user system_admin") == Actor.PERSON
    assert actor(known=True, roles="system_guest") == Actor.GUEST
    assert actor(known=True, is_bot=True) == Actor.BOT
    assert actor(known=True, is_bot=True, delete_at=5) == Actor.DEACTIVATED
    assert actor(known=True, roles="system_guest", delete_at=5) == Actor.DEACTIVATED
    assert actor(known=False) == Actor.UNKNOWN
