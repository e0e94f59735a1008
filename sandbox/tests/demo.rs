//! `sandbox demo` end to end: the built binary runs the whole story against a fresh data dir
//! on free ports, exits 0, prints every step's key line, and deletes its data afterwards.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test ends before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under cargo's per-target temporary dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "sandbox-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn demo_runs_the_whole_story_and_exits_0() {
    let dir = TempDir::new("demo");
    let child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["demo", "--data-dir"])
        .arg(&dir.0)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sandbox binary starts");
    let mut child = ChildGuard(child);
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not finish in time");
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "demo failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "[1] log in: wx.login() code \"alice\" -> POST /sessions -> a session token",
        "ok: a bad or used code is refused: 401 INVALID_CODE",
        "] place an order: 2 x milk-tea",
        "ok: stock reserved in the same transaction: reserved 2, sold 0, available 3",
        "] the user pays; WeChat Pay sends the notification 3 times, concurrently",
        "ok: acknowledged (204)",
        "ok: PAID exactly once: one PENDING -> PAID transition, one payment item",
        "ok: sold raised once: 0 -> 2; reserved 0; available 3 of 5",
        "Idempotent-Replayed: true",
        "ok: 422 IDEMPOTENCY_KEY_REUSED",
        "ok: 409 OUT_OF_STOCK",
        "ok: 422 UNKNOWN_SKU",
        "no longer takes the payment: 400 ORDER_",
        // a lost notification, recovered by query-order
        "with \"deliveries\": 0; the backend still has it PENDING",
        "-> 200 status PAID, synced true",
        "ok: PAID through query-order, the callback's own code path: payment item stored, sold 2 -> 3",
        "ok: GET /orders?limit=2 lists the user's orders newest first",
        "ok: anyone else gets 404 ORDER_NOT_FOUND",
        // expiry: the interval sweep closes it at WeChat Pay and here, and the stock comes back
        "sandbox: timeout-sweeper: 1 due: 1 closed, 0 paid, 0 skipped, 0 failed",
        "ok: closed by the timeout-sweeper",
        "trade_state CLOSED at WeChat Pay, then CLOSED here",
        "ok: stock returned in the same transaction: reserved 1 -> 0; sold 3, available 2",
        // refunds through merchant-api, settled by WeChat Pay's notifications
        "-> 201 PROCESSING, out_refund_no R",
        "ok: REFUND.SUCCESS notified: PARTIALLY_REFUNDED, refunded_total",
        "one unit restocked: sold 3 -> 2, available 2 -> 3",
        "ok: REFUNDED, refunded_total",
        "422 REFUND_EXCEEDS_PAID",
        // the merchant's webhook: one order.paid for the 3 notifications, one per refund
        "] the merchant's webhook learns each transition once (signed order events)",
        "ok: one order.paid for 3 notifications, one refund.succeeded per refund",
        // shipping and settlement: uploaded to WeChat, settled by its push
        "-> 201 SHIPPED, uploaded to WeChat (transaction ",
        "ok: the buyer confirmed, WeChat settled and pushed: COMPLETED (settled at WeChat (push))",
        "demo: OK: the story completed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    let delivered = stdout
        .lines()
        .filter(|l| l.contains("delivery") && l.ends_with(": 204"))
        .count();
    assert!(delivered >= 1, "{stdout}");
    // The demo's fresh dir is gone (no --keep); the data dir it was created in stays.
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
