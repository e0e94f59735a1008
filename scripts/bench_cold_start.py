#!/usr/bin/env python3
"""Cold-start driver for scripts/bench-cold-start.sh (Python 3 stdlib only).

Starts each function binary N times in plain HTTP mode (PORT=0) with a valid environment and
measures the wall time from spawn to the `ready` log line on its stdout, then stops it with
SIGTERM. With --strace, additionally runs each binary once under
`strace -f -e trace=connect,sendto,write` and reports every connect()/sendto() made before
the `ready` line was written (the goal: none) and during the whole run. With --lambda, each
start is in Lambda mode instead (AWS_LAMBDA_RUNTIME_API pointing at a fake runtime API in this
script) and the time is from spawn to its first `GET .../runtime/invocation/next`.

Usage: bench_cold_start.py --keys DIR [--runs 20] [--strace | --lambda] [--env NAME=VALUE]...
       BINARY...
"""

import argparse
import json
import math
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 10.0


def function_env(keys_dir):
    """A complete, valid configuration; DynamoDB points at a port nothing listens on."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PORT": "0",
        "WXPAY_APPID": "wxd678efh567hg6787",
        "WXPAY_MCHID": "1230000109",
        "WXPAY_MCH_SERIAL_NO": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "WXPAY_MCH_PRIVATE_KEY_FILE": os.path.join(keys_dir, "test_merchant_key.pem"),
        "WXPAY_APIV3_KEY": "a7cde1ZJB1kG2e7VNvNh6Ysk8Hrs4Wbq",
        "WXPAY_PUBLIC_KEY_FILE": os.path.join(keys_dir, "test_platform_public.pem"),
        "WXPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_0112345678202411240000000000000000",
        "WXPAY_NOTIFY_URL": "https://example.com/notify/wechatpay",
        "ORDERS_TABLE": "wxpay-orders-bench",
        "DYNAMODB_ENDPOINT": "http://127.0.0.1:9",
        "AWS_REGION": "ap-shanghai",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "ALLOW_DEBUG_IDENTITY": "1",
        "AUTH_MODE": "authorizer",
        "LOG_FORMAT": "json",
    }
    return env


def is_ready_line(line):
    try:
        record = json.loads(line)
    except ValueError:
        return False
    fields = record.get("fields", {})
    return fields.get("message") == "ready" or record.get("message") == "ready"


def children(pid):
    """Direct children of `pid` (Linux /proc)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def stop(proc):
    # Under strace the binary is strace's child: stop it first, or a signalled strace detaches
    # and leaves it running.
    for child in children(proc.pid):
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def time_to_ready(argv, env):
    """Seconds from spawn to the ready line, and that line."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = start + READY_TIMEOUT_S
        buf = b""
        fd = proc.stdout.fileno()
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeError(f"{argv[-1]}: no ready line within {READY_TIMEOUT_S} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{argv[-1]}: exited before ready: {buf!r} {err}")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if is_ready_line(line):
                    return time.perf_counter() - start, line.decode()
    finally:
        stop(proc)


def lambda_env(base, server, function_name):
    """`base` in Lambda mode: what Lambda sets for a function, its runtime API being `server`
    (an http.server on 127.0.0.1). Also used by bench_load.py."""
    env = dict(base)
    env.pop("PORT", None)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    })
    return env


class FakeLambdaApi:
    """A Lambda runtime API that only notes when `invocation/next` is first asked for: the
    moment a function is ready for its first invocation in Lambda mode. The request is held
    (no event is ever given) until the function is stopped."""

    def __init__(self):
        import http.server
        import threading

        self.polled = threading.Event()
        self.polled_at = None
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.endswith("/runtime/invocation/next") and not api.polled.is_set():
                    api.polled_at = time.perf_counter()
                    api.polled.set()
                time.sleep(READY_TIMEOUT_S)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, base):
        return lambda_env(base, self.server, "bench")

    def time_to_first_poll(self, argv, env):
        """Seconds from spawn to the first `invocation/next`."""
        self.polled.clear()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            if not self.polled.wait(READY_TIMEOUT_S):
                raise RuntimeError(f"{argv[-1]}: no runtime API poll within {READY_TIMEOUT_S} s")
            return self.polled_at - start, "GET /2018-06-01/runtime/invocation/next"
        finally:
            stop(proc)


def percentile(sorted_values, p):
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def measure(binary, env, runs, lambda_api=None):
    samples = []
    for _ in range(runs):
        if lambda_api is None:
            seconds, ready = time_to_ready([binary], env)
        else:
            seconds, ready = lambda_api.time_to_first_poll([binary], lambda_api.env(env))
        samples.append(seconds * 1000.0)
    ordered = sorted(samples)
    return {
        "binary": binary,
        "runs": runs,
        "min_ms": round(ordered[0], 2),
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(percentile(ordered, 95), 2),
        "max_ms": round(ordered[-1], 2),
        "first_ms": round(samples[0], 2),
        "samples_ms": [round(s, 2) for s in samples],
        "ready_line": ready,
    }


CONNECT_RE = re.compile(r"\b(connect|sendto)\(")


def strace_check(binary, env):
    with tempfile.TemporaryDirectory(prefix="bench-strace-") as tmp:
        trace = os.path.join(tmp, "trace")
        argv = ["strace", "-f", "-qq", "-s", "256", "-e", "trace=connect,sendto,write",
                "-o", trace, binary]
        seconds, _ = time_to_ready(argv, env)
        with open(trace, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    before, after, seen_ready = [], [], False
    for line in lines:
        if not seen_ready and "write(1," in line and "ready" in line:
            seen_ready = True
            continue
        if CONNECT_RE.search(line):
            (after if seen_ready else before).append(line)
    return {
        "binary": binary,
        "ready_ms_under_strace": round(seconds * 1000.0, 2),
        "ready_write_found": seen_ready,
        "connect_or_sendto_before_ready": before,
        "connect_or_sendto_total": before + after,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", required=True, help="testdata/keys")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--lambda", dest="lambda_mode", action="store_true",
                        help="Lambda mode: time to the first runtime API poll (fake API)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra variable for the binaries (experiments)")
    parser.add_argument("binaries", nargs="+")
    args = parser.parse_args()
    # Stopped from outside: unwind, so the `finally` in time_to_ready stops the child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = function_env(os.path.abspath(args.keys))
    env.update(item.split("=", 1) for item in args.env)
    ok = True
    lambda_api = FakeLambdaApi() if args.lambda_mode else None
    mode = "Lambda mode, spawn -> first invocation/next" if lambda_api else "spawn -> ready"
    for binary in args.binaries:
        result = measure(binary, env, args.runs, lambda_api)
        result["mode"] = "lambda" if lambda_api else "http"
        print(json.dumps(result))
        print(f"{os.path.basename(binary)}: {args.runs} starts, {mode}: "
              f"min {result['min_ms']} ms, median {result['median_ms']} ms, "
              f"p95 {result['p95_ms']} ms, max {result['max_ms']} ms "
              f"(first {result['first_ms']} ms)", file=sys.stderr)
    if args.strace:
        for binary in args.binaries:
            result = strace_check(binary, env)
            print(json.dumps(result))
            before = result["connect_or_sendto_before_ready"]
            verdict = "none" if not before else f"{len(before)}: {before}"
            print(f"{os.path.basename(binary)} under strace: ready write seen: "
                  f"{result['ready_write_found']}; connect/sendto before ready: {verdict}; "
                  f"in the whole run: {len(result['connect_or_sendto_total'])}",
                  file=sys.stderr)
            ok = ok and result["ready_write_found"] and not before
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
