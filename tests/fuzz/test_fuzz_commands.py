"""Fuzz: whatever people type and whatever frames the server sends, the bot stays up, answers
every command exactly once, and an error changes nothing.

One fake server and one bot process serve every example of a property (a module fixture
with its own event loop; the loop runs while an example runs), so the examples are cheap.
Settings are kept quick for ``make test``; raise them with ``HYPOTHESIS_FUZZ_EXAMPLES=500``.
Hypothesis prints the falsifying example and its seed, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from incident_bot.chat.events import Malformed, parse_frame, parse_reply
from incident_bot.domain.commands import COMMAND_WORDS
from tests.fakes.world import close_world, make_fake_world
from tests.support.botproc import BotProcess
from tests.support.waiting import eventually
from tests.support.world import World

# One bot serves the module (see ``env``): under pytest-xdist the module stays on one worker.
pytestmark = [pytest.mark.fake_only, pytest.mark.xdist_group("fuzz")]

EXAMPLES = int(os.environ.get("HYPOTHESIS_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ERROR_OUTCOMES = {"usage", "refused", "error", "unknown", "help"}
# Tables whose rows are the incidents' state; dedupe keys, replies and bot state are bookkeeping.
STATE_TABLES = {
    "incidents": "select number, team_id, title, severity, status, commander_id, channel_id, summary_post_id, "
    "checklist_post_id, playbook, started_at, ended_at, ended_by, resolution, last_update_at, "
    "next_reminder_at from incidents order by number",
    "timeline": "select id, incident_number, at, kind, actor_id, text, post_id, data, deleted from timeline order by id",
    "checklist": "select incident_number, number, text, post_id, done_by, done_at, assignee_id, removed "
    "from checklist_items order by incident_number, number",
    "playbooks": "select team_id, name, description, default_severity, items from playbooks order by team_id, name",
}


def replies_by_command(world: World) -> dict[str, int]:
    """How many replies the bot posted to each command post (its replies name the command post)."""
    counts: dict[str, int] = {}
    for post in world.fake.all_posts():
        target = post["props"].get("incident_bot_reply_to")
        if post["user_id"] == world.bot_user_id and target:
            counts[target] = counts.get(target, 0) + 1
    return counts


@dataclass
class Env:
    loop: asyncio.AbstractEventLoop
    world: World
    bot: BotProcess
    channels: dict[str, str]  # where -> channel id
    asked: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (person, command post)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def state(self) -> dict[str, list[tuple]]:
        return {name: self.bot.db(sql) for name, sql in STATE_TABLES.items()}

    def log_count(self, event: str) -> int:
        return sum(1 for e in self.bot.current_log() if e.get("event") == event)

    def handled(self) -> list[dict[str, Any]]:
        return [e for e in self.bot.current_log() if e.get("event") == "command.handled"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    loop = asyncio.new_event_loop()
    world, _fake = loop.run_until_complete(make_fake_world())
    bot = BotProcess(world, Path(tmp_path_factory.mktemp("fuzz")))
    environment = Env(loop, world, bot, {})
    try:
        loop.run_until_complete(bot.start())

        async def setup() -> None:
            alice = world.alice
            post = await alice.post(
                world.channel_ids["ops/incidents"],
                f"@{world.bot_username} start Fuzzing --playbook basic --invite @{world.bob.username}",
            )
            reply = await alice.wait_for_reply(post, contains="Started incident")
            name = re.search(r"~(incident-[a-z0-9-]+)", reply["message"]).group(1)
            channel = await alice.channel_by_name(world.team_ids["ops"], name)
            environment.channels.update(
                incident=channel["id"],
                ops=world.channel_ids["ops/incidents"],
                dm=(await alice.dm_channel(world.bot_user_id))["id"],
            )

        loop.run_until_complete(setup())
        yield environment

        async def worked_through() -> None:
            # the bot handles a channel's events in order: a later command answered in each
            # channel means everything asked there before was handled
            alice = world.alice
            for where, channel_id in environment.channels.items():
                if where == "dm":
                    probe = await alice.dm_bot("help end")
                else:
                    probe = await alice.post(channel_id, f"@{world.bot_username} help end")
                await alice.wait_for_reply(probe, timeout=30)

        loop.run_until_complete(worked_through())
        counts = replies_by_command(world)
        for _person, post in environment.asked:
            assert counts.get(post["id"], 0) == 1, (post["message"], counts.get(post["id"], 0))
        assert bot.proc.returncode is None, "the bot died during the fuzz run"
        assert loop.run_until_complete(bot.stop()) == 0
        assert "Traceback" not in bot.log_text(), "a stack trace appeared in the bot's log"
    finally:
        if bot.proc is not None and bot.proc.returncode is None:
            loop.run_until_complete(bot.stop())
        bot.close()
        loop.run_until_complete(close_world(world))
        loop.close()


# --- command text ---------------------------------------------------------------------------

_words = st.sampled_from(
    [*COMMAND_WORDS, *(w.upper() for w in ("start", "check", "sev")), "frob", "", "#1", "--sev", "chec", "startx", "💥", "`x`"]
)
_tokens = st.one_of(
    st.sampled_from(
        [
            "1",
            "2",
            "3",
            "99",
            "#1",
            "-1",
            "0",
            "1.5",
            "--sev",
            "-s",
            "2",
            "5",
            "--team",
            "ops",
            "web",
            "--playbook",
            "basic",
            "nope",
            "--limit",
            "abc",
            "--format",
            "json",
            "md",
            "@alice",
            "@bob",
            "@dave",
            "@nobody",
            "@incident-bot",
            "--invite",
            "show",
            "create",
            "delete",
            "x" * 80,
            "--",
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x1F9FF), min_size=1, max_size=12),
)
_command = st.tuples(_words, st.lists(_tokens, max_size=5), st.sampled_from([" ", "  ", "\n", " \t"])).map(
    lambda t: (t[0] + (" " if t[1] else "") + t[2].join(t[1])).strip()
)


@FUZZ
@given(
    text=_command, where=st.sampled_from(["incident", "incident", "ops", "dm"]), who=st.sampled_from(["alice", "bob", "carol"])
)
def test_any_command_text_gets_exactly_one_reply_and_errors_change_nothing(env: Env, text: str, where: str, who: str):
    world = env.world
    person = world.people[who]
    if where == "incident" and person.user_id not in env.world.fake.members_of(env.channels["incident"]):
        where = "ops"  # a person can only post where they are a member
    before_state = env.state()
    before_handled = len(env.handled())

    async def example() -> dict[str, Any]:
        if where == "dm":
            post = await person.dm_bot(text or "help")
        else:
            post = await person.post(env.channels[where], f"@{world.bot_username} {text}")
        env.asked.append((person, post))
        reply = await person.wait_for_reply(post, timeout=20)
        await env.bot.wait_answered(post)  # noted: no second answer is on its way
        replies = await person.replies_to(post)
        assert len(replies) == 1, [r["message"] for r in replies]
        return reply

    reply = env.run(example())
    assert env.bot.proc.returncode is None
    assert "Traceback" not in reply["message"]
    handled = env.handled()[before_handled:]
    outcome = handled[-1]["outcome"] if handled else "unknown"  # unknown words and bare help log no outcome
    if outcome in ERROR_OUTCOMES:
        assert env.state() == before_state, f"{text!r} ({outcome}) changed the database"


# --- WebSocket frames -------------------------------------------------------------------------

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
_ids = st.text(alphabet="ybndrfg8ejkmcpqxot1uwisza345h769", min_size=26, max_size=26)
_event_names = st.sampled_from(
    [
        "posted",
        "post_edited",
        "post_deleted",
        "reaction_added",
        "reaction_removed",
        "typing",
        "status_change",
        "channel_updated",
        "",
        "POSTED",
    ]
)


def _post_like(draw_json: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        draw_json,
        st.fixed_dictionaries(
            {"id": _ids, "channel_id": _ids, "user_id": _ids},
            optional={
                "message": st.text(max_size=20),
                "create_at": st.one_of(st.integers(), st.text(max_size=3)),
                "props": _json,
                "root_id": st.text(max_size=5),
            },
        ),
    )


_embedded = st.one_of(_post_like(_json), _post_like(_json).map(json.dumps), st.text(max_size=30))
_data = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "post": _embedded,
            "reaction": _embedded,
            "channel_type": st.sampled_from(["O", "D", 5]),
            "mentions": st.one_of(_json, st.lists(_ids).map(json.dumps)),
        },
    ),
)
_envelope = st.fixed_dictionaries(
    {"event": st.one_of(_event_names, _json)},
    optional={
        "data": _data,
        "broadcast": _json,
        "seq": st.one_of(st.integers(-5, 2**33), st.booleans(), st.text(max_size=3), st.none()),
    },
)
_hello = st.fixed_dictionaries(
    {
        "event": st.just("hello"),
        "data": st.fixed_dictionaries({}, optional={"connection_id": _ids, "server_version": st.text(max_size=8)}),
    },
    optional={"seq": st.integers(0, 5)},
)
_frame = st.one_of(
    st.text(max_size=40),
    _json.map(json.dumps),
    _envelope.map(json.dumps),
    _hello.map(json.dumps),
    # replies to our requests; a failed authentication reply (seq_reply 1) closes the socket, so not here
    st.fixed_dictionaries(
        {
            "seq_reply": st.one_of(st.sampled_from([0, 2, 3, 7]), st.text(max_size=2)),
            "status": st.sampled_from(["OK", "FAIL", ""]),
        }
    ).map(json.dumps),
    _envelope.map(lambda e: json.dumps(e)[: max(1, len(json.dumps(e)) // 2)]),  # cut short
)


def malformed(frame: str) -> bool:
    """What the bot must log as malformed: not a reply to its requests, not an event it can read."""
    return parse_reply(frame) is None and isinstance(parse_frame(frame), Malformed)


@FUZZ
@given(frames=st.lists(_frame, min_size=1, max_size=5))
def test_any_frames_leave_the_bot_answering_and_malformed_ones_logged_once(env: Env, frames: list[str]):
    world = env.world
    start = len(env.bot.current_log())
    expected = Counter(f[:200] for f in frames if malformed(f))  # the log line shows the frame's first 200 characters

    def logged() -> Counter[str]:
        lines = env.bot.current_log()[start:]
        return Counter(e.get("frame", "") for e in lines if e.get("event") == "event.malformed" and e.get("frame") in expected)

    async def example() -> None:
        for frame in frames:
            await world.fake.faults.send_raw(frame, world.bot_user_id)
        post = await world.alice.dm_bot("list")
        env.asked.append((world.alice, post))
        await world.alice.wait_for_reply(post, timeout=30)
        await env.bot.wait_answered(post)  # noted: no second answer is on its way
        assert len(await world.alice.replies_to(post)) == 1
        # A hello or a sequence gap starts a catch-up, and live events (these frames too) wait
        # until it is done; catch-up may answer the command first. Wait for the frames' lines.
        await eventually(
            lambda: all(logged()[frame] >= n for frame, n in expected.items()), timeout=30, what="the malformed frames logged"
        )

    env.run(example())
    assert env.bot.proc.returncode is None
    # This example's malformed frames, each logged once (lines of earlier examples do not count).
    assert logged() == expected, frames
