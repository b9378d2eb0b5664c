"""The bot's app layer in-process, wired as runtime wires it, on a real SQLite file and the
in-memory chat double: people post and react, the pipeline runs, tests read what the bot posted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from incident_bot.app.actions import Answer, Click, Submission
from incident_bot.app.core import REPLY_PROP
from incident_bot.chat.events import Posted, ReactionAdded, ReactionRemoved
from incident_bot.chat.models import Channel, Post, Team, User
from incident_bot.config import PlaybookSettings, Settings
from incident_bot.runtime import Bot
from incident_bot.store.sqlite import SQLiteStore
from tests.support.chat_double import ChatDouble, new_id

BUTTONS_SECRET = "in-process-actions-secret-0123456789"


@dataclass
class App:
    bot: Bot
    chat: ChatDouble
    store: SQLiteStore
    ops: Team
    web: Team
    room: Channel  # ops' public channel, everyone of ops in it
    people: dict[str, User] = field(default_factory=dict)

    def __getattr__(self, name: str) -> User:
        people = self.__dict__.get("people", {})
        if name in people:
            return people[name]
        raise AttributeError(name)

    async def settle(self) -> None:
        await self.bot.pipeline.queues.settled()

    async def post(self, who: User, channel: Channel, message: str, root_id: str = "", *, late: bool = False) -> Post:
        """``who`` posts; the pipeline handles it as the stream would deliver it."""
        post = self.chat.person_posts(channel, who, message, root_id)
        self.bot.pipeline.handle(
            Posted(post=post, channel_type=channel.type, channel_name=channel.name, team_id=channel.team_id), replayed=late
        )
        await self.settle()
        return post

    async def say(self, who: User, message: str, channel: Channel | None = None, root_id: str = "") -> str:
        """``who`` mentions the bot; returns the one reply's text."""
        post = await self.post(who, channel or self.room, f"@incident-bot {message}", root_id)
        return self.reply_to(post).message

    async def dm(self, who: User, message: str) -> str:
        channel = next((c for c in self.chat.channels.values() if c.type == "D" and who.id in self.chat.members[c.id]), None)
        post = await self.post(who, channel or self.chat.dm(who), message)
        return self.reply_to(post).message

    def replies_to(self, post: Post) -> list[Post]:
        return [p for p in self.chat.posts.values() if p.props.get(REPLY_PROP) == post.id]

    def reply_to(self, post: Post) -> Post:
        replies = self.replies_to(post)
        assert len(replies) == 1, f"expected one reply to {post.message!r}, got {[r.message for r in replies]}"
        return replies[0]

    async def react(self, who: User, post_id: str, emoji: str = "white_check_mark", *, added: bool = True) -> None:
        if added:
            event: ReactionAdded | ReactionRemoved = ReactionAdded(reaction=self.chat.react(post_id, who, emoji))
        else:
            event = ReactionRemoved(reaction=self.chat.unreact(post_id, who, emoji))
        self.bot.pipeline.handle(event)
        await self.settle()

    async def click(self, who: User, post_id: str, action_id: str, option: str | None = None) -> Answer:
        """``who`` clicks a button of the post as the server would deliver it (its stored context)."""
        post = self.chat.posts[post_id]
        action = next(
            a for att in post.props.get("attachments") or [] for a in att.get("actions") or [] if a.get("id") == action_id
        )
        context = dict(action["integration"]["context"])
        if option is not None:
            context["selected_option"] = option
        channel = self.chat.channels[post.channel_id]
        click = Click(
            user_id=who.id,
            channel_id=post.channel_id,
            team_id=channel.team_id,
            post_id=post_id,
            trigger_id=new_id("t"),
            context=context,
        )
        return await self.bot.actions.click(click)

    async def submit(self, who: User, dialog: dict[str, Any], text: str, channel: Channel) -> Answer:
        """``who`` submits a dialog the bot opened (as ``open_dialog`` got it) with ``text``."""
        inner = dialog["dialog"]
        sub = Submission(
            type="dialog_submission",
            callback_id=inner["callback_id"],
            state=inner["state"],
            user_id=who.id,
            channel_id=channel.id,
            team_id=channel.team_id,
            submission={"text": text},
        )
        return await self.bot.actions.submit(sub)

    def channel_of(self, number: int) -> Channel:
        return next(c for c in self.chat.channels.values() if c.name.startswith(f"incident-{number}-"))

    async def start(self, who: User | None = None, title: str = "DB down", options: str = "") -> Channel:
        text = await self.say(who or self.alice, f"start {title} {options}".strip())
        number = int(text.split("#", 1)[1].split()[0].rstrip(":.,*"))
        return self.channel_of(number)


@asynccontextmanager
async def in_process(tmp_path: Path, *, buttons: bool = False) -> AsyncIterator[App]:
    """ops (alice, bob, carol) and web (alice, dave); erin in no team; ops has ~incidents and ~announcements.
    ``buttons``: with callback_url and actions_secret set."""
    settings = Settings(
        mattermost_url="http://chat.test",
        bot_token="test-token",
        callback_url="http://bot.test:9102" if buttons else None,
        actions_secret=SecretStr(BUTTONS_SECRET) if buttons else None,
        database=tmp_path / "bot.db",
        announcement_channels={"ops": "announcements"},
        playbooks=[PlaybookSettings(name="database", default_severity=2, items=["Page the DBA", "Check lag"])],
    )
    me = User(id=new_id("b"), username="incident-bot", is_bot=True)
    chat = ChatDouble(bot=me)
    people = {name: chat.add_user(name) for name in ("alice", "bob", "carol", "dave", "erin")}
    ops = chat.add_team("ops", people["alice"], people["bob"], people["carol"])
    web = chat.add_team("web", people["alice"], people["dave"])
    room = chat.add_channel(ops, "incidents", people["alice"], people["bob"], people["carol"])
    chat.add_channel(ops, "announcements")
    store = SQLiteStore(settings.database)
    await store.open()
    bot = Bot(settings, store, chat, me)  # type: ignore[arg-type]  # the double stands in for the REST client
    await bot.cursor.load()
    try:
        yield App(bot=bot, chat=chat, store=store, ops=ops, web=web, room=room, people=people)
    finally:
        await bot.pipeline.drain(1)
        await store.close()
