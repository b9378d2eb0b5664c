"""The one writer of what the bot shows in and around an incident channel: the header, the
pinned summary, the checklist header and item posts, notices in the channel, the origin
thread and the announcement channel, and links to posts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from incident_bot.app.backlog import Backlog
from incident_bot.app.buttons import button_props
from incident_bot.app.core import Core, pending_id
from incident_bot.app.outbox import ANNOUNCE_SUFFIX, Outbox
from incident_bot.chat.errors import MattermostError, NotFound
from incident_bot.chat.models import Post
from incident_bot.domain import messages
from incident_bot.domain.messages import Names
from incident_bot.domain.models import ChecklistItem, Incident, OutboxEntry
from incident_bot.store.base import Transaction

log = structlog.get_logger("incident_bot.channel")

REFRESH_GATHER_SECONDS = 0.05  # refresh_soon: how long a pass waits for more of a burst
PART_PROP = "incident_bot_part"  # which part of an incident channel a bot post is: found again after a crash


def part_props(incident: int, part: str) -> dict[str, str]:
    """Props marking a post as one part of incident ``incident``'s channel (``summary``,
    ``checklist``, ``item:3``), so a restart finds a post it made but never noted."""
    return {PART_PROP: f"{incident}:{part}"}


def item_names(items: list[ChecklistItem]) -> list[str | None]:
    """The people an item post names: who ticked it and who it is assigned to."""
    return [i.done_by for i in items] + [i.assignee_id for i in items]


class ChannelWriter:
    def __init__(self, core: Core, backlog: Backlog, outbox: Outbox) -> None:
        self.core = core
        self.chat = core.chat
        self.backlog = backlog
        self.outbox = outbox
        self._buttons = core.settings.buttons() is not None  # the checklist header says Tick too
        # refresh_soon(): per incident, the last change asked for and the last one shown.
        self._asked: dict[int, int] = {}
        self._shown: dict[int, int] = {}
        self._passes: dict[int, asyncio.Task[None]] = {}

    # --- links and places -----------------------------------------------------------------

    async def permalink(self, team_id: str, post_id: str) -> str | None:
        try:
            team = await self.core.directory.team(team_id)
        except MattermostError:
            return None
        return f"{self.core.settings.mattermost_url}/{team.name}/pl/{post_id}"

    async def origin_link(self, incident: Incident) -> str | None:
        if not incident.origin_post_id or incident.origin_channel_id == incident.channel_id:
            return None
        return await self.permalink(incident.team_id, incident.origin_post_id)

    async def archived(self, incident: Incident) -> bool:
        """Someone archived the incident channel: nothing can be posted or edited there."""
        if incident.channel_id is None:
            return False
        try:
            return bool((await self.chat.get_channel(incident.channel_id)).delete_at)
        except NotFound:
            return False

    async def is_dm(self, channel_id: str) -> bool:
        try:
            channel = await self.chat.get_channel(channel_id)
        except MattermostError:
            return False
        return channel.type in ("D", "G")

    # --- the posts that follow a change (queued in its commit, sent by the outbox) --------

    def notice(self, key: str, channel_id: str, text: str, root_id: str = "", *, incident: int | None = None) -> OutboxEntry:
        return self.outbox.entry(key, channel_id, text, root_id, incident=incident)

    async def to_origin(
        self, key: str, incident: Incident, text: str, *, unless_in: tuple[str, str] | None = None
    ) -> list[OutboxEntry]:
        """The notice for the thread the incident was started from: none when it was started
        in its own channel, or when that thread is ``unless_in`` (answered there already)."""
        if not incident.origin_post_id or incident.origin_channel_id == incident.channel_id:
            return []
        if unless_in == (incident.origin_channel_id, incident.origin_post_id):
            return []
        # In a DM the bot answers without threads, as it did to the `start` there.
        root = "" if await self.is_dm(incident.origin_channel_id) else incident.origin_post_id
        return [self.notice(f"{key}:origin", incident.origin_channel_id, text, root, incident=incident.number)]

    async def to_announcements(self, key: str, incident: Incident, text: str) -> list[OutboxEntry]:
        """The post for the team's announcement channel, when one is configured and found."""
        channel_id = await self.announcement_channel(incident.team_id)
        return [self.notice(key + ANNOUNCE_SUFFIX, channel_id, text, incident=incident.number)] if channel_id else []

    async def announcement_channel(self, team_id: str) -> str | None:
        """The team's configured announcement channel, when the bot finds it."""
        try:
            team = await self.core.directory.team(team_id)
        except MattermostError:
            return None
        name = self.core.settings.announcement_channels.get(team.name.lower())
        if not name:
            return None
        try:
            channel = await self.chat.get_channel_by_name(team.id, name)
        except MattermostError:
            channel = None
        if channel is None:
            log.warning("announce.channel_missing", team=team.name, channel=name)
            return None
        return channel.id

    # --- the incident channel's own posts ------------------------------------------------

    async def made_parts(self, incident: Incident) -> dict[str, Post]:
        """The bot's posts in the incident channel marked as parts of this incident, by part."""
        assert incident.channel_id is not None
        prefix = f"{incident.number}:"
        found: dict[str, Post] = {}
        for post in await self.chat.get_posts_since(incident.channel_id, 1):
            mark = post.props.get(PART_PROP)
            if post.user_id == self.core.bot_id and not post.delete_at and isinstance(mark, str) and mark.startswith(prefix):
                found.setdefault(mark[len(prefix) :], post)
        return found

    async def _part(
        self, incident: Incident, part: str, text: str, made: Mapping[str, Post], root_id: str = "", *, again: str = ""
    ) -> Post:
        """A part of the channel: the one made before (``made``) or a new post. ``again``: it
        replaces a deleted post (this id), so it must not be taken for that one."""
        post = made.get(part)
        if post is None:
            assert incident.channel_id is not None
            post = await self.chat.create_post(
                incident.channel_id,
                text,
                root_id=root_id,
                props=part_props(incident.number, part) | button_props(self.core.settings, incident.number, part),
                # Mattermost answers a repeated pending id with the post it made, for 30 s; a
                # deleted one it cannot give back (500), so a replacement has its own.
                pending_post_id=pending_id(incident.channel_id, part, *([again] if again else [])),
            )
        return post

    async def ensure_summary(
        self, incident: Incident, items: list[ChecklistItem], names: Names, made: Mapping[str, Post], *, again: str = ""
    ) -> None:
        """The pinned summary, made and pinned once; noted on the incident (``again``: see ``_part``)."""
        if incident.summary_post_id is not None:
            return
        text = messages.summary(self.core.bot_name, incident, names, items, self.core.now(), await self.origin_link(incident))
        summary = await self._part(incident, "summary", text, made, again=again)
        if not summary.is_pinned:
            await self.chat.pin_post(summary.id)
        incident.summary_post_id = summary.id
        await self.core.commit(None, incident=incident)

    async def ensure_checklist(
        self, incident: Incident, items: list[ChecklistItem], made: Mapping[str, Post], *, again: str = ""
    ) -> dict[str, Post]:
        """The checklist header and one reply per live item, made where missing (found in
        ``made`` when an earlier run made them but died before noting them; ``again``: see
        ``_part``). Returns the item posts it made, by id."""
        live = [i for i in items if not i.removed]
        created: dict[str, Post] = {}
        if incident.checklist_post_id is None and not live:
            return created
        names = await self.core.directory.names([incident.commander_id, *item_names(items)])
        if incident.checklist_post_id is None:
            header = await self._part(
                incident,
                "checklist",
                messages.checklist_header(self.core.bot_name, incident, live, names, buttons=self._buttons),
                made,
                again=again,
            )
            incident.checklist_post_id = header.id
            await self.core.commit(None, incident=incident)
        for item in live:
            if item.post_id is None:
                part = f"item:{item.number}"
                post = await self._part(
                    incident, part, messages.checklist_item(item, names), made, root_id=incident.checklist_post_id, again=again
                )
                item.post_id = post.id
                created[post.id] = post
                await self.core.commit(None, item=item)
        return created

    # --- keeping it current ---------------------------------------------------------------

    async def restore(self, post: Post) -> str | None:
        """A post of the bot was deleted (by an admin): when it was a part of an incident
        channel (the pinned summary, the checklist header, an item), post it again and note
        the new one; the part's name, or None when the post was no part."""
        core = self.core
        async with core.store.transaction() as tx:
            found = await tx.get_incident_by_channel(post.channel_id)
        if found is None:
            return None
        async with core.lock(found.number):
            incident = await core.fresh(found)
            items = await core.checklist(incident.number)
            part = None
            if incident.summary_post_id == post.id:
                incident.summary_post_id, part = None, "summary"
            if incident.checklist_post_id == post.id:  # its thread, the items, went with it
                incident.checklist_post_id, part = None, "checklist"
                for item in items:
                    item.post_id = None
            for item in items:
                if item.post_id == post.id:
                    item.post_id, part = None, f"item:{item.number}"
            if part is None:
                return None
            log.warning("part.deleted", incident=incident.number, part=part, post=post.id)

            async def forget(tx: Transaction) -> None:
                for item in items:
                    await tx.save_checklist_item(item)

            await core.commit(None, incident=incident, write=forget)
            names = await core.directory.names([incident.commander_id, *item_names(items)])
            try:
                await self.ensure_summary(incident, [i for i in items if not i.removed], names, {}, again=post.id)
                await self.ensure_checklist(incident, items, {}, again=post.id)
                await self.refresh(incident, [i for i in items if not i.removed], strict=True)
            except MattermostError as exc:
                self.backlog.mark_stale(incident.number, exc)  # the repair makes what is missing
            return part

    async def refresh(self, incident: Incident, items: list[ChecklistItem] | None = None, *, strict: bool = False) -> None:
        """Bring header, pinned summary and checklist header in line with the database.

        A change is saved before its channel is edited: when Mattermost fails here the change
        stands, the incident is marked stale and repaired later (``strict``: raise instead)."""
        if incident.channel_id is None or (not strict and incident.number in self.backlog.stale):
            return  # stale: repaired as a whole once Mattermost answers again
        try:
            if items is None:
                items = await self.core.checklist(incident.number)
            names = await self.core.directory.names(
                [incident.commander_id, incident.started_by, incident.ended_by, *item_names(items)]
            )
            header = messages.header(incident, names)
            # The header changes with commander, severity and status only: most refreshes
            # (every tick) would write it unchanged. Someone else's edit clears what the
            # directory remembers (channel_updated), so it is written again then.
            if not self.core.directory.header_shown(incident.channel_id, header):
                await self.chat.patch_channel(incident.channel_id, header=header)
                self.core.directory.header_set(incident.channel_id, header)
            if incident.summary_post_id:
                text = messages.summary(
                    self.core.bot_name, incident, names, items, self.core.now(), await self.origin_link(incident)
                )
                await self._patch(incident.summary_post_id, text)
            if incident.checklist_post_id:
                await self._patch(
                    incident.checklist_post_id,
                    messages.checklist_header(self.core.bot_name, incident, items, names, buttons=self._buttons),
                )
        except MattermostError as exc:
            if strict:
                raise
            self.backlog.mark_stale(incident.number, exc)

    async def refresh_item(
        self, incident: Incident, item: ChecklistItem, *, strict: bool = False, shown: str | None = None
    ) -> bool:
        """Rewrite an item's post (only when it differs from ``shown``, when given); True when written."""
        if not item.post_id or (not strict and incident.number in self.backlog.stale):
            return False
        try:
            names = await self.core.directory.names([item.done_by, item.assignee_id])
            text = messages.checklist_item(item, names)
            if text == shown:
                return False
            await self._patch(item.post_id, text)
        except MattermostError as exc:
            if strict:
                raise
            self.backlog.mark_stale(incident.number, exc)
        return True

    def refresh_soon(self, number: int) -> None:
        """``refresh`` for a change already committed, soon: returns at once (call it without
        the incident's lock).

        Ticks come in bursts (people tick a checklist together) and are applied one after
        another in their channel's order; each refresh rewrote summary and checklist header,
        two of a tick's three REST calls in the profile. One pass at a time per incident
        (a task kept in ``_passes``) takes the incident's lock, reads the incident as the
        database has it then and shows it: every change asked for before it took the lock.
        Changes asked for meanwhile get one more pass. A pass that fails to reach Mattermost
        marks the incident stale (``refresh``), repaired as a whole later; a kill before it
        ran is mended by the restart's repair, as a kill between commit and refresh was."""
        self._asked[number] = self._asked.get(number, 0) + 1
        if number not in self._passes:
            task = asyncio.create_task(self._refresh_passes(number))
            self._passes[number] = task

    async def _refresh_passes(self, number: int) -> None:
        try:
            while self._shown.get(number, 0) < self._asked[number]:
                await asyncio.sleep(REFRESH_GATHER_SECONDS)  # let the rest of a burst commit first
                async with self.core.lock(number):
                    covers = self._asked[number]  # every change committed before the lock was taken
                    async with self.core.store.read() as tx:
                        incident = await tx.get_incident(number)
                        items = await tx.list_checklist(number) if incident is not None else []
                    if incident is not None:
                        await self.refresh(incident, items)
                self._shown[number] = covers
        except Exception as exc:  # noqa: BLE001 - shown again by the next change or the restart's repair
            log.warning("channel.refresh_failed", incident=number, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            del self._passes[number]

    async def show_change(self, incident: Incident, items: list[ChecklistItem], item: ChecklistItem | None = None) -> None:
        """After a committed change: the item's post, then header, summary and checklist header."""
        if item is not None:
            await self.refresh_item(incident, item)
        await self.refresh(incident, items)

    async def _patch(self, post_id: str, text: str) -> None:
        """Only the message changes: Mattermost keeps the props, buttons included."""
        try:
            await self.chat.patch_post(post_id, message=text)
        except NotFound:
            log.warning("post.gone", post=post_id)
