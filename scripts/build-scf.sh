#!/usr/bin/env bash
# Tencent SCF packages: one static `x86_64-unknown-linux-musl` binary per function, renamed
# `bootstrap` (the custom runtime's entry point), made executable and zipped at the zip's root
# as target/scf/<function>.zip. SCF runs CentOS 7 (glibc 2.17), older than any glibc a current
# toolchain links against, so the binaries are static musl ones. Each bootstrap is also left
# unzipped in target/scf/<function>/, which infra/tencent/<function>/serverless.yml deploys.
#
#   scripts/build-scf.sh                          # all five functions
#   scripts/build-scf.sh place-order session      # some of them
#
# Needs: the Rust target (`rustup target add x86_64-unknown-linux-musl`), a musl C compiler
# for ring and aws-lc-sys (`apt-get install musl-tools`: x86_64-linux-musl-gcc), and `zip`.
# Honours CARGO_TARGET_DIR; the zips go to SCF_OUT (default target/scf).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
ALL=(session place-order query-order payment-callback timeout-sweeper merchant-api event-dispatcher bill-reconciler mp-push)
FUNCTIONS=("$@")
[ ${#FUNCTIONS[@]} -gt 0 ] || FUNCTIONS=("${ALL[@]}")
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${SCF_OUT:-target/scf}

log() { printf '==> %s\n' "$*" >&2; }

for f in "${FUNCTIONS[@]}"; do
  [ -f "functions/$f/Cargo.toml" ] || { echo "no such function: functions/$f" >&2; exit 1; }
done
command -v zip >/dev/null || { echo "zip is required (apt-get install zip)" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
  || { echo "missing Rust target: rustup target add $TARGET" >&2; exit 1; }
# ring and aws-lc-sys compile C for the target; without a musl C compiler aws-lc-sys fails
# with `failed to find tool "x86_64-linux-musl-gcc"`.
if [ -z "${CC_x86_64_unknown_linux_musl:-}" ] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
  echo "no musl C compiler: apt-get install musl-tools (or set CC_x86_64_unknown_linux_musl)" >&2
  exit 1
fi

packages=()
for f in "${FUNCTIONS[@]}"; do packages+=(-p "$f"); done
log "cargo build --release --locked --target $TARGET ${packages[*]}"
start=$(date +%s)
cargo build --release --locked --target "$TARGET" "${packages[@]}"
log "built in $(( $(date +%s) - start )) s"

mkdir -p "$OUT"
out_abs=$(cd "$OUT" && pwd)
for f in "${FUNCTIONS[@]}"; do
  stage="$out_abs/$f"
  rm -rf "$stage" "$out_abs/$f.zip"
  mkdir -p "$stage"
  cp "$TARGET_DIR/$TARGET/release/$f" "$stage/bootstrap"
  chmod 755 "$stage/bootstrap"
  (cd "$stage" && zip -q -X "$out_abs/$f.zip" bootstrap)
  raw=$(stat -c %s "$stage/bootstrap")
  zipped=$(stat -c %s "$out_abs/$f.zip")
  printf '%-18s bootstrap %10d B   zip %10d B   %s\n' "$f" "$raw" "$zipped" "$OUT/$f.zip"
done
