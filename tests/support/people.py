"""People in scenario tests: a thin client of the public Mattermost REST API v4.

Works unchanged against the fake server and a real one: it only uses documented endpoints
and a personal access token (``Authorization: Bearer``). Every method returns what the API
returns (plain dicts); a non-2xx answer raises ``ApiError``.

Waiting for the bot polls ``GET /channels/{id}/posts?since=`` every 0.1 s (``eventually``). That endpoint
compares ``update_at`` and also returns deleted posts, edit-history rows and roots of
threads, so every wait filters on ``create_at`` and skips those.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.support.waiting import eventually

_ID_RE = re.compile(r"^[a-z0-9]{26}$")
POLL_INTERVAL = 0.1
REPLY_PROP = "incident_bot_reply_to"  # the bot's answer names the command post (incident_bot.app.core.REPLY_PROP)


class ApiError(Exception):
    """A non-2xx answer; ``body`` is the decoded JSON error, or the text when it is not JSON."""

    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.method = method
        self.path = path
        ident = body.get("id") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else str(body)[:200]
        super().__init__(f"{method} {path} -> {status} {ident or ''} {message or ''}".strip())

    @property
    def id(self) -> str | None:
        return self.body.get("id") if isinstance(self.body, dict) else None


def _post_id(post: dict[str, Any] | str) -> str:
    return post if isinstance(post, str) else post["id"]


def _is_live(post: dict[str, Any]) -> bool:
    """A post a person would see: not deleted, not an edit-history row, not a system message."""
    return not post.get("delete_at") and not post.get("original_id") and not str(post.get("type") or "").startswith("system_")


def _brief(post: dict[str, Any]) -> str:
    root = post.get("root_id") or "-"
    return f"[{post.get('create_at')} {post.get('user_id', '')[:6]} root={root[:6]}] {post.get('message', '')[:300]!r}"


class Person:
    """One user acting over the REST API, e.g. ``await alice.post(channel_id, "@incident-bot start x")``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        username: str,
        user_id: str,
        bot_user_id: str | None = None,
        bot_username: str = "incident-bot",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.username = username
        self.user_id = user_id
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self._session: aiohttp.ClientSession | None = None
        self._dm_channels: dict[str, str] = {}
        self._channel_types: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Person(@{self.username})"

    @property
    def id(self) -> str:
        return self.user_id

    # ---------------------------------------------------------------------------- transport

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> Person:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        data: Any = None,
        raw: bool = False,
        retries_429: int = 5,
    ) -> Any:
        """Call ``/api/v4{path}``; JSON back (bytes with ``raw``). 429s are waited out."""
        url = f"{self.base_url}/api/v4{path}"
        for attempt in range(retries_429 + 1):
            async with self._http().request(method, url, json=json_body, params=params, data=data) as resp:
                body = await resp.read()
                if resp.status == 429 and attempt < retries_429:
                    await asyncio.sleep(_retry_delay(resp.headers))
                    continue
                if resp.status >= 300:
                    try:
                        decoded: Any = json.loads(body)
                    except ValueError:
                        decoded = body.decode(errors="replace")
                    raise ApiError(resp.status, decoded, method, path)
                if raw:
                    return body
                return json.loads(body) if body else None
        raise AssertionError("unreachable")

    async def _get_or_none(self, path: str, **kw: Any) -> Any:
        try:
            return await self.request("GET", path, **kw)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    # ---------------------------------------------------------------------------- users, teams

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/users/me")

    async def user(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/users/{user_id}")

    async def user_by_username(self, username: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/users/username/{username.lstrip('@')}")

    async def teams(self) -> list[dict[str, Any]]:
        return await self.request("GET", "/users/me/teams")

    async def team_by_name(self, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/teams/name/{name}")

    async def bot_id(self) -> str:
        if self.bot_user_id is None:
            bot = await self.user_by_username(self.bot_username)
            if bot is None:
                raise AssertionError(f"no user @{self.bot_username}")
            self.bot_user_id = bot["id"]
        return self.bot_user_id

    async def _user_id_of(self, who: str) -> str:
        who = who.lstrip("@")
        if _ID_RE.match(who):
            return who
        user = await self.user_by_username(who)
        if user is None:
            raise AssertionError(f"no user @{who}")
        return user["id"]

    # ---------------------------------------------------------------------------- channels

    async def channel(self, channel_id: str) -> dict[str, Any]:
        ch = await self.request("GET", f"/channels/{channel_id}")
        self._channel_types[channel_id] = ch["type"]
        return ch

    async def channel_by_name(self, team_id: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/teams/{team_id}/channels/name/{name}")

    async def my_channels(self, team_id: str) -> list[dict[str, Any]]:
        return await self._get_or_none(f"/users/me/teams/{team_id}/channels") or []

    async def channel_members(self, channel_id: str) -> list[str]:
        ids: list[str] = []
        page = 0
        while True:
            batch = await self.request("GET", f"/channels/{channel_id}/members", params={"page": page, "per_page": 200})
            ids.extend(m["user_id"] for m in batch)
            if len(batch) < 200:
                return ids
            page += 1

    async def create_channel(
        self, team_id: str, name: str, display_name: str | None = None, type: str = "O", header: str = "", purpose: str = ""
    ) -> dict[str, Any]:
        return await self.request(
            "POST",
            "/channels",
            json_body={
                "team_id": team_id,
                "name": name,
                "display_name": display_name or name,
                "type": type,
                "header": header,
                "purpose": purpose,
            },
        )

    async def patch_channel(self, channel_id: str, **fields: Any) -> dict[str, Any]:
        return await self.request("PUT", f"/channels/{channel_id}/patch", json_body=fields)

    async def add_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/channels/{channel_id}/members", json_body={"user_id": user_id})

    async def join(self, channel_id: str) -> dict[str, Any]:
        return await self.add_member(channel_id, self.user_id)

    async def leave(self, channel_id: str) -> None:
        await self.request("DELETE", f"/channels/{channel_id}/members/{self.user_id}")

    async def remove_member(self, channel_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/channels/{channel_id}/members/{user_id}")

    async def dm_channel(self, other: str) -> dict[str, Any]:
        """The direct channel with another user (id, username or ``@username``), created if needed."""
        other_id = await self._user_id_of(other)
        if other_id not in self._dm_channels:
            ch = await self.request("POST", "/channels/direct", json_body=[self.user_id, other_id])
            self._dm_channels[other_id] = ch["id"]
            self._channel_types[ch["id"]] = "D"
        return await self.channel(self._dm_channels[other_id])

    async def _is_dm(self, channel_id: str) -> bool:
        if channel_id not in self._channel_types:
            await self.channel(channel_id)
        return self._channel_types[channel_id] in ("D", "G")

    # ---------------------------------------------------------------------------- posting

    async def post(
        self,
        channel_id: str,
        message: str,
        root_id: str | None = None,
        *,
        props: dict[str, Any] | None = None,
        file_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"channel_id": channel_id, "message": message}
        if root_id:
            body["root_id"] = root_id
        if props:
            body["props"] = props
        if file_ids:
            body["file_ids"] = file_ids
        return await self.request("POST", "/posts", json_body=body)

    async def dm(self, other: str, message: str) -> dict[str, Any]:
        """Post in the direct channel with ``other`` (id or username)."""
        ch = await self.dm_channel(other)
        return await self.post(ch["id"], message)

    async def dm_bot(self, message: str) -> dict[str, Any]:
        return await self.dm(await self.bot_id(), message)

    async def reply(self, post: dict[str, Any], message: str) -> dict[str, Any]:
        """Reply in the thread of ``post`` (its root's thread when it is itself a reply)."""
        return await self.post(post["channel_id"], message, root_id=post.get("root_id") or post["id"])

    async def edit(self, post: dict[str, Any] | str, message: str) -> dict[str, Any]:
        return await self.request("PUT", f"/posts/{_post_id(post)}/patch", json_body={"message": message})

    async def delete(self, post: dict[str, Any] | str) -> None:
        await self.request("DELETE", f"/posts/{_post_id(post)}")

    async def pin(self, post: dict[str, Any] | str) -> None:
        await self.request("POST", f"/posts/{_post_id(post)}/pin")

    async def unpin(self, post: dict[str, Any] | str) -> None:
        await self.request("POST", f"/posts/{_post_id(post)}/unpin")

    async def react(self, post: dict[str, Any] | str, emoji: str = "white_check_mark") -> dict[str, Any]:
        return await self.request(
            "POST", "/reactions", json_body={"user_id": self.user_id, "post_id": _post_id(post), "emoji_name": emoji}
        )

    async def unreact(self, post: dict[str, Any] | str, emoji: str = "white_check_mark") -> None:
        await self.request("DELETE", f"/users/{self.user_id}/posts/{_post_id(post)}/reactions/{emoji}")

    # ---------------------------------------------------------------------------- buttons, dialogs

    async def click(self, post: dict[str, Any] | str, action_id: str, option: str | None = None) -> dict[str, Any]:
        """Click a message button (or pick ``option`` from a select) as the web app does; the
        server calls the integration and answers ``{"status": "OK", "trigger_id": …}``."""
        body = {"selected_option": option} if option is not None else {}
        return await self.request("POST", f"/posts/{_post_id(post)}/actions/{action_id}", json_body=body)

    async def upload(
        self, channel_id: str, filename: str, content: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("channel_id", channel_id)
        form.add_field("files", content, filename=filename, content_type=content_type)
        result = await self.request("POST", "/files", data=form)
        return result["file_infos"][0]

    # ---------------------------------------------------------------------------- reading

    async def get_post(self, post_id: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/posts/{post_id}")

    async def posts(self, channel_id: str) -> list[dict[str, Any]]:
        """Every visible post of a channel (system messages included), oldest first."""
        found: dict[str, dict[str, Any]] = {}
        page = 0
        while True:
            lst = await self.request("GET", f"/channels/{channel_id}/posts", params={"page": page, "per_page": 200})
            for pid in lst["order"]:
                found[pid] = lst["posts"][pid]
            if len(lst["order"]) < 200:
                break
            page += 1
        return sorted(found.values(), key=lambda p: (p["create_at"], p["id"]))

    async def pinned(self, channel_id: str) -> list[dict[str, Any]]:
        lst = await self.request("GET", f"/channels/{channel_id}/pinned")
        return sorted((lst["posts"][i] for i in lst["order"]), key=lambda p: p["create_at"])

    async def thread(self, post_id: str) -> list[dict[str, Any]]:
        """Root and replies of the thread holding ``post_id``, oldest first."""
        lst = await self.request("GET", f"/posts/{post_id}/thread")
        return sorted((p for p in lst["posts"].values() if not p.get("delete_at")), key=lambda p: (p["create_at"], p["id"]))

    async def reactions(self, post: dict[str, Any] | str) -> list[dict[str, Any]]:
        return await self.request("GET", f"/posts/{_post_id(post)}/reactions") or []

    async def file(self, file_id: str) -> bytes:
        return await self.request("GET", f"/files/{file_id}", raw=True)

    async def file_info(self, file_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/files/{file_id}/info")

    async def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        """Raw ``?since=`` answer (also deleted posts and edit-history rows), oldest first."""
        lst = await self.request("GET", f"/channels/{channel_id}/posts", params={"since": max(1, since_ms)})
        return sorted(lst["posts"].values(), key=lambda p: (p["create_at"], p["id"]))

    # ---------------------------------------------------------------------------- slash commands, dialogs

    async def slash(self, channel_id: str, command: str, root_id: str = "") -> dict[str, Any]:
        """Type ``command`` (e.g. ``/incident list``) in the channel, as the web app sends
        it: the server calls the command's URL and answers with its response (what an
        ``ephemeral`` one shows only to this person)."""
        channel = await self.channel(channel_id)
        body = {"channel_id": channel_id, "team_id": channel.get("team_id", ""), "command": command, "root_id": root_id}
        return await self.request("POST", "/commands/execute", json_body=body)

    async def submit_dialog(self, opened: dict[str, Any], submission: dict[str, Any], channel_id: str) -> dict[str, Any]:
        """Fill in and submit a dialog the bot opened (``opened``: the ``open_dialog``
        event's request); the bot's answer (``errors`` per field, ``error``, or nothing)."""
        channel = await self.channel(channel_id)
        body = {
            "url": opened["url"],
            "callback_id": opened["dialog"].get("callback_id", ""),
            "state": opened["dialog"].get("state", ""),
            "channel_id": channel_id,
            "team_id": channel.get("team_id", ""),
            "submission": submission,
            "cancelled": False,
        }
        return await self.request("POST", "/actions/dialogs/submit", json_body=body) or {}

    def listen(self) -> Listening:
        """``async with alice.listen() as events:`` what the server sends this person over
        the WebSocket meanwhile (opened dialogs, ephemeral messages …)."""
        return Listening(self)

    # ---------------------------------------------------------------------------- waiting for the bot

    async def _bot_replies(self, post: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(bot replies to ``post``, every live post after it), both oldest first."""
        bot = await self.bot_id()
        root = post.get("root_id") or post["id"]
        dm = await self._is_dm(post["channel_id"])
        after = [
            p
            for p in await self.posts_since(post["channel_id"], post["create_at"] - 1)
            if _is_live(p) and p["id"] != post["id"] and p["create_at"] >= post["create_at"]
        ]
        # The bot names the command it answers (props incident_bot_reply_to): in a DM, where
        # replies are not threaded, an answer to another command is not this one's.
        replies = [
            p
            for p in after
            if p["user_id"] == bot
            and (dm or p.get("root_id") == root)
            and (p.get("props") or {}).get(REPLY_PROP, post["id"]) == post["id"]
        ]
        return replies, after

    async def wait_for_reply(self, post: dict[str, Any], contains: str | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """The first bot post after ``post`` in its thread (in a DM: anywhere in the DM),
        containing ``contains`` when given. AssertionError with what was seen on timeout."""
        seen: list[dict[str, Any]] = []

        async def reply() -> dict[str, Any] | None:
            replies, after = await self._bot_replies(post)
            seen[:] = after
            return next((p for p in replies if contains is None or contains in p["message"]), None)

        try:
            return await eventually(reply, timeout=timeout, interval=POLL_INTERVAL)
        except AssertionError:
            shown = "\n  ".join(_brief(p) for p in seen) or "(nothing)"
            want = f" containing {contains!r}" if contains else ""
            raise AssertionError(
                f"no reply by @{self.bot_username}{want} to {_brief(post)} within {timeout}s; posts after it:\n  {shown}"
            ) from None

    async def replies_to(self, post: dict[str, Any]) -> list[dict[str, Any]]:
        """Every bot reply to ``post`` so far (see ``wait_for_reply``), oldest first."""
        replies, _ = await self._bot_replies(post)
        return replies

    async def wait_for_post(
        self, channel_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0, after_ms: int | None = None
    ) -> dict[str, Any]:
        """The oldest live post of a channel (created after ``after_ms`` when given) that
        satisfies ``predicate``."""
        since = after_ms if after_ms is not None else 1
        seen: list[dict[str, Any]] = []

        async def match() -> dict[str, Any] | None:
            seen[:] = [
                p
                for p in await self.posts_since(channel_id, since)
                if _is_live(p) and (after_ms is None or p["create_at"] > after_ms)
            ]
            return next((p for p in seen if predicate(p)), None)

        try:
            return await eventually(match, timeout=timeout, interval=POLL_INTERVAL)
        except AssertionError:
            shown = "\n  ".join(_brief(p) for p in seen[-20:]) or "(nothing)"
            raise AssertionError(f"no matching post in {channel_id} within {timeout}s; last posts:\n  {shown}") from None

    async def wait_for_message(self, post_id: str, pattern: str, timeout: float = 10) -> dict[str, Any]:
        """The post once its text matches ``pattern`` (re.search), e.g. a checklist item ticked."""
        last: list[dict[str, Any] | None] = [None]

        async def matches() -> dict[str, Any] | None:
            last[0] = post = await self.get_post(post_id)
            return post if post and re.search(pattern, post["message"]) else None

        try:
            return await eventually(matches, timeout=timeout, interval=POLL_INTERVAL)
        except AssertionError:
            raise AssertionError(f"post never matched {pattern!r}: {last[0] and last[0]['message']!r}") from None


def _retry_delay(headers: Any) -> float:
    """Seconds to wait after a 429: Retry-After, else X-RateLimit-Reset (unix time or delay)."""
    import time

    for name in ("Retry-After", "X-RateLimit-Reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            n = float(value)
        except ValueError:
            continue
        if n > 1e9:
            n -= time.time()
        return min(max(n, 0.05), 10.0)
    return 1.0


class Listening:
    """A person's WebSocket while in use: events collected, awaited with ``wait``."""

    def __init__(self, person: Person) -> None:
        self.person = person
        self.events: list[dict[str, Any]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listening:
        ws_url = self.person.base_url.replace("http", "ws", 1) + "/api/v4/websocket"
        self._ws = await self.person._http().ws_connect(ws_url, headers={"Authorization": f"Bearer {self.person.token}"})
        self._reader = asyncio.create_task(self._read())
        await self.wait("hello")
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                if "event" in event:
                    self.events.append(event)

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def wait(
        self, name: str, predicate: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        """The first event ``name`` (whose ``data`` satisfies ``predicate``) seen so far or soon."""

        async def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e["event"] == name and (predicate is None or predicate(e["data"]))), None)

        try:
            return await eventually(found, timeout=timeout, interval=POLL_INTERVAL)
        except AssertionError:
            seen = [e["event"] for e in self.events]
            raise AssertionError(f"no {name} event for @{self.person.username} within {timeout}s; saw {seen}") from None

    async def dialog(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next dialog opened for this person, {trigger_id, url, dialog}; taken from the
        events, so the following call waits for the one after it."""
        event = await self.wait("open_dialog", timeout=timeout)
        self.events.remove(event)
        return dict(json.loads(event["data"]["dialog"]))

    def ephemerals(self) -> list[str]:
        """The text of every ephemeral message seen so far, oldest first."""
        return [json.loads(e["data"]["post"])["message"] for e in self.events if e["event"] == "ephemeral_message"]

    async def ephemeral(self, contains: str, timeout: float = 15.0) -> dict[str, Any]:
        """An ephemeral message (only this person sees it) containing ``contains``."""
        event = await self.wait("ephemeral_message", lambda d: contains in json.loads(d["post"])["message"], timeout=timeout)
        return dict(json.loads(event["data"]["post"]))
