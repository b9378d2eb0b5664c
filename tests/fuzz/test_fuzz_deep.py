"""Fuzz at depth (``make fuzz``, kept out of ``make test``): 100,000 generated command texts
and 100,000 generated WebSocket frames through the app wired in-process (the pipeline, every
use case, a real SQLite file, the chat double), in seeded shards.

Each shard checks what people would notice: the bot never crashes, every command addressed
to it gets exactly one reply and a post not addressed to it none, a redelivered frame has no
second effect, no reply says "Something went wrong", and nothing is logged as an error or
with a traceback (the event loop's own exception handler included).

``INCIDENT_BOT_FUZZ_COMMANDS`` / ``INCIDENT_BOT_FUZZ_FRAMES`` set the totals (default 100,000
each), ``INCIDENT_BOT_FUZZ_SEED`` the seed (printed on failure with the shard, so a failure
replays with the same seed); shards spread over the pytest-xdist workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from incident_bot.app.core import REPLY_PROP
from incident_bot.chat.events import Malformed, Posted, parse_frame
from incident_bot.chat.models import Channel, Post, User
from incident_bot.domain.commands import COMMAND_WORDS
from tests.support.inprocess import App, in_process

pytestmark = pytest.mark.slow

COMMANDS = int(os.environ.get("INCIDENT_BOT_FUZZ_COMMANDS", "100000"))
FRAMES = int(os.environ.get("INCIDENT_BOT_FUZZ_FRAMES", "100000"))
SEED = int(os.environ.get("INCIDENT_BOT_FUZZ_SEED", "20261126"))
SHARDS = 20  # a fresh bot per shard keeps the chat double's post list short
BATCH = 100  # events fed before waiting for the pipeline: channels run in parallel, as live

WORDS = [*COMMAND_WORDS, "START", "Check", "SEV", "frob", "", "#1", "--sev", "chec", "startx", "💥", "`x`", "@here"]
TOKENS = [
    *[
        "1",
        "2",
        "3",
        "99",
        "#1",
        "#2",
        "-1",
        "0",
        "1.5",
        "--sev",
        "-s",
        "5",
        "--team",
        "ops",
        "web",
        "--playbook",
        "database",
        "basic",
        "nope",
        "--limit",
        "abc",
        "--page",
    ],
    *[
        "--format",
        "json",
        "md",
        "@alice",
        "@bob",
        "@carol",
        "@dave",
        "@nobody",
        "@incident-bot",
        "--invite",
        "show",
        "create",
        "add",
        "remove",
        "delete",
        "--",
        ";",
    ],
    "@channel",
    "@all",
    "@here.",
    "x" * 80,
    "a|b",
    "# h",
    "`",
    "```",
    "\\",
    "~town-square",
    ":white_check_mark:",
    "\u200d",
    "é",
    "日本",
    "🔥",
]
JOINERS = [" ", "  ", "\n", " \t", "\r\n"]
ALPHABET = "".join(chr(c) for c in [*range(32, 127), 0xE9, 0x2014, 0x200D, 0x1F525, 0x0A, 0x09, 0x7C, 0x60])
LOG_FAILURES = {"error", "critical", "exception"}


def command_text(rng: random.Random) -> str:
    tokens = []
    for _ in range(rng.randrange(6)):
        if rng.random() < 0.7:
            tokens.append(rng.choice(TOKENS))
        else:
            tokens.append("".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1, 14))))
    text = rng.choice(WORDS)
    if tokens:
        text += " " + rng.choice(JOINERS).join(tokens)
    return text.strip() if rng.random() < 0.9 else text


# --- frames ------------------------------------------------------------------------------------

IDS = "ybndrfg8ejkmcpqxot1uwisza345h769"


def _id(rng: random.Random) -> str:
    return "".join(rng.choice(IDS) for _ in range(26))


def _json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 2 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randint(-(2**40), 2**40)
    if kind == 3:
        return rng.random() * 1e6
    if kind == 4:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(10)))
    if kind == 5:
        return [_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["id", "post", "data", "event", "x", "message", ""]): _json(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def _post_like(rng: random.Random) -> Any:
    if rng.random() < 0.3:
        return _json(rng)
    post: dict[str, Any] = {"id": _id(rng), "channel_id": _id(rng), "user_id": _id(rng)}
    for key, value in (
        ("message", rng.choice(["@incident-bot help", "hi", command_text(rng), ""])),
        ("create_at", rng.choice([rng.randint(0, 2**45), "12", -1, None])),
        ("props", _json(rng)),
        ("root_id", rng.choice(["", _id(rng), 5])),
        ("emoji_name", rng.choice(["white_check_mark", "pushpin", "x"])),
        ("post_id", _id(rng)),
    ):
        if rng.random() < 0.6:
            post[key] = value
    return post


def random_frame(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(40)))
    if kind == 1:
        return json.dumps(_json(rng))
    if kind == 2:
        return json.dumps({"event": "hello", "data": {"connection_id": _id(rng), "server_version": "11.4.0"}, "seq": 0})
    if kind == 3:
        return json.dumps({"seq_reply": rng.choice([0, 2, 7, "x"]), "status": rng.choice(["OK", "FAIL", ""])})
    name = rng.choice(["posted", "post_edited", "post_deleted", "reaction_added", "reaction_removed", "typing", "", "POSTED"])
    embedded = _post_like(rng)
    data: dict[str, Any] = {
        rng.choice(["post", "reaction"]): json.dumps(embedded) if rng.random() < 0.7 else embedded,
        "channel_type": rng.choice(["O", "D", 5]),
    }
    if rng.random() < 0.3:
        data["mentions"] = json.dumps([_id(rng)])
    envelope: dict[str, Any] = {"event": name, "data": data, "broadcast": _json(rng), "seq": rng.randint(-5, 2**33)}
    text = json.dumps(envelope)
    return text[: rng.randrange(1, len(text))] if kind == 6 else text


def posted_frame(post: Post, channel: Channel, seq: int) -> str:
    """A ``posted`` event as Mattermost sends it (``data.post`` is a JSON string)."""
    data = {
        "post": post.model_dump_json(),
        "channel_type": channel.type,
        "channel_name": channel.name,
        "channel_display_name": channel.display_name,
        "team_id": channel.team_id,
        "sender_name": "@someone",
    }
    return json.dumps({"event": "posted", "data": data, "broadcast": {"channel_id": channel.id}, "seq": seq})


# --- the run -------------------------------------------------------------------------------------


class Watch:
    """What must never happen: an error log, a traceback, an exception the loop saw."""

    def __init__(self) -> None:
        self.loop_errors: list[str] = []

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(str(context.get("exception") or context.get("message")))

    @staticmethod
    def bad_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e for e in logs if e.get("log_level") in LOG_FAILURES or "exc_info" in e or "Traceback" in str(e.get("detail", ""))
        ]


async def fuzz_people(app: App, count: int) -> list[tuple[User, Channel]]:
    """``count`` extra people with a DM to the bot, half of them in ops and its ~incidents."""
    people = []
    for i in range(count):
        user = app.chat.add_user(f"fuzz{i}")
        if i % 2 == 0:
            app.chat.team_members[app.ops.id].add(user.id)
            app.chat.members[app.room.id].add(user.id)
        people.append((user, app.chat.dm(user)))
    return people


def replies_by_post(app: App) -> Counter[str]:
    return Counter(str(p.props[REPLY_PROP]) for p in app.chat.posts.values() if p.props.get(REPLY_PROP))


def check_replies(app: App, addressed: list[Post], unaddressed: list[Post]) -> None:
    counts = replies_by_post(app)
    wrong = [(p.message, counts.get(p.id, 0)) for p in addressed if counts.get(p.id, 0) != 1]
    assert not wrong, f"addressed commands without exactly one reply: {wrong[:5]} ({len(wrong)} in all)"
    answered = [p.message for p in unaddressed if counts.get(p.id, 0)]
    assert not answered, f"posts not addressed to the bot got a reply: {answered[:5]}"
    failed = [p.message for p in app.chat.posts.values() if "Something went wrong" in p.message]
    assert not failed, f"the bot failed on: {failed[:3]}"


def per_shard(total: int, shard: int) -> int:
    return total // SHARDS + (1 if shard < total % SHARDS else 0)


@pytest.mark.parametrize("shard", range(SHARDS))
async def test_deep_command_texts(shard: int, tmp_path: Path) -> None:
    rng = random.Random(SEED * 1000 + shard)
    watch = Watch()
    asyncio.get_running_loop().set_exception_handler(watch.on_loop_error)
    count = per_shard(COMMANDS, shard)
    async with in_process(tmp_path) as app:
        incident = await app.start(title="Fuzzing", options="--playbook database --invite @bob @carol")
        people = await fuzz_people(app, 40)
        addressed: list[Post] = []
        unaddressed: list[Post] = []
        with capture_logs() as logs:
            for sent in range(count):
                where = rng.random()
                if where < 0.45:
                    user, channel = rng.choice(people)
                    post = app.chat.person_posts(channel, user, command_text(rng) or "help")
                    addressed.append(post)
                else:
                    channel = incident if where < 0.75 else app.room
                    user = rng.choice([app.alice, app.bob, app.carol])
                    mentioned = rng.random() < 0.95
                    text = ("@incident-bot " if mentioned else "") + command_text(rng)
                    post = app.chat.person_posts(channel, user, text)
                    (addressed if mentioned else unaddressed).append(post)
                event = Posted(post=post, channel_type=channel.type, channel_name=channel.name, team_id=channel.team_id)
                await app.bot.resync.on_event(event)
                if sent % BATCH == BATCH - 1:
                    await app.settle()
                    assert not Watch.bad_logs(logs), (SEED, shard, Watch.bad_logs(logs)[:3])
                    logs.clear()
            await app.settle()
            assert not Watch.bad_logs(logs), (SEED, shard, Watch.bad_logs(logs)[:3])
        assert len(addressed) + len(unaddressed) == count
        check_replies(app, addressed, unaddressed)
    assert not watch.loop_errors, (SEED, shard, watch.loop_errors[:3])


@pytest.mark.parametrize("shard", range(SHARDS))
async def test_deep_websocket_frames(shard: int, tmp_path: Path) -> None:
    """Random frames, and among them real ``posted`` frames addressed to the bot, some
    delivered twice: the real ones are answered exactly once, the rest change nothing."""
    rng = random.Random(SEED * 1000 + 500 + shard)
    watch = Watch()
    asyncio.get_running_loop().set_exception_handler(watch.on_loop_error)
    count = per_shard(FRAMES, shard)
    async with in_process(tmp_path) as app:
        people = await fuzz_people(app, 20)
        addressed: list[Post] = []
        sent_real: list[str] = []
        kinds: Counter[str] = Counter()
        with capture_logs() as logs:
            for sent in range(count):
                if rng.random() < 0.05:
                    if sent_real and rng.random() < 0.3:
                        frame = rng.choice(sent_real)  # redelivered
                    else:
                        user, channel = rng.choice(people)
                        post = app.chat.person_posts(channel, user, command_text(rng) or "help")
                        addressed.append(post)
                        frame = posted_frame(post, channel, sent)
                        sent_real.append(frame)
                else:
                    frame = random_frame(rng)
                event = parse_frame(frame)  # as the stream does; replies to its requests never get here
                kinds[type(event).__name__] += 1
                if event is not None:
                    await app.bot.resync.on_event(event)
                if sent % BATCH == BATCH - 1:
                    await app.settle()
                    assert not Watch.bad_logs(logs), (SEED, shard, Watch.bad_logs(logs)[:3])
                    logs.clear()
            await app.settle()
            assert not Watch.bad_logs(logs), (SEED, shard, Watch.bad_logs(logs)[:3])
        assert sum(kinds.values()) == count
        assert kinds[Malformed.__name__] > 0 and kinds[Posted.__name__] >= len(addressed)
        check_replies(app, addressed, [])
    assert not watch.loop_errors, (SEED, shard, watch.loop_errors[:3])
