#!/usr/bin/env bash
# Cold start of the function binaries (goal: < 30 ms from spawn to ready, no network call
# before the first invocation). See BENCHMARKS.md for the recorded figures.
#
#   scripts/bench-cold-start.sh [RUNS]        # default 20 starts per binary
#
# Builds the release binaries (fat LTO), then starts each RUNS times in plain HTTP mode
# (PORT=0) with a valid environment whose DynamoDB endpoint is http://127.0.0.1:9 (nothing
# listens there) and measures spawn -> `ready` log line (scripts/bench_cold_start.py), then
# the same in Lambda mode: spawn -> first runtime API poll at a fake runtime API. If
# strace is installed, one more start per binary runs under `strace -f` and fails the script
# if any connect()/sendto() happens before the ready line. Set SKIP_BUILD=1 to reuse the
# binaries already in target/release.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS="${1:-20}"
BINARIES=(target/release/place-order target/release/payment-callback)

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release -p place-order -p payment-callback
fi
for b in "${BINARIES[@]}"; do
    [[ -x "$b" ]] || { echo "missing $b (build it first)" >&2; exit 1; }
done

# The driver stops every process it starts (SIGTERM after each ready line); an interrupted
# run stops the driver, whose own cleanup then stops its child.
DRIVER=""
trap '[[ -n "$DRIVER" ]] && kill -TERM "$DRIVER" 2>/dev/null; wait 2>/dev/null || true' EXIT

echo "== $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
STRACE=()
if command -v strace >/dev/null; then
    STRACE=(--strace)
else
    echo "strace not installed: skipping the no-network-before-ready check" >&2
fi
timeout 600 python3 scripts/bench_cold_start.py --keys testdata/keys --runs "$RUNS" \
    "${STRACE[@]}" "${BINARIES[@]}" &
DRIVER=$!
wait "$DRIVER"
DRIVER=""
# Lambda mode: spawn -> the first GET .../runtime/invocation/next at a fake runtime API (the
# binary's only connection before its first invocation is the one the platform requires).
timeout 600 python3 scripts/bench_cold_start.py --keys testdata/keys --runs "$RUNS" --lambda \
    "${BINARIES[@]}" &
DRIVER=$!
wait "$DRIVER"
DRIVER=""
echo "== done, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
