//! The daily bill reconciliation end to end (DESIGN 11): the BUILT bill-reconciler run once by
//! hand (`--event {"bill_date": ...}`) and merchant-api's bill routes, against the simulator's
//! bill and embedded Dynoxide. A payment whose notifications never came and that no sweep has
//! reached, and a refund whose notification never came, are recovered; a tampered download
//! is refused with nothing applied.

use std::process::{Command, Stdio};
use std::time::Duration;

use sandbox::{Fault, PayRequest};
use serde_json::{Value, json};
use shared::domain::{OrderStatus, OutRefundNo, RefundStatus};
use shared::store::Store;
use shared::timefmt::{CHINA, date_string};
use shared::wechatpay::RefundState;
use time::OffsetDateTime;

use crate::e2e_support::*;

const TOKEN: &str = "merchant-bills-token-0123456789abcdef-01";

fn today() -> String {
    date_string(OffsetDateTime::now_utc().to_offset(CHINA).date())
}

/// Runs the BUILT bill-reconciler once, locally, with `event`: its result line (the run
/// must succeed).
async fn run_reconciler(app: &TestApp, event: Value) -> Value {
    let (success, result) = run_reconciler_once(app, event).await;
    assert!(success, "bill-reconciler failed: {result}");
    result
}

/// Runs the BUILT bill-reconciler once: whether it exited successfully, and its result line.
async fn run_reconciler_once(app: &TestApp, event: Value) -> (bool, Value) {
    let env: Vec<(String, String)> = app
        .function_env(None)
        .into_iter()
        .filter(|(k, _)| k != "PORT" && k != "ALLOW_DEBUG_IDENTITY" && k != "AUTH_MODE")
        .collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary(Function::BillReconciler))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["--event", &event.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("bill-reconciler runs")
    })
    .await
    .expect("reconciler thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The summary is the last line that is not a log line (a failure logs one after it).
    let result = stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("level").is_none())
        .unwrap_or_else(|| {
            panic!(
                "no result line; exited {:?}: {stdout} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    (output.status.success(), result)
}

async fn start_merchant_api(app: &TestApp) -> (FunctionProcess, String) {
    let mut env: Vec<(String, String)> = app
        .function_env(Some(&app.notify_url))
        .into_iter()
        .filter(|(k, _)| k != "ALLOW_DEBUG_IDENTITY" && k != "AUTH_MODE")
        .collect();
    env.push(("MERCHANT_AUTH".into(), "token".into()));
    env.push(("MERCHANT_API_TOKEN".into(), TOKEN.into()));
    let mut process = FunctionProcess::spawn(Function::MerchantApi, &env);
    let url = process.wait_http().await;
    (process, url)
}

async fn merchant(app: &TestApp, method: &str, url: &str, key: Option<&str>, body: Value) -> Reply {
    let mut request = app
        .http
        .request(method.parse().unwrap(), url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if method == "POST" {
        request = request.body(body.to_string());
    }
    Reply::read(request.send().await.expect("merchant-api answers")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_payments_and_refunds_are_recovered_from_the_bill_and_a_tampered_bill_applies_nothing()
{
    // Refunds settle only when the test says so (no notification then).
    let app = spawn_app_with(|c| c.refund_delay = Duration::from_secs(3600)).await;
    let (_merchant_process, url) = start_merchant_api(&app).await;
    let day = today();

    // A: paid at WeChat Pay, every notification lost, not expired (no sweep reaches it).
    let (_, lost) = app
        .place("o_bill_a", "bill-e2e-a", &[(SKU_LIMITED, 1)])
        .await;
    app.sim
        .pay(&PayRequest {
            deliveries: 0,
            ..PayRequest::new(&lost)
        })
        .expect("the user pays");
    // B: paid and notified; then partly refunded, the refund's notification lost.
    let (_, refunded) = app
        .place("o_bill_b", "bill-e2e-b", &[(SKU_LIMITED, 2)])
        .await;
    app.sim
        .pay(&PayRequest::new(&refunded))
        .expect("the user pays");
    app.wait_acknowledged(&refunded).await;
    let refund = merchant(
        &app,
        "POST",
        &format!("{url}/merchant/orders/{refunded}/refunds"),
        Some("bill-e2e-refund-1"),
        json!({"amount": 100}),
    )
    .await;
    assert_eq!(refund.status, 201, "{}", refund.text());
    let out_refund_no = refund.json()["out_refund_no"].as_str().unwrap().to_owned();
    app.sim
        .settle_refund(&out_refund_no, RefundState::Success, 0)
        .expect("WeChat Pay pays the refund back");
    assert_eq!(app.order(&lost).await.status, OrderStatus::Pending);

    // A tampered download: refused, nothing applied, no report.
    app.sim.inject_fault(Fault::tampered_bill(1)).unwrap();
    // A failed run is the process's failure (the invocation's error on Lambda and SCF).
    let (success, refused) = run_reconciler_once(&app, json!({"bill_date": day})).await;
    assert!(!success, "{refused}");
    assert_eq!(refused["outcome"], "failed", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("SHA-1"),
        "{refused}"
    );
    assert_eq!(app.order(&lost).await.status, OrderStatus::Pending);
    let no = OutRefundNo::parse(&out_refund_no).unwrap();
    let kept = app.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(kept.status, RefundStatus::Processing);
    merchant(
        &app,
        "GET",
        &format!("{url}/merchant/bills/{day}"),
        None,
        Value::Null,
    )
    .await
    .assert_error(404, "BILL_NOT_FOUND");

    // The whole bill: the payment and the refund recovered, the notified payment matched.
    let result = run_reconciler(&app, json!({"bill_date": day})).await;
    assert_eq!(result["outcome"], "reconciled", "{result}");
    let report = &result["report"];
    assert_eq!(report["rows"], 3, "{report}");
    assert_eq!(report["recovered"], 2, "{report}");
    assert_eq!(report["matched"], 1, "{report}");
    assert_eq!(report["mismatch_count"], 0, "{report}");
    assert_eq!(report["sums"]["paid"], 3 * LIMITED_PRICE);
    assert_eq!(report["sums"]["refunded"], 100);
    let paid = app.order(&lost).await;
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(
        paid.transaction_id,
        app.sim.transaction(&lost).unwrap().transaction_id
    );
    let settled = app.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(settled.status, RefundStatus::Success);
    let order = app.order(&refunded).await;
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunded_total.fen(), 100);

    // The stored report, and a run on demand that finds everything matched.
    let stored = merchant(
        &app,
        "GET",
        &format!("{url}/merchant/bills/{day}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(&stored.json(), report);
    let again = merchant(
        &app,
        "POST",
        &format!("{url}/merchant/bills/{day}/reconcile"),
        None,
        json!({}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        (
            again.json()["matched"].clone(),
            again.json()["recovered"].clone()
        ),
        (json!(3), json!(0))
    );
    assert_eq!(app.order(&refunded).await.refunded_total.fen(), 100);
    assert!(
        app.store
            .list_anomalies(&paid.out_trade_no)
            .await
            .unwrap()
            .is_empty()
    );
}
