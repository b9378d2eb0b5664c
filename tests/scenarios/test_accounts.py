"""An administrator changes an account while the bot runs, and the bot knows at once.

The bot keeps what kind each account is (person, guest, bot, deactivated) instead of asking
Mattermost for every command and reaction; the server's ``user_updated`` event, sent to
every connection when an account is deactivated, demoted to a guest or promoted
(app/user.go ``sendUpdatedUserEvent``), drops what it kept. So:

- bob, a member of the incident channel, runs a command; an admin demotes him to a guest;
  his next command is refused with the guest message, and once promoted again it is answered;
- dora ticks a checklist item; an admin deactivates her; when alice ticks and unticks the
  same item, dora's tick (still on the post) no longer counts and the item is open again.
"""

from __future__ import annotations

from incident_bot.domain import messages
from tests.support.admin import deactivate, demote_to_guest, promote_to_member
from tests.support.botproc import BotProcess
from tests.support.people import Person
from tests.support.scenario import checklist_posts, mention, start_incident
from tests.support.world import World


async def test_a_member_demoted_to_a_guest_is_refused_at_once(world: World, bot: BotProcess) -> None:
    bob = world.bob
    n, channel, _post, _reply = await start_incident(world, world.alice, f"Guest outage --invite @{bob.username}")

    async def info(outcome: str) -> str:
        post = await bob.post(channel["id"], f"{mention(world)} info {n}")
        reply = await bob.wait_for_reply(post)
        await bot.wait_for_log("command.handled", key=f"posted:{post['id']}", outcome=outcome)
        return str(reply["message"])

    assert "Guest outage" in await info("ok")  # bob is known as a person now
    await demote_to_guest(world, bob.id)
    assert await info("refused") == messages.guest_refused(world.bot_username)
    await promote_to_member(world, bob.id)
    assert "Guest outage" in await info("ok")


async def test_a_deactivated_accounts_tick_stops_counting_at_once(world: World, cast: dict[str, Person], bot: BotProcess) -> None:
    alice, dora = world.alice, cast["dora"]
    _n, channel, _post, _reply = await start_incident(world, alice, "Gone outage --playbook basic")
    await world.admin.add_member(channel["id"], dora.id)
    _header, items = await checklist_posts(alice, channel["id"])
    item = items[0]

    await dora.react(item)  # dora is known as a person now
    await bot.wait_for_log("reaction.handled", user=dora.id, post=item["id"], added=True, outcome="checked")
    await alice.wait_for_message(item["id"], "☑")

    await deactivate(world, dora.id)
    await alice.react(item)
    await bot.wait_for_log("reaction.handled", user=alice.id, post=item["id"], added=True, outcome="unchanged")
    await alice.unreact(item)  # dora's tick is the only one left on the post: it counts no more
    await bot.wait_for_log("reaction.handled", user=alice.id, post=item["id"], added=False, outcome="unchecked")
    await alice.wait_for_message(item["id"], "☐")
