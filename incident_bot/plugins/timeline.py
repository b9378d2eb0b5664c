"""Timeline, status updates, stats and export commands; 📌 reactions; edits and deletions of pinned posts."""

from __future__ import annotations

import structlog
from mmpy_bot import listen_to

from incident_bot.app.observe import current_trace
from incident_bot.app.reports import Reports
from incident_bot.app.request import Applied
from incident_bot.app.runner import Runner
from incident_bot.app.timeline import Timeline
from incident_bot.plugins.base import FLAGS, IncidentBotPlugin, command, handled
from incident_bot.plugins.framework import (
    IncidentMessage,
    PostChangeEvent,
    ReactionEvent,
    listen_to_post_change,
    listen_to_reaction,
)

log = structlog.get_logger("incident_bot.reactions")


class TimelinePlugin(IncidentBotPlugin):
    """The incident's record."""

    def __init__(self, runner: Runner, timeline: Timeline, reports: Reports, pin_emoji: str) -> None:
        super().__init__(runner)
        self.timeline = timeline
        self.reports = reports
        self.pin_emoji = pin_emoji

    @listen_to(command("note"), FLAGS)
    async def note(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Add a note to the timeline."""
        await self.run(message, "note", rest, self.timeline.note)

    @listen_to(command("timeline"), FLAGS)
    async def show(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Show the timeline."""
        await self.run(message, "timeline", rest, self.timeline.show)

    @listen_to(command("update"), FLAGS)
    async def update(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Post a status update."""
        await self.run(message, "update", rest, self.timeline.update)

    @listen_to(command("stats"), FLAGS)
    async def stats(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Incident counts and time to resolve."""
        await self.run(message, "stats", rest, self.reports.stats)

    @listen_to(command("export"), FLAGS)
    async def export(self, message: IncidentMessage, rest: str | None = None) -> None:
        """Upload the postmortem starter."""
        await self.run(message, "export", rest, self.reports.export)

    @listen_to_reaction(r"[a-z0-9_+-]+")
    async def pin(self, event: ReactionEvent) -> None:
        """📌 on a post in an incident channel adds it to the timeline; taken off, it comes off."""
        if event.emoji == self.pin_emoji:
            await handled("pin.handled", event, self.timeline.pin_reaction(event.key, event.reaction, event.added))

    @listen_to_post_change()
    async def post_changed(self, event: PostChangeEvent) -> None:
        """An edited or deleted post: a timeline entry quoting it follows."""
        error = None
        try:
            outcome = await self.timeline.post_changed(event.key, event.post, event.deleted)
        except Exception as exc:  # noqa: BLE001 - an edit must never stop the bot
            outcome, error = Applied.ERROR, type(exc).__name__
        if outcome != Applied.IGNORED:
            log.info(
                "post_change.handled",
                post=event.post.id,
                deleted=event.deleted,
                outcome=outcome,
                error=error,
                **current_trace().fields(),
            )
