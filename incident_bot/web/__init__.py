"""Mattermost's calls to the bot over HTTP (slash command, dialogs), adapted to the use cases."""
