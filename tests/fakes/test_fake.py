"""The fake Mattermost behaves like the real one where the bot can tell, and injects faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.mattermost import FakeMattermost, new_id
from tests.fakes.world import fake_world
from tests.support.people import ApiError, Person
from tests.support.waiting import eventually
from tests.support.world import World

ERROR_KEYS = {"id", "message", "detailed_error", "request_id", "status_code"}


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with fake_world() as w:
        yield w


_open_sockets: list[Socket] = []


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
        while _open_sockets:
            await _open_sockets.pop().ws.close()


@pytest.fixture
async def bot(world: World) -> AsyncIterator[Person]:
    person = Person(world.url, world.bot_token, world.bot_username, world.bot_user_id, world.bot_user_id)
    yield person
    await person.close()


def fake_of(world: World) -> FakeMattermost:
    assert isinstance(world.fake, FakeMattermost)
    return world.fake


class Socket:
    """A bare WebSocket client for asserting frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def frame(self, timeout: float = 2.0) -> Any:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return json.loads(msg.data)

    async def event(self, name: str, timeout: float = 2.0) -> dict[str, Any]:
        """The next event called ``name``, skipping others."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await self.frame(timeout=max(left, 0.01))
            if frame.get("event") == name:
                return frame

    async def silent(self, seconds: float = 0.3, ignore: tuple[str, ...] = ()) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await self.ws.receive(timeout=left)
            except TimeoutError:
                return
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data).get("event") in ignore:
                continue
            raise AssertionError(f"unexpected frame {msg}")

    async def closed(self, timeout: float = 2.0) -> bool:
        msg = await self.ws.receive(timeout=timeout)
        return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR)


async def connect(
    http: aiohttp.ClientSession, world: World, token: str | None = None, *, header: bool = True, **query: Any
) -> Socket:
    token = token or world.bot_token
    headers = {"Authorization": f"Bearer {token}"} if header else {}
    params = {k: str(v) for k, v in query.items()}
    ws = await http.ws_connect(world.url + "/api/v4/websocket", headers=headers, params=params or None)
    sock = Socket(ws)
    _open_sockets.append(sock)
    return sock


def post_of(event: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(event["data"]["post"], str), "data.post is a JSON string"
    return json.loads(event["data"]["post"])


# ------------------------------------------------------------------------------------------ REST


async def test_missing_or_bad_token_is_401_with_error_json(world: World, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        async with http.get(world.url + "/api/v4/users/me", headers=headers) as resp:
            assert resp.status == 401
            body = await resp.json()
    assert set(body) == ERROR_KEYS
    assert body["id"] == "api.context.session_expired.app_error"
    assert body["status_code"] == 401 and body["detailed_error"] == ""
    assert len(body["request_id"]) == 26 and body["request_id"].isalnum()


async def test_unknown_ids_and_malformed_ids(world: World) -> None:
    alice = world.alice
    with pytest.raises(ApiError) as err:
        await alice.channel(new_id())
    assert (err.value.status, err.value.id) == (404, "app.channel.get.existing.app_error")
    assert set(err.value.body) == ERROR_KEYS
    with pytest.raises(ApiError) as err:
        await alice.channel("not-an-id")
    assert (err.value.status, err.value.id) == (400, "api.context.invalid_url_param.app_error")
    assert await alice.get_post(new_id()) is None
    assert await alice.user_by_username("nobody") is None
    with pytest.raises(ApiError) as err:
        await alice.request("GET", "/no/such/route")
    assert (err.value.status, err.value.id) == (404, "api.context.404.app_error")


async def test_private_channel_needs_membership(world: World) -> None:
    alice, bob = world.alice, world.bob
    ops = world.team_ids["ops"]
    ch = await alice.create_channel(ops, "incident-1-db", "#1 DB down", type="P")
    assert ch["type"] == "P" and ch["creator_id"] == alice.id
    assert await alice.channel_members(ch["id"]) == [alice.id]

    with pytest.raises(ApiError) as err:
        await bob.channel(ch["id"])
    assert (err.value.status, err.value.id) == (403, "api.context.permissions.app_error")
    assert await bob.channel_by_name(ops, "incident-1-db") is None  # real: a 404, not a 403
    for call in (bob.post(ch["id"], "hi"), bob.channel_members(ch["id"]), bob.add_member(ch["id"], world.carol.id)):
        with pytest.raises(ApiError) as err:
            await call
        assert err.value.status == 403

    member = await alice.add_member(ch["id"], bob.id)
    assert member["user_id"] == bob.id
    assert (await alice.add_member(ch["id"], bob.id))["user_id"] == bob.id  # again: fine
    assert (await bob.post(ch["id"], "in"))["channel_id"] == ch["id"]
    for outsider in (world.erin.id, world.dave.id):  # not in team ops
        with pytest.raises(ApiError) as err:
            await alice.add_member(ch["id"], outsider)
        assert (err.value.status, err.value.id) == (404, "app.team.get_member.missing.app_error")
    system = [p for p in await alice.posts(ch["id"]) if p["type"] == "system_add_to_channel"]
    assert system and system[0]["props"]["addedUserId"] == bob.id


async def test_channel_names_and_display_names(world: World) -> None:
    alice, ops = world.alice, world.team_ids["ops"]
    with pytest.raises(ApiError) as err:
        await alice.create_channel(ops, "incidents", "Again")
    assert (err.value.status, err.value.id) == (400, "store.sql_channel.save_channel.exists.app_error")
    for bad in ("Bad Name", "-lead", "trail-", "_x", "a" * 65, "ünï"):
        with pytest.raises(ApiError) as err:
            await alice.create_channel(ops, bad, "ok")
        assert (err.value.status, err.value.id) == (400, "model.channel.is_valid.2_or_more.app_error"), bad
    with pytest.raises(ApiError) as err:
        await alice.create_channel(ops, "fine-name", "x" * 65)
    assert (err.value.status, err.value.id) == (400, "model.channel.is_valid.display_name.app_error")
    ok = await alice.create_channel(ops, "a" * 64, "y" * 64)
    assert ok["name"] == "a" * 64
    with pytest.raises(ApiError) as err:
        await world.dave.create_channel(ops, "not-my-team", "x")
    assert err.value.status == 403


async def test_thread_rules(world: World) -> None:
    alice = world.alice
    ch, other = world.channel_ids["ops/incidents"], world.channel_ids["web/incidents"]
    root = await alice.post(ch, "root")
    reply = await alice.reply(root, "first")
    again = await alice.reply(reply, "second")  # a reply to a reply goes to the root
    assert again["root_id"] == root["id"]
    cases = [
        (ch, reply["id"], "api.post.create_post.root_id.app_error"),
        (ch, new_id(), "api.post.create_post.root_id.app_error"),
        (other, root["id"], "api.post.create_post.channel_root_id.app_error"),
    ]
    for channel_id, root_id, error_id in cases:
        with pytest.raises(ApiError) as err:
            await alice.post(channel_id, "x", root_id=root_id)
        assert (err.value.status, err.value.id) == (400, error_id)
    with pytest.raises(ApiError) as err:
        await alice.post(ch, "x" * 16384)
    assert (err.value.status, err.value.id) == (400, "model.post.is_valid.msg.app_error")
    assert [p["message"] for p in await alice.thread(reply["id"])] == ["root", "first", "second"]


async def test_edit_delete_and_since(world: World, http: aiohttp.ClientSession) -> None:
    alice, bob = world.alice, world.bob
    ch = world.channel_ids["ops/incidents"]
    sock = await connect(http, world)
    await sock.event("hello")
    root = await alice.post(ch, "root")
    reply = await bob.reply(root, "reply")
    await sock.event("posted")
    await sock.event("posted")
    since = root["create_at"] - 1

    edited = await alice.edit(root, "root v2")
    assert edited["edit_at"] > 0 and edited["message"] == "root v2"
    assert post_of(await sock.event("post_edited"))["message"] == "root v2"
    with pytest.raises(ApiError) as err:
        await bob.edit(root, "not mine")
    assert err.value.status == 403

    rows = await alice.posts_since(ch, since)
    history = [p for p in rows if p["original_id"] == root["id"]]
    assert history and history[0]["message"] == "root" and history[0]["delete_at"] > 0

    await alice.delete(root)
    deleted_event = post_of(await sock.event("post_deleted"))
    assert deleted_event["id"] == root["id"] and deleted_event["delete_at"] == 0  # real: the pre-delete copy
    await sock.silent(0.2)  # replies are deleted silently with their root
    assert await alice.get_post(root["id"]) is None
    assert await alice.get_post(reply["id"]) is None
    gone = {p["id"]: p for p in await alice.posts_since(ch, since)}
    assert gone[root["id"]]["delete_at"] > 0 and gone[reply["id"]]["delete_at"] > 0
    with pytest.raises(ApiError) as err:
        await alice.edit(root, "too late")
    assert err.value.status == 403  # real: a missing post fails the permission check first


async def test_pins_and_channel_patch(world: World, http: aiohttp.ClientSession, bot: Person) -> None:
    ch = world.channel_ids["ops/incidents"]
    sock = await connect(http, world)
    await sock.event("hello")
    p = await bot.post(ch, "summary")
    assert p["props"]["from_bot"] == "true"
    await bot.pin(p)
    assert post_of(await sock.event("post_edited"))["is_pinned"] is True
    assert [x["id"] for x in await world.alice.pinned(ch)] == [p["id"]]
    patched = await bot.patch_channel(ch, header="Sev 2 · Active")
    assert patched["header"] == "Sev 2 · Active"
    updated = await sock.event("channel_updated")
    assert json.loads(updated["data"]["channel"])["header"] == "Sev 2 · Active"
    system = post_of(await sock.event("posted"))
    assert system["type"] == "system_header_change" and system["props"]["new_header"] == "Sev 2 · Active"
    with pytest.raises(ApiError) as err:
        await world.dave.patch_channel(ch, header="x")
    assert err.value.status == 403


async def test_users_and_teams(world: World) -> None:
    alice, dave = world.alice, world.dave
    assert {t["name"] for t in await alice.teams()} == {"ops", "web"}
    assert {t["name"] for t in await dave.teams()} == {"web"}
    assert (await alice.me())["username"] == "alice"
    with pytest.raises(ApiError) as err:
        await dave.request("GET", f"/teams/{world.team_ids['ops']}")
    assert err.value.status == 403
    with pytest.raises(ApiError) as err:
        await alice.request("GET", f"/teams/{world.team_ids['web']}/members/{world.bob.id}")
    assert (err.value.status, err.value.id) == (404, "app.team.get_member.missing.app_error")
    chans = await alice.my_channels(world.team_ids["ops"])
    assert [c["name"] for c in chans] == ["incidents"]
    users = await alice.request("POST", "/users/ids", json_body=[world.bob.id, new_id()])
    assert [u["username"] for u in users] == ["bob"]
    users = await alice.request("POST", "/users/usernames", json_body=["erin", "incident-bot"])
    assert {u["username"]: u["is_bot"] for u in users} == {"erin": False, "incident-bot": True}


async def test_files(world: World) -> None:
    alice, bob = world.alice, world.bob
    ch = world.channel_ids["ops/incidents"]
    info = await alice.upload(ch, "postmortem.md", b"# Incident 1\n", "text/markdown")
    assert info["name"] == "postmortem.md" and info["size"] == 13 and info["post_id"] == ""
    post = await alice.post(ch, "export", file_ids=[info["id"]])
    assert post["file_ids"] == [info["id"]] and post["metadata"]["files"][0]["id"] == info["id"]
    assert await bob.file(info["id"]) == b"# Incident 1\n"
    assert (await bob.file_info(info["id"]))["post_id"] == post["id"]
    with pytest.raises(ApiError) as err:
        await world.dave.file(info["id"])
    assert err.value.status == 403


# ------------------------------------------------------------------------------------------ events


async def test_posted_event_and_mentions(world: World, http: aiohttp.ClientSession) -> None:
    alice = world.alice
    ch = world.channel_ids["ops/incidents"]
    bot_sock = await connect(http, world)
    bob_sock = await connect(http, world, world.bob.token)
    hello = await bot_sock.frame()
    assert hello["event"] == "hello" and hello["seq"] == 0
    assert len(hello["data"]["connection_id"]) == 26 and hello["broadcast"]["user_id"] == world.bot_user_id
    await bob_sock.event("hello")

    post = await alice.post(ch, "@Incident-Bot, start DB down")
    event = await bot_sock.frame()
    assert event["event"] == "posted" and event["seq"] == 1
    assert set(event) == {"event", "data", "broadcast", "seq"}
    assert event["broadcast"]["channel_id"] == ch
    data = event["data"]
    assert post_of(event)["id"] == post["id"]
    assert json.loads(data["mentions"]) == [world.bot_user_id]
    assert data["sender_name"] == "@alice" and data["channel_type"] == "O"
    assert data["channel_name"] == "incidents" and data["team_id"] == world.team_ids["ops"]
    assert data["set_online"] is True
    assert "mentions" not in (await bob_sock.event("posted"))["data"]  # only a mentioned recipient sees it

    await alice.post(ch, "no mention here, email a@incident-bot.com")
    assert "mentions" not in (await bot_sock.event("posted"))["data"]


async def test_private_channel_events_reach_members_only(world: World, http: aiohttp.ClientSession) -> None:
    alice = world.alice
    sock = await connect(http, world)
    await sock.event("hello")
    ch = await alice.create_channel(world.team_ids["ops"], "secret", "Secret", type="P")
    await alice.post(ch["id"], "hush")
    await alice.react((await alice.posts(ch["id"]))[0])
    await sock.silent(0.3)
    await alice.add_member(ch["id"], world.bot_user_id)
    added = await sock.event("user_added")
    assert added["data"] == {"team_id": world.team_ids["ops"], "user_id": world.bot_user_id}
    assert added["broadcast"]["channel_id"] == ch["id"]
    assert post_of(await sock.event("posted"))["type"] == "system_add_to_channel"
    await alice.post(ch["id"], "now you see it")
    assert post_of(await sock.event("posted"))["message"] == "now you see it"


async def test_account_changes_reach_the_bot_as_the_real_server_sends_them(world: World, http: aiohttp.ClientSession) -> None:
    """app/user.go: UpdateActive, DemoteUserToGuest and PromoteGuestToUser send ``user_updated``
    (sendUpdatedUserEvent) to everyone else; PUT /users/{id}/roles tells only the user."""
    bob, carol = world.bob, world.carol
    sock = await connect(http, world)
    await sock.event("hello")
    await world.admin.request("PUT", f"/users/{bob.id}/roles", json_body={"roles": "system_user system_guest"})
    await world.admin.request("POST", f"/users/{carol.id}/demote")
    updated = (await sock.event("user_updated"))["data"]["user"]  # the first one is carol's: bob's roles went unsaid
    assert (updated["id"], updated["roles"], updated["email"]) == (carol.id, "system_guest", "")
    await world.admin.request("POST", f"/users/{carol.id}/promote")
    updated = (await sock.event("user_updated"))["data"]["user"]
    assert (updated["id"], updated["roles"]) == (carol.id, "system_user")
    await world.admin.request("DELETE", f"/users/{carol.id}")
    updated = (await sock.event("user_updated"))["data"]["user"]
    assert updated["id"] == carol.id and updated["delete_at"] > 0


async def test_reactions(world: World, http: aiohttp.ClientSession) -> None:
    alice, bob = world.alice, world.bob
    ch = world.channel_ids["ops/incidents"]
    sock = await connect(http, world)
    await sock.event("hello")
    post = await alice.post(ch, "item")
    await sock.event("posted")
    saved = await bob.react(post)
    assert saved["emoji_name"] == "white_check_mark" and saved["user_id"] == bob.id
    event = await sock.event("reaction_added")
    assert isinstance(event["data"]["reaction"], str)
    reaction = json.loads(event["data"]["reaction"])
    assert {"user_id", "post_id", "emoji_name", "create_at", "channel_id"} <= set(reaction)
    assert (reaction["user_id"], reaction["post_id"], reaction["channel_id"]) == (bob.id, post["id"], ch)
    assert event["broadcast"]["channel_id"] == ch
    await bob.react(post)  # idempotent; the real server publishes again
    await sock.event("reaction_added")
    assert len(await alice.reactions(post)) == 1
    await bob.unreact(post)
    removed = json.loads((await sock.event("reaction_removed"))["data"]["reaction"])
    assert removed["emoji_name"] == "white_check_mark"
    assert await alice.reactions(post) == []
    with pytest.raises(ApiError) as err:
        await bob.request("POST", "/reactions", json_body={"user_id": alice.id, "post_id": post["id"], "emoji_name": "x"})
    assert (err.value.status, err.value.id) == (403, "api.reaction.save_reaction.user_id.app_error")
    with pytest.raises(ApiError) as err:
        await world.dave.react(post)
    assert err.value.status == 403


async def test_direct_messages(world: World, http: aiohttp.ClientSession) -> None:
    alice = world.alice
    sock = await connect(http, world)
    await sock.event("hello")
    post = await alice.dm("incident-bot", "list")
    ch = await alice.channel(post["channel_id"])
    assert ch["type"] == "D" and ch["team_id"] == ""
    assert ch["name"] == "__".join(sorted((alice.id, world.bot_user_id)))
    assert (await alice.dm_bot("history"))["channel_id"] == ch["id"]
    again = await alice.request("POST", "/channels/direct", json_body=[world.bot_user_id, alice.id])
    assert again["id"] == ch["id"]
    event = await sock.event("posted")
    assert event["data"]["channel_type"] == "D" and event["data"]["team_id"] == ""
    assert json.loads(event["data"]["mentions"]) == [world.bot_user_id]
    with pytest.raises(ApiError) as err:
        await world.bob.request("POST", "/channels/direct", json_body=[alice.id, world.carol.id])
    assert err.value.status == 403
    # erin shares no team with the bot but may still DM it
    assert (await world.erin.dm_bot("help"))["message"] == "help"


# ------------------------------------------------------------------------------------------ websocket protocol


async def test_authentication_challenge(world: World, http: aiohttp.ClientSession) -> None:
    sock = await connect(http, world, header=False)
    await sock.ws.send_json({"seq": 1, "action": "user_typing", "data": {}})
    refused = await sock.frame()
    assert refused["status"] == "FAIL" and refused["error"]["id"] == "api.web_socket_router.not_authenticated.app_error"
    await sock.ws.send_json({"seq": 2, "action": "authentication_challenge", "data": {"token": world.bot_token}})
    hello = await sock.frame()  # real order: hello first, then the reply
    assert hello["event"] == "hello" and hello["seq"] == 0
    assert await sock.frame() == {"status": "OK", "seq_reply": 2}

    header_sock = await connect(http, world)  # header auth: a challenge is ignored
    await header_sock.event("hello")
    await header_sock.ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": world.bot_token}})
    await header_sock.silent(0.2)

    bad = await connect(http, world, header=False)
    await bad.ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": "nope"}})
    assert await bad.closed()


async def test_resume_replays_missed_events_without_hello(world: World, http: aiohttp.ClientSession) -> None:
    fake, alice = fake_of(world), world.alice
    ch = world.channel_ids["ops/incidents"]
    sock = await connect(http, world)
    conn_id = (await sock.frame())["data"]["connection_id"]
    await alice.post(ch, "one")
    assert (await sock.frame())["seq"] == 1
    assert await fake.faults.drop_socket() == 1
    assert await sock.closed()
    await alice.post(ch, "two")
    await alice.post(ch, "three")

    resumed = await connect(http, world, connection_id=conn_id, sequence_number=2)
    got = [await resumed.frame(), await resumed.frame()]
    assert [(f["event"], f["seq"], post_of(f)["message"]) for f in got] == [("posted", 2, "two"), ("posted", 3, "three")]
    await alice.post(ch, "four")
    assert (await resumed.frame())["seq"] == 4

    # Frames lost in flight are replayed from the server's buffer with their original seq.
    fake.faults.lose_events(2)
    await alice.post(ch, "five")
    await alice.post(ch, "six")
    await resumed.silent(0.2)
    await fake.faults.drop_socket()
    again = await connect(http, world, connection_id=conn_id, sequence_number=5)
    got = [await again.frame(), await again.frame()]
    assert [(f["seq"], post_of(f)["message"]) for f in got] == [(5, "five"), (6, "six")]
    # Asking again from an older seq still in the buffer replays from there.
    await fake.faults.drop_socket()
    third = await connect(http, world, connection_id=conn_id, sequence_number=4)
    assert [(await third.frame())["seq"] for _ in range(3)] == [4, 5, 6]


async def test_hello_on_resume_option(http: aiohttp.ClientSession) -> None:
    async with fake_world(hello_on_resume=True) as world:
        sock = await connect(http, world)
        conn_id = (await sock.frame())["data"]["connection_id"]
        await world.alice.post(world.channel_ids["ops/incidents"], "one")
        await fake_of(world).faults.drop_socket()
        resumed = await connect(http, world, connection_id=conn_id, sequence_number=1)
        replay, hello = await resumed.frame(), await resumed.frame()
        assert (replay["event"], replay["seq"]) == ("posted", 1)
        assert (hello["event"], hello["seq"], hello["data"]["connection_id"]) == ("hello", 2, conn_id)


async def test_resume_impossible_gives_new_hello(world: World, http: aiohttp.ClientSession) -> None:
    fake = fake_of(world)
    sock = await connect(http, world)
    conn_id = (await sock.frame())["data"]["connection_id"]

    unknown = await connect(http, world, connection_id=new_id(), sequence_number=1)
    hello = await unknown.frame()
    assert hello["event"] == "hello" and hello["seq"] == 0 and hello["data"]["connection_id"] != conn_id

    # Buffer overrun: the expected seq fell out of the last 128 events.
    for i in range(140):
        await fake.faults.send_event("custom_tick", {"i": i}, user=world.bot_user_id)
    for _ in range(140):
        await sock.frame()
    await fake.faults.drop_socket()
    lossy = await connect(http, world, connection_id=conn_id, sequence_number=1)
    hello = await lossy.frame()
    assert hello["event"] == "hello" and hello["seq"] == 0 and hello["data"]["connection_id"] != conn_id
    new_conn = hello["data"]["connection_id"]

    # After the resume window, or a restart, the old id is forgotten.
    fake.resume_window = 0  # the window is over as soon as the socket is gone
    await fake.faults.drop_socket()
    late = await connect(http, world, connection_id=new_conn, sequence_number=1)
    assert (await late.frame())["data"]["connection_id"] != new_conn
    fake.resume_window = 300
    await fake.faults.restart()
    after_restart = await connect(http, world, connection_id=new_conn, sequence_number=1)
    assert (await after_restart.frame())["event"] == "hello"

    # Resume needs the token in the upgrade's Authorization header.
    challenge = await connect(http, world, header=False, connection_id=conn_id, sequence_number=1)
    await challenge.ws.send_json({"seq": 1, "action": "authentication_challenge", "data": {"token": world.bot_token}})
    assert (await challenge.frame())["data"]["connection_id"] not in (conn_id, new_conn)


async def test_drop_and_refuse_websockets(world: World, http: aiohttp.ClientSession) -> None:
    fake = fake_of(world)
    sock = await connect(http, world)
    await sock.event("hello")
    await fake.faults.drop_socket(refuse_for=0.3)
    assert await sock.closed()
    status = 0
    try:
        await connect(http, world)
    except aiohttp.WSServerHandshakeError as exc:  # no `pytest.raises`: its traceback keeps the connection alive
        status = exc.status
    assert status == 503

    async def accepted() -> Socket | None:
        try:
            return await connect(http, world)
        except aiohttp.WSServerHandshakeError:
            return None

    again = await eventually(accepted, timeout=3, interval=0.05, what="upgrades accepted again after 0.3 s")
    assert (await again.event("hello"))["seq"] == 0


async def test_raw_frames_custom_events_and_redelivery(world: World, http: aiohttp.ClientSession) -> None:
    fake = fake_of(world)
    sock = await connect(http, world)
    await sock.event("hello")
    await fake.faults.send_raw("{not json")
    msg = await sock.ws.receive(timeout=2)
    assert msg.data == "{not json"
    await fake.faults.send_event("posted", {"post": "{}"}, {"channel_id": world.channel_ids["ops/incidents"]})
    custom = await sock.frame()
    assert custom["seq"] == 1 and custom["broadcast"]["channel_id"] == world.channel_ids["ops/incidents"]
    real = await world.alice.post(world.channel_ids["ops/incidents"], "@incident-bot info")
    first = await sock.event("posted")
    again = await fake.faults.redeliver_last("posted")
    assert again["seq"] == first["seq"]
    second = await sock.frame()
    assert second["seq"] == first["seq"] + 1 and second["data"] == first["data"]
    assert post_of(second)["id"] == real["id"]
    assert [e["seq"] for e in fake.events_for(event="posted")] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ faults


async def test_rate_limit_429_with_rate_limit_headers(world: World, http: aiohttp.ClientSession) -> None:
    fake = fake_of(world)
    ch = world.channel_ids["ops/incidents"]
    rule = fake.faults.rate_limit(r"/posts$", method="POST")
    headers = {"Authorization": f"Bearer {world.bot_token}"}
    async with http.post(world.url + "/api/v4/posts", json={"channel_id": ch, "message": "x"}, headers=headers) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["X-RateLimit-Remaining"] == "0"
        assert int(resp.headers["X-RateLimit-Limit"]) > 0 and int(resp.headers["X-RateLimit-Reset"]) >= 1
        assert (await resp.text()).strip() == "limit exceeded"
    assert rule.hits == 1 and fake.all_posts(ch) == []
    async with http.post(world.url + "/api/v4/posts", json={"channel_id": ch, "message": "x"}, headers=headers) as resp:
        assert resp.status == 201
    assert fake.requests[-2:] == [("POST", "/api/v4/posts", 429), ("POST", "/api/v4/posts", 201)]

    # Person waits a 429 out (Retry-After) and retries.
    fake.faults.rate_limit(r"/posts$", method="POST", times=2, retry_after=0)
    assert (await world.alice.post(ch, "eventually"))["message"] == "eventually"
    assert fake.count_requests("POST", r"/posts$", 429) == 3


async def test_fail_5xx_user_filter_and_lost_response(world: World) -> None:
    fake, alice = fake_of(world), world.alice
    ch = world.channel_ids["ops/incidents"]
    fake.faults.fail(r"/posts$", 503, method="POST", user="incident-bot")
    await alice.post(ch, "alice is not affected")
    bot = Person(world.url, world.bot_token, "incident-bot", world.bot_user_id)
    try:
        with pytest.raises(ApiError) as err:
            await bot.post(ch, "first try")
        assert err.value.status == 503 and set(err.value.body) == ERROR_KEYS
        fake.faults.fail(r"/posts$", 502, after_effect=True)
        with pytest.raises(ApiError):
            await bot.post(ch, "applied but the answer was lost")
        assert [p["message"] for p in fake.all_posts(ch)] == ["alice is not affected", "applied but the answer was lost"]
        fake.faults.fail(r"/users/me$", 500, method="GET", times=None)
        for _ in range(3):
            with pytest.raises(ApiError):
                await bot.me()
        fake.faults.clear()
        assert (await bot.me())["id"] == world.bot_user_id
    finally:
        await bot.close()


async def test_delay(world: World) -> None:
    fake = fake_of(world)
    fake.faults.delay(r"/users/me$", 0.3, method="GET")
    start = time.monotonic()
    await world.alice.me()
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    await world.alice.me()
    assert time.monotonic() - start < 0.3


# ------------------------------------------------------------------------------------------ Person


async def test_person_waits_for_bot_replies(world: World, bot: Person) -> None:
    alice = world.alice
    ch = world.channel_ids["ops/incidents"]
    command = await alice.post(ch, "@incident-bot start DB down")

    async def answer() -> None:
        await asyncio.sleep(0.2)
        await bot.post(ch, "elsewhere")  # not in the thread
        await bot.reply(command, "Started incident #1")

    task = asyncio.create_task(answer())
    reply = await alice.wait_for_reply(command, contains="#1", timeout=3)
    await task
    assert reply["root_id"] == command["id"] and reply["user_id"] == world.bot_user_id
    assert [r["id"] for r in await alice.replies_to(command)] == [reply["id"]]

    quiet = await alice.post(ch, "just chatting")
    assert await alice.replies_to(quiet) == []
    with pytest.raises(AssertionError, match=r"just chatting|no reply"):
        await alice.wait_for_reply(quiet, timeout=0.3)
    await bot.reply(quiet, "unasked")
    assert [r["message"] for r in await alice.replies_to(quiet)] == ["unasked"]

    dm = await alice.dm_bot("list")
    await bot.post(dm["channel_id"], "No active incidents.")
    assert (await alice.wait_for_reply(dm, timeout=3))["message"] == "No active incidents."
    found = await alice.wait_for_post(ch, lambda p: p["message"] == "elsewhere", timeout=3)
    assert found["user_id"] == world.bot_user_id


async def test_world_bootstrap(world: World) -> None:
    fake = fake_of(world)
    assert world.bot_username == "incident-bot" and world.url.startswith("http://127.0.0.1:")
    assert set(world.people) == {"alice", "bob", "carol", "dave", "erin"}
    ops, web = world.channel_ids["ops/incidents"], world.channel_ids["web/incidents"]
    assert set(fake.members_of(ops)) == {world.bot_user_id, world.alice.id, world.bob.id, world.carol.id}
    assert set(fake.members_of(web)) == {world.bot_user_id, world.alice.id, world.dave.id}
    assert await world.erin.teams() == []
    admin = await world.admin.me()
    assert "system_admin" in admin["roles"]
    assert world.alice.bot_user_id == world.bot_user_id


async def test_pending_post_id_dedupes_for_30_seconds_and_while_in_flight(world: World, bot: Person) -> None:
    fake = fake_of(world)
    ch = world.channel_ids["ops/incidents"]
    body = {"channel_id": ch, "message": "once", "pending_post_id": "p-1"}
    first = await bot.request("POST", "/posts", json_body=body)
    again = await bot.request("POST", "/posts", json_body={**body, "message": "twice"})
    assert again["id"] == first["id"] and again["message"] == "once"
    # while the first request with an id is still being handled, a second one is refused (500)
    held = fake.faults.delay(r"^/api/v4/posts$", 0.5, method="POST")
    slow = asyncio.create_task(bot.request("POST", "/posts", json_body={**body, "pending_post_id": "p-2"}))
    await eventually(lambda: held.hits == 1, interval=0.01, what="the first request in flight")
    with pytest.raises(ApiError) as refused:
        await bot.request("POST", "/posts", json_body={**body, "pending_post_id": "p-2"})
    assert refused.value.status == 500 and refused.value.id == "api.post.deduplicate_create_post.pending"
    made = await slow
    assert (await bot.request("POST", "/posts", json_body={**body, "pending_post_id": "p-2"}))["id"] == made["id"]
    # a failed create frees the id at once; after 30 s the id is forgotten
    fake.faults.fail(r"^/api/v4/posts$", 503, method="POST")
    with pytest.raises(ApiError):
        await bot.request("POST", "/posts", json_body={**body, "pending_post_id": "p-3"})
    assert (await bot.request("POST", "/posts", json_body={**body, "pending_post_id": "p-3"}))["message"] == "once"
    fake.pending_post_id_ttl = 0.0  # 30 s later
    assert (await bot.request("POST", "/posts", json_body=body))["id"] != first["id"]


async def test_post_watchers_see_creates_and_edits_and_requests_are_timed(world: World) -> None:
    fake: FakeMattermost = world.fake
    seen: list[tuple[str, str, str]] = []
    fake.post_watchers.append(lambda kind, post: seen.append((kind, post["id"], post["message"])))
    channel = world.channel_ids["ops/incidents"]
    post = await world.alice.post(channel, "first")
    await world.alice.request("PUT", f"/posts/{post['id']}/patch", json_body={"message": "second"})
    assert seen == [("created", post["id"], "first"), ("edited", post["id"], "second")]
    timed = [r for r in fake.request_log if r.method == "POST" and r.path == "/api/v4/posts"]
    assert timed and timed[-1].started > 0 and timed[-1].elapsed >= 0


async def test_json_answers_say_exactly_application_json(world: World) -> None:
    """Real: no charset; mattermostautodriver (stock mmpy_bot) compares the header verbatim."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {world.bot_token}"}) as session,
        session.get(f"{world.url}/api/v4/users/me") as response,
    ):
        assert response.headers["Content-Type"] == "application/json"


async def test_users_and_teams_can_have_fixed_ids() -> None:
    fake = FakeMattermost()
    user, _token = fake.create_user("fixed", user_id="f" * 26)
    team = fake.create_team("fixedteam", team_id="e" * 26)
    assert (user["id"], team["id"]) == ("f" * 26, "e" * 26)
    with pytest.raises(ValueError):
        fake.create_user("other", user_id="f" * 26)
    with pytest.raises(ValueError):
        fake.create_team("another", team_id="not-an-id")


class Integration:
    """A tiny integration: records what the server POSTs and answers ``answer`` (or ``status``)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.answer: dict[str, Any] = {}
        self.status = 200
        self.url = ""
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            self.calls.append(await request.json())
            return web.json_response(self.answer, status=self.status)

        app = web.Application()
        app.router.add_post("/hook", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_post_actions_and_dialogs_as_the_real_server(world: World, bot: Person) -> None:
    hook = Integration()
    await hook.start()
    try:
        alice, erin = world.alice, world.erin
        ch = world.channel_ids["ops/incidents"]
        actions = [
            {"id": "go", "name": "Go", "type": "button", "integration": {"url": hook.url, "context": {"n": 1}}},
            {
                "id": "pick",
                "name": "Pick",
                "type": "select",
                "options": [{"text": "A", "value": "a"}],
                "integration": {"url": hook.url, "context": {"n": 2}},
            },
        ]
        post = await bot.post(ch, "buttons", props={"attachments": [{"actions": actions}]})
        shown = await alice.get_post(post["id"])
        assert shown is not None and all("integration" not in a for a in shown["props"]["attachments"][0]["actions"])

        hook.answer = {"ephemeral_text": "only you", "update": {"message": "clicked"}}
        async with alice.listen() as inbox:
            answer = await alice.click(post, "go", option="ignored")
            assert answer["status"] == "OK" and answer["trigger_id"]
            ephemeral = await inbox.ephemeral("only you")
            assert ephemeral["root_id"] == post["id"] and ephemeral["user_id"] == world.bot_user_id
        call = hook.calls[-1]
        assert call["context"] == {"n": 1}  # a button gets no selected_option
        assert (call["user_id"], call["user_name"], call["post_id"], call["channel_id"]) == (alice.id, "alice", post["id"], ch)
        assert call["team_id"] == world.team_ids["ops"] and call["type"] == "button"
        edited = await alice.get_post(post["id"])
        assert edited is not None and edited["message"] == "clicked" and edited["props"]["attachments"]

        hook.answer = {}
        await alice.click(post, "pick", option="a")
        assert hook.calls[-1]["context"] == {"n": 2, "selected_option": "a"}
        with pytest.raises(ApiError) as missing:
            await alice.click(post, "nope")
        assert missing.value.status == 404
        with pytest.raises(ApiError) as outsider:
            await erin.click(post, "go")
        assert outsider.value.status == 403
        hook.status = 500
        with pytest.raises(ApiError) as failed:
            await alice.click(post, "go")
        assert failed.value.status == 400 and failed.value.id == "api.post.do_action.action_integration.app_error"
        hook.status = 200

        # a dialog opens only with a trigger id of a click, for the person who clicked
        trigger = (await alice.click(post, "go"))["trigger_id"]
        dialog = {"callback_id": "cb", "title": "T", "state": "s", "elements": [{"name": "text", "type": "textarea"}]}
        with pytest.raises(ApiError):
            await bot.request(
                "POST", "/actions/dialogs/open", json_body={"trigger_id": new_id(), "url": hook.url, "dialog": dialog}
            )
        async with alice.listen() as inbox:
            await bot.request(
                "POST", "/actions/dialogs/open", json_body={"trigger_id": trigger, "url": hook.url, "dialog": dialog}
            )
            opened = await inbox.dialog()
        assert opened["dialog"]["state"] == "s"
        hook.answer = {"errors": {"text": "empty"}}
        answer = await alice.submit_dialog(opened, {"text": ""}, ch)
        assert answer == {"errors": {"text": "empty"}}
        call = hook.calls[-1]
        assert call["type"] == "dialog_submission" and call["user_id"] == alice.id and "url" not in call
        assert (call["callback_id"], call["state"], call["submission"]) == ("cb", "s", {"text": ""})
    finally:
        await hook.stop()
