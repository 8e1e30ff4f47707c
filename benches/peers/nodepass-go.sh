#!/bin/sh
# Run the Go NodePass as a `--peer` process: `benches/peers/nodepass-go.sh ROLE URL`.
# It writes gob/ beside its executable, so a copy runs from the peer's $BENCH_WORKDIR.
# The executable: $NODEPASS_GO, else ../shared/peers/nodepass-go (from the repository root).
set -e
src="${NODEPASS_GO:-../shared/peers/nodepass-go}"
cp "$src" "$BENCH_WORKDIR/nodepass-go-$1"
exec "$BENCH_WORKDIR/nodepass-go-$1" "$2"
