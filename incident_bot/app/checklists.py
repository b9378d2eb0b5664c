"""Use cases of the checklist: commands and the ✅ reactions on item posts."""

from __future__ import annotations

import structlog

from incident_bot.app.core import Core, Request, UserError, part_props, pending_id
from incident_bot.chat.events import ReactionAdded
from incident_bot.chat.models import Reaction
from incident_bot.domain import messages
from incident_bot.domain.commands import Command
from incident_bot.domain.models import ChecklistItem, Incident, Status, TimelineEvent, TimelineKind

log = structlog.get_logger("incident_bot.app")


class Checklists:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _item(self, incident: Incident, number: int) -> tuple[ChecklistItem, list[ChecklistItem]]:
        async with self.core.store.transaction() as tx:
            items = await tx.list_checklist(incident.number)
        for item in items:
            if item.number == number and not item.removed:
                return item, items
        raise UserError(messages.no_item(self.core.directory.bot.username, incident, number))

    async def _editable(self, req: Request, command: str, action: str) -> Incident:
        incident = await self.core.incident_for(req, None, command, member_action=action, channel_only=True)
        if incident.status == Status.ENDED:
            raise UserError(messages.already_ended(incident))
        return incident

    async def _commit(
        self, req_key: str | None, incident: Incident, item: ChecklistItem, kind: TimelineKind, actor: str, text: str,
        via: str = "command",
    ) -> list[ChecklistItem]:
        """Save the item, its timeline event and the event key in one transaction."""
        core = self.core
        now = core.now()
        async with core.store.transaction() as tx:
            await tx.save_checklist_item(item)
            await tx.add_timeline(
                TimelineEvent(
                    incident_number=incident.number, at=now, kind=kind, actor_id=actor, text=text,
                    data={"item": item.number, "via": via},
                )
            )
            if req_key:
                await tx.record_event(req_key, now, incident.number)
            items = await tx.list_checklist(incident.number)
        await core.refresh_item(incident, item)
        await core.refresh(incident, items)
        return items

    # --- commands --------------------------------------------------------------------

    async def show(self, req: Request, cmd: Command) -> None:
        incident = await self.core.incident_for(req, None, "checklist", channel_only=True)
        async with self.core.store.transaction() as tx:
            items = await tx.list_checklist(incident.number)
        names = await self.core.directory.names([i.done_by for i in items] + [i.assignee_id for i in items])
        await self.core.reply(req, messages.checklist_reply(self.core.directory.bot.username, incident, items, names))

    async def check(self, req: Request, cmd: Command, done: bool) -> None:
        core = self.core
        incident = await self._editable(req, "check" if done else "uncheck", "change the checklist of")
        assert cmd.item is not None
        async with core.lock(incident.number):
            item, _ = await self._item(incident, cmd.item)
            if item.done == done:
                raise UserError(messages.item_already(item, done))
            item.done_by, item.done_at = (req.user_id, core.now()) if done else (None, None)
            kind = TimelineKind.CHECKLIST_CHECKED if done else TimelineKind.CHECKLIST_UNCHECKED
            items = await self._commit(req.key, incident, item, kind, req.user_id, item.text)
        text = messages.item_checked(incident, item, items) if done else messages.item_unchecked(incident, item, items)
        await core.reply(req, text)

    async def add(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._editable(req, "add", "change the checklist of")
        async with core.lock(incident.number):
            now = core.now()
            async with core.store.transaction() as tx:
                item = await tx.add_checklist_item(incident.number, cmd.text)
                await tx.add_timeline(
                    TimelineEvent(incident_number=incident.number, at=now, kind=TimelineKind.CHECKLIST_ADDED,
                                  actor_id=req.user_id, text=item.text, data={"item": item.number})
                )
                await tx.record_event(req.key, now, incident.number)
                items = await tx.list_checklist(incident.number)
            await self._ensure_posts(incident, items)
            await core.refresh(incident, items)
        await core.reply(req, messages.item_added(incident, item, items))

    async def _ensure_posts(self, incident: Incident, items: list[ChecklistItem]) -> None:
        """Checklist header and one reply per item; made when the first item arrives."""
        core = self.core
        assert incident.channel_id is not None
        names = await core.directory.names([i.done_by for i in items] + [i.assignee_id for i in items])
        if incident.checklist_post_id is None:
            header = await core.client.create_post(
                incident.channel_id, messages.checklist_header(core.directory.bot.username, incident, items, names), props=part_props(incident.number, "checklist"),
                pending_post_id=pending_id(incident.channel_id, "checklist"),
            )
            incident.checklist_post_id = header.id
            async with core.store.transaction() as tx:
                await tx.save_incident(incident)
        for item in items:
            if item.post_id is None and not item.removed:
                post = await core.client.create_post(
                    incident.channel_id, messages.checklist_item(item, names), root_id=incident.checklist_post_id,
                    props=part_props(incident.number, f"item:{item.number}"),  # found again by Incidents.repair
                    pending_post_id=pending_id(incident.channel_id, f"item:{item.number}"),
                )
                item.post_id = post.id
                async with core.store.transaction() as tx:
                    await tx.save_checklist_item(item)

    async def remove(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._editable(req, "remove", "change the checklist of")
        assert cmd.item is not None
        async with core.lock(incident.number):
            item, _ = await self._item(incident, cmd.item)
            item.removed = True
            items = await self._commit(req.key, incident, item, TimelineKind.CHECKLIST_REMOVED, req.user_id, item.text)
        await core.reply(req, messages.item_removed(incident, item, items))

    async def rename(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._editable(req, "rename", "change the checklist of")
        assert cmd.item is not None
        async with core.lock(incident.number):
            item, _ = await self._item(incident, cmd.item)
            old = item.text
            item.text = cmd.text
            await self._commit(req.key, incident, item, TimelineKind.CHECKLIST_RENAMED, req.user_id, f"{old} → {cmd.text}")
        await core.reply(req, messages.item_renamed(item, old))

    async def assign(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._editable(req, "assign", "change the checklist of")
        assert cmd.item is not None and cmd.user is not None
        user = await core.directory.user_by_name(cmd.user)
        if user is None or user.delete_at:
            raise UserError(messages.unknown_user(cmd.user))
        if not await core.directory.in_team(incident.team_id, user.id):
            raise UserError(messages.user_not_in_team(user.username, incident))
        async with core.lock(incident.number):
            item, _ = await self._item(incident, cmd.item)
            item.assignee_id = user.id
            await self._commit(req.key, incident, item, TimelineKind.CHECKLIST_ASSIGNED, req.user_id, f"@{user.username}")
        names = await core.directory.names([user.id, req.user_id])
        await core.reply(req, messages.item_assigned(item, names))
        if user.id != req.user_id and not user.is_bot:
            try:
                dm = await core.client.create_direct_channel(core.bot_id, user.id)
                await core.post_in_channel(dm.id, messages.assigned_dm(incident, item, names, req.user_id))
            except Exception:  # a failed courtesy DM must not fail the assignment
                log.warning("assign.dm_failed", incident=incident.number, user=user.id)

    async def unassign(self, req: Request, cmd: Command) -> None:
        core = self.core
        incident = await self._editable(req, "unassign", "change the checklist of")
        assert cmd.item is not None
        async with core.lock(incident.number):
            item, _ = await self._item(incident, cmd.item)
            if item.assignee_id is None:
                raise UserError(messages.item_not_assigned(item))
            item.assignee_id = None
            await self._commit(req.key, incident, item, TimelineKind.CHECKLIST_UNASSIGNED, req.user_id, "")
        await core.reply(req, messages.item_unassigned(item))

    # --- reactions -------------------------------------------------------------------

    async def reaction(self, key: str, reaction: Reaction, added: bool) -> str:
        """A tick emoji added to / removed from a post; returns the outcome for the log."""
        core = self.core
        if reaction.user_id == core.bot_id:
            return "ignored:bot"
        async with core.store.transaction() as tx:
            if await tx.event_seen(key):
                return "duplicate"
            item = await tx.get_checklist_item_by_post(reaction.post_id)
            incident = await tx.get_incident(item.incident_number) if item else None
        if item is None or incident is None or item.removed:
            return "ignored:not-an-item"
        if not await core.directory.in_channel(incident.channel_id, reaction.user_id):
            await self._record(key, incident)  # handled: every outcome on an item is recorded
            return "ignored:not-a-member"
        async with core.lock(incident.number):
            async with core.store.transaction() as tx:
                if await tx.event_seen(key):
                    return "duplicate"
                fresh_item = await tx.get_checklist_item_by_post(reaction.post_id)
                fresh = await tx.get_incident(incident.number)
            assert fresh_item is not None and fresh is not None
            item, incident = fresh_item, fresh
            if incident.status == Status.ENDED:
                if added:
                    names = await core.directory.names([reaction.user_id])
                    await core.post_in_channel(
                        incident.channel_id or "", messages.tick_refused_ended(core.directory.bot.username, incident, names, reaction.user_id),
                        root_id=incident.checklist_post_id or "",
                    )
                await self._record(key, incident)
                return "refused:ended"
            if added:
                if item.done:
                    await self._record(key, incident)
                    return "unchanged"
                item.done_by, item.done_at = reaction.user_id, core.now()
                await self._commit(key, incident, item, TimelineKind.CHECKLIST_CHECKED, reaction.user_id, item.text, via="reaction")
                return "checked"
            if not item.done:
                await self._record(key, incident)
                return "unchanged"
            others = await self._other_tickers(incident, item, reaction.user_id, reaction.emoji_name)
            if others:
                if item.done_by not in others:
                    item.done_by = others[0]
                    await self._commit(key, incident, item, TimelineKind.CHECKLIST_CHECKED, others[0], item.text, via="reaction")
                else:
                    await self._record(key, incident)
                return "kept:other-tick"
            item.done_by, item.done_at = None, None
            await self._commit(key, incident, item, TimelineKind.CHECKLIST_UNCHECKED, reaction.user_id, item.text, via="reaction")
            return "unchecked"

    async def reconcile(self, post_id: str) -> str:
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
            return "ignored"
        outcome = "unchanged"
        async with core.lock(incident.number):  # the reactions read and the change made as one step
            reactions = [r for r in await core.client.get_reactions(post_id) if r.emoji_name in core.settings.check_emojis]
            members: dict[str, bool] = {}
            ticks: list[Reaction] = []  # every member's tick reaction, oldest first
            for r in sorted(reactions, key=lambda r: (r.create_at, r.update_at)):
                if r.user_id != core.bot_id:
                    if r.user_id not in members:
                        members[r.user_id] = await core.directory.in_channel(incident.channel_id, r.user_id)
                    if members[r.user_id]:
                        ticks.append(r)
            keys = {(r.user_id, r.emoji_name): ReactionAdded(reaction=r).dedupe_key for r in reactions}
            async with core.store.transaction() as tx:
                item = await tx.get_checklist_item_by_post(post_id)
                events = await tx.list_timeline(incident.number)
                unseen = [r for r in ticks if not await tx.event_seen(keys[(r.user_id, r.emoji_name)])]
            assert item is not None
            if not item.done and unseen:
                first = unseen[0]
                key = f"reconcile+:{post_id}:{first.update_at or first.create_at}"
                item.done_by, item.done_at = first.user_id, core.now()
                await self._commit(key, incident, item, TimelineKind.CHECKLIST_CHECKED, first.user_id, item.text, via="reaction")
                outcome = "checked"
            elif item.done and not ticks:
                last = next((e for e in reversed(events) if e.kind == TimelineKind.CHECKLIST_CHECKED and e.data.get("item") == item.number), None)
                if last is not None and last.data.get("via") == "reaction":
                    key = f"reconcile-:{post_id}:{int(item.done_at.timestamp() * 1000) if item.done_at else 0}"
                    actor = item.done_by or core.bot_id
                    item.done_by, item.done_at = None, None
                    await self._commit(key, incident, item, TimelineKind.CHECKLIST_UNCHECKED, actor, item.text, via="reaction")
                    outcome = "unchecked"
            if unseen:  # every tick now on the post is accounted for
                async with core.store.transaction() as tx:
                    for r in unseen:
                        await tx.record_event(keys[(r.user_id, r.emoji_name)], core.now(), incident.number)
            if outcome == "unchanged":
                post = await core.client.get_post(post_id)
                names = await core.directory.names([item.done_by, item.assignee_id])
                if post is not None and post.message != messages.checklist_item(item, names):
                    await core.refresh_item(incident, item)
                    await core.refresh(incident)
                    outcome = "repaired"
        return outcome

    async def _other_tickers(self, incident: Incident, item: ChecklistItem, remover: str, emoji: str) -> list[str]:
        """Channel members (not the bot) whose tick reaction is still on the item, other than
        the one just removed (the remover's other tick emoji still counts)."""
        core = self.core
        assert item.post_id is not None
        reactions = await core.client.get_reactions(item.post_id)
        candidates = []
        for r in sorted(reactions, key=lambda r: r.create_at):
            if r.emoji_name not in core.settings.check_emojis or r.user_id == core.bot_id or r.user_id in candidates:
                continue
            if r.user_id == remover and r.emoji_name == emoji:
                continue
            candidates.append(r.user_id)
        return [uid for uid in candidates if await core.directory.in_channel(incident.channel_id, uid)]

    async def _record(self, key: str, incident: Incident) -> None:
        async with self.core.store.transaction() as tx:
            await tx.record_event(key, self.core.now(), incident.number)
