"""`/incident …`: the slash command runs what the mention runs. People type it (the server's
/api/v4/commands/execute calls the bot); what only they need comes back ephemeral, changes are
posted by the bot in the channel. A request without the command's token runs nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.botproc import BotProcess, run_cli, running_bot
from tests.support.people import ApiError
from tests.support.slash import call_bot, command_form, now_ms, private, public
from tests.support.world import World


async def test_every_command_by_slash_private_answers_ephemeral_changes_posted(world: World, slash_bot: BotProcess) -> None:
    alice, bob, carol = world.alice, world.bob, world.carol
    ops = world.channel_ids["ops/incidents"]

    help_text = await private(alice, ops, "help", "/incident")
    assert "@incident-bot" in help_text
    await private(alice, ops, "", "commands")  # the command alone: the help, as a bare mention
    await private(alice, ops, "frob", "Unknown command")

    started = await public(alice, ops, "start DB primary down --sev 2 --playbook database --invite @bob", "Started incident")
    assert started["root_id"] == ""  # typed in the channel, not in a thread: answered in the channel
    number = int(re.search(r"incident #(\d+)", started["message"]).group(1))
    name = re.search(r"~(incident-[a-z0-9-]+)", started["message"]).group(1)
    room = (await alice.channel_by_name(world.team_ids["ops"], name))["id"]
    assert bob.user_id in await alice.channel_members(room)

    await private(alice, ops, "list", "DB primary down")
    await private(alice, ops, f"info {number}", "DB primary down")
    await private(alice, room, "info", "Commander: @alice")
    await private(alice, room, "checklist", "Checklist of incident")
    await public(alice, room, "check 1", "Ticked item 1")
    await public(alice, room, "uncheck 1", "Unticked item 1")
    await public(alice, room, "add Tell support", "Added item 5")
    await public(alice, room, "rename 5 Tell customers", "now reads: Tell customers")
    await public(alice, room, "assign 5 @bob", "is assigned to @bob")
    await public(alice, room, "unassign 5", "has no assignee now")
    await public(alice, room, "remove 5", "Removed item 5")
    await public(alice, room, "note Replica lag back to normal", "Added a note")
    await private(alice, room, "timeline", "Replica lag back to normal")
    await public(alice, room, "sev 1", f"Incident #{number} is now")
    await public(alice, room, "update Failover done, watching errors", "Posted the status update")
    exported = await public(alice, room, "export", "Postmortem starter")
    assert exported["file_ids"]
    joined = await public(carol, ops, f"join {number}", "Added you to")
    assert carol.user_id in await alice.channel_members(room), joined["message"]
    await public(alice, room, "commander @bob", f"Commander of incident #{number} is now @bob")
    await public(bob, room, "end rolled back", f"Ended incident #{number}")
    await private(alice, ops, "history", "DB primary down")
    await public(bob, room, "reopen", "active again")
    await private(alice, ops, "stats", "")
    await private(alice, ops, "playbooks", "database")
    await public(alice, ops, "playbook create db2 Page the DBA; Fail over", "Created playbook")

    # Refusals and usage errors are private too.
    await private(alice, room, "sev 9", "Usage")
    await private(alice, ops, "sev 2", "works only in an incident channel")


async def test_a_request_without_the_token_runs_nothing(world: World, slash_bot: BotProcess) -> None:
    alice = world.alice
    ops = world.channel_ids["ops/incidents"]
    form = command_form(world, slash_bot, alice, "ops/incidents", "start Forged outage", "forged-trigger-1")
    since = now_ms()
    for token in ("not-the-token", ""):
        status, _ = await call_bot(slash_bot, {**form, "token": token})
        assert status == 401
    status, _ = await call_bot(slash_bot, {k: v for k, v in form.items() if k != "token"}, {"Authorization": "Token nope"})
    assert status == 401
    assert len([e for e in slash_bot.log_events() if e.get("event") == "slash.refused"]) == 3
    # The real command still works, and it is the only incident.
    await public(alice, ops, "start Real outage", "Started incident #1")
    posts = await alice.posts_since(ops, since)
    assert not [p for p in posts if "Forged" in p["message"]]


async def test_a_retried_request_is_answered_once(world: World, slash_bot: BotProcess) -> None:
    """Mattermost may send the same command again (same trigger id): it runs and answers once."""
    alice = world.alice
    ops = world.channel_ids["ops/incidents"]
    form = command_form(world, slash_bot, alice, "ops/incidents", "start Disk full", "retried-trigger-1")
    since = now_ms()
    first = await call_bot(slash_bot, form)
    again = await call_bot(slash_bot, form)
    assert first[0] == again[0] == 200
    assert again[1]["text"] == ""
    await alice.wait_for_post(ops, lambda p: "Started incident #1" in p["message"], after_ms=since)
    listed = await private(alice, ops, "list", "Disk full")
    assert "#2" not in listed
    bot = await alice.bot_id()
    answers = [p for p in await alice.posts_since(ops, since) if p["user_id"] == bot and "Started incident" in p["message"]]
    assert len(answers) == 1
    # A private answer is not given twice either.
    form = command_form(world, slash_bot, alice, "ops/incidents", "list", "retried-trigger-2")
    assert "Disk full" in (await call_bot(slash_bot, form))[1]["text"]
    assert (await call_bot(slash_bot, form))[1]["text"] == ""


async def test_a_command_typed_in_a_thread_is_answered_in_it(world: World, slash_bot: BotProcess) -> None:
    alice = world.alice
    ops = world.channel_ids["ops/incidents"]
    root = await alice.post(ops, "Checkout is failing for everyone")
    since = now_ms()
    answer = await alice.slash(ops, "/incident start --sev 1", root_id=root["id"])
    assert not answer.get("text"), answer
    reply = await alice.wait_for_post(ops, lambda p: "Started incident" in p["message"], after_ms=since)
    assert reply["root_id"] == root["id"]
    assert "Checkout is failing" in await private(alice, ops, "list", "Checkout")


async def test_only_people_who_may_post_in_the_channel_run_it(world: World, slash_bot: BotProcess) -> None:
    """Only people who may post in a channel run the command there (the server's rule)."""
    try:
        await world.dave.slash(world.channel_ids["ops/incidents"], "/incident list")
    except ApiError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("dave is not in ops")


async def test_register_command_creates_the_command_then_updates_it(world: World, tmp_path: Path) -> None:
    """An operator registers `/incident` with an admin token (never stored), puts the printed
    token in the config, and may run it again (after a move) to point the command elsewhere."""
    admin = {"INCIDENT_BOT_ADMIN_TOKEN": world.admin.token}
    for part in ("cli", "bot"):
        (tmp_path / part).mkdir()
    first_url = 'callback_url = "http://127.0.0.1:9"\n'
    code, out = await run_cli(world, tmp_path / "cli", "register-command", "--team", "ops", config_extra=first_url, env=admin)
    assert code == 0, out
    assert "created /incident in team ops: Mattermost calls http://127.0.0.1:9/mattermost/command" in out
    token = re.search(r'slash_tokens = \["([a-z0-9]+)"\]', out).group(1)
    assert world.admin.token not in out
    async for bot in running_bot(world, tmp_path / "bot", f'slash_tokens = ["{token}"]\n'):
        moved = f'callback_url = "{await bot.ops_url()}"\n'
        code, out = await run_cli(world, tmp_path / "cli", "register-command", "--team", "ops", config_extra=moved, env=admin)
        assert code == 0, out
        assert "updated /incident in team ops" in out and f'slash_tokens = ["{token}"]' in out
        assert "/incident" in await private(world.alice, world.channel_ids["ops/incidents"], "help", "commands")
    code, out = await run_cli(world, tmp_path / "cli", "register-command", "--team", "ops", config_extra=first_url)
    assert code == 2 and "admin token" in out
    code, out = await run_cli(world, tmp_path / "cli", "register-command", "--team", "ops", config_extra=first_url,
                              env={"INCIDENT_BOT_ADMIN_TOKEN": world.alice.token})  # fmt: skip
    assert code == 1 and "403" in out, out


@pytest.mark.fake_only
async def test_an_answer_that_misses_the_deadline_comes_through_the_response_url(world: World, slash_bot: BotProcess) -> None:
    """A slow Mattermost makes `list` miss the 3-second limit: the response is empty, and the
    answer reaches the person later, still only them (the command's response URL)."""
    alice = world.alice
    ops = world.channel_ids["ops/incidents"]
    world.fake.faults.delay(r"/teams/[a-z0-9]+/members/", 3.0, user=world.bot_user_id)
    async with alice.listen() as events:
        answer = await alice.slash(ops, "/incident list")
        assert answer["text"] == ""
        late = await events.ephemeral("No active incidents")
    assert late["channel_id"] == ops
    await slash_bot.wait_for_log("slash.answer_later")
    assert world.fake.count_requests("POST", r"^/hooks/commands/", 200) == 1
