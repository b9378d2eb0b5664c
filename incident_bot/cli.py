"""Command line: ``incident-bot run | check | migrate | export | migrate-store | register-command`` (also ``python -m incident_bot``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from incident_bot import __version__
from incident_bot.config import DEFAULT_CONFIG_FILE, ConfigError, Settings, load_settings, parse_database
from incident_bot.logging import register_secret, setup_logging

# Exit codes, for systemd's RestartPreventExitStatus= and for scripts.
EXIT_OK = 0
EXIT_FAILED = 1  # `check` found a problem; `run`: Mattermost refused the token (restarting will not help)
EXIT_CONFIG = 2  # invalid settings, or a database written by a newer incident-bot
EXIT_CRASH = 70  # an unexpected error (EX_SOFTWARE): worth a restart, unlike 1 and 2


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop where it is installed (Linux and macOS), else on asyncio's own
    loop. Profiled on `help` at 100/s over 20 channels, alternating five runs each: CPU per
    1,000 commands 2.21 s on uvloop against 2.40 s (epoll, the self-pipe wake-ups of
    aiosqlite's results and socket writes are most of the loop's own time)."""
    try:
        import uvloop
    except ImportError:  # Windows: uvloop is not built there
        return asyncio.run(main)
    return uvloop.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-bot",
        description="Incident response bot for Mattermost. Settings come from a TOML file "
        "(--config, INCIDENT_BOT_CONFIG, or ./config.toml) and INCIDENT_BOT_* environment variables.",
        epilog="exit codes: 0 fine; 1 check found a problem, or Mattermost refused the token; "
        "2 invalid settings, a database from a newer incident-bot, or a damaged database file; 70 unexpected crash.",
    )
    parser.add_argument("--version", action="version", version=f"incident-bot {__version__}")
    parser.add_argument("--config", metavar="PATH", help="TOML settings file (default: ./config.toml if present)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="connect to Mattermost and handle incidents until stopped (SIGTERM/SIGINT)")
    sub.add_parser(
        "check",
        help="diagnose the setup: settings, database, leadership, server, token, teams, announcement channels, "
        "WebSocket, playbooks; one line each (✔ ⚠ ✘), creates nothing; exit 0 only when all pass",
    )
    sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    export = sub.add_parser("export", help="print an incident's postmortem without Mattermost")
    export.add_argument("number", type=int, help="incident number")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--db", metavar="PATH", help="database: a SQLite file or postgresql://… (default: the configured one)")
    move = sub.add_parser(
        "migrate-store",
        help="copy a whole installation to another database (e.g. SQLite to PostgreSQL), then exit; stop the bot first",
    )
    move.add_argument("--from", dest="source", required=True, metavar="DATABASE", help="the current database: SQLite file or URL")
    move.add_argument(
        "--to", dest="target", required=True, metavar="DATABASE", help="a new, empty database, e.g. postgresql://bot@db/incidents"
    )
    register = sub.add_parser(
        "register-command",
        help="create or update the /incident slash command of a team (needs an admin token, stored nowhere); "
        "prints the token to put in slash_tokens",
    )
    register.add_argument("--team", required=True, metavar="NAME", help="the team's name (as in its URL)")
    register.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="a system admin's access token (default: $INCIDENT_BOT_ADMIN_TOKEN); used once, never stored",
    )
    return parser


def _fail(message: str) -> int:
    print(f"incident-bot: {message}", file=sys.stderr)
    return EXIT_CONFIG


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    register_secret(settings.token())
    for token in settings.slash_secrets():
        register_secret(token)
    return settings


async def _register_command(settings: Settings, team: str, admin_token: str | None) -> int:
    from incident_bot.ops.command import RegisterError, register_command

    token = (admin_token or os.environ.get("INCIDENT_BOT_ADMIN_TOKEN") or "").strip()
    if not token:
        return _fail("register-command: give an admin token with --admin-token or INCIDENT_BOT_ADMIN_TOKEN")
    register_secret(token)
    try:
        result = await register_command(settings, token, team)
    except RegisterError as exc:
        print(f"incident-bot: register-command: {exc}", file=sys.stderr)
        return EXIT_FAILED
    command = result.command
    print(f"{'created' if result.created else 'updated'} /{command['trigger']} in team {team}: Mattermost calls {command['url']}")
    print("put its token in the config (or INCIDENT_BOT_SLASH_TOKENS), then restart the bot:")
    print(f'slash_tokens = ["{command["token"]}"]')
    return EXIT_OK


async def _run(settings: Settings) -> int:
    from incident_bot.runtime import Runtime, StartupError, TokenRefused
    from incident_bot.store.base import SchemaTooNew, StoreUnavailable

    try:
        await Runtime(settings).run()
    except TokenRefused as exc:
        print(f"incident-bot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (StartupError, SchemaTooNew, StoreUnavailable) as exc:
        return _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - logged with its stack; exit code 70 lets systemd restart the bot
        structlog.get_logger("incident_bot.bot").exception("bot.crashed", error=type(exc).__name__)
        return EXIT_CRASH
    return EXIT_OK


def _config_source(args: argparse.Namespace) -> str:
    explicit = args.config or os.environ.get("INCIDENT_BOT_CONFIG")
    if explicit:
        return str(Path(explicit).absolute())
    default = Path(DEFAULT_CONFIG_FILE)
    return str(default.absolute()) if default.is_file() else "no file"


def _check(args: argparse.Namespace) -> int:
    """``incident-bot check``: one line per check; 0 when none failed, 1 when one did, 2 for bad settings."""
    from incident_bot.ops.check import run_checks

    setup_logging("error")  # the check's lines are the output; only errors of libraries go to stderr
    try:
        settings = load_settings(args.config)
        token = settings.token()
    except ConfigError as exc:
        print(f"✘ settings: {exc}. Fix: edit the config file or the INCIDENT_BOT_* variable named")
        print("check failed: the settings are invalid")
        return EXIT_CONFIG
    register_secret(token)
    print(f"✔ settings: valid ({_config_source(args)} and INCIDENT_BOT_* variables); server {settings.mattermost_url}")

    async def checks() -> list[bool]:
        failed = []
        async for result in run_checks(settings, token):
            print(result.line(), flush=True)
            failed.append(result.failed)
        return failed

    failed = sum(run_loop(checks()))
    if failed:
        print(f"check failed: {failed} problem{'s' if failed > 1 else ''} to fix (the lines marked ✘)")
        return EXIT_FAILED
    print("check passed")
    return EXIT_OK


async def _migrate(settings: Settings) -> int:
    from incident_bot.store.base import SchemaTooNew, StoreUnavailable
    from incident_bot.store.factory import backend_of, describe, open_store

    store = open_store(settings.database)
    try:
        await store.open()
        version = await store.schema_version()
    except (SchemaTooNew, StoreUnavailable) as exc:
        return _fail(str(exc))
    finally:
        await store.close()
    # One line for `check` and `migrate`: which backend, which database, which schema.
    print(f"database {describe(settings.database)} ({backend_of(settings.database)}): schema version {version}")
    return 0


async def _migrate_store(source_arg: str, target_arg: str) -> int:
    """``migrate-store --from A --to B``: 0 copied and verified, 1 refused or failed, 2 bad arguments."""
    from incident_bot.store.base import SchemaTooNew, StoreUnavailable
    from incident_bot.store.copy import CopyError, copy_store
    from incident_bot.store.factory import backend_of, describe, open_store

    try:
        source, target = parse_database(source_arg), parse_database(target_arg)
    except ValueError as exc:
        return _fail(f"migrate-store: {exc}")
    if describe(source) == describe(target):
        return _fail("migrate-store: --from and --to name the same database")
    if backend_of(source) == "sqlite" and not await asyncio.to_thread(Path(source).is_file):
        return _fail(f"migrate-store: no database at {source}")
    stores = [open_store(source), open_store(target)]
    try:
        for store in stores:
            await store.open()
        counts = await copy_store(*stores)
    except (SchemaTooNew, StoreUnavailable) as exc:
        return _fail(f"migrate-store: {exc}")
    except CopyError as exc:
        print(f"incident-bot: migrate-store: {exc}", file=sys.stderr)
        return 1
    finally:
        for store in stores:
            await store.close()
    for table, count in counts.items():
        print(f"{table}: {count} rows")
    print(
        f"copied {describe(source)} to {describe(target)}; row counts verified. Set database to the new one, then start the bot."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return EXIT_CONFIG
    if args.command == "migrate-store":
        setup_logging("warning")
        return run_loop(_migrate_store(args.source, args.target))
    if args.command == "export":
        from incident_bot.app.export import cli_export

        setup_logging("warning")  # stdout is the export itself; log lines go to stderr
        return run_loop(cli_export(args.config, args.number, args.format, args.db))
    if args.command == "check":
        return _check(args)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}")
    setup_logging(settings.log_level, settings.log_format)
    if args.command == "run":
        try:
            return run_loop(_run(settings))
        except KeyboardInterrupt:
            return 0
    if args.command == "migrate":
        return run_loop(_migrate(settings))
    if args.command == "register-command":
        return run_loop(_register_command(settings, args.team, args.admin_token))
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
