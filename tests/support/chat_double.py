"""An in-memory Mattermost behind the chat port, for app/ unit tests: users, teams,
channels, posts and reactions in dicts; every call recorded; faults on demand.

It keeps only what the use cases read back (membership, threads, pins, patches); the
real server's rules are the fake server's and the integration suite's to prove."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from incident_bot.chat.errors import BadRequest, ChannelNameTaken, Forbidden, MattermostError, NotFound
from incident_bot.chat.models import Channel, FileInfo, Post, Reaction, Team, User

_ids = itertools.count(1)


def new_id(prefix: str = "x") -> str:
    """26 characters, like Mattermost's ids."""
    return f"{prefix}{next(_ids):0>25}"[-26:]


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class ChatDouble:
    """Records every call in ``calls``; ``fail_next[name] = n`` makes the next n calls of
    ``name`` raise a 503, as a Mattermost that is down would; ``refuse_next`` a 400."""

    bot: User
    users: dict[str, User] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    team_members: dict[str, set[str]] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    posts: dict[str, Post] = field(default_factory=dict)
    reactions: dict[str, list[Reaction]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    dialogs: list[dict[str, Any]] = field(default_factory=list)  # {trigger_id, url, dialog} as opened
    ephemeral: list[dict[str, Any]] = field(default_factory=list)  # {user_id, channel_id, message}
    command_responses: list[dict[str, Any]] = field(default_factory=list)  # {response_url, response}
    fail_next: dict[str, int] = field(default_factory=dict)
    refuse_next: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, str] = field(default_factory=dict)
    skew_ms: int = 0  # the server's clock moved forward, as the bot's is by its skew (simulated days)

    def now_ms(self) -> int:
        """The server's time for what it stamps: posts, edits, reactions."""
        return int(time.time() * 1000) + self.skew_ms

    def __post_init__(self) -> None:
        self.users[self.bot.id] = self.bot

    # --- set-up ------------------------------------------------------------------------

    def add_user(self, username: str, **fields: Any) -> User:
        user = User(id=new_id("u"), username=username, **fields)
        self.users[user.id] = user
        return user

    def add_team(self, name: str, *people: User) -> Team:
        team = Team(id=new_id("t"), name=name, display_name=name.title())
        self.teams[team.id] = team
        self.team_members[team.id] = {self.bot.id, *(p.id for p in people)}
        return team

    def add_channel(self, team: Team | None, name: str, *people: User, type: str = "O") -> Channel:
        channel = Channel(id=new_id("c"), team_id=team.id if team else "", name=name, display_name=name, type=type)
        self.channels[channel.id] = channel
        self.members[channel.id] = {self.bot.id, *(p.id for p in people)}
        return channel

    def dm(self, person: User) -> Channel:
        return self.add_channel(None, f"{self.bot.id}__{person.id}", person, type="D")

    def person_posts(self, channel: Channel, user: User, message: str, root_id: str = "") -> Post:
        now = self.now_ms()
        post = Post(
            id=new_id("p"), channel_id=channel.id, user_id=user.id, message=message, root_id=root_id, create_at=now, update_at=now
        )
        self.posts[post.id] = post
        return post

    def react(self, post: Post | str, user: User, emoji: str) -> Reaction:
        post_id = post if isinstance(post, str) else post.id
        now = self.now_ms()
        reaction = Reaction(
            user_id=user.id,
            post_id=post_id,
            emoji_name=emoji,
            create_at=now,
            update_at=now,
            channel_id=self.posts[post_id].channel_id,
        )
        self.reactions.setdefault(post_id, []).append(reaction)
        return reaction

    def unreact(self, post: Post | str, user: User, emoji: str) -> Reaction:
        post_id = post if isinstance(post, str) else post.id
        found = [r for r in self.reactions.get(post_id, []) if r.user_id == user.id and r.emoji_name == emoji]
        self.reactions[post_id].remove(found[0])
        return found[0].model_copy(update={"delete_at": self.now_ms()})

    # --- what a test reads back ------------------------------------------------------

    def bot_posts(self, channel: Channel | str, *, root_id: str | None = None) -> list[Post]:
        channel_id = channel if isinstance(channel, str) else channel.id
        return [
            p
            for p in self.posts.values()
            if p.channel_id == channel_id
            and p.user_id == self.bot.id
            and not p.delete_at
            and (root_id is None or p.root_id == root_id)
        ]

    def forget_pending_post_ids(self) -> None:
        """Mattermost remembers a ``pending_post_id`` for 30 s only."""
        self._pending.clear()

    def called(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs))
        if self.fail_next.get(name, 0) > 0:
            self.fail_next[name] -= 1
            raise MattermostError(503, "down", method="TEST", path=name)
        if self.refuse_next.get(name, 0) > 0:
            self.refuse_next[name] -= 1
            raise BadRequest(400, "refused", method="TEST", path=name)

    def _post(self, post_id: str) -> Post:
        post = self.posts.get(post_id)
        if post is None or post.delete_at:
            raise NotFound(404, "no such post", method="TEST", path=post_id)
        return post

    # --- the chat port ---------------------------------------------------------------

    async def get_me(self) -> User:
        self._call("get_me")
        return self.bot

    async def get_users_by_ids(self, ids: list[str]) -> list[User]:
        self._call("get_users_by_ids", ids)
        return [self.users[i] for i in ids if i in self.users]

    async def get_user_by_username(self, username: str) -> User | None:
        self._call("get_user_by_username", username)
        return next((u for u in self.users.values() if u.username == username.lstrip("@")), None)

    async def get_user_teams(self, user_id: str = "me") -> list[Team]:
        self._call("get_user_teams", user_id)
        uid = self.bot.id if user_id == "me" else user_id
        return [t for t in self.teams.values() if uid in self.team_members[t.id]]

    async def get_team(self, team_id: str) -> Team:
        self._call("get_team", team_id)
        if team_id not in self.teams:
            raise NotFound(404, "no such team", method="TEST", path=team_id)
        return self.teams[team_id]

    async def is_team_member(self, team_id: str, user_id: str) -> bool:
        self._call("is_team_member", team_id, user_id)
        return user_id in self.team_members.get(team_id, set())

    async def get_channel(self, channel_id: str) -> Channel:
        self._call("get_channel", channel_id)
        if channel_id not in self.channels:
            raise NotFound(404, "no such channel", method="TEST", path=channel_id)
        return self.channels[channel_id]

    async def get_channel_by_name(self, team_id: str, name: str) -> Channel | None:
        self._call("get_channel_by_name", team_id, name)
        return next((c for c in self.channels.values() if c.team_id == team_id and c.name == name), None)

    async def create_channel(
        self, team_id: str, name: str, display_name: str, type: str = "P", header: str = "", purpose: str = ""
    ) -> Channel:
        self._call("create_channel", team_id, name, display_name, type=type, purpose=purpose)
        if any(c.team_id == team_id and c.name == name for c in self.channels.values()):
            raise ChannelNameTaken(400, "taken", method="TEST", path=name)
        channel = Channel(
            id=new_id("c"),
            team_id=team_id,
            name=name,
            display_name=display_name,
            type=type,
            header=header,
            purpose=purpose,
            creator_id=self.bot.id,
        )
        self.channels[channel.id] = channel
        self.members[channel.id] = {self.bot.id}
        return channel

    async def patch_channel(self, channel_id: str, **fields: Any) -> Channel:
        self._call("patch_channel", channel_id, **fields)
        channel = self.channels[channel_id].model_copy(update=fields)
        self.channels[channel_id] = channel
        return channel

    async def get_user_channels(self, team_id: str, user_id: str = "me") -> list[Channel]:
        self._call("get_user_channels", team_id, user_id)
        uid = self.bot.id if user_id == "me" else user_id
        return [c for c in self.channels.values() if c.team_id in (team_id, "") and uid in self.members[c.id]]

    async def is_channel_member(self, channel_id: str, user_id: str) -> bool:
        self._call("is_channel_member", channel_id, user_id)
        return user_id in self.members.get(channel_id, set())

    async def add_channel_member(self, channel_id: str, user_id: str) -> None:
        self._call("add_channel_member", channel_id, user_id)
        self.members[channel_id].add(user_id)

    async def get_channel_member_ids(self, channel_id: str) -> list[str]:
        self._call("get_channel_member_ids", channel_id)
        return sorted(self.members.get(channel_id, set()))

    async def create_direct_channel(self, user_a: str, user_b: str) -> Channel:
        self._call("create_direct_channel", user_a, user_b)
        name = "__".join(sorted((user_a, user_b)))
        existing = next((c for c in self.channels.values() if c.name == name), None)
        if existing is not None:
            return existing
        channel = Channel(id=new_id("c"), name=name, type="D")
        self.channels[channel.id] = channel
        self.members[channel.id] = {user_a, user_b}
        return channel

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
        self._call("create_post", channel_id, message, root_id=root_id, props=props, pending_post_id=pending_post_id)
        if pending_post_id and pending_post_id in self._pending:
            return self.posts[self._pending[pending_post_id]]
        if channel_id not in self.channels:  # as Mattermost answers a channel that is gone
            raise Forbidden(403, "no such channel", method="TEST", path=channel_id)
        now = self.now_ms()
        post = Post(
            id=new_id("p"),
            channel_id=channel_id,
            user_id=self.bot.id,
            message=message,
            root_id=root_id,
            props=props or {},
            file_ids=file_ids or [],
            create_at=now,
            update_at=now,
        )
        self.posts[post.id] = post
        if pending_post_id:
            self._pending[pending_post_id] = post.id
        return post

    async def get_post(self, post_id: str) -> Post | None:
        self._call("get_post", post_id)
        post = self.posts.get(post_id)
        return None if post is None or post.delete_at else post

    async def patch_post(self, post_id: str, message: str | None = None, props: dict[str, Any] | None = None) -> Post:
        self._call("patch_post", post_id, message=message)
        post = self._post(post_id)
        update: dict[str, Any] = {"update_at": self.now_ms()}
        if message is not None:
            update["message"] = message
        if props is not None:
            update["props"] = props
        self.posts[post_id] = post = post.model_copy(update=update)
        return post

    async def pin_post(self, post_id: str) -> None:
        self._call("pin_post", post_id)
        self.posts[post_id] = self._post(post_id).model_copy(update={"is_pinned": True})

    async def get_thread(self, post_id: str) -> list[Post]:
        self._call("get_thread", post_id)
        root = self._post(post_id)
        return sorted([root, *(p for p in self.posts.values() if p.root_id == post_id)], key=lambda p: p.create_at)

    async def get_posts_since(self, channel_id: str, since_ms: int) -> list[Post]:
        self._call("get_posts_since", channel_id, since_ms)
        return sorted(
            (p for p in self.posts.values() if p.channel_id == channel_id and p.update_at >= since_ms), key=lambda p: p.create_at
        )

    async def get_reactions(self, post_id: str) -> list[Reaction]:
        self._call("get_reactions", post_id)
        return list(self.reactions.get(post_id, []))

    async def upload_file(self, channel_id: str, filename: str, content: bytes, mime: str = "text/markdown") -> FileInfo:
        self._call("upload_file", channel_id, filename, content, mime=mime)
        return FileInfo(id=new_id("f"), name=filename, size=len(content), mime_type=mime)

    async def open_dialog(self, trigger_id: str, url: str, dialog: dict[str, Any]) -> None:
        self._call("open_dialog", trigger_id, url, dialog)
        self.dialogs.append({"trigger_id": trigger_id, "url": url, "dialog": dialog})

    async def post_ephemeral(self, user_id: str, channel_id: str, message: str) -> None:
        self._call("post_ephemeral", user_id, channel_id, message)
        self.ephemeral.append({"user_id": user_id, "channel_id": channel_id, "message": message})

    async def post_command_response(self, response_url: str, response: dict[str, Any]) -> None:
        self._call("post_command_response", response_url, response)
        self.command_responses.append({"response_url": response_url, "response": response})

    async def close(self) -> None:
        return None
