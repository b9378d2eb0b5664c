"""What Mattermost would expand in a post: its channel-wide mention parser, in Python.

A port of the server's ``mentionsParser.processText`` (``app/mention_parser_standard.go``)
for the three channel-wide words, so tests can say "this post notifies nobody" about the
exact text the bot sent. Stricter than the server in one way: code spans and blocks are
not skipped (a code span the bot builds is only as safe as its backticks).
"""

from __future__ import annotations

import re
import unicodedata

CHANNEL_WIDE = frozenset({"@here", "@channel", "@all"})


def _keeps(c: str) -> bool:
    """Characters the server keeps inside a word (Go: ``: . - _ @``, letters, digits)."""
    return c in ":.-_@" or c.isalpha() or unicodedata.category(c) == "Nd"


def _words(message: str) -> list[str]:
    words, current = [], []
    for c in message:
        if _keeps(c):
            current.append(c)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


def channel_mentions(message: str) -> set[str]:
    """The channel-wide mentions (``@here``, ``@channel``, ``@all``, lower-cased) Mattermost
    would notify for if this message were posted."""
    found: set[str] = set()

    def check(word: str) -> bool:
        if word.lower() in CHANNEL_WIDE:
            found.add(word.lower())
            return True
        return False

    for word in _words(message):
        if word[0] == ":" and word[-1] == ":":
            continue  # an emoji
        word = word.lstrip(":.-_")
        if not word or check(word):
            continue
        stem, suffixed = word, False
        while stem and stem[-1] in ".-:_":
            stem = stem[:-1]
            if check(stem):
                suffixed = True
                break
        if suffixed:
            continue
        if word.lower() not in CHANNEL_WIDE and word.startswith("@"):
            continue  # a possible user mention
        if any(c in word for c in ".-:"):
            for part in re.split(r"[.\-:]", word):
                check(part)
    return found
