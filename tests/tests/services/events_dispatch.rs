//! The event-dispatcher's use case on a real store (embedded Dynoxide) and a real HTTP
//! receiver (axum on loopback) that checks every signature with its own HMAC: an event is
//! delivered once, retried on schedule with the same id, kept dead after its window and sent
//! again on redelivery; two dispatchers at once send each event once.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode};
use base64::Engine as _;
use shared::config::WebhookConfig;
use shared::domain::{DeliveryStatus, Order};
use shared::service::{
    DispatchSettings, Dispatched, EventDeps, WebhookPort, dispatch_due, dispatch_ids,
    redeliver_event,
};
use shared::store::{Store, StoreSupport};
use shared::webhook::{Webhook, WebhookSecret, WebhookSecrets};
use time::OffsetDateTime;
use wxpay_tests::*;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    body: serde_json::Value,
}

#[derive(Clone, Default)]
struct Receiver {
    /// Answers to give, in order; then 200. `0` means: hang past the sender's timeout.
    script: Arc<Mutex<Vec<u16>>>,
    received: Arc<Mutex<Vec<Received>>>,
    key: Arc<Vec<u8>>,
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn answer_next(&self, statuses: &[u16]) {
        *self.script.lock().unwrap() = statuses.to_vec();
    }
}

/// Standard Webhooks verification written out here with ring alone (not the crate's
/// `verify`): HMAC-SHA256 over `<id>.<timestamp>.<body>`, any `v1,` entry may match.
fn independently_verified(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let signed = format!("{}.{}.", h("webhook-id"), h("webhook-timestamp"));
    let mut content = signed.into_bytes();
    content.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    h("webhook-signature").split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|tag| !tag.is_empty() && ring::hmac::verify(&key, &content, &tag).is_ok())
    })
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    assert!(
        independently_verified(&r.key, &headers, &body),
        "a delivery whose signature does not verify: {headers:?}"
    );
    let status = {
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    if status == 0 {
        tokio::time::sleep(StdDuration::from_secs(3)).await;
    }
    r.received.lock().unwrap().push(Received {
        id: headers["webhook-id"].to_str().unwrap().to_owned(),
        timestamp: headers["webhook-timestamp"].to_str().unwrap().to_owned(),
        body: serde_json::from_slice(&body).unwrap(),
    });
    StatusCode::from_u16(if status == 0 { 200 } else { status }).unwrap()
}

struct Fixture {
    ctx: StoreCtx,
    receiver: Receiver,
    clock: Arc<Mutex<OffsetDateTime>>,
    deps: EventDeps,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let secret = WebhookSecret::generate();
        let whsec = secret.expose_whsec();
        let key = base64::engine::general_purpose::STANDARD
            .decode(whsec.trim_start_matches("whsec_"))
            .unwrap();
        let receiver = Receiver {
            key: Arc::new(key),
            ..Receiver::default()
        };
        let app = Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let webhook = Webhook::new(&WebhookConfig {
            url: url.parse().unwrap(),
            secrets: WebhookSecrets::parse(&whsec).unwrap(),
            timeout: StdDuration::from_secs(1),
            connect_timeout: StdDuration::from_secs(1),
        })
        .unwrap();
        let ctx = StoreCtx::dynoxide(test).await;
        let clock = Arc::new(Mutex::new(now_ms()));
        let c = clock.clone();
        let deps = EventDeps {
            store: Arc::new(ctx.store.clone()),
            webhook: Some(Arc::new(webhook) as Arc<dyn WebhookPort>),
            clock: Arc::new(move || *c.lock().unwrap()),
            settings: DispatchSettings {
                lease: time::Duration::seconds(10),
                ..DispatchSettings::default()
            },
        };
        Fixture {
            ctx,
            receiver,
            clock,
            deps,
        }
    }

    fn now(&self) -> OffsetDateTime {
        *self.clock.lock().unwrap()
    }

    fn set_now(&self, at: OffsetDateTime) {
        *self.clock.lock().unwrap() = at;
    }

    /// A paid order: its `order.paid` event is in the outbox. Returns the event's id.
    async fn paid_order(&self, user: &str) -> (Order, String) {
        let tea = product("tea", 990, None);
        self.ctx
            .store
            .put_products(std::slice::from_ref(&tea))
            .await
            .unwrap();
        let o = order(user, &[(&tea, 1)]);
        self.ctx
            .store
            .create_order(&fresh_claim(&o), &o)
            .await
            .unwrap();
        let txn = format!("42{}", o.out_trade_no);
        self.ctx
            .store
            .mark_paid(&o, &payment(&o, &txn), self.now())
            .await
            .unwrap();
        let id = shared::domain::OrderEvent::paid_id(&o.out_trade_no);
        (o, id)
    }

    async fn status(&self, id: &str) -> (DeliveryStatus, u32) {
        let e = self.ctx.store.get_event(id).await.unwrap().unwrap();
        (e.status, e.attempts)
    }
}

/// DESIGN 5: a notification's PAID stores `order.paid` without reading the order; the
/// dispatcher completes it from the order before sending (the body a read-planned PAID would
/// have written, `sold` counted once), writes that body back, and sends it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_written_unread_is_completed_then_delivered_once() {
    let f = Fixture::new("dispatch_unread").await;
    let tea = product("tea", 990, Some(5));
    f.ctx
        .store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 2)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&o), &o)
        .await
        .unwrap();
    let pay = payment(&o, &format!("42{}", o.out_trade_no));
    let plan = shared::domain::PaidUnread::plan(&pay, f.now()).unwrap();
    assert_eq!(
        f.ctx.store.mark_paid_unread(&plan).await.unwrap(),
        shared::store::PaidUnreadOutcome::Applied
    );
    let id = shared::domain::OrderEvent::paid_id(&o.out_trade_no);
    let waiting = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    assert!(waiting.order_to_read.is_some() && waiting.body.is_empty());

    let summary = dispatch_due(&f.deps, None).await;
    assert_eq!(
        (summary.scanned, summary.delivered, summary.failed),
        (1, 1, 0)
    );
    let got = f.receiver.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    let paid = f
        .ctx
        .store
        .get_order(&o.out_trade_no)
        .await
        .unwrap()
        .unwrap();
    let expected = shared::outbox::body(&paid.paid_event(waiting.created_at).unwrap()).unwrap();
    assert_eq!(
        got[0].body,
        serde_json::from_str::<serde_json::Value>(&expected).unwrap()
    );
    assert_eq!(got[0].body["data"]["lines"][0]["quantity"], 2);
    assert_eq!(got[0].body["data"]["version"], paid.version);
    let stored = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Delivered);
    assert_eq!(
        stored.body, expected,
        "the completed body is kept for redelivery"
    );
    assert!(stored.order_to_read.is_none());
    let sold = |products: std::collections::HashMap<_, shared::domain::Product>| {
        (products[&tea.sku_id].sold, products[&tea.sku_id].reserved)
    };
    let products = f
        .ctx
        .store
        .get_products(std::slice::from_ref(&tea.sku_id))
        .await
        .unwrap();
    assert_eq!(sold(products), (2, 0));

    // A redelivery sends the kept bytes; nothing is counted again.
    redeliver_event(f.deps.store.as_ref(), &id, f.now())
        .await
        .unwrap();
    let again = dispatch_due(&f.deps, None).await;
    assert_eq!(again.delivered, 1);
    let got = f.receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, got[0].body);
    let products = f
        .ctx
        .store
        .get_products(std::slice::from_ref(&tea.sku_id))
        .await
        .unwrap();
    assert_eq!(sold(products), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_delivered_signed_and_only_once() {
    let f = Fixture::new("dispatch_once").await;
    let (o, id) = f.paid_order("o_alice").await;

    let summary = dispatch_due(&f.deps, None).await;
    assert_eq!((summary.scanned, summary.delivered), (1, 1));
    let got = f.receiver.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(got[0].body["id"], id.as_str());
    assert_eq!(got[0].body["type"], "order.paid");
    assert_eq!(got[0].body["data"]["out_trade_no"], o.out_trade_no.as_str());
    assert_eq!(got[0].body["data"]["status"], "PAID");
    assert_eq!(f.status(&id).await, (DeliveryStatus::Delivered, 1));

    // Delivered: no timer run and no stream record sends it again.
    let again = dispatch_due(&f.deps, None).await;
    assert_eq!((again.scanned, again.delivered), (0, 0));
    assert_eq!(
        dispatch_ids(&f.deps, std::slice::from_ref(&id)).await[0]
            .as_ref()
            .unwrap(),
        &Dispatched::Skipped
    );
    assert_eq!(f.receiver.got().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_on_schedule_with_the_same_id() {
    let f = Fixture::new("dispatch_retry").await;
    let (_, id) = f.paid_order("o_alice").await;
    f.receiver.answer_next(&[500, 302, 0]);
    let created = f.now();

    // Attempt 1 fails (500): due again about 5 s later (±20 %), not before.
    assert_eq!(dispatch_due(&f.deps, None).await.retrying, 1);
    let event = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    let next = event.next_attempt_at.unwrap();
    let delay = next - created;
    assert!(
        delay >= time::Duration::seconds(4)
            && delay <= time::Duration::seconds(6) + time::Duration::milliseconds(500),
        "{delay}"
    );
    assert_eq!(
        (event.last_status, event.status),
        (Some(500), DeliveryStatus::Pending)
    );
    f.set_now(next - time::Duration::milliseconds(10));
    assert_eq!(dispatch_due(&f.deps, None).await.scanned, 0);

    // Attempt 2: a redirect is a failure, never followed.
    f.set_now(next);
    assert_eq!(dispatch_due(&f.deps, None).await.retrying, 1);
    let event = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(event.last_status, Some(302));
    let next = event.next_attempt_at.unwrap();
    assert!(
        next - f.now() >= time::Duration::minutes(4),
        "about 5 minutes"
    );

    // Attempt 3: the receiver hangs past the timeout (and answers 200 too late): failed.
    f.set_now(next);
    assert_eq!(dispatch_due(&f.deps, None).await.retrying, 1);
    let event = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(event.last_status, None);
    assert!(event.last_error.is_some());

    // Attempt 4 is acknowledged.
    f.set_now(event.next_attempt_at.unwrap());
    assert_eq!(dispatch_due(&f.deps, None).await.delivered, 1);
    assert_eq!(f.status(&id).await, (DeliveryStatus::Delivered, 4));
    let got = f.receiver.got();
    assert!(got.len() >= 3, "{got:?}");
    assert!(
        got.iter().all(|r| r.id == id),
        "one webhook-id for every attempt"
    );
    assert_ne!(got[0].timestamp, got.last().unwrap().timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_its_window_is_dead_until_redelivered() {
    let f = Fixture::new("dispatch_dead").await;
    let (_, id) = f.paid_order("o_alice").await;
    let created = f.now();
    f.receiver.answer_next(&[503; 40]);
    let mut dead_after = None;
    for attempt in 1..=40 {
        let summary = dispatch_due(&f.deps, None).await;
        if summary.dead == 1 {
            dead_after = Some(attempt);
            break;
        }
        assert_eq!(summary.retrying, 1, "attempt {attempt}");
        let event = f.ctx.store.get_event(&id).await.unwrap().unwrap();
        f.set_now(event.next_attempt_at.unwrap());
    }
    let attempts = dead_after.expect("dead within the schedule");
    assert!(attempts >= 10, "the whole schedule was tried: {attempts}");
    assert!(f.now() - created <= time::Duration::days(3));
    assert_eq!(f.status(&id).await.0, DeliveryStatus::Dead);
    f.set_now(f.now() + time::Duration::days(1));
    assert_eq!(
        dispatch_due(&f.deps, None).await.scanned,
        0,
        "dead is out of the index"
    );

    // The merchant fixed the endpoint and asks again: the same id, delivered now.
    f.receiver.answer_next(&[]);
    let before = f.receiver.got().len();
    let again = redeliver_event(f.deps.store.as_ref(), &id, f.now())
        .await
        .unwrap();
    assert_eq!((again.status, again.attempts), (DeliveryStatus::Pending, 0));
    assert_eq!(dispatch_due(&f.deps, None).await.delivered, 1);
    let got = f.receiver.got();
    assert_eq!(got.len(), before + 1);
    assert_eq!(got.last().unwrap().id, id);
    assert_eq!(f.status(&id).await, (DeliveryStatus::Delivered, 1));
    assert!(matches!(
        redeliver_event(f.deps.store.as_ref(), "evt_nope_1", f.now()).await,
        Err(shared::service::RedeliverError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_at_once_send_each_event_once() {
    let f = Fixture::new("dispatch_twice").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(f.paid_order(&format!("o_user{i}")).await.1);
    }
    let (a, b) = tokio::join!(dispatch_due(&f.deps, None), dispatch_ids(&f.deps, &ids));
    let stream_delivered = b
        .iter()
        .filter(|r| matches!(r, Ok(Dispatched::Delivered)))
        .count() as u64;
    assert_eq!(a.delivered + stream_delivered, 20);
    let mut got: Vec<String> = f.receiver.got().into_iter().map(|r| r.id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each event sent exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_events_are_kept_for_later() {
    let mut f = Fixture::new("dispatch_none").await;
    let (_, id) = f.paid_order("o_alice").await;
    let webhook = f.deps.webhook.take();
    // Without a webhook the dispatcher still counts the sale (projects `order.paid`), once.
    assert_eq!(dispatch_due(&f.deps, None).await.scanned, 1);
    let tea = f
        .ctx
        .store
        .get_product(&shared::domain::SkuId::parse("tea").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((tea.reserved, tea.sold), (0, 1));
    assert_eq!(dispatch_due(&f.deps, None).await.scanned, 0);
    let tea = f
        .ctx
        .store
        .get_product(&shared::domain::SkuId::parse("tea").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((tea.reserved, tea.sold), (0, 1));
    assert_eq!(
        dispatch_ids(&f.deps, std::slice::from_ref(&id)).await[0]
            .as_ref()
            .unwrap(),
        &Dispatched::NoWebhook
    );
    assert_eq!(f.status(&id).await, (DeliveryStatus::Pending, 0));
    // Configured four days later, and the first attempt fails: its three-day window starts
    // at that first attempt, so it is retried, not dead.
    f.deps.webhook = webhook;
    f.set_now(f.now() + time::Duration::days(4));
    f.receiver.answer_next(&[500]);
    assert_eq!(dispatch_due(&f.deps, None).await.retrying, 1);
    let event = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    f.set_now(event.next_attempt_at.unwrap());
    assert_eq!(dispatch_due(&f.deps, None).await.delivered, 1);
    assert_eq!(f.receiver.got().len(), 2);
}

/// An event written by a newer version (an unknown type, attributes this one does not know)
/// is kept and delivered as it is: the same body, its unknown attributes untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_a_newer_version_is_delivered_as_it_is() {
    use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue as V;
    let f = Fixture::new("dispatch_newer").await;
    let body = r#"{"id":"evt_future_1","type":"order.teleported","created_at":"2026-12-07T12:00:00+08:00","data":{"out_trade_no":"ORDER-FUTURE-1","warp":9}}"#;
    let now = shared::timefmt::to_utc_string(f.now());
    let s = |v: &str| V::S(v.to_owned());
    f.ctx
        .client()
        .put_item()
        .table_name(&f.ctx.table)
        .item("pk", s("EVENT#evt_future_1"))
        .item("sk", s("EVENT"))
        .item("entity", s("EVENT"))
        .item("id", s("evt_future_1"))
        .item("event_type", s("order.teleported"))
        .item("out_trade_no", s("ORDER-FUTURE-1"))
        .item("body", s(body))
        .item("created_at", s(&now))
        .item("retry_since", s(&now))
        .item("status", s("PENDING"))
        .item("attempts", V::N("0".into()))
        .item("next_attempt_at", s(&now))
        .item("gsi2pk", s("OUTBOX#0"))
        .item("gsi2sk", s(&now))
        .item("priority", s("warp"))
        .send()
        .await
        .unwrap();
    assert_eq!(dispatch_due(&f.deps, None).await.delivered, 1);
    let got = f.receiver.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "evt_future_1");
    assert_eq!(
        got[0].body,
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
    let item = f
        .ctx
        .client()
        .get_item()
        .table_name(&f.ctx.table)
        .key("pk", s("EVENT#evt_future_1"))
        .key("sk", s("EVENT"))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["priority"], s("warp"), "an unknown attribute survives");
    assert_eq!(item["status"], s("DELIVERED"));
    assert_eq!(item["body"], s(body));
}

/// An outbox item this version cannot read (here: an unknown delivery status) is logged and
/// skipped; it never keeps the rest of its shard from being delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_outbox_item_does_not_stall_its_shard() {
    use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue as V;
    let f = Fixture::new("dispatch_unreadable").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(f.paid_order(&format!("o_user{i}")).await.1);
    }
    // One broken item in every shard, due before any real event.
    let early = shared::timefmt::to_utc_string(f.now() - time::Duration::minutes(1));
    for shard in 0..4 {
        let s = |v: &str| V::S(v.to_owned());
        f.ctx
            .client()
            .put_item()
            .table_name(&f.ctx.table)
            .item("pk", s(&format!("EVENT#evt_broken_{shard}")))
            .item("sk", s("EVENT"))
            .item("id", s(&format!("evt_broken_{shard}")))
            .item("event_type", s("order.paid"))
            .item("body", s("{}"))
            .item("created_at", s(&early))
            .item("status", s("HALF_DELIVERED"))
            .item("gsi2pk", s(&format!("OUTBOX#{shard}")))
            .item("gsi2sk", s(&early))
            .send()
            .await
            .unwrap();
    }
    let summary = dispatch_due(&f.deps, None).await;
    assert_eq!((summary.delivered, summary.failed), (6, 0), "{summary:?}");
    let mut got: Vec<String> = f.receiver.got().into_iter().map(|r| r.id).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

/// An `order.paid` written unread whose order cannot be read (deleted by hand here) is a
/// failed attempt like any other: nothing sent, the reason recorded, retried on schedule
/// (so it ends dead, with its metric, instead of being claimed forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_that_cannot_be_completed_is_a_failed_attempt() {
    let f = Fixture::new("dispatch_not_ready").await;
    let tea = product("tea", 990, None);
    f.ctx
        .store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 1)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&o), &o)
        .await
        .unwrap();
    let pay = payment(&o, &format!("42{}", o.out_trade_no));
    let plan = shared::domain::PaidUnread::plan(&pay, f.now()).unwrap();
    f.ctx.store.mark_paid_unread(&plan).await.unwrap();
    f.ctx
        .client()
        .delete_item()
        .table_name(&f.ctx.table)
        .key(
            "pk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S(format!(
                "ORDER#{}",
                o.out_trade_no
            )),
        )
        .key(
            "sk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S("ORDER".into()),
        )
        .send()
        .await
        .unwrap();

    let summary = dispatch_due(&f.deps, None).await;
    assert_eq!(
        (summary.retrying, summary.failed, summary.delivered),
        (1, 0, 0)
    );
    assert!(f.receiver.got().is_empty());
    let id = shared::domain::OrderEvent::paid_id(&o.out_trade_no);
    let stored = f.ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.attempts),
        (DeliveryStatus::Pending, 1)
    );
    let error = stored.last_error.unwrap_or_default();
    assert!(
        error.starts_with("not sent:") && error.contains("gone"),
        "{error}"
    );
    assert!(stored.next_attempt_at.unwrap() > f.now());
}
