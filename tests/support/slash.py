"""The `/incident` slash command in scenarios: registered in every team as an admin does it,
and a bot configured with its tokens; what the server sends the bot, for tests that play it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.botproc import BotProcess, running_bot
from tests.support.people import Person
from tests.support.world import World

# The bot's URL is known only once it listens (port 0): registered first with this, then updated.
NOT_YET = "http://127.0.0.1:9/not-yet"


async def register(world: World, url: str) -> dict[str, dict[str, Any]]:
    """``/incident`` in each team (POST /commands, as the System Console does): team -> command."""
    commands = {}
    for team, team_id in world.team_ids.items():
        body = {"team_id": team_id, "trigger": "incident", "method": "P", "url": url, "display_name": "Incident"}
        commands[team] = await world.admin.request("POST", "/commands", json_body=body)
    return commands


async def point_at(world: World, commands: dict[str, dict[str, Any]], url: str) -> None:
    for command in commands.values():
        command["url"] = url
        await world.admin.request("PUT", f"/commands/{command['id']}", json_body=command)


async def running_slash_bot(world: World, workdir: Path, config_extra: str = "") -> AsyncIterator[BotProcess]:
    """A bot that answers the slash command of both teams (``bot.commands``: team -> command)."""
    commands = await register(world, NOT_YET)
    tokens = [command["token"] for command in commands.values()]
    extra = f"slash_tokens = {json.dumps(tokens)}\n{config_extra}"
    async for bot in running_bot(world, workdir, extra):
        await point_at(world, commands, await bot.ops_url() + "/mattermost/command")
        bot.commands = commands  # type: ignore[attr-defined]
        yield bot


async def call_bot(bot: BotProcess, fields: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST the form the server sends for a slash command straight to the bot: (status, answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(await bot.ops_url() + "/mattermost/command", data=fields, headers=headers or {}) as resp,
    ):
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body.decode(errors="replace")


def command_form(world: World, bot: BotProcess, person: Any, channel: str, text: str, trigger_id: str) -> dict[str, str]:
    """The form the server sends when ``person`` types ``/incident text`` in ``channel`` ("ops/incidents")."""
    team = channel.split("/")[0]
    command = bot.commands[team]  # type: ignore[attr-defined]
    return {
        "token": command["token"],
        "team_id": world.team_ids[team],
        "team_domain": team,
        "channel_id": world.channel_ids[channel],
        "channel_name": channel.split("/")[1],
        "user_id": person.user_id,
        "user_name": person.username,
        "command": "/incident",
        "text": text,
        "trigger_id": trigger_id,
        "root_id": "",
        "response_url": "",
    }


REPLY_PROP = "incident_bot_reply_to"


def now_ms() -> int:
    return int(time.time() * 1000) - 1


async def private(person: Person, channel_id: str, text: str, contains: str) -> str:
    """``/incident text``: answered to the person alone, right in the command's response."""
    answer = await person.slash(channel_id, f"/incident {text}")
    assert answer.get("response_type") == "ephemeral", answer
    assert contains in answer["text"], answer["text"]
    return str(answer["text"])


async def public(person: Person, channel_id: str, text: str, contains: str) -> dict[str, Any]:
    """``/incident text``: nothing private; the bot's answer is posted in the channel for everyone."""
    since = now_ms()
    answer = await person.slash(channel_id, f"/incident {text}")
    assert not answer.get("text"), answer
    bot = await person.bot_id()
    return await person.wait_for_post(
        channel_id,
        lambda p: p["user_id"] == bot and str(p["props"].get(REPLY_PROP, "")).startswith("slash:") and contains in p["message"],
        after_ms=since,
    )
