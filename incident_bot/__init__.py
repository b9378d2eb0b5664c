"""incident-bot: incident response for Mattermost."""

__version__ = "0.1.0"
