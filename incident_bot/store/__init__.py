"""Persistence: the repository interface and its SQLite implementation (the only SQL in the tree)."""
