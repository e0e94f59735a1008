#!/usr/bin/env bash
# AWS Lambda packages, as `sam build` makes them: `cargo lambda build --release --arm64` of the
# functions (provided.al2023 on Graviton), one `bootstrap` each in
# $CARGO_TARGET_DIR/lambda/<function>/bootstrap, plus <function>.zip next to it, with the sizes
# printed (the goal is under 6 MB zipped; BENCHMARKS.md keeps the figures).
#
#   scripts/build-lambda.sh                          # all five functions
#   scripts/build-lambda.sh place-order session      # some of them
#
# Not part of CI (scripts/test.sh): a cold release build of the five takes many minutes on a
# 2-core machine (BENCHMARKS.md). cargo-lambda comes from PyPI with zig for cross-linking; if
# `cargo lambda` is not on PATH it is installed into .venv-build/ (CARGO_LAMBDA_VENV). The Rust
# target is `rustup target add aarch64-unknown-linux-gnu`.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LAMBDA_VERSION=1.9.2
ALL=(session place-order query-order payment-callback timeout-sweeper merchant-api event-dispatcher bill-reconciler mp-push)
FUNCTIONS=("$@")
[ ${#FUNCTIONS[@]} -gt 0 ] || FUNCTIONS=("${ALL[@]}")
TARGET_DIR=${CARGO_TARGET_DIR:-target}
VENV=${CARGO_LAMBDA_VENV:-.venv-build}

log() { printf '==> %s\n' "$*" >&2; }

for f in "${FUNCTIONS[@]}"; do
  [ -f "functions/$f/Cargo.toml" ] || { echo "no such function: functions/$f" >&2; exit 1; }
done
command -v zip >/dev/null || { echo "zip is required (apt-get install zip)" >&2; exit 1; }

if ! cargo lambda --version >/dev/null 2>&1; then
  if [ ! -x "$VENV/bin/cargo-lambda" ]; then
    log "installing cargo-lambda==$CARGO_LAMBDA_VERSION (and ziglang) into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION"
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
fi

packages=()
for f in "${FUNCTIONS[@]}"; do packages+=(-p "$f"); done
log "cargo lambda build --release --arm64 ${packages[*]}"
start=$(date +%s)
cargo lambda build --release --arm64 --locked "${packages[@]}"
log "built in $(( $(date +%s) - start )) s"

for f in "${FUNCTIONS[@]}"; do
  dir="$TARGET_DIR/lambda/$f"
  rm -f "$dir/$f.zip"
  (cd "$dir" && zip -q -X "$f.zip" bootstrap)
  raw=$(stat -c %s "$dir/bootstrap")
  zipped=$(stat -c %s "$dir/$f.zip")
  printf '%-18s bootstrap %10d B   zip %10d B   %s\n' "$f" "$raw" "$zipped" "$dir/$f.zip"
done
