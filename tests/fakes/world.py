"""A bootstrapped fake Mattermost as a ``World`` (see tests/support/world.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.fakes.mattermost import FakeMattermost
from tests.support.people import Person
from tests.support.world import World

BOT_USERNAME = "incident-bot"
PEOPLE = ("alice", "bob", "carol", "dave", "erin")
TEAMS = {"ops": ("alice", "bob", "carol"), "web": ("alice", "dave")}


async def make_fake_world(**fake_options: Any) -> tuple[World, FakeMattermost]:
    """Start a fake server and fill it; the caller ends it with ``close_world(world)``.

    ``fake_options`` go to ``FakeMattermost`` (e.g. ``resume_window=2``).
    """
    fake = FakeMattermost(**fake_options)
    url = await fake.start()
    try:
        admin, admin_token = fake.create_user("admin", system_admin=True)
        bot, bot_token = fake.create_user(BOT_USERNAME, is_bot=True)
        users = {name: fake.create_user(name, first_name=name.capitalize()) for name in PEOPLE}
        team_ids: dict[str, str] = {}
        channel_ids: dict[str, str] = {}
        for team_name, members in TEAMS.items():
            team = fake.create_team(team_name)
            team_ids[team_name] = team["id"]
            for uid in (admin["id"], bot["id"], *(users[m][0]["id"] for m in members)):
                fake.add_team_member(team["id"], uid)
            channel = fake.create_channel(
                team["id"], "incidents", "O", display_name="Incidents", purpose="Where incidents are declared"
            )
            channel_ids[f"{team_name}/incidents"] = channel["id"]
            for uid in (bot["id"], *(users[m][0]["id"] for m in members)):
                fake.add_channel_member(channel["id"], uid)

        def person(user: dict[str, Any], token: str) -> Person:
            return Person(url, token, user["username"], user["id"], bot_user_id=bot["id"], bot_username=BOT_USERNAME)

        world = World(
            url=url,
            bot_token=bot_token,
            bot_username=BOT_USERNAME,
            bot_user_id=bot["id"],
            admin=person(admin, admin_token),
            people={name: person(user, token) for name, (user, token) in users.items()},
            team_ids=team_ids,
            channel_ids=channel_ids,
            fake=fake,
        )
        # Start the logs empty: tests assert on what happens after setup.
        fake.ws_log.clear()
        fake.requests.clear()
        fake.request_log.clear()
        return world, fake
    except BaseException:
        await fake.stop()
        raise


async def close_world(world: World) -> None:
    """Close every Person's HTTP session and stop the fake server."""
    for p in (world.admin, *world.people.values()):
        await p.close()
    if world.fake is not None:
        await world.fake.stop()


@asynccontextmanager
async def fake_world(**fake_options: Any) -> AsyncIterator[World]:
    """``async with fake_world() as world:`` a fresh server, stopped at exit."""
    world, _fake = await make_fake_world(**fake_options)
    try:
        yield world
    finally:
        await close_world(world)


async def add_cast(world: World) -> dict[str, Person]:
    """The accounts of the authorization matrix (see tests/integration/bootstrap.py
    ``add_cast``, the same on the real server), in ``ops`` and its ``incidents`` channel:
    ``gina`` a guest, ``dora`` a person (deactivated later by the test), ``helper-bot``
    another bot. Added to ``world.people`` too."""
    fake = world.fake
    made = {
        "gina": fake.create_user("gina", first_name="Gina"),
        "dora": fake.create_user("dora", first_name="Dora"),
        "helper-bot": fake.create_user("helper-bot", is_bot=True),
    }
    fake.set_roles(made["gina"][0]["id"], "system_guest")
    cast = {}
    for name, (user, token) in made.items():
        fake.add_team_member(world.team_ids["ops"], user["id"])
        fake.add_channel_member(world.channel_ids["ops/incidents"], user["id"])
        cast[name] = Person(world.url, token, user["username"], user["id"], world.bot_user_id, world.bot_username)
    world.people.update(cast)
    return cast
