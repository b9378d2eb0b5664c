"""An in-process fake Mattermost server: REST API v4 + WebSocket, with fault injection.

It follows the real server (read from mattermost/mattermost sources, v10/v11) wherever a bot
could notice the difference: status codes, error JSON and ids, event envelopes and their
JSON-string fields, who receives which event, and the reliable-WebSocket resume protocol.
Where the real server has a trap, the fake keeps it (see the notes by each handler), so code
that passes here has a fair chance against a real server:

- ``GET /channels/{id}/posts?since=`` compares ``update_at > since`` and also returns deleted
  posts and edit-history rows (``original_id != ""``); a reply or a reaction moves the
  ``update_at`` of the post it touches.
- ``post_deleted`` carries the post as it was *before* deletion (``delete_at`` 0).
- ``posted`` carries ``mentions`` only to a recipient who is mentioned, and then only its own id.
- Adding, removing, header/display-name/purpose changes create ``system_*`` posts.
- Resume (``connection_id`` + ``sequence_number``) works only when the socket is authenticated
  by the upgrade request's ``Authorization`` header; a successful resume sends *no* ``hello``.
- A rate-limited request gets 429 with a text body ``limit exceeded`` and
  ``X-RateLimit-Reset`` in seconds *from now* (the throttled library's convention).

Setup helpers (``create_user``, ``create_team`` …) are plain synchronous methods, and so is
everything that publishes events: they can be called from tests at any time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import mimetypes
import re
import secrets
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from aiohttp import WSMsgType, web

API = "/api/v4"
SERVER_VERSION = "10.11.0.0.fake.false"
MAX_POST_RUNES = 16383
DEAD_QUEUE_SIZE = 128  # events kept per connection for resume, as the real server
PENDING_POST_ID_TTL = 30.0  # seconds a pending_post_id makes POST /posts idempotent (real: 30 s)
SEND_QUEUE_SIZE = 256  # events queued for a disconnected connection before it is dropped
CHANNEL_NAME_MAX = 64
CHANNEL_DISPLAY_NAME_MAX = 64
CHANNEL_HEADER_MAX = 1024
CHANNEL_PURPOSE_MAX = 250

_ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"  # Mattermost's base32 alphabet
_ID_RE = re.compile(r"^[a-z0-9]{26}$")
# The stricter, older rule (must start and end with a letter or digit); newer servers also
# accept a trailing - or _, so a name valid here is valid there.
_CHANNEL_NAME_RE = re.compile(r"^[a-z0-9]+([a-z\-_0-9]+|(__)?)[a-z0-9]+$")
_EMOJI_RE = re.compile(r"^[a-zA-Z0-9\-+_]+$")
_USERNAME_RE = re.compile(r"^[a-z][a-z0-9.\-_]{0,63}$")
_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_.\-@])@([A-Za-z0-9_.\-]+)")

_MESSAGES: dict[str, str] = {
    "api.context.session_expired.app_error": "Invalid or expired session, please login again.",
    "api.context.permissions.app_error": "You do not have the appropriate permissions.",
    "api.context.invalid_url_param.app_error": "Invalid or missing {name} parameter in request URL.",
    "api.context.invalid_body_param.app_error": "Invalid or missing {name} in request body.",
    "api.context.invalid_param.app_error": "Invalid {name} parameter.",
    "api.context.404.app_error": "Sorry, we could not find the page.",
    "api.context.405.app_error": "Method not allowed.",
    "app.user.missing_account.const": "Unable to find the user.",
    "app.user.get_by_username.app_error": "Unable to find an existing account matching your username.",
    "app.team.get.find.app_error": "Unable to find the existing team.",
    "app.team.get_by_name.missing.app_error": "Unable to find the existing team.",
    "app.team.get_member.missing.app_error": "No team member found for that user ID and team ID.",
    "app.channel.get.existing.app_error": "Unable to find the existing channel.",
    "app.channel.get_by_name.missing.app_error": "Channel does not exist.",
    "app.channel.get_member.missing.app_error": "No channel member found for that user ID and channel ID.",
    "app.channel.get_channels.not_found.app_error": "No channels were found.",
    "store.sql_channel.save_channel.exists.app_error": "A channel with that name already exists on the same team.",
    "model.channel.is_valid.2_or_more.app_error": "Name must be 2 or more lowercase alphanumeric characters.",
    "model.channel.is_valid.name.app_error": "Invalid channel name. User ids are not permitted in channel name for non-direct message channels.",
    "model.channel.is_valid.display_name.app_error": "Invalid display name.",
    "model.channel.is_valid.header.app_error": "Invalid header.",
    "model.channel.is_valid.purpose.app_error": "Invalid purpose.",
    "model.channel.is_valid.type.app_error": "Invalid type.",
    "api.channel.create_channel.direct_channel.app_error": "Must use createDirectChannel API service for direct message channel creation.",
    "api.channel.create_direct_channel.invalid_user.app_error": "Invalid user ID for direct channel creation.",
    "api.channel.add_user_to_channel.type.app_error": "Can not add user to this channel type.",
    "api.channel.remove_user_from_channel.app_error": "Can not remove user from this channel type.",
    "app.post.get.app_error": "Unable to get post.",
    "model.post.is_valid.msg.app_error": "Invalid Message.",
    "api.post.create_post.root_id.app_error": "Invalid RootId parameter.",
    "api.post.create_post.channel_root_id.app_error": "Invalid ChannelId for RootId parameter.",
    "api.reaction.save_reaction.user_id.app_error": "You cannot save reaction for the other user.",
    "app.file_info.get.app_error": "Unable to get the file info.",
    "api.file.upload_file.read_request.app_error": "Unable to upload file(s). Error reading or parsing request data.",
    "api.web_socket_router.no_action.app_error": "No websocket action.",
    "api.web_socket_router.bad_seq.app_error": "Invalid sequence for WebSocket message.",
    "api.web_socket_router.not_authenticated.app_error": "Connection is not authenticated. Please log in and try again.",
    "api.web_socket_router.bad_action.app_error": "Unknown WebSocket action.",
    "app.fake.injected_fault.app_error": "Injected fault.",
    "api.post.deduplicate_create_post.pending": "Rejected post since another client made the same request.",
}


def new_id() -> str:
    """A fresh 26-character id in Mattermost's alphabet."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID_RE.match(value))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(status: int, error_id: str, message: str | None = None, request_id: str | None = None,
               **params: Any) -> dict[str, Any]:
    """The real server's AppError JSON."""
    text = message if message is not None else _MESSAGES.get(error_id, error_id)
    if params:
        try:
            text = text.format(**params)
        except (KeyError, IndexError):
            pass
    return {
        "id": error_id,
        "message": text,
        "detailed_error": "",
        "request_id": request_id or new_id(),
        "status_code": status,
    }


class ApiFailure(Exception):
    """Raised by handlers and setup helpers; becomes an error response."""

    def __init__(self, status: int, error_id: str, **params: Any) -> None:
        super().__init__(f"{status} {error_id} {params or ''}")
        self.status = status
        self.error_id = error_id
        self.params = params


def _forbidden() -> ApiFailure:
    return ApiFailure(403, "api.context.permissions.app_error")


def _bad_url(name: str) -> ApiFailure:
    return ApiFailure(400, "api.context.invalid_url_param.app_error", name=name)


def _bad_body(name: str) -> ApiFailure:
    return ApiFailure(400, "api.context.invalid_body_param.app_error", name=name)


def mentioned_usernames(message: str) -> set[str]:
    """Lowercased ``@name`` words of a message, with trailing ``. _ -`` also stripped."""
    names: set[str] = set()
    for match in _MENTION_RE.finditer(message):
        name = match.group(1).lower()
        names.add(name)
        names.add(name.rstrip("._-"))
    return names


# --------------------------------------------------------------------------------------------
# fault injection


@dataclass
class FaultRule:
    """One injected fault; ``remaining`` None means until removed (``clear_faults``)."""

    kind: str  # "fail" | "delay"
    method: str
    pattern: re.Pattern[str]
    remaining: int | None
    status: int = 0
    headers: dict[str, str] | None = None
    body: Any = None
    seconds: float = 0.0
    user_id: str | None = None
    after_effect: bool = False
    hits: int = 0

    def matches(self, method: str, path: str, user_id: str | None) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method not in ("*", method):
            return False
        if self.user_id is not None and self.user_id != user_id:
            return False
        return bool(self.pattern.search(path))

    def take(self) -> None:
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1


# --------------------------------------------------------------------------------------------
# websocket connections


class _Socket:
    """One open websocket (an HTTP upgrade); ``conn`` once authenticated."""

    def __init__(self, ws: web.WebSocketResponse, transport: Any) -> None:
        self.ws = ws
        self.transport = transport
        self.conn: _Conn | None = None
        self.writer: asyncio.Task[None] | None = None
        self.user_id: str | None = None


class _Conn:
    """A logical connection: survives its socket for resume, like the real server's WebConn."""

    def __init__(self, conn_id: str, user_id: str) -> None:
        self.id = conn_id
        self.user_id = user_id
        self.next_seq = 0
        self.dead: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(maxlen=DEAD_QUEUE_SIZE)
        self.queue: collections.deque[tuple[str, Any]] = collections.deque()
        self.wake = asyncio.Event()
        self.sock: _Socket | None = None
        self.inactive_since: float | None = None
        self.reuse_count = 0
        self.lose = 0  # fault: the next N events are "sent" (seq used, buffered) but never written


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    user_id: str | None
    query: dict[str, str]
    body: Any
    at: float = field(default_factory=time.time)


_Handler = Callable[..., Any]


class FakeMattermost:
    """The fake server. ``await start()`` returns the base URL; ``await stop()`` ends it.

    Public state for assertions: ``requests`` [(method, path, status)], ``request_log``
    [RequestRecord], ``ws_log`` [{user_id, connection_id, envelope, delivered}].
    """

    def __init__(self, *, resume_window: float = 300.0, ws_auth_timeout: float = 5.0,
                 system_posts: bool = True, per_recipient_mentions: bool = True,
                 hello_on_resume: bool = False) -> None:
        # How long a dropped connection's buffer is kept for resume (real: a few minutes).
        self.resume_window = resume_window
        self.ws_auth_timeout = ws_auth_timeout
        self.system_posts = system_posts
        self.per_recipient_mentions = per_recipient_mentions
        # The real server sends no hello on a successful resume; True imitates servers that do.
        self.hello_on_resume = hello_on_resume
        self.refuse_websocket_until = 0.0  # time.time() before which upgrades get 503

        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}  # token -> user id
        self.teams: dict[str, dict[str, Any]] = {}
        self.team_members: dict[str, dict[str, dict[str, Any]]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.channel_members: dict[str, dict[str, dict[str, Any]]] = {}
        self._posts: dict[str, dict[str, Any]] = {}
        self._reactions: dict[str, list[dict[str, Any]]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        # pending_post_id -> (post id, or "" while the request is in flight; when; that request)
        self._pending_ids: dict[str, tuple[str, float, Any]] = {}
        self._file_content: dict[str, bytes] = {}
        self.bot_user_id: str | None = None

        self.requests: list[tuple[str, str, int]] = []
        self.request_log: list[RequestRecord] = []
        self.ws_log: list[dict[str, Any]] = []
        self._faults: list[FaultRule] = []

        self._conns: dict[str, _Conn] = {}
        self._sockets: set[_Socket] = set()
        self._last_ms = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.url = ""
        self._routes = self._build_routes()

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for sock in list(self._sockets):
            self._close_socket(sock, abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeMattermost":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------------------- clock

    def now_ms(self) -> int:
        """Milliseconds, strictly increasing within this fake (so ordering is deterministic)."""
        t = int(time.time() * 1000)
        if t <= self._last_ms:
            t = self._last_ms + 1
        self._last_ms = t
        return t

    # ---------------------------------------------------------------------------- setup helpers

    def create_user(self, username: str, *, is_bot: bool = False, system_admin: bool = False,
                    first_name: str = "", last_name: str = "") -> tuple[dict[str, Any], str]:
        """A user and a personal access token for it."""
        username = username.lower()
        if not _USERNAME_RE.match(username):
            raise ValueError(f"invalid username {username!r}")
        if self.user_by_username(username) is not None:
            raise ValueError(f"username {username!r} taken")
        now = self.now_ms()
        roles = "system_user system_admin" if system_admin else "system_user"
        user = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "username": username,
            "auth_data": "",
            "auth_service": "",
            "email": f"{username}@{'localhost' if is_bot else 'example.com'}",
            "nickname": "",
            "first_name": first_name,
            "last_name": last_name,
            "position": "",
            "roles": roles,
            "locale": "en",
            "timezone": {"automaticTimezone": "", "manualTimezone": "", "useAutomaticTimezone": "true"},
            "is_bot": is_bot,
            "bot_description": "" if is_bot else None,
            "disable_welcome_email": False,
        }
        if not is_bot:
            del user["bot_description"]
        self.users[user["id"]] = user
        token = self.add_token(user["id"])
        if is_bot and self.bot_user_id is None:
            self.bot_user_id = user["id"]
        return dict(user), token

    def add_token(self, user_id: str) -> str:
        token = new_id()
        self.tokens[token] = user_id
        return token

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

    def create_team(self, name: str, display_name: str | None = None, *,
                    open_invite: bool = False) -> dict[str, Any]:
        if any(t["name"] == name for t in self.teams.values()):
            raise ValueError(f"team {name!r} exists")
        now = self.now_ms()
        team = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "display_name": display_name or name.capitalize(),
            "name": name,
            "description": "",
            "email": "",
            "type": "O" if open_invite else "I",
            "company_name": "",
            "allowed_domains": "",
            "invite_id": "",
            "allow_open_invite": open_invite,
            "scheme_id": None,
            "group_constrained": None,
            "policy_id": None,
            "cloud_limits_archived": False,
        }
        self.teams[team["id"]] = team
        self.team_members[team["id"]] = {}
        return dict(team)

    def add_team_member(self, team_id: str, user_id: str) -> dict[str, Any]:
        self._require_team(team_id)
        self._require_user(user_id)
        members = self.team_members[team_id]
        if user_id not in members:
            members[user_id] = {
                "team_id": team_id,
                "user_id": user_id,
                "roles": "team_user",
                "delete_at": 0,
                "scheme_guest": False,
                "scheme_user": True,
                "scheme_admin": False,
                "explicit_roles": "",
            }
            self._publish("added_to_team", {"team_id": team_id, "user_id": user_id}, user_id=user_id)
        return dict(members[user_id])

    def remove_team_member(self, team_id: str, user_id: str) -> None:
        self.team_members.get(team_id, {}).pop(user_id, None)
        for ch in self.channels.values():
            if ch["team_id"] == team_id:
                self.channel_members[ch["id"]].pop(user_id, None)

    def create_channel(self, team_id: str, name: str, type: str = "O", *, display_name: str | None = None,
                       creator_id: str | None = None, header: str = "", purpose: str = "") -> dict[str, Any]:
        """A team channel; the creator (when given) becomes a member. Raises ApiFailure like the API."""
        self._require_team(team_id)
        if type not in ("O", "P"):
            raise ApiFailure(400, "model.channel.is_valid.type.app_error")
        disp = display_name if display_name is not None else name
        self._validate_channel_fields(name, disp, header, purpose)
        if any(c["team_id"] == team_id and c["name"] == name for c in self.channels.values()):
            raise ApiFailure(400, "store.sql_channel.save_channel.exists.app_error")
        channel = self._new_channel(team_id, name, disp, type, creator_id or "", header, purpose)
        if creator_id:
            self._add_member_row(channel["id"], creator_id, admin=True)
        return dict(channel)

    def add_channel_member(self, channel_id: str, user_id: str, *, actor_id: str | None = None) -> dict[str, Any]:
        """Add a member as the API would (events and, with ``actor_id``, a system post)."""
        ch = self._require_channel(channel_id)
        self._require_user(user_id)
        return self._add_channel_member(ch, user_id, actor_id or user_id, system_post=actor_id is not None)

    def remove_channel_member(self, channel_id: str, user_id: str) -> None:
        ch = self._require_channel(channel_id)
        self._remove_channel_member(ch, user_id, user_id, system_post=False)

    def direct_channel(self, user_a: str, user_b: str) -> dict[str, Any]:
        """Get or create the DM channel of two users."""
        return dict(self._direct_channel(user_a, user_b, creator_id=user_a)[0])

    def create_post(self, user_id: str, channel_id: str, message: str, *, root_id: str = "",
                    props: dict[str, Any] | None = None, create_at: int | None = None,
                    file_ids: list[str] | None = None) -> dict[str, Any]:
        """Create a post as ``user_id`` (no membership check), publishing ``posted``."""
        ch = self._require_channel(channel_id)
        post = self._create_post(self.users[user_id], ch, {
            "message": message, "root_id": root_id, "props": props or {}, "file_ids": file_ids or [],
        }, create_at=create_at)
        return self.post_json(post)

    # ---------------------------------------------------------------------------- read helpers

    def user_by_username(self, username: str) -> dict[str, Any] | None:
        username = username.lower().lstrip("@")
        return next((u for u in self.users.values() if u["username"] == username), None)

    def team_by_name(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.teams.values() if t["name"] == name), None)

    def channel_by_name(self, team_id: str, name: str) -> dict[str, Any] | None:
        return next((c for c in self.channels.values() if c["team_id"] == team_id and c["name"] == name), None)

    def get_channel(self, channel_id: str) -> dict[str, Any] | None:
        return self.channels.get(channel_id)

    def members_of(self, channel_id: str) -> list[str]:
        return list(self.channel_members.get(channel_id, {}))

    def get_post(self, post_id: str) -> dict[str, Any] | None:
        """The post as the API shows it (also deleted ones, with ``delete_at``); None if unknown."""
        post = self._posts.get(post_id)
        return self.post_json(post) if post else None

    def all_posts(self, channel_id: str | None = None, *, include_deleted: bool = False,
                  include_system: bool = True) -> list[dict[str, Any]]:
        """Posts oldest first (edit-history rows never included)."""
        out = []
        for p in sorted(self._posts.values(), key=lambda p: p["create_at"]):
            if p["original_id"]:
                continue
            if channel_id is not None and p["channel_id"] != channel_id:
                continue
            if p["delete_at"] and not include_deleted:
                continue
            if not include_system and p["type"].startswith("system_"):
                continue
            out.append(self.post_json(p))
        return out

    def reactions_of(self, post_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._reactions.get(post_id, [])]

    def file_content(self, file_id: str) -> bytes | None:
        return self._file_content.get(file_id)

    def file_info(self, file_id: str) -> dict[str, Any] | None:
        info = self._files.get(file_id)
        return dict(info) if info else None

    def count_requests(self, method: str, path_regex: str, status: int | None = None) -> int:
        rx = re.compile(path_regex)
        return sum(1 for m, p, s in self.requests
                   if method in ("*", m) and rx.search(p) and (status is None or s == status))

    # ---------------------------------------------------------------------------- fault injection

    def fail_next(self, method: str, path_regex: str, status: int, times: int | None = 1,
                  headers: dict[str, str] | None = None, body: Any = None, *, user: str | None = None,
                  after_effect: bool = False) -> FaultRule:
        """The next ``times`` matching REST requests (None: all until cleared) get ``status``.

        ``path_regex`` is searched in the full path (``/api/v4/posts``); ``method`` may be "*".
        ``user`` (id or username) limits the fault to that caller. With ``after_effect`` the
        request is applied first and only the response is replaced (a lost response).
        A 429 gets the real rate limiter's headers and text body unless overridden; ``body`` a
        dict replaces the error JSON, a str is sent as text/plain.
        """
        rule = FaultRule("fail", method.upper(), re.compile(path_regex), times, status=status,
                         headers=headers, body=body, user_id=self._user_ref(user), after_effect=after_effect)
        self._faults.append(rule)
        return rule

    def delay(self, method: str, path_regex: str, seconds: float, times: int | None = 1, *,
              user: str | None = None) -> FaultRule:
        """Hold the next ``times`` matching requests for ``seconds`` before handling them."""
        rule = FaultRule("delay", method.upper(), re.compile(path_regex), times, seconds=seconds,
                         user_id=self._user_ref(user))
        self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        self._faults.clear()
        self.refuse_websocket_until = 0.0

    async def drop_sockets(self, user: str | None = None, *, refuse_for: float = 0.0,
                           abrupt: bool = True) -> int:
        """Close open websockets (all, or one user's) without a close frame; returns how many.

        Their connections stay resumable for ``resume_window`` seconds. ``refuse_for`` also
        refuses new upgrades (503) for that many seconds.
        """
        uid = self._user_ref(user)
        if refuse_for:
            self.refuse_websocket_until = max(self.refuse_websocket_until, time.time() + refuse_for)
        dropped = 0
        for sock in list(self._sockets):
            if uid is not None and sock.user_id != uid:
                continue
            self._close_socket(sock, abrupt=abrupt)
            dropped += 1
        await asyncio.sleep(0)
        return dropped

    def forget_connections(self) -> None:
        """Lose the resume buffers of dropped connections (their resume gets a new hello)."""
        for conn in list(self._conns.values()):
            if conn.sock is None:
                del self._conns[conn.id]

    async def restart(self, *, refuse_for: float = 0.0) -> None:
        """Act like a server restart: every socket drops and no connection can be resumed.

        Data (users, channels, posts) is kept.
        """
        await self.drop_sockets(refuse_for=refuse_for)
        self._conns.clear()

    def lose_next_events(self, count: int, user: str | None = None) -> None:
        """The next ``count`` events to a user's connections (default the bot) use up their
        seq and are kept for resume, but never reach the socket (lost in flight)."""
        uid = self._user_ref(user) or self.bot_user_id
        for conn in self._conns.values():
            if conn.user_id == uid:
                conn.lose += count

    async def send_raw(self, text: str, user: str | None = None) -> int:
        """Send an arbitrary text frame (no seq) to every socket of a user (default the bot)."""
        uid = self._user_ref(user) or self.bot_user_id
        n = 0
        for conn in self._conns.values():
            if conn.user_id == uid and conn.sock is not None:
                self._enqueue(conn, "frame", text)
                n += 1
        await asyncio.sleep(0)
        return n

    async def send_event(self, event: str, data: dict[str, Any], broadcast: dict[str, Any] | None = None,
                         user_id: str | None = None) -> int:
        """Send a well-formed event (next seq) to a user's connections (default the bot)."""
        uid = self._user_ref(user_id) or self.bot_user_id
        bc = self._broadcast(**(broadcast or {}))
        n = 0
        for conn in self._conns.values():
            if conn.user_id == uid:
                self._enqueue(conn, "event", {"event": event, "data": data, "broadcast": bc})
                n += 1
        await asyncio.sleep(0)
        return n

    async def redeliver_last(self, event_name: str, user_id: str | None = None) -> dict[str, Any]:
        """Send the most recent ``event_name`` envelope of a user (default the bot) again, new seq."""
        uid = self._user_ref(user_id) or self.bot_user_id
        for entry in reversed(self.ws_log):
            env = entry["envelope"]
            if entry["user_id"] == uid and env.get("event") == event_name:
                await self.send_event(event_name, env["data"], env["broadcast"], uid)
                return env
        raise LookupError(f"no {event_name} event was sent to {uid}")

    def events_for(self, user: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """Envelopes written (or lost) to a user's sockets, oldest first."""
        uid = self._user_ref(user) or self.bot_user_id
        return [e["envelope"] for e in self.ws_log
                if e["user_id"] == uid and (event is None or e["envelope"]["event"] == event)]

    def _user_ref(self, user: str | None) -> str | None:
        if user is None:
            return None
        if user in self.users:
            return user
        u = self.user_by_username(user)
        if u is None:
            raise KeyError(f"unknown user {user!r}")
        return u["id"]

    # ---------------------------------------------------------------------------- JSON views

    def post_json(self, post: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in post.items() if not k.startswith("_")}
        out["props"] = dict(post["props"])
        out["file_ids"] = list(post["file_ids"])
        metadata: dict[str, Any] = {}
        if post["file_ids"]:
            metadata["files"] = [dict(self._files[f]) for f in post["file_ids"] if f in self._files]
        reactions = self._reactions.get(post["id"])
        if reactions:
            metadata["reactions"] = [dict(r) for r in reactions]
        out["metadata"] = metadata
        return out

    # ---------------------------------------------------------------------------- internals: model

    def _require_user(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None or user["delete_at"]:
            raise ApiFailure(404, "app.user.missing_account.const")
        return user

    def _require_team(self, team_id: str) -> dict[str, Any]:
        team = self.teams.get(team_id)
        if team is None:
            raise ApiFailure(404, "app.team.get.find.app_error")
        return team

    def _require_channel(self, channel_id: str) -> dict[str, Any]:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise ApiFailure(404, "app.channel.get.existing.app_error")
        return ch

    def _is_admin(self, user_id: str) -> bool:
        return "system_admin" in self.users[user_id]["roles"].split()

    def _in_team(self, team_id: str, user_id: str) -> bool:
        return user_id in self.team_members.get(team_id, {})

    def _in_channel(self, channel_id: str, user_id: str) -> bool:
        return user_id in self.channel_members.get(channel_id, {})

    def _can_read_channel(self, user_id: str, ch: dict[str, Any]) -> bool:
        if self._is_admin(user_id) or self._in_channel(ch["id"], user_id):
            return True
        return ch["type"] == "O" and self._in_team(ch["team_id"], user_id)

    def _can_write_channel(self, user_id: str, ch: dict[str, Any]) -> bool:
        return self._is_admin(user_id) or self._in_channel(ch["id"], user_id)

    def _validate_channel_fields(self, name: str | None, display_name: str | None, header: str | None,
                                 purpose: str | None) -> None:
        if display_name is not None and not (0 < len(display_name) <= CHANNEL_DISPLAY_NAME_MAX):
            raise ApiFailure(400, "model.channel.is_valid.display_name.app_error")
        if name is not None:
            if not isinstance(name, str) or len(name) > CHANNEL_NAME_MAX or not _CHANNEL_NAME_RE.match(name):
                raise ApiFailure(400, "model.channel.is_valid.2_or_more.app_error")
            parts = name.split("__")
            if len(parts) == 2 and is_valid_id(parts[0]) and is_valid_id(parts[1]):
                raise ApiFailure(400, "model.channel.is_valid.name.app_error")
        if header is not None and len(header) > CHANNEL_HEADER_MAX:
            raise ApiFailure(400, "model.channel.is_valid.header.app_error")
        if purpose is not None and len(purpose) > CHANNEL_PURPOSE_MAX:
            raise ApiFailure(400, "model.channel.is_valid.purpose.app_error")

    def _new_channel(self, team_id: str, name: str, display_name: str, type_: str, creator_id: str,
                     header: str, purpose: str) -> dict[str, Any]:
        now = self.now_ms()
        ch = {
            "id": new_id(),
            "create_at": now,
            "update_at": now,
            "delete_at": 0,
            "team_id": team_id,
            "type": type_,
            "display_name": display_name,
            "name": name,
            "header": header,
            "purpose": purpose,
            "last_post_at": 0,
            "last_root_post_at": 0,
            "total_msg_count": 0,
            "total_msg_count_root": 0,
            "extra_update_at": 0,
            "creator_id": creator_id,
            "scheme_id": None,
            "props": None,
            "group_constrained": None,
            "shared": None,
            "policy_id": None,
        }
        self.channels[ch["id"]] = ch
        self.channel_members[ch["id"]] = {}
        return ch

    def _add_member_row(self, channel_id: str, user_id: str, admin: bool = False) -> dict[str, Any]:
        now = self.now_ms()
        member = {
            "channel_id": channel_id,
            "user_id": user_id,
            "roles": "channel_user channel_admin" if admin else "channel_user",
            "last_viewed_at": 0,
            "msg_count": 0,
            "mention_count": 0,
            "mention_count_root": 0,
            "urgent_mention_count": 0,
            "msg_count_root": 0,
            "notify_props": {"desktop": "default", "email": "default", "ignore_channel_mentions": "default",
                             "mark_unread": "all", "push": "default"},
            "last_update_at": now,
            "scheme_guest": False,
            "scheme_user": True,
            "scheme_admin": admin,
            "explicit_roles": "",
        }
        self.channel_members[channel_id][user_id] = member
        return member

    def _add_channel_member(self, ch: dict[str, Any], user_id: str, actor_id: str,
                            system_post: bool = True) -> dict[str, Any]:
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.add_user_to_channel.type.app_error")
        existing = self.channel_members[ch["id"]].get(user_id)
        if existing is not None:
            return dict(existing)
        if not self._in_team(ch["team_id"], user_id):
            # Real: app.AddUserToChannel checks team membership first; missing -> 404.
            raise ApiFailure(404, "app.team.get_member.missing.app_error")
        member = self._add_member_row(ch["id"], user_id)
        self._publish("user_added", {"team_id": ch["team_id"], "user_id": user_id}, channel_id=ch["id"])
        if system_post and self.system_posts:
            user = self.users[user_id]
            if actor_id == user_id:
                self._system_post(ch, user_id, "system_join_channel", f"@{user['username']} joined the channel.",
                                  {"username": user["username"]})
            else:
                actor = self.users[actor_id]
                self._system_post(ch, actor_id, "system_add_to_channel",
                                  f"@{user['username']} added to the channel by @{actor['username']}.",
                                  {"userId": actor_id, "username": actor["username"],
                                   "addedUserId": user_id, "addedUsername": user["username"]})
        return dict(member)

    def _remove_channel_member(self, ch: dict[str, Any], user_id: str, actor_id: str,
                               system_post: bool = True) -> None:
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.remove_user_from_channel.app_error")
        if user_id not in self.channel_members[ch["id"]]:
            raise ApiFailure(404, "app.channel.get_member.missing.app_error")
        if system_post and self.system_posts:
            user = self.users[user_id]
            if actor_id == user_id:
                self._system_post(ch, user_id, "system_leave_channel", f"@{user['username']} left the channel.",
                                  {"username": user["username"]})
            else:
                actor = self.users[actor_id]
                self._system_post(ch, actor_id, "system_remove_from_channel",
                                  f"@{user['username']} was removed from the channel.",
                                  {"removedUserId": user_id, "removedUsername": user["username"]})
        del self.channel_members[ch["id"]][user_id]
        self._publish("user_removed", {"user_id": user_id, "remover_id": actor_id}, channel_id=ch["id"])
        self._publish("user_removed", {"channel_id": ch["id"], "remover_id": actor_id}, user_id=user_id)

    def _direct_channel(self, a: str, b: str, creator_id: str) -> tuple[dict[str, Any], bool]:
        name = "__".join(sorted((a, b)))
        for ch in self.channels.values():
            if ch["type"] == "D" and ch["name"] == name:
                return ch, False
        ch = self._new_channel("", name, "", "D", "", "", "")
        self._add_member_row(ch["id"], a)
        if b != a:
            self._add_member_row(ch["id"], b)
        for uid, other in ((a, b), (b, a)):
            self._publish("direct_added", {"creator_id": creator_id, "teammate_id": other}, user_id=uid)
        return ch, True

    def _system_post(self, ch: dict[str, Any], user_id: str, type_: str, message: str,
                     props: dict[str, Any]) -> dict[str, Any]:
        return self._create_post(self.users[user_id], ch, {"message": message, "props": props}, type_=type_)

    def _create_post(self, user: dict[str, Any], ch: dict[str, Any], body: dict[str, Any], *,
                     type_: str = "", create_at: int | None = None) -> dict[str, Any]:
        message = body.get("message") or ""
        if not isinstance(message, str):
            raise _bad_body("post")
        if len(message) > MAX_POST_RUNES:
            raise ApiFailure(400, "model.post.is_valid.msg.app_error")
        root_id = body.get("root_id") or ""
        root = None
        if root_id:
            root = self._posts.get(root_id)
            if root is None or root["delete_at"] or root["original_id"]:
                raise ApiFailure(400, "api.post.create_post.root_id.app_error")
            if root["channel_id"] != ch["id"]:
                raise ApiFailure(400, "api.post.create_post.channel_root_id.app_error")
            if root["root_id"]:
                raise ApiFailure(400, "api.post.create_post.root_id.app_error")
        props = body.get("props") or {}
        if not isinstance(props, dict):
            raise _bad_body("post")
        props = dict(props)
        if user["is_bot"]:
            props["from_bot"] = "true"
        now = self.now_ms()
        created = create_at if create_at else now
        file_ids = []
        for fid in body.get("file_ids") or []:
            info = self._files.get(fid)
            # Real: silently drop files of other users/channels, or already attached.
            if (info and info["user_id"] == user["id"] and info["channel_id"] == ch["id"]
                    and not info["post_id"] and fid not in file_ids):
                file_ids.append(fid)
        post = {
            "id": new_id(),
            "create_at": created,
            "update_at": now,
            "edit_at": 0,
            "delete_at": 0,
            "is_pinned": False,
            "user_id": user["id"],
            "channel_id": ch["id"],
            "root_id": root_id,
            "original_id": "",
            "message": message,
            "type": type_,
            "props": props,
            "hashtags": "",
            "file_ids": file_ids,
            "pending_post_id": body.get("pending_post_id") or "",
            "reply_count": 0,
            "last_reply_at": 0,
        }
        for fid in file_ids:
            self._files[fid]["post_id"] = post["id"]
            self._files[fid]["update_at"] = now
        if root is not None:
            root["reply_count"] = self._reply_count(root_id) + 1
            root["last_reply_at"] = created
            root["update_at"] = now
            post["reply_count"] = root["reply_count"]
        self._posts[post["id"]] = post
        ch["last_post_at"] = max(ch["last_post_at"], created)
        ch["total_msg_count"] += 1
        if not root_id:
            ch["last_root_post_at"] = max(ch["last_root_post_at"], created)
            ch["total_msg_count_root"] += 1
        self._publish_posted(post, ch, user)
        return post

    def _reply_count(self, root_id: str) -> int:
        return sum(1 for p in self._posts.values()
                   if p["root_id"] == root_id and not p["delete_at"] and not p["original_id"])

    def _publish_posted(self, post: dict[str, Any], ch: dict[str, Any], sender: dict[str, Any]) -> None:
        members = list(self.channel_members[ch["id"]])
        mentioned: set[str] = set()
        if not post["type"]:
            if ch["type"] == "D":
                mentioned = {m for m in members if m != sender["id"]}
            else:
                names = mentioned_usernames(post["message"])
                mentioned = {m for m in members if m != sender["id"] and self.users[m]["username"] in names}
        if ch["type"] == "D":
            display = "@" + sender["username"]
        else:
            display = ch["display_name"]
        data: dict[str, Any] = {
            "channel_display_name": display,
            "channel_name": ch["name"],
            "channel_type": ch["type"],
            "post": _dumps(self.post_json(post)),
            "sender_name": "@" + sender["username"],
            "set_online": True,
            "team_id": ch["team_id"],
        }
        if post["file_ids"]:
            data["otherFile"] = "true"
        full = sorted(mentioned)

        def data_for(uid: str) -> dict[str, Any]:
            if not mentioned:
                return data
            if self.per_recipient_mentions:
                if uid not in mentioned:
                    return data
                return {**data, "mentions": _dumps([uid])}
            return {**data, "mentions": _dumps(full)}

        self._publish("posted", data, channel_id=ch["id"], data_for=data_for)

    def _edit_post(self, post: dict[str, Any], *, message: str | None = None, props: dict[str, Any] | None = None,
                   is_pinned: bool | None = None) -> dict[str, Any]:
        now = self.now_ms()
        if message is not None and message != post["message"]:
            if len(message) > MAX_POST_RUNES:
                raise ApiFailure(400, "model.post.is_valid.msg.app_error")
            # Real: the old version is kept as a deleted row pointing at the post.
            history = {**post, "id": new_id(), "original_id": post["id"], "delete_at": now, "update_at": now,
                       "props": dict(post["props"]), "file_ids": list(post["file_ids"])}
            self._posts[history["id"]] = history
            post["message"] = message
            post["edit_at"] = now
        if props is not None:
            props = dict(props)
            if self.users[post["user_id"]]["is_bot"]:
                props.setdefault("from_bot", "true")
            post["props"] = props
        if is_pinned is not None:
            post["is_pinned"] = bool(is_pinned)
        post["update_at"] = now
        ch = self.channels[post["channel_id"]]
        ch["last_post_at"] = max(ch["last_post_at"], now)
        self._publish("post_edited", {"post": _dumps(self.post_json(post))}, channel_id=post["channel_id"])
        return post

    def _delete_post(self, post: dict[str, Any]) -> None:
        before = self.post_json(post)  # the event carries the post as read before deleting
        now = self.now_ms()
        post["delete_at"] = now
        post["update_at"] = now
        if not post["root_id"]:
            for reply in self._posts.values():
                if reply["root_id"] == post["id"] and not reply["delete_at"]:
                    reply["delete_at"] = now
                    reply["update_at"] = now
        else:
            root = self._posts.get(post["root_id"])
            if root is not None:
                root["reply_count"] = self._reply_count(root["id"])
                root["update_at"] = now
        for fid in post["file_ids"]:
            if fid in self._files:
                self._files[fid]["delete_at"] = now
        self._publish("post_deleted", {"post": _dumps(before)}, channel_id=post["channel_id"])

    def _reaction_event(self, event: str, reaction: dict[str, Any], post: dict[str, Any]) -> None:
        self._publish(event, {"reaction": _dumps(reaction)}, channel_id=post["channel_id"])

    # ---------------------------------------------------------------------------- internals: events

    @staticmethod
    def _broadcast(user_id: str = "", channel_id: str = "", team_id: str = "", omit_users: Any = None,
                   connection_id: str = "", omit_connection_id: str = "", **_: Any) -> dict[str, Any]:
        return {
            "omit_users": omit_users,
            "user_id": user_id,
            "channel_id": channel_id,
            "team_id": team_id,
            "connection_id": connection_id,
            "omit_connection_id": omit_connection_id,
        }

    def _publish(self, event: str, data: dict[str, Any], *, user_id: str = "", channel_id: str = "",
                 team_id: str = "", omit_users: Iterable[str] = (),
                 data_for: Callable[[str], dict[str, Any]] | None = None) -> None:
        """Queue an event for every connection allowed to see it (also dropped-but-resumable ones)."""
        self._reap()
        omit = set(omit_users)
        bc = self._broadcast(user_id=user_id, channel_id=channel_id, team_id=team_id,
                             omit_users={u: True for u in omit} if omit else None)
        if user_id:
            recipients = {user_id}
        elif channel_id:
            recipients = set(self.channel_members.get(channel_id, {}))
        elif team_id:
            recipients = set(self.team_members.get(team_id, {}))
        else:
            recipients = set(self.users)
        recipients -= omit
        for conn in list(self._conns.values()):
            if conn.user_id in recipients:
                d = data_for(conn.user_id) if data_for else data
                self._enqueue(conn, "event", {"event": event, "data": d, "broadcast": bc})

    def _enqueue(self, conn: _Conn, kind: str, item: Any) -> None:
        if len(conn.queue) >= SEND_QUEUE_SIZE:
            # Real: a full send queue drops the connection; a later resume gets a new id.
            self._conns.pop(conn.id, None)
            if conn.sock is not None:
                self._close_socket(conn.sock, abrupt=True)
            return
        conn.queue.append((kind, item))
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(conn.wake.set)  # a helper called from another thread
        else:
            conn.wake.set()

    def _reap(self) -> None:
        limit = time.monotonic() - self.resume_window
        for conn in list(self._conns.values()):
            if conn.sock is None and conn.inactive_since is not None and conn.inactive_since < limit:
                del self._conns[conn.id]

    def _hello(self, conn: _Conn) -> dict[str, Any]:
        return {
            "event": "hello",
            "data": {"connection_id": conn.id, "server_version": SERVER_VERSION,
                     "server_hostname": "fake-mattermost"},
            "broadcast": self._broadcast(user_id=conn.user_id),
        }

    def _close_socket(self, sock: _Socket, abrupt: bool) -> None:
        self._detach(sock)
        if abrupt and sock.transport is not None and not sock.transport.is_closing():
            sock.transport.abort()
        else:
            self._spawn(sock.ws.close())

    def _detach(self, sock: _Socket) -> None:
        conn = sock.conn
        if conn is not None and conn.sock is sock:
            conn.sock = None
            conn.inactive_since = time.monotonic()
        if sock.writer is not None:
            sock.writer.cancel()
            sock.writer = None

    def _attach_new(self, user_id: str, sock: _Socket) -> _Conn:
        conn = _Conn(new_id(), user_id)
        self._conns[conn.id] = conn
        self._bind(conn, sock, resume_seq=None)
        self._enqueue(conn, "event", self._hello(conn))
        return conn

    def _bind(self, conn: _Conn, sock: _Socket, resume_seq: int | None) -> None:
        conn.sock = sock
        conn.inactive_since = None
        sock.conn = conn
        sock.user_id = conn.user_id
        sock.writer = asyncio.ensure_future(self._writer(conn, sock, resume_seq))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_event(self, conn: _Conn, sock: _Socket, envelope: dict[str, Any]) -> None:
        env = {"event": envelope["event"], "data": envelope["data"], "broadcast": envelope["broadcast"],
               "seq": conn.next_seq}
        conn.next_seq += 1
        text = _dumps(env)
        conn.dead.append((env["seq"], text, env))
        lost = conn.lose > 0
        if lost:
            conn.lose -= 1
        self.ws_log.append({"user_id": conn.user_id, "connection_id": conn.id, "envelope": env,
                            "delivered": not lost})
        if not lost:
            await sock.ws.send_str(text)

    async def _writer(self, conn: _Conn, sock: _Socket, resume_seq: int | None) -> None:
        try:
            if resume_seq is not None and resume_seq != 0:
                await self._resume(conn, sock, resume_seq)
            while True:
                conn.wake.clear()
                while conn.queue and conn.sock is sock:
                    kind, item = conn.queue.popleft()
                    if kind == "event":
                        await self._write_event(conn, sock, item)
                    else:
                        await sock.ws.send_str(item if isinstance(item, str) else _dumps(item))
                await conn.wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away mid-write; the reader will notice
            return

    async def _resume(self, conn: _Conn, sock: _Socket, seq: int) -> None:
        """The real writePump's start: replay from the dead queue, or declare a loss."""
        index = next((i for i, (s, _, _) in enumerate(conn.dead) if s == seq), None)
        if index is not None:
            conn.next_seq = seq
            for s, text, env in list(conn.dead)[index:]:
                conn.next_seq = s + 1
                self.ws_log.append({"user_id": conn.user_id, "connection_id": conn.id, "envelope": env,
                                    "delivered": True, "replayed": True})
                await sock.ws.send_str(text)
            if self.hello_on_resume:
                await self._write_event(conn, sock, self._hello(conn))
        elif conn.dead and conn.dead[-1][0] != seq - 1:
            old = conn.id
            conn.dead.clear()
            conn.id = new_id()
            self._conns.pop(old, None)
            self._conns[conn.id] = conn
            conn.next_seq = 0
            await self._write_event(conn, sock, self._hello(conn))
        else:
            conn.next_seq = seq
            if self.hello_on_resume:
                await self._write_event(conn, sock, self._hello(conn))

    async def _auth_timeout(self, sock: _Socket) -> None:
        await asyncio.sleep(self.ws_auth_timeout)
        if sock.conn is None:
            await sock.ws.close()

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if time.time() < self.refuse_websocket_until:
            body = error_body(503, "app.fake.injected_fault.app_error", "Websocket upgrades refused.")
            self._record(request, 503, None, None)
            resp = web.json_response(body, status=503)
            resp.force_close()
            return resp
        token = self._token_from(request)
        user_id = self.tokens.get(token) if token else None
        query = dict(request.query)
        conn_id = query.get("connection_id", "")
        if conn_id and user_id and not is_valid_id(conn_id):
            self._record(request, 400, user_id, None)
            return web.Response(status=400, text="invalid connection id")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        transport = request.transport
        await ws.prepare(request)
        self._record(request, 101, user_id, None)
        sock = _Socket(ws, transport)
        self._sockets.add(sock)
        auth_timer: asyncio.Task[None] | None = None
        try:
            if user_id:
                self._reap()
                conn = self._conns.get(conn_id) if conn_id else None
                if conn is not None and conn.user_id == user_id and conn.sock is None:
                    seq_text = query.get("sequence_number", "")
                    if not seq_text.isdigit():
                        await ws.close()  # real: connection_id without a valid sequence_number
                        return ws
                    conn.reuse_count += 1
                    self._bind(conn, sock, resume_seq=int(seq_text))
                else:
                    self._attach_new(user_id, sock)
            else:
                auth_timer = asyncio.ensure_future(self._auth_timeout(sock))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    break  # real: a frame that does not decode ends the connection
                if not isinstance(req, dict):
                    break
                await self._ws_request(sock, req)
                if sock.ws.closed:
                    break
        finally:
            if auth_timer is not None:
                auth_timer.cancel()
            self._detach(sock)
            self._sockets.discard(sock)
        return ws

    async def _ws_request(self, sock: _Socket, req: dict[str, Any]) -> None:
        action = req.get("action")
        seq = req.get("seq")

        async def reply(obj: dict[str, Any]) -> None:
            if sock.conn is not None:
                self._enqueue(sock.conn, "frame", obj)
            else:
                await sock.ws.send_str(_dumps(obj))

        def fail(status: int, error_id: str) -> dict[str, Any]:
            return {"status": "FAIL", "seq_reply": seq if isinstance(seq, int) else 0,
                    "error": error_body(status, error_id, request_id="")}

        if not action:
            await reply(fail(400, "api.web_socket_router.no_action.app_error"))
        elif not isinstance(seq, int) or seq <= 0:
            await reply(fail(400, "api.web_socket_router.bad_seq.app_error"))
        elif action == "authentication_challenge":
            if sock.conn is not None:
                return  # real: ignored when already authenticated (no seq_reply)
            data = req.get("data") or {}
            token = data.get("token") if isinstance(data, dict) else None
            uid = self.tokens.get(token) if isinstance(token, str) else None
            if uid is None:
                await sock.ws.close()
                return
            # Real order: registering queues the hello, then the OK reply follows it.
            conn = self._attach_new(uid, sock)
            self._enqueue(conn, "frame", {"status": "OK", "seq_reply": seq})
        elif sock.conn is None:
            await reply(fail(401, "api.web_socket_router.not_authenticated.app_error"))
        elif action == "ping":
            await reply({"status": "OK", "seq_reply": seq,
                         "data": {"text": "pong", "version": SERVER_VERSION, "server_time": self.now_ms(),
                                  "node_id": ""}})
        elif action == "user_typing":
            await reply({"status": "OK", "seq_reply": seq})
        else:
            await reply(fail(501, "api.web_socket_router.bad_action.app_error"))

    # ---------------------------------------------------------------------------- REST dispatch

    @staticmethod
    def _token_from(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if len(header) > 7 and header[:6].upper() == "BEARER":
            return header[7:].strip()
        if len(header) > 6 and header[:5].lower() == "token":
            return header[6:].strip()
        cookie = request.cookies.get("MMAUTHTOKEN")
        return cookie or None

    def _record(self, request: web.Request, status: int, user_id: str | None, body: Any) -> None:
        self.requests.append((request.method, request.path, status))
        self.request_log.append(RequestRecord(request.method, request.path, status, user_id,
                                              dict(request.query), body))

    def _error_response(self, status: int, error_id: str, request_id: str, **params: Any) -> web.Response:
        return web.json_response(error_body(status, error_id, request_id=request_id, **params), status=status,
                                 headers=self._std_headers(request_id))

    @staticmethod
    def _std_headers(request_id: str) -> dict[str, str]:
        return {"X-Request-Id": request_id, "X-Version-Id": SERVER_VERSION}

    def _fault_response(self, rule: FaultRule, request_id: str) -> web.Response:
        headers = self._std_headers(request_id)
        if rule.status == 429:
            headers.update({"Retry-After": "1", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": "1"})
        if rule.headers:
            headers.update(rule.headers)
        if isinstance(rule.body, (str, bytes)):
            return web.Response(status=rule.status, body=rule.body if isinstance(rule.body, bytes) else
                                rule.body.encode(), headers=headers, content_type="text/plain")
        if rule.body is not None:
            return web.json_response(rule.body, status=rule.status, headers=headers)
        if rule.status == 429:
            return web.Response(status=429, text="limit exceeded\n", headers=headers, content_type="text/plain")
        return web.json_response(error_body(rule.status, "app.fake.injected_fault.app_error",
                                            request_id=request_id), status=rule.status, headers=headers)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path.rstrip("/") == API + "/websocket":
            return await self._ws_handler(request)
        request_id = new_id()
        token = self._token_from(request)
        user_id = self.tokens.get(token) if token else None
        body_for_log: Any = None
        try:
            response, body_for_log = await self._handle_rest(request, request_id, user_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the fake should be loud, not a hang
            traceback.print_exc()
            response = web.json_response(error_body(500, "app.fake.internal.app_error", f"fake bug: {exc!r}",
                                                    request_id), status=500)
        self._record(request, response.status, user_id, body_for_log)
        return response

    async def _handle_rest(self, request: web.Request, request_id: str,
                           user_id: str | None) -> tuple[web.StreamResponse, Any]:
        method, path = request.method, request.path
        claim = await self._claim_pending(request) if method == "POST" and path == API + "/posts" else None
        try:
            response, body = await self._handle_rest_claimed(request, request_id, user_id)
        finally:
            entry = self._pending_ids.get(claim) if claim else None
            if entry is not None and not entry[0] and entry[2] is request:
                del self._pending_ids[claim]  # real: a failed create lets the client retry
        return response, body

    async def _claim_pending(self, request: web.Request) -> str | None:
        """Real: the pending id is claimed as the request comes in, before the post is saved."""
        try:
            body = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            return None
        pending = body.get("pending_post_id") if isinstance(body, dict) else None
        if not isinstance(pending, str) or not pending:
            return None
        seen = self._pending_ids.get(pending)
        if seen is not None and time.monotonic() - seen[1] < PENDING_POST_ID_TTL:
            return None  # someone else's claim, or a post already made
        self._pending_ids[pending] = ("", time.monotonic(), request)
        return pending

    async def _handle_rest_claimed(self, request: web.Request, request_id: str,
                                   user_id: str | None) -> tuple[web.StreamResponse, Any]:
        method, path = request.method, request.path
        for rule in self._faults:
            if rule.kind == "delay" and rule.matches(method, path, user_id):
                rule.take()
                if request.can_read_body and not request.content_type.startswith("multipart/"):
                    # Real: the request is in and gets handled even if its client is gone by
                    # then (a slow server, not a lost request); aiohttp fails a body read after
                    # the client hung up, so read it now.
                    await request.read()
                await asyncio.sleep(rule.seconds)
                break
        fail = next((r for r in self._faults if r.kind == "fail" and r.matches(method, path, user_id)), None)
        if fail is not None:
            fail.take()
            if not fail.after_effect:
                return self._fault_response(fail, request_id), None
        ctx = _Ctx(self, request, request_id, user_id)
        try:
            response = await self._route(ctx, method, path)
        except ApiFailure as exc:
            response = self._error_response(exc.status, exc.error_id, request_id, **exc.params)
        if fail is not None and fail.after_effect:
            return self._fault_response(fail, request_id), ctx.body_value
        return response, ctx.body_value

    async def _route(self, ctx: "_Ctx", method: str, path: str) -> web.StreamResponse:
        if not path.startswith(API + "/"):
            raise ApiFailure(404, "api.context.404.app_error")
        sub = path[len(API):]
        path_matched = False
        for route_method, rx, handler, auth in self._routes:
            m = rx.fullmatch(sub)
            if m is None:
                continue
            path_matched = True
            if route_method != method:
                continue
            if auth and not ctx.user_id:
                raise ApiFailure(401, "api.context.session_expired.app_error")
            result = await handler(ctx, **m.groupdict())
            if isinstance(result, web.StreamResponse):
                result.headers.update(self._std_headers(ctx.request_id))
                return result
            status, obj = result
            return web.json_response(obj, status=status, headers=self._std_headers(ctx.request_id),
                                     dumps=_dumps)
        if path_matched:
            raise ApiFailure(405, "api.context.405.app_error")
        raise ApiFailure(404, "api.context.404.app_error")

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], _Handler, bool]]:
        s = r"(?P<{}>[^/]+)"
        uid, tid, cid, pid, fid = s.format("user_id"), s.format("team_id"), s.format("channel_id"), \
            s.format("post_id"), s.format("file_id")
        table: list[tuple[str, str, _Handler, bool]] = [
            ("GET", "/system/ping", self.h_ping, False),
            ("GET", "/users/me", self.h_get_me, True),
            ("POST", "/users/ids", self.h_users_by_ids, True),
            ("POST", "/users/usernames", self.h_users_by_usernames, True),
            ("GET", r"/users/username/(?P<username>[^/]+)", self.h_user_by_username, True),
            ("GET", f"/users/{uid}/teams", self.h_user_teams, True),
            ("GET", f"/users/{uid}/teams/{tid}/channels", self.h_user_team_channels, True),
            ("GET", f"/users/{uid}/channels", self.h_user_channels, True),
            ("DELETE", f"/users/{uid}/posts/{pid}/reactions/(?P<emoji>[^/]+)", self.h_delete_reaction, True),
            ("GET", f"/users/{uid}", self.h_get_user, True),
            ("GET", r"/teams/name/(?P<name>[^/]+)", self.h_team_by_name, True),
            ("GET", f"/teams/{tid}/members/{uid}", self.h_team_member, True),
            ("GET", f"/teams/{tid}/channels/name/(?P<name>[^/]+)", self.h_channel_by_name, True),
            ("GET", f"/teams/{tid}", self.h_get_team, True),
            ("POST", "/channels", self.h_create_channel, True),
            ("POST", "/channels/direct", self.h_create_direct, True),
            ("GET", f"/channels/{cid}/members/{uid}", self.h_channel_member, True),
            ("DELETE", f"/channels/{cid}/members/{uid}", self.h_remove_channel_member, True),
            ("GET", f"/channels/{cid}/members", self.h_channel_members, True),
            ("POST", f"/channels/{cid}/members", self.h_add_channel_member, True),
            ("PUT", f"/channels/{cid}/patch", self.h_patch_channel, True),
            ("GET", f"/channels/{cid}/posts", self.h_channel_posts, True),
            ("GET", f"/channels/{cid}/pinned", self.h_channel_pinned, True),
            ("GET", f"/channels/{cid}", self.h_get_channel, True),
            ("POST", "/posts", self.h_create_post, True),
            ("GET", f"/posts/{pid}/thread", self.h_thread, True),
            ("GET", f"/posts/{pid}/reactions", self.h_post_reactions, True),
            ("PUT", f"/posts/{pid}/patch", self.h_patch_post, True),
            ("POST", f"/posts/{pid}/pin", self.h_pin, True),
            ("POST", f"/posts/{pid}/unpin", self.h_unpin, True),
            ("GET", f"/posts/{pid}", self.h_get_post, True),
            ("PUT", f"/posts/{pid}", self.h_update_post, True),
            ("DELETE", f"/posts/{pid}", self.h_delete_post, True),
            ("POST", "/reactions", self.h_save_reaction, True),
            ("POST", "/files", self.h_upload, True),
            ("GET", f"/files/{fid}/info", self.h_file_info, True),
            ("GET", f"/files/{fid}", self.h_file, True),
        ]
        return [(m, re.compile(p), h, a) for m, p, h, a in table]

    # ---------------------------------------------------------------------------- REST handlers

    async def h_ping(self, ctx: "_Ctx") -> tuple[int, Any]:
        return 200, {"status": "OK", "ActiveSearchBackend": "database", "version": SERVER_VERSION}

    async def h_get_me(self, ctx: "_Ctx") -> tuple[int, Any]:
        return 200, dict(self.users[ctx.user_id])

    async def h_get_user(self, ctx: "_Ctx", user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        return 200, dict(self._require_user(uid))

    async def h_user_by_username(self, ctx: "_Ctx", username: str) -> tuple[int, Any]:
        if not _USERNAME_RE.match(username.lower()):
            raise _bad_url("username")
        user = self.user_by_username(username)
        if user is None:
            raise ApiFailure(404, "app.user.get_by_username.app_error")
        return 200, dict(user)

    async def h_users_by_ids(self, ctx: "_Ctx") -> tuple[int, Any]:
        ids = await ctx.json("user_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _bad_body("user_ids")
        return 200, [dict(self.users[i]) for i in dict.fromkeys(ids) if i in self.users]

    async def h_users_by_usernames(self, ctx: "_Ctx") -> tuple[int, Any]:
        names = await ctx.json("usernames")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _bad_body("usernames")
        out = []
        for n in dict.fromkeys(names):
            u = self.user_by_username(n)
            if u is not None:
                out.append(dict(u))
        return 200, out

    async def h_user_teams(self, ctx: "_Ctx", user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise _forbidden()
        return 200, [dict(t) for t in self.teams.values() if self._in_team(t["id"], uid)]

    async def h_user_team_channels(self, ctx: "_Ctx", user_id: str, team_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        tid = ctx.id_param(team_id, "team_id")
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise _forbidden()
        if not self._in_team(tid, ctx.user_id) and not self._is_admin(ctx.user_id):
            raise _forbidden()
        out = [dict(c) for c in self.channels.values()
               if (c["team_id"] == tid or c["team_id"] == "") and self._in_channel(c["id"], uid)]
        if not out:
            # Real: an empty result is a 404, not [].
            raise ApiFailure(404, "app.channel.get_channels.not_found.app_error")
        return 200, out

    async def h_user_channels(self, ctx: "_Ctx", user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise _forbidden()
        return 200, [dict(c) for c in self.channels.values() if self._in_channel(c["id"], uid)]

    async def h_get_team(self, ctx: "_Ctx", team_id: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        team = self._require_team(tid)
        self._check_team_visible(ctx.user_id, team)
        return 200, dict(team)

    async def h_team_by_name(self, ctx: "_Ctx", name: str) -> tuple[int, Any]:
        team = self.team_by_name(name)
        if team is None:
            raise ApiFailure(404, "app.team.get_by_name.missing.app_error")
        self._check_team_visible(ctx.user_id, team)
        return 200, dict(team)

    def _check_team_visible(self, user_id: str, team: dict[str, Any]) -> None:
        if (team["type"] != "O" or not team["allow_open_invite"]) and not self._in_team(team["id"], user_id) \
                and not self._is_admin(user_id):
            raise _forbidden()

    async def h_team_member(self, ctx: "_Ctx", team_id: str, user_id: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        uid = ctx.user_param(user_id)
        if not self._in_team(tid, ctx.user_id) and not self._is_admin(ctx.user_id):
            raise _forbidden()
        member = self.team_members.get(tid, {}).get(uid)
        if member is None:
            raise ApiFailure(404, "app.team.get_member.missing.app_error")
        return 200, dict(member)

    async def h_get_channel(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise _forbidden()
        return 200, dict(ch)

    async def h_channel_by_name(self, ctx: "_Ctx", team_id: str, name: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        ch = self.channel_by_name(tid, name)
        if ch is None:
            raise ApiFailure(404, "app.channel.get_by_name.missing.app_error")
        if not self._can_read_channel(ctx.user_id, ch):
            if ch["type"] == "O":
                raise _forbidden()
            # Real: a private channel you cannot read looks like a missing one.
            raise ApiFailure(404, "app.channel.get_by_name.missing.app_error")
        return 200, dict(ch)

    async def h_create_channel(self, ctx: "_Ctx") -> tuple[int, Any]:
        body = await ctx.json("channel")
        if not isinstance(body, dict):
            raise _bad_body("channel")
        team_id = body.get("team_id") or ""
        type_ = body.get("type") or "O"
        if type_ in ("D", "G"):
            raise ApiFailure(400, "api.channel.create_channel.direct_channel.app_error")
        if type_ not in ("O", "P"):
            raise ApiFailure(400, "model.channel.is_valid.type.app_error")
        if not is_valid_id(team_id) or team_id not in self.teams or \
                (not self._in_team(team_id, ctx.user_id) and not self._is_admin(ctx.user_id)):
            raise _forbidden()
        name = body.get("name")
        display = body.get("display_name")
        header = body.get("header") or ""
        purpose = body.get("purpose") or ""
        if not isinstance(name, str):
            raise ApiFailure(400, "model.channel.is_valid.2_or_more.app_error")
        if not isinstance(display, str):
            raise ApiFailure(400, "model.channel.is_valid.display_name.app_error")
        ch = self.create_channel(team_id, name, type_, display_name=display, creator_id=ctx.user_id,
                                 header=header, purpose=purpose)
        self._publish("channel_created", {"channel_id": ch["id"], "team_id": team_id}, user_id=ctx.user_id)
        return 201, ch

    async def h_create_direct(self, ctx: "_Ctx") -> tuple[int, Any]:
        ids = await ctx.json("user_ids")
        if not isinstance(ids, list) or len(ids) != 2 or not all(is_valid_id(i) for i in ids):
            raise _bad_body("user_ids")
        if ctx.user_id not in ids and not self._is_admin(ctx.user_id):
            raise _forbidden()
        for i in ids:
            if i not in self.users:
                raise ApiFailure(400, "api.channel.create_direct_channel.invalid_user.app_error")
        ch, _created = self._direct_channel(ids[0], ids[1], ctx.user_id)
        return 201, dict(ch)

    async def h_channel_member(self, ctx: "_Ctx", channel_id: str, user_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        uid = ctx.user_param(user_id)
        if not self._can_read_channel(ctx.user_id, ch):
            raise _forbidden()
        member = self.channel_members[ch["id"]].get(uid)
        if member is None:
            raise ApiFailure(404, "app.channel.get_member.missing.app_error")
        return 200, dict(member)

    async def h_channel_members(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise _forbidden()
        page, per_page = ctx.paging()
        members = list(self.channel_members[ch["id"]].values())
        return 200, [dict(m) for m in members[page * per_page:(page + 1) * per_page]]

    async def h_add_channel_member(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        body = await ctx.json("user_id")
        if not isinstance(body, dict):
            raise _bad_body("user_id")
        many = "user_ids" in body and "user_id" not in body
        ids = body.get("user_ids") if many else [body.get("user_id")]
        if not isinstance(ids, list) or not ids or not all(is_valid_id(i) for i in ids):
            raise _bad_body("user_id")
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.add_user_to_channel.type.app_error")
        for uid in ids:
            self_join = uid == ctx.user_id
            if self._is_admin(ctx.user_id) or self._in_channel(ch["id"], ctx.user_id):
                continue
            if self_join and ch["type"] == "O" and self._in_team(ch["team_id"], ctx.user_id):
                continue
            raise _forbidden()
        out = []
        for uid in ids:
            self._require_user(uid)
            out.append(self._add_channel_member(ch, uid, ctx.user_id))
        return 201, (out if many else out[0])

    async def h_remove_channel_member(self, ctx: "_Ctx", channel_id: str, user_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        uid = ctx.user_param(user_id)
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.remove_user_from_channel.app_error")
        if uid != ctx.user_id and not self._can_write_channel(ctx.user_id, ch):
            raise _forbidden()
        self._remove_channel_member(ch, uid, ctx.user_id)
        return 200, {"status": "OK"}

    async def h_patch_channel(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        patch = await ctx.json("channel")
        if not isinstance(patch, dict):
            raise _bad_body("channel")
        if not self._can_write_channel(ctx.user_id, ch):
            raise _forbidden()
        fields = {k: patch[k] for k in ("name", "display_name", "header", "purpose")
                  if k in patch and patch[k] is not None}
        if any(not isinstance(v, str) for v in fields.values()):
            raise _bad_body("channel")
        if ch["type"] in ("D", "G"):
            fields.pop("name", None)
            fields.pop("display_name", None)
        self._validate_channel_fields(fields.get("name"), fields.get("display_name"), fields.get("header"),
                                      fields.get("purpose"))
        if "name" in fields and fields["name"] != ch["name"] and self.channel_by_name(ch["team_id"], fields["name"]):
            raise ApiFailure(400, "store.sql_channel.save_channel.exists.app_error")
        old = dict(ch)
        ch.update(fields)
        ch["update_at"] = self.now_ms()
        self._publish("channel_updated", {"channel": _dumps(ch)}, channel_id=ch["id"])
        if self.system_posts:
            actor = self.users[ctx.user_id]["username"]
            if ch["header"] != old["header"]:
                msg = (f"@{actor} updated the channel header from: {old['header']} to: {ch['header']}"
                       if old["header"] else f"@{actor} updated the channel header to: {ch['header']}")
                if not ch["header"]:
                    msg = f"@{actor} removed the channel header (was: {old['header']})"
                self._system_post(ch, ctx.user_id, "system_header_change", msg,
                                  {"username": actor, "old_header": old["header"], "new_header": ch["header"]})
            if ch["display_name"] != old["display_name"]:
                self._system_post(ch, ctx.user_id, "system_displayname_change",
                                  f"@{actor} updated the channel display name from: {old['display_name']} "
                                  f"to: {ch['display_name']}",
                                  {"username": actor, "old_displayname": old["display_name"],
                                   "new_displayname": ch["display_name"]})
            if ch["purpose"] != old["purpose"]:
                self._system_post(ch, ctx.user_id, "system_purpose_change",
                                  f"@{actor} updated the channel purpose to: {ch['purpose']}",
                                  {"username": actor, "old_purpose": old["purpose"], "new_purpose": ch["purpose"]})
        return 200, dict(ch)

    def _post_list(self, posts: list[dict[str, Any]], extra: Iterable[dict[str, Any]] = (),
                   prev_post_id: str = "", next_post_id: str = "") -> dict[str, Any]:
        out = {p["id"]: self.post_json(p) for p in extra}
        for p in posts:
            out[p["id"]] = self.post_json(p)
        return {"order": [p["id"] for p in posts], "posts": out, "next_post_id": next_post_id,
                "prev_post_id": prev_post_id, "has_next": False, "first_inaccessible_post_time": 0}

    def _roots_of(self, posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        have = {p["id"] for p in posts}
        roots = []
        for p in posts:
            r = self._posts.get(p["root_id"]) if p["root_id"] else None
            if r is not None and r["id"] not in have and not r["delete_at"]:
                have.add(r["id"])
                roots.append(r)
        return roots

    async def h_channel_posts(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise _forbidden()
        q = ctx.request.query
        since = q.get("since", "")
        if since:
            try:
                since_ms = int(since)
            except ValueError:
                raise _bad_url("since") from None
            if since_ms > 0:
                # Real: update_at > since, deleted posts and edit-history rows included, at
                # most 1000 rows, plus the roots of the replies found.
                hits = [p for p in self._posts.values() if p["channel_id"] == ch["id"] and p["update_at"] > since_ms]
                hits.sort(key=lambda p: p["update_at"])
                hits = hits[:1000]
                have = {p["id"] for p in hits}
                for p in list(hits):
                    r = self._posts.get(p["root_id"]) if p["root_id"] else None
                    if r is not None and r["id"] not in have:
                        have.add(r["id"])
                        hits.append(r)
                hits.sort(key=lambda p: p["create_at"], reverse=True)
                return 200, self._post_list(hits)
        page, per_page = ctx.paging()
        live = sorted((p for p in self._posts.values()
                       if p["channel_id"] == ch["id"] and not p["delete_at"] and not p["original_id"]),
                      key=lambda p: p["create_at"], reverse=True)  # newest first
        after, before = q.get("after", ""), q.get("before", "")
        if after:
            anchor = self._posts.get(after)
            if anchor is None:
                return 200, self._post_list([])
            newer = [p for p in live if p["create_at"] > anchor["create_at"]][::-1]  # oldest first
            chunk = newer[page * per_page:(page + 1) * per_page]
            posts = chunk[::-1]
        elif before:
            anchor = self._posts.get(before)
            if anchor is None:
                return 200, self._post_list([])
            older = [p for p in live if p["create_at"] < anchor["create_at"]]
            posts = older[page * per_page:(page + 1) * per_page]
        else:
            posts = live[page * per_page:(page + 1) * per_page]
        prev_id = next_id = ""
        if posts:
            idx_old = live.index(posts[-1])
            idx_new = live.index(posts[0])
            prev_id = live[idx_old + 1]["id"] if idx_old + 1 < len(live) else ""
            next_id = live[idx_new - 1]["id"] if idx_new > 0 else ""
        return 200, self._post_list(posts, self._roots_of(posts), prev_id, next_id)

    async def h_channel_pinned(self, ctx: "_Ctx", channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise _forbidden()
        pinned = sorted((p for p in self._posts.values() if p["channel_id"] == ch["id"] and p["is_pinned"]
                         and not p["delete_at"] and not p["original_id"]),
                        key=lambda p: p["create_at"], reverse=True)
        return 200, self._post_list(pinned)

    async def h_create_post(self, ctx: "_Ctx") -> tuple[int, Any]:
        body = await ctx.json("post")
        if not isinstance(body, dict):
            raise _bad_body("post")
        channel_id = body.get("channel_id")
        ch = self.channels.get(channel_id) if isinstance(channel_id, str) else None
        if ch is None or not self._can_write_channel(ctx.user_id, ch):
            raise _forbidden()
        type_ = body.get("type") or ""
        if type_.startswith("system_"):
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="post.type")
        pending = body.get("pending_post_id") or ""
        if isinstance(pending, str) and pending:
            # Real (app/post.go deduplicateCreatePost): a pending id seen in the last 30 s (one
            # cache for the whole server) answers the post it made, or 500 while the first
            # request is still saving; after 30 s it is forgotten.
            seen = self._pending_ids.get(pending)
            if seen is not None and time.monotonic() - seen[1] < PENDING_POST_ID_TTL:
                if not seen[0] and seen[2] is not ctx.request:
                    raise ApiFailure(500, "api.post.deduplicate_create_post.pending")
                p = self._posts.get(seen[0])
                if p is not None and not p["delete_at"]:
                    return 201, self.post_json(p)
        create_at = body.get("create_at") if self._is_admin(ctx.user_id) else None
        post = self._create_post(self.users[ctx.user_id], ch, body, type_=type_,
                                 create_at=create_at if isinstance(create_at, int) else None)
        if isinstance(pending, str) and pending:
            self._pending_ids[pending] = (post["id"], time.monotonic(), None)
        return 201, self.post_json(post)

    def _live_post(self, post_id: str) -> dict[str, Any] | None:
        p = self._posts.get(post_id)
        if p is None or p["delete_at"] or p["original_id"]:
            return None
        return p

    def _post_for_change(self, ctx: "_Ctx", post_id: str, own_only: bool = True) -> dict[str, Any]:
        """Mutations check permission first: a missing or deleted post is a 403, not a 404."""
        pid = ctx.id_param(post_id, "post_id")
        p = self._live_post(pid)
        if p is None:
            raise _forbidden()
        ch = self.channels[p["channel_id"]]
        if self._is_admin(ctx.user_id):
            return p
        if not self._in_channel(ch["id"], ctx.user_id):
            raise _forbidden()
        if own_only and p["user_id"] != ctx.user_id:
            raise _forbidden()
        return p

    async def h_get_post(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        p = self._live_post(ctx.id_param(post_id, "post_id"))
        if p is None:
            raise ApiFailure(404, "app.post.get.app_error")
        if not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise _forbidden()
        return 200, self.post_json(p)

    async def h_thread(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        p = self._live_post(ctx.id_param(post_id, "post_id"))
        if p is None:
            raise ApiFailure(404, "app.post.get.app_error")
        if not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise _forbidden()
        root_id = p["root_id"] or p["id"]
        others = sorted((q for q in self._posts.values() if (q["id"] == root_id or q["root_id"] == root_id)
                         and q["id"] != p["id"] and not q["delete_at"] and not q["original_id"]),
                        key=lambda q: q["create_at"], reverse=True)
        return 200, self._post_list([p] + others)  # real: order[0] is the requested post

    async def h_patch_post(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        patch = await ctx.json("post")
        if not isinstance(patch, dict):
            raise _bad_body("post")
        p = self._post_for_change(ctx, post_id)
        message = patch.get("message")
        props = patch.get("props")
        if (message is not None and not isinstance(message, str)) or (props is not None and not isinstance(props, dict)):
            raise _bad_body("post")
        is_pinned = patch.get("is_pinned")
        self._edit_post(p, message=message, props=props,
                        is_pinned=bool(is_pinned) if is_pinned is not None else None)
        return 200, self.post_json(p)

    async def h_update_post(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        body = await ctx.json("post")
        if not isinstance(body, dict):
            raise _bad_body("post")
        if body.get("id") != post_id:
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="id")
        p = self._post_for_change(ctx, post_id)
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise _bad_body("post")
        props = body.get("props") if isinstance(body.get("props"), dict) else None
        is_pinned = body.get("is_pinned")
        self._edit_post(p, message=message if message is not None else p["message"], props=props,
                        is_pinned=bool(is_pinned) if is_pinned is not None else None)
        return 200, self.post_json(p)

    async def h_delete_post(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        p = self._post_for_change(ctx, post_id)
        self._delete_post(p)
        return 200, {"status": "OK"}

    async def _set_pinned(self, ctx: "_Ctx", post_id: str, pinned: bool) -> tuple[int, Any]:
        p = self._post_for_change(ctx, post_id, own_only=False)
        if p["is_pinned"] != pinned:
            self._edit_post(p, is_pinned=pinned)
        return 200, {"status": "OK"}

    async def h_pin(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        return await self._set_pinned(ctx, post_id, True)

    async def h_unpin(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        return await self._set_pinned(ctx, post_id, False)

    async def h_post_reactions(self, ctx: "_Ctx", post_id: str) -> tuple[int, Any]:
        pid = ctx.id_param(post_id, "post_id")
        p = self._posts.get(pid)
        if p is None or not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise _forbidden()
        return 200, [dict(r) for r in self._reactions.get(pid, [])]

    async def h_save_reaction(self, ctx: "_Ctx") -> tuple[int, Any]:
        body = await ctx.json("reaction")
        if not isinstance(body, dict):
            raise _bad_body("reaction")
        user_id, post_id, emoji = body.get("user_id"), body.get("post_id"), body.get("emoji_name")
        if not is_valid_id(user_id) or not is_valid_id(post_id) or not isinstance(emoji, str) \
                or not emoji or len(emoji) > 64 or not _EMOJI_RE.match(emoji):
            raise _bad_body("reaction")
        if user_id != ctx.user_id:
            raise ApiFailure(403, "api.reaction.save_reaction.user_id.app_error")
        p = self._live_post(post_id)
        if p is None or not self._can_write_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise _forbidden()
        now = self.now_ms()
        reactions = self._reactions.setdefault(post_id, [])
        reaction = next((r for r in reactions if r["user_id"] == user_id and r["emoji_name"] == emoji), None)
        if reaction is None:
            reaction = {"user_id": user_id, "post_id": post_id, "emoji_name": emoji, "create_at": now,
                        "update_at": now, "delete_at": 0, "remote_id": "", "channel_id": p["channel_id"]}
            reactions.append(reaction)
        else:
            reaction["update_at"] = now
        p["update_at"] = now
        p["has_reactions"] = True
        # Real: the event is sent on every save, also when the reaction already existed.
        self._reaction_event("reaction_added", reaction, p)
        return 200, dict(reaction)

    async def h_delete_reaction(self, ctx: "_Ctx", user_id: str, post_id: str, emoji: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        pid = ctx.id_param(post_id, "post_id")
        if not _EMOJI_RE.match(emoji) or len(emoji) > 64:
            raise _bad_url("emoji_name")
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise _forbidden()
        p = self._live_post(pid)
        if p is None or not self._can_write_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise _forbidden()
        reactions = self._reactions.get(pid, [])
        found = next((r for r in reactions if r["user_id"] == uid and r["emoji_name"] == emoji), None)
        now = self.now_ms()
        if found is not None:
            reactions.remove(found)
            if not reactions:
                self._reactions.pop(pid, None)
                p.pop("has_reactions", None)
            p["update_at"] = now
            event_reaction = {**found, "update_at": now, "delete_at": now}
        else:
            event_reaction = {"user_id": uid, "post_id": pid, "emoji_name": emoji, "create_at": 0,
                              "update_at": 0, "delete_at": 0, "remote_id": "", "channel_id": p["channel_id"]}
        # Real: reaction_removed is published even when there was nothing to remove.
        self._reaction_event("reaction_removed", event_reaction, p)
        return 200, {"status": "OK"}

    async def h_upload(self, ctx: "_Ctx") -> tuple[int, Any]:
        request = ctx.request
        channel_id = request.query.get("channel_id", "")
        uploads: list[tuple[str, bytes, str | None]] = []
        client_ids: list[str] = []
        if request.content_type.startswith("multipart/"):
            try:
                form = await request.post()
            except Exception:
                raise ApiFailure(400, "api.file.upload_file.read_request.app_error") from None
            channel_id = str(form.get("channel_id") or channel_id)
            client_ids = [str(c) for c in form.getall("client_ids", [])]
            for part in form.getall("files", []):
                if isinstance(part, web.FileField):
                    uploads.append((part.filename or "file", part.file.read(), part.content_type))
        else:
            filename = request.query.get("filename", "")
            data = await request.read()
            if not filename or not data:
                raise ApiFailure(400, "api.file.upload_file.read_request.app_error")
            uploads.append((filename, data, request.content_type))
            if request.query.get("client_id"):
                client_ids = [request.query["client_id"]]
        if not is_valid_id(channel_id):
            raise _bad_url("channel_id")
        ch = self.channels.get(channel_id)
        if ch is None or not self._can_write_channel(ctx.user_id, ch):
            raise _forbidden()
        if not uploads:
            raise ApiFailure(400, "api.file.upload_file.read_request.app_error")
        infos = []
        for name, data, _ctype in uploads:
            now = self.now_ms()
            ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
            info = {
                "id": new_id(), "user_id": ctx.user_id, "post_id": "", "channel_id": channel_id,
                "create_at": now, "update_at": now, "delete_at": 0, "name": name, "extension": ext,
                "size": len(data), "mime_type": mimetypes.guess_type(name)[0] or "",
                "has_preview_image": False, "mini_preview": None, "remote_id": "", "archived": False,
            }
            self._files[info["id"]] = info
            self._file_content[info["id"]] = data
            infos.append(dict(info))
        return 201, {"file_infos": infos, "client_ids": client_ids}

    def _file_for(self, ctx: "_Ctx", file_id: str) -> dict[str, Any]:
        info = self._files.get(ctx.id_param(file_id, "file_id"))
        if info is None or info["delete_at"]:
            raise ApiFailure(404, "app.file_info.get.app_error")
        if info["user_id"] == ctx.user_id or self._is_admin(ctx.user_id):
            return info
        post = self._posts.get(info["post_id"]) if info["post_id"] else None
        if post is None or not self._can_read_channel(ctx.user_id, self.channels[post["channel_id"]]):
            raise _forbidden()
        return info

    async def h_file(self, ctx: "_Ctx", file_id: str) -> web.StreamResponse:
        info = self._file_for(ctx, file_id)
        return web.Response(body=self._file_content[info["id"]],
                            content_type=info["mime_type"] or "application/octet-stream",
                            headers={"Content-Disposition": f'attachment;filename="{info["name"]}"',
                                     "X-Content-Type-Options": "nosniff"})

    async def h_file_info(self, ctx: "_Ctx", file_id: str) -> tuple[int, Any]:
        return 200, dict(self._file_for(ctx, file_id))


class _Ctx:
    """One REST request as a handler sees it."""

    def __init__(self, fake: FakeMattermost, request: web.Request, request_id: str, user_id: str | None) -> None:
        self.fake = fake
        self.request = request
        self.request_id = request_id
        self.user_id: str = user_id or ""
        self.body_value: Any = None

    async def json(self, name: str) -> Any:
        try:
            raw = await self.request.read()
            self.body_value = json.loads(raw) if raw else None
        except ValueError:
            raise _bad_body(name) from None
        return self.body_value

    def id_param(self, value: str, name: str) -> str:
        if not is_valid_id(value):
            raise _bad_url(name)
        return value

    def user_param(self, value: str) -> str:
        if value == "me":
            return self.user_id
        return self.id_param(value, "user_id")

    def paging(self) -> tuple[int, int]:
        q = self.request.query
        try:
            page = int(q.get("page", "0"))
            per_page = int(q.get("per_page", "60"))
        except ValueError:
            raise _bad_url("page") from None
        if page < 0:
            raise _bad_url("page")
        if per_page < 0:
            raise _bad_url("per_page")
        return page, min(per_page, 200)  # real: capped at 200
