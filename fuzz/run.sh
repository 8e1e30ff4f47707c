#!/usr/bin/env bash
# Build and run one fuzz target with libFuzzer on the STABLE toolchain (no cargo-fuzz, no
# nightly): coverage comes from LLVM's SanitizerCoverage pass, which stable rustc runs through
# `-C passes` / `-C llvm-args`. No AddressSanitizer (that needs -Z), but the code under test has
# no `unsafe`, so Rust's own checks (bounds, overflow, debug assertions) are what can fail.
#
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]   e.g. fuzz/run.sh frame 600
#
# Targets: frame datagram url sniff proxy. The corpus grows in fuzz/corpus/TARGET (commit only
# a minimized one: fuzz/run.sh TARGET 0 -merge=1 ...), crashes land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
target="${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags]}"
seconds="${2:-60}"
shift $(( $# >= 2 ? 2 : 1 ))
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts and proc macros.
cargo build --release --features libfuzzer --target "$triple" --bins
mkdir -p "corpus/$target" "artifacts/$target"
exec "target/$triple/release/$target" "corpus/$target" \
    -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" -print_final_stats=1 "$@"
