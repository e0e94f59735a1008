//! Sharded stock in the store (issue 17), on both engines: staging, a reservation on the
//! shard an order line names (and nothing written when it is short), close and refund
//! restock returning units to the recorded shard once, PAID touching no shard, the
//! rebalancer's conditional transfer, and the product item of a sharded sku left alone by
//! order and close transactions.

use shared::domain::{
    Order, OrderStatus, OutRefundNo, Product, Quantity, Refund, RefundStatus, RestockLine,
    StockShard, StockTransfer,
};
use shared::store::{
    CloseOutcome, CreateOrderOutcome, MarkPaidOutcome, RefundMoveOutcome, RefundReserveOutcome,
    RefundSettleOutcome, Store, StoreError, StoreSupport,
};
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
use wxpay_tests::*;

wxpay_tests::store_suite!(
    sharded_stock_is_staged_once_and_listed,
    a_sharded_line_reserves_on_its_shard_only,
    a_short_or_missing_shard_writes_nothing,
    close_returns_units_to_the_recorded_shard_once,
    paid_touches_no_shard_and_a_restock_returns_to_its_shard,
    stock_moves_between_shards_only_when_the_giver_has_it,
);

/// (available, taken) of every shard, in shard order.
async fn shards(ctx: &StoreCtx, p: &Product) -> Vec<(i64, i64)> {
    let read: Vec<StockShard> = ctx
        .store
        .stock_shards(&p.sku_id, p.stock_shards)
        .await
        .unwrap();
    assert_eq!(read.len(), p.stock_shards as usize, "every shard is there");
    assert!(read.iter().enumerate().all(|(i, s)| s.shard == i as u32));
    read.iter().map(|s| (s.available, s.taken)).collect()
}

/// The product item exactly as stored (every attribute).
async fn raw_product(
    ctx: &StoreCtx,
    p: &Product,
) -> std::collections::HashMap<String, AttributeValue> {
    ctx.raw_item(format!("PRODUCT#{}", p.sku_id), "PRODUCT")
        .await
        .unwrap()
}

async fn place(ctx: &StoreCtx, o: &Order) {
    assert_eq!(
        ctx.store.create_order(&fresh_claim(o), o).await.unwrap(),
        CreateOrderOutcome::Created
    );
}

async fn sharded_stock_is_staged_once_and_listed(ctx: StoreCtx) {
    let hot = sharded_product("hot", 990, 103, 4);
    let tea = product("tea", 500, Some(5));
    ctx.store
        .put_products(&[hot.clone(), tea.clone()])
        .await
        .unwrap();
    assert_eq!(
        shards(&ctx, &hot).await,
        [(26, 0), (26, 0), (26, 0), (25, 0)]
    );
    assert_eq!(
        ctx.store.sharded_skus().await.unwrap(),
        [(hot.sku_id.clone(), 4)],
        "only the sharded sku is listed"
    );
    assert_eq!(
        ctx.store.get_product(&hot.sku_id).await.unwrap(),
        Some(hot.clone())
    );
    assert_eq!(
        ctx.store
            .product_available_counter(&hot.sku_id)
            .await
            .unwrap(),
        Some(0),
        "its units are in the shards, never on the product's counter"
    );

    // A re-seed (a sandbox restart, a price change) keeps what orders reserved.
    let o = on_shard(order("o_alice", &[(&hot, 2)]), &hot.sku_id, 0);
    place(&ctx, &o).await;
    let repriced = Product {
        price: fen(1090),
        ..hot.clone()
    };
    ctx.store
        .put_products(std::slice::from_ref(&repriced))
        .await
        .unwrap();
    assert_eq!(
        shards(&ctx, &hot).await,
        [(24, 2), (26, 0), (26, 0), (25, 0)]
    );

    // Shard counts out of range are refused before anything is written.
    for bad in [0, shared::domain::MAX_STOCK_SHARDS + 1] {
        let p = sharded_product("bad", 1, 10, bad);
        let err = ctx
            .store
            .put_products(std::slice::from_ref(&p))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert_eq!(ctx.store.get_product(&p.sku_id).await.unwrap(), None);
    }
}

async fn a_sharded_line_reserves_on_its_shard_only(ctx: StoreCtx) {
    let hot = sharded_product("hot", 990, 40, 4);
    let tea = product("tea", 500, Some(5));
    ctx.store
        .put_products(&[hot.clone(), tea.clone()])
        .await
        .unwrap();
    let product_before = raw_product(&ctx, &hot).await;

    let o = on_shard(order("o_alice", &[(&hot, 3), (&tea, 1)]), &hot.sku_id, 2);
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.create_order(&fresh_claim(&o), &o))
        .await;
    assert_eq!(out.unwrap(), CreateOrderOutcome::Created);
    assert_eq!(calls.total_calls(), 1, "one transaction: {calls:?}");

    assert_eq!(
        shards(&ctx, &hot).await,
        [(10, 0), (10, 0), (7, 3), (10, 0)]
    );
    assert_eq!(
        raw_product(&ctx, &hot).await,
        product_before,
        "the sharded sku's product item is not in the order transaction"
    );
    // The single-counter line beside it reserved on its product as before.
    let t = ctx.store.get_product(&tea.sku_id).await.unwrap().unwrap();
    assert_eq!((t.reserved, t.available()), (1, Some(4)));
    // The order keeps the shard it reserved on.
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored, o);
    assert_eq!(stored.lines[0].stock_shard, Some(2));
    assert_eq!(stored.lines[1].stock_shard, None);
}

async fn a_short_or_missing_shard_writes_nothing(ctx: StoreCtx) {
    let hot = sharded_product("hot", 990, 8, 4);
    let tea = product("tea", 500, Some(1));
    ctx.store
        .put_products(&[hot.clone(), tea.clone()])
        .await
        .unwrap();

    // Shard 1 holds 2: a line of 3 is short there (though the sku has 8 in all).
    let o = on_shard(order("o_alice", &[(&hot, 3)]), &hot.sku_id, 1);
    let c = fresh_claim(&o);
    assert_eq!(
        ctx.store.create_order(&c, &o).await.unwrap(),
        CreateOrderOutcome::ShardShort {
            sku_id: hot.sku_id.clone(),
            shard: 1
        }
    );
    // A shard the sku does not have is short too.
    let beyond = on_shard(order("o_alice", &[(&hot, 1)]), &hot.sku_id, 9);
    assert_eq!(
        ctx.store
            .create_order(&fresh_claim(&beyond), &beyond)
            .await
            .unwrap(),
        CreateOrderOutcome::ShardShort {
            sku_id: hot.sku_id.clone(),
            shard: 9
        }
    );
    // A shard that can serve the line, beside a single-counter line that cannot: the
    // whole order fails on the other line, and its shard is untouched.
    let mixed = on_shard(order("o_alice", &[(&hot, 1), (&tea, 2)]), &hot.sku_id, 0);
    assert_eq!(
        ctx.store
            .create_order(&fresh_claim(&mixed), &mixed)
            .await
            .unwrap(),
        CreateOrderOutcome::OutOfStock {
            sku_id: tea.sku_id.clone()
        }
    );
    for refused in [&o, &beyond, &mixed] {
        assert_eq!(
            ctx.store.get_order(&refused.out_trade_no).await.unwrap(),
            None
        );
        assert_eq!(
            ctx.store
                .get_idempotency(&fresh_claim(refused).scope)
                .await
                .unwrap(),
            None,
            "the key was not claimed"
        );
    }
    assert_eq!(shards(&ctx, &hot).await, [(2, 0); 4]);
}

async fn close_returns_units_to_the_recorded_shard_once(ctx: StoreCtx) {
    let hot = sharded_product("hot", 990, 20, 2);
    ctx.store
        .put_products(std::slice::from_ref(&hot))
        .await
        .unwrap();
    let product_before = raw_product(&ctx, &hot).await;
    let o = on_shard(order("o_alice", &[(&hot, 4)]), &hot.sku_id, 1);
    place(&ctx, &o).await;
    assert_eq!(shards(&ctx, &hot).await, [(10, 0), (6, 4)]);

    let closed = match ctx.store.close(&o, "expired", now_ms()).await.unwrap() {
        CloseOutcome::Closed(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(closed.status, OrderStatus::Closed);
    assert_eq!(shards(&ctx, &hot).await, [(10, 0), (10, 0)]);
    // A second close (another sweep, the owner) finds it closed and returns nothing.
    assert!(matches!(
        ctx.store.close(&o, "expired", now_ms()).await.unwrap(),
        CloseOutcome::NotPending(_)
    ));
    assert_eq!(shards(&ctx, &hot).await, [(10, 0), (10, 0)]);
    assert_eq!(
        raw_product(&ctx, &hot).await,
        product_before,
        "close of a sharded sku leaves its product item alone"
    );
}

async fn paid_touches_no_shard_and_a_restock_returns_to_its_shard(ctx: StoreCtx) {
    let hot = sharded_product("hot", 1000, 12, 3);
    ctx.store
        .put_products(std::slice::from_ref(&hot))
        .await
        .unwrap();
    let product_before = raw_product(&ctx, &hot).await;
    let o = on_shard(order("o_alice", &[(&hot, 2)]), &hot.sku_id, 2);
    place(&ctx, &o).await;
    let paid = match ctx
        .store
        .mark_paid(&o, &payment(&o, "4200000000202612080000000017"), now_ms())
        .await
        .unwrap()
    {
        MarkPaidOutcome::Applied(p) => *p,
        other => panic!("{other:?}"),
    };
    assert_eq!(shards(&ctx, &hot).await, [(4, 0), (4, 0), (2, 2)]);
    assert_eq!(
        raw_product(&ctx, &hot).await,
        product_before,
        "PAID: no product"
    );

    // `order.paid` projected: sold counted on the product, no reservation taken off it
    // (it never held one), shards as they were.
    project_events(&ctx.store).await;
    let p = ctx.store.get_product(&hot.sku_id).await.unwrap().unwrap();
    assert_eq!((p.reserved, p.sold), (0, 2));
    assert_eq!(shards(&ctx, &hot).await, [(4, 0), (4, 0), (2, 2)]);

    // A refund that restocks one unit gives it back to shard 2, once.
    let refund = Refund::requested(
        OutRefundNo::generate(now_ms()),
        o.out_trade_no.clone(),
        fen(1000),
        Some("returned".into()),
        vec![RestockLine {
            sku_id: hot.sku_id.clone(),
            quantity: Quantity::new(1).unwrap(),
        }],
        now_ms(),
    );
    let reserved = match ctx.store.reserve_refund(&paid, &refund).await.unwrap() {
        RefundReserveOutcome::Reserved(o) => *o,
        other => panic!("{other:?}"),
    };
    let accepted = match ctx
        .store
        .accept_refund(&refund, "50300000000000000017", now_ms())
        .await
        .unwrap()
    {
        RefundMoveOutcome::Moved(r) => *r,
        other => panic!("{other:?}"),
    };
    let settle = || {
        ctx.store.settle_refund(
            &reserved,
            &accepted,
            RefundStatus::Success,
            Some(now_ms()),
            None,
            now_ms(),
        )
    };
    assert!(matches!(
        settle().await.unwrap(),
        RefundSettleOutcome::Applied { .. }
    ));
    assert!(matches!(
        settle().await.unwrap(),
        RefundSettleOutcome::AlreadyMoved(_)
    ));
    assert_eq!(shards(&ctx, &hot).await, [(4, 0), (4, 0), (3, 1)]);
    let p = ctx.store.get_product(&hot.sku_id).await.unwrap().unwrap();
    assert_eq!(
        (p.reserved, p.sold),
        (0, 1),
        "the restocked unit is no longer sold"
    );
}

async fn stock_moves_between_shards_only_when_the_giver_has_it(ctx: StoreCtx) {
    let hot = sharded_product("hot", 990, 30, 3);
    ctx.store
        .put_products(std::slice::from_ref(&hot))
        .await
        .unwrap();
    let o = on_shard(order("o_alice", &[(&hot, 4)]), &hot.sku_id, 0);
    place(&ctx, &o).await;
    let transfer = |from, to, quantity| StockTransfer { from, to, quantity };

    let (moved, calls) = ctx
        .counter
        .measure(ctx.store.move_stock(&hot.sku_id, &transfer(0, 2, 5)))
        .await;
    assert!(moved.unwrap());
    assert_eq!(calls.total_calls(), 1, "one transaction: {calls:?}");
    assert_eq!(shards(&ctx, &hot).await, [(1, 4), (10, 0), (15, 0)]);

    // The giver has 1 available (4 are taken by the order): refused, nothing moved.
    assert!(
        !ctx.store
            .move_stock(&hot.sku_id, &transfer(0, 1, 2))
            .await
            .unwrap()
    );
    // To a shard the sku does not have: an error, and the giver keeps its units.
    assert!(matches!(
        ctx.store.move_stock(&hot.sku_id, &transfer(1, 7, 3)).await,
        Err(StoreError::Invalid(_))
    ));
    for bad in [transfer(1, 1, 3), transfer(1, 2, 0), transfer(1, 2, -3)] {
        assert!(matches!(
            ctx.store.move_stock(&hot.sku_id, &bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(shards(&ctx, &hot).await, [(1, 4), (10, 0), (15, 0)]);

    // Units reserved before a transfer still go back to their own shard on close.
    assert!(matches!(
        ctx.store.close(&o, "expired", now_ms()).await.unwrap(),
        CloseOutcome::Closed(_)
    ));
    let after = shards(&ctx, &hot).await;
    assert_eq!(after, [(5, 0), (10, 0), (15, 0)]);
    assert_eq!(after.iter().map(|(a, t)| a + t).sum::<i64>(), 30);
}
