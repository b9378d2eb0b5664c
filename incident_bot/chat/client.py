"""Async REST client for the Mattermost API v4, with retries for 429, 5xx and network errors.

We use a thin aiohttp client rather than mmpy_bot's stock (synchronous) ``Driver`` or a
generated driver: it gives us control of retries, 429 handling and the reliable-WebSocket
resume parameters, and keeps every call on the event loop.

Retry policy (``_request``, with the delays of ``incident_bot.chat.retry.Backoff``):

- 429: wait as ``Retry-After`` says, else as ``X-RateLimit-Reset`` says, else back off;
  every wait is capped at ``max_backoff``. Up to ``retries * 2`` such retries.
- 5xx, timeouts, connection errors: exponential backoff with full jitter, at most
  ``retries`` retries, then ``ServerUnavailable``.
- Any other 4xx: raised at once, never retried.

Non-idempotent POSTs are retried too; the app layer dedupes by event key, and
``create_post`` also sends a ``pending_post_id`` the server uses to drop a repeated post.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic_core import from_json

from incident_bot import __version__
from incident_bot.chat.errors import (
    BadRequest,
    MattermostError,
    NotFound,
    RateLimited,
    ServerUnavailable,
    error_from_response,
)
from incident_bot.chat.models import Channel, FileInfo, Post, Reaction, Team, User
from incident_bot.chat.retry import Backoff, rate_limit_hint

if TYPE_CHECKING:
    from incident_bot.chat.port import ChatPort

log = structlog.get_logger(__name__)

_RETRYABLE_EXCEPTIONS = (
    aiohttp.ClientConnectionError,  # refused, reset, server disconnected, DNS …
    aiohttp.ClientPayloadError,  # body cut short
    asyncio.TimeoutError,
)

_MEMBERS_PAGE = 200
SINCE_PAGE = 1000  # the most posts Mattermost answers to one ?since= request

# Indirection so tests can record the waits without sleeping through them.
_sleep = asyncio.sleep


class MattermostClient:
    """Typed async calls to ``{base_url}/api/v4``.

    Use as ``async with MattermostClient(url, token) as mm: ...`` or call ``close()``.
    A session passed in is used as is and left open on close; otherwise the client
    opens its own on first use.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        on_response: Callable[[int], None] | None = None,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Asked before every call that is not a GET: a replica that is not (or no longer) the
        # leader writes nothing to Mattermost (app/leadership.py); None: always allowed.
        self._may_write = may_write
        # Told the status of every answer (0: none came: timeout, refused …), for the metrics.
        self._on_response = on_response
        self.last_rate_limited: float | None = None  # loop time of the last 429, for the health summary
        self.api_url = f"{self.base_url}/api/v4"
        self._token = token
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:  # keeps the token out of reprs and tracebacks
        return f"MattermostClient({self.base_url!r})"

    async def __aenter__(self) -> MattermostClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise RuntimeError("the session given to MattermostClient is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    # --- transport -------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"incident-bot/{__version__}",
            "X-Requested-With": "XMLHttpRequest",
        }

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _new_backoff(self) -> Backoff:
        """A fresh policy for one call: full jitter, doubling from ``backoff`` up to ``max_backoff``."""
        return Backoff(self.backoff, cap=self.max_backoff, jitter="full")

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        outside_api: bool = False,
    ) -> Any:
        """Send one API call with the retry policy; return the decoded JSON (or None).

        ``form`` builds a fresh multipart body per attempt (aiohttp bodies are single-use).
        """
        url = f"{self.base_url if outside_api else self.api_url}{path}"
        # 429s get their own, larger budget: being told to wait is not an outage.
        server_errors = self._new_backoff()
        rate_limited = self._new_backoff()
        while True:
            if method != "GET" and self._may_write is not None and not self._may_write():
                raise ServerUnavailable(
                    0, "not the leader (this replica's lease is gone): nothing written", method=method, path=path
                )
            status = 0
            failure = ""
            limited = False
            hint: float | None = None
            try:
                async with self._get_session().request(
                    method,
                    url,
                    params=params,
                    json=json_body if form is None else None,
                    data=form() if form is not None else None,
                    headers=self._headers(),
                    timeout=self._timeout,
                ) as resp:
                    status = resp.status
                    body = await resp.read()
                    if 200 <= status < 300:
                        return None if outside_api else self._decode(body, status, method, path)
                    if status == 429:
                        limited = True
                        hint = rate_limit_hint(resp.headers)
                    elif status < 500:
                        raise error_from_response(status, self._scrub_body(body), method=method, path=path)
                    else:
                        failure = error_from_response(status, self._scrub_body(body)).message
                        failure = failure or f"HTTP {status}"
            except _RETRYABLE_EXCEPTIONS as exc:
                failure = type(exc).__name__
                status = 0
            finally:
                if self._on_response is not None:
                    self._on_response(status)

            if limited:
                self.last_rate_limited = asyncio.get_running_loop().time()
                if rate_limited.attempts >= self.retries * 2:
                    raise RateLimited(
                        status,
                        f"still rate limited after {rate_limited.attempts} retries",
                        method=method,
                        path=path,
                    )
                wait = rate_limited.next_delay(hint)
                attempt = rate_limited.attempts
            else:
                # A 5xx or a network failure: back off, or give up.
                if server_errors.attempts >= self.retries:
                    raise ServerUnavailable(
                        status,
                        f"gave up after {server_errors.attempts + 1} attempts: {self._scrub(failure)}",
                        method=method,
                        path=path,
                    )
                wait = server_errors.next_delay()
                attempt = server_errors.attempts
            log.warning(
                "mattermost.retry",
                method=method,
                path=path,
                status=status,
                attempt=attempt,
                wait=round(wait, 3),
                error=None if status else failure,
            )
            await _sleep(wait)

    def _scrub_body(self, body: bytes) -> str:
        return self._scrub(body.decode("utf-8", "replace"))

    def _decode(self, body: bytes, status: int, method: str, path: str) -> Any:
        if not body:
            return None
        try:
            return from_json(body)  # pydantic-core's parser, as chat/events.py
        except ValueError:
            raise MattermostError(
                status,
                "answer is not JSON",
                error_id="incident_bot.chat.invalid_json",
                method=method,
                path=path,
            ) from None

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._request("GET", path, params=params)

    async def _get_or_none(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self._get(path, params)
        except NotFound:
            return None

    # --- users -----------------------------------------------------------------------

    async def get_me(self) -> User:
        return User.model_validate(await self._get("/users/me"))

    async def get_user(self, user_id: str) -> User:
        return User.model_validate(await self._get(f"/users/{user_id}"))

    async def get_user_by_username(self, username: str) -> User | None:
        """The user with that username (without a leading @), or None. Mattermost answers
        400, not 404, for names it reserves for mentions (``all``, ``channel``, ``here``)."""
        try:
            data = await self._get_or_none(f"/users/username/{username.lstrip('@')}")
        except BadRequest:
            return None
        return None if data is None else User.model_validate(data)

    async def get_users_by_ids(self, ids: list[str]) -> list[User]:
        """Users for the ids that exist (unknown ids are silently absent)."""
        if not ids:
            return []
        data = await self._request("POST", "/users/ids", json_body=list(ids))
        return [User.model_validate(u) for u in data or []]

    # --- teams -----------------------------------------------------------------------

    async def get_user_teams(self, user_id: str = "me") -> list[Team]:
        data = await self._get(f"/users/{user_id}/teams")
        return [Team.model_validate(t) for t in data or []]

    async def get_team(self, team_id: str) -> Team:
        return Team.model_validate(await self._get(f"/teams/{team_id}"))

    async def get_team_by_name(self, name: str) -> Team | None:
        data = await self._get_or_none(f"/teams/name/{name}")
        return None if data is None else Team.model_validate(data)

    async def is_team_member(self, team_id: str, user_id: str) -> bool:
        """True when the user is a current member (a member who left has delete_at set)."""
        data = await self._get_or_none(f"/teams/{team_id}/members/{user_id}")
        return data is not None and not data.get("delete_at")

    async def get_team_member_roles(self, team_id: str, user_id: str = "me") -> list[str]:
        """The names of the user's roles in the team (``team_user``, a scheme's roles …); raises NotFound."""
        data = await self._get(f"/teams/{team_id}/members/{user_id}")
        return str((data or {}).get("roles") or "").split()

    async def get_role_permissions(self, names: list[str]) -> set[str]:
        """Every permission the named roles grant together (for ``incident-bot check``)."""
        if not names:
            return set()
        data = await self._request("POST", "/roles/names", json_body=sorted(set(names)))
        return {str(p) for role in data or [] if isinstance(role, dict) for p in role.get("permissions") or []}

    # --- channels --------------------------------------------------------------------

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.model_validate(await self._get(f"/channels/{channel_id}"))

    async def get_channel_by_name(self, team_id: str, name: str) -> Channel | None:
        data = await self._get_or_none(f"/teams/{team_id}/channels/name/{name}")
        return None if data is None else Channel.model_validate(data)

    async def create_channel(
        self,
        team_id: str,
        name: str,
        display_name: str,
        type: str = "P",
        header: str = "",
        purpose: str = "",
    ) -> Channel:
        """Create a channel; raises ChannelNameTaken when the name is in use in the team."""
        body = {
            "team_id": team_id,
            "name": name,
            "display_name": display_name,
            "type": type,
            "header": header,
            "purpose": purpose,
        }
        return Channel.model_validate(await self._request("POST", "/channels", json_body=body))

    async def patch_channel(self, channel_id: str, **fields: Any) -> Channel:
        """Change only the given fields (display_name, header, purpose, name …)."""
        data = await self._request("PUT", f"/channels/{channel_id}/patch", json_body=fields)
        return Channel.model_validate(data)

    async def get_user_channels(self, team_id: str, user_id: str = "me") -> list[Channel]:
        """The user's channels in the team, direct messages included (the server answers 404
        when there are none)."""
        data = await self._get_or_none(f"/users/{user_id}/teams/{team_id}/channels")
        return [Channel.model_validate(c) for c in data or []]

    async def is_channel_member(self, channel_id: str, user_id: str) -> bool:
        """True when the user is in the channel.

        Raises Forbidden when the bot itself may not read the channel's members.
        """
        data = await self._get_or_none(f"/channels/{channel_id}/members/{user_id}")
        return data is not None

    async def add_channel_member(self, channel_id: str, user_id: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/members", json_body={"user_id": user_id})

    async def get_channel_member_ids(self, channel_id: str) -> list[str]:
        """Every member's user id, reading page after page."""
        ids: list[str] = []
        page = 0
        while True:
            data = await self._get(
                f"/channels/{channel_id}/members",
                {"page": page, "per_page": _MEMBERS_PAGE},
            )
            batch = data or []
            ids.extend(str(m["user_id"]) for m in batch if isinstance(m, dict) and "user_id" in m)
            if len(batch) < _MEMBERS_PAGE:
                return ids
            page += 1

    async def create_direct_channel(self, user_a: str, user_b: str) -> Channel:
        """The direct-message channel of two users (created if missing)."""
        data = await self._request("POST", "/channels/direct", json_body=[user_a, user_b])
        return Channel.model_validate(data)

    # --- posts -----------------------------------------------------------------------

    async def create_post(
        self,
        channel_id: str,
        message: str,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        file_ids: list[str] | None = None,
        *,
        pending_post_id: str | None = None,
    ) -> Post:
        """Post a message (a reply when root_id is set).

        The same ``pending_post_id`` goes with every retry of this call, so the server
        returns the first post instead of making a second one (it remembers ids ~30 s).
        """
        body: dict[str, Any] = {
            "channel_id": channel_id,
            "message": message,
            "pending_post_id": pending_post_id or uuid.uuid4().hex,
        }
        if root_id:
            body["root_id"] = root_id
        if props:
            body["props"] = props
        if file_ids:
            body["file_ids"] = list(file_ids)
        return Post.model_validate(await self._request("POST", "/posts", json_body=body))

    async def get_post(self, post_id: str) -> Post | None:
        """The post, or None when it does not exist or was deleted."""
        data = await self._get_or_none(f"/posts/{post_id}")
        return None if data is None else Post.model_validate(data)

    async def patch_post(self, post_id: str, message: str | None = None, props: dict[str, Any] | None = None) -> Post:
        """Change the message and/or props (props replace the whole props map)."""
        body: dict[str, Any] = {}
        if message is not None:
            body["message"] = message
        if props is not None:
            body["props"] = props
        data = await self._request("PUT", f"/posts/{post_id}/patch", json_body=body)
        return Post.model_validate(data)

    async def pin_post(self, post_id: str) -> None:
        await self._request("POST", f"/posts/{post_id}/pin")

    async def get_thread(self, post_id: str) -> list[Post]:
        """The root post and all its replies, oldest first."""
        return _sorted_posts(await self._get(f"/posts/{post_id}/thread"))

    async def get_posts_since(self, channel_id: str, since_ms: int) -> list[Post]:
        """Every post created, edited or deleted after ``since_ms``, oldest (by create_at) first.

        Deleted posts come back with ``delete_at`` set. The server answers at most
        SINCE_PAGE posts to one call, the oldest changes first, so this asks again from the
        newest change seen until fewer come (or nothing new does).
        """
        found: dict[str, Post] = {}
        while True:
            batch = _sorted_posts(await self._get(f"/channels/{channel_id}/posts", {"since": int(since_ms)}))
            fresh = [p for p in batch if p.id not in found or found[p.id].update_at < p.update_at]
            for post in batch:
                found[post.id] = post
            if len(batch) < SINCE_PAGE or not fresh:
                return sorted(found.values(), key=lambda p: (p.create_at, p.id))
            since_ms = max(p.update_at for p in batch) - 1

    async def get_posts_page(self, channel_id: str, page: int, per_page: int) -> list[Post]:
        """One page of the channel's posts (page 0 holds the newest), oldest first within it."""
        data = await self._get(f"/channels/{channel_id}/posts", {"page": page, "per_page": per_page})
        return _sorted_posts(data)

    # --- reactions -------------------------------------------------------------------

    async def add_reaction(self, post_id: str, emoji_name: str, user_id: str) -> Reaction:
        body = {"user_id": user_id, "post_id": post_id, "emoji_name": emoji_name}
        return Reaction.model_validate(await self._request("POST", "/reactions", json_body=body))

    async def get_reactions(self, post_id: str) -> list[Reaction]:
        data = await self._get(f"/posts/{post_id}/reactions")
        return [Reaction.model_validate(r) for r in data or []]

    # --- files -----------------------------------------------------------------------

    async def upload_file(self, channel_id: str, filename: str, content: bytes, mime: str = "text/markdown") -> FileInfo:
        """Upload one file to the channel; attach it with create_post(file_ids=[info.id])."""

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("channel_id", channel_id)
            data.add_field("files", content, filename=filename, content_type=mime)
            return data

        answer = await self._request("POST", "/files", form=form)
        infos = (answer or {}).get("file_infos") or []
        if not infos:
            raise MattermostError(0, "upload answered no file_infos", method="POST", path="/files")
        return FileInfo.model_validate(infos[0])

    # --- slash commands and dialogs --------------------------------------------------------

    async def get_client_config(self) -> dict[str, Any]:
        """The server's client configuration (``EnableCommands`` …), as the web app reads it."""
        return dict(await self._get("/config/client", {"format": "old"}) or {})

    async def list_commands(self, team_id: str) -> list[dict[str, Any]]:
        """The team's custom slash commands (needs a token that may manage them)."""
        data = await self._get("/commands", {"team_id": team_id, "custom_only": "true"})
        return list(data or [])

    async def create_command(self, command: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._request("POST", "/commands", json_body=command))

    async def update_command(self, command: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._request("PUT", f"/commands/{command['id']}", json_body=command))

    async def open_dialog(self, trigger_id: str, url: str, dialog: dict[str, Any]) -> None:
        await self._request("POST", "/actions/dialogs/open", json_body={"trigger_id": trigger_id, "url": url, "dialog": dialog})

    async def post_ephemeral(self, user_id: str, channel_id: str, message: str) -> None:
        body = {"user_id": user_id, "post": {"channel_id": channel_id, "message": message}}
        await self._request("POST", "/posts/ephemeral", json_body=body)

    async def post_command_response(self, response_url: str, response: dict[str, Any]) -> None:
        # Only the path is used: the URL came in a request, and the server's SiteURL may
        # name a host the bot does not (or must not) reach.
        path = urlsplit(response_url).path
        match = _HOOK_PATH.search(path)
        if match is None:
            raise BadRequest(400, "not a slash command response URL", error_id="incident_bot.chat.bad_response_url")
        await self._request("POST", match.group(0), json_body=response, outside_api=True)


_HOOK_PATH = re.compile(r"/hooks/commands/[a-z0-9]{26}$")


def _sorted_posts(post_list: Any) -> list[Post]:
    """Posts of a PostList (``{"order": [...], "posts": {id: post}}``), oldest first."""
    posts = (post_list or {}).get("posts") or {}
    parsed = [Post.model_validate(p) for p in posts.values()]
    parsed.sort(key=lambda p: (p.create_at, p.id))
    return parsed


if TYPE_CHECKING:

    def _implements_chat_port(client: MattermostClient) -> ChatPort:
        return client  # mypy checks every ChatPort method's signature against the client's
