"""Text people typed never gains power by being echoed: every command that re-posts it, and
every post, edit, header and export the bot makes, notifies nobody channel-wide, and user
text cannot break the bot's tables or headings."""

from __future__ import annotations

import re

from incident_bot.domain.text import ZWJ
from tests.support.inprocess import App
from tests.support.mentions import channel_mentions

LOUD = "@channel @ALL (@here) foo.@all @here: ask @bob on ~town-square"
LAYOUT = "a | b # c ` d"
TITLE = f"{LOUD} {LAYOUT}"
BLOCK = f"{LOUD}\n## Heading\n| x | y |\n|---|---|\n> @all"


def everything_written(app: App) -> list[str]:
    """Every text the bot sent to Mattermost: posts, their edits, channel fields, files."""
    texts = [c.args[1] for c in app.chat.called("create_post")]
    texts += [c.kwargs["message"] for c in app.chat.called("patch_post") if c.kwargs.get("message")]
    texts += [str(v) for c in app.chat.called("patch_channel") for v in c.kwargs.values()]
    texts += [c.args[2].decode() for c in app.chat.called("upload_file")]
    return texts


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def seen(text: str) -> str:
    """What a person reads: the joiner is invisible, backslash escapes are not shown."""
    return re.sub(r"\\(.)", r"\1", text.replace(ZWJ, ""))


async def test_every_echo_of_loud_text_notifies_nobody(app: App) -> None:
    alert = await app.post(app.carol, app.room, f"ALERT {LOUD}")
    await app.say(app.alice, f"start {TITLE} --sev 2 --playbook database --invite @channel @here @bob", root_id=alert.id)
    await app.say(app.alice, "start", root_id=alert.id)  # title from the alert post: #2
    channel = app.channel_of(1)
    said = [
        await app.say(app.alice, f"update {BLOCK}", channel),
        await app.say(app.alice, f"note {BLOCK}", channel),
        await app.say(app.alice, f"add {TITLE}", channel),
        await app.say(app.alice, f"rename 3 {TITLE} renamed", channel),
        await app.say(app.alice, "assign 3 @bob", channel),
        await app.say(app.alice, "assign 3 @here", channel),
        await app.say(app.alice, "commander @all", channel),
        await app.say(app.alice, "check 3", channel),
        await app.say(app.alice, "checklist", channel),
        await app.say(app.alice, "sev @channel", channel),
        await app.say(app.alice, "check @all", channel),
        await app.say(app.alice, "@here", channel),
        await app.say(app.alice, "end --@channel", channel),
        await app.say(app.alice, "help @here", channel),
        await app.say(app.alice, "info", channel),
        await app.say(app.alice, "timeline", channel),
        await app.say(app.alice, "export", channel),
        await app.say(app.alice, "export --format `@all", channel),
    ]
    pinned = await app.post(app.bob, channel, BLOCK)
    await app.react(app.bob, pinned.id, "pushpin")
    said += [
        await app.say(app.alice, "timeline", channel),
        await app.say(app.alice, f"remove 3 {LOUD}", channel),
        await app.say(app.alice, f"end {BLOCK}", channel),
        await app.dm(app.bob, "list"),
        await app.dm(app.bob, "history"),
        await app.dm(app.bob, "info 1"),
        await app.dm(app.bob, "join @here"),
        await app.dm(app.alice, "export 1"),
        await app.dm(app.bob, "start --team @channel x"),
        await app.say(app.alice, f"playbook create loud {LOUD}; {LAYOUT}"),
        await app.say(app.alice, f"playbook add loud {BLOCK}"),
        await app.say(app.alice, "playbook show loud"),
        await app.say(app.alice, "playbook show @channel"),
        await app.say(app.alice, "playbook remove loud 1"),
        await app.say(app.alice, "playbook delete loud"),
        await app.say(app.alice, "playbooks"),
    ]
    assert all(said)
    written = everything_written(app)
    assert len(written) > 60
    loud = [t for t in written if channel_mentions(t)]
    assert loud == [], loud
    # the text still reads as typed, and people and channels are still linked
    shown = "\n".join(seen(t) for t in written)
    assert "@channel @ALL (@here) foo.@all @here: ask @bob on ~town-square" in shown
    assert any("ask @bob on ~town-square" in t for t in written)
    assert any("Not added" in t and f"@{ZWJ}channel" in t for t in written)


async def test_user_text_cannot_break_the_summary_table_or_the_heading(app: App) -> None:
    channel = await app.start(title=TITLE)
    await app.say(app.alice, f"end {BLOCK}", channel)
    summary = next(p for p in app.chat.bot_posts(channel) if p.is_pinned).message
    lines = summary.split("\n")
    assert lines[0].startswith("### Incident #1: ") and lines[1] == ""
    rows = lines[2 : lines.index("", 2)]
    assert len(rows) >= 8 and all(unescaped_pipes(row) == 3 for row in rows), rows
    assert any(row.startswith("| Resolution |") for row in rows)
    timeline = await app.say(app.alice, "timeline", channel)
    table = [line for line in timeline.split("\n") if line.startswith("| ")]
    assert table and all(unescaped_pipes(row) == 5 for row in table), table
    listed = await app.dm(app.bob, "history")
    assert all(unescaped_pipes(row) == 8 for row in listed.split("\n") if row.startswith("| "))
