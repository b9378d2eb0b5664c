"""Use cases that sum the record up: stats over a team's incidents, and the postmortem export."""

from __future__ import annotations

from datetime import timedelta

from incident_bot.app.core import Core
from incident_bot.app.request import Request, UserError
from incident_bot.app.teams import Teams
from incident_bot.chat.errors import MattermostError
from incident_bot.domain import export, messages
from incident_bot.domain.commands import Command
from incident_bot.domain.format import format_duration
from incident_bot.domain.models import Incident
from incident_bot.store.base import Transaction

STATS_DAYS = 30


class Reports:
    def __init__(self, core: Core, teams: Teams) -> None:
        self.core = core
        self.teams = teams

    async def stats(self, req: Request, cmd: Command) -> None:
        core = self.core
        shared = await self.teams.scope(req, cmd.team)
        days = cmd.days or STATS_DAYS
        since = core.now() - timedelta(days=days)
        async with core.store.read() as tx:
            # Aggregated by the store: every incident counts, none is loaded.
            figures = await tx.incident_stats([t.id for t in shared], since)

        def duration(seconds: float | None) -> str | None:
            return format_duration(timedelta(seconds=seconds)) if seconds is not None else None

        await core.reply(
            req,
            messages.stats(
                [t.name for t in shared],
                days,
                figures.by_severity,
                figures.open_now,
                duration(figures.median_seconds),
                duration(figures.mean_seconds),
                figures.resolved,
            ),
        )

    async def export(self, req: Request, cmd: Command) -> None:
        core = self.core
        if req.is_dm:
            if cmd.incident is None:
                raise UserError(messages.need_incident_channel(self.core.bot_name, "export"))
            incident = await core.incident_for(req, cmd.incident, "export")
        else:
            # The file quotes the incident channel: it goes there or to a DM, never to a channel
            # (or another incident's channel) where people outside the incident would read it.
            async with core.store.transaction() as tx:
                here = await tx.get_incident_by_channel(req.channel_id)
            if here is None or (cmd.incident is not None and cmd.incident != here.number):
                raise UserError(messages.export_where(cmd.incident))
            incident = await core.incident_for(req, None, "export")
        fmt = cmd.format or "md"
        content = await self.render(incident, fmt)
        name = export.filename(incident, fmt)
        info = await core.chat.upload_file(
            req.channel_id, name, content.encode("utf-8"), mime="application/json" if fmt == "json" else "text/markdown"
        )
        await core.reply(req, messages.exported(incident, name), file_ids=[info.id])

    async def render(self, incident: Incident, fmt: str) -> str:
        core = self.core
        participants: set[str] = set()
        if incident.channel_id:
            try:
                participants = set(await core.chat.get_channel_member_ids(incident.channel_id))
            except MattermostError:
                pass
        participants.discard(core.bot_id)
        try:
            team_name = (await core.directory.team(incident.team_id)).name
        except MattermostError:
            team_name = incident.team_id
        async with core.store.transaction() as tx:
            items = await tx.list_checklist(incident.number, include_removed=True)
            events = await tx.list_timeline(incident.number)
        ids = export.user_ids(incident, items, events) | participants
        names = await core.directory.names(ids)
        usernames = {uid: names(uid).lstrip("@") for uid in ids}

        async def remember(tx: Transaction) -> None:
            # Remembered so `incident-bot export` can name people without Mattermost.
            await tx.set_state(f"team:{incident.team_id}", team_name)
            for uid, username in usernames.items():
                await tx.set_state(f"user:{uid}", username)
            await tx.set_state(f"participants:{incident.number}", sorted(participants))

        await core.commit(None, write=remember)
        data = export.record(
            incident, items, events, usernames, sorted(participants | export.actor_ids(events)), team_name, core.now()
        )
        return export.render(data, fmt)
