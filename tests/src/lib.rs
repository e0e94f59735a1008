//! Shared helpers for the end-to-end and store-conformance suites: a `StoreCtx` on either
//! engine (embedded Dynoxide, or moto at `MOTO_ENDPOINT`), fixtures for products, orders,
//! claims and payments, and the macro that runs one suite against both engines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::domain::{
    IdempotencyKey, Money, Openid, Order, OrderLine, OutTradeNo, Product, Quantity, SkuId,
};
use shared::idempotency::{IdempotencyScope, NewIdempotencyClaim};
use shared::store::embedded::Embedded;
use shared::store::{
    CallCounter, ClientSettings, DynamoStore, Payment, connect_static, create_table,
    with_interceptor,
};
use time::{Duration, OffsetDateTime};

pub use aws_sdk_dynamodb;

pub mod scripted;
pub mod simulated;
pub use scripted::{
    APPID, MCHID, SCRIPTED_REQUEST_ID, Scripted, api_error, refund_result, scripted_deps, txn,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Dynoxide,
    Moto,
}

/// One test's store: a fresh table on one engine, every call counted.
pub struct StoreCtx {
    pub engine: Engine,
    pub store: DynamoStore,
    pub counter: CallCounter,
    pub table: String,
    /// Keeps the embedded server alive for the test's duration.
    _embedded: Option<Arc<Embedded>>,
}

static TABLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A table name unique to this process and test (moto keeps every table of a run).
pub fn unique_table(test: &str) -> String {
    let n = TABLE_SEQ.fetch_add(1, Ordering::Relaxed);
    // The process id alone repeats across runs against one long-lived moto.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() % 1_000_000_000);
    let mut name = format!(
        "orders-{}-{started}-{}-{n}",
        std::process::id(),
        test.replace('_', "-")
    );
    name.truncate(255);
    name
}

impl StoreCtx {
    /// A fresh in-memory Dynoxide with its own table.
    pub async fn dynoxide(test: &str) -> StoreCtx {
        let table = unique_table(test);
        let engine = Embedded::memory(&table)
            .await
            .expect("start embedded Dynoxide");
        let counter = CallCounter::new();
        let client = with_interceptor(engine.client(), counter.clone());
        StoreCtx {
            engine: Engine::Dynoxide,
            store: DynamoStore::new(client, &table),
            counter,
            table,
            _embedded: Some(Arc::new(engine)),
        }
    }

    /// A fresh table on moto at `MOTO_ENDPOINT`. Unset: fails under `CI`, otherwise skips.
    pub async fn moto(test: &str) -> Option<StoreCtx> {
        let endpoint = moto_endpoint()?;
        let table = unique_table(test);
        let counter = CallCounter::new();
        let client = connect_static(&endpoint, "us-east-1", &ClientSettings::local());
        create_table(&client, &table)
            .await
            .unwrap_or_else(|e| panic!("create table on moto at {endpoint}: {e}"));
        let client = with_interceptor(&client, counter.clone());
        Some(StoreCtx {
            engine: Engine::Moto,
            store: DynamoStore::new(client, &table),
            counter,
            table,
            _embedded: None,
        })
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        self.store.client()
    }

    /// The item at `pk`/`sk` exactly as stored (every attribute), read strongly consistent.
    pub async fn raw_item(
        &self,
        pk: String,
        sk: &str,
    ) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        self.client()
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }
}

/// moto's server at `MOTO_ENDPOINT` (the test command starts it). Unset: panics under `CI`
/// (the moto suites must run there), otherwise `None` and the caller skips.
pub fn moto_endpoint() -> Option<String> {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("MOTO_ENDPOINT is not set but CI is: the moto suite must run in CI");
            }
            println!("moto not running; skipped");
            None
        }
    }
}

/// Runs each listed `async fn(StoreCtx)` of the calling module against Dynoxide (module
/// `dynoxide`) and moto (module `moto`).
#[macro_export]
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod dynoxide {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let ctx = $crate::StoreCtx::dynoxide(stringify!($name)).await;
                    super::$name(ctx).await;
                }
            )*
        }
        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(ctx) = $crate::StoreCtx::moto(stringify!($name)).await else {
                        return;
                    };
                    super::$name(ctx).await;
                }
            )*
        }
    };
}

// ---- fixtures ------------------------------------------------------------------------------

/// Now, at the millisecond precision timestamps are stored with.
pub fn now_ms() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .expect("valid nanosecond")
}

pub fn sku(s: &str) -> SkuId {
    SkuId::parse(s).expect("valid sku")
}

pub fn openid(s: &str) -> Openid {
    Openid::parse(s).expect("valid openid")
}

pub fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("valid key")
}

pub fn fen(n: i64) -> Money {
    Money::from_fen(n).expect("non-negative")
}

pub fn product(id: &str, price: i64, stock: Option<i64>) -> Product {
    Product {
        sku_id: sku(id),
        name: format!("Product {id}"),
        price: fen(price),
        stock,
        reserved: 0,
        sold: 0,
        active: true,
        stock_shards: 1,
    }
}

/// A flash-sale product: `stock` split over `shards` stock shard items (issue 17).
pub fn sharded_product(id: &str, price: i64, stock: i64, shards: u32) -> Product {
    Product {
        stock_shards: shards,
        ..product(id, price, Some(stock))
    }
}

/// `order` with every line of `sku` reserving on stock shard `shard`.
pub fn on_shard(mut order: Order, sku: &SkuId, shard: u32) -> Order {
    for line in order.lines.iter_mut().filter(|l| &l.sku_id == sku) {
        line.stock_shard = Some(shard);
    }
    order
}

/// A PENDING order for `user` created at `created_at`, expiring 30 minutes later, its lines
/// priced from `products` (`(product, quantity)`).
pub fn order_at(user: &str, lines: &[(&Product, i64)], created_at: OffsetDateTime) -> Order {
    let lines = lines
        .iter()
        .map(|(p, q)| OrderLine {
            sku_id: p.sku_id.clone(),
            name: p.name.clone(),
            unit_price: p.price,
            quantity: Quantity::new(*q).expect("quantity"),
            stock_shard: None,
        })
        .collect();
    Order::new_pending(
        OutTradeNo::generate(created_at),
        openid(user),
        lines,
        "wxpay-orders test".into(),
        None,
        created_at,
        created_at + Duration::minutes(30),
    )
    .expect("order total")
}

pub fn order(user: &str, lines: &[(&Product, i64)]) -> Order {
    order_at(user, lines, now_ms())
}

pub fn scope(user: &str, k: &str) -> IdempotencyScope {
    IdempotencyScope::new(openid(user), key(k))
}

/// A claim made at `now`, locked for 30 s.
pub fn claim_at(
    user: &str,
    k: &str,
    hash: &str,
    owner: &str,
    now: OffsetDateTime,
) -> NewIdempotencyClaim {
    NewIdempotencyClaim::new(
        scope(user, k),
        hash,
        owner,
        now,
        now + Duration::seconds(30),
    )
}

pub fn claim(user: &str, k: &str, hash: &str) -> NewIdempotencyClaim {
    claim_at(user, k, hash, "owner-1", now_ms())
}

/// A claim whose key is unique (`out_trade_no` based), for tests about orders, not keys.
pub fn fresh_claim(order: &Order) -> NewIdempotencyClaim {
    claim(
        order.openid.as_str(),
        &format!("k-{}", order.out_trade_no),
        "hash",
    )
}

pub fn payment(order: &Order, transaction_id: &str) -> Payment {
    payment_at(order, transaction_id, now_ms())
}

/// A payment of `order`'s amount that succeeded at `success_time`.
pub fn payment_at(order: &Order, transaction_id: &str, success_time: OffsetDateTime) -> Payment {
    Payment {
        transaction_id: transaction_id.to_owned(),
        out_trade_no: order.out_trade_no.clone(),
        amount: order.amount_total,
        payer_total: order.amount_total,
        currency: order.currency.clone(),
        request_id: None,
        payer: Some(order.openid.clone()),
        success_time,
        notification_id: Some(format!("notify-{transaction_id}")),
        notification: None,
    }
}

/// What the event-dispatcher does to `sold` (DESIGN 5: PAID touches no product item): every
/// due event's counters moved once, by the dispatcher's own code (no webhook, so only that).
pub async fn project_events(store: &DynamoStore) {
    let deps = shared::service::EventDeps {
        store: Arc::new(store.clone()),
        webhook: None,
        clock: shared::service::system_clock(),
        settings: shared::service::DispatchSettings::default(),
    };
    let summary = shared::service::dispatch_due(&deps, None).await;
    assert_eq!(summary.failed, 0, "projection failed: {summary:?}");
}
