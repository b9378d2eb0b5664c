"""User text re-posted by the bot: mentions lose their power, layout stays the bot's."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incident_bot.domain.text import ZWJ, code, neutralise_mentions, quote, safe_block, safe_inline
from tests.support.mentions import channel_mentions

DANGEROUS = [
    "@here",
    "@channel",
    "@all",
    "@HERE",
    "@Channel",
    "hi @all.",
    "@here:",
    "(@channel)",
    "@all!",
    "@here_",
    "@here...",
    "-@here",
    "foo.@all",
    "foo-@channel",
    "x-@all-hands",
    "a.b.@here.c",
    "**@channel**",
    "`@here`",
    "> @all",
    "@here\n@all",
]


@pytest.mark.parametrize("text", DANGEROUS)
def test_the_parser_port_sees_these_as_channel_mentions(text: str) -> None:
    if text == "`@here`":
        text = "@here"  # the port does not skip code spans; the server does
    assert channel_mentions(text), text


@pytest.mark.parametrize("text", DANGEROUS)
@pytest.mark.parametrize("safe", [safe_inline, safe_block, quote, code])
def test_no_channel_mention_survives(text: str, safe) -> None:  # type: ignore[no-untyped-def]  # parametrized function
    assert channel_mentions(safe(text)) == set()


@pytest.mark.parametrize(
    "text", ["@alice", "ask @bob.", "~town-square", "@allison", "@all-hands", "@here-ish", "mail@example.org"]
)
def test_people_and_channels_stay_as_written(text: str) -> None:
    assert neutralise_mentions(text) == text
    assert safe_inline(text) == text


def test_it_reads_the_same() -> None:
    assert neutralise_mentions("Heads up @channel: DB is @HERE") == f"Heads up @{ZWJ}channel: DB is @{ZWJ}HERE"
    assert safe_block("line one @all\nline two") == f"line one @{ZWJ}all\nline two"


def test_inline_text_cannot_break_a_table_or_a_heading() -> None:
    assert safe_inline("a | b\n# c") == "a \\| b # c"
    assert safe_inline("# big") == "\\# big"
    assert safe_inline("1. first") == "1\\. first"
    assert safe_inline("> quote") == "\\> quote"
    assert safe_inline("back\\|slash") == "back\\\\\\|slash"  # the writer's backslash stays a backslash
    assert safe_inline("one ` tick") == "one \\` tick"
    assert safe_inline("`ok` code") == "`ok` code"  # balanced code spans stay code
    assert safe_inline("ends\\") == "ends\\\\"


def test_quote_keeps_headings_inside_the_quote() -> None:
    assert quote("done\n\n## Checklist\n| a |") == "> done\n>\n> ## Checklist\n> | a |"


def test_code_spans_cannot_be_ended_early() -> None:
    assert "`" not in code("`@here` x")


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


@given(st.text(max_size=60))
def test_any_text_is_one_harmless_line(text: str) -> None:
    line = safe_inline(text)
    assert "\n" not in line and "\r" not in line
    assert channel_mentions(line) == set()
    assert _unescaped_pipes(line) == 0
    assert channel_mentions(safe_block(text)) == set()
    assert channel_mentions(quote(text)) == set()
    assert channel_mentions(code(text)) == set()
    assert neutralise_mentions(text).replace(ZWJ, "") == text.replace(ZWJ, "")


@given(
    st.lists(st.sampled_from(["@", "here", "all", "channel", "HeRe", ".", "-", ":", "_", " ", "x", "(", "!", "\n"]), max_size=12)
)
def test_mention_shaped_text_is_neutralised(parts: list[str]) -> None:
    text = "".join(parts)
    assert channel_mentions(safe_inline(text)) == set(), text
    assert channel_mentions(safe_block(text)) == set(), text
