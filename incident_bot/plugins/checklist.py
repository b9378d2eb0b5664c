"""Checklist commands, and ✅ reactions on item posts."""

from __future__ import annotations

import structlog
from mmpy_bot import listen_to

from incident_bot.app.checklists import Checklists
from incident_bot.app.observe import current_trace
from incident_bot.app.runner import Runner
from incident_bot.plugins.base import FLAGS, IncidentBotPlugin, command, handled
from incident_bot.plugins.framework import (
    IncidentMessage,
    PostChangeEvent,
    ReactionEvent,
    listen_to_post_change,
    listen_to_reaction,
)

log = structlog.get_logger("incident_bot.checklist")


class ChecklistPlugin(IncidentBotPlugin):
    """Tick, edit and assign checklist items."""

    def __init__(self, runner: Runner, checklists: Checklists, tick_emojis: list[str]) -> None:
        super().__init__(runner)
        self.checklists = checklists
        self.tick_emojis = set(tick_emojis)

    @listen_to(command("checklist"), FLAGS)
    async def show(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Show the checklist."""
        await self.run(message, "checklist", rest, self.checklists.show)

    @listen_to(command("check"), FLAGS)
    async def check(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Tick an item."""
        await self.run(message, "check", rest, self.checklists.check)

    @listen_to(command("uncheck"), FLAGS)
    async def uncheck(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Untick an item."""
        await self.run(message, "uncheck", rest, self.checklists.uncheck)

    @listen_to(command("add"), FLAGS)
    async def add(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Add an item."""
        await self.run(message, "add", rest, self.checklists.add)

    @listen_to(command("remove"), FLAGS)
    async def remove(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Remove an item."""
        await self.run(message, "remove", rest, self.checklists.remove)

    @listen_to(command("rename"), FLAGS)
    async def rename(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Change an item's text."""
        await self.run(message, "rename", rest, self.checklists.rename)

    @listen_to(command("assign"), FLAGS)
    async def assign(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Assign an item."""
        await self.run(message, "assign", rest, self.checklists.assign)

    @listen_to(command("unassign"), FLAGS)
    async def unassign(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Clear an item's assignee."""
        await self.run(message, "unassign", rest, self.checklists.unassign)

    @listen_to_post_change()
    async def part_deleted(self, event: PostChangeEvent) -> None:
        """Someone deleted the pinned summary, the checklist header or an item post: made again."""
        if not event.deleted or event.post.user_id != self.checklists.core.bot_id:
            return
        try:
            part = await self.checklists.channel.restore(event.post)
        except Exception as exc:  # noqa: BLE001 - the repair after the next failure or start mends it
            log.warning("part.restore_failed", post=event.post.id, error=type(exc).__name__, detail=str(exc)[:200])
            return
        if part is not None:
            log.info("part.restored", post=event.post.id, part=part, **current_trace().fields())

    @listen_to_reaction(r"[a-z0-9_+-]+")
    async def tick(self, event: ReactionEvent) -> None:
        """A tick emoji on a checklist item post ticks it; taken off, it unticks it."""
        if event.emoji in self.tick_emojis:
            await handled("reaction.handled", event, self.checklists.reaction(event.key, event.reaction, event.added))
