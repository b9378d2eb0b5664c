"""What people do with the bot and read back, shared by scenario, fuzz and chaos tests."""

from __future__ import annotations

import re
from typing import Any

from tests.support.botproc import BotProcess
from tests.support.people import Person
from tests.support.world import World


def mention(world: World) -> str:
    return f"@{world.bot_username}"


async def start_incident(world: World, person: Person, text: str, channel: str = "ops/incidents"):
    """``@bot start TEXT`` in a team channel; (number, incident channel, command post, reply)."""
    post = await person.post(world.channel_ids[channel], f"{mention(world)} start {text}")
    reply = await person.wait_for_reply(post, contains="Started incident")
    number = int(re.search(r"incident #(\d+)", reply["message"]).group(1))
    name = re.search(r"~(incident-[a-z0-9-]+)", reply["message"]).group(1)
    channel_obj = await person.channel_by_name(world.team_ids["ops" if channel.startswith("ops") else "web"], name)
    assert channel_obj is not None
    return number, channel_obj, post, reply


async def checklist_posts(person: Person, channel_id: str):
    """The checklist header and its item replies, as people see them."""
    posts = await person.posts(channel_id)
    header = next(p for p in posts if p["message"].startswith("**Checklist of incident"))
    items = [p for p in await person.thread(header["id"]) if p["id"] != header["id"]]
    return header, items


async def wait_message(person: Person, post_id: str, pattern: str, timeout: float = 10) -> dict[str, Any]:
    """The post once its text matches ``pattern`` (see ``Person.wait_for_message``)."""
    return await person.wait_for_message(post_id, pattern, timeout=timeout)


async def exactly_one_reply(person: Person, post: dict[str, Any], bot: BotProcess, timeout: float = 30) -> dict[str, Any]:
    """The bot's reply to ``post``, once the bot noted it (so no second answer is on its way),
    checked to be the only one."""
    reply = await person.wait_for_reply(post, timeout=timeout)
    await bot.wait_answered(post, timeout=timeout)
    replies = await person.replies_to(post)
    assert len(replies) == 1, [r["message"] for r in replies]
    return reply


async def exported_file(person: Person, reply: dict[str, Any]) -> tuple[str, str]:
    """(file name, text) of the one file attached to a bot reply (``export``)."""
    assert len(reply.get("file_ids") or []) == 1, reply
    info = await person.file_info(reply["file_ids"][0])
    return info["name"], (await person.file(reply["file_ids"][0])).decode("utf-8")
