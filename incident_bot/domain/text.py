"""Text people typed, made safe to re-post: it never gains power by being echoed.

Every message function in ``messages.py`` (and the Markdown export) passes user text
through one of these before placing it in the bot's own layout:

- ``safe_inline`` for one-line places: table cells, headings, list items, replies.
- ``safe_block`` for multi-line places the text owns (the body of a status update).
- ``quote`` for multi-line text inside a document with its own headings (the export).
- ``code`` for a token shown in a code span (``Unknown option `--x`.``).

**Mentions.** Mattermost notifies a whole channel for ``@here``, ``@channel`` and ``@all``
(any case). Its parser (server ``app/mention_parser_standard.go``) splits a message into
words on every character that is not a letter, digit, ``. - _ : @``, trims leading
``: . - _`` and trailing ``. - : _``, and splits words containing ``. - :`` again, so
``(@here)``, ``@here.``, ``@HERE:``, ``foo.@all`` and ``foo-@channel`` all notify. A zero-width
joiner after the ``@`` (``@\u200dhere``) makes it two words, ``@`` and ``here``, neither a
mention, and reads exactly the same. We neutralise every ``@here|@channel|@all`` that is not
the start of a longer name (``@allison``, and ``@all-hands`` at the start of a word, are
real users and stay as written); ``x@here`` is no mention for Mattermost, and gets the joiner
anyway (it is invisible). User mentions (``@alice``) and channel links (``~town-square``)
are left alone. Team Edition has no custom user groups, so no other ``@name`` is special.
Mattermost skips code spans and blocks when it looks for mentions, but a code span is only
as safe as its backticks, so code spans are neutralised too.

**Layout.** Inline text is one line (newlines become spaces), table pipes are escaped, a
leading block marker (``#``, ``>``, ``-``, ``+``, ``*``, ``=``, ``1.``) is escaped so the
text cannot open a heading, quote or list where it happens to start a line, and an odd
number of backticks is escaped so a stray one cannot swallow the bot's text after it. All
escapes are Markdown backslash escapes: the rendered text reads as typed.
"""

from __future__ import annotations

import re

ZWJ = "\u200d"  # zero-width joiner: invisible, and not part of a Mattermost mention word

# @here/@channel/@all not followed by a letter or digit (that would be another name).
_SPECIAL = re.compile(r"@(here|channel|all)(?![A-Za-z0-9])", re.IGNORECASE)
_LONGER_NAME = re.compile(r"[._-]+[A-Za-z0-9]")  # @all-hands, @here.now: a username goes on
_WORD_GLUE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:_-@")
_LEADING_MARKER = re.compile(r"^(?:[#>+*=-]|\d+[.)])")  # would open a heading, quote or list


def neutralise_mentions(text: str) -> str:
    """``@here``, ``@channel``, ``@all`` (any case, wherever Mattermost would expand them)
    with a zero-width joiner after the ``@``; everything else unchanged."""
    if "@" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        start = match.start()
        at_word_start = start == 0 or text[start - 1] not in _WORD_GLUE
        if at_word_start and _LONGER_NAME.match(text, match.end()):
            return match.group(0)  # a real username such as @all-hands
        return "@" + ZWJ + match.group(1)

    return _SPECIAL.sub(replace, text)


def _escape(line: str, char: str) -> str:
    """Backslash-escape every ``char``; backslashes the writer put before it are doubled so
    they stay literal (``\\|`` would otherwise be an escaped backslash and a live pipe)."""
    return re.sub(rf"(\\*){re.escape(char)}", lambda m: m.group(1) * 2 + "\\" + char, line)


def safe_inline(text: str) -> str:
    """One line of user text for the bot's own layout: a table cell, a heading, a reply."""
    line = neutralise_mentions(" ".join(text.split()))
    line = _escape(line, "|")
    if line.count("`") % 2:
        line = _escape(line, "`")
    marker = _LEADING_MARKER.match(line)
    if marker:
        end = marker.end()
        line = line[: end - 1] + "\\" + line[end - 1 :]
    if (len(line) - len(line.rstrip("\\"))) % 2:
        line += "\\"  # a lone trailing backslash would escape the bot's next character
    return line


def safe_block(text: str) -> str:
    """Multi-line user text where it is the body of a post (a status update): line breaks and
    the writer's own Markdown stay, mentions lose their power."""
    return neutralise_mentions(text.replace("\r\n", "\n").replace("\r", "\n").strip("\n"))


def quote(text: str) -> str:
    """Multi-line user text as a Markdown block quote: its headings and tables stay inside
    the quote and cannot break the document around it."""
    lines = safe_block(text).split("\n") or [""]
    return "\n".join(f"> {line}" if line.strip() else ">" for line in lines)


def code(text: str) -> str:
    """A token shown in a code span: one line, no backtick that could end the span early."""
    return neutralise_mentions(" ".join(text.split()).replace("`", "'"))
