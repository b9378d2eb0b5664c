"""Buttons on the bot's posts, clicked the way the web app clicks them: the pinned summary
(Post update, Change severity, End incident, Export), each checklist item (Tick, Untick) and
the announcement (Join). The server calls the bot; people see the posts change, and what is
meant only for them arrives as an ephemeral message on their WebSocket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from incident_bot.domain import buttons, signing
from incident_bot.domain.buttons import Act
from tests.support.botproc import ACTIONS_SECRET, BotProcess
from tests.support.people import ApiError, Person
from tests.support.scenario import checklist_posts, mention, start_incident, wait_message
from tests.support.waiting import eventually
from tests.support.world import World

KEY = ACTIONS_SECRET.encode()


def action_ids(post: dict[str, Any]) -> list[str]:
    """The buttons a person sees on a post, by id."""
    return [a["id"] for att in post.get("props", {}).get("attachments") or [] for a in att.get("actions") or []]


async def deliver(bot: BotProcess, who: Person, context: dict[str, Any], post_id: str, channel_id: str) -> dict[str, Any]:
    """POST a click to the bot the way Mattermost delivers it (a retry, a forgery); its answer."""
    base = (await bot.ops_url()).rstrip("/")
    body = {
        "user_id": who.id,
        "channel_id": channel_id,
        "post_id": post_id,
        "context": context,
        "trigger_id": "t",
        "type": "button",
    }
    async with aiohttp.ClientSession() as session, session.post(base + buttons.ACTION_PATH, json=body) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def summary_of(person: Person, channel_id: str) -> dict[str, Any]:
    pinned = await person.pinned(channel_id)
    return next(p for p in pinned if p["message"].startswith("### Incident #"))


async def announcements(world: World) -> str:
    channel = await world.admin.create_channel(world.team_ids["ops"], "announcements", "Announcements")
    await world.admin.add_member(channel["id"], world.bot_user_id)
    for person in (world.alice, world.bob, world.carol):
        await world.admin.add_member(channel["id"], person.id)
    return str(channel["id"])


async def replies_in_thread(person: Person, root_id: str, contains: str) -> list[dict[str, Any]]:
    return [p for p in await person.thread(root_id) if p["id"] != root_id and contains in p["message"]]


async def test_posts_carry_buttons_and_keep_them_when_the_bot_edits_them(world: World, buttons_bot: BotProcess):
    alice = world.alice
    announce = await announcements(world)
    number, channel, _, _ = await start_incident(world, alice, "Checkout errors --playbook basic")
    ch = channel["id"]
    summary = await summary_of(alice, ch)
    assert action_ids(summary) == ["update", "sev", "end", "export"]
    sev = next(a for att in summary["props"]["attachments"] for a in att["actions"] if a["id"] == "sev")
    assert sev["type"] == "select" and [o["value"] for o in sev["options"]] == ["1", "2", "3", "4"]
    assert "integration" not in sev  # the server keeps URL and signed context to itself
    header, items = await checklist_posts(alice, ch)
    assert action_ids(header) == []
    assert [action_ids(i) for i in items] == [["tick", "untick"], ["tick", "untick"]]
    announced = await alice.wait_for_post(announce, lambda p: f"#{number}" in p["message"])
    assert action_ids(announced) == ["join"]

    # the bot rewrites summary and item post after a command: the buttons stay
    await alice.post(ch, f"{mention(world)} check 1")
    item = await wait_message(alice, items[0]["id"], r"^☑")
    assert action_ids(item) == ["tick", "untick"]
    await wait_message(alice, summary["id"], r"1/2")
    assert action_ids(await summary_of(alice, ch)) == ["update", "sev", "end", "export"]


async def test_without_buttons_the_posts_look_as_before(world: World, bot: BotProcess):
    alice = world.alice
    _, channel, _, _ = await start_incident(world, alice, "Checkout errors --playbook basic")
    summary = await summary_of(alice, channel["id"])
    _, items = await checklist_posts(alice, channel["id"])
    assert "attachments" not in summary["props"] and all("attachments" not in i["props"] for i in items)


async def test_tick_and_untick_by_button_agree_with_the_reaction(world: World, buttons_bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, _, _ = await start_incident(world, alice, f"Checkout errors --playbook basic --invite @{bob.username}")
    ch = channel["id"]
    _, items = await checklist_posts(alice, ch)

    # a double click ticks once: one timeline event, the item post as a ✅ would show it
    assert (await alice.click(items[0], "tick"))["status"] == "OK"
    await alice.click(items[0], "tick")
    ticked = await wait_message(alice, items[0]["id"], rf"^☑ ~~1\. Confirm impact~~ — @{alice.username} ")
    await bob.react(items[1])
    by_reaction = await wait_message(alice, items[1]["id"], rf"^☑ ~~2\. Post a status update~~ — @{bob.username} ")
    assert ticked["message"].split(" — ")[0] == "☑ ~~1. Confirm impact~~"
    assert by_reaction["message"].split(" — ")[0] == "☑ ~~2. Post a status update~~"
    assert buttons_bot.db("select count(*) from timeline where incident_number = ? and kind = 'checklist_checked'", number) == [
        (2,)
    ]

    # Untick by button unticks what the reaction ticked, and nothing is posted for either
    await bob.click(items[1], "untick")
    await wait_message(alice, items[1]["id"], r"^☐ 2\. Post a status update$")
    await alice.click(items[0], "untick")
    await wait_message(alice, items[0]["id"], r"^☐ 1\. Confirm impact$")
    header, after = await checklist_posts(alice, ch)
    assert len(after) == 2  # no replies in the checklist thread
    await wait_message(alice, header["id"], r"0/2 done")


async def test_change_severity_with_the_select(world: World, buttons_bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, _, _ = await start_incident(world, alice, f"Checkout errors --invite @{bob.username}")
    ch = channel["id"]
    summary = await summary_of(alice, ch)
    await alice.click(summary, "sev", option="1")
    await alice.click(summary, "sev", option="1")  # a double click: applied once, answered once
    reply = await alice.wait_for_post(ch, lambda p: p["root_id"] == summary["id"] and "is now Sev 1" in p["message"])
    assert reply["message"] == f"Incident #{number} is now Sev 1 (was Sev 3)."
    await wait_message(alice, summary["id"], r"\| Severity \| Sev 1 \|")
    assert "Sev 1" in (await alice.channel(ch))["header"]

    # bob chooses it too: refused as the command would be, to him only
    async with bob.listen() as inbox:
        await bob.click(summary, "sev", option="1")
        await inbox.ephemeral(f"Incident #{number} is already Sev 1.")
    assert len(await replies_in_thread(alice, summary["id"], "Sev")) == 1


async def test_join_from_the_announcement(world: World, buttons_bot: BotProcess):
    alice, carol = world.alice, world.carol
    announce = await announcements(world)
    number, channel, _, _ = await start_incident(world, alice, "Checkout errors")
    announced = await carol.wait_for_post(announce, lambda p: f"#{number}" in p["message"])
    assert carol.id not in await alice.channel_members(channel["id"])
    async with carol.listen() as inbox:
        await carol.click(announced, "join")
        await inbox.ephemeral(f"Added you to ~{channel['name']} (incident #{number}).")
    assert not [p for p in await carol.thread(announced["id"]) if p["id"] != announced["id"]]  # nothing posted there
    await eventually(lambda: _member(alice, channel["id"], carol.id), what="carol in the incident channel")
    await alice.wait_for_post(channel["id"], lambda p: p["message"] == f"@{carol.username} joined incident #{number}.")
    async with alice.listen() as inbox:
        await alice.click(announced, "join")  # she is in already: the command's refusal, to her only
        await inbox.ephemeral(f"You are already in ~{channel['name']}")


async def _member(person: Person, channel_id: str, user_id: str) -> bool:
    return user_id in await person.channel_members(channel_id)


async def test_export_button_attaches_the_postmortem(world: World, buttons_bot: BotProcess):
    alice = world.alice
    number, channel, _, _ = await start_incident(world, alice, "Checkout errors")
    summary = await summary_of(alice, channel["id"])
    await alice.click(summary, "export")
    await alice.click(summary, "export")  # a double click exports once
    # the same click delivered again (a retry on the way): answered, not applied
    again = await deliver(buttons_bot, alice, buttons.context(KEY, number, Act.EXPORT, "summary"), summary["id"], channel["id"])
    assert again == {}
    reply = await alice.wait_for_post(channel["id"], lambda p: p["root_id"] == summary["id"] and "Postmortem" in p["message"])
    assert reply["file_ids"] and (await alice.file_info(reply["file_ids"][0]))["name"].endswith(".md")
    await buttons_bot.wait_for_log("action.duplicate", action="export", count=2)
    assert len(await replies_in_thread(alice, summary["id"], "Postmortem")) == 1


async def test_outsiders_and_ended_incidents_are_answered_only_to_the_clicker(world: World, buttons_bot: BotProcess):
    alice, bob = world.alice, world.bob
    number, channel, _, _ = await start_incident(world, alice, "Checkout errors --playbook basic")
    ch = channel["id"]
    summary = await summary_of(alice, ch)
    _, items = await checklist_posts(alice, ch)
    # bob is in the team but not in the incident channel: the server does not let him click
    with pytest.raises(ApiError) as refused:
        await bob.click(summary, "sev", option="1")
    assert refused.value.status == 403

    await alice.post(ch, f"{mention(world)} end rolled back")
    await wait_message(alice, summary["id"], r"\| Status \| Ended \|")
    async with alice.listen() as inbox:
        await alice.click(items[0], "tick")
        await inbox.ephemeral(f"Incident #{number} has ended; its buttons do nothing")
        await alice.click(summary, "sev", option="1")
        await eventually(lambda: len(inbox.ephemerals()) == 2, what="a second ephemeral answer")
    assert all(m.startswith(f"Incident #{number} has ended") for m in inbox.ephemerals())
    assert (await alice.get_post(items[0]["id"]))["message"].startswith("☐")
    assert buttons_bot.db("select severity from incidents where number = ?", number) == [(3,)]


async def test_forged_and_replayed_contexts_are_refused_and_logged(world: World, buttons_bot: BotProcess):
    alice, bob = world.alice, world.bob
    first, channel, _, _ = await start_incident(world, alice, "Checkout errors --playbook basic")
    second, other, _, _ = await start_incident(world, alice, "Search slow")
    summary = await summary_of(alice, channel["id"])
    base = (await buttons_bot.ops_url()).rstrip("/")

    async def call(context: dict[str, Any], post_id: str, channel_id: str) -> dict[str, Any]:
        return await deliver(buttons_bot, alice, context, post_id, channel_id)

    # a context signed with another secret
    forged = signing.sign(b"not-the-secret-at-all-0000", {"incident": first, "action": "sev", "part": "summary"})
    answer = await call({**forged, "selected_option": "1"}, summary["id"], channel["id"])
    assert "not valid" in answer["ephemeral_text"]
    await buttons_bot.wait_for_log("action.refused", reason="signature")
    # a right signature with the action changed
    tampered = {**buttons.context(KEY, first, Act.EXPORT, "summary"), "action": "end"}
    assert "not valid" in (await call(tampered, summary["id"], channel["id"]))["ephemeral_text"]
    # the second incident's summary button replayed on the first one's summary
    replayed = {**buttons.context(KEY, second, Act.SEV, "summary"), "selected_option": "1"}
    assert "not valid" in (await call(replayed, summary["id"], channel["id"]))["ephemeral_text"]
    # the right context and post, said to come from another incident's channel
    moved = {**buttons.context(KEY, first, Act.SEV, "summary"), "selected_option": "1"}
    assert "not valid" in (await call(moved, summary["id"], other["id"]))["ephemeral_text"]
    await buttons_bot.wait_for_log("action.refused", reason="post", count=2)

    # a person copies a signed context onto a post of their own and clicks it there
    own = await bob.post(
        world.channel_ids["ops/incidents"],
        "click me",
        props={
            "attachments": [
                {
                    "actions": [
                        {
                            "id": "sev",
                            "name": "Sev 1",
                            "type": "select",
                            "options": [{"text": "1", "value": "1"}],
                            "integration": {
                                "url": base + buttons.ACTION_PATH,
                                "context": buttons.context(KEY, first, Act.SEV, "summary"),
                            },
                        }
                    ]
                }
            ]
        },
    )
    async with bob.listen() as inbox:
        await bob.click(own, "sev", option="1")
        await inbox.ephemeral("not valid")
    await buttons_bot.wait_for_log("action.refused", reason="post", count=3)
    rows = buttons_bot.db("select number, severity from incidents order by number")
    assert rows == [(first, 3), (second, 3)]


async def test_post_update_and_end_through_their_dialogs(world: World, buttons_bot: BotProcess):
    alice = world.alice
    announce = await announcements(world)
    number, channel, _, _ = await start_incident(world, alice, "Checkout errors")
    ch = channel["id"]
    summary = await summary_of(alice, ch)
    async with alice.listen() as inbox:
        await alice.click(summary, "update")
        dialog = await inbox.dialog()
        assert dialog["dialog"]["elements"][0]["name"] == "text"
        # empty: the dialog says why and stays open
        answer = await alice.submit_dialog(dialog, {"text": "  "}, ch)
        assert answer["errors"] == {"text": "Update cannot be empty."}
        answer = await alice.submit_dialog(dialog, {"text": "Rolled back, errors falling"}, ch)
        assert not answer.get("errors") and not answer.get("error")
        await alice.submit_dialog(dialog, {"text": "Rolled back, errors falling"}, ch)  # sent twice: posted once
        update = await alice.wait_for_post(ch, lambda p: p["message"].startswith("#### Status update"))
        assert update["message"].endswith("Rolled back, errors falling")
        await alice.wait_for_post(announce, lambda p: p["message"].startswith("#### Status update"))
        await buttons_bot.wait_for_log("action.duplicate", action="update")
        ups = [p for p in await alice.posts(ch) if p["message"].startswith("#### Status update")]
        assert len(ups) == 1

        await alice.click(summary, "end")
        dialog = await inbox.dialog()
        answer = await alice.submit_dialog(dialog, {"text": ""}, ch)
        assert answer["errors"] == {"text": "Resolution cannot be empty."}
        answer = await alice.submit_dialog(dialog, {"text": "12 hosts rebooted"}, ch)
        assert not answer.get("errors") and not answer.get("error")
        await alice.wait_for_post(
            ch, lambda p: p["root_id"] == summary["id"] and p["message"].startswith(f"Ended incident #{number}")
        )
        rows = buttons_bot.db("select status, resolution from incidents where number = ?", number)
        assert rows == [("ended", "12 hosts rebooted")]

        # the End button of an ended incident opens nothing
        await alice.click(summary, "end")
        await inbox.ephemeral("has ended")
