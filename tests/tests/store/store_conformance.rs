//! The store conformance suite: every `Store` operation, its success and each way it can
//! lose, run against two independent DynamoDB implementations (embedded Dynoxide and moto),
//! with the DynamoDB calls each operation costs counted and asserted.

use shared::store::StoreSupport;
use std::collections::HashSet;

use shared::domain::{OrderStatus, Product};
use shared::idempotency::{
    Decision, IdempotencyState, NewIdempotencyClaim, StoredResponse, decide,
};
use shared::store::{
    Anomaly, AnomalyKind, AnomalyOutcome, CloseOutcome, CompleteOrderOutcome, CreateOrderOutcome,
    Cursor, FencedOutcome, MarkPaidOutcome, PrepayOutcome, Store, StoreError, SyncClaim,
    TakeOverOutcome,
};
use time::Duration;
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
use wxpay_tests::*;

wxpay_tests::store_suite!(
    table_matches_the_definition,
    products_are_seeded_and_read_in_one_batch,
    create_order_claims_creates_and_reserves_in_one_call,
    key_in_use_returns_the_live_record,
    key_reused_with_another_request_hash,
    completed_key_replays_its_response,
    expired_record_is_claimed_anew,
    expired_lock_is_taken_over_and_stale_owner_is_fenced,
    take_over_refused_while_locked_reused_or_missing,
    release_only_by_owner_and_only_in_progress,
    out_of_stock_writes_nothing,
    unknown_or_inactive_sku_writes_nothing,
    duplicate_out_trade_no_is_refused,
    invalid_orders_are_refused_before_writing,
    prepay_recorded_only_while_pending,
    complete_order_records_prepay_and_response_together,
    mark_paid_applies_once_and_moves_stock,
    second_transaction_on_a_paid_order_is_already_paid,
    paid_after_close_is_reported_closed,
    amount_mismatch_changes_nothing,
    amount_mismatch_is_held_once_with_its_payment_and_anomaly,
    a_deleted_product_never_blocks_payment_or_close,
    transaction_id_of_another_order_is_payment_exists,
    mark_paid_of_a_missing_order_is_not_found,
    mark_paid_from_a_stale_read_still_applies,
    close_returns_stock_once,
    sync_claims_once_per_interval_for_the_owner_only,
    anomalies_are_recorded_once_per_kind_and_cause,
    distinct_payments_racing_one_order_are_each_kept_once,
    list_orders_pages_newest_first,
    due_pending_pages_oldest_first_and_is_sparse,
    tampered_cursors_are_bad_cursor,
    malformed_items_are_errors,
);

// ---- helpers -------------------------------------------------------------------------------

async fn seed(ctx: &StoreCtx, products: &[Product]) {
    ctx.store.put_products(products).await.unwrap();
}

async fn place(ctx: &StoreCtx, order: &shared::domain::Order) {
    let out = ctx
        .store
        .create_order(&fresh_claim(order), order)
        .await
        .unwrap();
    assert_eq!(out, CreateOrderOutcome::Created);
}

/// (reserved, sold, available) of a product as stored; `available` is the counter the
/// conditions compare, checked against stock - reserved - sold.
pub(crate) async fn stock(ctx: &StoreCtx, p: &Product) -> (i64, i64, Option<i64>) {
    let stored = ctx.store.get_product(&p.sku_id).await.unwrap().unwrap();
    let counter = ctx
        .store
        .product_available_counter(&p.sku_id)
        .await
        .unwrap();
    if let Some(stock) = stored.stock {
        assert_eq!(
            counter,
            Some(stock - stored.reserved - stored.sold),
            "available counter drifted"
        );
        assert!(stored.available().unwrap() >= 0, "negative stock");
    }
    assert!(stored.reserved >= 0 && stored.sold >= 0);
    (stored.reserved, stored.sold, stored.available())
}

async fn order_of(ctx: &StoreCtx, o: &shared::domain::Order) -> Option<shared::domain::Order> {
    ctx.store.get_order(&o.out_trade_no).await.unwrap()
}

/// The order's item as stored, every attribute (those `Order` does not carry included).
async fn raw_order(
    ctx: &StoreCtx,
    o: &shared::domain::Order,
) -> std::collections::HashMap<String, AttributeValue> {
    ctx.raw_item(format!("ORDER#{}", o.out_trade_no), "ORDER")
        .await
        .unwrap()
}

/// Raw attribute presence, to check the sparse index keys.
async fn has_attr(ctx: &StoreCtx, o: &shared::domain::Order, name: &str) -> bool {
    raw_order(ctx, o).await.contains_key(name)
}

// ---- table and catalog ---------------------------------------------------------------------

async fn table_matches_the_definition(ctx: StoreCtx) {
    let t = ctx
        .client()
        .describe_table()
        .table_name(&ctx.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<_> = t
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    let mut gsis: Vec<_> = t
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap_or_default().to_owned(),
                g.key_schema()
                    .iter()
                    .map(|k| k.attribute_name().to_owned())
                    .collect::<Vec<_>>(),
                g.projection()
                    .and_then(|p| p.projection_type())
                    .map(|p| p.as_str().to_owned()),
            )
        })
        .collect();
    gsis.sort();
    assert_eq!(
        gsis,
        [
            (
                "gsi1".into(),
                vec!["gsi1pk".to_owned(), "gsi1sk".to_owned()],
                Some("ALL".into())
            ),
            (
                "gsi2".into(),
                vec!["gsi2pk".to_owned(), "gsi2sk".to_owned()],
                Some("ALL".into())
            ),
        ]
    );
    let stream = t.stream_specification().unwrap();
    assert!(stream.stream_enabled());
    assert_eq!(
        stream.stream_view_type().map(|v| v.as_str()),
        Some("NEW_AND_OLD_IMAGES")
    );
    let ttl = ctx
        .client()
        .describe_time_to_live()
        .table_name(&ctx.table)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
}

async fn products_are_seeded_and_read_in_one_batch(ctx: StoreCtx) {
    let mut catalog: Vec<Product> = (0..120)
        .map(|i| product(&format!("sku-{i:03}"), 100 + i, Some(10)))
        .collect();
    catalog[1].stock = None;
    catalog[2].active = false;
    seed(&ctx, &catalog).await;

    let wanted = vec![
        catalog[0].sku_id.clone(),
        catalog[1].sku_id.clone(),
        catalog[2].sku_id.clone(),
        catalog[0].sku_id.clone(), // duplicates are fine
        sku("no-such-sku"),
    ];
    let (found, calls) = ctx.counter.measure(ctx.store.get_products(&wanted)).await;
    let found = found.unwrap();
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    assert_eq!(calls.calls_of("BatchGetItem"), 1);
    assert_eq!(found.len(), 3);
    for p in &catalog[..3] {
        assert_eq!(found.get(&p.sku_id), Some(p));
    }
    assert!(!found.contains_key(&sku("no-such-sku")));

    // More than one BatchGetItem's worth (100 keys): two requests, all found.
    let all: Vec<_> = catalog.iter().map(|p| p.sku_id.clone()).collect();
    let (found, calls) = ctx.counter.measure(ctx.store.get_products(&all)).await;
    assert_eq!(found.unwrap().len(), 120);
    assert_eq!(calls.calls_of("BatchGetItem"), 2);

    assert_eq!(
        ctx.store.get_product(&catalog[5].sku_id).await.unwrap(),
        Some(catalog[5].clone())
    );
    assert_eq!(ctx.store.get_product(&sku("nope")).await.unwrap(), None);
    assert!(ctx.store.get_products(&[]).await.unwrap().is_empty());
    // One sku twice in a seed is refused, not half-written.
    let dup = [product("d-1", 1, None), product("d-1", 2, None)];
    assert!(matches!(
        ctx.store.put_products(&dup).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(ctx.store.get_product(&sku("d-1")).await.unwrap(), None);
}

// ---- create_order and idempotency ----------------------------------------------------------

async fn create_order_claims_creates_and_reserves_in_one_call(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    let cup = product("cup", 150, None);
    seed(&ctx, &[tea.clone(), cup.clone()]).await;
    let o = order("o_alice", &[(&tea, 3), (&cup, 2)]);
    let c = claim("o_alice", "k-1", "hash-a");

    let (out, calls) = ctx.counter.measure(ctx.store.create_order(&c, &o)).await;
    assert_eq!(out.unwrap(), CreateOrderOutcome::Created);
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    assert_eq!(calls.calls_of("TransactWriteItems"), 1, "{calls:?}");

    let (stored, calls) = ctx
        .counter
        .measure(ctx.store.get_order(&o.out_trade_no))
        .await;
    assert_eq!(calls.total_calls(), 1);
    let stored = stored.unwrap().unwrap();
    assert_eq!(stored, o);
    assert_eq!(stored.amount_total.fen(), 990 * 3 + 150 * 2);
    assert!(has_attr(&ctx, &o, "gsi2pk").await && has_attr(&ctx, &o, "gsi2sk").await);

    let record = ctx.store.get_idempotency(&c.scope).await.unwrap().unwrap();
    assert_eq!(record, c.record(&o.out_trade_no));
    assert_eq!(record.state, IdempotencyState::InProgress);

    assert_eq!(stock(&ctx, &tea).await, (3, 0, Some(7)));
    // Unlimited products count reservations too, and never run out.
    assert_eq!(stock(&ctx, &cup).await, (2, 0, None));
}

async fn key_in_use_returns_the_live_record(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let first = order("o_alice", &[(&tea, 1)]);
    let c = claim("o_alice", "k-1", "hash-a");
    assert_eq!(
        ctx.store.create_order(&c, &first).await.unwrap(),
        CreateOrderOutcome::Created
    );

    // The retry (same key, same body) got here while the first is still running.
    let retry = order("o_alice", &[(&tea, 1)]);
    let c2 = claim("o_alice", "k-1", "hash-a");
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.create_order(&c2, &retry))
        .await;
    assert_eq!(calls.total_calls(), 1, "the conflict comes without a read");
    let CreateOrderOutcome::IdempotencyConflict(existing) = out.unwrap() else {
        panic!("expected a conflict");
    };
    assert_eq!(existing, c.record(&first.out_trade_no));
    assert!(matches!(
        decide(&existing, "hash-a", c2.now),
        Decision::InProgress { retry_after_secs } if (1..=30).contains(&retry_after_secs)
    ));
    // Nothing of the retry was written.
    assert_eq!(order_of(&ctx, &retry).await, None);
    assert_eq!(stock(&ctx, &tea).await, (1, 0, Some(9)));
    // Another user's identical key is independent.
    let bob = order("o_bob", &[(&tea, 1)]);
    assert_eq!(
        ctx.store
            .create_order(&claim("o_bob", "k-1", "hash-a"), &bob)
            .await
            .unwrap(),
        CreateOrderOutcome::Created
    );
}

async fn key_reused_with_another_request_hash(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let first = order("o_alice", &[(&tea, 1)]);
    let c = claim("o_alice", "k-1", "hash-a");
    ctx.store.create_order(&c, &first).await.unwrap();

    let other = order("o_alice", &[(&tea, 2)]);
    let c2 = claim("o_alice", "k-1", "hash-b");
    let CreateOrderOutcome::IdempotencyConflict(existing) =
        ctx.store.create_order(&c2, &other).await.unwrap()
    else {
        panic!("expected a conflict");
    };
    assert_eq!(existing.request_hash, "hash-a");
    assert_eq!(decide(&existing, "hash-b", c2.now), Decision::Reused);
    // Also once completed: the body must match to replay.
    let response = StoredResponse {
        status_code: 201,
        body: "{}".into(),
    };
    ctx.store
        .complete_idempotency(&c.scope, "owner-1", &response)
        .await
        .unwrap();
    let CreateOrderOutcome::IdempotencyConflict(existing) =
        ctx.store.create_order(&c2, &other).await.unwrap()
    else {
        panic!("expected a conflict");
    };
    assert_eq!(decide(&existing, "hash-b", c2.now), Decision::Reused);
    assert_eq!(stock(&ctx, &tea).await, (1, 0, Some(9)));
}

async fn completed_key_replays_its_response(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let first = order("o_alice", &[(&tea, 1)]);
    let c = claim("o_alice", "k-1", "hash-a");
    ctx.store.create_order(&c, &first).await.unwrap();
    let response = StoredResponse {
        status_code: 201,
        body: format!(
            r#"{{"out_trade_no":"{}","status":"PENDING"}}"#,
            first.out_trade_no
        ),
    };
    let (out, calls) = ctx
        .counter
        .measure(
            ctx.store
                .complete_idempotency(&c.scope, "owner-1", &response),
        )
        .await;
    assert_eq!(out.unwrap(), FencedOutcome::Applied);
    assert_eq!(calls.total_calls(), 1);
    // The owner repeating its completion (a retried request) is harmless.
    assert_eq!(
        ctx.store
            .complete_idempotency(&c.scope, "owner-1", &response)
            .await
            .unwrap(),
        FencedOutcome::Applied
    );

    let retry = order("o_alice", &[(&tea, 1)]);
    let c2 = claim_at("o_alice", "k-1", "hash-a", "owner-2", now_ms());
    let CreateOrderOutcome::IdempotencyConflict(existing) =
        ctx.store.create_order(&c2, &retry).await.unwrap()
    else {
        panic!("expected a conflict");
    };
    assert_eq!(
        existing.state,
        IdempotencyState::Completed(response.clone())
    );
    assert_eq!(
        decide(&existing, "hash-a", c2.now),
        Decision::Replay(response)
    );
    assert_eq!(order_of(&ctx, &retry).await, None);
}

async fn expired_record_is_claimed_anew(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let long_ago = now_ms() - Duration::hours(25);
    let old = order_at("o_alice", &[(&tea, 1)], long_ago);
    let c = claim_at("o_alice", "k-1", "hash-a", "owner-1", long_ago);
    ctx.store.create_order(&c, &old).await.unwrap();
    let record = ctx.store.get_idempotency(&c.scope).await.unwrap().unwrap();
    assert_eq!(decide(&record, "hash-b", now_ms()), Decision::Expired);

    // Past its ttl the key is free even for another body (TTL deletion is lazy).
    let new = order("o_alice", &[(&tea, 2)]);
    let c2 = claim_at("o_alice", "k-1", "hash-b", "owner-2", now_ms());
    assert_eq!(
        ctx.store.create_order(&c2, &new).await.unwrap(),
        CreateOrderOutcome::Created
    );
    let record = ctx.store.get_idempotency(&c.scope).await.unwrap().unwrap();
    assert_eq!(record, c2.record(&new.out_trade_no));
    assert_eq!(stock(&ctx, &tea).await, (3, 0, Some(7)));
}

async fn expired_lock_is_taken_over_and_stale_owner_is_fenced(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let t0 = now_ms() - Duration::seconds(60);
    let first = order_at("o_alice", &[(&tea, 1)], t0);
    // The first request's invocation deadline passed 30 s ago: it crashed mid-way.
    let c = NewIdempotencyClaim::new(
        scope("o_alice", "k-1"),
        "hash-a",
        "owner-1",
        t0,
        t0 + Duration::seconds(30),
    );
    ctx.store.create_order(&c, &first).await.unwrap();

    let now = now_ms();
    let retry = order("o_alice", &[(&tea, 1)]);
    let c2 = claim_at("o_alice", "k-1", "hash-a", "owner-2", now);
    let CreateOrderOutcome::IdempotencyConflict(existing) =
        ctx.store.create_order(&c2, &retry).await.unwrap()
    else {
        panic!("expected a conflict");
    };
    let Decision::TakeOver { out_trade_no } = decide(&existing, "hash-a", now) else {
        panic!("expected take-over");
    };
    assert_eq!(out_trade_no, first.out_trade_no, "resume the same order");

    let lock = now + Duration::seconds(30);
    let (out, calls) = ctx
        .counter
        .measure(
            ctx.store
                .take_over_idempotency(&c.scope, "hash-a", "owner-2", lock, now),
        )
        .await;
    assert_eq!(calls.total_calls(), 1);
    let TakeOverOutcome::Claimed(taken) = out.unwrap() else {
        panic!("expected claimed");
    };
    assert_eq!(taken.owner, "owner-2");
    assert_eq!(taken.locked_until, lock);
    assert_eq!(taken.out_trade_no, first.out_trade_no);
    assert_eq!(taken.state, IdempotencyState::InProgress);

    // A second taker loses: the lock is live again.
    let TakeOverOutcome::Conflict(seen) = ctx
        .store
        .take_over_idempotency(&c.scope, "hash-a", "owner-3", lock, now)
        .await
        .unwrap()
    else {
        panic!("expected conflict");
    };
    assert_eq!(seen.owner, "owner-2");

    // The late first owner can neither complete nor release the new owner's record.
    let stale = StoredResponse {
        status_code: 201,
        body: "stale".into(),
    };
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.complete_idempotency(&c.scope, "owner-1", &stale))
        .await;
    assert_eq!(calls.total_calls(), 1);
    assert!(
        matches!(out.unwrap(), FencedOutcome::NotOwner(Some(r)) if r.owner == "owner-2" && r.state == IdempotencyState::InProgress)
    );
    assert!(matches!(
        ctx.store
            .release_idempotency(&c.scope, "owner-1")
            .await
            .unwrap(),
        FencedOutcome::NotOwner(Some(_))
    ));

    let fresh = StoredResponse {
        status_code: 201,
        body: "fresh".into(),
    };
    assert_eq!(
        ctx.store
            .complete_idempotency(&c.scope, "owner-2", &fresh)
            .await
            .unwrap(),
        FencedOutcome::Applied
    );
    let record = ctx.store.get_idempotency(&c.scope).await.unwrap().unwrap();
    assert_eq!(record.state, IdempotencyState::Completed(fresh));
    // The crash did not cost stock twice.
    assert_eq!(stock(&ctx, &tea).await, (1, 0, Some(9)));
    assert_eq!(order_of(&ctx, &retry).await, None);
}

async fn take_over_refused_while_locked_reused_or_missing(ctx: StoreCtx) {
    let tea = product("tea", 990, None);
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let now = now_ms();
    let live = claim_at("o_alice", "live", "hash-a", "owner-1", now);
    ctx.store
        .create_order(&live, &order("o_alice", &[(&tea, 1)]))
        .await
        .unwrap();
    let TakeOverOutcome::Conflict(r) = ctx
        .store
        .take_over_idempotency(
            &live.scope,
            "hash-a",
            "thief",
            now + Duration::seconds(60),
            now,
        )
        .await
        .unwrap()
    else {
        panic!("a live lock must not be taken over");
    };
    assert_eq!(r.owner, "owner-1");

    let t0 = now - Duration::seconds(60);
    let dead = NewIdempotencyClaim::new(scope("o_alice", "dead"), "hash-a", "owner-1", t0, t0);
    ctx.store
        .create_order(&dead, &order_at("o_alice", &[(&tea, 1)], t0))
        .await
        .unwrap();
    let TakeOverOutcome::Conflict(r) = ctx
        .store
        .take_over_idempotency(
            &dead.scope,
            "hash-b",
            "thief",
            now + Duration::seconds(60),
            now,
        )
        .await
        .unwrap()
    else {
        panic!("another body must not take over");
    };
    assert_eq!(r.owner, "owner-1");
    assert_eq!(decide(&r, "hash-b", now), Decision::Reused);

    assert_eq!(
        ctx.store
            .take_over_idempotency(
                &scope("o_alice", "never-used"),
                "hash-a",
                "x",
                now + Duration::seconds(60),
                now
            )
            .await
            .unwrap(),
        TakeOverOutcome::Missing
    );
    // A take-over never creates a record.
    assert_eq!(
        ctx.store
            .get_idempotency(&scope("o_alice", "never-used"))
            .await
            .unwrap(),
        None
    );
}

async fn release_only_by_owner_and_only_in_progress(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let c = claim("o_alice", "k-1", "hash-a");
    ctx.store
        .create_order(&c, &order("o_alice", &[(&tea, 1)]))
        .await
        .unwrap();
    assert!(matches!(
        ctx.store.release_idempotency(&c.scope, "intruder").await.unwrap(),
        FencedOutcome::NotOwner(Some(r)) if r.owner == "owner-1"
    ));
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.release_idempotency(&c.scope, "owner-1"))
        .await;
    assert_eq!(out.unwrap(), FencedOutcome::Applied);
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(ctx.store.get_idempotency(&c.scope).await.unwrap(), None);
    // Released twice: nothing there.
    assert_eq!(
        ctx.store
            .release_idempotency(&c.scope, "owner-1")
            .await
            .unwrap(),
        FencedOutcome::NotOwner(None)
    );
    // Completing a missing record does not create one.
    let resp = StoredResponse {
        status_code: 201,
        body: "{}".into(),
    };
    assert_eq!(
        ctx.store
            .complete_idempotency(&c.scope, "owner-1", &resp)
            .await
            .unwrap(),
        FencedOutcome::NotOwner(None)
    );
    assert_eq!(ctx.store.get_idempotency(&c.scope).await.unwrap(), None);

    // A completed record is never released (it is what retries replay).
    let c2 = claim("o_alice", "k-2", "hash-a");
    ctx.store
        .create_order(&c2, &order("o_alice", &[(&tea, 1)]))
        .await
        .unwrap();
    ctx.store
        .complete_idempotency(&c2.scope, "owner-1", &resp)
        .await
        .unwrap();
    assert!(matches!(
        ctx.store.release_idempotency(&c2.scope, "owner-1").await.unwrap(),
        FencedOutcome::NotOwner(Some(r)) if matches!(r.state, IdempotencyState::Completed(_))
    ));
}

async fn out_of_stock_writes_nothing(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    let rare = product("rare", 5000, Some(1));
    seed(&ctx, &[tea.clone(), rare.clone()]).await;
    let o = order("o_alice", &[(&tea, 2), (&rare, 2)]);
    let c = claim("o_alice", "k-1", "hash-a");
    let (out, calls) = ctx.counter.measure(ctx.store.create_order(&c, &o)).await;
    assert_eq!(
        out.unwrap(),
        CreateOrderOutcome::OutOfStock {
            sku_id: rare.sku_id.clone()
        }
    );
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(5)));
    assert_eq!(stock(&ctx, &rare).await, (0, 0, Some(1)));
    assert_eq!(order_of(&ctx, &o).await, None);
    assert_eq!(ctx.store.get_idempotency(&c.scope).await.unwrap(), None);

    // Exactly the last unit is available; then none.
    let last = order("o_alice", &[(&rare, 1)]);
    assert_eq!(
        ctx.store.create_order(&c, &last).await.unwrap(),
        CreateOrderOutcome::Created
    );
    assert_eq!(stock(&ctx, &rare).await, (1, 0, Some(0)));
    let more = order("o_alice", &[(&rare, 1)]);
    assert_eq!(
        ctx.store
            .create_order(&claim("o_alice", "k-2", "h"), &more)
            .await
            .unwrap(),
        CreateOrderOutcome::OutOfStock {
            sku_id: rare.sku_id.clone()
        }
    );
    assert_eq!(stock(&ctx, &rare).await, (1, 0, Some(0)));
}

async fn unknown_or_inactive_sku_writes_nothing(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    let mut retired = product("retired", 100, None);
    retired.active = false;
    seed(&ctx, &[tea.clone(), retired.clone()]).await;
    let ghost = product("ghost", 100, None); // never seeded

    for bad in [&ghost, &retired] {
        let o = order("o_alice", &[(&tea, 1), (bad, 1)]);
        let c = claim("o_alice", &format!("k-{}", bad.sku_id), "h");
        assert_eq!(
            ctx.store.create_order(&c, &o).await.unwrap(),
            CreateOrderOutcome::UnknownSku {
                sku_id: bad.sku_id.clone()
            }
        );
        assert_eq!(order_of(&ctx, &o).await, None);
        assert_eq!(ctx.store.get_idempotency(&c.scope).await.unwrap(), None);
    }
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(5)));
    assert_eq!(stock(&ctx, &retired).await, (0, 0, None));
    // The update did not conjure up a product item.
    assert_eq!(ctx.store.get_product(&ghost.sku_id).await.unwrap(), None);
}

async fn duplicate_out_trade_no_is_refused(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    let again = claim("o_alice", "other-key", "h");
    let out = ctx.store.create_order(&again, &o).await.unwrap();
    assert_eq!(
        out,
        CreateOrderOutcome::DuplicateOutTradeNo(Box::new(o.clone()))
    );
    assert_eq!(ctx.store.get_idempotency(&again.scope).await.unwrap(), None);
    assert_eq!(stock(&ctx, &tea).await, (1, 0, Some(4)));
}

async fn invalid_orders_are_refused_before_writing(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let twice = order("o_alice", &[(&tea, 1), (&tea, 1)]);
    let empty = order("o_alice", &[]);
    let bobs = order("o_bob", &[(&tea, 1)]);
    for (o, c) in [
        (&twice, claim("o_alice", "k-1", "h")),
        (&empty, claim("o_alice", "k-2", "h")),
        (&bobs, claim("o_alice", "k-3", "h")),
    ] {
        let (out, calls) = ctx.counter.measure(ctx.store.create_order(&c, o)).await;
        assert!(matches!(out, Err(StoreError::Invalid(_))), "{out:?}");
        assert_eq!(calls.total_calls(), 0);
    }
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(5)));
}

// ---- prepay, payment, close ----------------------------------------------------------------

async fn prepay_recorded_only_while_pending(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    let (out, calls) = ctx
        .counter
        .measure(
            ctx.store
                .record_prepay(&o.out_trade_no, "wx201410272009395522657a690389285100"),
        )
        .await;
    assert_eq!(calls.total_calls(), 1);
    let PrepayOutcome::Recorded(updated) = out.unwrap() else {
        panic!("expected recorded");
    };
    assert_eq!(
        updated.prepay_id.as_deref(),
        Some("wx201410272009395522657a690389285100")
    );
    assert_eq!(updated.version, o.version + 1);
    assert_eq!(order_of(&ctx, &o).await.as_ref(), Some(&*updated));

    let CloseOutcome::Closed(_) = ctx
        .store
        .close(&updated, "expired", now_ms())
        .await
        .unwrap()
    else {
        panic!("expected closed");
    };
    let PrepayOutcome::NotPending(current) = ctx
        .store
        .record_prepay(&o.out_trade_no, "wx-late")
        .await
        .unwrap()
    else {
        panic!("expected not pending");
    };
    assert_eq!(current.status, OrderStatus::Closed);
    assert_eq!(
        current.prepay_id.as_deref(),
        Some("wx201410272009395522657a690389285100")
    );

    let ghost = order("o_alice", &[(&tea, 1)]);
    assert_eq!(
        ctx.store
            .record_prepay(&ghost.out_trade_no, "wx")
            .await
            .unwrap(),
        PrepayOutcome::NotFound
    );
    assert_eq!(order_of(&ctx, &ghost).await, None, "no item conjured up");
}

async fn complete_order_records_prepay_and_response_together(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let response = StoredResponse {
        status_code: 201,
        body: "{}".into(),
    };

    let o = order("o_alice", &[(&tea, 1)]);
    let c = claim("o_alice", "k-1", "h");
    ctx.store.create_order(&c, &o).await.unwrap();
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.complete_order(
            &c.scope,
            "owner-1",
            &o.out_trade_no,
            "wx-1",
            Some("08F2B8C0E4A1"),
            &response,
        ))
        .await;
    assert_eq!(out.unwrap(), CompleteOrderOutcome::Completed);
    assert_eq!(calls.total_calls(), 1);
    let stored = order_of(&ctx, &o).await.unwrap();
    assert_eq!(
        (stored.prepay_id.as_deref(), stored.version),
        (Some("wx-1"), o.version + 1)
    );
    let record = ctx.store.get_idempotency(&c.scope).await.unwrap().unwrap();
    assert_eq!(record.state, IdempotencyState::Completed(response.clone()));
    // WeChat Pay's Request-ID of the prepay answer is kept with the order (issue 12.9).
    let raw = raw_order(&ctx, &o).await;
    assert_eq!(raw["prepay_request_id"].as_s().unwrap(), "08F2B8C0E4A1");

    // Taken over meanwhile: the late owner writes neither half.
    let t0 = now_ms() - Duration::seconds(60);
    let o2 = order_at("o_alice", &[(&tea, 1)], t0);
    let c2 = NewIdempotencyClaim::new(scope("o_alice", "k-2"), "h", "owner-1", t0, t0);
    ctx.store.create_order(&c2, &o2).await.unwrap();
    let now = now_ms();
    ctx.store
        .take_over_idempotency(&c2.scope, "h", "owner-2", now + Duration::seconds(30), now)
        .await
        .unwrap();
    assert_eq!(
        ctx.store
            .complete_order(
                &c2.scope,
                "owner-1",
                &o2.out_trade_no,
                "wx-late",
                None,
                &response
            )
            .await
            .unwrap(),
        CompleteOrderOutcome::NotOwner
    );
    assert_eq!(order_of(&ctx, &o2).await.unwrap().prepay_id, None);
    let record = ctx.store.get_idempotency(&c2.scope).await.unwrap().unwrap();
    assert_eq!(
        (record.owner.as_str(), &record.state),
        ("owner-2", &IdempotencyState::InProgress)
    );

    // The order left PENDING: the record is not completed either.
    let o3 = order("o_alice", &[(&tea, 1)]);
    let c3 = claim("o_alice", "k-3", "h");
    ctx.store.create_order(&c3, &o3).await.unwrap();
    ctx.store.close(&o3, "expired", now_ms()).await.unwrap();
    assert_eq!(
        ctx.store
            .complete_order(
                &c3.scope,
                "owner-1",
                &o3.out_trade_no,
                "wx-3",
                None,
                &response
            )
            .await
            .unwrap(),
        CompleteOrderOutcome::OrderNotPending(OrderStatus::Closed)
    );
    let record = ctx.store.get_idempotency(&c3.scope).await.unwrap().unwrap();
    assert_eq!(record.state, IdempotencyState::InProgress);

    let ghost = order("o_alice", &[(&tea, 1)]);
    assert_eq!(
        ctx.store
            .complete_order(
                &c3.scope,
                "owner-1",
                &ghost.out_trade_no,
                "wx-g",
                None,
                &response
            )
            .await
            .unwrap(),
        CompleteOrderOutcome::OrderNotFound
    );
    assert_eq!(order_of(&ctx, &ghost).await, None);
}

async fn mark_paid_applies_once_and_moves_stock(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    let cup = product("cup", 150, None);
    seed(&ctx, &[tea.clone(), cup.clone()]).await;
    let o = order("o_alice", &[(&tea, 3), (&cup, 1)]);
    place(&ctx, &o).await;
    let pay = payment(&o, "4200000001");
    let now = now_ms();

    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&o, &pay, now))
        .await;
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    assert_eq!(calls.calls_of("TransactWriteItems"), 1);
    let MarkPaidOutcome::Applied(paid) = out.unwrap() else {
        panic!("expected applied");
    };
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(paid.transaction_id.as_deref(), Some("4200000001"));
    assert_eq!(paid.paid_at, Some(pay.success_time));
    assert_eq!(paid.version, o.version + 1);
    assert_eq!(paid.history.len(), 2);
    let last = paid.history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.at),
        (Some(OrderStatus::Pending), OrderStatus::Paid, now)
    );
    assert_eq!(
        order_of(&ctx, &o).await.as_ref(),
        Some(&*paid),
        "what was stored"
    );
    assert!(!has_attr(&ctx, &o, "gsi2pk").await && !has_attr(&ctx, &o, "gsi2sk").await);
    assert!(has_attr(&ctx, &o, "gsi1pk").await);
    assert_eq!(
        ctx.store.get_payment("4200000001").await.unwrap(),
        Some(pay.clone())
    );
    // PAID touched no product item (DESIGN 5): the units stay reserved (and unavailable)
    // until `order.paid` is projected, which counts them sold once, however often it runs.
    assert_eq!(stock(&ctx, &tea).await, (3, 0, Some(7)));
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 3, Some(7)));
    assert_eq!(stock(&ctx, &cup).await, (0, 1, None));
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 3, Some(7)));

    // The duplicate notification: one call, the current order, nothing moved twice.
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&o, &pay, now_ms()))
        .await;
    assert_eq!(calls.total_calls(), 1, "the loser reads nothing");
    assert_eq!(out.unwrap(), MarkPaidOutcome::AlreadyPaid(paid.clone()));
    assert_eq!(stock(&ctx, &tea).await, (0, 3, Some(7)));
    // From a fresh read too.
    assert_eq!(
        ctx.store.mark_paid(&paid, &pay, now_ms()).await.unwrap(),
        MarkPaidOutcome::AlreadyPaid(paid.clone())
    );
}

async fn second_transaction_on_a_paid_order_is_already_paid(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    ctx.store
        .mark_paid(&o, &payment(&o, "txn-A"), now_ms())
        .await
        .unwrap();
    let MarkPaidOutcome::AlreadyPaid(current) = ctx
        .store
        .mark_paid(&o, &payment(&o, "txn-B"), now_ms())
        .await
        .unwrap()
    else {
        panic!("expected already paid");
    };
    // The caller tells a double payment by the differing transaction_id.
    assert_eq!(current.transaction_id.as_deref(), Some("txn-A"));
    assert_eq!(
        ctx.store.get_payment("txn-B").await.unwrap(),
        None,
        "rolled back"
    );
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 1, Some(9)));
}

async fn paid_after_close_is_reported_closed(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 2)]);
    place(&ctx, &o).await;
    let CloseOutcome::Closed(closed) = ctx.store.close(&o, "expired", now_ms()).await.unwrap()
    else {
        panic!("expected closed");
    };
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&o, &payment(&o, "txn-late"), now_ms()))
        .await;
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(out.unwrap(), MarkPaidOutcome::Closed(closed));
    assert_eq!(ctx.store.get_payment("txn-late").await.unwrap(), None);
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(10)));
}

async fn amount_mismatch_changes_nothing(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 2)]);
    place(&ctx, &o).await;
    let mut pay = payment(&o, "txn-1");
    pay.amount = fen(1);
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&o, &pay, now_ms()))
        .await;
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(
        out.unwrap(),
        MarkPaidOutcome::AmountMismatch(Box::new(o.clone()))
    );
    assert_eq!(order_of(&ctx, &o).await, Some(o.clone()));
    assert_eq!(ctx.store.get_payment("txn-1").await.unwrap(), None);
    assert_eq!(stock(&ctx, &tea).await, (2, 0, Some(8)));
}

/// Issue 12.3: a payment of another amount takes the order out of PENDING (out of the
/// sweeper's index) into AMOUNT_MISMATCH, with its payment and anomaly in one transaction,
/// its stock still reserved; once.
async fn amount_mismatch_is_held_once_with_its_payment_and_anomaly(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 2)]);
    place(&ctx, &o).await;
    let mut pay = payment(&o, "txn-1");
    pay.amount = fen(1);
    pay.payer_total = fen(1);
    let anomaly = Anomaly::of_payment(&pay, AnomalyKind::AmountMismatch, "paid 1 fen");
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.hold_amount_mismatch(&o, &pay, &anomaly, now_ms()))
        .await;
    assert_eq!(calls.total_calls(), 1);
    let MarkPaidOutcome::Applied(held) = out.unwrap() else {
        panic!("not held");
    };
    assert_eq!(held.status, OrderStatus::AmountMismatch);
    assert_eq!(held.transaction_id.as_deref(), Some("txn-1"));
    assert_eq!(held.version, o.version + 1);
    assert_eq!(order_of(&ctx, &o).await.as_ref(), Some(&*held));
    assert!(
        !has_attr(&ctx, &o, "gsi2pk").await,
        "left the sweeper's index"
    );
    assert_eq!(
        ctx.store.get_payment("txn-1").await.unwrap(),
        Some(pay.clone())
    );
    assert_eq!(
        ctx.store.list_anomalies(&o.out_trade_no).await.unwrap(),
        vec![anomaly.clone()]
    );
    assert_eq!(stock(&ctx, &tea).await, (2, 0, Some(8)), "still reserved");

    // Again, from the stale read: the held order, nothing written twice.
    assert_eq!(
        ctx.store
            .hold_amount_mismatch(&o, &pay, &anomaly, now_ms())
            .await
            .unwrap(),
        MarkPaidOutcome::AlreadyPaid(held.clone())
    );
    // The order's own amount afterwards cannot make it PAID, nor can it be closed.
    assert_eq!(
        ctx.store
            .mark_paid(&o, &payment(&o, "txn-2"), now_ms())
            .await
            .unwrap(),
        MarkPaidOutcome::AlreadyPaid(held.clone())
    );
    assert_eq!(
        ctx.store.close(&o, "expired", now_ms()).await.unwrap(),
        CloseOutcome::NotPending(held.clone())
    );
    assert_eq!(
        ctx.store
            .list_anomalies(&o.out_trade_no)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(stock(&ctx, &tea).await, (2, 0, Some(8)));
}

/// Issue 12.2: a product deleted (or deactivated) after the order was placed never keeps a
/// payment from being applied or an order from closing; the history says what was skipped.
async fn a_deleted_product_never_blocks_payment_or_close(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    let cup = product("cup", 100, Some(5));
    seed(&ctx, &[tea.clone(), cup.clone()]).await;
    let paid_one = order("o_alice", &[(&tea, 1), (&cup, 1)]);
    let closed_one = order("o_alice", &[(&cup, 2), (&tea, 1)]);
    place(&ctx, &paid_one).await;
    place(&ctx, &closed_one).await;
    ctx.client()
        .delete_item()
        .table_name(&ctx.table)
        .key("pk", AttributeValue::S("PRODUCT#cup".into()))
        .key("sk", AttributeValue::S("PRODUCT".into()))
        .send()
        .await
        .unwrap();
    let MarkPaidOutcome::Applied(paid) = ctx
        .store
        .mark_paid(&paid_one, &payment(&paid_one, "txn-1"), now_ms())
        .await
        .unwrap()
    else {
        panic!("payment refused");
    };
    assert_eq!(order_of(&ctx, &paid_one).await.as_ref(), Some(&*paid));
    // PAID touches no product item; projecting its event skips the deleted one.
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (1, 1, Some(8)));

    // Deactivated is not deleted: its stock still comes back.
    let mut inactive = ctx.store.get_product(&tea.sku_id).await.unwrap().unwrap();
    inactive.active = false;
    seed(&ctx, &[inactive]).await;
    let CloseOutcome::Closed(closed) = ctx
        .store
        .close(&closed_one, "expired", now_ms())
        .await
        .unwrap()
    else {
        panic!("close refused");
    };
    assert_eq!(closed.status, OrderStatus::Closed);
    assert_eq!(order_of(&ctx, &closed_one).await.as_ref(), Some(&*closed));
    assert_eq!(stock(&ctx, &tea).await, (0, 1, Some(9)));
    assert_eq!(
        ctx.store.get_product(&cup.sku_id).await.unwrap(),
        None,
        "not recreated"
    );
}

async fn transaction_id_of_another_order_is_payment_exists(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let first = order("o_alice", &[(&tea, 1)]);
    let second = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &first).await;
    place(&ctx, &second).await;
    ctx.store
        .mark_paid(&first, &payment(&first, "txn-1"), now_ms())
        .await
        .unwrap();
    let mut pay = payment(&second, "txn-1");
    pay.amount = second.amount_total;
    assert_eq!(
        ctx.store.mark_paid(&second, &pay, now_ms()).await.unwrap(),
        MarkPaidOutcome::PaymentExists {
            out_trade_no: first.out_trade_no.clone()
        }
    );
    assert_eq!(order_of(&ctx, &second).await, Some(second.clone()));
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (1, 1, Some(8)));
}

async fn mark_paid_of_a_missing_order_is_not_found(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let ghost = order("o_alice", &[(&tea, 1)]);
    let (out, calls) = ctx
        .counter
        .measure(
            ctx.store
                .mark_paid(&ghost, &payment(&ghost, "txn-g"), now_ms()),
        )
        .await;
    assert_eq!(out.unwrap(), MarkPaidOutcome::NotFound);
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(order_of(&ctx, &ghost).await, None);
    assert_eq!(ctx.store.get_payment("txn-g").await.unwrap(), None);
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(10)));
    assert_eq!(
        ctx.store.close(&ghost, "expired", now_ms()).await.unwrap(),
        CloseOutcome::NotFound
    );
    assert_eq!(order_of(&ctx, &ghost).await, None);
}

async fn mark_paid_from_a_stale_read_still_applies(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    // The prepay_id lands after the caller read the order (version moved on).
    ctx.store
        .record_prepay(&o.out_trade_no, "wx-1")
        .await
        .unwrap();
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&o, &payment(&o, "txn-1"), now_ms()))
        .await;
    let MarkPaidOutcome::Applied(paid) = out.unwrap() else {
        panic!("expected applied");
    };
    // One refused attempt whose ALL_OLD item rebuilds the transition, no read.
    assert_eq!(calls.calls_of("TransactWriteItems"), 2);
    assert_eq!(calls.total_calls(), 2);
    assert_eq!(paid.prepay_id.as_deref(), Some("wx-1"));
    assert_eq!(paid.version, o.version + 2);
    assert_eq!(order_of(&ctx, &o).await.as_ref(), Some(&*paid));
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 1, Some(9)));
    // Same for close from a stale read.
    let o2 = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o2).await;
    ctx.store
        .record_prepay(&o2.out_trade_no, "wx-2")
        .await
        .unwrap();
    let CloseOutcome::Closed(closed) = ctx.store.close(&o2, "expired", now_ms()).await.unwrap()
    else {
        panic!("expected closed");
    };
    assert_eq!(order_of(&ctx, &o2).await.as_ref(), Some(&*closed));
    assert_eq!(stock(&ctx, &tea).await, (0, 1, Some(9)));
}

async fn sync_claims_once_per_interval_for_the_owner_only(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    let alice = openid("o_alice");
    let interval = Duration::seconds(5);
    let t0 = now_ms();

    let (out, calls) = ctx
        .counter
        .measure(
            ctx.store
                .claim_sync(&o.out_trade_no, Some(&alice), t0, interval),
        )
        .await;
    assert_eq!(calls.total_calls(), 1);
    let SyncClaim::Claimed(claimed) = out.unwrap() else {
        panic!("expected claimed");
    };
    assert_eq!(claimed.last_synced_at, Some(t0));
    // Not a state change: the version a transition insists on is untouched.
    assert_eq!(claimed.version, o.version);
    assert_eq!(order_of(&ctx, &o).await.as_ref(), Some(&*claimed));

    // Within the interval: refused, with the order as it stands, nothing written.
    let inside = t0 + Duration::seconds(4);
    let out = ctx
        .store
        .claim_sync(&o.out_trade_no, Some(&alice), inside, interval)
        .await
        .unwrap();
    assert_eq!(out, SyncClaim::Refused(claimed.clone()));
    // Another user never claims, whatever the time; the sweeper (no owner) may.
    let later = t0 + Duration::seconds(6);
    let out = ctx
        .store
        .claim_sync(&o.out_trade_no, Some(&openid("o_mallory")), later, interval)
        .await
        .unwrap();
    assert_eq!(out, SyncClaim::Refused(claimed.clone()));
    let SyncClaim::Claimed(again) = ctx
        .store
        .claim_sync(&o.out_trade_no, None, later, interval)
        .await
        .unwrap()
    else {
        panic!("expected claimed after the interval");
    };
    assert_eq!(again.last_synced_at, Some(later));

    // A transition prepared from the read before the claims still applies.
    let MarkPaidOutcome::Applied(paid) = ctx
        .store
        .mark_paid(&o, &payment(&o, "txn-sync"), now_ms())
        .await
        .unwrap()
    else {
        panic!("expected applied");
    };
    // Settled orders are never claimed.
    let far = later + Duration::minutes(10);
    let SyncClaim::Refused(seen) = ctx
        .store
        .claim_sync(&o.out_trade_no, None, far, interval)
        .await
        .unwrap()
    else {
        panic!("expected refused");
    };
    assert_eq!(seen.status, OrderStatus::Paid);
    // mark_paid answered from the caller's read, which predates the claims.
    assert_eq!(seen.last_synced_at, Some(later));
    assert_eq!(
        shared::domain::Order {
            last_synced_at: None,
            ..*seen
        },
        *paid
    );

    // An unknown out_trade_no is NotFound and creates no item.
    let ghost = order("o_alice", &[(&tea, 1)]);
    assert_eq!(
        ctx.store
            .claim_sync(&ghost.out_trade_no, None, far, interval)
            .await
            .unwrap(),
        SyncClaim::NotFound
    );
    assert_eq!(order_of(&ctx, &ghost).await, None);
}

async fn close_returns_stock_once(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    let cup = product("cup", 150, None);
    seed(&ctx, &[tea.clone(), cup.clone()]).await;
    let o = order("o_alice", &[(&tea, 4), (&cup, 2)]);
    place(&ctx, &o).await;
    assert_eq!(stock(&ctx, &tea).await, (4, 0, Some(6)));
    let now = now_ms();
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.close(&o, "expired, closed at WeChat Pay", now))
        .await;
    assert_eq!(calls.total_calls(), 1);
    let CloseOutcome::Closed(closed) = out.unwrap() else {
        panic!("expected closed");
    };
    assert_eq!(closed.status, OrderStatus::Closed);
    assert_eq!(closed.version, o.version + 1);
    let last = closed.history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.at, last.cause.as_str()),
        (
            Some(OrderStatus::Pending),
            OrderStatus::Closed,
            now,
            "expired, closed at WeChat Pay"
        )
    );
    assert_eq!(order_of(&ctx, &o).await.as_ref(), Some(&*closed));
    assert!(!has_attr(&ctx, &o, "gsi2pk").await);
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(10)));
    assert_eq!(stock(&ctx, &cup).await, (0, 0, None));

    let (out, calls) = ctx
        .counter
        .measure(ctx.store.close(&o, "again", now_ms()))
        .await;
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(out.unwrap(), CloseOutcome::NotPending(closed));
    assert_eq!(stock(&ctx, &tea).await, (0, 0, Some(10)), "released once");

    // A paid order cannot be closed; its sold stock stays sold.
    let p = order("o_alice", &[(&tea, 2)]);
    place(&ctx, &p).await;
    let MarkPaidOutcome::Applied(paid) = ctx
        .store
        .mark_paid(&p, &payment(&p, "txn-p"), now_ms())
        .await
        .unwrap()
    else {
        panic!("expected applied");
    };
    assert_eq!(
        ctx.store.close(&p, "expired", now_ms()).await.unwrap(),
        CloseOutcome::NotPending(paid)
    );
    project_events(&ctx.store).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 2, Some(8)));
}

async fn anomalies_are_recorded_once_per_kind_and_cause(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    let o = order("o_alice", &[(&tea, 1)]);
    let at = now_ms();
    let pay = payment_at(&o, "txn-1", at);
    let a = Anomaly::of_payment(
        &pay,
        AnomalyKind::PaidAfterClose,
        "paid 990 fen after close",
    );
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.record_anomaly(&a, now_ms()))
        .await;
    assert_eq!(out.unwrap(), AnomalyOutcome::Recorded);
    assert_eq!(calls.total_calls(), 1);
    // The re-delivered notification records the same anomaly: no error, no second item.
    let redelivered = Anomaly {
        notification_id: Some("n-2".into()),
        ..a.clone()
    };
    assert_eq!(
        ctx.store
            .record_anomaly(&redelivered, now_ms())
            .await
            .unwrap(),
        AnomalyOutcome::AlreadyRecorded
    );
    // Another transaction with the same kind and the same success_time is another anomaly.
    let same_time = Anomaly::of_payment(
        &payment_at(&o, "txn-2", at),
        AnomalyKind::PaidAfterClose,
        "paid again",
    );
    assert_eq!(
        ctx.store
            .record_anomaly(&same_time, now_ms())
            .await
            .unwrap(),
        AnomalyOutcome::Recorded
    );
    // The same transaction under another kind is another anomaly too.
    let c = Anomaly::of_payment(&pay, AnomalyKind::AmountMismatch, "");
    ctx.store.record_anomaly(&c, now_ms()).await.unwrap();
    let listed = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    // Sorted by sort key: kind, then cause.
    assert_eq!(listed, vec![c, a, same_time]);
    let other = order("o_alice", &[(&tea, 1)]);
    assert!(
        ctx.store
            .list_anomalies(&other.out_trade_no)
            .await
            .unwrap()
            .is_empty()
    );
    let unknown = Anomaly::of_payment(
        &payment_at(&other, "txn-x", at),
        AnomalyKind::UnknownOrder,
        "no such order",
    );
    ctx.store.record_anomaly(&unknown, now_ms()).await.unwrap();
    assert_eq!(
        ctx.store.list_anomalies(&other.out_trade_no).await.unwrap(),
        vec![unknown]
    );
    // A notification that named no readable order is kept all the same, with its plaintext.
    let malformed = Anomaly {
        out_trade_no: None,
        kind: AnomalyKind::MalformedNotification,
        cause: "n-9".into(),
        at,
        transaction_id: None,
        notification_id: Some("n-9".into()),
        detail: "not JSON".into(),
        plaintext: Some("{not json".into()),
    };
    assert_eq!(
        ctx.store
            .record_anomaly(&malformed, now_ms())
            .await
            .unwrap(),
        AnomalyOutcome::Recorded
    );
    assert_eq!(
        ctx.store
            .record_anomaly(&malformed, now_ms())
            .await
            .unwrap(),
        AnomalyOutcome::AlreadyRecorded
    );
}

/// Issue 20: 20 distinct verified transactions for one order at once, mixed wrong amounts
/// and second payments, all with one success_time: one moves the order out of PENDING and
/// every other is kept as exactly one anomaly; each re-sent 5 times changes nothing. At
/// once on Dynoxide; one after another on moto, which loses acknowledged writes when
/// concurrent transactions roll back (its single-threaded semantics are what it checks).
async fn distinct_payments_racing_one_order_are_each_kept_once(ctx: StoreCtx) {
    use shared::service::{PaymentOutcome, apply_payment};
    let tea = product("tea", 990, Some(10));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 2)]);
    place(&ctx, &o).await;
    let deps = scripted_deps(&ctx, std::sync::Arc::new(Scripted::default()));
    let txns: Vec<_> = (0..20)
        .map(|i| {
            let mut t = txn(&o, "SUCCESS");
            t.transaction_id = Some(format!("42000000{i:02}"));
            if i % 3 == 1 {
                // a wrong amount
                if let Some(a) = t.amount.as_mut() {
                    a.total -= i;
                    a.payer_total = Some(a.total);
                }
            }
            t
        })
        .collect();
    let at_once = ctx.engine == Engine::Dynoxide;
    let send_all = async |round: usize| {
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::new();
        for t in &txns {
            let (deps, t, o) = (deps.clone(), t.clone(), o.clone());
            let task = async move {
                let n = format!("n-{}-{round}", t.transaction_id.clone().unwrap_or_default());
                let outcome = apply_payment(&deps, Some(o), &t, Some(&n)).await;
                (t.transaction_id.unwrap_or_default(), outcome)
            };
            if at_once {
                tasks.spawn(task);
            } else {
                done.push(task.await);
            }
        }
        done.extend(tasks.join_all().await);
        done
    };
    let first = send_all(0).await;
    let moved: Vec<_> = first
        .iter()
        .filter(|(_, out)| matches!(out, Ok(PaymentOutcome::Applied(_))))
        .map(|(t, _)| t.clone())
        .collect();
    for (t, out) in &first {
        assert!(out.is_ok(), "{t}: {out:?}");
    }
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_ne!(stored.status, OrderStatus::Pending, "{stored:?}");
    let winner = stored
        .transaction_id
        .clone()
        .expect("the winner's transaction");
    let anomalies = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    let mut causes: Vec<_> = anomalies.iter().map(|a| a.cause.clone()).collect();
    causes.sort();
    let distinct: HashSet<_> = causes.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        causes.len(),
        "one anomaly per transaction: {causes:?}"
    );
    let losers: HashSet<_> = txns
        .iter()
        .filter_map(|t| t.transaction_id.clone())
        .filter(|t| *t != winner)
        .collect();
    assert!(
        losers.is_subset(&distinct),
        "every losing payment kept: {causes:?}"
    );
    if stored.status == OrderStatus::Paid {
        assert_eq!(moved, vec![winner.clone()]);
        assert_eq!(anomalies.len(), 19, "{anomalies:?}");
    } else {
        // A wrong amount won: the order is held for the merchant, and that payment is an
        // anomaly too.
        assert_eq!(anomalies.len(), 20, "{anomalies:?}");
    }
    let before = anomalies.len();
    for round in 1..=5 {
        for (t, out) in send_all(round).await {
            assert!(
                !matches!(out, Ok(PaymentOutcome::Applied(_))) && out.is_ok(),
                "re-sent {t}: {out:?}"
            );
        }
    }
    assert_eq!(
        ctx.store
            .list_anomalies(&o.out_trade_no)
            .await
            .unwrap()
            .len(),
        before
    );
    let after = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        after.version, stored.version,
        "re-sent payments changed nothing"
    );
}

// ---- listings ------------------------------------------------------------------------------

async fn list_orders_pages_newest_first(ctx: StoreCtx) {
    let tea = product("tea", 990, None);
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let t0 = now_ms() - Duration::hours(1);
    let mut mine = Vec::new();
    for i in 0..45 {
        let o = order_at("o_alice", &[(&tea, 1)], t0 + Duration::seconds(i));
        place(&ctx, &o).await;
        mine.push(o);
    }
    for i in 0..3 {
        place(
            &ctx,
            &order_at("o_bob", &[(&tea, 1)], t0 + Duration::seconds(i)),
        )
        .await;
    }

    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut pages = 0;
    loop {
        let (page, calls) = ctx
            .counter
            .measure(
                ctx.store
                    .list_orders(&openid("o_alice"), 10, cursor.as_ref()),
            )
            .await;
        let page = page.unwrap();
        assert_eq!(calls.total_calls(), 1, "one Query per page");
        assert!(page.items.len() <= 10);
        pages += 1;
        seen.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert!((5..=6).contains(&pages), "{pages} pages");
    mine.reverse();
    assert_eq!(seen, mine, "all 45, newest first, each once");
    assert!(seen.iter().all(|o| o.openid.as_str() == "o_alice"));

    let first = ctx
        .store
        .list_orders(&openid("o_bob"), 2, None)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let next = first.next.expect("more of bob's orders");
    let rest = ctx
        .store
        .list_orders(&openid("o_bob"), 2, Some(&next))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    // Bob's cursor does not resume Alice's listing.
    assert!(matches!(
        ctx.store
            .list_orders(&openid("o_alice"), 2, Some(&next))
            .await,
        Err(StoreError::BadCursor(_))
    ));
    assert!(
        ctx.store
            .list_orders(&openid("o_nobody"), 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn due_pending_pages_oldest_first_and_is_sparse(ctx: StoreCtx) {
    let store = ctx.store.clone().with_shards(3);
    let tea = product("tea", 990, None);
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let now = now_ms();
    // 45 orders a minute apart: the first 30 have expired, the last 15 are not yet due.
    let mut due = Vec::new();
    for i in 0..45i64 {
        let created = now - Duration::seconds(59 * 60 + 30) + Duration::minutes(i);
        let o = order_at("o_alice", &[(&tea, 1)], created);
        let out = store.create_order(&fresh_claim(&o), &o).await.unwrap();
        assert_eq!(out, CreateOrderOutcome::Created);
        if o.expire_at <= now {
            due.push(o);
        }
    }
    assert_eq!(due.len(), 30, "fixture: expiries straddle now");

    let sweep = |store: shared::store::DynamoStore| async move {
        let mut found = Vec::new();
        for shard in 0..3 {
            let mut cursor: Option<Cursor> = None;
            let mut shard_orders = Vec::new();
            loop {
                let page = store
                    .due_pending(shard, now, 7, cursor.as_ref())
                    .await
                    .unwrap();
                assert!(page.items.len() <= 7);
                shard_orders.extend(page.items);
                match page.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            // Oldest first within a shard.
            assert!(
                shard_orders
                    .windows(2)
                    .all(|w| w[0].expire_at <= w[1].expire_at)
            );
            assert!(
                shard_orders
                    .iter()
                    .all(|o| o.out_trade_no.shard(3) == shard && o.expire_at <= now)
            );
            found.extend(shard_orders);
        }
        found
    };
    let found = sweep(store.clone()).await;
    let ids = |v: &[shared::domain::Order]| -> HashSet<String> {
        v.iter().map(|o| o.out_trade_no.to_string()).collect()
    };
    assert_eq!(found.len(), due.len());
    assert_eq!(ids(&found), ids(&due));

    // Leaving PENDING leaves the index: pay 5, close 5.
    for o in &due[..5] {
        assert!(matches!(
            store
                .mark_paid(o, &payment(o, &format!("txn-{}", o.out_trade_no)), now)
                .await
                .unwrap(),
            MarkPaidOutcome::Applied(_)
        ));
    }
    for o in &due[5..10] {
        assert!(matches!(
            store.close(o, "expired", now).await.unwrap(),
            CloseOutcome::Closed(_)
        ));
    }
    let found = sweep(store.clone()).await;
    assert_eq!(ids(&found), ids(&due[10..]));
    // A cursor from one shard does not resume another.
    let page = store.due_pending(0, now, 1, None).await.unwrap();
    if let Some(c) = page.next {
        assert!(matches!(
            store.due_pending(1, now, 1, Some(&c)).await,
            Err(StoreError::BadCursor(_))
        ));
    }
}

async fn tampered_cursors_are_bad_cursor(ctx: StoreCtx) {
    let tea = product("tea", 990, None);
    seed(&ctx, std::slice::from_ref(&tea)).await;
    for _ in 0..3 {
        place(&ctx, &order("o_alice", &[(&tea, 1)])).await;
    }
    let page = ctx
        .store
        .list_orders(&openid("o_alice"), 1, None)
        .await
        .unwrap();
    let good = page.next.expect("a next page");
    let mut flipped = good.as_str().to_owned();
    flipped.replace_range(0..1, if flipped.starts_with('A') { "B" } else { "A" });
    for bad in [
        "".to_owned(),
        "not base64 at all!".to_owned(),
        flipped,
        format!("{}x", good.as_str()),
        "eyJwayI6MX0".to_owned(), // {"pk":1}
    ] {
        let (out, calls) = ctx
            .counter
            .measure(
                ctx.store
                    .list_orders(&openid("o_alice"), 10, Some(&Cursor::new(bad.clone()))),
            )
            .await;
        assert!(
            matches!(out, Err(StoreError::BadCursor(_))),
            "{bad:?}: {out:?}"
        );
        assert!(!out.unwrap_err().retryable());
        assert_eq!(calls.total_calls(), 0, "refused before calling DynamoDB");
        assert!(matches!(
            ctx.store
                .due_pending(0, now_ms(), 10, Some(&Cursor::new(bad.clone())))
                .await,
            Err(StoreError::BadCursor(_))
        ));
    }
}

async fn malformed_items_are_errors(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(5));
    seed(&ctx, std::slice::from_ref(&tea)).await;
    let o = order("o_alice", &[(&tea, 1)]);
    place(&ctx, &o).await;
    // Someone edits the item by hand.
    ctx.client()
        .update_item()
        .table_name(&ctx.table)
        .key("pk", AttributeValue::S(format!("ORDER#{}", o.out_trade_no)))
        .key("sk", AttributeValue::S("ORDER".into()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S("DELIVERED".into()))
        .send()
        .await
        .unwrap();
    let err = ctx.store.get_order(&o.out_trade_no).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Malformed {
                entity: "order",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.retryable());
    // The listing reports it too, rather than skipping or panicking.
    assert!(matches!(
        ctx.store.list_orders(&openid("o_alice"), 10, None).await,
        Err(StoreError::Malformed { .. })
    ));
    // A losing transition whose ALL_OLD item is malformed is an error, not a panic.
    assert!(matches!(
        ctx.store
            .mark_paid(&o, &payment(&o, "txn-1"), now_ms())
            .await,
        Err(StoreError::Malformed { .. })
    ));
    ctx.client()
        .put_item()
        .table_name(&ctx.table)
        .item("pk", AttributeValue::S("PRODUCT#broken".into()))
        .item("sk", AttributeValue::S("PRODUCT".into()))
        .item("price", AttributeValue::S("cheap".into()))
        .send()
        .await
        .unwrap();
    assert!(matches!(
        ctx.store.get_products(&[sku("broken"), sku("tea")]).await,
        Err(StoreError::Malformed {
            entity: "product",
            ..
        })
    ));
}

// ---- engine-specific: the embedded engine and error mapping ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_file_storage_survives_restart() {
    use shared::store::ClientSettings;
    use shared::store::embedded::{Embedded, Storage};
    let dir = std::env::temp_dir().join(unique_table("embedded-file"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("orders.sqlite");
    let tea = product("tea", 990, Some(3));
    let o = order("o_alice", &[(&tea, 1)]);
    {
        let engine = Embedded::start(Storage::File(&path), "orders", &ClientSettings::local())
            .await
            .unwrap();
        assert!(engine.endpoint().starts_with("http://127.0.0.1:"));
        let store = shared::store::DynamoStore::new(engine.client().clone(), "orders");
        store
            .put_products(std::slice::from_ref(&tea))
            .await
            .unwrap();
        store.create_order(&fresh_claim(&o), &o).await.unwrap();
        engine.stop().await.unwrap();
    }
    // Started again on the same file: the table is found, not recreated, and data is kept.
    let engine = Embedded::start(Storage::File(&path), "orders", &ClientSettings::local())
        .await
        .unwrap();
    let store = shared::store::DynamoStore::new(engine.client().clone(), "orders");
    assert_eq!(store.get_order(&o.out_trade_no).await.unwrap(), Some(o));
    assert_eq!(
        store
            .get_product(&tea.sku_id)
            .await
            .unwrap()
            .unwrap()
            .reserved,
        1
    );
    engine.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_store_is_retryable_and_retried() {
    use shared::store::{
        CallCounter, ClientSettings, DynamoStore, connect_static, with_interceptor,
    };
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = ClientSettings {
        operation_timeout: std::time::Duration::from_secs(10),
        attempt_timeout: std::time::Duration::from_secs(2),
        connect_timeout: std::time::Duration::from_millis(500),
        max_attempts: 3,
    };
    let counter = CallCounter::new();
    let client = with_interceptor(
        &connect_static(&format!("http://127.0.0.1:{port}"), "us-east-1", &settings),
        counter.clone(),
    );
    let store = DynamoStore::new(client, "orders");
    let tea = product("tea", 990, None);
    let o = order("o_alice", &[(&tea, 1)]);
    let (out, calls) = counter.measure(store.get_order(&o.out_trade_no)).await;
    let err = out.unwrap_err();
    assert!(err.retryable(), "{err}");
    assert!(
        matches!(
            err,
            StoreError::Unreachable { .. } | StoreError::Timeout { .. }
        ),
        "{err}"
    );
    assert_eq!(calls.total_calls(), 1);
    assert_eq!(
        calls.total_attempts(),
        3,
        "the SDK retried within the budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_rejected_not_retryable() {
    let ctx = StoreCtx::dynoxide("missing_table").await;
    let store = shared::store::DynamoStore::new(ctx.client().clone(), "no-such-table");
    let tea = product("tea", 990, None);
    let o = order("o_alice", &[(&tea, 1)]);
    let err = store.get_order(&o.out_trade_no).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Rejected { code, .. } if code == "ResourceNotFoundException"),
        "{err}"
    );
    assert!(!err.retryable());
    let err = store.create_order(&fresh_claim(&o), &o).await.unwrap_err();
    assert!(!err.retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_ttl_sweep_deletes_expired_records_only() {
    use shared::store::embedded::Embedded;
    let engine = Embedded::memory("orders-ttl").await.unwrap();
    let store = shared::store::DynamoStore::new(engine.client().clone(), "orders-ttl");
    let tea = product("tea", 990, None);
    store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let long_ago = now_ms() - Duration::hours(25);
    let old = claim_at("o_alice", "old", "h", "owner-1", long_ago);
    let fresh = claim("o_alice", "fresh", "h");
    let old_order = order_at("o_alice", &[(&tea, 1)], long_ago);
    store.create_order(&old, &old_order).await.unwrap();
    store
        .create_order(&fresh, &order("o_alice", &[(&tea, 1)]))
        .await
        .unwrap();
    assert_eq!(engine.sweep_ttl().await.unwrap(), 1);
    assert_eq!(store.get_idempotency(&old.scope).await.unwrap(), None);
    assert!(store.get_idempotency(&fresh.scope).await.unwrap().is_some());
    // Orders carry no ttl: only the key record went.
    assert!(
        store
            .get_order(&old_order.out_trade_no)
            .await
            .unwrap()
            .is_some()
    );
}
