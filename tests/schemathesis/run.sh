#!/usr/bin/env bash
# schemathesis against our master's OpenAPI document, in one dialect, with every check and a
# bounded number of examples. Run it inside its own network namespace with only loopback:
#     unshare -n bash tests/schemathesis/run.sh NODEPASS_EXE DIALECT MAX_EXAMPLES REPORT_DIR
# (generated instance URLs and tcping targets name arbitrary hosts; in the namespace nothing
# but 127.0.0.0/8 exists, so no request can leave the machine). DIALECT is nodepass or envelope.
# Exit status: schemathesis's (0 only when it found no failure).
#
# Two exclusions, both deliberate:
# - the check `positive_data_acceptance` expects every schema-valid value to be accepted. A
#   string schema cannot say that a tunnel URL needs a port, that a tcping target must be a
#   valid address, or that `from` must come before `to`; the server refuses those with a 400
#   naming the field, which is the behaviour we want. Every other check runs.
# - `importInstances` (POST /v1/import with `from`) contacts another master; an unreachable one
#   is answered with the documented 502, which `not_a_server_error` counts as a failure. Its
#   behaviour is covered by nodepass-api/tests/nodepass.rs and tests/tests/go_import.rs.
set -euo pipefail

exe=$1 dialect=$2 examples=$3 reports=$4

# Refuse to run outside an isolated namespace: only `lo` may exist.
if ip -o link show | grep -qv ': lo:'; then
    echo "run.sh: not inside a loopback-only network namespace (use unshare -n)" >&2
    exit 2
fi
ip link set lo up

state=$(mktemp -d)
trap 'kill "$master" 2>/dev/null; wait "$master" 2>/dev/null; rm -rf "$state"' EXIT
key=schemathesis-master-key-5d1e
port=18080
NODEPASS_API_KEY=$key "$exe" \
    "master://127.0.0.1:$port/api?log=warn&api=$dialect&state=$state/state.db" \
    >"$state/master.log" 2>&1 &
master=$!

schema=http://127.0.0.1:$port/api/v1/openapi.json
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$schema" 2>/dev/null && break
    kill -0 "$master" 2>/dev/null || { cat "$state/master.log" >&2; exit 1; }
    sleep 0.1
done

mkdir -p "$reports"
reports=$(cd "$reports" && pwd)
cd "$state" # schemathesis keeps its example database in the working directory
set +e
st run "$schema" \
    --header "X-API-Key: $key" \
    --checks all \
    --exclude-checks positive_data_acceptance \
    --exclude-operation-id importInstances \
    --max-examples "$examples" \
    --seed 10 \
    --workers 1 \
    --request-timeout 10 \
    --no-color \
    --report junit --report-junit-path "$reports/schemathesis-$dialect.xml"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "--- master log (tail) ---" >&2
    tail -n 40 "$state/master.log" >&2
fi
exit "$status"
