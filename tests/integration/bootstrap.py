"""A fresh World on the session's real Mattermost server, made over the REST API.

One server (and database) serves the whole run, so "fresh" is made per World, in one of two ways
(``names=`` or $INCIDENT_BOT_TEST_MM_NAMES):

* ``literal`` (default): the real names are the logical ones, as on the fake: users ``alice`` ..
  ``erin``, teams ``ops`` and ``web``, bot ``incident-bot``, admin ``admin``. Before creating
  them, whatever a previous World left under those names (the accounts with their DMs, the teams
  with all their channels and posts) is permanently deleted over the API. Tests must run one at
  a time (no pytest-xdist). About 2.5 s per World.
* ``unique``: every name gets a random suffix (``alice-3f9a1c``, ``ops-3f9a1c``,
  ``incident-bot-3f9a1c``); Worlds never touch each other. About 2 s per World. Tests then
  must use ``world.alice.username``, ``world.bot_username`` and ``world.extra["team_names"]``.

Made per World:
  * an admin (system admin, promoted by the session's first user), who creates the rest;
  * teams ``ops`` (alice, bob, carol) and ``web`` (alice, dave); ``erin`` in no team;
  * a public channel ``incidents`` in each team, joined by the team's people;
  * a bot account with a personal access token, member of both teams and both ``incidents``;
  * a login session (token) for the admin and each person, wrapped in tests.support.people.Person.

Keys stay logical: ``world.people["alice"]``, ``world.team_ids["ops"]``,
``world.channel_ids["ops/incidents"]``. ``world.extra``: ``suffix`` ("" when literal), ``names``,
``team_names`` (logical -> real), ``user_ids`` (logical -> id), ``password``, ``admin_token``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from tests.support.world import World

TEAMS: dict[str, list[str]] = {"ops": ["alice", "bob", "carol"], "web": ["alice", "dave"]}
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
CHANNEL = "incidents"
BOT_BASENAME = "incident-bot"


class BootstrapError(RuntimeError):
    pass


def available() -> bool:
    """True inside tests/integration/run.sh (a real server is up for this session)."""
    return bool(os.environ.get("INCIDENT_BOT_TEST_MM_URL"))


class _Api:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(
        self, method: str, path: str, token: str | None = None, json: Any = None, *, expect: tuple[int, ...] = (200, 201)
    ) -> tuple[Any, Any]:
        headers = {"X-Requested-With": "XMLHttpRequest"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, f"{self.url}/api/v4{path}", json=json, headers=headers) as response:
            text = await response.text()
            if response.status not in expect:
                raise BootstrapError(f"{method} {path}: HTTP {response.status}: {text[:500]}")
            body = await response.json(content_type=None) if text else None
            return body, response.headers

    async def login(self, username: str, password: str) -> tuple[str, dict]:
        body, headers = await self.call("POST", "/users/login", json={"login_id": username, "password": password})
        token = headers.get("Token")
        if not token:
            raise BootstrapError(f"POST /users/login for {username}: no Token header")
        return token, body

    async def create_user(self, token: str, username: str, password: str, first_name: str) -> dict:
        body, _ = await self.call(
            "POST",
            "/users",
            token,
            {
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                "first_name": first_name,
                "last_name": "Test",
            },
        )
        return body


async def _purge(api: _Api, token: str, usernames: list[str], teams: list[str]) -> None:
    """Permanently delete these accounts and teams if they exist (literal names only)."""
    for team in teams:
        try:
            body, _ = await api.call("GET", f"/teams/name/{team}", token)
        except BootstrapError as exc:
            if "HTTP 404" in str(exc):
                continue
            raise
        await api.call("DELETE", f"/teams/{body['id']}?permanent=true", token)
    existing, _ = await api.call("POST", "/users/usernames", token, usernames)
    for user in existing or []:
        await api.call("DELETE", f"/users/{user['id']}?permanent=true", token)


def _default_person_factory() -> Callable[..., Any]:
    from tests.support.people import Person

    return Person


async def make_real_world(
    url: str | None = None,
    admin_username: str | None = None,
    admin_password: str | None = None,
    *,
    password: str | None = None,
    suffix: str | None = None,
    names: str | None = None,
    person_factory: Callable[..., Any] | None = None,
) -> World:
    """Bootstrap a fresh World on the server at ``url`` (default: the session's, from the
    INCIDENT_BOT_TEST_MM_* variables that tests/integration/run.sh sets).

    ``names``: ``literal`` or ``unique`` (default: $INCIDENT_BOT_TEST_MM_NAMES, else
    ``literal``); see the module docstring.
    """
    url = (url or os.environ["INCIDENT_BOT_TEST_MM_URL"]).rstrip("/")
    admin_username = admin_username or os.environ["INCIDENT_BOT_TEST_MM_ADMIN_USERNAME"]
    admin_password = admin_password or os.environ["INCIDENT_BOT_TEST_MM_ADMIN_PASSWORD"]
    password = password or os.environ.get("INCIDENT_BOT_TEST_PASSWORD") or admin_password
    names = names or os.environ.get("INCIDENT_BOT_TEST_MM_NAMES") or "literal"
    if names not in ("unique", "literal"):
        raise ValueError(f"names: expected 'unique' or 'literal', not {names!r}")
    sfx = "" if names == "literal" else (suffix or secrets.token_hex(3))

    def real(name: str) -> str:
        return f"{name}-{sfx}" if sfx else name

    make_person = person_factory or _default_person_factory()

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = _Api(http, url)
        root_token, _ = await api.login(admin_username, admin_password)
        if names == "literal":
            await _purge(api, root_token, [real(n) for n in ("admin", *PEOPLE, BOT_BASENAME)], [real(t) for t in TEAMS])

        # This World's admin: a system admin of its own, so nothing is shared with other Worlds.
        admin_name = real("admin")
        admin_user = await api.create_user(root_token, admin_name, password, "Admin")
        await api.call("PUT", f"/users/{admin_user['id']}/roles", root_token, {"roles": "system_user system_admin"})
        admin_token, _ = await api.login(admin_name, password)

        # People and the bot account.
        usernames = {name: real(name) for name in PEOPLE}
        created = await asyncio.gather(
            *(api.create_user(admin_token, usernames[name], password, name.capitalize()) for name in PEOPLE)
        )
        user_ids = {name: user["id"] for name, user in zip(PEOPLE, created, strict=False)}
        bot_username = real(BOT_BASENAME)
        bot, _ = await api.call(
            "POST",
            "/bots",
            admin_token,
            {"username": bot_username, "display_name": "Incident Bot", "description": "incident-bot under test"},
        )
        bot_user_id = bot["user_id"]
        token_body, _ = await api.call("POST", f"/users/{bot_user_id}/tokens", admin_token, {"description": "integration test"})
        bot_token = token_body["token"]

        # Teams, their members (the bot included) and each team's incidents channel.
        team_names = {team: real(team) for team in TEAMS}
        team_ids: dict[str, str] = {}
        channel_ids: dict[str, str] = {}

        async def make_team(team: str) -> None:
            body, _ = await api.call(
                "POST",
                "/teams",
                admin_token,
                {"name": team_names[team], "display_name": team.capitalize(), "type": "O"},
            )
            team_id = body["id"]
            team_ids[team] = team_id
            members = [user_ids[name] for name in TEAMS[team]] + [bot_user_id]
            await api.call(
                "POST",
                f"/teams/{team_id}/members/batch",
                admin_token,
                [{"team_id": team_id, "user_id": user_id} for user_id in members],
            )
            channel, _ = await api.call(
                "POST",
                "/channels",
                admin_token,
                {"team_id": team_id, "name": CHANNEL, "display_name": CHANNEL.capitalize(), "type": "O"},
            )
            channel_ids[f"{team}/{CHANNEL}"] = channel["id"]
            for user_id in members:  # one at a time: each join posts a system message
                await api.call("POST", f"/channels/{channel['id']}/members", admin_token, {"user_id": user_id})

        await asyncio.gather(*(make_team(team) for team in TEAMS))

        logins = await asyncio.gather(*(api.login(usernames[name], password) for name in PEOPLE))

    def person(token: str, username: str, user_id: str) -> Any:
        return make_person(url, token, username, user_id, bot_user_id=bot_user_id, bot_username=bot_username)

    people = {name: person(token, usernames[name], user_ids[name]) for name, (token, _) in zip(PEOPLE, logins, strict=False)}
    return World(
        url=url,
        bot_token=bot_token,
        bot_username=bot_username,
        bot_user_id=bot_user_id,
        admin=person(admin_token, admin_name, admin_user["id"]),
        people=people,
        team_ids=dict(sorted(team_ids.items())),
        channel_ids=dict(sorted(channel_ids.items())),
        fake=None,
        extra={
            "suffix": sfx,
            "names": names,
            "team_names": team_names,
            "user_ids": user_ids,
            "password": password,
            "admin_token": admin_token,
        },
    )


CAST = ("gina", "dora")  # a guest, and a person the test deactivates
CAST_BOT = "helper-bot"


async def add_cast(world: World) -> dict[str, Any]:
    """The accounts of the authorization matrix, as tests/fakes/world.py ``add_cast`` makes
    them on the fake: in ``ops`` and its ``incidents`` channel, ``gina`` a guest (system role
    ``system_guest``, joined to the team after it, so her memberships are guest ones),
    ``dora`` a person, ``helper-bot`` another bot account. Added to ``world.people`` too.

    Team Edition lets no guest log in (that needs a license), so gina logs in first and is
    made a guest after: her session is kept and takes the guest role, as a licensed server's
    guest session would have it."""
    from tests.support.people import Person

    sfx = world.extra["suffix"]

    def real(name: str) -> str:
        return f"{name}-{sfx}" if sfx else name

    url, admin_token, password = world.url, world.extra["admin_token"], world.extra["password"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        api = _Api(http, url)
        if not sfx:
            await _purge(api, admin_token, [real(n) for n in (*CAST, CAST_BOT)], [])
        users = {name: await api.create_user(admin_token, real(name), password, name.capitalize()) for name in CAST}
        tokens = {name: (await api.login(real(name), password))[0] for name in CAST}
        await api.call("PUT", f"/users/{users['gina']['id']}/roles", admin_token, {"roles": "system_guest"})
        bot, _ = await api.call("POST", "/bots", admin_token, {"username": real(CAST_BOT), "display_name": "Helper Bot"})
        users[CAST_BOT] = {"id": bot["user_id"], "username": real(CAST_BOT)}
        body, _ = await api.call("POST", f"/users/{bot['user_id']}/tokens", admin_token, {"description": "matrix"})
        tokens[CAST_BOT] = body["token"]
        team_id, channel_id = world.team_ids["ops"], world.channel_ids[f"ops/{CHANNEL}"]
        for user in users.values():
            await api.call("POST", f"/teams/{team_id}/members", admin_token, {"team_id": team_id, "user_id": user["id"]})
            await api.call("POST", f"/channels/{channel_id}/members", admin_token, {"user_id": user["id"]})
    cast = {
        name: Person(
            url, tokens[name], user["username"], user["id"], bot_user_id=world.bot_user_id, bot_username=world.bot_username
        )
        for name, user in users.items()
    }
    world.people.update(cast)
    return cast


@asynccontextmanager
async def real_world(**options: Any) -> AsyncIterator[World]:
    """``async with real_world() as world:`` a fresh World on the session's real server.

    Nothing to undo at exit: the next World uses new accounts and teams, and the whole server
    (database included) is thrown away at the end of the run. Closing the people's HTTP
    sessions is the caller's (as for the fake).
    """
    yield await make_real_world(**options)
