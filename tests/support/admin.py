"""What a Mattermost administrator does, the same on the fake and on a real server
(``world.fake`` is None there): revoke the bot's token, give it a new one; deactivate an
account, make a member a guest and a guest a member again (over the REST API on both)."""

from __future__ import annotations

from tests.support.people import ApiError
from tests.support.world import World

_NO_LICENSE = "api.team.demote_user_to_guest.license.error"


async def deactivate(world: World, user_id: str) -> None:
    """System Console > Users > Deactivate (``DELETE /users/{id}``: app/user.go ``UpdateActive``,
    which sends ``user_updated`` to every connection but the user's)."""
    await world.admin.request("DELETE", f"/users/{user_id}")


async def demote_to_guest(world: World, user_id: str) -> None:
    """System Console > Users > Demote to guest (``POST /users/{id}/demote``:
    ``DemoteUserToGuest``, which sends ``user_updated`` to every connection but the user's).

    Team Edition refuses that call (501: guest accounts need a license). There the roles are
    set as tests/integration/bootstrap.py makes guests (``PUT /users/{id}/roles``, which tells
    only the user: ``user_role_updated``), and the ``user_updated`` a licensed server sends
    comes from an unchanged profile patch (``UpdateUser`` sends it on every patch)."""
    try:
        await world.admin.request("POST", f"/users/{user_id}/demote")
        return
    except ApiError as refused:
        if refused.status != 501 or refused.id != _NO_LICENSE:
            raise
    await world.admin.request("PUT", f"/users/{user_id}/roles", json_body={"roles": "system_guest"})
    user = await world.admin.request("GET", f"/users/{user_id}")
    await world.admin.request("PUT", f"/users/{user_id}/patch", json_body={"nickname": user.get("nickname", "")})


async def promote_to_member(world: World, user_id: str) -> None:
    """System Console > Users > Promote to member (``POST /users/{id}/promote``:
    ``PromoteGuestToUser``, ``user_updated`` as for a demotion; Team Edition allows it)."""
    await world.admin.request("POST", f"/users/{user_id}/promote")


async def revoke_bot_tokens(world: World) -> None:
    """Revoke every access token of the bot account (as System Console > Bot Accounts does)."""
    if world.fake is not None:
        for token, user_id in list(world.fake.tokens.items()):
            if user_id == world.bot_user_id:
                world.fake.revoke_token(token)
        return
    tokens = await world.admin.request("GET", f"/users/{world.bot_user_id}/tokens")
    for token in tokens or []:
        await world.admin.request("POST", "/users/tokens/revoke", json_body={"token_id": token["id"]})


async def new_bot_token(world: World) -> str:
    """A fresh access token for the bot account, which ``world.bot_token`` becomes."""
    if world.fake is not None:
        token = world.fake.add_token(world.bot_user_id)
    else:
        body = await world.admin.request("POST", f"/users/{world.bot_user_id}/tokens", json_body={"description": "renewed"})
        token = body["token"]
    world.bot_token = token
    return token
