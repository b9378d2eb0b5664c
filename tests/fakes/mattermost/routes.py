"""The fake's REST API v4 on aiohttp's router: one handler per endpoint the bot or the tests
use, with the real server's permission rules, status codes and error ids. A handler gets a
``_Ctx`` (the caller, the request id) and returns ``(status, JSON)`` or a response, or raises
``ApiFailure``; the server's middleware turns that into the error JSON."""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from tests.fakes.mattermost.common import (
    API,
    EMOJI_RE,
    SERVER_VERSION,
    USERNAME_RE,
    ApiFailure,
    bad_body,
    bad_url,
    dumps,
    forbidden,
    is_valid_id,
    new_id,
)

_Handler = Callable[..., Awaitable[Any]]

# Names the real server refuses to look up (400): they are mentions, not users.
RESERVED_USERNAMES = frozenset({"all", "channel", "here"})


# Where the server's middleware leaves the request's ``_Ctx`` (a typed key where aiohttp has them).
CTX_KEY: Any = web.RequestKey("ctx", object) if hasattr(web, "RequestKey") else "ctx"


def std_headers(request_id: str) -> dict[str, str]:
    return {"X-Request-Id": request_id, "X-Version-Id": SERVER_VERSION}


class RestRoutes:
    """The REST handlers; mixed into the fake server, which owns the state they read and change."""

    def _register_routes(self, router: web.UrlDispatcher) -> None:
        table: list[tuple[str, str, _Handler, bool]] = [
            ("GET", "/system/ping", self.h_ping, False),
            ("GET", "/users/me", self.h_get_me, True),
            ("POST", "/users/ids", self.h_users_by_ids, True),
            ("POST", "/users/usernames", self.h_users_by_usernames, True),
            ("GET", "/users/username/{username}", self.h_user_by_username, True),
            ("GET", "/users/{user_id}/teams", self.h_user_teams, True),
            ("GET", "/users/{user_id}/teams/{team_id}/channels", self.h_user_team_channels, True),
            ("GET", "/users/{user_id}/channels", self.h_user_channels, True),
            ("DELETE", "/users/{user_id}/posts/{post_id}/reactions/{emoji}", self.h_delete_reaction, True),
            ("GET", "/users/{user_id}", self.h_get_user, True),
            ("DELETE", "/users/{user_id}", self.h_deactivate_user, True),
            ("PUT", "/users/{user_id}/roles", self.h_user_roles, True),
            ("POST", "/users/{user_id}/demote", self.h_demote_user, True),
            ("POST", "/users/{user_id}/promote", self.h_promote_user, True),
            ("POST", "/roles/names", self.h_roles_by_names, True),
            ("GET", "/teams/name/{name}", self.h_team_by_name, True),
            ("GET", "/teams/{team_id}/members/{user_id}", self.h_team_member, True),
            ("DELETE", "/teams/{team_id}/members/{user_id}", self.h_remove_team_member, True),
            ("GET", "/teams/{team_id}/channels/name/{name}", self.h_channel_by_name, True),
            ("GET", "/teams/{team_id}", self.h_get_team, True),
            ("POST", "/channels", self.h_create_channel, True),
            ("POST", "/channels/direct", self.h_create_direct, True),
            ("GET", "/channels/{channel_id}/members/{user_id}", self.h_channel_member, True),
            ("DELETE", "/channels/{channel_id}/members/{user_id}", self.h_remove_channel_member, True),
            ("GET", "/channels/{channel_id}/members", self.h_channel_members, True),
            ("POST", "/channels/{channel_id}/members", self.h_add_channel_member, True),
            ("PUT", "/channels/{channel_id}/patch", self.h_patch_channel, True),
            ("GET", "/channels/{channel_id}/posts", self.h_channel_posts, True),
            ("GET", "/channels/{channel_id}/pinned", self.h_channel_pinned, True),
            ("GET", "/channels/{channel_id}", self.h_get_channel, True),
            ("DELETE", "/channels/{channel_id}", self.h_archive_channel, True),
            ("POST", "/posts", self.h_create_post, True),
            ("GET", "/posts/{post_id}/thread", self.h_thread, True),
            ("GET", "/posts/{post_id}/reactions", self.h_post_reactions, True),
            ("PUT", "/posts/{post_id}/patch", self.h_patch_post, True),
            ("POST", "/posts/{post_id}/pin", self.h_pin, True),
            ("POST", "/posts/{post_id}/unpin", self.h_unpin, True),
            ("GET", "/posts/{post_id}", self.h_get_post, True),
            ("PUT", "/posts/{post_id}", self.h_update_post, True),
            ("DELETE", "/posts/{post_id}", self.h_delete_post, True),
            ("POST", "/reactions", self.h_save_reaction, True),
            ("POST", "/files", self.h_upload, True),
            ("GET", "/files/{file_id}/info", self.h_file_info, True),
            ("GET", "/files/{file_id}", self.h_file, True),
        ]
        table += self._integration_routes() + self._action_routes()
        for method, path, handler, auth in table:
            router.add_route(method, API + path, self._endpoint(handler, auth))

    def _endpoint(self, handler: _Handler, auth: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            ctx: _Ctx = request[CTX_KEY]
            if auth and not ctx.user_id:
                raise ApiFailure(401, "api.context.session_expired.app_error")
            result = await handler(ctx, **request.match_info)
            if isinstance(result, web.StreamResponse):
                result.headers.update(std_headers(ctx.request_id))
                return result
            status, obj = result
            return web.json_response(obj, status=status, headers=std_headers(ctx.request_id), dumps=dumps)

        return endpoint

    async def h_ping(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, {"status": "OK", "ActiveSearchBackend": "database", "version": SERVER_VERSION}

    async def h_get_me(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, dict(self.users[ctx.user_id])

    async def h_get_user(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        return 200, dict(self._require_user(uid))

    async def h_deactivate_user(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        """An admin deactivates an account (the real server's soft delete): it keeps its
        memberships, posts and reactions, its sessions and tokens stop working."""
        uid = ctx.id_param(user_id, "user_id")
        if not self._is_admin(ctx.user_id):
            raise forbidden()
        self._require_user(uid)
        self.deactivate_user(uid)
        return 200, {"status": "OK"}

    async def h_user_roles(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        """An admin sets an account's system roles, e.g. ``system_guest`` (what a guest is)."""
        uid = ctx.id_param(user_id, "user_id")
        roles = (await ctx.json("roles") or {}).get("roles")
        if not isinstance(roles, str) or not roles.split() or roles.split() == ["system_admin"]:
            raise bad_body("roles")
        if not self._is_admin(ctx.user_id):
            raise forbidden()
        self._require_user(uid)
        self.set_roles(uid, roles)
        return 200, {"status": "OK"}

    async def h_demote_user(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        """An admin makes a member a guest (as a licensed server with guest accounts on does;
        Team Edition answers 501, see tests/support/admin.py)."""
        uid = ctx.id_param(user_id, "user_id")
        if not self._is_admin(ctx.user_id):
            raise forbidden()
        user = self._require_user(uid)
        if "system_guest" in user["roles"].split():
            raise ApiFailure(501, "api.user.demote_user_to_guest.already_guest.app_error")
        self.demote_to_guest(uid)
        return 200, {"status": "OK"}

    async def h_promote_user(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        """An admin makes a guest a member again."""
        uid = ctx.id_param(user_id, "user_id")
        if not self._is_admin(ctx.user_id):
            raise forbidden()
        user = self._require_user(uid)
        if "system_guest" not in user["roles"].split():
            raise ApiFailure(501, "api.user.promote_guest_to_user.no_guest.app_error")
        self.promote_to_user(uid)
        return 200, {"status": "OK"}

    async def h_user_by_username(self, ctx: _Ctx, username: str) -> tuple[int, Any]:
        if not USERNAME_RE.match(username.lower()):
            raise bad_url("username")
        if username.lower() in RESERVED_USERNAMES:  # as the real server (11.4) answers them
            raise bad_body("username")
        user = self.user_by_username(username)
        if user is None:
            raise ApiFailure(404, "app.user.get_by_username.app_error")
        return 200, dict(user)

    async def h_users_by_ids(self, ctx: _Ctx) -> tuple[int, Any]:
        ids = await ctx.json("user_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise bad_body("user_ids")
        return 200, [dict(self.users[i]) for i in dict.fromkeys(ids) if i in self.users]

    async def h_users_by_usernames(self, ctx: _Ctx) -> tuple[int, Any]:
        names = await ctx.json("usernames")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad_body("usernames")
        out = []
        for n in dict.fromkeys(names):
            u = self.user_by_username(n)
            if u is not None:
                out.append(dict(u))
        return 200, out

    async def h_roles_by_names(self, ctx: _Ctx) -> tuple[int, Any]:
        """The default roles' permissions (the part of them the bot's check reads); unknown names are left out."""
        names = await ctx.json("role_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise bad_body("role_names")
        return 200, [
            {"id": new_id(), "name": n, "display_name": n, "permissions": sorted(self.role_permissions[n]), "built_in": True}
            for n in dict.fromkeys(names)
            if n in self.role_permissions
        ]

    async def h_user_teams(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise forbidden()
        return 200, [dict(t) for t in self.teams.values() if self._in_team(t["id"], uid)]

    async def h_user_team_channels(self, ctx: _Ctx, user_id: str, team_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        tid = ctx.id_param(team_id, "team_id")
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise forbidden()
        if not self._in_team(tid, ctx.user_id) and not self._is_admin(ctx.user_id):
            raise forbidden()
        out = [
            dict(c)
            for c in self.channels.values()
            if (c["team_id"] == tid or c["team_id"] == "") and self._in_channel(c["id"], uid)
        ]
        if not out:
            # Real: an empty result is a 404, not [].
            raise ApiFailure(404, "app.channel.get_channels.not_found.app_error")
        return 200, out

    async def h_user_channels(self, ctx: _Ctx, user_id: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise forbidden()
        return 200, [dict(c) for c in self.channels.values() if self._in_channel(c["id"], uid)]

    async def h_get_team(self, ctx: _Ctx, team_id: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        team = self._require_team(tid)
        self._check_team_visible(ctx.user_id, team)
        return 200, dict(team)

    async def h_team_by_name(self, ctx: _Ctx, name: str) -> tuple[int, Any]:
        team = self.team_by_name(name)
        if team is None:
            raise ApiFailure(404, "app.team.get_by_name.missing.app_error")
        self._check_team_visible(ctx.user_id, team)
        return 200, dict(team)

    def _check_team_visible(self, user_id: str, team: dict[str, Any]) -> None:
        if (
            (team["type"] != "O" or not team["allow_open_invite"])
            and not self._in_team(team["id"], user_id)
            and not self._is_admin(user_id)
        ):
            raise forbidden()

    async def h_team_member(self, ctx: _Ctx, team_id: str, user_id: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        uid = ctx.user_param(user_id)
        if not self._in_team(tid, ctx.user_id) and not self._is_admin(ctx.user_id):
            raise forbidden()
        member = self.team_members.get(tid, {}).get(uid)
        if member is None:
            raise ApiFailure(404, "app.team.get_member.missing.app_error")
        return 200, dict(member)

    async def h_remove_team_member(self, ctx: _Ctx, team_id: str, user_id: str) -> tuple[int, Any]:
        """Leave the team (oneself) or remove someone (an admin); the member leaves its channels too."""
        tid = ctx.id_param(team_id, "team_id")
        uid = ctx.user_param(user_id)
        self._require_team(tid)
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise forbidden()
        if uid not in self.team_members.get(tid, {}):
            raise ApiFailure(404, "app.team.get_member.missing.app_error")
        self.remove_team_member(tid, uid)
        return 200, {"status": "OK"}

    async def h_get_channel(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        return 200, dict(ch)

    async def h_archive_channel(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        """Archive a channel (what the real server's DELETE does): its posts and members stay,
        nothing can be posted, edited or joined there any more."""
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.delete_channel.type.invalid")
        if ch["delete_at"]:
            raise ApiFailure(400, "api.channel.delete_channel.deleted.app_error")
        if not self._is_admin(ctx.user_id) and not self._in_channel(ch["id"], ctx.user_id):
            raise forbidden()
        self.archive_channel(ch["id"], ctx.user_id)
        return 200, {"status": "OK"}

    async def h_channel_by_name(self, ctx: _Ctx, team_id: str, name: str) -> tuple[int, Any]:
        tid = ctx.id_param(team_id, "team_id")
        ch = self.channel_by_name(tid, name)
        if ch is None:
            raise ApiFailure(404, "app.channel.get_by_name.missing.app_error")
        if not self._can_read_channel(ctx.user_id, ch):
            if ch["type"] == "O":
                raise forbidden()
            # Real: a private channel you cannot read looks like a missing one.
            raise ApiFailure(404, "app.channel.get_by_name.missing.app_error")
        return 200, dict(ch)

    async def h_create_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        body = await ctx.json("channel")
        if not isinstance(body, dict):
            raise bad_body("channel")
        team_id = body.get("team_id") or ""
        type_ = body.get("type") or "O"
        if type_ in ("D", "G"):
            raise ApiFailure(400, "api.channel.create_channel.direct_channel.app_error")
        if type_ not in ("O", "P"):
            raise ApiFailure(400, "model.channel.is_valid.type.app_error")
        if (
            not is_valid_id(team_id)
            or team_id not in self.teams
            or (not self._in_team(team_id, ctx.user_id) and not self._is_admin(ctx.user_id))
        ):
            raise forbidden()
        name = body.get("name")
        display = body.get("display_name")
        header = body.get("header") or ""
        purpose = body.get("purpose") or ""
        if not isinstance(name, str):
            raise ApiFailure(400, "model.channel.is_valid.2_or_more.app_error")
        if not isinstance(display, str):
            raise ApiFailure(400, "model.channel.is_valid.display_name.app_error")
        ch = self.create_channel(
            team_id, name, type_, display_name=display, creator_id=ctx.user_id, header=header, purpose=purpose
        )
        self._publish("channel_created", {"channel_id": ch["id"], "team_id": team_id}, user_id=ctx.user_id)
        return 201, ch

    async def h_create_direct(self, ctx: _Ctx) -> tuple[int, Any]:
        ids = await ctx.json("user_ids")
        if not isinstance(ids, list) or len(ids) != 2 or not all(is_valid_id(i) for i in ids):
            raise bad_body("user_ids")
        if ctx.user_id not in ids and not self._is_admin(ctx.user_id):
            raise forbidden()
        for i in ids:
            if i not in self.users:
                raise ApiFailure(400, "api.channel.create_direct_channel.invalid_user.app_error")
        ch, _created = self._direct_channel(ids[0], ids[1], ctx.user_id)
        return 201, dict(ch)

    async def h_channel_member(self, ctx: _Ctx, channel_id: str, user_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        uid = ctx.user_param(user_id)
        if not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        member = self.channel_members[ch["id"]].get(uid)
        if member is None:
            raise ApiFailure(404, "app.channel.get_member.missing.app_error")
        return 200, dict(member)

    async def h_channel_members(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        page, per_page = ctx.paging()
        members = list(self.channel_members[ch["id"]].values())
        return 200, [dict(m) for m in members[page * per_page : (page + 1) * per_page]]

    async def h_add_channel_member(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        body = await ctx.json("user_id")
        if not isinstance(body, dict):
            raise bad_body("user_id")
        many = "user_ids" in body and "user_id" not in body
        ids = body.get("user_ids") if many else [body.get("user_id")]
        if not isinstance(ids, list) or not ids or not all(is_valid_id(i) for i in ids):
            raise bad_body("user_id")
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.add_user_to_channel.type.app_error")
        if ch["delete_at"]:
            raise ApiFailure(400, "api.channel.add_user.to.channel.failed.deleted.app_error")
        for uid in ids:
            self_join = uid == ctx.user_id
            if self._is_admin(ctx.user_id) or self._in_channel(ch["id"], ctx.user_id):
                continue
            if self_join and ch["type"] == "O" and self._in_team(ch["team_id"], ctx.user_id):
                continue
            raise forbidden()
        out = []
        for uid in ids:
            self._require_user(uid)
            out.append(self._add_channel_member(ch, uid, ctx.user_id))
        return 201, (out if many else out[0])

    async def h_remove_channel_member(self, ctx: _Ctx, channel_id: str, user_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        uid = ctx.user_param(user_id)
        if ch["type"] in ("D", "G"):
            raise ApiFailure(400, "api.channel.remove_user_from_channel.app_error")
        if uid != ctx.user_id and not self._can_write_channel(ctx.user_id, ch):
            raise forbidden()
        self._remove_channel_member(ch, uid, ctx.user_id)
        return 200, {"status": "OK"}

    async def h_patch_channel(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        patch = await ctx.json("channel")
        if not isinstance(patch, dict):
            raise bad_body("channel")
        if not self._can_write_channel(ctx.user_id, ch):
            raise forbidden()
        fields = {k: patch[k] for k in ("name", "display_name", "header", "purpose") if k in patch and patch[k] is not None}
        if any(not isinstance(v, str) for v in fields.values()):
            raise bad_body("channel")
        if ch["type"] in ("D", "G"):
            fields.pop("name", None)
            fields.pop("display_name", None)
        self._validate_channel_fields(fields.get("name"), fields.get("display_name"), fields.get("header"), fields.get("purpose"))
        if "name" in fields and fields["name"] != ch["name"] and self.channel_by_name(ch["team_id"], fields["name"]):
            raise ApiFailure(400, "store.sql_channel.save_channel.exists.app_error")
        old = dict(ch)
        ch.update(fields)
        ch["update_at"] = self.now_ms()
        self._publish("channel_updated", {"channel": dumps(ch)}, channel_id=ch["id"])
        if self.system_posts:
            actor = self.users[ctx.user_id]["username"]
            if ch["header"] != old["header"]:
                msg = (
                    f"@{actor} updated the channel header from: {old['header']} to: {ch['header']}"
                    if old["header"]
                    else f"@{actor} updated the channel header to: {ch['header']}"
                )
                if not ch["header"]:
                    msg = f"@{actor} removed the channel header (was: {old['header']})"
                self._system_post(
                    ch,
                    ctx.user_id,
                    "system_header_change",
                    msg,
                    {"username": actor, "old_header": old["header"], "new_header": ch["header"]},
                )
            if ch["display_name"] != old["display_name"]:
                self._system_post(
                    ch,
                    ctx.user_id,
                    "system_displayname_change",
                    f"@{actor} updated the channel display name from: {old['display_name']} to: {ch['display_name']}",
                    {"username": actor, "old_displayname": old["display_name"], "new_displayname": ch["display_name"]},
                )
            if ch["purpose"] != old["purpose"]:
                self._system_post(
                    ch,
                    ctx.user_id,
                    "system_purpose_change",
                    f"@{actor} updated the channel purpose to: {ch['purpose']}",
                    {"username": actor, "old_purpose": old["purpose"], "new_purpose": ch["purpose"]},
                )
        return 200, dict(ch)

    def _post_list(
        self, posts: list[dict[str, Any]], extra: Iterable[dict[str, Any]] = (), prev_post_id: str = "", next_post_id: str = ""
    ) -> dict[str, Any]:
        out = {p["id"]: self.post_json(p) for p in extra}
        for p in posts:
            out[p["id"]] = self.post_json(p)
        return {
            "order": [p["id"] for p in posts],
            "posts": out,
            "next_post_id": next_post_id,
            "prev_post_id": prev_post_id,
            "has_next": False,
            "first_inaccessible_post_time": 0,
        }

    def _roots_of(self, posts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        have = {p["id"] for p in posts}
        roots = []
        for p in posts:
            r = self._posts.get(p["root_id"]) if p["root_id"] else None
            if r is not None and r["id"] not in have and not r["delete_at"]:
                have.add(r["id"])
                roots.append(r)
        return roots

    async def h_channel_posts(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        q = ctx.request.query
        since = q.get("since", "")
        if since:
            try:
                since_ms = int(since)
            except ValueError:
                raise bad_url("since") from None
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
        live = sorted(
            (p for p in self._posts.values() if p["channel_id"] == ch["id"] and not p["delete_at"] and not p["original_id"]),
            key=lambda p: p["create_at"],
            reverse=True,
        )  # newest first
        after, before = q.get("after", ""), q.get("before", "")
        if after:
            anchor = self._posts.get(after)
            if anchor is None:
                return 200, self._post_list([])
            newer = [p for p in live if p["create_at"] > anchor["create_at"]][::-1]  # oldest first
            chunk = newer[page * per_page : (page + 1) * per_page]
            posts = chunk[::-1]
        elif before:
            anchor = self._posts.get(before)
            if anchor is None:
                return 200, self._post_list([])
            older = [p for p in live if p["create_at"] < anchor["create_at"]]
            posts = older[page * per_page : (page + 1) * per_page]
        else:
            posts = live[page * per_page : (page + 1) * per_page]
        prev_id = next_id = ""
        if posts:
            idx_old = live.index(posts[-1])
            idx_new = live.index(posts[0])
            prev_id = live[idx_old + 1]["id"] if idx_old + 1 < len(live) else ""
            next_id = live[idx_new - 1]["id"] if idx_new > 0 else ""
        return 200, self._post_list(posts, self._roots_of(posts), prev_id, next_id)

    async def h_channel_pinned(self, ctx: _Ctx, channel_id: str) -> tuple[int, Any]:
        ch = self._require_channel(ctx.id_param(channel_id, "channel_id"))
        if not self._can_read_channel(ctx.user_id, ch):
            raise forbidden()
        pinned = sorted(
            (
                p
                for p in self._posts.values()
                if p["channel_id"] == ch["id"] and p["is_pinned"] and not p["delete_at"] and not p["original_id"]
            ),
            key=lambda p: p["create_at"],
            reverse=True,
        )
        return 200, self._post_list(pinned)

    async def h_create_post(self, ctx: _Ctx) -> tuple[int, Any]:
        body = await ctx.json("post")
        if not isinstance(body, dict):
            raise bad_body("post")
        channel_id = body.get("channel_id")
        ch = self.channels.get(channel_id) if isinstance(channel_id, str) else None
        if ch is None or not self._can_write_channel(ctx.user_id, ch):
            raise forbidden()
        if ch["delete_at"]:
            raise ApiFailure(400, "api.post.create_post.can_not_post_to_deleted.error")
        type_ = body.get("type") or ""
        if type_.startswith("system_"):
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="post.type")
        pending = body.get("pending_post_id") or ""
        if isinstance(pending, str) and pending:
            # Real (app/post.go deduplicateCreatePost): a pending id seen in the last 30 s (one
            # cache for the whole server) answers the post it made, or 500 while the first
            # request is still saving; after 30 s it is forgotten.
            seen = self._pending_ids.get(pending)
            if seen is not None and time.monotonic() - seen[1] < self.pending_post_id_ttl:
                if not seen[0] and seen[2] is not ctx.request:
                    raise ApiFailure(500, "api.post.deduplicate_create_post.pending")
                p = self._posts.get(seen[0])
                if p is not None and not p["delete_at"]:
                    return 201, self.post_json(p)
                if p is not None:  # real: the post it made is deleted and cannot be given back
                    raise ApiFailure(500, "api.post.deduplicate_create_post.failed_to_get")
        create_at = body.get("create_at") if self._is_admin(ctx.user_id) else None
        post = self._create_post(
            self.users[ctx.user_id], ch, body, type_=type_, create_at=create_at if isinstance(create_at, int) else None
        )
        if isinstance(pending, str) and pending:
            self._pending_ids[pending] = (post["id"], time.monotonic(), None)
        return 201, self.post_json(post)

    def _post_for_change(self, ctx: _Ctx, post_id: str, own_only: bool = True) -> dict[str, Any]:
        """Mutations check permission first: a missing or deleted post is a 403, not a 404."""
        pid = ctx.id_param(post_id, "post_id")
        p = self._live_post(pid)
        if p is None:
            raise forbidden()
        ch = self.channels[p["channel_id"]]
        if ch["delete_at"] and (self._is_admin(ctx.user_id) or self._in_channel(ch["id"], ctx.user_id)):
            raise ApiFailure(400, "api.post.patch_post.can_not_update_post_in_deleted.error")  # an archived channel
        if self._is_admin(ctx.user_id):
            return p
        if not self._in_channel(ch["id"], ctx.user_id):
            raise forbidden()
        if own_only and p["user_id"] != ctx.user_id:
            raise forbidden()
        return p

    async def h_get_post(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        p = self._live_post(ctx.id_param(post_id, "post_id"))
        if p is None:
            raise ApiFailure(404, "app.post.get.app_error")
        if not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise forbidden()
        return 200, self.post_json(p)

    async def h_thread(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        p = self._live_post(ctx.id_param(post_id, "post_id"))
        if p is None:
            raise ApiFailure(404, "app.post.get.app_error")
        if not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise forbidden()
        root_id = p["root_id"] or p["id"]
        others = sorted(
            (
                q
                for q in self._posts.values()
                if (q["id"] == root_id or q["root_id"] == root_id)
                and q["id"] != p["id"]
                and not q["delete_at"]
                and not q["original_id"]
            ),
            key=lambda q: q["create_at"],
            reverse=True,
        )
        return 200, self._post_list([p, *others])  # real: order[0] is the requested post

    async def h_patch_post(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        patch = await ctx.json("post")
        if not isinstance(patch, dict):
            raise bad_body("post")
        p = self._post_for_change(ctx, post_id)
        message = patch.get("message")
        props = patch.get("props")
        if (message is not None and not isinstance(message, str)) or (props is not None and not isinstance(props, dict)):
            raise bad_body("post")
        is_pinned = patch.get("is_pinned")
        self._edit_post(p, message=message, props=props, is_pinned=bool(is_pinned) if is_pinned is not None else None)
        return 200, self.post_json(p)

    async def h_update_post(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        body = await ctx.json("post")
        if not isinstance(body, dict):
            raise bad_body("post")
        if body.get("id") != post_id:
            raise ApiFailure(400, "api.context.invalid_param.app_error", name="id")
        p = self._post_for_change(ctx, post_id)
        message = body.get("message")
        if message is not None and not isinstance(message, str):
            raise bad_body("post")
        props = body.get("props") if isinstance(body.get("props"), dict) else None
        is_pinned = body.get("is_pinned")
        self._edit_post(
            p,
            message=message if message is not None else p["message"],
            props=props,
            is_pinned=bool(is_pinned) if is_pinned is not None else None,
        )
        return 200, self.post_json(p)

    async def h_delete_post(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        p = self._post_for_change(ctx, post_id)
        self._delete_post(p)
        return 200, {"status": "OK"}

    async def _set_pinned(self, ctx: _Ctx, post_id: str, pinned: bool) -> tuple[int, Any]:
        p = self._post_for_change(ctx, post_id, own_only=False)
        if p["is_pinned"] != pinned:
            self._edit_post(p, is_pinned=pinned)
        return 200, {"status": "OK"}

    async def h_pin(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        return await self._set_pinned(ctx, post_id, True)

    async def h_unpin(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        return await self._set_pinned(ctx, post_id, False)

    async def h_post_reactions(self, ctx: _Ctx, post_id: str) -> tuple[int, Any]:
        pid = ctx.id_param(post_id, "post_id")
        p = self._posts.get(pid)
        if p is None or not self._can_read_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise forbidden()
        return 200, [dict(r) for r in self._reactions.get(pid, [])]

    async def h_save_reaction(self, ctx: _Ctx) -> tuple[int, Any]:
        body = await ctx.json("reaction")
        if not isinstance(body, dict):
            raise bad_body("reaction")
        user_id, post_id, emoji = body.get("user_id"), body.get("post_id"), body.get("emoji_name")
        if (
            not is_valid_id(user_id)
            or not is_valid_id(post_id)
            or not isinstance(emoji, str)
            or not emoji
            or len(emoji) > 64
            or not EMOJI_RE.match(emoji)
        ):
            raise bad_body("reaction")
        if user_id != ctx.user_id:
            raise ApiFailure(403, "api.reaction.save_reaction.user_id.app_error")
        p = self._live_post(post_id)
        if p is None or not self._can_write_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise forbidden()
        now = self.now_ms()
        reactions = self._reactions.setdefault(post_id, [])
        reaction = next((r for r in reactions if r["user_id"] == user_id and r["emoji_name"] == emoji), None)
        if reaction is None:
            reaction = {
                "user_id": user_id,
                "post_id": post_id,
                "emoji_name": emoji,
                "create_at": now,
                "update_at": now,
                "delete_at": 0,
                "remote_id": "",
                "channel_id": p["channel_id"],
            }
            reactions.append(reaction)
        else:
            reaction["update_at"] = now
        p["update_at"] = now
        p["has_reactions"] = True
        # Real: the event is sent on every save, also when the reaction already existed.
        self._reaction_event("reaction_added", reaction, p)
        return 200, dict(reaction)

    async def h_delete_reaction(self, ctx: _Ctx, user_id: str, post_id: str, emoji: str) -> tuple[int, Any]:
        uid = ctx.user_param(user_id)
        pid = ctx.id_param(post_id, "post_id")
        if not EMOJI_RE.match(emoji) or len(emoji) > 64:
            raise bad_url("emoji_name")
        if uid != ctx.user_id and not self._is_admin(ctx.user_id):
            raise forbidden()
        p = self._live_post(pid)
        if p is None or not self._can_write_channel(ctx.user_id, self.channels[p["channel_id"]]):
            raise forbidden()
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
            event_reaction = {
                "user_id": uid,
                "post_id": pid,
                "emoji_name": emoji,
                "create_at": 0,
                "update_at": 0,
                "delete_at": 0,
                "remote_id": "",
                "channel_id": p["channel_id"],
            }
        # Real: reaction_removed is published even when there was nothing to remove.
        self._reaction_event("reaction_removed", event_reaction, p)
        return 200, {"status": "OK"}

    async def h_upload(self, ctx: _Ctx) -> tuple[int, Any]:
        request = ctx.request
        channel_id = request.query.get("channel_id", "")
        uploads: list[tuple[str, bytes, str | None]] = []
        client_ids: list[str] = []
        if request.content_type.startswith("multipart/"):
            try:
                form = await request.post()
            except Exception:  # noqa: BLE001 - whatever the body is, the real server answers it with this 400
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
            raise bad_url("channel_id")
        ch = self.channels.get(channel_id)
        if ch is None or not self._can_write_channel(ctx.user_id, ch):
            raise forbidden()
        if not uploads:
            raise ApiFailure(400, "api.file.upload_file.read_request.app_error")
        infos = []
        for name, data, _ctype in uploads:
            now = self.now_ms()
            ext = name.rsplit(".", 1)[1].lower() if "." in name else ""
            info = {
                "id": new_id(),
                "user_id": ctx.user_id,
                "post_id": "",
                "channel_id": channel_id,
                "create_at": now,
                "update_at": now,
                "delete_at": 0,
                "name": name,
                "extension": ext,
                "size": len(data),
                "mime_type": mimetypes.guess_type(name)[0] or "",
                "has_preview_image": False,
                "mini_preview": None,
                "remote_id": "",
                "archived": False,
            }
            self._files[info["id"]] = info
            self._file_content[info["id"]] = data
            infos.append(dict(info))
        return 201, {"file_infos": infos, "client_ids": client_ids}

    def _file_for(self, ctx: _Ctx, file_id: str) -> dict[str, Any]:
        info = self._files.get(ctx.id_param(file_id, "file_id"))
        if info is None or info["delete_at"]:
            raise ApiFailure(404, "app.file_info.get.app_error")
        if info["user_id"] == ctx.user_id or self._is_admin(ctx.user_id):
            return info
        post = self._posts.get(info["post_id"]) if info["post_id"] else None
        if post is None or not self._can_read_channel(ctx.user_id, self.channels[post["channel_id"]]):
            raise forbidden()
        return info

    async def h_file(self, ctx: _Ctx, file_id: str) -> web.StreamResponse:
        info = self._file_for(ctx, file_id)
        return web.Response(
            body=self._file_content[info["id"]],
            content_type=info["mime_type"] or "application/octet-stream",
            headers={"Content-Disposition": f'attachment;filename="{info["name"]}"', "X-Content-Type-Options": "nosniff"},
        )

    async def h_file_info(self, ctx: _Ctx, file_id: str) -> tuple[int, Any]:
        return 200, dict(self._file_for(ctx, file_id))


class _Ctx:
    """One REST request as a handler sees it."""

    def __init__(self, fake: Any, request: web.Request, request_id: str, user_id: str | None) -> None:
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
            raise bad_body(name) from None
        return self.body_value

    def id_param(self, value: str, name: str) -> str:
        if not is_valid_id(value):
            raise bad_url(name)
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
            raise bad_url("page") from None
        if page < 0:
            raise bad_url("page")
        if per_page < 0:
            raise bad_url("per_page")
        return page, min(per_page, 200)  # real: capped at 200
