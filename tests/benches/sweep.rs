//! The timeout-sweeper over 2,000 expired PENDING orders: `sweep_expired` at its default
//! settings (concurrency 8, pages of 100, 4 shards) against the WeChat Pay simulator
//! (in-process, real HTTP with merchant signatures and signed answers) and embedded Dynoxide
//! (loopback HTTP). One measured run, not a criterion loop: a sweep consumes its input, and
//! re-seeding 2,000 orders per sample would measure the seeding.
//!
//! Reports orders/s and the DynamoDB calls by operation, counted by the same interceptor the
//! tests use, and checks what it reports: every order CLOSED here and at WeChat Pay, the
//! stock back exactly, no `Scan`, and `Query` calls within ceil(orders / page) + shards
//! (the sparse pending index is queried page by page, shard by shard).
//!
//! Run: `cargo bench -p wxpay-tests --bench sweep` (`SWEEP_BENCH_ORDERS=n` for another size,
//! `SWEEP_BENCH_CONCURRENCY=n` for another concurrency than the default 8).

use shared::store::StoreSupport;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use sandbox::{SandboxKeys, Simulator, SimulatorConfig};
use shared::domain::{Order, OrderStatus, Product};
use shared::service::{Deps, ServiceSettings, SweepSettings, sweep_expired, system_clock};
use shared::store::embedded::Embedded;
use shared::store::{CallCounter, DynamoStore, Store, with_interceptor};
use shared::timefmt::to_wechat;
use shared::wechatpay::{
    GatewaySettings, HttpPayGateway, PayGateway, PrepayRequest, RetryPolicy, TradeState,
};
use time::{Duration, OffsetDateTime};
use tokio::task::JoinSet;
use wxpay_tests::{fresh_claim, now_ms, order_at, product};

const APPID: &str = "wxd678efh567hg6787";
const MCHID: &str = "1230000109";
const TABLE: &str = "orders-sweep-bench";
const SHARDS: u32 = 4;
const DEFAULT_ORDERS: usize = 2000;
/// Seeding runs this many orders at once.
const SEED_CONCURRENCY: usize = 16;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let orders = std::env::var("SWEEP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ORDERS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(orders));
}

async fn run(n: usize) {
    let engine = Embedded::memory(TABLE).await.expect("embedded Dynoxide");
    let counter = CallCounter::new();
    let store = DynamoStore::new(with_interceptor(engine.client(), counter.clone()), TABLE)
        .with_shards(SHARDS);
    let tea = product("tea", 990, Some(1_000_000));
    let cup = product("cup", 150, None);
    store
        .put_products(&[tea.clone(), cup.clone()])
        .await
        .expect("seed the catalog");

    let keys_dir = std::env::temp_dir().join(format!("sweep-bench-{}", std::process::id()));
    let keys = SandboxKeys::load_or_generate(&keys_dir).expect("sandbox keys");
    let sim = Simulator::start(SimulatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        APPID,
        MCHID,
        &keys,
    ))
    .await
    .expect("WeChat Pay simulator");
    let gateway = Arc::new(
        HttpPayGateway::new(GatewaySettings {
            api_base: sim.base_url(),
            appid: APPID.to_owned(),
            mchid: MCHID.to_owned(),
            mch_serial_no: keys.merchant_serial_no().to_owned(),
            mch_private_key: Some(keys.merchant_key().clone()),
            apiv3_key: keys.apiv3_key().clone(),
            public_key: Some((
                keys.wechatpay_public_key_id().to_owned(),
                keys.wechatpay_public_key(),
            )),
            // Never called: nobody pays these orders.
            notify_url: Some("http://127.0.0.1:9/notify/wechatpay".to_owned()),
            retry: RetryPolicy::default(),
            certificate_refresh_interval: StdDuration::from_secs(60),
            certificate_max_age: shared::wechatpay::client::CERTIFICATE_MAX_AGE,
        })
        .expect("WeChat Pay client"),
    );

    // Seed: orders placed 31 minutes ago with a 30-minute TTL (so expired a minute ago),
    // each reserving 1 tea (limited stock) and 2 cups, and prepaid at the simulator, which
    // then knows them as NOTPAY. (The simulator refuses a `time_expire` in the past, so
    // WeChat Pay's side is given an hour; the sweep goes by the local `expire_at`.)
    println!("sweep bench: seeding {n} expired PENDING orders (store + simulator prepay) ...");
    let seeding = Instant::now();
    let placed = now_ms() - Duration::minutes(31);
    let orders: Vec<Order> = (0..n)
        .map(|i| {
            order_at(
                &format!("o_bench_{}", i % 50),
                &[(&tea, 1), (&cup, 2)],
                placed,
            )
        })
        .collect();
    let mut per_shard: BTreeMap<u32, usize> = BTreeMap::new();
    for o in &orders {
        *per_shard.entry(o.out_trade_no.shard(SHARDS)).or_default() += 1;
    }
    for chunk in orders.chunks(SEED_CONCURRENCY) {
        let mut tasks = JoinSet::new();
        for o in chunk.iter().cloned() {
            let store = store.clone();
            let gateway = gateway.clone();
            tasks.spawn(async move {
                store
                    .create_order(&fresh_claim(&o), &o)
                    .await
                    .expect("create_order");
                gateway
                    .jsapi_prepay(&PrepayRequest {
                        out_trade_no: o.out_trade_no.as_str().to_owned(),
                        description: o.description.clone(),
                        time_expire: to_wechat(OffsetDateTime::now_utc() + Duration::hours(1)),
                        attach: None,
                        amount_total: o.amount_total.fen(),
                        payer_openid: o.openid.as_str().to_owned(),
                    })
                    .await
                    .expect("prepay at the simulator");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("seeding task");
        }
    }
    let reserved_before = store.get_product(&tea.sku_id).await.unwrap().unwrap();
    assert_eq!(reserved_before.reserved, n as i64, "seeded reservations");
    assert!(
        orders.iter().all(|o| sim
            .wechat_transaction(o.out_trade_no.as_str())
            .map(|t| t.trade_state)
            == Some(TradeState::NotPay)),
        "every order is NOTPAY at the simulator"
    );
    println!(
        "sweep bench: seeded in {:.1} s; orders per shard {per_shard:?}",
        seeding.elapsed().as_secs_f64()
    );

    // The sweep, measured.
    let deps = Deps {
        store: Arc::new(store.clone()),
        gateway: gateway.clone(),
        clock: system_clock(),
        settings: ServiceSettings {
            appid: APPID.to_owned(),
            mchid: MCHID.to_owned(),
            order_ttl: Duration::minutes(30),
        },
        catalog: Default::default(),
    };
    let mut settings = SweepSettings::default();
    if let Some(c) = std::env::var("SWEEP_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.concurrency = c;
    }
    let started = Instant::now();
    let (summary, calls) = counter
        .measure(sweep_expired(&deps, &settings, SHARDS, None))
        .await;
    let elapsed = started.elapsed();
    let rate = n as f64 / elapsed.as_secs_f64();

    // Check what is reported.
    assert_eq!(
        (summary.scanned, summary.closed, summary.failed),
        (n as u64, n as u64, 0),
        "{summary:?}"
    );
    let mut not_closed = 0;
    for o in &orders {
        let stored = store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        let there = sim.wechat_transaction(o.out_trade_no.as_str());
        if stored.status != OrderStatus::Closed
            || there.map(|t| t.trade_state) != Some(TradeState::Closed)
        {
            not_closed += 1;
        }
    }
    assert_eq!(not_closed, 0, "orders not CLOSED here and at WeChat Pay");
    let tea_after: Product = store.get_product(&tea.sku_id).await.unwrap().unwrap();
    assert_eq!(
        (tea_after.reserved, tea_after.sold),
        (0, 0),
        "stock back exactly"
    );
    for shard in 0..SHARDS {
        let left = store
            .due_pending(shard, OffsetDateTime::now_utc(), 10, None)
            .await
            .unwrap();
        assert!(left.items.is_empty(), "shard {shard} still has due orders");
    }
    let scans = calls.calls_of("Scan");
    let queries = calls.calls_of("Query");
    let pages = n.div_ceil(settings.page_size as usize) as u64;
    assert_eq!(scans, 0, "the sweep scanned the table: {calls:?}");
    assert!(
        (pages..=pages + u64::from(SHARDS)).contains(&queries),
        "Query calls {queries}, expected {pages}..={}",
        pages + u64::from(SHARDS)
    );

    println!(
        "sweep bench: {n} expired orders, concurrency {}, page {}, {SHARDS} shards",
        settings.concurrency, settings.page_size
    );
    println!(
        "sweep bench: swept in {:.2} s = {rate:.0} orders/s; summary {summary:?}",
        elapsed.as_secs_f64()
    );
    println!(
        "sweep bench: DynamoDB calls by operation: {:?} (attempts {:?})",
        calls.calls, calls.attempts
    );
    println!(
        "sweep bench: Scan {scans}, Query {queries} (ceil({n}/{}) = {pages} pages + up to {SHARDS} \
         last pages); per order {:.2} calls",
        settings.page_size,
        calls.total_calls() as f64 / n as f64
    );
    println!(
        "sweep bench: OK: all {n} CLOSED here and at WeChat Pay; tea reserved {} -> {}, sold 0",
        reserved_before.reserved, tea_after.reserved
    );

    // Where the time goes: one call at a time, on the swept orders (nothing else running).
    let probe = &orders[..orders.len().min(100)];
    let t = Instant::now();
    for o in probe {
        gateway
            .query_by_out_trade_no(o.out_trade_no.as_str())
            .await
            .expect("query");
    }
    let wechat_ms = t.elapsed().as_secs_f64() * 1000.0 / probe.len() as f64;
    let t = Instant::now();
    for o in probe {
        store.get_order(&o.out_trade_no).await.expect("get_order");
    }
    let dynamo_ms = t.elapsed().as_secs_f64() * 1000.0 / probe.len() as f64;
    println!(
        "sweep bench: one at a time: a WeChat Pay query {wechat_ms:.1} ms (signed request, \
         verified and signed by the simulator, verified), a DynamoDB GetItem {dynamo_ms:.1} ms; \
         per swept order at concurrency {}: {:.0} ms",
        settings.concurrency,
        elapsed.as_secs_f64() * 1000.0 * settings.concurrency as f64 / n as f64
    );

    sim.shutdown().await;
    let _ = engine.stop().await;
    let _ = std::fs::remove_dir_all(&keys_dir);
}
