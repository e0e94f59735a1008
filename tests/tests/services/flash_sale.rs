//! A flash sale on a sharded sku (issue 17) through the place-order use case on embedded
//! Dynoxide: a storm of orders sells exactly the stock and no more, a retry of one request
//! lands on the same shard, OUT_OF_STOCK only once no shard can serve a line, the sweeper's
//! rebalancer refills empty shards, and the sku is priced from the catalog cache.

use std::sync::Arc;

use shared::domain::{Order, OutTradeNo, Product, StockTransfer, first_shard};
use shared::service::{
    CatalogCache, Deps, PlaceOrderError, PlaceOrderInput, PlaceOrderRequest, place_order,
    rebalance_stock,
};
use shared::store::{CloseOutcome, Store, StoreSupport};
use shared::wechatpay::gateway::PrepayResponse;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wxpay_tests::*;

fn request(user: &str, key: &str, sku: &str, quantity: u32) -> PlaceOrderRequest {
    PlaceOrderRequest {
        openid: openid(user),
        idempotency_key: wxpay_tests::key(key),
        input: PlaceOrderInput::parse(
            format!(r#"{{"items":[{{"sku_id":"{sku}","quantity":{quantity}}}]}}"#).as_bytes(),
        )
        .unwrap(),
        deadline: Some(now_ms() + time::Duration::seconds(30)),
    }
}

fn prepays(gateway: &Scripted, n: usize) {
    for i in 0..n {
        gateway.prepay(Ok(PrepayResponse {
            prepay_id: format!("wx-prepay-{i}"),
            request_id: None,
        }));
    }
}

/// The order a 201 body names.
async fn placed(ctx: &StoreCtx, body: &str) -> Order {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let no = OutTradeNo::parse(v["out_trade_no"].as_str().unwrap()).unwrap();
    ctx.store.get_order(&no).await.unwrap().unwrap()
}

/// (available, taken) of every shard.
async fn shards(ctx: &StoreCtx, p: &Product) -> Vec<(i64, i64)> {
    ctx.store
        .stock_shards(&p.sku_id, p.stock_shards)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.available, s.taken))
        .collect()
}

async fn setup(test: &str, products: &[Product]) -> (StoreCtx, Arc<Scripted>, Deps) {
    let ctx = StoreCtx::dynoxide(test).await;
    ctx.store.put_products(products).await.unwrap();
    let gateway = Arc::new(Scripted::default());
    let deps = scripted_deps(&ctx, gateway.clone());
    (ctx, gateway, deps)
}

/// 500 buyers at once for 100 units over 8 shards: exactly 100 orders, every other buyer
/// OUT_OF_STOCK (never a 503), each unit reserved on the shard its order recorded, and
/// every reservation given back once when the orders close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_500_orders_sells_exactly_the_100_units() {
    let hot = sharded_product("hot", 990, 100, 8);
    let (ctx, gateway, deps) = setup("flash_storm", std::slice::from_ref(&hot)).await;
    prepays(&gateway, 500);
    let product_before = ctx.store.get_product(&hot.sku_id).await.unwrap();

    let n = 500;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (deps, barrier) = (deps.clone(), barrier.clone());
        tasks.spawn(async move {
            let req = request(&format!("o_buyer{i}"), "flash-1", "hot", 1);
            barrier.wait().await;
            place_order(&deps, req).await
        });
    }
    let (mut bodies, mut sold_out) = (Vec::new(), 0);
    while let Some(res) = tasks.join_next().await {
        match res.unwrap() {
            Ok(reply) => {
                assert_eq!(reply.completion.status_code(), 201, "{}", reply.body);
                bodies.push(reply.body);
            }
            Err(PlaceOrderError::OutOfStock(sku)) => {
                assert_eq!(sku, hot.sku_id);
                sold_out += 1;
            }
            Err(other) => panic!("a buyer got {other:?}"),
        }
    }
    assert_eq!((bodies.len(), sold_out), (100, 400));
    println!("calls for 500 orders: {:?}", ctx.counter.snapshot());

    // Every unit is on the shard an order recorded; nothing oversold, nothing negative.
    let mut orders = Vec::new();
    let mut per_shard = vec![0i64; 8];
    for body in &bodies {
        let o = placed(&ctx, body).await;
        let shard = o.lines[0]
            .stock_shard
            .expect("a sharded line records its shard");
        per_shard[shard as usize] += i64::from(o.lines[0].quantity.get());
        orders.push(o);
    }
    let after = shards(&ctx, &hot).await;
    assert!(after.iter().all(|(a, t)| *a >= 0 && *t >= 0), "{after:?}");
    assert_eq!(
        after.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        per_shard,
        "each shard's taken units are its orders'"
    );
    assert_eq!(after.iter().map(|(a, _)| a).sum::<i64>(), 0, "sold out");
    assert_eq!(
        ctx.store.get_product(&hot.sku_id).await.unwrap(),
        product_before,
        "the hot product item was never written"
    );

    // Closed (expired, say), twice over: each reservation comes back once.
    for _ in 0..2 {
        let mut closes = JoinSet::new();
        for o in orders.clone() {
            let store = ctx.store.clone();
            closes.spawn(async move { store.close(&o, "expired", now_ms()).await.unwrap() });
        }
        let closed = closes
            .join_all()
            .await
            .into_iter()
            .filter(|c| matches!(c, CloseOutcome::Closed(_)))
            .count();
        assert!(closed == 100 || closed == 0);
        assert_eq!(
            shards(&ctx, &hot).await.iter().map(|(a, _)| a).sum::<i64>(),
            100
        );
        assert!(shards(&ctx, &hot).await.iter().all(|(_, t)| *t == 0));
    }
}

/// The first shard a request tries comes from its caller and key: a retry of a request
/// whose order was never created (WeChat Pay refused its prepay, so it was closed and its
/// key freed) reserves on the same shard again; a replay answers the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_lands_on_the_same_shard() {
    let hot = sharded_product("hot", 990, 64, 8);
    let (ctx, gateway, deps) = setup("flash_retry", std::slice::from_ref(&hot)).await;
    let expected = first_shard("o_alice#retry-1", &hot.sku_id, 8);

    gateway.prepay(Err(api_error(500, "SYSTEM_ERROR")));
    let refused = place_order(&deps, request("o_alice", "retry-1", "hot", 2)).await;
    assert!(
        matches!(refused, Err(PlaceOrderError::PaymentProvider(_))),
        "{refused:?}"
    );
    let first_no = gateway.calls()[0]
        .strip_prefix("prepay ")
        .unwrap()
        .to_owned();
    let first = ctx
        .store
        .get_order(&OutTradeNo::parse(&first_no).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.lines[0].stock_shard, Some(expected));

    prepays(&gateway, 1);
    let retried = place_order(&deps, request("o_alice", "retry-1", "hot", 2))
        .await
        .unwrap();
    let second = placed(&ctx, &retried.body).await;
    assert_ne!(second.out_trade_no, first.out_trade_no, "placed afresh");
    assert_eq!(
        second.lines[0].stock_shard,
        Some(expected),
        "the same shard"
    );
    let replay = place_order(&deps, request("o_alice", "retry-1", "hot", 2))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.body, retried.body);

    // The refused order's units came back; the placed one holds 2 on that shard alone.
    let after = shards(&ctx, &hot).await;
    for (k, (available, taken)) in after.iter().enumerate() {
        let held = if k as u32 == expected { 2 } else { 0 };
        assert_eq!((*available, *taken), (8 - held, held), "shard {k}");
    }
}

/// A line moves off a short shard to one that can serve it, and is OUT_OF_STOCK only when a
/// read of every shard finds none with its quantity (a line must fit on one shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_only_when_no_shard_can_serve_the_line() {
    let hot = sharded_product("hot", 990, 12, 4);
    let (ctx, gateway, deps) = setup("flash_exhaust", std::slice::from_ref(&hot)).await;
    prepays(&gateway, 10);
    // Everything onto shard 3 except one unit on shard 0: whatever shard a request hashes
    // to, the order finds the stock.
    for (from, quantity) in [(0, 2), (1, 3), (2, 3)] {
        assert!(
            ctx.store
                .move_stock(
                    &hot.sku_id,
                    &StockTransfer {
                        from,
                        to: 3,
                        quantity
                    }
                )
                .await
                .unwrap()
        );
    }
    assert_eq!(shards(&ctx, &hot).await, [(1, 0), (0, 0), (0, 0), (11, 0)]);

    // 12 units in all, but no shard holds 12: refused, nothing reserved.
    let too_many = place_order(&deps, request("o_alice", "big", "hot", 12)).await;
    assert!(
        matches!(too_many, Err(PlaceOrderError::OutOfStock(_))),
        "{too_many:?}"
    );
    assert_eq!(shards(&ctx, &hot).await, [(1, 0), (0, 0), (0, 0), (11, 0)]);

    let big = place_order(&deps, request("o_alice", "big-2", "hot", 11))
        .await
        .unwrap();
    assert_eq!(placed(&ctx, &big.body).await.lines[0].stock_shard, Some(3));
    let last = place_order(&deps, request("o_bob", "last", "hot", 1))
        .await
        .unwrap();
    assert_eq!(placed(&ctx, &last.body).await.lines[0].stock_shard, Some(0));
    let none = place_order(&deps, request("o_carol", "none", "hot", 1)).await;
    assert!(
        matches!(none, Err(PlaceOrderError::OutOfStock(_))),
        "{none:?}"
    );
    assert_eq!(shards(&ctx, &hot).await, [(0, 1), (0, 0), (0, 0), (0, 11)]);
}

/// The sweeper's rebalancer refills shards that ran low from the richest, conserving every
/// unit and leaving reservations where they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebalancer_refills_empty_shards() {
    let hot = sharded_product("hot", 990, 40, 4);
    let (ctx, gateway, deps) = setup("flash_rebalance", std::slice::from_ref(&hot)).await;
    prepays(&gateway, 1);
    for (from, to) in [(0, 3), (1, 2)] {
        let t = StockTransfer {
            from,
            to,
            quantity: 10,
        };
        assert!(ctx.store.move_stock(&hot.sku_id, &t).await.unwrap());
    }
    let o = place_order(&deps, request("o_alice", "r-1", "hot", 4))
        .await
        .unwrap();
    let o = placed(&ctx, &o.body).await;
    let before = shards(&ctx, &hot).await;
    assert_eq!(
        before.iter().filter(|(a, _)| *a == 0).count(),
        2,
        "{before:?}"
    );

    let summary = rebalance_stock(&deps, None).await;
    assert_eq!((summary.skus, summary.failed), (1, 0), "{summary:?}");
    assert!(summary.transfers >= 2, "{summary:?}");
    let after = shards(&ctx, &hot).await;
    let share = 36 / 4;
    assert!(after.iter().all(|(a, _)| *a >= share / 2), "{after:?}");
    assert_eq!(after.iter().map(|(a, _)| a).sum::<i64>(), 36);
    assert_eq!(after.iter().map(|(_, t)| t).sum::<i64>(), 4);
    assert_eq!(
        after.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        before.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        "reservations stay on their shards"
    );
    // Even now: a second run moves nothing.
    assert_eq!(rebalance_stock(&deps, None).await.transfers, 0);
    // The order still closes back onto the shard it recorded.
    assert!(matches!(
        ctx.store.close(&o, "expired", now_ms()).await.unwrap(),
        CloseOutcome::Closed(_)
    ));
    assert_eq!(
        shards(&ctx, &hot).await.iter().map(|(a, _)| a).sum::<i64>(),
        40
    );
}

/// A sharded sku's price and active state come from the catalog cache for its TTL (the
/// order records the price it used); a single-counter sku is read every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_sku_is_priced_from_the_catalog_cache() {
    let hot = sharded_product("hot", 990, 50, 2);
    let tea = product("tea", 500, Some(50));
    let (ctx, gateway, deps) = setup("flash_cache", &[hot.clone(), tea.clone()]).await;
    prepays(&gateway, 6);
    let amount = |body: &str| -> i64 {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["amount_total"]
            .as_i64()
            .unwrap()
    };
    let first = place_order(&deps, request("o_a", "c-1", "hot", 1))
        .await
        .unwrap();
    assert_eq!(amount(&first.body), 990);

    // The merchant reprices both and takes the hot sku off sale.
    ctx.store
        .put_products(&[
            Product {
                price: fen(1990),
                active: false,
                ..hot.clone()
            },
            Product {
                price: fen(700),
                ..tea.clone()
            },
        ])
        .await
        .unwrap();
    let cached = place_order(&deps, request("o_b", "c-2", "hot", 1))
        .await
        .unwrap();
    assert_eq!(
        amount(&cached.body),
        990,
        "within the TTL: the cached price"
    );
    let o = placed(&ctx, &cached.body).await;
    assert_eq!(
        o.lines[0].unit_price,
        fen(990),
        "the order records the price it used"
    );
    let tea_now = place_order(&deps, request("o_b", "c-3", "tea", 1))
        .await
        .unwrap();
    assert_eq!(
        amount(&tea_now.body),
        700,
        "a single-counter sku is read each time"
    );

    // Past the TTL (a process whose cache expires at once): the store's word.
    let fresh = Deps {
        catalog: CatalogCache::new(time::Duration::ZERO),
        ..deps.clone()
    };
    let refused = place_order(&fresh, request("o_c", "c-4", "hot", 1)).await;
    assert!(
        matches!(refused, Err(PlaceOrderError::UnknownSku(_))),
        "{refused:?}"
    );
}

/// Makes the next `remaining` order transactions (those that reserve on a stock shard) end
/// as DynamoDB ends a transaction that met another on one of its items: cancelled with
/// `TransactionConflict`, nothing written. Dynoxide never conflicts, so the request is sent
/// to a table that does not exist (refused whole) and its answer replaced.
#[derive(Debug, Clone)]
struct ConflictOn {
    remaining: Arc<std::sync::atomic::AtomicU32>,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl ConflictOn {
    fn new(times: u32) -> Self {
        ConflictOn {
            remaining: Arc::new(std::sync::atomic::AtomicU32::new(times)),
            armed: Arc::default(),
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for ConflictOn {
    fn name(&self) -> &'static str {
        "ConflictOn"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        let request = context.request_mut();
        let Some(body) = request.body().bytes().map(<[u8]>::to_vec) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        if !text.contains("TransactItems")
            || !text.contains("STOCK#")
            || self
                .remaining
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Ok(());
        }
        self.armed.store(true, SeqCst);
        let sent = text.replace("\"TableName\":\"", "\"TableName\":\"no-such-table-");
        request
            .headers_mut()
            .insert("content-length", sent.len().to_string());
        *request.body_mut() = aws_smithy_types::body::SdkBody::from(sent);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#;
        let response = context.response_mut();
        *response.status_mut() = 400u16.try_into()?;
        response
            .headers_mut()
            .insert("content-length", body.len().to_string());
        response
            .headers_mut()
            .insert("x-amzn-errortype", "TransactionCanceledException");
        *response.body_mut() = aws_smithy_types::body::SdkBody::from(body);
        Ok(())
    }
}

/// A transaction that conflicts (another order's on the same shard, on real DynamoDB) is
/// tried again on another shard after a jittered pause; past the bound the caller gets a
/// retryable error (503) and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_moves_the_line_to_another_shard() {
    let hot = sharded_product("hot", 990, 80, 8);
    let (ctx, gateway, deps) = setup("flash_conflict", std::slice::from_ref(&hot)).await;
    prepays(&gateway, 1);
    let conflict = ConflictOn::new(1);
    let store = shared::store::DynamoStore::new(
        shared::store::with_interceptor(ctx.client(), conflict.clone()),
        &ctx.table,
    );
    let conflicted = Deps {
        store: Arc::new(store),
        ..deps.clone()
    };
    let first = first_shard("o_alice#conflict-1", &hot.sku_id, 8);

    let reply = place_order(&conflicted, request("o_alice", "conflict-1", "hot", 2))
        .await
        .unwrap();
    assert_eq!(
        conflict.remaining.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let o = placed(&ctx, &reply.body).await;
    let moved_to = o.lines[0].stock_shard.unwrap();
    assert_ne!(moved_to, first, "the conflicted shard is left for another");
    let after = shards(&ctx, &hot).await;
    for (k, (available, taken)) in after.iter().enumerate() {
        let held = if k as u32 == moved_to { 2 } else { 0 };
        assert_eq!((*available, *taken), (10 - held, held), "shard {k}");
    }

    // Conflicts every time: a 503 for the client to retry, nothing written.
    let always = ConflictOn::new(u32::MAX);
    let store = shared::store::DynamoStore::new(
        shared::store::with_interceptor(ctx.client(), always.clone()),
        &ctx.table,
    );
    let stuck = Deps {
        store: Arc::new(store),
        ..deps.clone()
    };
    let refused = place_order(&stuck, request("o_bob", "conflict-2", "hot", 1)).await;
    match refused {
        Err(PlaceOrderError::Store(e)) => assert!(e.retryable(), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(u32::MAX - always.remaining.load(std::sync::atomic::Ordering::SeqCst) > 1);
    assert_eq!(shards(&ctx, &hot).await, after, "nothing reserved");
    assert_eq!(
        ctx.store
            .list_orders(&openid("o_bob"), 10, None)
            .await
            .unwrap()
            .items,
        []
    );
}
