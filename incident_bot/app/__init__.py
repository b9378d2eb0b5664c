"""Use cases (start, end, tick, …), ordering of events, catch-up and the bot's lifecycle."""
