"""Settings: a TOML file (``--config`` or ``INCIDENT_BOT_CONFIG``) overridden by ``INCIDENT_BOT_*``.

Nested keys use a double underscore in the environment, e.g.
``INCIDENT_BOT_REMINDERS__SEV1=10``. A missing or invalid setting raises
``ConfigError`` whose message names the key and what is expected; the CLI turns it
into exit code 2 without a stack trace.
"""

from __future__ import annotations

import contextvars
import json
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from incident_bot.domain.models import Playbook

DEFAULT_CONFIG_FILE = "config.toml"

# Values shipped in config.example.toml; running with them is always a mistake.
PLACEHOLDER_TOKEN = "REPLACE-WITH-THE-BOT-ACCESS-TOKEN"
PLACEHOLDER_HOSTS = ("mattermost.example.com",)
PLACEHOLDER_SLASH_TOKEN = "token-shown-by-mattermost"  # config.example.toml's, refused
PLACEHOLDER_SECRET = "output of: openssl rand -hex 32"  # config.example.toml's, refused


class ConfigError(Exception):
    """A setting is missing or invalid; the message is meant for the operator."""


DATABASE_SCHEMES = ("postgresql", "postgres")


def parse_database(value: str | os.PathLike[str]) -> Path | str:
    """A ``database`` value in its settled shape: ``postgresql://…`` (or ``postgres://…``)
    stays text, ``sqlite:///path`` and plain paths become a Path. ValueError for another
    scheme or a PostgreSQL URL without a database name."""
    if not isinstance(value, str):
        return Path(value)
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or "/" in scheme or "\\" in scheme:
        return Path(text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return Path(rest[1:])
    if scheme in DATABASE_SCHEMES:
        if not urlsplit(text).path.strip("/"):
            raise ValueError("expected postgresql://user@host/database (the database name is missing)")
        return text
    raise ValueError(f"unknown database scheme {scheme}://; expected a file path, sqlite:///path or postgresql://user@host/db")


class PlaybookSettings(BaseModel):
    """A read-only playbook from the config file, offered in every team."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    default_severity: int = Field(default=3, ge=1, le=4)
    items: list[str] = Field(default_factory=list)

    def to_playbook(self) -> Playbook:
        return Playbook(
            name=self.name,
            description=self.description,
            default_severity=self.default_severity,
            items=[item.strip() for item in self.items if item.strip()],
            read_only=True,
        )


class ReminderSettings(BaseModel):
    """Minutes between status-update reminders per severity; 0 turns them off."""

    model_config = {"extra": "forbid"}

    sev1: int = Field(default=15, ge=0)
    sev2: int = Field(default=30, ge=0)
    sev3: int = Field(default=60, ge=0)
    sev4: int = Field(default=0, ge=0)

    def minutes_for(self, severity: int) -> int:
        return int(getattr(self, f"sev{severity}"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INCIDENT_BOT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    mattermost_url: str = Field(description="Base URL of the Mattermost server, e.g. https://chat.example.org")
    bot_token: SecretStr | None = Field(default=None, description="Access token of the bot account")
    bot_token_file: Path | None = Field(default=None, description="File holding the bot token")
    # A Path for SQLite (a plain path or sqlite:///path), the URL text for PostgreSQL
    # (postgresql://user@host/db); store.factory.open_store takes either.
    database: Path | str = Field(default=Path("incident-bot.db"))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    default_severity: int = Field(default=3, ge=1, le=4)
    announcement_channels: dict[str, str] = Field(default_factory=dict)
    check_emojis: list[str] = Field(default_factory=lambda: ["white_check_mark", "heavy_check_mark", "ballot_box_with_check"])
    timeline_emoji: str = "pushpin"
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    default_playbook: str | None = None
    playbooks: list[PlaybookSettings] = Field(default_factory=list)
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    ops_address: str = Field(
        default="127.0.0.1:9102",
        description='host:port of the /healthz, /readyz and /metrics listener; "off" (or "") turns it off',
    )
    # Days dedupe keys and reply records are kept (app/retention.py): at least 8, longer than
    # the farthest catch-up can reach back (7 days + 1 minute before the newest event seen).
    dedupe_retention_days: int = Field(default=14, ge=8, le=3650)
    # The `/incident` slash command (web/slash.py): the tokens Mattermost shows for the
    # registered command; requests carrying none of them are refused. Empty: no slash command.
    slash_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The base URL Mattermost uses to reach the ops listener (slash command, dialog and
    # button URLs), e.g. http://incident-bot.internal:9102; unset: http://<ops_address>.
    callback_url: str | None = None
    # Signs the context of every button (HMAC-SHA256); with callback_url it turns buttons on.
    actions_secret: SecretStr | None = None

    @field_validator("mattermost_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected an http:// or https:// URL such as https://chat.example.org")
        if parts.hostname in PLACEHOLDER_HOSTS:
            raise ValueError("still the placeholder from config.example.toml; set your server's URL")
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("expected the http:// or https:// URL Mattermost reaches the bot at, e.g. http://10.0.0.5:9102")
        return value

    @field_validator("slash_tokens", mode="before")
    @classmethod
    def _slash_tokens(cls, value: object) -> object:
        if isinstance(value, str):  # INCIDENT_BOT_SLASH_TOKENS=a,b (or a JSON list)
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("slash_tokens")
    @classmethod
    def _no_placeholder_token(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(token.get_secret_value().strip() == PLACEHOLDER_SLASH_TOKEN for token in value):
            raise ValueError("still the placeholder from config.example.toml; paste the token Mattermost shows for /incident")
        return value

    def slash_secrets(self) -> list[str]:
        """The slash command tokens, stripped, empty ones dropped."""
        return [t for t in (token.get_secret_value().strip() for token in self.slash_tokens) if t]

    def callback_base(self, bound: str | None = None) -> str | None:
        """The URL Mattermost calls the bot at: callback_url, else the ops listener's
        address (``bound``: the address actually bound, for port 0)."""
        if self.callback_url:
            return self.callback_url
        address = bound or self.ops_address
        return f"http://{address}" if address else None

    @field_validator("actions_secret")
    @classmethod
    def _actions_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if value.get_secret_value().strip() == PLACEHOLDER_SECRET:
            raise ValueError("still the placeholder from config.example.toml; use e.g. the output of openssl rand -hex 32")
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("too short; use at least 16 random characters (e.g. openssl rand -hex 32)")
        return SecretStr(value.get_secret_value().strip())

    def buttons(self) -> tuple[str, bytes] | None:
        """(callback URL, signing key) when buttons are on: both callback_url and actions_secret set."""
        if self.callback_url is None or self.actions_secret is None:
            return None
        return self.callback_url, self.actions_secret.get_secret_value().encode("utf-8")

    @field_validator("database", mode="before")
    @classmethod
    def _database(cls, value: object) -> object:
        return parse_database(value) if isinstance(value, str | Path) else value

    @field_validator("ops_address")
    @classmethod
    def _ops_address(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("", "off", "false", "no", "none"):
            return ""
        split_address(value)  # raises ValueError with what is expected
        return value

    def ops_listen(self) -> tuple[str, int] | None:
        """(host, port) of the operator listener, or None when it is turned off."""
        return split_address(self.ops_address) if self.ops_address else None

    @field_validator("announcement_channels")
    @classmethod
    def _announce(cls, value: dict[str, str]) -> dict[str, str]:
        return {team.strip().lower(): channel.strip().lstrip("~").lower() for team, channel in value.items()}

    @field_validator("check_emojis")
    @classmethod
    def _emojis(cls, value: list[str]) -> list[str]:
        cleaned = [emoji.strip().strip(":") for emoji in value if emoji.strip().strip(":")]
        if not cleaned:
            raise ValueError('expected at least one emoji name, e.g. ["white_check_mark"]')
        return cleaned

    @model_validator(mode="after")
    def _token_and_playbooks(self) -> Settings:
        if self.bot_token is None and self.bot_token_file is None:
            raise ValueError("bot_token: missing; set bot_token (or INCIDENT_BOT_BOT_TOKEN) or bot_token_file")
        if self.bot_token is not None:
            token = self.bot_token.get_secret_value().strip()
            if not token:
                raise ValueError("bot_token: empty; expected the bot account's access token")
            if token == PLACEHOLDER_TOKEN:
                raise ValueError("bot_token: still the placeholder from config.example.toml; paste the bot's token")
        names = [playbook.name.lower() for playbook in self.playbooks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"playbooks: name {duplicates[0]!r} appears more than once")
        if self.default_playbook and self.default_playbook.lower() not in names:
            raise ValueError(
                f"default_playbook: {self.default_playbook!r} is not one of the playbooks in the config"
                f" ({', '.join(p.name for p in self.playbooks) or 'none defined'})"
            )
        return self

    def token(self) -> str:
        """The bot token, from bot_token or the first line of bot_token_file."""
        if self.bot_token is not None:
            return self.bot_token.get_secret_value().strip()
        assert self.bot_token_file is not None
        try:
            token = self.bot_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"bot_token_file: cannot read {self.bot_token_file} ({exc.strerror})") from None
        if not token or token == PLACEHOLDER_TOKEN:
            raise ConfigError(f"bot_token_file: {self.bot_token_file} holds no usable token")
        return token

    def config_playbooks(self) -> list[Playbook]:
        return [playbook.to_playbook() for playbook in self.playbooks]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _toml_path_var.get(None)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def split_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9102`` for IPv6; port 0 picks a free one) as (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError('expected host:port such as "127.0.0.1:9102" (or "off")')
    return host, int(port)


# The TOML path is chosen at load time; a context variable keeps Settings a plain class.
_toml_path_var: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_path")


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "config"
    message = error["msg"] or "invalid value"
    message = message.removeprefix("Value error, ")
    if error["type"] == "missing":
        env = "INCIDENT_BOT_" + key.upper().replace(".", "__")
        return f"{key}: missing; set it in the config file or as {env}"
    if message.startswith(f"{key}:") or ":" in message.split(" ")[0]:
        return message
    return f"{key}: {message}"


def load_settings(config_path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from the TOML file (if any) and the environment.

    ``config_path`` given explicitly (or through INCIDENT_BOT_CONFIG) must exist;
    the default ``config.toml`` is read only when present.
    """
    explicit = config_path or os.environ.get("INCIDENT_BOT_CONFIG")
    path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if explicit and not path.is_file():
        raise ConfigError(f"config: file {path} not found (from --config or INCIDENT_BOT_CONFIG)")
    token = _toml_path_var.set(path if path.is_file() else None)
    env_backup = os.environ.pop("INCIDENT_BOT_CONFIG", None)
    try:
        return Settings()
    except ValidationError as exc:
        lines = [_describe(error) for error in exc.errors(include_url=False, include_input=False)]
        raise ConfigError("; ".join(lines)) from None
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"config: {path} is not valid TOML ({exc})") from None
    finally:
        _toml_path_var.reset(token)
        if env_backup is not None:
            os.environ["INCIDENT_BOT_CONFIG"] = env_backup
