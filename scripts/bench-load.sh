#!/usr/bin/env bash
# Load run of the release function binaries against the local sandbox (wrk).
#
#   scripts/bench-load.sh [SECONDS]      # default 15 s per phase
#
# 1. builds the sandbox and the sign-notification helper (debug) and the release functions;
# 2. starts the sandbox on free 127.0.0.1 ports in a temporary data dir, sources its
#    sandbox.env and starts target/release/place-order and payment-callback on their own
#    free ports, pointed at the sandbox (its embedded DynamoDB and WeChat Pay simulator);
# 3. wrk -t2 -c8: POST /orders, a unique Idempotency-Key per request, unlimited sku;
# 4. places one real order, signs one TRANSACTION.SUCCESS notification for it with the
#    sandbox's keys, and wrk -t2 -c8 replays it to /notify/wechatpay (first delivery applies,
#    the rest are duplicates: WeChat Pay's retry path);
# 5. prints VmHWM (peak RSS) of both function processes and the CPU time of each process;
# 6. starts one more payment-callback in Lambda mode against a fake runtime API
#    (bench_load.py lambda-runtime) and hands it the notification LAMBDA_INVOCATIONS (2000)
#    times, one at a time, as Lambda does: CPU per invocation of the deployed mode.
# All traffic goes to 127.0.0.1 (the functions' plain HTTP mode binds 0.0.0.0:$PORT, as the
# runtime does for SCF web functions). Every process it starts is stopped on exit; it fails
# if an order was not answered 201 or a notification not 204. Needs wrk (apt-get install wrk).
# Set SKIP_BUILD=1 to use the binaries already built. PERF=1 (needs perf, Debian
# linux-perf) samples payment-callback's user-space CPU during the notification phase and
# prints the top symbols; use it with FUNC_DIR=target/profiling (the release build with its
# symbols: cargo build --profile profiling -p place-order -p payment-callback); PERF_ARGS
# replaces the sampling options (default -F 1999; e.g. "-F 499 --call-graph dwarf,16384").
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
DURATION="${1:-15}"
THREADS=2
CONNECTIONS=8
# where the function binaries are (target/debug only to try the script out quickly)
FUNC_DIR="${FUNC_DIR:-target/release}"
# where the sandbox is: the debug build is the default environment; SANDBOX_DIR=target/release
# (after `cargo build --release -p sandbox`) takes the environment's CPU cost down
SANDBOX_DIR="${SANDBOX_DIR:-target/debug}"
command -v wrk >/dev/null || { echo "wrk not installed (apt-get install -y wrk)" >&2; exit 1; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build -p sandbox -p wxpay-tests --bin sign-notification
    cargo build --release -p place-order -p payment-callback
    if [[ "$SANDBOX_DIR" == target/release ]]; then cargo build --release -p sandbox; fi
fi

WORK="$(mktemp -d -t bench-load.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # bounded: a process that ignores SIGTERM for 15 s is killed
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PY="python3 $ROOT/scripts/bench_load.py"
FAILED=0
mapfile -t PORTS < <($PY free-ports 4)
SANDBOX_PORT=${PORTS[0]} WECHAT_PORT=${PORTS[1]} PO_PORT=${PORTS[2]} CB_PORT=${PORTS[3]}
DATA="$WORK/data"

"$ROOT/$SANDBOX_DIR/sandbox" --data-dir "$DATA" --port "$SANDBOX_PORT" \
    --wechat-port "$WECHAT_PORT" >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
PIDS+=($SANDBOX_PID)
$PY wait-ready "$WORK/sandbox.log" 120 || { cat "$WORK/sandbox.log" >&2; exit 1; }

set -a
# shellcheck disable=SC1091
. "$DATA/sandbox.env"
set +a
PORT=$PO_PORT "$ROOT/$FUNC_DIR/place-order" >"$WORK/place-order.log" 2>&1 &
PO_PID=$!
PIDS+=($PO_PID)
PORT=$CB_PORT "$ROOT/$FUNC_DIR/payment-callback" >"$WORK/payment-callback.log" 2>&1 &
CB_PID=$!
PIDS+=($CB_PID)
$PY wait-ready "$WORK/place-order.log" 20 || { cat "$WORK/place-order.log" >&2; exit 1; }
$PY wait-ready "$WORK/payment-callback.log" 20 || { cat "$WORK/payment-callback.log" >&2; exit 1; }
PO_URL="http://127.0.0.1:$PO_PORT"
CB_URL="http://127.0.0.1:$CB_PORT"
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"

echo "== $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== $SANDBOX_DIR/sandbox on $SANDBOX_URL, simulator on :$WECHAT_PORT;" \
    "$FUNC_DIR/place-order on $PO_URL, payment-callback on $CB_URL"

# Warm-up: one order end to end (first DynamoDB connection, first prepay).
read -r WARM_NO WARM_AMOUNT < <($PY place-order "$PO_URL" o_bench_warmup)
echo "warm-up order $WARM_NO ($WARM_AMOUNT fen): 201"
CPU_PIDS=(sandbox="$SANDBOX_PID" place-order="$PO_PID" payment-callback="$CB_PID")
$PY cpu "${CPU_PIDS[@]}"

echo "== place-order: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s POST /orders"
$PY place-order-lua >"$WORK/place-order.lua"
BENCH_RUN="$(date +%s)" timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" \
    -d"${DURATION}s" --timeout 10s -s "$WORK/place-order.lua" "$PO_URL" | tee "$WORK/wrk-po.txt"
$PY check "$WORK/wrk-po.txt" 201 || FAILED=1
$PY cpu "${CPU_PIDS[@]}"
echo "place-order after load: $($PY rss "$PO_PID")"

echo "== payment-callback: one signed notification replayed by wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s"
read -r NO AMOUNT < <($PY place-order "$PO_URL" o_bench_payer)
echo "order $NO ($AMOUNT fen) placed; status before: $($PY order-status "$SANDBOX_URL" "$NO")"
"$ROOT/target/debug/sign-notification" --data-dir "$DATA" --out-trade-no "$NO" \
    --amount "$AMOUNT" --openid o_bench_payer >"$WORK/notification.json"
$PY notify-lua "$WORK/notification.json" >"$WORK/notify.lua"
PERF_PID=""
if [[ "${PERF:-0}" == 1 ]]; then
    # shellcheck disable=SC2086  # PERF_ARGS is a list of options
    perf record ${PERF_ARGS:--F 1999} -o "$WORK/perf.data" -p "$CB_PID" -- sleep "$DURATION" \
        >"$WORK/perf-record.log" 2>&1 &
    PERF_PID=$!
fi
timeout $((DURATION + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s \
    -s "$WORK/notify.lua" "$CB_URL/notify/wechatpay" | tee "$WORK/wrk-cb.txt"
if [[ -n "$PERF_PID" ]]; then
    wait "$PERF_PID" || true
    echo "== perf: payment-callback, user-space samples by symbol (self), top 40"
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -40 || true
    echo "== perf: by crate (self)"
    perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
        | python3 "$ROOT/scripts/bench_load.py" perf-by-crate || true
fi
$PY check "$WORK/wrk-cb.txt" 204 || FAILED=1
$PY cpu "${CPU_PIDS[@]}"
echo "order $NO status after: $($PY order-status "$SANDBOX_URL" "$NO")"
echo "payment-callback outcomes logged: applied $(grep -c 'outcome=.\?applied' "$WORK/payment-callback.log" || true)," \
    "duplicate $(grep -c 'outcome=.\?duplicate' "$WORK/payment-callback.log" || true)"
echo "payment-callback after load: $($PY rss "$CB_PID")"

# The way Lambda drives it: one instance, one event at a time through the runtime API.
LAMBDA_N="${LAMBDA_INVOCATIONS:-2000}"
echo "== payment-callback in Lambda mode: the same notification as $LAMBDA_N API Gateway v2 events, one at a time"
$PY lambda-runtime "$WORK/notification.json" "$LAMBDA_N" "$WORK/payment-callback-lambda.log" \
    "$ROOT/$FUNC_DIR/payment-callback" || FAILED=1
echo "place-order at the end: $($PY rss "$PO_PID")"
echo "== done $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$FAILED"
