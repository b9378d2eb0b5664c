"""What Mattermost calls on the bot over HTTP (the slash command, dialogs, button clicks):
aiohttp handlers on the ops listener, adapted to the use cases."""
