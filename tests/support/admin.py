"""What a Mattermost administrator does to the bot's account, the same on the fake and on a
real server (``world.fake`` is None there): revoke its token, give it a new one."""

from __future__ import annotations

from tests.support.world import World


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
