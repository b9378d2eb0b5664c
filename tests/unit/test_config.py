"""Settings: file + environment, and the operator's errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from incident_bot.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("INCIDENT_BOT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_file_then_environment_overrides(tmp_path, monkeypatch):
    path = write(tmp_path, 'mattermost_url = "http://chat.local:8065/"\nbot_token = "abc"\n[reminders]\nsev1 = 5\n')
    monkeypatch.setenv("INCIDENT_BOT_REMINDERS__SEV2", "7")
    monkeypatch.setenv("INCIDENT_BOT_DATABASE", str(tmp_path / "x.db"))
    settings = load_settings(path)
    assert settings.mattermost_url == "http://chat.local:8065"
    assert settings.token() == "abc"
    assert settings.reminders.sev1 == 5 and settings.reminders.sev2 == 7
    assert settings.database == tmp_path / "x.db"


def test_token_from_file(tmp_path, monkeypatch):
    (tmp_path / "tok").write_text("s3cret\n")
    monkeypatch.setenv("INCIDENT_BOT_MATTERMOST_URL", "https://chat.local")
    monkeypatch.setenv("INCIDENT_BOT_BOT_TOKEN_FILE", str(tmp_path / "tok"))
    assert load_settings().token() == "s3cret"


@pytest.mark.parametrize(
    "text,needle",
    [
        ('bot_token = "x"', "mattermost_url: missing"),
        ('mattermost_url = "chat"\nbot_token = "x"', "mattermost_url"),
        ('mattermost_url = "https://mattermost.example.com"\nbot_token = "x"', "placeholder"),
        ('mattermost_url = "http://c"\nbot_token = "REPLACE-WITH-THE-BOT-ACCESS-TOKEN"', "bot_token: still the placeholder"),
        ('mattermost_url = "http://c"\nbot_token = "x"\ndefault_severity = 9', "default_severity"),
        ('mattermost_url = "http://c"\nbot_token = "x"\nfrob = 1', "frob"),
        ('mattermost_url = "http://c"\nbot_token = "x"\ndefault_playbook = "nope"', "default_playbook"),
        ('mattermost_url = "http://c"\nbot_token = "x"\n[reminders]\nsev1 = -1', "reminders.sev1"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_settings(write(tmp_path, text))


def test_cli_exits_2_without_stack_trace(tmp_path):
    path = write(tmp_path, 'mattermost_url = "http://c"\nbot_token = "REPLACE-WITH-THE-BOT-ACCESS-TOKEN"')
    proc = subprocess.run([sys.executable, "-m", "incident_bot", "--config", str(path), "run"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bot_token" in proc.stderr and "Traceback" not in proc.stderr


def test_example_config_is_complete_but_refused(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(example)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("x.db", "PATH:x.db"),
        ("sqlite:///rel/x.db", "PATH:rel/x.db"),
        ("sqlite:////abs/x.db", "PATH:/abs/x.db"),
        ("postgresql://bot:pw@db.internal/incidents", "postgresql://bot:pw@db.internal/incidents"),
        ("postgres://bot@/incidents?host=/run/postgresql", "postgres://bot@/incidents?host=/run/postgresql"),
    ],
)
def test_database_selects_the_backend(tmp_path, monkeypatch, value, expected):
    monkeypatch.setenv("INCIDENT_BOT_DATABASE", value)
    path = write(tmp_path, 'mattermost_url = "http://c"\nbot_token = "x"\n')
    database = load_settings(path).database
    assert database == (Path(expected[5:]) if expected.startswith("PATH:") else expected)


@pytest.mark.parametrize("value", ["mysql://h/db", "postgresql://host-only", "sqlite://x.db"])
def test_database_refuses_what_no_backend_reads(tmp_path, value):
    path = write(tmp_path, f'mattermost_url = "http://c"\nbot_token = "x"\ndatabase = "{value}"\n')
    with pytest.raises(ConfigError, match="database: ") as caught:
        load_settings(path)
    assert "pw" not in str(caught.value)


def test_dedupe_retention_from_file_and_environment(tmp_path, monkeypatch):
    path = write(tmp_path, 'mattermost_url = "https://chat.local"\nbot_token = "abc"\ndedupe_retention_days = 30\n')
    assert load_settings(path).dedupe_retention_days == 30
    monkeypatch.setenv("INCIDENT_BOT_DEDUPE_RETENTION_DAYS", "9")
    assert load_settings(path).dedupe_retention_days == 9
    monkeypatch.setenv("INCIDENT_BOT_DEDUPE_RETENTION_DAYS", "7")  # shorter than catch-up can reach back
    with pytest.raises(ConfigError, match="dedupe_retention_days"):
        load_settings(path)
