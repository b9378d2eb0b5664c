"""`incident-bot check` as an operator runs it: one line per check, exit 0 only when all pass,
nothing created. The first two run against the real server too; the rest against the fake."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from incident_bot.store import migrations
from tests.support.botproc import run_cli
from tests.support.world import World

NEWEST = max(m.version for m in migrations.load_migrations())
ANNOUNCE = 'announcement_channels = { ops = "announcements" }\n'


def line(output: str, check: str) -> str:
    found = [row for row in output.splitlines() if row[2:].startswith(f"{check}:")]
    assert len(found) == 1, f"no single line for {check!r} in:\n{output}"
    return found[0]


async def test_check_passes_on_a_correct_setup_and_creates_nothing(world: World, tmp_path: Path):
    announcements = await world.admin.create_channel(world.team_ids["ops"], "announcements", "Announcements")
    await world.admin.add_member(announcements["id"], world.bot_user_id)
    code, out = await run_cli(world, tmp_path, "check", config_extra=ANNOUNCE)
    assert code == 0, out
    for check in (
        "settings",
        "database",
        "playbooks",
        "server",
        "token",
        "teams",
        "announcement channel ops/~announcements",
        "websocket",
    ):
        assert line(out, check).startswith("✔"), out
    assert "will be created at" in line(out, "database") and str(tmp_path / "incident-bot.db") in out
    assert "Mattermost " in line(out, "server")
    assert f"bot account @{world.bot_username}" in line(out, "token")
    assert "ops" in line(out, "teams") and "web" in line(out, "teams")
    assert out.rstrip().endswith("check passed")
    assert not (tmp_path / "incident-bot.db").exists()
    assert world.bot_token not in out


async def test_check_fails_for_a_bot_in_no_team(world: World, tmp_path: Path):
    for team_id in world.team_ids.values():
        await world.admin.request("DELETE", f"/teams/{team_id}/members/{world.bot_user_id}")
    code, out = await run_cli(world, tmp_path, "check")
    assert code == 1, out
    teams = line(out, "teams")
    assert teams.startswith("✘") and "is in no team" in teams and "Fix: add @" in teams
    assert line(out, "token").startswith("✔") and line(out, "websocket").startswith("✔")
    assert "check failed: 1 problem" in out


@pytest.mark.fake_only
async def test_check_reports_a_wrong_url(world: World, tmp_path: Path):
    code, out = await run_cli(world, tmp_path, "check", env={"INCIDENT_BOT_MATTERMOST_URL": "http://127.0.0.1:9"})
    assert code == 1, out
    server = line(out, "server")
    assert server.startswith("✘") and "cannot connect to http://127.0.0.1:9" in server and "Fix:" in server
    for check in ("token", "teams", "websocket"):
        assert line(out, check).startswith("–")
    assert line(out, "database").startswith("✔")  # offline checks still run
    assert not (tmp_path / "incident-bot.db").exists()


@pytest.mark.fake_only
async def test_check_reports_a_refused_token(world: World, tmp_path: Path):
    code, out = await run_cli(world, tmp_path, "check", env={"INCIDENT_BOT_BOT_TOKEN": "made-up-token-123"})
    assert code == 1, out
    assert line(out, "server").startswith("✔")
    token = line(out, "token")
    assert token.startswith("✘") and "refused the token (401)" in token
    assert line(out, "teams").startswith("–")
    assert "made-up-token-123" not in out


@pytest.mark.fake_only
async def test_check_warns_about_a_personal_token(world: World, tmp_path: Path):
    token = world.fake.add_token(world.alice.user_id)
    code, out = await run_cli(world, tmp_path, "check", env={"INCIDENT_BOT_BOT_TOKEN": token})
    assert line(out, "token").startswith("⚠") and "person's account" in line(out, "token")
    assert code == 0, out  # a warning is not a failure


@pytest.mark.fake_only
async def test_check_reports_missing_announcement_channels_and_missing_membership(world: World, tmp_path: Path):
    await world.admin.create_channel(world.team_ids["web"], "news", "News")  # the bot is not in it
    extra = 'announcement_channels = { ops = "announcements", web = "news", nosuch = "x" }\n'
    code, out = await run_cli(world, tmp_path, "check", config_extra=extra)
    assert code == 1, out
    missing = line(out, "announcement channel ops/~announcements")
    assert missing.startswith("✘") and "no such channel" in missing and "Fix: create ~announcements in ops" in missing
    assert "is not a member" in line(out, "announcement channel web/~news")
    assert "not in a team named nosuch" in line(out, "announcement channel nosuch/~x")
    assert "check failed: 3 problems" in out


@pytest.mark.fake_only
async def test_check_reports_the_teams_where_private_channels_are_not_allowed(world: World, tmp_path: Path):
    world.fake.role_permissions["team_user"].discard("create_private_channel")
    code, out = await run_cli(world, tmp_path, "check")
    assert code == 1 and "may not create private channels in ops, web" in line(out, "teams"), out


@pytest.mark.fake_only
async def test_check_refuses_a_newer_database(world: World, tmp_path: Path):
    db = tmp_path / "incident-bot.db"
    code, out = await run_cli(world, tmp_path, "migrate")
    assert code == 0, out
    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_version (version, name) VALUES (?, 'from-the-future')", (NEWEST + 1,))
    con.commit()
    con.close()
    code, out = await run_cli(world, tmp_path, "check")
    assert code == 1, out
    database = line(out, "database")
    assert database.startswith("✘") and f"schema version {NEWEST + 1}, newer than this incident-bot knows ({NEWEST})" in database


@pytest.mark.fake_only
async def test_check_reports_invalid_settings_with_exit_2(world: World, tmp_path: Path):
    code, out = await run_cli(world, tmp_path, "check", env={"INCIDENT_BOT_MATTERMOST_URL": "chat.example.org"})
    assert code == 2, out
    assert line(out, "settings").startswith("✘") and "mattermost_url" in out


SLASH = 'slash_tokens = ["a-command-token"]\ncallback_url = "http://127.0.0.1:9"\n'


async def test_check_tells_whether_mattermost_may_call_the_slash_command(world: World, tmp_path: Path):
    code, out = await run_cli(world, tmp_path, "check", config_extra=SLASH)
    callback = line(out, "callback url")
    assert callback.startswith("⚠") and "AllowedUntrustedInternalConnections lists 127.0.0.1" in callback, out
    assert line(out, "slash commands").startswith("✔"), out
    assert line(out, "bot listener").startswith("⚠") and "nothing answers at http://127.0.0.1:9" in out
    assert code == 0, out
    assert "a-command-token" not in out


@pytest.mark.fake_only
async def test_check_fails_when_the_server_turned_slash_commands_off(world: World, tmp_path: Path):
    world.fake.commands_enabled = False
    code, out = await run_cli(world, tmp_path, "check", config_extra=SLASH)
    assert code == 1, out
    assert line(out, "slash commands").startswith("✘") and "EnableCommands" in out
