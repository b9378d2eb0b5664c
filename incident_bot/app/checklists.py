"""Use cases of the checklist: commands and the ✅ reactions on item posts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import structlog

from incident_bot.app.channel import ChannelWriter, item_names
from incident_bot.app.core import Core
from incident_bot.app.outbox import Outbox
from incident_bot.app.request import Applied, Request, UserError
from incident_bot.chat.errors import MattermostError
from incident_bot.chat.events import ReactionAdded
from incident_bot.chat.models import Reaction
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import ChecklistItem, Incident, OutboxEntry, Status, TimelineKind
from incident_bot.store.base import Transaction

log = structlog.get_logger("incident_bot.app")


def _ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at else 0


class Checklists:
    def __init__(self, core: Core, channel: ChannelWriter, outbox: Outbox) -> None:
        self.core = core
        self.channel = channel
        self.outbox = outbox

    async def _item(self, incident: Incident, number: int) -> ChecklistItem:
        for item in await self.core.checklist(incident.number):
            if item.number == number:
                return item
        raise UserError(messages.no_item(self.core.bot_name, incident, number))

    async def _editable(self, req: Request, cmd: Command) -> Incident:
        return await self.core.incident_for(req, None, cmd.name, channel_only=True)

    @asynccontextmanager
    async def _editing(self, req: Request, cmd: Command) -> AsyncIterator[tuple[Incident, ChecklistItem]]:
        """The incident (locked, active) and the item ``cmd`` names."""
        async with self.core.changing(await self._editable(req, cmd)) as incident:
            assert cmd.item is not None
            yield incident, await self._item(incident, cmd.item)

    async def _change(
        self,
        key: str | None,
        incident: Incident,
        item: ChecklistItem,
        kind: TimelineKind,
        actor: str,
        text: str,
        via: str = "command",
        outbox: Sequence[OutboxEntry] = (),
        refresh_later: bool = False,
    ) -> list[ChecklistItem]:
        """Commit a change of one item with its timeline event (and the posts that follow), then
        show it; ``refresh_later``: only the item's post, the caller calls ``refresh_soon``
        once out of the incident's lock (ticks come in bursts, one refresh shows them all)."""
        event = self.core.event(incident.number, kind, actor, text, {"item": item.number, "via": via})
        items = await self.core.commit(key, incident.number, item=item, event=event, outbox=outbox)
        if refresh_later:
            await self.channel.refresh_item(incident, item)
        else:
            await self.channel.show_change(incident, items, item)
        return items

    def _tick(self, item: ChecklistItem, by: str | None) -> TimelineKind:
        """Tick the item as ``by``'s, or untick it (``None``); the timeline kind of that."""
        item.done_by, item.done_at = (by, self.core.now()) if by else (None, None)
        return TimelineKind.CHECKLIST_CHECKED if by else TimelineKind.CHECKLIST_UNCHECKED

    # --- commands --------------------------------------------------------------------

    async def show(self, req: Request, cmd: Command) -> None:
        incident = await self.core.incident_for(req, None, "checklist", channel_only=True)
        items = await self.core.checklist(incident.number)
        names = await self.core.directory.names(item_names(items))
        await self.core.reply(req, messages.checklist_reply(self.core.bot_name, incident, items, names))

    async def check(self, req: Request, cmd: Command) -> None:
        await self._check(req, cmd, True)

    async def uncheck(self, req: Request, cmd: Command) -> None:
        await self._check(req, cmd, False)

    async def _check(self, req: Request, cmd: Command, done: bool) -> None:
        async with self._editing(req, cmd) as (incident, item):
            if item.done == done:
                raise UserError(messages.item_already(item, done))
            kind = self._tick(item, req.user_id if done else None)
            items = await self._change(req.key, incident, item, kind, req.user_id, item.text)
        text = messages.item_checked(incident, item, items) if done else messages.item_unchecked(incident, item, items)
        await self.core.reply(req, text)

    async def add(self, req: Request, cmd: Command) -> None:
        core = self.core
        added: list[ChecklistItem] = []

        async def add_item(tx: Transaction) -> None:
            item = await tx.add_checklist_item(incident.number, cmd.text)
            added.append(item)
            await tx.add_timeline(
                core.event(incident.number, TimelineKind.CHECKLIST_ADDED, req.user_id, item.text, {"item": item.number})
            )

        async with core.changing(await self._editable(req, cmd)) as incident:
            items = await core.commit(req.key, incident.number, write=add_item)
            await self.channel.ensure_checklist(incident, items, {})
            await self.channel.refresh(incident, items)
        await core.reply(req, messages.item_added(incident, added[0], items))

    async def remove(self, req: Request, cmd: Command) -> None:
        async with self._editing(req, cmd) as (incident, item):
            item.removed = True
            items = await self._change(req.key, incident, item, TimelineKind.CHECKLIST_REMOVED, req.user_id, item.text)
        await self.core.reply(req, messages.item_removed(incident, item, items))

    async def rename(self, req: Request, cmd: Command) -> None:
        async with self._editing(req, cmd) as (incident, item):
            old, item.text = item.text, cmd.text
            await self._change(
                req.key, incident, item, TimelineKind.CHECKLIST_RENAMED, req.user_id, messages.change(old, cmd.text)
            )
        await self.core.reply(req, messages.item_renamed(item, old))

    async def assign(self, req: Request, cmd: Command) -> None:
        core = self.core
        assert cmd.user is not None
        async with self._editing(req, cmd) as (incident, item):
            user = await core.team_member(cmd.user, incident)
            item.assignee_id = user.id
            names = await core.directory.names([user.id, req.user_id])
            dm = []
            if user.id != req.user_id and not user.is_bot:
                try:
                    channel = await core.chat.create_direct_channel(core.bot_id, user.id)
                    text = messages.assigned_dm(incident, item, names, req.user_id)
                    dm.append(self.channel.notice(f"{req.key}:dm", channel.id, text, incident=incident.number))
                except MattermostError as exc:  # a courtesy DM that cannot be had must not stop the assignment
                    log.warning("assign.dm_failed", incident=incident.number, user=user.id, error=type(exc).__name__)
            change = messages.at(user.username)
            await self._change(req.key, incident, item, TimelineKind.CHECKLIST_ASSIGNED, req.user_id, change, outbox=dm)
        await core.reply(req, messages.item_assigned(item, names))
        await self.outbox.send(dm)

    async def unassign(self, req: Request, cmd: Command) -> None:
        async with self._editing(req, cmd) as (incident, item):
            if item.assignee_id is None:
                raise UserError(messages.item_not_assigned(item))
            item.assignee_id = None
            await self._change(req.key, incident, item, TimelineKind.CHECKLIST_UNASSIGNED, req.user_id, "")
        await self.core.reply(req, messages.item_unassigned(item))

    # --- reactions -------------------------------------------------------------------

    async def reaction(self, key: str, reaction: Reaction, added: bool) -> Applied:
        """A tick emoji added to / removed from a post; returns the outcome for the log."""
        return await self.tick(key, reaction.post_id, reaction.user_id, added, emoji=reaction.emoji_name)

    async def tick(self, key: str, post_id: str, user_id: str, added: bool, *, emoji: str | None = None) -> Applied:
        """Tick (``added``) or untick the item whose post is ``post_id``, as ``user_id``: by a
        reaction (``emoji``: its name) or by the item post's Tick / Untick button (None).

        Both paths are this one: the same membership rule, timeline event and item post. They
        differ in what tells a person why not (a reaction has only the channel to answer in; a
        button answers the person who clicked, so nothing is posted for it) and in an untick: a
        reaction removed leaves the item ticked while another member's tick reaction is on the
        post, a click on Untick unticks it. Header and summary follow in ``refresh_soon``."""
        changed: list[int] = []  # the incident whose item changed
        outcome = await self._apply_tick(key, post_id, user_id, added, emoji, changed)
        for number in changed:
            self.channel.refresh_soon(number)
        return outcome

    async def _apply_tick(
        self, key: str, post_id: str, user_id: str, added: bool, emoji: str | None, changed: list[int]
    ) -> Applied:
        core = self.core
        via = "reaction" if emoji is not None else "button"
        if user_id == core.bot_id:
            return Applied.IGNORED_BOT
        async with core.store.read() as tx:  # a first look; read again under the incident's lock
            if await tx.event_seen(key):
                return Applied.DUPLICATE
            item = await tx.get_checklist_item_by_post(post_id)
            incident = await tx.get_incident(item.incident_number) if item else None
        if item is None or incident is None or item.removed:
            return Applied.NOT_AN_ITEM
        if not await core.directory.acting_member(incident.channel_id, user_id):
            await core.commit(key, incident.number)  # handled: every outcome on an item is recorded
            return Applied.NOT_A_MEMBER
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                if await tx.event_seen(key):
                    return Applied.DUPLICATE
                fresh_item = await tx.get_checklist_item_by_post(post_id)
                fresh = await tx.get_incident(incident.number)
            assert fresh_item is not None and fresh is not None
            item, incident = fresh_item, fresh
            if item.removed:
                return Applied.NOT_AN_ITEM
            if incident.status == Status.ENDED:
                refusal = []
                if added and incident.channel_id and emoji is not None:
                    names = await core.directory.names([user_id])
                    text = messages.tick_refused_ended(core.bot_name, incident, names, user_id)
                    root = incident.checklist_post_id or ""
                    refusal.append(
                        self.channel.notice(f"{key}:refused", incident.channel_id, text, root, incident=incident.number)
                    )
                await core.commit(key, incident.number, outbox=refusal)
                await self.outbox.send(refusal)
                return Applied.REFUSED_ENDED
            if added:
                if item.done:
                    await core.commit(key, incident.number)
                    return Applied.UNCHANGED
                self._tick(item, user_id)
                await self._change(
                    key, incident, item, TimelineKind.CHECKLIST_CHECKED, user_id, item.text, via=via, refresh_later=True
                )
                changed.append(incident.number)
                return Applied.CHECKED
            if not item.done:
                await core.commit(key, incident.number)
                return Applied.UNCHANGED
            others = await self._tickers(incident, item, skip=(user_id, emoji)) if emoji is not None else []
            if others:
                if item.done_by in others:
                    await core.commit(key, incident.number)
                else:
                    item.done_by = others[0]
                    await self._change(
                        key,
                        incident,
                        item,
                        TimelineKind.CHECKLIST_CHECKED,
                        others[0],
                        item.text,
                        via=via,
                        refresh_later=True,
                    )
                    changed.append(incident.number)
                return Applied.KEPT_OTHER_TICK
            self._tick(item, None)
            await self._change(
                key, incident, item, TimelineKind.CHECKLIST_UNCHECKED, user_id, item.text, via=via, refresh_later=True
            )
            changed.append(incident.number)
            return Applied.UNCHECKED

    async def _tickers(self, incident: Incident, item: ChecklistItem, skip: tuple[str, str]) -> list[str]:
        """Channel members whose tick reaction is on the item, oldest first, other than the
        reaction ``skip`` (user, emoji) just removed (that user's other tick emoji still counts)."""
        assert item.post_id is not None
        ticks = await self.core.directory.member_reactions(item.post_id, self.core.settings.check_emojis, incident.channel_id)
        users: list[str] = []
        for r in ticks:
            if (r.user_id, r.emoji_name) != skip and r.user_id not in users:
                users.append(r.user_id)
        return users

    async def reconcile(self, post_id: str) -> Applied:
        """After missed events: make a checklist item match the tick reactions now on its post.

        A tick reaction the bot never handled ticks the item; one it handled already does not
        again (a later `uncheck` stands). Only ticks made by reaction are undone by a missing
        reaction; a `check` command's tick has no reaction to lose. The item's post is
        rewritten when it does not show the item's state (a crash between change and edit)."""
        core = self.core
        async with core.store.transaction() as tx:
            item = await tx.get_checklist_item_by_post(post_id)
            incident = await tx.get_incident(item.incident_number) if item else None
        if item is None or incident is None or item.removed or incident.status != Status.ACTIVE:
            return Applied.IGNORED
        outcome = Applied.UNCHANGED
        async with core.lock(incident.number):  # the reactions read and the change made as one step
            ticks = await core.directory.member_reactions(post_id, core.settings.check_emojis, incident.channel_id)
            keys = {id(r): ReactionAdded(reaction=r).dedupe_key for r in ticks}
            async with core.store.transaction() as tx:
                fresh = await tx.get_checklist_item_by_post(post_id)
                events = await tx.list_timeline(incident.number)
                unseen = [r for r in ticks if not await tx.event_seen(keys[id(r)])]
            assert fresh is not None
            item = fresh
            if not item.done and unseen:
                first = unseen[0]
                self._tick(item, first.user_id)
                key = f"reconcile+:{post_id}:{first.update_at or first.create_at}"
                await self._change(key, incident, item, TimelineKind.CHECKLIST_CHECKED, first.user_id, item.text, via="reaction")
                outcome = Applied.CHECKED
            elif item.done and not ticks:
                last = next(
                    (
                        e
                        for e in reversed(events)
                        if e.kind == TimelineKind.CHECKLIST_CHECKED and e.data.get("item") == item.number
                    ),
                    None,
                )
                if last is not None and last.data.get("via") == "reaction":
                    key = f"reconcile-:{post_id}:{_ms(item.done_at)}"
                    actor = item.done_by or core.bot_id
                    self._tick(item, None)
                    await self._change(key, incident, item, TimelineKind.CHECKLIST_UNCHECKED, actor, item.text, via="reaction")
                    outcome = Applied.UNCHECKED
            if unseen:  # every tick now on the post is accounted for

                async def note_seen(tx: Transaction) -> None:
                    for r in unseen:
                        await tx.record_event(keys[id(r)], core.now(), incident.number)

                await core.commit(None, write=note_seen)
            if outcome == "unchanged":
                post = await core.chat.get_post(post_id)
                if post is not None and await self.channel.refresh_item(incident, item, shown=post.message):
                    await self.channel.refresh(incident)
                    outcome = Applied.REPAIRED
        return outcome
