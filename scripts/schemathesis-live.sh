#!/usr/bin/env bash
# Issue 13 item 14: `schemathesis run --checks all` against the live OpenAPI document of a real keyed
# `harmspot serve` (fresh data directory with the bundled sample, an analyst key), on a free loopback port.
# Usage: scripts/schemathesis-live.sh [extra schemathesis options]   (e.g. --max-examples 20, --include-path-regex
# '^/collections'). Defaults: --max-examples ${EXAMPLES:-5}, --seed ${SEED:-1}, 1 worker, --request-timeout
# ${TIMEOUT:-120} seconds (some valid requests compute for tens of seconds on a loaded machine, e.g. Gi* with
# 9,999 permutations; schemathesis' 10 s default reports them as network errors). Exit code: schemathesis's.
# The server log is kept in the temp directory printed at the end when the run fails.
set -u
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
# serve this checkout's code even with another checkout's venv (VENV=../main/.venv from a worktree): the venv's
# editable install points at the checkout it was made in, and PYTHONPATH comes before it
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TMP=$(mktemp -d -t harmspot-schemathesis-XXXXXX)
export HARMSPOT_DATA_DIR="$TMP/data" HARMSPOT_MAX_UPLOAD_MB=${HARMSPOT_MAX_UPLOAD_MB:-2}
KEY=$("$VENV/bin/harmspot" keys create --role analyst --name schemathesis | "$VENV/bin/python" -c \
      'import json, sys; print(json.load(sys.stdin)["key"])')
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/harmspot" serve --host 127.0.0.1 --port "$PORT" >"$TMP/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null' EXIT
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.3
done
(cd "$TMP" && "$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" --checks all -H "X-API-Key: $KEY" \
  --max-examples "${EXAMPLES:-5}" --workers 1 --seed "${SEED:-1}" --request-timeout "${TIMEOUT:-120}" --no-color "$@")
rc=$?
if [ "$rc" != 0 ]; then echo "schemathesis-live: exit $rc; server log: $TMP/server.log"; else rm -rf "$TMP"; fi
exit "$rc"
