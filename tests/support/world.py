"""What a scenario sees: a Mattermost server (fake or real), its people, and the bot's account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.people import Person


@dataclass
class World:
    """One freshly bootstrapped server.

    Teams: ``ops`` (alice, bob, carol) and ``web`` (alice, dave): alice shares two
    teams with the bot, dave is in ``web`` only. Each team has a public channel
    ``incidents`` the bot is a member of. ``erin`` is a user in no team of the bot's.
    """

    url: str  # http://127.0.0.1:PORT (no trailing slash)
    bot_token: str
    bot_username: str  # "incident-bot"
    bot_user_id: str
    admin: Person
    people: dict[str, Person]  # alice, bob, carol, dave, erin
    team_ids: dict[str, str]  # team name -> id
    channel_ids: dict[str, str]  # "ops/incidents", "web/incidents" -> id
    fake: Any = None  # the FakeMattermost for fault injection; None on a real server
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Person:
        people = self.__dict__.get("people", {})
        if name in people:
            return people[name]
        raise AttributeError(name)
