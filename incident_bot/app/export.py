"""`incident-bot export N`: the postmortem file from the database alone, without Mattermost."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from incident_bot.config import ConfigError, load_settings, parse_database
from incident_bot.domain import export
from incident_bot.domain.models import utcnow
from incident_bot.store.base import SchemaTooNew, StoreUnavailable
from incident_bot.store.factory import backend_of, describe, open_store


async def cli_export(config: str | None, number: int, fmt: str, db: str | None) -> int:
    if db is None:
        try:
            database = load_settings(config).database
        except ConfigError as exc:
            print(f"incident-bot: {exc} (or give --db PATH)", file=sys.stderr)
            return 2
    else:
        try:
            database = parse_database(db)
        except ValueError as exc:
            print(f"incident-bot: --db: {exc}", file=sys.stderr)
            return 2
    if backend_of(database) == "sqlite" and not await asyncio.to_thread(Path(database).is_file):
        print(f"incident-bot: no database at {database}", file=sys.stderr)
        return 2
    store = open_store(database)
    try:
        await store.open()
        async with store.transaction() as tx:
            incident = await tx.get_incident(number)
            if incident is None:
                print(f"incident-bot: no incident #{number} in {describe(database)}", file=sys.stderr)
                return 1
            items = await tx.list_checklist(number, include_removed=True)
            events = await tx.list_timeline(number)
            participants = set(await tx.get_state(f"participants:{number}") or [])
            ids = export.user_ids(incident, items, events) | participants
            usernames = {uid: (await tx.get_state(f"user:{uid}")) or uid for uid in ids}
            team = await tx.get_state(f"team:{incident.team_id}") or incident.team_id
    except (SchemaTooNew, StoreUnavailable) as exc:
        print(f"incident-bot: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    data = export.record(incident, items, events, usernames, sorted(participants | export.actor_ids(events)), team, utcnow())
    sys.stdout.write(export.render(data, fmt))
    return 0
