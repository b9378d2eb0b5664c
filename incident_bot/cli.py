"""Command line: ``incident-bot run | check | migrate | export`` (also ``python -m incident_bot``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from incident_bot import __version__
from incident_bot.config import ConfigError, Settings, load_settings
from incident_bot.logging import register_secret, setup_logging

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-bot",
        description="Incident response bot for Mattermost. Settings come from a TOML file "
        "(--config, INCIDENT_BOT_CONFIG, or ./config.toml) and INCIDENT_BOT_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"incident-bot {__version__}")
    parser.add_argument("--config", metavar="PATH", help="TOML settings file (default: ./config.toml if present)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="connect to Mattermost and handle incidents until stopped (SIGTERM/SIGINT)")
    sub.add_parser("check", help="validate the settings and the database, then exit")
    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    export = sub.add_parser("export", help="print an incident's postmortem without Mattermost")
    export.add_argument("number", type=int, help="incident number")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--db", metavar="PATH", help="database file (default: the configured one)")
    return parser


def _fail(message: str) -> int:
    print(f"incident-bot: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    register_secret(settings.token())
    return settings


async def _run(settings: Settings) -> int:
    from incident_bot.runtime import Runtime, StartupError
    from incident_bot.store.base import SchemaTooNew

    try:
        await Runtime(settings).run()
    except (StartupError, SchemaTooNew) as exc:
        return _fail(str(exc))
    return 0


async def _migrate(settings: Settings) -> int:
    from incident_bot.store.base import SchemaTooNew
    from incident_bot.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.database)
    try:
        await store.open()
        version = await store.schema_version()
    except SchemaTooNew as exc:
        return _fail(str(exc))
    finally:
        await store.close()
    print(f"database {settings.database}: schema version {version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_CONFIG
    if args.command == "export":
        from incident_bot.app.export import cli_export

        setup_logging("warning")  # stdout is the export itself; log lines go to stderr
        return asyncio.run(cli_export(args.config, args.number, args.format, args.db))
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "run":
        try:
            return asyncio.run(_run(settings))
        except KeyboardInterrupt:
            return 0
    if args.command in ("check", "migrate"):
        code = asyncio.run(_migrate(settings))
        if code == 0 and args.command == "check":
            print("configuration OK")
        return code
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
