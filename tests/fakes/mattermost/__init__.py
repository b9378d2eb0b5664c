"""An in-process fake Mattermost server: REST API v4 + WebSocket, with fault injection.

It follows the real server (read from mattermost/mattermost sources, v10/v11) wherever a bot
could notice the difference: status codes, error JSON and ids, event envelopes and their
JSON-string fields, who receives which event, and the reliable-WebSocket resume protocol.
Where the real server has a trap, the fake keeps it (see the notes by each handler), so code
that passes here has a fair chance against a real server:

- ``GET /channels/{id}/posts?since=`` compares ``update_at > since`` and also returns deleted
  posts and edit-history rows (``original_id != ""``); a reply or a reaction moves the
  ``update_at`` of the post it touches.
- ``post_deleted`` carries the post as it was *before* deletion (``delete_at`` 0).
- ``posted`` carries ``mentions`` only to a recipient who is mentioned, and then only its own id.
- Adding, removing, header/display-name/purpose changes create ``system_*`` posts.
- Resume (``connection_id`` + ``sequence_number``) works only when the socket is authenticated
  by the upgrade request's ``Authorization`` header; a successful resume sends *no* ``hello``.
- A rate-limited request gets 429 with a text body ``limit exceeded`` and
  ``X-RateLimit-Reset`` in seconds *from now* (the throttled library's convention).

Setup helpers (``create_user``, ``create_team`` …) are plain synchronous methods, and so is
everything that publishes events: they can be called from tests at any time. Faults go
through ``fake.faults`` (faults.py).

The package, by concern: ``common`` (ids, error JSON, constants), ``state`` (users, teams,
channels, posts, reactions, memberships), ``routes`` (REST API v4 on aiohttp's router),
``websocket`` (envelopes, seq, resume), ``faults`` (fault injection), ``server`` (the
application tying them together: ``FakeMattermost``).
"""

from __future__ import annotations

from tests.fakes.mattermost.common import ApiFailure, error_body, is_valid_id, mentioned_usernames, new_id
from tests.fakes.mattermost.faults import FaultRule, Faults
from tests.fakes.mattermost.server import FakeMattermost, RequestRecord

__all__ = [
    "ApiFailure",
    "FakeMattermost",
    "FaultRule",
    "Faults",
    "RequestRecord",
    "error_body",
    "is_valid_id",
    "mentioned_usernames",
    "new_id",
]
