"""Command grammar: what people type and what the bot understands."""

import pytest

from incident_bot.domain.commands import UsageError
from incident_bot.domain.grammar import parse, tokenize


def test_start_title_and_options_anywhere():
    cmd = parse("start", "DB primary down --sev 1 --playbook db -i @Bob @carol")
    assert cmd.text == "DB primary down"
    assert cmd.severity == 1
    assert cmd.playbook == "db"
    assert cmd.invite == ["bob", "carol"]


def test_start_short_options_and_inline_value():
    cmd = parse("start", "-s 2 --team=Ops Payment errors")
    assert (cmd.severity, cmd.team, cmd.text) == (2, "ops", "Payment errors")


def test_start_keeps_apostrophes_and_quotes():
    assert parse("start", 'DB\'s "primary node" down').text == "DB's primary node down"


@pytest.mark.parametrize("bad", ["--sev 5", "--sev", "--sev x", "--frob 1", "--invite", "--invite bob"])
def test_start_bad_options(bad):
    with pytest.raises(UsageError):
        parse("start", f"Title {bad}")


def test_option_not_taken_by_command():
    with pytest.raises(UsageError, match="takes no option"):
        parse("end", "--sev 1")


def test_option_twice():
    with pytest.raises(UsageError, match="twice"):
        parse("start", "x --sev 1 --sev 2")


@pytest.mark.parametrize(
    "text,number,resolution",
    [("", None, ""), ("12", 12, ""), ("#12 fixed it", 12, "fixed it"), ("rolled back", None, "rolled back")],
)
def test_end(text, number, resolution):
    cmd = parse("end", text)
    assert (cmd.incident, cmd.text) == (number, resolution)


def test_join_needs_number():
    assert parse("join", "#7").incident == 7
    for bad in ["", "x", "1 2"]:
        with pytest.raises(UsageError):
            parse("join", bad)


def test_commander_and_sev():
    assert parse("commander", "@Bob").user == "bob"
    assert parse("sev", "2").severity == 2
    assert parse("sev", "sev1").severity == 1
    cmd = parse("sev", "12 2")
    assert (cmd.incident, cmd.severity) == (12, 2)
    for name, bad in [("commander", "bob"), ("commander", "@a @b"), ("sev", "0"), ("sev", ""), ("sev", "1 2 3")]:
        with pytest.raises(UsageError):
            parse(name, bad)


def test_checklist_item_commands():
    assert parse("check", "3").item == 3
    assert parse("rename", "2 Page the DBA").text == "Page the DBA"
    cmd = parse("assign", "#4 @dave")
    assert (cmd.item, cmd.user) == (4, "dave")
    for name, bad in [("check", ""), ("check", "x"), ("check", "0"), ("rename", "2"), ("assign", "2"), ("add", "  ")]:
        with pytest.raises(UsageError):
            parse(name, bad)


def test_playbook_sub_commands():
    cmd = parse("playbook", "create db Page DBA; Fail over ;; Tell support")
    assert (cmd.sub, cmd.playbook, cmd.items) == ("create", "db", ["Page DBA", "Fail over", "Tell support"])
    assert parse("playbook", "remove db 2").item == 2
    for bad in ["", "frob db", "show", "show db extra", "remove db", "create bad/name x"]:
        with pytest.raises(UsageError):
            parse("playbook", bad)


def test_history_limits():
    cmd = parse("history", "--limit 5 --team web --page 2")
    assert (cmd.limit, cmd.team, cmd.page) == (5, "web", 2)
    with pytest.raises(UsageError):
        parse("history", "--limit 0")
    with pytest.raises(UsageError):
        parse("list", "extra words")


def test_tokenize():
    assert tokenize('a "b c" d') == ["a", "b c", "d"]


@pytest.mark.parametrize(
    "name,rest,reason",
    [
        ("start", "x --frob 1", "Unknown option `--frob`."),
        ("end", "--sev 1", "`end` takes no option `--sev`."),
        ("start", "x -s 1 --sev 2", "Option `--sev` is given twice."),
        ("start", "x --sev", "Option `--sev` needs a value."),
        ("start", "x --invite", "`--invite` needs at least one @user."),
        ("start", "x --invite=bob", "`bob` is not a @username."),
        ("start", "x --sev 5", "Severity must be 1, 2, 3 or 4, not `5`."),
        ("history", "--limit 0", "`--limit` must be a number from 1 to 100, not `0`."),
        ("export", "--format xml", "Format must be `md` or `json`, not `xml`."),
        ("info", "x", "`x` is not an incident number."),
        ("join", "", "Give the incident number, e.g. `join 12`."),
        ("commander", "bob", "Name exactly one @user."),
        ("sev", "", "Give one severity, 1 (worst) to 4."),
        ("note", " ", "The text is empty."),
        ("check", "1 2", "Give exactly one item number."),
        ("check", "x", "`x` is not an item number."),
        ("rename", "", "Give the item number."),
        ("rename", "2", "The new text is empty."),
        ("assign", "2", "Name exactly one @user after the item number."),
        ("help", "a b", "Name at most one command."),
        ("list", "extra words", "`list` takes no words, but got `extra words`."),
        ("playbook", "", "Say what to do: show, create, add, remove or delete."),
        ("playbook", "frob db", "`frob` is not one of show, create, add, remove, delete."),
        ("playbook", "show", "`playbook show` needs the playbook's NAME."),
        ("playbook", "create bad/name", "`bad/name` is not a valid name (letters, digits, - _ . ; up to 64)."),
        ("playbook", "delete db x", "`playbook delete` takes only the NAME."),
        ("playbook", "add db", "The item text is empty."),
    ],
)
def test_usage_error_wording(name, rest, reason):
    with pytest.raises(UsageError) as error:
        parse(name, rest)
    assert (error.value.command, error.value.reason) == (name, reason)
