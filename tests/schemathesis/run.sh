#!/usr/bin/env bash
# schemathesis against our master's OpenAPI document, in one dialect, with every check and a
# bounded number of examples. Run it inside its own network namespace with only loopback:
#     unshare -n bash tests/schemathesis/run.sh NODEPASS_EXE DIALECT MAX_EXAMPLES REPORT_DIR
# (generated instance URLs and tcping targets name arbitrary hosts; in the namespace nothing
# but 127.0.0.0/8 exists, so no request can leave the machine). DIALECT is nodepass or envelope.
# Exit status: schemathesis's (0 only when it found no failure).
#
# Every check runs on every operation (schemathesis enables all its checks unless told
# otherwise; `--checks all` is not passed because a check named on the command line would
# override the per-operation settings; `--max-response-time` adds the one check that needs a
# limit); tests/schemathesis/schemathesis.toml lists the few per-operation exceptions, each
# with the precise reason.
set -euo pipefail

exe=$1 dialect=$2 examples=$3 reports=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

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
st --config-file "$here/schemathesis.toml" run "$schema" \
    --header "X-API-Key: $key" \
    --max-response-time 10 \
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
