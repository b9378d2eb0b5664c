"""The bot's database fails under it (issue 11, part 5): the disk fills, the file system turns
read-only, the file is damaged before a start. Commands get a clear refusal and leave no
partial state; a damaged file stops the start with a message and is never written."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from incident_bot.app.core import REPLY_PROP
from incident_bot.domain import messages
from tests.support.botproc import BotProcess, run_cli
from tests.support.needs import unavailable
from tests.support.scenario import mention, start_incident
from tests.support.smalldisk import SmallDisk, available
from tests.support.world import World

STATE = ("incidents", "checklist_items", "timeline", "playbooks", "outbox")
REFUSAL = messages.store_unwritable("REF").split(" (ref ")[0]  # the words before the ref


@pytest.fixture
async def small_disk_bot(world: World, tmp_path: Path) -> AsyncIterator[tuple[BotProcess, SmallDisk]]:
    why = available()
    if why:
        unavailable(why)
    bot = BotProcess(world, tmp_path)
    disk = SmallDisk(bot)
    await bot.start()
    try:
        yield bot, disk
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            assert await bot.stop() == 0
        text = bot.log_text()
        assert "Traceback" not in text and world.bot_token not in text
        bot.close()


def state(disk: SmallDisk) -> dict[str, list[tuple[object, ...]]]:
    return {table: disk.db(f"select * from {table} order by 1") for table in STATE}


def bot_posts(world: World, posts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The bot's own posts in the channel but its replies to commands: what a change would add or edit."""
    return [(p["id"], p["message"]) for p in posts if p["user_id"] == world.bot_user_id and REPLY_PROP not in p["props"]]


async def refused(world: World, channel_id: str, text: str) -> None:
    post = await world.alice.post(channel_id, f"{mention(world)} {text}")
    reply = await world.alice.wait_for_reply(post)
    assert reply["message"].startswith(REFUSAL), reply["message"]
    assert len(await world.alice.replies_to(post)) == 1


async def test_a_full_disk_then_a_read_only_one_refuse_commands_and_change_nothing(
    world: World, small_disk_bot: tuple[BotProcess, SmallDisk]
):
    bot, disk = small_disk_bot
    number, channel, *_ = await start_incident(world, world.alice, "Disk trouble --playbook basic")
    before, posts = state(disk), await world.alice.posts(channel["id"])

    disk.fill()
    await refused(world, channel["id"], "update Checking the disks")
    await refused(world, channel["id"], "add Free some space")
    line = await bot.wait_for_log("store.unwritable")
    assert "the disk is full" in line["detail"]
    assert state(disk) == before
    after = await world.alice.posts(channel["id"])
    assert bot_posts(world, after) == bot_posts(world, posts)  # no status update, no item: only the replies

    # Space again: the next command works, without a restart.
    disk.inside(disk.mount_point / "filler").unlink()
    disk.inside(disk.mount_point / "filler2").unlink()
    post = await world.alice.post(channel["id"], f"{mention(world)} update Space freed")
    assert "Posted the status update" in (await world.alice.wait_for_reply(post))["message"]

    # The file system turns read-only (an I/O error): refused again, nothing half written.
    before = state(disk)
    disk.turn_read_only()
    await refused(world, channel["id"], "note Disk went read-only")
    await refused(world, channel["id"], f"end {number}")
    dm = await world.alice.dm_bot(f"sev {number} 1")
    assert (await world.alice.wait_for_reply(dm))["message"]
    assert state(disk) == before
    line = await bot.wait_for_log("store.unwritable", count=4)
    assert "cannot be written" in line["detail"]


def _damaged(path: Path) -> None:
    """A real SQLite file whose first page (the schema) was overwritten."""
    con = sqlite3.connect(path)
    con.execute("create table t (a text)")
    con.executemany("insert into t values (?)", [("x" * 500,)] * 50)
    con.commit()
    con.close()
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 3000)


@pytest.mark.parametrize("damage", ["garbage", "damaged"])
async def test_a_damaged_database_stops_the_start_with_a_message_and_is_left_alone(world: World, tmp_path: Path, damage: str):
    db = tmp_path / "incident-bot.db"
    if damage == "garbage":
        db.write_bytes(b"this is not a database, just some text a person saved here\n" * 100)
    else:
        _damaged(db)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()

    code, out = await run_cli(world, tmp_path, "run")

    assert code == 2, out
    assert f"incident-bot: {db}: the file is" in out
    assert "It was left unchanged: restore it from a backup, or move it away to start with an empty database" in out
    assert "Traceback" not in out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "incident-bot.db-wal").exists() or (tmp_path / "incident-bot.db-wal").stat().st_size == 0
