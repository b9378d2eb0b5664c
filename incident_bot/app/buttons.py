"""The buttons a bot post carries when buttons are on (``callback_url`` and ``actions_secret``
set): the props to create it with. Off, every post looks as it does without buttons."""

from __future__ import annotations

from typing import Any

from incident_bot.config import Settings
from incident_bot.domain import buttons


def button_props(settings: Settings, incident: int | None, part: str) -> dict[str, Any]:
    """Props adding the buttons of ``part`` (summary, item:N, announce) of incident ``incident``;
    empty when buttons are off or the part has none (the checklist header)."""
    on = settings.buttons()
    if on is None or incident is None or not (part in (buttons.SUMMARY, buttons.ANNOUNCE) or part.startswith("item:")):
        return {}
    url, key = on
    return buttons.props(url, key, incident, part)
