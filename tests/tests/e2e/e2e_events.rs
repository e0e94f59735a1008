//! Order events end to end (DESIGN.md section 10, invariant 9): the BUILT payment-callback
//! stores a payment's `order.paid` with its transition, however often it is notified; the
//! BUILT event-dispatcher, driven over the Lambda runtime API as AWS drives it (a DynamoDB
//! stream batch, then a scheduled event), delivers it to a receiver that checks every
//! signature, even when the dispatcher is killed in the middle of a delivery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode};
use serde_json::{Value, json};
use shared::domain::DeliveryStatus;
use shared::store::Store as _;
use shared::webhook::{WebhookSecret, WebhookSecrets, verify};

use crate::e2e_support::*;
use crate::runtime_support::FakeRuntime;

/// A merchant's endpoint: verifies each delivery, records it, and hangs on the first one
/// when asked (so its sender can be killed mid-delivery).
#[derive(Clone)]
struct Merchant {
    secrets: WebhookSecrets,
    hang_first: Arc<Mutex<bool>>,
    received: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn receive(State(m): State<Merchant>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if verify(
        &m.secrets,
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        now_unix(),
    )
    .is_err()
    {
        return StatusCode::UNAUTHORIZED;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    m.received
        .lock()
        .unwrap()
        .push((h("webhook-id").to_owned(), body));
    let hang = std::mem::take(&mut *m.hang_first.lock().unwrap());
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    StatusCode::NO_CONTENT
}

impl Merchant {
    async fn start(hang_first: bool) -> (Merchant, String, String) {
        let secret = WebhookSecret::generate().expose_whsec();
        let merchant = Merchant {
            secrets: WebhookSecrets::parse(&secret).unwrap(),
            hang_first: Arc::new(Mutex::new(hang_first)),
            received: Arc::default(),
        };
        let app = Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(merchant.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (merchant, url, secret)
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }
}

/// A paid order, notified `deliveries` times by (a stand-in for) WeChat Pay; its event id.
async fn paid_order(app: &TestApp, user: &str, deliveries: usize) -> (String, String) {
    let (_, no) = app
        .place(user, &format!("k-{user}"), &[(SKU_UNLIMITED, 1)])
        .await;
    let order = app.order(&no).await;
    let txn = app.success_transaction(&order, &format!("42{no}"), order.amount_total.fen());
    for _ in 0..deliveries {
        let (headers, body) = app.notification(&txn, &format!("n-{no}"), now_unix(), None);
        assert_eq!(app.notify(&headers, &body).await.status, 204);
    }
    let paid = app.order(&no).await;
    assert_eq!(paid.paid_version, Some(paid.version));
    (no, shared::domain::OrderEvent::paid_id(&paid.out_trade_no))
}

/// A DynamoDB stream batch as Lambda's event source mapping hands it over.
fn stream_batch(keys: &[(&str, &str)]) -> String {
    let records: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, (pk, sk))| {
            json!({
                "eventID": format!("e{i}"),
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
                    "NewImage": {"pk": {"S": pk}, "sk": {"S": sk}, "attempts": {"N": "0"}},
                    "SequenceNumber": format!("{}", 1000 + i),
                    "SizeBytes": 100,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                },
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-07T00:00:00.000"
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

fn scheduled_event() -> String {
    json!({
        "version": "0", "id": "sched-1", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-07T04:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {}
    })
    .to_string()
}

fn deadline_in(seconds: u64) -> u64 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64)
        + seconds * 1000
}

async fn dispatcher(app: &TestApp, url: &str, secret: &str) -> (FunctionProcess, FakeRuntime) {
    let lambda = FakeRuntime::lambda(deadline_in(60)).await;
    let mut env = lambda_env(app, None, lambda.addr, "event-dispatcher");
    env.push(("WEBHOOK_URL".into(), url.into()));
    env.push(("WEBHOOK_SECRET".into(), secret.into()));
    env.push(("WEBHOOK_TIMEOUT_SECONDS".into(), "2".into()));
    let mut process = FunctionProcess::spawn(Function::EventDispatcher, &env);
    assert_eq!(process.wait_ready().await["mode"], "lambda");
    (process, lambda)
}

#[tokio::test]
async fn a_payment_event_is_delivered_once_from_the_stream() {
    let app = spawn_app().await;
    // Five deliveries of one notification: one transition, one event.
    let (no, id) = paid_order(&app, "o_stream", 5).await;
    let events: Vec<_> = app
        .snapshot()
        .await
        .into_iter()
        .filter(|line| line.contains("\"EVENT#"))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");

    let (merchant, url, secret) = Merchant::start(false).await;
    let (mut process, mut lambda) = dispatcher(&app, &url, &secret).await;
    // The event's record and one of another item (the filter would drop it; ignored here too).
    let order_pk = format!("ORDER#{no}");
    lambda.push(
        "inv-stream-1",
        stream_batch(&[(&format!("EVENT#{id}"), "EVENT"), (&order_pk, "ORDER")]),
    );
    let posted = lambda.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.json(), json!({"batchItemFailures": []}));
    let got = merchant.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, id);
    assert_eq!(got[0].1["type"], "order.paid");
    assert_eq!(got[0].1["data"]["out_trade_no"], no.as_str());
    let stored = app.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempts),
        (DeliveryStatus::Delivered, 1)
    );

    // The same record again (the stream delivers at least once): nothing sent twice.
    lambda.push(
        "inv-stream-2",
        stream_batch(&[(&format!("EVENT#{id}"), "EVENT")]),
    );
    assert_eq!(
        lambda.posted().await.json(),
        json!({"batchItemFailures": []})
    );
    assert_eq!(merchant.received().len(), 1);
    // One EMF line per batch with the delivered count.
    let emf: Vec<Value> = process
        .json_logs()
        .into_iter()
        .filter(|l| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf[0]["Function"], "event-dispatcher");
    assert_eq!(emf[0]["EventDelivered"], 1);
    process.kill();
}

#[tokio::test]
async fn a_dispatcher_killed_mid_delivery_loses_nothing() {
    let app = spawn_app().await;
    let (_, id) = paid_order(&app, "o_killed", 1).await;
    let (merchant, url, secret) = Merchant::start(true).await;

    // The stream hands the event over; the merchant holds the request; the process dies.
    let (mut first, lambda) = dispatcher(&app, &url, &secret).await;
    lambda.push(
        "inv-stream-1",
        stream_batch(&[(&format!("EVENT#{id}"), "EVENT")]),
    );
    eventually("the first delivery reached the merchant", || {
        (!merchant.received().is_empty()).then_some(())
    })
    .await;
    first.kill();
    drop(lambda);
    let claimed = app.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(
        (claimed.status, claimed.attempts),
        (DeliveryStatus::Pending, 1),
        "claimed, never recorded"
    );

    // A new instance's timer run, once the dead one's lease has lapsed, delivers it.
    let lease_until = claimed.lease_until.expect("a claim holds a lease");
    let wait = lease_until - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    let (mut second, mut lambda) = dispatcher(&app, &url, &secret).await;
    lambda.push("inv-schedule-1", scheduled_event());
    let summary = lambda.posted().await.json();
    assert_eq!(summary["delivered"], 1, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let got = merchant.received();
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().all(|(webhook_id, _)| webhook_id == &id),
        "{got:?}"
    );
    assert_eq!(got[0].1, got[1].1, "the same bytes, sent again");
    let stored = app.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempts),
        (DeliveryStatus::Delivered, 2)
    );
    second.kill();
}

#[tokio::test]
async fn without_a_webhook_events_are_kept_and_a_bad_secret_stops_start_up() {
    let app = spawn_app().await;
    let (_, id) = paid_order(&app, "o_nowebhook", 1).await;

    // No WEBHOOK_URL: it starts, says so once, and keeps every event for later.
    let lambda = FakeRuntime::lambda(deadline_in(60)).await;
    let mut lambda = lambda;
    let env = lambda_env(&app, None, lambda.addr, "event-dispatcher");
    let mut process = FunctionProcess::spawn(Function::EventDispatcher, &env);
    assert_eq!(process.wait_ready().await["mode"], "lambda");
    assert!(
        process
            .json_logs()
            .iter()
            .any(|l| l["outcome"] == "no_webhook" && l["level"] == "WARN"),
        "{:?}",
        process.json_logs()
    );
    lambda.push("inv-1", stream_batch(&[(&format!("EVENT#{id}"), "EVENT")]));
    assert_eq!(
        lambda.posted().await.json(),
        json!({"batchItemFailures": []})
    );
    let kept = app.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.attempts), (DeliveryStatus::Pending, 0));
    process.kill();

    // A secret that is not `whsec_` + base64: one line naming the variable, never its value.
    let bad = "whsec_not!base64-and-a-secret-value";
    let mut env = app.function_env(None);
    env.push((
        "WEBHOOK_URL".into(),
        "https://merchant.example/hooks".into(),
    ));
    env.push(("WEBHOOK_SECRET".into(), bad.into()));
    let mut refused = FunctionProcess::spawn(Function::EventDispatcher, &env);
    eventually("the process to stop on a bad WEBHOOK_SECRET", || {
        (!refused.is_running()).then_some(())
    })
    .await;
    let said = eventually("its last words", || {
        let said = [refused.stdout(), refused.stderr()].concat().join("\n");
        said.contains("WEBHOOK_SECRET").then_some(said)
    })
    .await;
    assert!(
        !said.contains(bad) && !said.contains("secret-value"),
        "{said}"
    );
    assert!(!said.contains("\"ready\""), "{said}");
}

/// A friend pays (payer.openid is not the owner's): the notification's PAID reads no order,
/// so the built dispatcher notices it when it completes `order.paid` from the order: one
/// warning line naming the payment's transaction and a `PayerNotOwner` metric; the body sent
/// is the order's, with its lines.
#[tokio::test]
async fn a_payer_other_than_the_owner_is_noticed_when_order_paid_is_completed() {
    let app = spawn_app().await;
    let (_, no) = app
        .place("o_owner", "k-friend-pays", &[(SKU_UNLIMITED, 1)])
        .await;
    let order = app.order(&no).await;
    let transaction_id = format!("42{no}");
    let mut txn = app.success_transaction(&order, &transaction_id, order.amount_total.fen());
    txn.payer = Some(shared::wechatpay::notification::Payer {
        openid: "o_friend".into(),
    });
    let (headers, body) = app.notification(&txn, &format!("n-{no}"), now_unix(), None);
    assert_eq!(app.notify(&headers, &body).await.status, 204);
    let id = shared::domain::OrderEvent::paid_id(&order.out_trade_no);
    let waiting = app.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(
        waiting.order_to_read.and_then(|r| r.payer).as_deref(),
        Some("o_friend")
    );

    let (merchant, url, secret) = Merchant::start(false).await;
    let (mut process, mut lambda) = dispatcher(&app, &url, &secret).await;
    lambda.push(
        "inv-friend",
        stream_batch(&[(&format!("EVENT#{id}"), "EVENT")]),
    );
    assert_eq!(
        lambda.posted().await.json(),
        json!({"batchItemFailures": []})
    );
    let got = merchant.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["data"]["openid"], "o_owner");
    assert_eq!(got[0].1["data"]["lines"][0]["sku_id"], SKU_UNLIMITED);
    let logs = process.json_logs();
    let warned: Vec<&Value> = logs
        .iter()
        .filter(|l| l["outcome"] == "payer_not_owner")
        .collect();
    assert_eq!(warned.len(), 1, "{logs:?}");
    assert_eq!(warned[0]["transaction_id"], transaction_id.as_str());
    assert_eq!(warned[0]["payer"], "o_friend");
    assert!(
        logs.iter().any(|l| l["PayerNotOwner"] == 1),
        "a PayerNotOwner metric: {logs:?}"
    );
    process.kill();
}
