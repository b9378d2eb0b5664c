"""``incident-bot register-command``: create or update the `/incident` slash command of a team.

Needs an admin's token (custom slash commands are managed by admins by default); it is
used for these calls only and stored nowhere. The command points at
``{callback_url}/mattermost/command``; its token (the same on every update) goes into
``slash_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import MattermostError
from incident_bot.config import Settings

TRIGGER = "incident"
COMMAND_PATH = "/mattermost/command"


class RegisterError(Exception):
    """The command could not be registered; the message says why, for the operator."""


@dataclass
class Registered:
    command: dict[str, Any]
    created: bool


def command_body(team_id: str, url: str) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "trigger": TRIGGER,
        "method": "P",
        "url": url,
        "display_name": "Incident",
        "description": "Start and run incidents with incident-bot",
        "auto_complete": True,
        "auto_complete_desc": "start, end, update, info, list … (/incident help)",
        "auto_complete_hint": "[command]",
    }


async def register_command(settings: Settings, admin_token: str, team_name: str) -> Registered:
    base = settings.callback_base()
    if not base:
        raise RegisterError(
            "callback_url: not set and ops_address is off; set callback_url to the URL Mattermost reaches the bot at"
        )
    url = base + COMMAND_PATH
    async with MattermostClient(settings.mattermost_url, admin_token, retries=2) as admin:
        try:
            team = await admin.get_team_by_name(team_name)
            if team is None:
                raise RegisterError(f"--team: no team named {team_name!r} (or the admin token cannot see it)")
            existing = await admin.list_commands(team.id)
            mine = next((c for c in existing if c.get("trigger") == TRIGGER and not c.get("delete_at")), None)
            if mine is None:
                return Registered(await admin.create_command(command_body(team.id, url)), created=True)
            updated = {**mine, **command_body(team.id, url)}
            return Registered(await admin.update_command(updated), created=False)
        except MattermostError as exc:
            if exc.status == 401:
                raise RegisterError("the admin token was refused (401)") from None
            if exc.status == 403:
                raise RegisterError("the token may not manage slash commands (403); use a system admin's token") from None
            if exc.status == 501:
                raise RegisterError("custom slash commands are off: set ServiceSettings.EnableCommands to true") from None
            raise RegisterError(f"Mattermost answered {exc.status}: {exc.message}") from None
