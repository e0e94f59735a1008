#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   1. a Python venv in .venv (kept between runs) with moto's DynamoDB server and cfn-lint;
#   2. moto started on a free loopback port (the store conformance suite's second engine);
#   3. cfn-lint on template.yaml once it exists, then every Rust test (embedded Dynoxide is
#      in-process); moto is stopped on exit, with SIGINT (it ignores SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
VENV=${WXPAY_TEST_VENV:-.venv}

log() { printf '==> %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/cfn-lint" ] \
  || ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  log "installing moto[server]==$MOTO_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
fi

port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_log=$(mktemp -t moto.XXXXXX.log)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
stop_moto() {
  kill -INT "$moto_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$moto_pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$moto_pid" 2>/dev/null || true
}
trap stop_moto EXIT

for _ in $(seq 100); do
  if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  kill -0 "$moto_pid" 2>/dev/null || { cat "$moto_log" >&2; echo "moto failed to start" >&2; exit 1; }
  sleep 0.2
done
export MOTO_ENDPOINT="http://127.0.0.1:$port"
log "moto $MOTO_VERSION on $MOTO_ENDPOINT"

if [ -f template.yaml ]; then
  log "cfn-lint template.yaml"
  "$VENV/bin/cfn-lint" template.yaml
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "import graph of the shared crate: no cycles"
python3 scripts/import_graph.py >/dev/null || { python3 scripts/import_graph.py | tail -5; exit 1; }

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# Doc tests first: nextest's summary must be the run's closing line.
log "doc tests"
cargo test --workspace --doc --quiet

# The end-to-end suites drive the built function binaries.
log "cargo build --workspace --bins"
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  log "cargo nextest run --workspace"
  cargo nextest run --workspace --profile ci
else
  log "cargo test --workspace (cargo-nextest not installed)"
  cargo test --workspace
fi
