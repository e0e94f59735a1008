//! The event-dispatcher's timer run over 1,000 due `order.paid` events: `dispatch_due` at its
//! default settings (concurrency 8, pages of 100, 4 shards) against embedded Dynoxide
//! (loopback HTTP) and a local receiver (axum on loopback) that answers 204 and checks every
//! signature. One measured run, not a criterion loop: a run consumes its input.
//!
//! Reports events/s and the DynamoDB calls by operation (the tests' interceptor), and checks
//! what it reports: every event delivered exactly once, `UpdateItem` = 2 per event (claim,
//! record), `Query` within ceil(events / page) + shards, no `Scan`, no `GetItem`.
//!
//! Run: `cargo bench -p wxpay-tests --bench dispatch` (`DISPATCH_BENCH_EVENTS=n`,
//! `DISPATCH_BENCH_CONCURRENCY=n`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode};
use shared::config::WebhookConfig;
use shared::service::{DispatchSettings, EventDeps, WebhookPort, dispatch_due, system_clock};
use shared::store::embedded::Embedded;
use shared::store::{CallCounter, DynamoStore, Store, StoreSupport, with_interceptor};
use shared::webhook::{Webhook, WebhookSecret, WebhookSecrets, verify};
use tokio::task::JoinSet;
use wxpay_tests::{fresh_claim, now_ms, order, payment, product};

const TABLE: &str = "orders-dispatch-bench";
const SHARDS: u32 = 4;
const DEFAULT_EVENTS: usize = 1000;
const SEED_CONCURRENCY: usize = 16;

#[derive(Clone)]
struct Receiver {
    secrets: WebhookSecrets,
    ids: Arc<Mutex<Vec<String>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if verify(
        &r.secrets,
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
        &body,
        now,
    )
    .is_err()
    {
        return StatusCode::UNAUTHORIZED;
    }
    r.ids.lock().unwrap().push(h("webhook-id").to_owned());
    StatusCode::NO_CONTENT
}

fn main() {
    let events = std::env::var("DISPATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(events));
}

async fn run(n: usize) {
    let engine = Embedded::memory(TABLE).await.expect("embedded Dynoxide");
    let counter = CallCounter::new();
    let store = DynamoStore::new(with_interceptor(engine.client(), counter.clone()), TABLE)
        .with_shards(SHARDS);
    let tea = product("tea", 990, None);
    store
        .put_products(std::slice::from_ref(&tea))
        .await
        .expect("seed the catalog");

    println!("dispatch bench: seeding {n} paid orders (each writes its order.paid) ...");
    let seeding = Instant::now();
    let orders: Vec<_> = (0..n)
        .map(|i| order(&format!("o_bench_{}", i % 50), &[(&tea, 1)]))
        .collect();
    for chunk in orders.chunks(SEED_CONCURRENCY) {
        let mut tasks = JoinSet::new();
        for o in chunk.iter().cloned() {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .create_order(&fresh_claim(&o), &o)
                    .await
                    .expect("create_order");
                let txn = format!("42{}", o.out_trade_no);
                store
                    .mark_paid(&o, &payment(&o, &txn), now_ms())
                    .await
                    .expect("mark_paid");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("seeding task");
        }
    }
    println!(
        "dispatch bench: seeded in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let secret = WebhookSecret::generate().expose_whsec();
    let receiver = Receiver {
        secrets: WebhookSecrets::parse(&secret).unwrap(),
        ids: Arc::default(),
    };
    let app = Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let webhook = Webhook::new(&WebhookConfig {
        url: url.parse().unwrap(),
        secrets: WebhookSecrets::parse(&secret).unwrap(),
        timeout: WebhookConfig::DEFAULT_TIMEOUT,
        connect_timeout: WebhookConfig::DEFAULT_CONNECT_TIMEOUT,
    })
    .expect("webhook client");
    let mut settings = DispatchSettings {
        shards: SHARDS,
        ..DispatchSettings::default()
    };
    if let Some(c) = std::env::var("DISPATCH_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.concurrency = c;
    }
    let concurrency = settings.concurrency;
    let page = settings.page_size as usize;
    let deps = EventDeps {
        store: Arc::new(store.clone()),
        webhook: Some(Arc::new(webhook) as Arc<dyn WebhookPort>),
        clock: system_clock(),
        settings,
    };

    counter.reset();
    let started = Instant::now();
    let (summary, calls) = counter.measure(dispatch_due(&deps, None)).await;
    let elapsed = started.elapsed();
    let rate = n as f64 / elapsed.as_secs_f64();

    assert_eq!(
        (summary.scanned, summary.delivered, summary.failed),
        (n as u64, n as u64, 0),
        "{summary:?}"
    );
    let ids = receiver.ids.lock().unwrap().clone();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (n, n), "each event once");
    assert_eq!(calls.calls_of("UpdateItem"), 2 * n as u64, "claim + record");
    assert_eq!(calls.calls_of("Scan") + calls.calls_of("GetItem"), 0);
    let queries = calls.calls_of("Query");
    assert!(
        queries <= n.div_ceil(page) as u64 + u64::from(SHARDS),
        "{queries} queries"
    );
    println!(
        "dispatch bench: {n} events delivered in {:.2} s = {rate:.0} events/s at concurrency {concurrency}",
        elapsed.as_secs_f64()
    );
    println!(
        "dispatch bench: DynamoDB calls: {} Query, {} UpdateItem ({:.2} calls per event)",
        queries,
        calls.calls_of("UpdateItem"),
        calls.total_calls() as f64 / n as f64
    );
}
