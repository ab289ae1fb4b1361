#!/bin/sh
# Start a game server with its GameLift server parameters from the token broker, as
# `gamelift-token-broker exec` does, for images without Python: POSIX sh and curl only.
#
#   FLEET_ID=fleet-... COMPUTE_NAME=my-host ./start-game-server.sh ./my-game-server --port 7777
#
# Optional: BROKER_URL (default http://127.0.0.1:8787) or BROKER_UDS (a unix socket path),
# BROKER_SECRET_FILE (the caller secret, when the broker has one), BROKER_TIMEOUT (seconds to
# wait for an unavailable broker, default 60). It exports GAMELIFT_SDK_WEBSOCKET_URL,
# _AUTH_TOKEN, _FLEET_ID, _HOST_ID and _PROCESS_ID, which InitSDK() reads, and execs the
# command. Unless it has all five, it exits non-zero and starts nothing.
set -eu

fail() { echo "start-game-server: $*" >&2; exit 1; }

[ "$#" -gt 0 ] || fail "no command to start"
fleet=${FLEET_ID:?set FLEET_ID} compute=${COMPUTE_NAME:?set COMPUTE_NAME}
broker=${BROKER_URL:-http://127.0.0.1:8787} timeout=${BROKER_TIMEOUT:-60}
# They go into curl's configuration between quotes: only the API's own characters.
case $fleet in *[!a-zA-Z0-9-]* | "") fail "FLEET_ID is not a fleet id" ;; esac
case $compute in *[!a-zA-Z0-9/-]* | "") fail "COMPUTE_NAME is not a compute name" ;; esac
case $timeout in *[!0-9]* | "") fail "BROKER_TIMEOUT is not a whole number of seconds" ;; esac

# The answer holds the token: a private directory, removed on every way out.
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

secret=
if [ -n "${BROKER_SECRET_FILE:-}" ]; then
    secret=$(sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$BROKER_SECRET_FILE") ||
        fail "cannot read BROKER_SECRET_FILE"
    [ -n "$secret" ] || fail "BROKER_SECRET_FILE is empty"
    secret=$(printf '%s' "$secret" | sed 's/[\\"]/\\&/g')
fi

# curl takes its options on stdin (printf is a shell builtin): the secret is on no command line.
config() {
    printf 'url = "%s/fleets/%s/computes/%s/server-parameters"\n' "$broker" "$fleet" "$compute"
    if [ -n "${BROKER_UDS:-}" ]; then printf 'unix-socket = "%s"\n' "$BROKER_UDS"; fi
    printf 'header = "X-Token-Broker-Request: true"\nheader = "Accept: text/plain"\n'
    if [ -n "$secret" ]; then printf 'header = "Authorization: Bearer %s"\n' "$secret"; fi
    printf 'fail\nsilent\nmax-time = 10\n'
    printf 'output = "%s/answer"\ndump-header = "%s/headers"\n' "$work" "$work"
    printf 'write-out = "%%{http_code}"\n'
}

deadline=$(($(date +%s) + timeout)) delay=1
while :; do
    if status=$(config | curl --config -); then
        break
    else
        code=$?
    fi
    case $code in
    7 | 28 | 52 | 56) # not listening yet, timed out, or hung up while starting
        why="cannot reach the broker (curl exit $code)" pause=$delay ;;
    22)
        [ "$status" = 503 ] || fail "the broker refused: HTTP $status"
        why="the broker is unavailable: HTTP 503"
        pause=$(sed -n 's/^[Rr]etry-[Aa]fter:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$work/headers")
        pause=${pause:-$delay} ;;
    *) fail "curl failed (exit $code)" ;;
    esac
    [ "$pause" -ge 1 ] || pause=1
    [ $(($(date +%s) + pause)) -le "$deadline" ] || fail "$why; gave up after $timeout s"
    sleep "$pause"
    [ "$delay" -ge 4 ] || delay=$((delay * 2))
done

# Only the five lines, each well formed, are read; anything else is ignored, so a missing or
# malformed value is caught below as missing. None is ever taken from the environment.
uuid='[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'
grep -E "^GAMELIFT_SDK_(WEBSOCKET_URL='wss?://[^' ]+'|AUTH_TOKEN='[a-zA-Z0-9-]{1,64}'|\
FLEET_ID='[a-z]*fleet-[a-zA-Z0-9-]+'|HOST_ID='[a-zA-Z0-9-]+(/[a-zA-Z0-9-]+)?'|\
PROCESS_ID='$uuid')\$" "$work/answer" >"$work/values" || true
unset GAMELIFT_SDK_WEBSOCKET_URL GAMELIFT_SDK_AUTH_TOKEN GAMELIFT_SDK_FLEET_ID \
    GAMELIFT_SDK_HOST_ID GAMELIFT_SDK_PROCESS_ID
# shellcheck disable=SC1091  # written just above, from the checked lines of the answer
. "$work/values"
for name in WEBSOCKET_URL AUTH_TOKEN FLEET_ID HOST_ID PROCESS_ID; do
    eval "[ -n \"\${GAMELIFT_SDK_$name:-}\" ]" || fail "no valid GAMELIFT_SDK_$name from the broker"
done
[ "$GAMELIFT_SDK_FLEET_ID" = "$fleet" ] || fail "the broker answered for another fleet"
[ "$GAMELIFT_SDK_HOST_ID" = "$compute" ] || fail "the broker answered for another compute"
export GAMELIFT_SDK_WEBSOCKET_URL GAMELIFT_SDK_AUTH_TOKEN GAMELIFT_SDK_FLEET_ID \
    GAMELIFT_SDK_HOST_ID GAMELIFT_SDK_PROCESS_ID

# exec skips the EXIT trap: remove the answer first.
rm -rf "$work"
trap - EXIT
exec "$@"
