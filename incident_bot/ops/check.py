"""``incident-bot check``: diagnose the setup, offline and online, one line per check.

Creates nothing: the database is opened read-only (a missing one is reported as "will be
created at …"), and the only calls to Mattermost read. Each line starts with ✔ (passed),
⚠ (passed with a warning), ✘ (failed) or a dash (skipped: an earlier check failed); a failed
line ends with what to do about it. The checks after a failed server or token check are
skipped, since they cannot tell anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import aiohttp

from incident_bot.chat.client import MattermostClient
from incident_bot.chat.errors import Forbidden, MattermostError, NotFound, Unauthorized
from incident_bot.chat.events import Hello, parse_frame, parse_reply
from incident_bot.chat.models import Team, User
from incident_bot.chat.stream import websocket_url
from incident_bot.config import Settings
from incident_bot.store.base import StoreUnavailable
from incident_bot.store.factory import backend_of, describe, newest_schema_version, peek_lease, peek_schema_version, sqlite_path

TIMEOUT = 10.0  # seconds for each call to the server
PRIVATE_CHANNEL_PERMISSION = "create_private_channel"


class Mark(StrEnum):
    OK = "✔"
    WARN = "⚠"
    FAIL = "✘"
    SKIP = "–"


@dataclass(frozen=True)
class Result:
    check: str
    mark: Mark
    text: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.mark is Mark.FAIL

    def line(self) -> str:
        fix = f". Fix: {self.fix}" if self.fix else ""
        return f"{self.mark} {self.check}: {self.text}{fix}"


def ok(check: str, text: str) -> Result:
    return Result(check, Mark.OK, text)


def warn(check: str, text: str, fix: str = "") -> Result:
    return Result(check, Mark.WARN, text, fix)


def fail(check: str, text: str, fix: str) -> Result:
    return Result(check, Mark.FAIL, text, fix)


def skip(check: str, why: str) -> Result:
    return Result(check, Mark.SKIP, f"not checked ({why})")


# --- offline ------------------------------------------------------------------------------


async def check_database(database: str | os.PathLike[str]) -> Result:
    """Readable, writable, and its schema version against the code's; changes nothing."""
    newest = await asyncio.to_thread(newest_schema_version, database)
    backend = backend_of(database)
    label = f"{describe(database)} ({backend})"
    if backend == "sqlite":
        path = sqlite_path(database).absolute()
        label = f"{path} (sqlite)"
        if not path.exists():
            parent = path.parent
            if not parent.is_dir():
                return fail(
                    "database",
                    f"directory {parent} does not exist",
                    "create it, or set database to a path in an existing directory",
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                return fail(
                    "database",
                    f"{path} does not exist and {parent} is not writable",
                    "give the bot's user write access to the directory",
                )
            return ok("database", f"will be created at {label} (schema version {newest}) on first start")
        if not os.access(path, os.R_OK):
            return fail("database", f"{path} is not readable", "give the bot's user read and write access to the file")
    try:
        version = await peek_schema_version(database)
    except StoreUnavailable as exc:
        return fail(
            "database",
            f"{label} cannot be read as an incident-bot database ({exc})",
            "set database to the bot's, or restore a backup",
        )
    if backend == "sqlite" and (not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK)):
        return fail(
            "database",
            f"{path} (or its directory, for the -wal and -shm files) is not writable",
            "give the bot's user write access to the file and its directory",
        )
    if version > newest:
        return fail(
            "database",
            f"{label} has schema version {version}, newer than this incident-bot knows ({newest})",
            "run the incident-bot version that wrote it, or restore the backup taken before that upgrade",
        )
    if version == 0:
        return ok("database", f"{label} is empty; the first start creates the schema (version {newest})")
    if version < newest:
        return ok("database", f"{label}, schema version {version}; the next start upgrades it to {newest} (back it up first)")
    return ok("database", f"{label}, schema version {version} (current)")


async def check_leadership(database: str | os.PathLike[str]) -> Result:
    """Whether this process would lead or stand by (PostgreSQL's lease; SQLite always leads)."""
    if backend_of(database) == "sqlite":
        return ok("leadership", "SQLite: one process, always the leader (for two replicas, use PostgreSQL)")
    try:
        lease = await peek_lease(database)
    except StoreUnavailable as exc:
        return warn("leadership", f"the leader lease cannot be read ({exc})", "the first start creates it (schema version 4)")
    if lease is None or not lease.holder or lease.expires_in <= 0:
        return ok("leadership", "no replica holds the leader lease: this process would become the leader")
    return ok(
        "leadership",
        f"{lease.holder} leads (lease generation {lease.generation}, {lease.expires_in:.1f}s left before renewal): "
        "this process would start as a standby",
    )


def check_playbooks(settings: Settings) -> list[Result]:
    playbooks = settings.config_playbooks()
    if not playbooks:
        return [ok("playbooks", "none in the config (teams can create their own in chat)")]
    names = ", ".join(p.name for p in playbooks)
    default = f"; default_playbook {settings.default_playbook}" if settings.default_playbook else ""
    results = [ok("playbooks", f"{len(playbooks)} in the config ({names}){default}")]
    for playbook in playbooks:
        if not playbook.items:
            results.append(warn("playbooks", f"{playbook.name} has no items", "add items, or remove the playbook"))
    return results


def check_buttons(settings: Settings) -> Result:
    """Buttons are on with the secret that signs them, and need the URL Mattermost calls
    (callback_url alone serves the slash command)."""
    if settings.actions_secret is None:
        return ok("buttons", "off (actions_secret is not set)")
    if settings.callback_url is None:
        return fail(
            "buttons",
            "actions_secret is set but callback_url is not, so posts carry no buttons",
            "set callback_url (or INCIDENT_BOT_CALLBACK_URL) to the http(s) URL Mattermost reaches ops_address at",
        )
    if settings.ops_listen() is None:
        return fail(
            "buttons",
            "ops_address is off, so nothing answers Mattermost at callback_url",
            "set ops_address to the host:port callback_url points at",
        )
    return ok("buttons", f"on; Mattermost calls {settings.callback_url}/mattermost/action")


# --- online -------------------------------------------------------------------------------


async def check_server(session: aiohttp.ClientSession, url: str) -> tuple[Result, bool]:
    """Reachable, answering as Mattermost, and its version; TLS errors named as such."""
    ping = f"{url}/api/v4/system/ping"
    try:
        async with session.get(ping, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
            status = resp.status
            header = resp.headers.get("X-Version-Id", "")
            body = await resp.read()
    except aiohttp.ClientConnectorCertificateError as exc:
        return fail(
            "server",
            f"TLS error: the certificate of {url} was not accepted ({exc.certificate_error})",
            "install the server's full certificate chain, or trust its CA on this host (SSL_CERT_FILE)",
        ), False
    except aiohttp.ClientSSLError as exc:
        return fail(
            "server", f"TLS error talking to {url} ({exc})", "check that the server speaks HTTPS on that port, or use http://"
        ), False
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = os.strerror(error.errno).lower() if error.errno else (error.strerror or str(error))
        return fail(
            "server",
            f"cannot connect to {url} ({reason})",
            "check mattermost_url and that Mattermost runs and is reachable from here",
        ), False
    except TimeoutError:
        return fail("server", f"no answer from {url} within {TIMEOUT:g}s", "check mattermost_url, proxies and firewalls"), False
    except aiohttp.ClientError as exc:
        return fail("server", f"{url} did not answer properly ({type(exc).__name__}: {exc})", "check mattermost_url"), False
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 200 or not isinstance(data, dict) or str(data.get("status", "")).upper() != "OK":
        return fail(
            "server",
            f"{url} answers, but not as Mattermost (HTTP {status} on /api/v4/system/ping)",
            "set mattermost_url to the address people open in a browser, without /api/v4",
        ), False
    version = str(data.get("version") or "") or ".".join(header.split(".")[:3])
    return ok("server", f"{url} answers: Mattermost {version or '(version not said)'}"), True


async def check_token(client: MattermostClient) -> tuple[Result, User | None]:
    try:
        me = await client.get_me()
    except Unauthorized:
        return fail(
            "token",
            "Mattermost refused the token (401)",
            "create a new token for the bot account (Integrations → Bot Accounts → Create New Token) and set bot_token or bot_token_file",
        ), None
    except MattermostError as exc:
        return fail("token", f"could not check the token ({exc})", "see the server check above, and try again"), None
    if not me.is_bot:
        return warn(
            "token",
            f"accepted, but @{me.username} is a person's account (a personal access token); the bot would act as that person",
            "create a bot account (Integrations → Bot Accounts) and use its token",
        ), me
    return ok("token", f"accepted: bot account @{me.username}"), me


async def check_teams(client: MattermostClient, me: User) -> tuple[list[Result], list[Team]]:
    try:
        teams = await client.get_user_teams("me")
    except MattermostError as exc:
        return [fail("teams", f"could not list the bot's teams ({exc})", "try again; check the server's logs")], []
    if not teams:
        return [
            fail(
                "teams",
                f"@{me.username} is in no team, so nobody can start an incident",
                f"add @{me.username} to each team that should use it (Team menu → Add members)",
            )
        ], []
    results = []
    refused = []
    unknown = []
    for team in sorted(teams, key=lambda t: t.name):
        try:
            roles = await client.get_team_member_roles(team.id, "me")
            permissions = await client.get_role_permissions([*me.roles.split(), *roles])
        except MattermostError:
            unknown.append(team.name)
            continue
        if PRIVATE_CHANNEL_PERMISSION not in permissions:
            refused.append(team.name)
    names = ", ".join(sorted(t.name for t in teams))
    if refused:
        results.append(
            fail(
                "teams",
                f"in {names}, but may not create private channels in {', '.join(refused)}",
                "let members create private channels there (System Console → User Management → Permissions)",
            )
        )
    elif unknown:
        results.append(
            warn("teams", f"in {names}; could not read the permissions in {', '.join(unknown)}", "check the bot's roles by hand")
        )
    else:
        results.append(ok("teams", f"in {names}; may create private channels in each"))
    return results, teams


async def check_announcements(client: MattermostClient, me: User, teams: list[Team], settings: Settings) -> list[Result]:
    if not settings.announcement_channels:
        return [ok("announcement channels", "none configured")]
    bot_teams = {t.name.lower(): t for t in teams}
    results = []
    for team_name, channel_name in sorted(settings.announcement_channels.items()):
        check = f"announcement channel {team_name}/~{channel_name}"
        team = bot_teams.get(team_name)
        if team is None:
            results.append(
                fail(
                    check,
                    f"the bot is not in a team named {team_name}",
                    f"add @{me.username} to it, or fix [announcement_channels]",
                )
            )
            continue
        try:
            channel = await client.get_channel_by_name(team.id, channel_name)
            member = channel is not None and await client.is_channel_member(channel.id, me.id)
        except (Forbidden, NotFound):
            channel, member = None, False
        except MattermostError as exc:
            results.append(fail(check, f"could not look it up ({exc})", "try again; check the server's logs"))
            continue
        if channel is None:
            results.append(
                fail(
                    check,
                    "no such channel (a private channel the bot is not in looks missing too)",
                    f"create ~{channel_name} in {team_name} and add @{me.username}, or fix [announcement_channels]",
                )
            )
        elif not member:
            results.append(fail(check, f"exists, but @{me.username} is not a member", f"add @{me.username} to ~{channel_name}"))
        else:
            results.append(ok(check, "exists and the bot is a member"))
    return results


async def check_websocket(session: aiohttp.ClientSession, url: str, token: str) -> Result:
    """Connect, authenticate, and wait for the server's OK (or its hello)."""
    ws_url = websocket_url(url)
    try:
        async with asyncio.timeout(TIMEOUT):
            async with session.ws_connect(ws_url, headers={"Authorization": f"Bearer {token}"}) as ws:
                challenge = {"seq": 1, "action": "authentication_challenge", "data": {"token": token}}
                await ws.send_str(json.dumps(challenge))
                async for msg in ws:
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                    reply = parse_reply(msg.data)
                    if reply is not None and reply.seq_reply == 1:
                        if reply.status == "OK":
                            return ok("websocket", f"{ws_url} connected and authenticated")
                        return fail("websocket", f"{ws_url} refused the token ({reply.error_id})", "see the token check")
                    if isinstance(parse_frame(msg.data), Hello):
                        return ok("websocket", f"{ws_url} connected and authenticated")
                return fail(
                    "websocket", f"{ws_url} closed the connection before authenticating", "check the server's and proxy's logs"
                )
    except aiohttp.WSServerHandshakeError as exc:
        return fail(
            "websocket",
            f"{ws_url} refused the WebSocket upgrade (HTTP {exc.status})",
            "a proxy in front of Mattermost must pass WebSocket upgrades for /api/v4/websocket (Upgrade and Connection headers)",
        )
    except TimeoutError:
        return fail(
            "websocket", f"{ws_url} did not authenticate within {TIMEOUT:g}s", "check that proxies pass WebSocket traffic"
        )
    except aiohttp.ClientError as exc:
        return fail("websocket", f"{ws_url} failed ({type(exc).__name__}: {exc})", "check proxies and firewalls")


# --- the slash command: can Mattermost call the bot? ---------------------------------------

CALLBACK, SLASH_ON, LISTENER = "callback url", "slash commands", "bot listener"
UNTRUSTED = "ServiceSettings.AllowedUntrustedInternalConnections"


async def _private_addresses(host: str) -> list[str] | None:
    """The loopback/private/link-local addresses ``host`` is or resolves to; None when it
    does not resolve."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    return sorted({str(a) for a in addresses if a.is_private or a.is_loopback or a.is_link_local})


async def check_callback(settings: Settings) -> Result:
    """The URL the slash command and dialogs are registered with, as far as the bot can tell
    whether Mattermost may call it (the server refuses private addresses unless allowed)."""
    base = settings.callback_base()
    if not base:
        return fail(
            CALLBACK, "slash_tokens are set but there is no URL for Mattermost to call", "set callback_url (or ops_address)"
        )
    parts = urlsplit(base)
    if not settings.callback_url and parts.port == 0:
        return fail(
            CALLBACK, "ops_address picks a free port (:0), so the URL is unknown", "set callback_url or a fixed ops_address port"
        )
    host = parts.hostname or ""
    private = await _private_addresses(host)
    if private is None:
        return fail(
            CALLBACK, f"callback host {host} does not resolve here", "set callback_url to the bot's address as the server sees it"
        )
    server_host = urlsplit(settings.mattermost_url).hostname or ""
    server_private = await _private_addresses(server_host) or []
    loopback = any(ipaddress.ip_address(a).is_loopback for a in private)
    if loopback and not any(ipaddress.ip_address(a).is_loopback for a in server_private):
        return fail(
            CALLBACK,
            f"Mattermost calls {base}, a loopback address: it reaches the bot only when both run on one host",
            "set callback_url to an address the Mattermost server reaches",
        )
    if private:
        return warn(
            CALLBACK,
            f"Mattermost calls {base} ({', '.join(private)}, a private address): it refuses unless {UNTRUSTED} lists {host}",
            f"add {host} to {UNTRUSTED} (System Console > Environment > Developer)",
        )
    return ok(CALLBACK, f"Mattermost calls {base}/mattermost/command")


async def check_commands_enabled(client: MattermostClient) -> Result:
    try:
        config = await client.get_client_config()
    except MattermostError as exc:
        return warn(SLASH_ON, f"could not read the server's client config ({exc.status})")
    if str(config.get("EnableCommands", "true")).lower() == "false":
        return fail(SLASH_ON, "custom slash commands are off on the server", "set ServiceSettings.EnableCommands to true")
    return ok(SLASH_ON, "custom slash commands are on")


async def check_listening(session: aiohttp.ClientSession, settings: Settings) -> Result:
    base = settings.callback_base()
    try:
        async with session.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
            if resp.status == 200:
                return ok(LISTENER, f"the bot answers at {base}")
            return warn(LISTENER, f"{base}/healthz answered {resp.status}, not the bot's 200")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return warn(LISTENER, f"nothing answers at {base} from here (fine when the bot is not running yet)")


async def run_checks(settings: Settings, token: str) -> AsyncIterator[Result]:
    """Every check, in order, as it finishes."""
    database = await check_database(settings.database)
    yield database
    if not database.failed:
        yield await check_leadership(settings.database)
    for result in check_playbooks(settings):
        yield result
    yield check_buttons(settings)
    url = settings.mattermost_url
    online = ("token", "teams", "announcement channels", "websocket")
    async with aiohttp.ClientSession() as session:
        server, reachable = await check_server(session, url)
        yield server
        if not reachable:
            for name in online:
                yield skip(name, "the server did not answer")
            return
        client = MattermostClient(url, token, retries=0, timeout=TIMEOUT, session=session)
        token_result, me = await check_token(client)
        yield token_result
        if me is None:
            for name in online[1:]:
                yield skip(name, "the token was refused")
            return
        team_results, teams = await check_teams(client, me)
        for result in team_results:
            yield result
        for result in await check_announcements(client, me, teams, settings):
            yield result
        yield await check_websocket(session, url, token)
        if settings.slash_secrets():
            yield await check_callback(settings)
            yield await check_commands_enabled(client)
            yield await check_listening(session, settings)
