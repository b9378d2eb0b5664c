"""The authorization matrix (issue 11, part 4): every command of the command table and every
reaction, by every kind of account, as people do it: post, react, read what comes back.

One incident, #1 of ``ops``, started by alice (the commander) with the ``basic`` checklist
(items 1 and 2), bob invited. The kinds of actor and where each one types:

==============  =========================================  =====================================
actor           who                                        posts in
==============  =========================================  =====================================
commander       alice                                      the incident channel
member          bob, in the incident channel               the incident channel
team            carol, in ``ops`` but not the channel      ~incidents of ops (with the number)
other_team      dave, in ``web`` only                      a DM with the bot (with the number)
guest           gina, a guest account in the channel       the incident channel
deactivated     dora, in the channel, deactivated after    the incident channel
                posting (the bot was down: catch-up
                brings her posts)
other_bot       helper-bot, a bot account in the channel   the incident channel
self            the bot's own account                      the incident channel
==============  =========================================  =====================================

``ALLOWED`` says what each may do; every other command is refused, with a reply to people
(``team``, ``other_team``, ``guest``) and with no reply at all to bots and deactivated accounts.
A refused command or an ignored reaction changes nothing: the database (incidents, checklist,
timeline, playbooks, outbox) and every post people can see are the same before and after.
For ``other_team`` every command that names incident 1 is also sent with a number that
exists nowhere, and both answers read the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from incident_bot.app.core import REPLY_PROP
from incident_bot.domain.commands import COMMANDS
from tests.support.botproc import BotProcess
from tests.support.people import ApiError, Person
from tests.support.scenario import checklist_posts, mention, start_incident
from tests.support.world import World

ACTORS = ("commander", "member", "team", "other_team", "guest", "deactivated", "other_bot", "self")

_EVERYONE = frozenset({"start", "list", "history", "stats", "playbooks", "playbook", "help"})  # in their own teams
_TEAM = _EVERYONE | {"info", "join"}  # may read the summary of the team's incidents and join them
# ``join`` by someone already in the channel is refused by the state (already a member), not by access.
_CHANNEL = frozenset(COMMANDS) - {"join"}

ALLOWED: dict[str, frozenset[str]] = {
    "commander": _CHANNEL,
    "member": _CHANNEL,
    "team": _TEAM,
    "other_team": _EVERYONE,
    "guest": frozenset(),
    "deactivated": frozenset(),
    "other_bot": frozenset(),
    "self": frozenset(),
}
ANSWERED = frozenset({"commander", "member", "team", "other_team", "guest"})  # the others get no reply at all

# The order commands run in: every one succeeds for the commander and the member in turn
# (end before reopen, check before uncheck, assign before unassign, their own new item removed).
ORDER = (
    *("info", "list", "history", "checklist", "timeline", "help", "stats", "playbooks", "playbook", "sev", "update"),
    *("note", "add", "check", "uncheck", "rename", "assign", "unassign", "remove", "commander", "export", "end"),
    *("reopen", "join", "start"),
)
NEW_ITEM = {"commander": 3, "member": 4}  # the basic playbook has items 1 and 2; each adds one


def command_texts(actor: str, n: int, names: dict[str, str]) -> dict[str, str]:
    """Each command as ``actor`` types it about incident ``n`` (``names``: logical -> real username)."""
    other = names["bob"] if actor == "commander" else names["alice"]
    return {
        "start": f"start Matrix by {actor}",
        "end": f"end {n} matrix done",
        "info": f"info {n}",
        "list": "list",
        "history": "history",
        "join": f"join {n}",
        "commander": f"commander {n} @{other}",
        "sev": f"sev {n} {2 if actor == 'commander' else 1}",
        "update": f"update Matrix update by {actor}",
        "checklist": "checklist",
        "check": "check 1",
        "uncheck": "uncheck 1",
        "add": f"add Matrix item by {actor}",
        "remove": f"remove {NEW_ITEM.get(actor, 1)}",
        "rename": f"rename 2 Renamed by {actor}",
        "assign": f"assign 2 @{other}",
        "unassign": "unassign 2",
        "note": f"note Matrix note by {actor}",
        "timeline": "timeline",
        "export": f"export {n}",
        "reopen": f"reopen {n}",
        "stats": "stats",
        "playbooks": "playbooks",
        "playbook": f"playbook create matrix-{actor.replace('_', '-')} One step",
        "help": "help",
    }


def test_the_order_and_the_texts_cover_the_command_table() -> None:
    names = {"alice": "alice", "bob": "bob"}
    assert sorted(ORDER) == sorted(COMMANDS)
    assert set(command_texts("team", 1, names)) == set(COMMANDS)


class Matrix:
    """The incident, its people and what they see; ``snapshot`` is all a refusal must not change."""

    def __init__(self, world: World, bot: BotProcess, cast: dict[str, Person], n: int, channel: dict[str, Any]) -> None:
        self.world, self.bot, self.n, self.channel = world, bot, n, channel
        self.actors: dict[str, Person] = {
            "commander": world.alice,
            "member": world.bob,
            "team": world.carol,
            "other_team": world.dave,
            "guest": cast["gina"],
            "deactivated": cast["dora"],
            "other_bot": cast["helper-bot"],
            "self": Person(
                world.url, world.bot_token, world.bot_username, world.bot_user_id, world.bot_user_id, world.bot_username
            ),
        }
        world.people["self"] = self.actors["self"]  # closed with the others
        self.names = {name: p.username for name, p in world.people.items()}
        self.outcomes: dict[tuple[str, str], str] = {}  # (actor, command or reaction) -> "allowed" / "refused"
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[tuple[str, str], str] = {}  # (actor, command) -> the reply people read

    def texts(self, actor: str, n: int | None = None) -> dict[str, str]:
        return command_texts(actor, self.n if n is None else n, self.names)

    async def handled(self, post: dict[str, Any], outcome: str) -> None:
        """The bot's log line for this command says ``outcome``."""
        line = await self.bot.wait_for_log("command.handled", key=f"posted:{post['id']}")
        assert line["outcome"] == outcome, (post["message"], line)

    async def barrier(self) -> None:
        """Everything before it in the incident channel has been handled: the channel's events
        are handled in order, and this one (a usage error) changes nothing."""
        post = await self.post("commander", "sev 9")
        await self.world.alice.wait_for_reply(post, contains="Usage")

    async def refused_commands(self, actor: str) -> None:
        """Every command ``actor`` may not use, sent at once; each refused (people read why) or ignored."""
        texts = self.texts(actor)
        words = [w for w in ORDER if w not in ALLOWED[actor]]
        posts = [await self.post(actor, texts[w]) for w in words]
        self.sent[actor] = posts
        for word, post in zip(words, posts, strict=True):
            if actor in ANSWERED:
                reply = await self.actors[actor].wait_for_reply(post)
                self.answers[actor, word] = reply["message"]
                await self.handled(post, "refused")
            elif actor != "self":  # the bot's own posts are not even looked at
                await self.handled(post, "ignored")
            self.outcomes[actor, word] = "refused"

    async def ignored_reactions(self, actor: str, reactions: tuple[tuple[str, dict[str, Any], str, bool], ...]) -> None:
        person = self.actors[actor]
        for what, post, emoji, added in reactions:
            await (person.react(post, emoji) if added else person.unreact(post, emoji))
            if actor != "self":  # the bot's own reactions are not even looked at
                event = "reaction.handled" if emoji == "white_check_mark" else "pin.handled"
                line = await self.bot.wait_for_log(event, user=person.id, post=post["id"], added=added)
                assert str(line["outcome"]).startswith("ignored"), line
            self.outcomes[actor, what] = "refused"

    async def not_found_reads_as_other_team(self) -> None:
        """dave (other team) asked about incident n, and about one that exists nowhere: the same answer."""
        real, nowhere = self.texts("other_team"), self.texts("other_team", 999)
        words = [w for w in ORDER if real[w] != nowhere[w] and w not in ALLOWED["other_team"]]
        assert {"end", "info", "join", "export", "reopen"} <= set(words)
        for word in words:
            post = await self.post("other_team", nowhere[word])
            reply = await self.actors["other_team"].wait_for_reply(post)
            assert reply["message"].replace("999", str(self.n)) == self.answers["other_team", word], word

    async def allowed_command(self, actor: str, word: str) -> None:
        post = await self.post(actor, self.texts(actor)[word])
        await self.actors[actor].wait_for_reply(post)
        await self.handled(post, "ok")
        self.outcomes[actor, word] = "allowed"

    async def allowed_reactions(self, actor: str, item: dict[str, Any], pinnable: dict[str, Any]) -> None:
        person, alice = self.actors[actor], self.world.alice
        await person.react(item)
        await alice.wait_for_message(item["id"], "☑")
        await person.unreact(item)
        await alice.wait_for_message(item["id"], "☐")
        await person.react(pinnable, "pushpin")
        await self.bot.wait_for_log("pin.handled", user=person.id, post=pinnable["id"], added=True, outcome="pinned")
        await person.unreact(pinnable, "pushpin")
        await self.bot.wait_for_log("pin.handled", user=person.id, post=pinnable["id"], added=False, outcome="unpinned")
        for what in ("tick", "untick", "pin", "unpin"):
            self.outcomes[actor, what] = "allowed"

    def table(self) -> str:
        """The matrix as a Markdown table (printed by the test, for the record)."""
        columns = [*ORDER, "tick", "untick", "pin", "unpin"]
        lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for actor in ACTORS:
            cells = ["✔" if self.outcomes[actor, c] == "allowed" else "✘" for c in columns]
            lines.append(f"| {actor} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    async def where(self, actor: str) -> str:
        if actor == "team":
            return self.world.channel_ids["ops/incidents"]
        if actor == "other_team":
            return (await self.actors[actor].dm_channel(self.world.bot_user_id))["id"]
        return self.channel["id"]

    async def post(self, actor: str, text: str) -> dict[str, Any]:
        return await self.actors[actor].post(await self.where(actor), f"{mention(self.world)} {text}")

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        db = {
            table: self.bot.db(f"select * from {table} order by 1, 2")
            for table in ("incidents", "checklist_items", "timeline", "playbooks")
        }
        db["outbox"] = self.bot.db("select key, message from outbox order by key")
        return db

    async def posts(self) -> set[tuple[Any, ...]]:
        """Every post people see in the channels of the matrix, but the commands and their replies."""
        seen = set()
        alice = self.world.alice
        for channel_id in (self.channel["id"], self.world.channel_ids["ops/incidents"], self.world.channel_ids["web/incidents"]):
            for p in await alice.posts(channel_id):
                if p["message"].startswith(mention(self.world)) or REPLY_PROP in p.get("props", {}):
                    continue
                seen.add((p["id"], p["message"], p.get("is_pinned", False), p.get("edit_at", 0)))
        return seen

    async def unchanged(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` (refused commands, ignored reactions) and check it changed nothing."""
        db, posts = self.snapshot(), await self.posts()
        await action()
        assert self.snapshot() == db
        assert await self.posts() == posts


async def test_every_command_and_reaction_by_every_kind_of_actor(world: World, cast: dict[str, Person], bot: BotProcess):
    n, channel, _post, _reply = await start_incident(
        world, world.alice, f"Matrix outage --playbook basic --invite @{world.bob.username}"
    )
    for name in ("gina", "dora", "helper-bot"):
        await world.admin.add_member(channel["id"], cast[name].id)
    m = Matrix(world, bot, cast, n, channel)
    _header, items = await checklist_posts(world.alice, channel["id"])
    pinnable = await world.alice.post(channel["id"], "Dashboards show 500s since 14:02")

    # Reactions: ✅ tick and untick on item 1, the timeline's 📌 on and off a post of the channel.
    reactions = (
        ("tick", items[0], "white_check_mark", True),
        ("untick", items[0], "white_check_mark", False),
        ("pin", pinnable, "pushpin", True),
        ("unpin", pinnable, "pushpin", False),
    )

    # People outside the channel cannot even react there: Mattermost refuses them.
    for actor in ("team", "other_team"):
        for what, post, emoji, _added in reactions[::2]:
            with pytest.raises(ApiError) as refused:
                await m.actors[actor].react(post, emoji)
            assert refused.value.status == 403
            m.outcomes[actor, what] = m.outcomes[actor, what.replace("tick", "untick").replace("pin", "unpin")] = "refused"

    # Everyone but the commander and the member: the refused commands first, all at once, and
    # their reactions; nothing may change.
    live = ("team", "other_team", "guest", "other_bot", "self")

    async def refused_by_the_live_ones() -> None:
        await asyncio.gather(*(m.refused_commands(actor) for actor in live))
        for actor in ("guest", "other_bot", "self"):
            await m.ignored_reactions(actor, reactions)
        await m.barrier()
        for actor in ("self",):
            for post in m.sent[actor]:
                assert await world.alice.replies_to(post) == []

    await m.unchanged(refused_by_the_live_ones)
    await m.not_found_reads_as_other_team()

    # Dora posts and reacts while the bot is down, and is deactivated before it comes back.
    await bot.stop()

    async def refused_deactivated() -> None:
        sent = [await m.post("deactivated", m.texts("deactivated")[word]) for word in ORDER]
        for _what, post, emoji, _added in reactions[::2]:
            await m.actors["deactivated"].react(post, emoji)
        await world.admin.request("DELETE", f"/users/{cast['dora'].id}")
        await bot.start()
        await bot.wait_for_log("catchup.done")
        for post in sent:
            await m.handled(post, "ignored")
        await m.barrier()
        for post in sent:
            assert await world.alice.replies_to(post) == []
        for what in (*ORDER, "tick", "untick", "pin", "unpin"):
            m.outcomes["deactivated", what] = "refused"

    await m.unchanged(refused_deactivated)

    # The commander and the member are in the channel already: `join` is refused by the state.
    await m.unchanged(lambda: asyncio.gather(m.refused_commands("commander"), m.refused_commands("member")))

    # What the team and the other team may do, then the commander and the member: all the rest.
    for actor in ("team", "other_team", "commander", "member"):
        for word in ORDER:
            if word in ALLOWED[actor]:
                await m.allowed_command(actor, word)
    for actor in ("commander", "member"):
        await m.allowed_reactions(actor, items[0], pinnable)

    assert {(a, w) for (a, w), o in m.outcomes.items() if o == "allowed"} == {(a, w) for a in ACTORS for w in ALLOWED[a]} | {
        (a, r) for a in ("commander", "member") for r in ("tick", "untick", "pin", "unpin")
    }
    assert len(m.outcomes) == len(ACTORS) * (len(COMMANDS) + 4)
    print(m.table())
