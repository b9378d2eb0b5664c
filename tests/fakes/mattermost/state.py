"""The fake's data and the rules that change it: users, tokens, teams, channels, memberships,
posts (with edit history), reactions, files. Every change publishes the event the real server
would (``_publish``, provided by the websocket part)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from tests.fakes.mattermost.common import (
    CHANNEL_DISPLAY_NAME_MAX,
    CHANNEL_HEADER_MAX,
    CHANNEL_NAME_MAX,
    CHANNEL_NAME_RE,
    CHANNEL_PURPOSE_MAX,
    MAX_POST_RUNES,
    USERNAME_RE,
    ApiFailure,
    bad_body,
    dumps,
    is_valid_id,
    mentioned_usernames,
    new_id,
)


class State(ABC):
    """Users, teams, channels, posts, reactions and memberships, with setup and read helpers
    that tests call directly (synchronous; they publish events like the API would)."""

    def _init_state(self, *, system_posts: bool, per_recipient_mentions: bool) -> None:
        self.system_posts = system_posts
        self.per_recipient_mentions = per_recipient_mentions
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}  # token -> user id
        self.teams: dict[str, dict[str, Any]] = {}
        self.team_members: dict[str, dict[str, dict[str, Any]]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.channel_members: dict[str, dict[str, dict[str, Any]]] = {}
        self._posts: dict[str, dict[str, Any]] = {}
        self._reactions: dict[str, list[dict[str, Any]]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._file_content: dict[str, bytes] = {}
        self.bot_user_id: str | None = None
        self._last_ms = 0
        # Default roles as POST /roles/names answers them (a subset of the real permissions);
        # tests may take one away, e.g. role_permissions["team_user"].discard("create_private_channel").
        self.role_permissions: dict[str, set[str]] = {
            "system_user": {"create_direct_channel", "create_group_channel", "create_team", "view_members"},
            "system_admin": {"manage_system", "create_private_channel", "create_public_channel", "manage_team"},
            "team_user": {"create_private_channel", "create_public_channel", "join_public_channels", "view_team"},
            "team_admin": {"manage_team", "manage_team_roles", "remove_user_from_team"},
            "channel_user": {"create_post", "read_channel", "add_reaction"},
        }
        # Called as ``watcher(kind, post)`` with kind "created" or "edited", right after the
        # change is stored (before its event is sent): the benchmarks time replies with it.
        self.post_watchers: list[Callable[[str, dict[str, Any]], None]] = []

    @abstractmethod
    def _publish(self, event: str, data: dict[str, Any], **where: Any) -> None:
        """Send an event to whoever ``where`` names; the websocket part (websocket.py) delivers it."""

    # ---------------------------------------------------------------------------- clock

    def now_ms(self) -> int:
        """Milliseconds, strictly increasing within this fake (so ordering is deterministic)."""
        t = int(time.time() * 1000)
        if t <= self._last_ms:
            t = self._last_ms + 1
        self._last_ms = t
        return t

    # ---------------------------------------------------------------------------- setup helpers

    def create_user(
        self,
        username: str,
        *,
        is_bot: bool = False,
        system_admin: bool = False,
        first_name: str = "",
        last_name: str = "",
        user_id: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A user and a personal access token for it (``user_id``: a fixed id, for data made in advance)."""
        username = username.lower()
        if not USERNAME_RE.match(username):
            raise ValueError(f"invalid username {username!r}")
        if self.user_by_username(username) is not None:
            raise ValueError(f"username {username!r} taken")
        now = self.now_ms()
        roles = "system_user system_admin" if system_admin else "system_user"
        if user_id is not None and (not is_valid_id(user_id) or user_id in self.users):
            raise ValueError(f"invalid or taken user id {user_id!r}")
        user = {
            "id": user_id or new_id(),
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

    def deactivate_user(self, user_id: str) -> None:
        """As the real server (app/user.go ``UpdateActive``): ``delete_at`` set, every token
        and session of the account revoked, then ``user_updated`` to everyone else."""
        now = self.now_ms()
        self.users[user_id].update(delete_at=now, update_at=now)
        for token in [t for t, uid in self.tokens.items() if uid == user_id]:
            self.revoke_token(token)
        self._user_updated(user_id)

    def set_roles(self, user_id: str, roles: str) -> None:
        """System roles; a guest is ``system_guest`` (the real server's team and channel
        memberships of a guest say ``scheme_guest``, which the bot does not read).

        ``PUT /users/{id}/roles`` (``UpdateUserRolesWithUser``): only the user hears of it."""
        self.users[user_id].update(roles=roles, update_at=self.now_ms())
        self._publish("user_role_updated", {"user_id": user_id, "roles": roles}, user_id=user_id)

    def demote_to_guest(self, user_id: str) -> None:
        """``POST /users/{id}/demote`` (``DemoteUserToGuest``; a licensed server with guest
        accounts on): the system role and every membership become guest ones; ``user_updated``
        to everyone else, the memberships' own events to the user alone."""
        self._set_guest(user_id, True)

    def promote_to_user(self, user_id: str) -> None:
        """``POST /users/{id}/promote`` (``PromoteGuestToUser``): the reverse of ``demote_to_guest``."""
        self._set_guest(user_id, False)

    def _set_guest(self, user_id: str, guest: bool) -> None:
        user = self.users[user_id]
        roles = [r for r in user["roles"].split() if r not in ("system_guest", "system_user")]
        user.update(roles=" ".join(["system_guest" if guest else "system_user", *roles]), update_at=self.now_ms())
        self._user_updated(user_id)
        for members in self.team_members.values():
            if user_id in members:
                members[user_id].update(scheme_guest=guest, scheme_user=not guest)
                self._publish("memberrole_updated", {"member": dumps(members[user_id])}, user_id=user_id)
        for members in self.channel_members.values():
            if user_id in members:
                members[user_id].update(scheme_guest=guest, scheme_user=not guest)
                self._publish("channel_member_updated", {"channelMember": dumps(members[user_id])}, user_id=user_id)

    def _user_updated(self, user_id: str) -> None:
        """``sendUpdatedUserEvent``: the user as an object, to every connection but the
        user's own (admins get more fields than others), and the user's own copy."""
        user = dict(self.users[user_id])

        def data_for(uid: str) -> dict[str, Any]:
            return {"user": user if self._is_admin(uid) else {**user, "email": "", "auth_data": ""}}

        self._publish("user_updated", {"user": user}, omit_users=[user_id], data_for=data_for)
        self._publish("user_updated", {"user": user}, user_id=user_id)

    def archive_channel(self, channel_id: str, actor_id: str) -> None:
        now = self.now_ms()
        ch = self.channels[channel_id]
        ch.update(delete_at=now, update_at=now)
        self._publish("channel_deleted", {"channel_id": channel_id, "delete_at": now}, team_id=ch["team_id"])

    def add_token(self, user_id: str) -> str:
        token = new_id()
        self.tokens[token] = user_id
        return token

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

    def create_team(
        self, name: str, display_name: str | None = None, *, open_invite: bool = False, team_id: str | None = None
    ) -> dict[str, Any]:
        if any(t["name"] == name for t in self.teams.values()):
            raise ValueError(f"team {name!r} exists")
        if team_id is not None and (not is_valid_id(team_id) or team_id in self.teams):
            raise ValueError(f"invalid or taken team id {team_id!r}")
        now = self.now_ms()
        team = {
            "id": team_id or new_id(),
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

    def create_channel(
        self,
        team_id: str,
        name: str,
        type: str = "O",
        *,
        display_name: str | None = None,
        creator_id: str | None = None,
        header: str = "",
        purpose: str = "",
    ) -> dict[str, Any]:
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

    def create_post(
        self,
        user_id: str,
        channel_id: str,
        message: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        create_at: int | None = None,
        file_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a post as ``user_id`` (no membership check), publishing ``posted``."""
        ch = self._require_channel(channel_id)
        post = self._create_post(
            self.users[user_id],
            ch,
            {
                "message": message,
                "root_id": root_id,
                "props": props or {},
                "file_ids": file_ids or [],
            },
            create_at=create_at,
        )
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

    def all_posts(
        self, channel_id: str | None = None, *, include_deleted: bool = False, include_system: bool = True
    ) -> list[dict[str, Any]]:
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
        out["props"] = _strip_integrations(post["props"])
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

    def _validate_channel_fields(
        self, name: str | None, display_name: str | None, header: str | None, purpose: str | None
    ) -> None:
        if display_name is not None and not (0 < len(display_name) <= CHANNEL_DISPLAY_NAME_MAX):
            raise ApiFailure(400, "model.channel.is_valid.display_name.app_error")
        if name is not None:
            if not isinstance(name, str) or len(name) > CHANNEL_NAME_MAX or not CHANNEL_NAME_RE.match(name):
                raise ApiFailure(400, "model.channel.is_valid.2_or_more.app_error")
            parts = name.split("__")
            if len(parts) == 2 and is_valid_id(parts[0]) and is_valid_id(parts[1]):
                raise ApiFailure(400, "model.channel.is_valid.name.app_error")
        if header is not None and len(header) > CHANNEL_HEADER_MAX:
            raise ApiFailure(400, "model.channel.is_valid.header.app_error")
        if purpose is not None and len(purpose) > CHANNEL_PURPOSE_MAX:
            raise ApiFailure(400, "model.channel.is_valid.purpose.app_error")

    def _new_channel(
        self, team_id: str, name: str, display_name: str, type_: str, creator_id: str, header: str, purpose: str
    ) -> dict[str, Any]:
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
            "notify_props": {
                "desktop": "default",
                "email": "default",
                "ignore_channel_mentions": "default",
                "mark_unread": "all",
                "push": "default",
            },
            "last_update_at": now,
            "scheme_guest": False,
            "scheme_user": True,
            "scheme_admin": admin,
            "explicit_roles": "",
        }
        self.channel_members[channel_id][user_id] = member
        return member

    def _add_channel_member(self, ch: dict[str, Any], user_id: str, actor_id: str, system_post: bool = True) -> dict[str, Any]:
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
                self._system_post(
                    ch, user_id, "system_join_channel", f"@{user['username']} joined the channel.", {"username": user["username"]}
                )
            else:
                actor = self.users[actor_id]
                self._system_post(
                    ch,
                    actor_id,
                    "system_add_to_channel",
                    f"@{user['username']} added to the channel by @{actor['username']}.",
                    {
                        "userId": actor_id,
                        "username": actor["username"],
                        "addedUserId": user_id,
                        "addedUsername": user["username"],
                    },
                )
        return dict(member)

    def _remove_channel_member(self, ch: dict[str, Any], user_id: str, actor_id: str, system_post: bool = True) -> None:
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.remove_user_from_channel.app_error")
        if user_id not in self.channel_members[ch["id"]]:
            raise ApiFailure(404, "app.channel.get_member.missing.app_error")
        if system_post and self.system_posts:
            user = self.users[user_id]
            if actor_id == user_id:
                self._system_post(
                    ch, user_id, "system_leave_channel", f"@{user['username']} left the channel.", {"username": user["username"]}
                )
            else:
                self.users[actor_id]
                self._system_post(
                    ch,
                    actor_id,
                    "system_remove_from_channel",
                    f"@{user['username']} was removed from the channel.",
                    {"removedUserId": user_id, "removedUsername": user["username"]},
                )
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

    def _system_post(self, ch: dict[str, Any], user_id: str, type_: str, message: str, props: dict[str, Any]) -> dict[str, Any]:
        return self._create_post(self.users[user_id], ch, {"message": message, "props": props}, type_=type_)

    def _create_post(
        self, user: dict[str, Any], ch: dict[str, Any], body: dict[str, Any], *, type_: str = "", create_at: int | None = None
    ) -> dict[str, Any]:
        message = body.get("message") or ""
        if not isinstance(message, str):
            raise bad_body("post")
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
            raise bad_body("post")
        props = dict(props)
        if user["is_bot"]:
            props["from_bot"] = "true"
        now = self.now_ms()
        created = create_at if create_at else now
        file_ids = []
        for fid in body.get("file_ids") or []:
            info = self._files.get(fid)
            # Real: silently drop files of other users/channels, or already attached.
            if (
                info
                and info["user_id"] == user["id"]
                and info["channel_id"] == ch["id"]
                and not info["post_id"]
                and fid not in file_ids
            ):
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
        for watch in self.post_watchers:
            watch("created", post)
        ch["last_post_at"] = max(ch["last_post_at"], created)
        ch["total_msg_count"] += 1
        if not root_id:
            ch["last_root_post_at"] = max(ch["last_root_post_at"], created)
            ch["total_msg_count_root"] += 1
        self._publish_posted(post, ch, user)
        return post

    def _reply_count(self, root_id: str) -> int:
        return sum(1 for p in self._posts.values() if p["root_id"] == root_id and not p["delete_at"] and not p["original_id"])

    def _publish_posted(self, post: dict[str, Any], ch: dict[str, Any], sender: dict[str, Any]) -> None:
        members = list(self.channel_members[ch["id"]])
        mentioned: set[str] = set()
        if not post["type"]:
            if ch["type"] == "D":
                mentioned = {m for m in members if m != sender["id"]}
            else:
                names = mentioned_usernames(post["message"])
                mentioned = {m for m in members if m != sender["id"] and self.users[m]["username"] in names}
        display = "@" + sender["username"] if ch["type"] == "D" else ch["display_name"]
        data: dict[str, Any] = {
            "channel_display_name": display,
            "channel_name": ch["name"],
            "channel_type": ch["type"],
            "post": dumps(self.post_json(post)),
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
                return {**data, "mentions": dumps([uid])}
            return {**data, "mentions": dumps(full)}

        self._publish("posted", data, channel_id=ch["id"], data_for=data_for)

    def _edit_post(
        self,
        post: dict[str, Any],
        *,
        message: str | None = None,
        props: dict[str, Any] | None = None,
        is_pinned: bool | None = None,
    ) -> dict[str, Any]:
        now = self.now_ms()
        if message is not None and message != post["message"]:
            if len(message) > MAX_POST_RUNES:
                raise ApiFailure(400, "model.post.is_valid.msg.app_error")
            # Real: the old version is kept as a deleted row pointing at the post.
            history = {
                **post,
                "id": new_id(),
                "original_id": post["id"],
                "delete_at": now,
                "update_at": now,
                "props": dict(post["props"]),
                "file_ids": list(post["file_ids"]),
            }
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
        for watch in self.post_watchers:
            watch("edited", post)
        ch = self.channels[post["channel_id"]]
        ch["last_post_at"] = max(ch["last_post_at"], now)
        self._publish("post_edited", {"post": dumps(self.post_json(post))}, channel_id=post["channel_id"])
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
        self._publish("post_deleted", {"post": dumps(before)}, channel_id=post["channel_id"])

    def _reaction_event(self, event: str, reaction: dict[str, Any], post: dict[str, Any]) -> None:
        self._publish(event, {"reaction": dumps(reaction)}, channel_id=post["channel_id"])

    def _live_post(self, post_id: str) -> dict[str, Any] | None:
        p = self._posts.get(post_id)
        if p is None or p["delete_at"] or p["original_id"]:
            return None
        return p


def _strip_integrations(props: dict[str, Any]) -> dict[str, Any]:
    """Props as the real server shows a post to anyone (model.Post.StripActionIntegrations):
    message buttons without their ``integration`` (URL and context), which stay on the server."""
    out = dict(props)
    attachments = out.get("attachments")
    if isinstance(attachments, list):
        out["attachments"] = [
            {**a, "actions": [{k: v for k, v in act.items() if k != "integration"} for act in a.get("actions") or []]}
            if isinstance(a, dict) and isinstance(a.get("actions"), list)
            else a
            for a in attachments
        ]
    return out
