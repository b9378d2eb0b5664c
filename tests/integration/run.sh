#!/usr/bin/env bash
# make test-integration: the scenario suite against a real Mattermost server (Team Edition).
#
#   bash tests/integration/run.sh [pytest args]      # tests/scenarios -m "not fake_only" + args
#   bash tests/integration/run.sh --serve            # start the server and wait (Ctrl-C ends it)
#
# 1. outside any namespace (needs the package registries): install PostgreSQL and iproute2 from
#    Debian if missing, build the pinned Mattermost server from its Go module (cached in
#    ~/.cache/incident-bot/mattermost-<version>/, reused when present);
# 2. inside `unshare --net --pid` with only `lo` up: PostgreSQL (as user mmtest, Unix socket only)
#    and Mattermost in a temporary directory, the session's admin over the REST API, then pytest
#    (and the bots the tests start) — nothing in there can reach anything but loopback;
# 3. teardown: the session stops everything it started; when the namespace's first process exits
#    the kernel kills whatever is left in it; the temporary directory is removed here too.
# Logs (server.log, postgres.log, pytest.log, bot logs) go to test-artifacts/integration-<time>/,
# removed when the run passes and kept (and named) when it fails or is interrupted.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "integration: needs root (network namespace, PostgreSQL under its own user)" >&2
    exit 2
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi

apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    echo "integration: installing PostgreSQL (Debian package)"
    apt_install postgresql
fi
command -v ip >/dev/null || apt_install iproute2
command -v unshare >/dev/null || apt_install util-linux

"$PYTHON" -m tests.integration.server build

MODE=session
if [ "${1:-}" = "--serve" ]; then MODE=serve; shift; fi

STAMP=$(date +%Y%m%d-%H%M%S)
ART=$ROOT/test-artifacts/integration-$STAMP
mkdir -p "$ART"
TMP=$(mktemp -d /tmp/incident-bot-it.XXXXXX)

cleanup() {
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "integration: interrupted; logs kept in $ART" >&2' INT TERM

set +e
# --kill-child: if this script is killed, the namespace's first process gets SIGTERM and stops
# everything; when that process exits, the kernel kills anything left in the PID namespace.
unshare --net --pid --fork --mount-proc --kill-child=SIGTERM -- \
    bash -c 'ip link set lo up && exec "$@"' inner \
    "$PYTHON" -m tests.integration.server "$MODE" --artifacts "$ART" --tmp "$TMP" -- "$@"
rc=$?
set -e

if [ $rc = 0 ]; then
    rm -rf "$ART"
    rmdir "$ROOT/test-artifacts" 2>/dev/null || true
else
    echo "integration: FAILED (exit $rc); server, bot and test logs kept in $ART" >&2
    ls -l "$ART" >&2 || true
fi
exit $rc
