//! Reconciliation end to end, driving the BUILT `query-order` and `timeout-sweeper` binaries
//! (beside `place-order`) against the WeChat Pay simulator and embedded Dynoxide: lost
//! notifications recovered by a query and by the sweeper, expired orders closed at WeChat Pay
//! and locally with their stock back, USERPAYING left alone, concurrent sweeps, deadlines,
//! ownership and listing. DESIGN.md sections 3 (query-order, timeout-sweeper), 5 and 6.
//!
//! The sweeper runs as WeChat Pay's scheduler would run it: once per invocation (here a
//! process run with `--deadline`, and through the Lambda and SCF runtime APIs).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::e2e_support::*;
use crate::runtime_support::FakeRuntime;
use sandbox::{Fault, PayRequest, SimulatorConfig};
use serde_json::{Value, json};
use shared::domain::OrderStatus;
use shared::wechatpay::{PayParams, TradeState};

/// Orders in these tests expire this long after they are placed.
const TTL_SECONDS: u64 = 2;

/// A backend whose simulator accepts a `time_expire` only seconds ahead (the sandbox's one
/// relaxation), with place-order and query-order running over HTTP.
struct Recon {
    backend: Backend,
    place_order_url: String,
    query_url: String,
    _place_order: FunctionProcess,
    _query: FunctionProcess,
}

impl std::ops::Deref for Recon {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

fn with_env(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

async fn spawn_recon() -> Recon {
    spawn_recon_with_ttl(TTL_SECONDS).await
}

async fn spawn_recon_with_ttl(ttl_seconds: u64) -> Recon {
    let backend = Backend::start_with(|c: &mut SimulatorConfig| {
        c.min_time_expire_ahead = Duration::from_secs(1);
    })
    .await;
    let ttl = ttl_seconds.to_string();
    let mut place_order = FunctionProcess::spawn(
        Function::PlaceOrder,
        &with_env(
            backend.function_env(Some("http://127.0.0.1:9/notify/wechatpay")),
            &[("ORDER_TTL_SECONDS", &ttl)],
        ),
    );
    let mut query = FunctionProcess::spawn(Function::QueryOrder, &backend.function_env(None));
    let place_order_url = place_order.wait_http().await;
    let query_url = query.wait_http().await;
    Recon {
        backend,
        place_order_url,
        query_url,
        _place_order: place_order,
        _query: query,
    }
}

impl Recon {
    async fn place(&self, openid: &str, key: &str, items: &[(&str, i64)]) -> String {
        let reply = Reply::read(
            self.http
                .post(format!("{}/orders", self.place_order_url))
                .header("x-debug-openid", openid)
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(cart(items))
                .send()
                .await
                .expect("place-order answers"),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["out_trade_no"]
            .as_str()
            .expect("out_trade_no")
            .to_owned()
    }

    async fn get(&self, openid: &str, path_and_query: &str) -> Reply {
        Reply::read(
            self.http
                .get(format!("{}{path_and_query}", self.query_url))
                .header("x-debug-openid", openid)
                .send()
                .await
                .expect("query-order answers"),
        )
        .await
    }

    /// Pays at the simulator with the notification lost (no delivery at all).
    fn pay_silently(&self, out_trade_no: &str) {
        self.sim
            .pay(&PayRequest {
                deliveries: 0,
                ..PayRequest::new(out_trade_no)
            })
            .expect("the simulator takes the payment");
    }

    fn sweeper_env(&self) -> Vec<(String, String)> {
        with_env(
            self.function_env(None),
            &[("SWEEP_GRACE_SECONDS", "0"), ("SWEEP_CONCURRENCY", "8")],
        )
    }

    /// Runs the sweeper binary once (locally: one run per process) and returns its summary.
    async fn sweep(&self, args: &[&str]) -> Value {
        let env = self.sweeper_env();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || run_sweeper(&env, &args))
            .await
            .expect("sweeper thread")
    }

    fn trade_state(&self, out_trade_no: &str) -> TradeState {
        self.sim
            .transaction(out_trade_no)
            .expect("the simulator knows the order")
            .trade_state
    }
}

fn run_sweeper(env: &[(String, String)], args: &[String]) -> Value {
    let output = Command::new(binary(Function::TimeoutSweeper))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("timeout-sweeper runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "[timeout-sweeper]\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "timeout-sweeper exited {:?}",
        output.status
    );
    // The summary is the last line; the logs (JSON) come before it.
    let last = stdout.lines().last().expect("a summary line");
    let summary: Value = serde_json::from_str(last).expect("the summary is JSON");
    assert!(summary.get("scanned").is_some(), "{summary}");
    summary
}

fn counts(summary: &Value) -> (u64, u64, u64, u64, u64) {
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    (
        n("scanned"),
        n("paid"),
        n("closed"),
        n("skipped"),
        n("failed"),
    )
}

/// Waits until every order has passed its `expire_at`.
async fn wait_expired() {
    tokio::time::sleep(Duration::from_millis(TTL_SECONDS * 1000 + 300)).await;
}

#[tokio::test]
async fn lost_notification_becomes_paid_through_query_order() {
    let app = spawn_recon().await;
    let no_a = app.place("o_alice", "q-1", &[(SKU_LIMITED, 2)]).await;

    // Before paying: PENDING, synced (WeChat Pay says NOTPAY), fresh pay params.
    let reply = app.get("o_alice", &format!("/orders/{no_a}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["synced"], true);
    assert_eq!(body["amount_total"], 2 * LIMITED_PRICE);
    assert_eq!(body["lines"][0]["sku_id"], SKU_LIMITED);
    assert!(body["expire_at"].as_str().unwrap().ends_with("+08:00"));
    let params: PayParams = serde_json::from_value(body["pay_params"].clone()).expect("pay_params");
    let prepay_id = app.order(&no_a).await.prepay_id.expect("prepay_id stored");
    assert_eq!(params.package, format!("prepay_id={prepay_id}"));
    assert!(
        params.verify(&app.keys.merchant_public_key()),
        "paySign made with the merchant key"
    );

    app.pay_silently(&no_a);
    assert_eq!(app.order(&no_a).await.status, OrderStatus::Pending);
    // The first query claimed the sync moments ago: a second one within the interval answers
    // the local state without asking WeChat Pay.
    let reply = app.get("o_alice", &format!("/orders/{no_a}")).await;
    assert_eq!(reply.json()["status"], "PENDING");
    assert_eq!(reply.json()["synced"], false, "{}", reply.text());

    let paid = eventually_async(|| async {
        let reply = app.get("o_alice", &format!("/orders/{no_a}")).await;
        (reply.json()["status"] == "PAID").then_some(reply.json())
    })
    .await;
    assert_eq!(paid["synced"], true);
    assert!(
        paid.get("pay_params").is_none(),
        "no pay params once paid: {paid}"
    );
    let txn = app
        .sim
        .wechat_transaction(&no_a)
        .expect("simulated transaction");
    let transaction_id = txn.transaction_id.expect("transaction_id");
    assert_eq!(paid["transaction_id"], transaction_id.as_str());
    let order = app.order(&no_a).await;
    assert_eq!(order.status, OrderStatus::Paid);
    let payment = app.payment(&transaction_id).await.expect("payment item");
    assert_eq!(payment.notification_id, None, "learnt by querying");
    app.run_dispatcher().await;
    assert_eq!(app.product(SKU_LIMITED).await.sold, 2);
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 0);
}

/// Polls `f` until it yields, within the suite's wait.
async fn eventually_async<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < WAIT, "condition not met within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn query_order_is_for_the_owner_and_survives_wechat_pay_outages() {
    let app = spawn_recon().await;
    let no_a = app.place("o_alice", "own-1", &[(SKU_UNLIMITED, 1)]).await;

    // Someone else's order, an unknown one and a malformed number all look the same.
    for (who, path) in [
        ("o_mallory", format!("/orders/{no_a}")),
        ("o_alice", "/orders/01ARZ3NDEKTSV4RRFFQ69G5FAV".to_owned()),
        ("o_alice", "/orders/not-an-order".to_owned()),
    ] {
        let reply = app.get(who, &path).await;
        reply.assert_error(404, "ORDER_NOT_FOUND");
    }
    let mallory = app.get("o_mallory", "/orders").await;
    assert_eq!(mallory.json()["orders"], json!([]));
    // Looking did not touch the order (no sync claimed for a stranger).
    assert_eq!(app.order(&no_a).await.last_synced_at, None);
    // No identity at all.
    let anonymous = Reply::read(
        app.http
            .get(format!("{}/orders/{no_a}", app.query_url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    anonymous.assert_error(401, "UNAUTHENTICATED");

    // WeChat Pay failing: the local state, flagged unsynced, never an error.
    app.sim
        .inject_fault(Fault::new(
            "/v3/pay/transactions/out-trade-no",
            500,
            "SYSTEM_ERROR",
            100,
        ))
        .unwrap();
    let reply = app.get("o_alice", &format!("/orders/{no_a}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "PENDING");
    assert_eq!(reply.json()["synced"], false);
    assert!(reply.json()["pay_params"].is_object(), "still resumable");
}

#[tokio::test]
async fn listing_pages_through_45_orders_newest_first() {
    let app = spawn_recon().await;
    let mut placed = Vec::new();
    for i in 0..45 {
        placed.push(
            app.place("o_lister", &format!("l-{i}"), &[(SKU_UNLIMITED, 1)])
                .await,
        );
    }
    app.place("o_other", "l-x", &[(SKU_UNLIMITED, 1)]).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orders?limit=20&cursor={c}"),
            None => "/orders?limit=20".to_owned(),
        };
        let reply = app.get("o_lister", &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        let orders = body["orders"].as_array().expect("orders");
        assert!(orders.len() <= 20);
        seen.extend(
            orders
                .iter()
                .map(|o| o["out_trade_no"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "listing never ends");
    }
    assert!(pages >= 3, "45 orders at 20 per page: {pages} pages");
    placed.reverse();
    assert_eq!(seen, placed, "every order once, newest first");

    // A cursor is only good for its own listing.
    let foreign = app
        .get(
            "o_other",
            &format!("/orders?cursor={}", cursor_of(&app).await),
        )
        .await;
    foreign.assert_error(400, "INVALID_REQUEST");
    app.get("o_lister", "/orders?limit=0")
        .await
        .assert_error(400, "INVALID_REQUEST");
    app.get("o_lister", "/orders?cursor=garbage!")
        .await
        .assert_error(400, "INVALID_REQUEST");
}

async fn cursor_of(app: &Recon) -> String {
    app.get("o_lister", "/orders?limit=1").await.json()["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned()
}

#[tokio::test]
async fn sweeper_closes_expired_orders_recovers_payments_and_leaves_userpaying_alone() {
    let app = spawn_recon().await;
    let stock_before = app.product(SKU_LIMITED).await;
    let unpaid = app.place("o_alice", "s-1", &[(SKU_LIMITED, 3)]).await;
    let paid_silently = app.place("o_bob", "s-2", &[(SKU_LIMITED, 1)]).await;
    let paying = app.place("o_carol", "s-3", &[(SKU_LIMITED, 2)]).await;
    app.pay_silently(&paid_silently);
    app.sim.set_user_paying(&paying).unwrap();
    assert_eq!(
        app.product(SKU_LIMITED).await.reserved,
        stock_before.reserved + 6
    );

    // Not yet expired: nothing is due.
    let summary = app.sweep(&[]).await;
    assert_eq!(counts(&summary), (0, 0, 0, 0, 0), "{summary}");

    wait_expired().await;
    let summary = app.sweep(&[]).await;
    assert_eq!(counts(&summary), (3, 1, 1, 1, 0), "{summary}");

    // Unpaid: closed at WeChat Pay and locally, its 3 back in stock.
    assert_eq!(app.trade_state(&unpaid), TradeState::Closed);
    let closed = app.order(&unpaid).await;
    assert_eq!(closed.status, OrderStatus::Closed);
    assert!(
        closed
            .history
            .last()
            .unwrap()
            .cause
            .contains("closed at WeChat Pay")
    );
    // Paid without a notification: PAID, payment stored, stock sold.
    let order = app.order(&paid_silently).await;
    assert_eq!(order.status, OrderStatus::Paid);
    assert!(
        app.payment(order.transaction_id.as_deref().unwrap())
            .await
            .is_some()
    );
    // USERPAYING: untouched everywhere.
    assert_eq!(app.trade_state(&paying), TradeState::UserPaying);
    assert_eq!(app.order(&paying).await.status, OrderStatus::Pending);
    app.run_dispatcher().await;
    let stock = app.product(SKU_LIMITED).await;
    assert_eq!(
        stock.reserved,
        stock_before.reserved + 2,
        "carol's 2 still held"
    );
    assert_eq!(stock.sold, stock_before.sold + 1);

    // The next run skips USERPAYING again (claimed moments ago) and changes nothing else.
    let again = app.sweep(&[]).await;
    assert_eq!(again["paid"], 0);
    assert_eq!(again["closed"], 0);
    assert_eq!(again["failed"], 0);
    assert_eq!(app.order(&paying).await.status, OrderStatus::Pending);
}

#[tokio::test]
async fn two_sweeps_at_once_close_200_orders_exactly_once() {
    let app = spawn_recon().await;
    let before = app.product(SKU_LIMITED).await;
    let mut placed = Vec::new();
    for i in 0..200 {
        placed.push(
            app.place(
                &format!("o_u{}", i % 7),
                &format!("c-{i}"),
                &[(SKU_UNLIMITED, 1)],
            )
            .await,
        );
    }
    // Some limited stock in the mix so the returned stock can be counted.
    for i in 0..5 {
        placed.push(
            app.place("o_stock", &format!("cs-{i}"), &[(SKU_LIMITED, 1)])
                .await,
        );
    }
    assert_eq!(app.product(SKU_LIMITED).await.reserved, before.reserved + 5);
    wait_expired().await;

    let (a, b) = tokio::join!(app.sweep(&[]), app.sweep(&[]));
    let (_, _, closed_a, _, failed_a) = counts(&a);
    let (_, _, closed_b, _, failed_b) = counts(&b);
    assert_eq!((failed_a, failed_b), (0, 0), "{a} {b}");
    assert_eq!(
        closed_a + closed_b,
        205,
        "each order closed by exactly one sweep: {a} {b}"
    );
    for no_ in &placed {
        let order = app.order(no_).await;
        assert_eq!(order.status, OrderStatus::Closed, "{no_}");
        let closings = order
            .history
            .iter()
            .filter(|h| h.to == OrderStatus::Closed)
            .count();
        assert_eq!(closings, 1, "{no_}");
        assert_eq!(app.trade_state(no_), TradeState::Closed);
    }
    let after = app.product(SKU_LIMITED).await;
    assert_eq!(
        (after.reserved, after.sold),
        (before.reserved, before.sold),
        "stock adds up"
    );
}

#[tokio::test]
async fn a_sweep_out_of_time_stops_early_and_the_next_run_finishes() {
    let app = spawn_recon().await;
    let mut placed = Vec::new();
    for i in 0..40 {
        placed.push(
            app.place("o_slow", &format!("d-{i}"), &[(SKU_UNLIMITED, 1)])
                .await,
        );
    }
    wait_expired().await;
    // A slow WeChat Pay (200 ms per query, correct answers) and one order at a time: with
    // the sweeper's 24 s safety margin, a 25.5 s invocation has 1.5 s to start orders, not
    // enough for 40.
    app.sim
        .inject_fault(Fault {
            delay_ms: 200,
            ..Fault::new("/v3/pay/transactions/out-trade-no", 200, "SLOW", 1000)
        })
        .unwrap();
    let env_first = with_env(app.sweeper_env(), &[("SWEEP_CONCURRENCY", "1")]);
    let first = tokio::task::spawn_blocking(move || {
        run_sweeper(&env_first, &["--deadline".into(), "25.5".into()])
    })
    .await
    .unwrap();
    assert_eq!(first["stopped_early"], true, "{first}");
    let done_first = first["closed"].as_u64().unwrap();
    assert!(done_first > 0 && done_first < 40, "{first}");
    assert_eq!(first["failed"], 0, "{first}");

    app.sim.clear_faults();
    let second = app.sweep(&[]).await;
    assert_eq!(second["stopped_early"], false, "{second}");
    assert_eq!(
        done_first + second["closed"].as_u64().unwrap(),
        40,
        "{first} {second}"
    );
    for no_ in &placed {
        assert_eq!(app.order(no_).await.status, OrderStatus::Closed);
    }
}

#[tokio::test]
async fn sweeper_runs_on_eventbridge_and_scf_timer_events() {
    let app = spawn_recon().await;
    let first = app.place("o_sched", "e-1", &[(SKU_LIMITED, 1)]).await;
    wait_expired().await;

    // Lambda: an EventBridge scheduled event; the summary is the invocation's result.
    let deadline = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000) as u64;
    let mut lambda = FakeRuntime::lambda(deadline).await;
    let mut sweeper = FunctionProcess::spawn(
        Function::TimeoutSweeper,
        &with_env(
            lambda_env(&app, None, lambda.addr, "timeout-sweeper"),
            &[("SWEEP_GRACE_SECONDS", "0")],
        ),
    );
    assert_eq!(sweeper.wait_ready().await["mode"], "lambda");
    lambda.push(
        "inv-schedule-1",
        json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-24T04:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/sweeper"],
            "detail": {}
        })
        .to_string(),
    );
    let posted = lambda.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.request_id.as_deref(), Some("inv-schedule-1"));
    let summary = posted.json();
    assert_eq!(counts(&summary), (1, 0, 1, 0, 0), "{summary}");
    assert_eq!(app.order(&first).await.status, OrderStatus::Closed);
    // One summary log line and the EMF metrics line CloudWatch turns into SweepFailed etc.
    let logs = sweeper.json_logs();
    let emf = logs
        .iter()
        .find(|l| l.get("_aws").is_some())
        .expect("an EMF line");
    assert_eq!(
        emf["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "WxpayOrders"
    );
    assert_eq!(emf["Function"], "timeout-sweeper");
    assert_eq!(emf["SweepClosed"], 1);
    assert_eq!(emf["SweepFailed"], 0);
    // An HTTP event is refused as an invocation error, and the loop goes on.
    lambda.push(
        "inv-http",
        json!({"version": "2.0", "routeKey": "GET /", "rawPath": "/", "requestContext": {}})
            .to_string(),
    );
    assert_eq!(lambda.posted().await.kind, "error");
    sweeper.kill();

    // SCF: a timer trigger event through the SCF runtime API.
    let second = app.place("o_sched", "e-2", &[(SKU_LIMITED, 1)]).await;
    wait_expired().await;
    let mut scf = FakeRuntime::scf(30_000).await;
    let env = scf_env(app.sweeper_env(), &scf);
    let mut sweeper = FunctionProcess::spawn(Function::TimeoutSweeper, &env);
    assert_eq!(sweeper.wait_ready().await["mode"], "scf");
    scf.push(
        "scf-timer-1",
        json!({"Type": "Timer", "TriggerName": "every-minute", "Time": "2026-11-24T04:01:00Z", "Message": ""})
            .to_string(),
    );
    let posted = scf.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(counts(&posted.json()), (1, 0, 1, 0, 0), "{}", posted.json());
    assert_eq!(app.order(&second).await.status, OrderStatus::Closed);
    sweeper.kill();
}

/// An SCF API Gateway trigger event (stage `release`), as the SCF runtime API delivers it.
fn scf_event(method: &str, path: &str, headers: Value, body: &str) -> Value {
    json!({
        "requestContext": {
            "serviceId": "service-e2e",
            "path": path,
            "httpMethod": method,
            "requestId": "scf-apigw-recon",
            "identity": {},
            "sourceIp": "10.0.2.14",
            "stage": "release"
        },
        "headers": headers,
        "body": body,
        "pathParameters": {},
        "queryStringParameters": {},
        "headerParameters": {},
        "stageVariables": {"stage": "release"},
        "path": format!("/release{path}"),
        "queryString": {},
        "httpMethod": method
    })
}

/// The function's environment under a fake SCF runtime API.
fn scf_env(env: Vec<(String, String)>, runtime: &FakeRuntime) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "PORT").collect();
    env.push(("SCF_RUNTIME_API".into(), "127.0.0.1".into()));
    env.push((
        "SCF_RUNTIME_API_PORT".into(),
        runtime.addr.port().to_string(),
    ));
    env
}

#[tokio::test]
async fn query_order_and_payment_callback_answer_scf_api_gateway_events() {
    let app = spawn_recon().await;
    let no_scf = app.place("o_scf", "scf-q-1", &[(SKU_LIMITED, 1)]).await;

    let mut query_api = FakeRuntime::scf(10_000).await;
    let mut query = FunctionProcess::spawn(
        Function::QueryOrder,
        &scf_env(app.token_env(None), &query_api),
    );
    assert_eq!(query.wait_ready().await["mode"], "scf");
    query_api.push(
        "scf-q",
        scf_event(
            "GET",
            &format!("/orders/{no_scf}"),
            json!({"Authorization": app.bearer("o_scf")}),
            "",
        )
        .to_string(),
    );
    let posted = query_api.posted().await;
    assert_eq!(posted.kind, "response");
    let response = posted.json();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["out_trade_no"], no_scf.as_str());
    assert_eq!(body["status"], "PENDING");

    // The user pays; WeChat Pay's notification reaches payment-callback as an SCF event.
    let mut notify_api = FakeRuntime::scf(10_000).await;
    let mut callback = FunctionProcess::spawn(
        Function::PaymentCallback,
        &scf_env(app.function_env(None), &notify_api),
    );
    assert_eq!(callback.wait_ready().await["mode"], "scf");
    let order = app.order(&no_scf).await;
    let txn = app.success_transaction(&order, "4200000000202611240001", order.amount_total.fen());
    let (headers, body) = app.notification(&txn, "scf-notification-1", now_unix(), None);
    let mut event_headers = serde_json::Map::new();
    for (name, value) in &headers {
        event_headers.insert(name.to_string(), json!(value.to_str().unwrap()));
    }
    event_headers.insert("Content-Type".into(), json!("application/json"));
    notify_api.push(
        "scf-n",
        scf_event(
            "POST",
            "/notify/wechatpay",
            Value::Object(event_headers),
            std::str::from_utf8(&body).unwrap(),
        )
        .to_string(),
    );
    let posted = notify_api.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.json()["statusCode"], 204, "{}", posted.json());
    let paid = app.order(&no_scf).await;
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(
        paid.transaction_id.as_deref(),
        Some("4200000000202611240001")
    );
    query.kill();
    callback.kill();
}

/// Issue 12.1, as a user tried it: an owner whose mini-program polls the order every 0.3 s
/// while a sweep runs every 5 s. Orders live 60 s; the expired order is CLOSED (here and at
/// WeChat Pay) and its stock back within 70 s of being placed, whoever keeps reading it.
#[tokio::test]
async fn an_order_polled_every_300ms_still_closes_within_one_sweep_interval_of_expiry() {
    let app = std::sync::Arc::new(spawn_recon_with_ttl(60).await);
    let reserved_before = app.product(SKU_LIMITED).await.reserved;
    let placed_at = std::time::Instant::now();
    let no = app.place("o_poller", "poll-1", &[(SKU_LIMITED, 2)]).await;
    assert_eq!(app.product(SKU_LIMITED).await.reserved, reserved_before + 2);

    let sweeps = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut summaries = Vec::new();
            while placed_at.elapsed() < Duration::from_secs(75) {
                tokio::time::sleep(Duration::from_secs(5)).await;
                summaries.push(app.sweep(&[]).await);
            }
            summaries
        })
    };
    let mut polls = 0;
    let closed_after = loop {
        let reply = app.get("o_poller", &format!("/orders/{no}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        polls += 1;
        if reply.json()["status"] == "CLOSED" {
            break placed_at.elapsed();
        }
        assert!(
            placed_at.elapsed() < Duration::from_secs(70),
            "still {} after {polls} polls",
            reply.json()["status"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        closed_after >= Duration::from_secs(60),
        "closed early: {closed_after:?}"
    );
    assert_eq!(app.order(&no).await.status, OrderStatus::Closed);
    assert_eq!(
        app.trade_state(&no),
        TradeState::Closed,
        "closed at WeChat Pay too"
    );
    assert_eq!(
        app.product(SKU_LIMITED).await.reserved,
        reserved_before,
        "stock back"
    );
    sweeps.abort();
}

/// Issue 12.8: lowering `SWEEPER_SHARDS` strands nothing: orders spread over 128 shards by
/// place-order (the most, issue 17's default) are all closed by a sweeper configured with 1.
#[tokio::test]
async fn a_lowered_shard_count_strands_no_pending_order() {
    let backend = Backend::start_with(|c: &mut SimulatorConfig| {
        c.min_time_expire_ahead = Duration::from_secs(1);
    })
    .await;
    let mut place_order = FunctionProcess::spawn(
        Function::PlaceOrder,
        &with_env(
            backend.function_env(Some("http://127.0.0.1:9/notify/wechatpay")),
            &[("ORDER_TTL_SECONDS", "2"), ("SWEEPER_SHARDS", "128")],
        ),
    );
    let url = place_order.wait_http().await;
    let mut placed = Vec::new();
    for i in 0..24 {
        let reply = Reply::read(
            backend
                .http
                .post(format!("{url}/orders"))
                .header("x-debug-openid", "o_shards")
                .header("idempotency-key", format!("s-{i}"))
                .header("content-type", "application/json")
                .body(cart(&[(SKU_UNLIMITED, 1)]))
                .send()
                .await
                .expect("place-order answers"),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        placed.push(reply.json()["out_trade_no"].as_str().unwrap().to_owned());
    }
    wait_expired().await;
    let env = with_env(
        backend.function_env(None),
        &[("SWEEP_GRACE_SECONDS", "0"), ("SWEEPER_SHARDS", "1")],
    );
    let summary = tokio::task::spawn_blocking(move || run_sweeper(&env, &[]))
        .await
        .unwrap();
    assert_eq!(counts(&summary), (24, 0, 24, 0, 0), "{summary}");
    for no in &placed {
        assert_eq!(backend.order(no).await.status, OrderStatus::Closed);
    }
}
