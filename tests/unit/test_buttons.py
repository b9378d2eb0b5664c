"""Buttons in the domain: signed contexts and the props each post part carries; the settings
that turn them on and what `check` says about them."""

from __future__ import annotations

import pytest

from incident_bot.config import ConfigError, load_settings
from incident_bot.domain import buttons, signing
from incident_bot.domain.buttons import Act
from incident_bot.ops.check import Mark, check_buttons

KEY = b"k" * 32


def test_a_signed_context_verifies_and_any_change_breaks_it():
    ctx = buttons.context(KEY, 12, Act.SEV, "summary")
    assert signing.verify(KEY, ctx) == ctx
    assert signing.verify(KEY, {**ctx, "selected_option": "2"}) is not None  # added by the server on a select
    assert signing.verify(b"x" * 32, ctx) is None
    for field, value in (("incident", 13), ("action", "end"), ("part", "item:1"), ("v", 2)):
        assert signing.verify(KEY, {**ctx, field: value}) is None, field
    assert signing.verify(KEY, {k: v for k, v in ctx.items() if k != "sig"}) is None
    assert signing.verify(KEY, {**ctx, "extra": 1}) is None
    assert signing.verify(KEY, "not a context") is None


def test_a_signed_text_for_dialog_state():
    text = signing.sign_text(KEY, {"incident": 3, "nonce": "ab"})
    state = signing.verify_text(KEY, text)
    assert state is not None and state["incident"] == 3 and state["nonce"] == "ab"
    assert signing.verify_text(KEY, text.replace('"incident":3', '"incident":4')) is None
    assert signing.verify_text(KEY, "{") is None and signing.verify_text(KEY, None) is None


def test_each_part_carries_its_buttons():
    def ids(part: str) -> list[str]:
        props = buttons.props("http://bot:9102", KEY, 7, part)
        return [a["id"] for a in props["attachments"][0]["actions"]]

    assert ids("summary") == ["update", "sev", "end", "export"]
    assert ids("item:4") == ["tick", "untick"]
    assert ids("announce") == ["join"]
    action = buttons.props("http://bot:9102", KEY, 7, "item:4")["attachments"][0]["actions"][0]
    assert action["integration"]["url"] == "http://bot:9102/mattermost/action"
    assert action["integration"]["context"] == buttons.context(KEY, 7, Act.TICK, "item:4")
    for part in ("summary", "item:4", "announce"):  # Mattermost routes clicks by [A-Za-z0-9]+ ids
        assert all(a["id"].isalnum() for a in buttons.props("http://b", KEY, 1, part)["attachments"][0]["actions"])


@pytest.fixture
def env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("INCIDENT_BOT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INCIDENT_BOT_MATTERMOST_URL", "http://chat.local")
    monkeypatch.setenv("INCIDENT_BOT_BOT_TOKEN", "t")
    return monkeypatch


def test_buttons_are_on_with_callback_url_and_secret(env):
    settings = load_settings()
    assert settings.buttons() is None and check_buttons(settings).mark is Mark.OK
    env.setenv("INCIDENT_BOT_CALLBACK_URL", "http://10.0.0.5:9102/")
    settings = load_settings()  # the callback URL alone serves the slash command: buttons off
    assert settings.buttons() is None and check_buttons(settings).mark is Mark.OK
    env.delenv("INCIDENT_BOT_CALLBACK_URL")
    env.setenv("INCIDENT_BOT_ACTIONS_SECRET", "0123456789abcdef0123")
    result = check_buttons(load_settings())
    assert result.mark is Mark.FAIL and "callback_url" in result.text
    env.setenv("INCIDENT_BOT_CALLBACK_URL", "http://10.0.0.5:9102/")
    settings = load_settings()
    assert settings.buttons() == ("http://10.0.0.5:9102", b"0123456789abcdef0123")
    assert check_buttons(settings).mark is Mark.OK and "0123456789abcdef" not in check_buttons(settings).line()
    assert "0123456789abcdef" not in repr(settings)
    env.setenv("INCIDENT_BOT_OPS_ADDRESS", "off")
    result = check_buttons(load_settings())
    assert result.mark is Mark.FAIL and "ops_address is off" in result.text


def test_bad_button_settings_are_named(env):
    env.setenv("INCIDENT_BOT_ACTIONS_SECRET", "short")
    with pytest.raises(ConfigError, match="actions_secret: too short"):
        load_settings()
    env.delenv("INCIDENT_BOT_ACTIONS_SECRET")
    env.setenv("INCIDENT_BOT_CALLBACK_URL", "10.0.0.5:9102")
    with pytest.raises(ConfigError, match="callback_url: expected"):
        load_settings()


def test_the_example_configs_placeholders_are_refused(env):
    env.setenv("INCIDENT_BOT_ACTIONS_SECRET", "output of: openssl rand -hex 32")
    with pytest.raises(ConfigError, match="actions_secret: still the placeholder"):
        load_settings()
    env.delenv("INCIDENT_BOT_ACTIONS_SECRET")
    env.setenv("INCIDENT_BOT_SLASH_TOKENS", "token-shown-by-mattermost")
    with pytest.raises(ConfigError, match="slash_tokens: still the placeholder"):
        load_settings()
