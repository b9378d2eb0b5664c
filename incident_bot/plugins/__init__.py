"""mmpy_bot Plugin classes: thin adapters from a message or reaction to a use case."""
