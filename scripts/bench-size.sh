#!/usr/bin/env bash
# Size of the release function binaries: raw, `gzip -9`, and as a Lambda deployment zip
# (`zip -9` of the binary named bootstrap). x86_64 here; arm64 cross builds are the deploy
# issue's. Run scripts/bench-cold-start.sh (or the cargo build below) first.
#
#   scripts/bench-size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [[ "${SKIP_BUILD:-1}" != 1 ]]; then
    cargo build --release -p place-order -p payment-callback
fi
printf '%-18s %12s %12s %12s  %s\n' binary bytes gzip-9 zip-9 file
for name in place-order payment-callback; do
    bin="target/release/$name"
    raw=$(stat -c %s "$bin")
    gz=$(gzip -9 -c "$bin" | wc -c)
    mkdir -p "$TMP/$name"
    cp "$bin" "$TMP/$name/bootstrap"
    (cd "$TMP/$name" && zip -q -9 "../$name.zip" bootstrap)
    zp=$(stat -c %s "$TMP/$name.zip")
    printf '%-18s %12s %12s %12s  %s\n' "$name" "$raw" "$gz" "$zp" "$(file -b "$bin" | cut -d, -f1-2)"
done
