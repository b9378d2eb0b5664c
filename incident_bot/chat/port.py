"""The chat port: the Mattermost calls the app makes, as a Protocol.

``MattermostClient`` implements it (checked by mypy in ``chat/client.py``); tests can
hand the app an in-memory double instead. Errors are those of ``chat.errors``:
``NotFound`` is turned into ``None``/``False`` where the signature says so,
``ServerUnavailable`` (and its ``RateLimited``) means "try again later".
"""

from __future__ import annotations

from typing import Any, Protocol

from incident_bot.chat.models import Channel, FileInfo, Post, Reaction, Team, User


class ChatPort(Protocol):
    """What app/ needs from Mattermost; keep it to the calls the app actually makes."""

    # --- users ---------------------------------------------------------------------------

    async def get_me(self) -> User:
        """The bot's own account."""
        ...

    async def get_users_by_ids(self, ids: list[str]) -> list[User]:
        """Users for the ids that exist (unknown ids are silently absent)."""
        ...

    async def get_user_by_username(self, username: str) -> User | None:
        """The user with that username (a leading @ is ignored), or None."""
        ...

    # --- teams ---------------------------------------------------------------------------

    async def get_user_teams(self, user_id: str = "me") -> list[Team]:
        """The teams the user is in."""
        ...

    async def get_team(self, team_id: str) -> Team:
        """The team; raises NotFound."""
        ...

    async def is_team_member(self, team_id: str, user_id: str) -> bool:
        """True when the user is a current member of the team."""
        ...

    # --- channels ------------------------------------------------------------------------

    async def get_channel(self, channel_id: str) -> Channel:
        """The channel; raises NotFound."""
        ...

    async def get_channel_by_name(self, team_id: str, name: str) -> Channel | None:
        """The team's channel with that name, or None."""
        ...

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
        ...

    async def patch_channel(self, channel_id: str, **fields: Any) -> Channel:
        """Change only the given fields (display_name, header, purpose, name …)."""
        ...

    async def get_user_channels(self, team_id: str, user_id: str = "me") -> list[Channel]:
        """The user's channels in the team, direct messages included."""
        ...

    async def is_channel_member(self, channel_id: str, user_id: str) -> bool:
        """True when the user is in the channel; raises Forbidden when the bot may not look."""
        ...

    async def add_channel_member(self, channel_id: str, user_id: str) -> None:
        """Add the user to the channel."""
        ...

    async def get_channel_member_ids(self, channel_id: str) -> list[str]:
        """Every member's user id."""
        ...

    async def create_direct_channel(self, user_a: str, user_b: str) -> Channel:
        """The direct-message channel of two users (created if missing)."""
        ...

    # --- posts ---------------------------------------------------------------------------

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
        """Post a message (a reply when root_id is set); retries never post twice."""
        ...

    async def get_post(self, post_id: str) -> Post | None:
        """The post, or None when it does not exist or was deleted."""
        ...

    async def patch_post(self, post_id: str, message: str | None = None, props: dict[str, Any] | None = None) -> Post:
        """Change the message and/or props (props replace the whole props map)."""
        ...

    async def pin_post(self, post_id: str) -> None:
        """Pin the post to its channel."""
        ...

    async def get_thread(self, post_id: str) -> list[Post]:
        """The root post and all its replies, oldest first."""
        ...

    async def get_posts_since(self, channel_id: str, since_ms: int) -> list[Post]:
        """Every post created, edited or deleted after ``since_ms`` (however many requests
        that takes), oldest first; deleted ones have delete_at set."""
        ...

    # --- reactions and files -------------------------------------------------------------

    async def get_reactions(self, post_id: str) -> list[Reaction]:
        """The post's reactions."""
        ...

    async def upload_file(self, channel_id: str, filename: str, content: bytes, mime: str = "text/markdown") -> FileInfo:
        """Upload one file to the channel; attach it with create_post(file_ids=[info.id])."""
        ...

    # --- slash commands and dialogs --------------------------------------------------------

    async def open_dialog(self, trigger_id: str, url: str, dialog: dict[str, Any]) -> None:
        """Open an interactive dialog for the person whose action gave ``trigger_id``;
        its submission is POSTed to ``url``. Raises BadRequest for an expired trigger."""
        ...

    async def post_ephemeral(self, user_id: str, channel_id: str, message: str) -> None:
        """A message only ``user_id`` sees, in the channel; not stored by the server."""
        ...

    async def post_command_response(self, response_url: str, response: dict[str, Any]) -> None:
        """Answer a slash command later through its ``response_url`` (``response_type``,
        ``text``): sent to this server's ``/hooks/commands/…`` only, whatever host the URL names."""
        ...

    # --- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Release the connection pool; the port is not used afterwards."""
        ...
