"""What Mattermost calls on the bot over HTTP (buttons, dialogs): aiohttp handlers on the ops listener."""
