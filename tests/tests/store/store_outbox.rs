//! The outbox in the store, on both engines (DESIGN.md section 10, invariant 9): each
//! transition writes its event in its own transaction, once however often it is retried;
//! a dispatcher's claim fences its attempt; delivered and dead events leave the due index;
//! a redelivery brings one back with the same id.

use shared::domain::{Anomaly, AnomalyKind, DeliveryStatus, OutboxEvent};
use shared::domain::{OrderEvent, OrderStatus, PaidUnread};
use shared::store::{
    AnomalyOutcome, CloseOutcome, EventClaim, MarkPaidOutcome, PaidUnreadOutcome, Store,
    StoreSupport,
};
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
use wxpay_tests::*;

wxpay_tests::store_suite!(
    each_transition_writes_its_event_once,
    an_unread_paid_is_one_call_and_its_event_is_completed_once,
    a_claim_fences_its_attempt_and_delivery_leaves_the_index,
);

/// On Dynoxide only, like the other storms (`store_concurrency.rs`): moto does not make a
/// conditional write atomic against concurrent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_many_concurrent_claims_wins_on_dynoxide() {
    one_of_many_concurrent_claims_wins(StoreCtx::dynoxide("outbox_claims").await).await;
}

/// Every event item in the table, whatever its delivery state (a raw scan: the store has no
/// such listing, and the count is what the test is about).
pub async fn event_items(ctx: &StoreCtx) -> Vec<(String, String, String)> {
    let out = ctx
        .client()
        .scan()
        .table_name(&ctx.table)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", AttributeValue::S("EVENT#".into()))
        .send()
        .await
        .unwrap();
    let s = |item: &std::collections::HashMap<String, AttributeValue>, k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let mut found: Vec<_> = out
        .items()
        .iter()
        .map(|i| (s(i, "id"), s(i, "event_type"), s(i, "out_trade_no")))
        .collect();
    found.sort();
    found
}

/// Every due event, across the store's shards.
async fn due(ctx: &StoreCtx, now: time::OffsetDateTime) -> Vec<OutboxEvent> {
    let mut all = Vec::new();
    for shard in 0..4 {
        let mut cursor = None;
        loop {
            let page = ctx
                .store
                .due_events(shard, now, 2, cursor.as_ref())
                .await
                .unwrap();
            all.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    all
}

/// DESIGN 5: a notification's PAID reads nothing. One TransactWriteItems, conditional on
/// PENDING with the payment's amount and currency; any refusal returns the order as it is
/// (or none), nothing written. Its `order.paid` is stored without body or counters and
/// completed from the order once: the same bytes a read-planned PAID would have written.
async fn an_unread_paid_is_one_call_and_its_event_is_completed_once(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 2)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    let mut pay = payment(&o, "4200000101");
    pay.payer = Some(shared::domain::Openid::parse("o_friend").unwrap());
    let at = now_ms();

    // Another amount, an unknown order: refused with what is there, nothing written.
    let mut short = pay.clone();
    short.amount = shared::domain::Money::from_fen(1).unwrap();
    let refused = ctx
        .store
        .mark_paid_unread(&PaidUnread::plan(&short, at).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&refused, PaidUnreadOutcome::OrderRefused(Some(seen)) if seen.status == OrderStatus::Pending && seen.version == o.version),
        "{refused:?}"
    );
    let nobody = order("o_nobody", &[(&tea, 1)]);
    assert_eq!(
        ctx.store
            .mark_paid_unread(&PaidUnread::plan(&payment(&nobody, "4200000102"), at).unwrap())
            .await
            .unwrap(),
        PaidUnreadOutcome::OrderRefused(None)
    );
    let mut usd = pay.clone();
    usd.currency = "USD".into();
    assert!(matches!(
        ctx.store.mark_paid_unread(&PaidUnread::plan(&usd, at).unwrap()).await.unwrap(),
        PaidUnreadOutcome::OrderRefused(Some(seen)) if seen.status == OrderStatus::Pending
    ));
    // A closed order refuses with its state.
    let closed = order("o_bob", &[(&tea, 1)]);
    ctx.store
        .create_order(&fresh_claim(&closed), &closed)
        .await
        .unwrap();
    ctx.store.close(&closed, "expired", at).await.unwrap();
    assert!(matches!(
        ctx.store
            .mark_paid_unread(&PaidUnread::plan(&payment(&closed, "4200000103"), at).unwrap())
            .await
            .unwrap(),
        PaidUnreadOutcome::OrderRefused(Some(seen)) if seen.status == OrderStatus::Closed
    ));
    let events_before = event_items(&ctx).await;
    assert_eq!(
        events_before.len(),
        1,
        "only the close's: {events_before:?}"
    );
    assert!(ctx.store.get_payment("4200000101").await.unwrap().is_none());

    let plan = PaidUnread::plan(&pay, at).unwrap();
    let (out, calls) = ctx.counter.measure(ctx.store.mark_paid_unread(&plan)).await;
    assert_eq!(out.unwrap(), PaidUnreadOutcome::Applied);
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    let paid = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_eq!(paid.version, o.version + 1);
    assert_eq!(paid.paid_version, Some(paid.version));
    assert_eq!(paid.transaction_id.as_deref(), Some("4200000101"));
    assert_eq!(paid.paid_at, Some(pay.success_time));
    assert_eq!(paid.history.len(), o.history.len() + 1);
    assert_eq!(paid.history.last(), Some(&plan.entry));
    assert_eq!(paid.lines, o.lines);
    assert!(ctx.store.get_payment("4200000101").await.unwrap().is_some());
    // Out of the sweeper's index.
    let due_orders = ctx
        .store
        .due_pending(
            o.out_trade_no.shard(4),
            o.expire_at + time::Duration::days(1),
            100,
            None,
        )
        .await
        .unwrap();
    assert!(
        due_orders
            .items
            .iter()
            .all(|d| d.out_trade_no != o.out_trade_no)
    );

    // A duplicate: the same one call, refused, answered with the paid order.
    let (again, calls) = ctx.counter.measure(ctx.store.mark_paid_unread(&plan)).await;
    assert!(
        matches!(&again, Ok(PaidUnreadOutcome::OrderRefused(Some(seen))) if **seen == paid),
        "{again:?}"
    );
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    assert_eq!(event_items(&ctx).await.len(), 2);

    // A transaction already recorded for another order, while this one is payable: the
    // payment item refuses, naming its order; nothing written.
    let other = order("o_carol", &[(&tea, 1)]);
    ctx.store
        .create_order(&fresh_claim(&other), &other)
        .await
        .unwrap();
    let mut reused = payment(&other, "4200000101");
    reused.out_trade_no = other.out_trade_no.clone();
    assert_eq!(
        ctx.store
            .mark_paid_unread(&PaidUnread::plan(&reused, at).unwrap())
            .await
            .unwrap(),
        PaidUnreadOutcome::PaymentExists {
            out_trade_no: o.out_trade_no.clone()
        }
    );
    let still = ctx
        .store
        .get_order(&other.out_trade_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (still.status, still.version),
        (OrderStatus::Pending, other.version)
    );

    // The event waits for its order: no body, no counters, due like any other.
    let id = OrderEvent::paid_id(&o.out_trade_no);
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert!(stored.body.is_empty());
    assert!(stored.stock.is_empty());
    assert_eq!(
        stored
            .order_to_read
            .as_ref()
            .and_then(|r| r.payer.as_deref()),
        Some("o_friend")
    );
    assert!(stored.needs_projection());
    assert!(due(&ctx, now_ms()).await.iter().any(|e| e.id == id));

    // Completed from the order (as the dispatcher does), once.
    let made = paid.paid_event(stored.created_at).unwrap();
    let completed = stored.completed(shared::outbox::body(&made).unwrap(), made.stock.clone());
    assert!(
        ctx.store
            .complete_event(&completed, now_ms())
            .await
            .unwrap()
    );
    assert!(
        !ctx.store
            .complete_event(&completed, now_ms())
            .await
            .unwrap()
    );
    let after = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert!(after.order_to_read.is_none());
    assert!(after.projected_at.is_some());
    assert!(!after.needs_projection());
    assert_eq!(after.body, completed.body);
    assert_eq!(after.stock, made.stock);
    let body: serde_json::Value = serde_json::from_str(&after.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["data"]["status"], "PAID");
    assert_eq!(body["data"]["version"], paid.version);
    assert_eq!(body["data"]["lines"][0]["quantity"], 2);
    let products = ctx
        .store
        .get_products(std::slice::from_ref(&tea.sku_id))
        .await
        .unwrap();
    assert_eq!(products[&tea.sku_id].sold, 2, "counted sold once");
    assert_eq!(
        products[&tea.sku_id].reserved, 1,
        "o_carol's unpaid unit only"
    );
}

async fn each_transition_writes_its_event_once(ctx: StoreCtx) {
    let tea = product("tea", 990, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let paid = order("o_alice", &[(&tea, 2)]);
    let closed = order("o_bob", &[(&tea, 1)]);
    for o in [&paid, &closed] {
        ctx.store.create_order(&fresh_claim(o), o).await.unwrap();
    }
    assert!(
        event_items(&ctx).await.is_empty(),
        "placing is no transition"
    );

    let pay = payment(&paid, "4200000001");
    let (out, calls) = ctx
        .counter
        .measure(ctx.store.mark_paid(&paid, &pay, now_ms()))
        .await;
    assert!(matches!(out.unwrap(), MarkPaidOutcome::Applied(_)));
    assert_eq!(
        calls.total_calls(),
        1,
        "the event rides in the PAID transaction"
    );
    // A duplicate finds the order paid; no second event.
    assert!(matches!(
        ctx.store.mark_paid(&paid, &pay, now_ms()).await.unwrap(),
        MarkPaidOutcome::AlreadyPaid(_)
    ));
    assert!(matches!(
        ctx.store.close(&closed, "expired", now_ms()).await.unwrap(),
        CloseOutcome::Closed(_)
    ));
    let anomaly = Anomaly::of_payment(&pay, AnomalyKind::DoublePayment, "second transaction");
    for expected in [AnomalyOutcome::Recorded, AnomalyOutcome::AlreadyRecorded] {
        assert_eq!(
            ctx.store.record_anomaly(&anomaly, now_ms()).await.unwrap(),
            expected
        );
    }

    let events = event_items(&ctx).await;
    let of = |t: &str| events.iter().filter(|e| e.1 == t).collect::<Vec<_>>();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(of("order.paid").len(), 1);
    assert_eq!(of("order.paid")[0].2, paid.out_trade_no.as_str());
    assert_eq!(of("order.closed")[0].2, closed.out_trade_no.as_str());
    assert_eq!(of("anomaly.recorded")[0].2, paid.out_trade_no.as_str());

    // All three are due now, each with the exact body to send.
    let id = shared::domain::OrderEvent::paid_id(&paid.out_trade_no);
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Pending);
    assert_eq!(stored.attempts, 0);
    let body: serde_json::Value = serde_json::from_str(&stored.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["type"], "order.paid");
    assert_eq!(body["data"]["status"], "PAID");
    assert_eq!(body["data"]["transaction_id"], "4200000001");
    let due_ids: Vec<String> = due(&ctx, now_ms())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due_ids.len(), 3, "{due_ids:?}");
    assert!(due_ids.contains(&id));
    assert!(
        due(&ctx, stored.created_at - time::Duration::seconds(1))
            .await
            .is_empty()
    );
}

async fn a_claim_fences_its_attempt_and_delivery_leaves_the_index(ctx: StoreCtx) {
    let tea = product("tea", 990, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 1)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    ctx.store.close(&o, "expired", now_ms()).await.unwrap();
    let id = format!("evt_{}_2", o.out_trade_no);
    let lease = time::Duration::seconds(30);
    let t0 = now_ms();

    let (claim, calls) = ctx
        .counter
        .measure(ctx.store.claim_event(&id, t0, lease))
        .await;
    let EventClaim::Claimed(first) = claim.unwrap() else {
        panic!("a due event is claimed")
    };
    assert_eq!(calls.total_calls(), 1);
    assert_eq!((first.attempts, first.lease_until), (1, Some(t0 + lease)));
    // Leased: nobody else gets it until the lease ends.
    let EventClaim::NotClaimed(Some(held)) = ctx.store.claim_event(&id, t0, lease).await.unwrap()
    else {
        panic!("a leased event is not claimed twice")
    };
    assert_eq!(held.attempts, 1);
    assert!(matches!(
        ctx.store
            .claim_event("evt_nope_1", t0, lease)
            .await
            .unwrap(),
        EventClaim::NotClaimed(None)
    ));

    // The attempt failed: due again at its next time, not before.
    let retry_at = t0 + time::Duration::seconds(5);
    let failed = first.failed(Some(500), "HTTP 500", Some(retry_at));
    assert!(ctx.store.update_event(&first, &failed).await.unwrap());
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored, failed);
    assert!(due(&ctx, t0).await.is_empty());
    assert_eq!(due(&ctx, retry_at).await, vec![failed.clone()]);
    assert!(matches!(
        ctx.store.claim_event(&id, t0, lease).await.unwrap(),
        EventClaim::NotClaimed(_)
    ));

    // A stale holder (its claim's attempts) cannot record over a newer claim.
    let EventClaim::Claimed(second) = ctx.store.claim_event(&id, retry_at, lease).await.unwrap()
    else {
        panic!("due again after its retry time")
    };
    assert_eq!(second.attempts, 2);
    assert!(
        !ctx.store
            .update_event(&first, &first.delivered(200, retry_at))
            .await
            .unwrap()
    );
    let delivered = second.delivered(204, retry_at);
    assert!(ctx.store.update_event(&second, &delivered).await.unwrap());
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Delivered);
    assert_eq!(
        (stored.last_status, stored.last_error.as_deref()),
        (Some(204), None)
    );
    assert!(
        due(&ctx, retry_at + time::Duration::days(1))
            .await
            .is_empty()
    );
    assert!(matches!(
        ctx.store
            .claim_event(&id, retry_at + time::Duration::days(1), lease)
            .await
            .unwrap(),
        EventClaim::NotClaimed(Some(_))
    ));

    // Redelivered: the same id and body, due at once, its attempts counted afresh.
    let later = retry_at + time::Duration::hours(1);
    let again = stored.redelivered(later);
    assert!(ctx.store.update_event(&stored, &again).await.unwrap());
    let due_now = due(&ctx, later).await;
    assert_eq!(due_now.len(), 1);
    assert_eq!((due_now[0].attempts, &due_now[0].body), (0, &stored.body));

    // A redelivery while an attempt is in flight: the stale attempt's result is refused
    // even when a newer claim has reached the same attempt number.
    let EventClaim::Claimed(stale) = ctx.store.claim_event(&id, later, lease).await.unwrap() else {
        panic!("the redelivered event is claimed")
    };
    assert_eq!(stale.attempts, 1);
    let read = ctx.store.get_event(&id).await.unwrap().unwrap();
    let again = read.redelivered(later);
    assert!(ctx.store.update_event(&read, &again).await.unwrap());
    let EventClaim::Claimed(newer) = ctx.store.claim_event(&id, later, lease).await.unwrap() else {
        panic!("a redelivery clears the lease")
    };
    assert_eq!(
        newer.attempts, stale.attempts,
        "same attempt number, newer claim"
    );
    assert!(
        !ctx.store
            .update_event(&stale, &stale.failed(None, "timed out", None))
            .await
            .unwrap(),
        "the stale attempt cannot kill the redelivered event"
    );
    assert!(
        ctx.store
            .update_event(&newer, &newer.delivered(200, later))
            .await
            .unwrap()
    );
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Delivered);
    let again = stored.redelivered(later);
    assert!(ctx.store.update_event(&stored, &again).await.unwrap());

    // Dead: out of the index, kept for the merchant.
    let EventClaim::Claimed(third) = ctx.store.claim_event(&id, later, lease).await.unwrap() else {
        panic!("a redelivered event is claimed")
    };
    let dead = third.failed(None, "timed out", None);
    assert!(ctx.store.update_event(&third, &dead).await.unwrap());
    let stored = ctx.store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::Dead);
    assert!(due(&ctx, later + time::Duration::days(10)).await.is_empty());
}

async fn one_of_many_concurrent_claims_wins(ctx: StoreCtx) {
    let tea = product("tea", 990, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 1)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    ctx.store.close(&o, "expired", now_ms()).await.unwrap();
    let id = format!("evt_{}_2", o.out_trade_no);
    let now = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, id) = (ctx.store.clone(), id.clone());
        tasks.spawn(async move {
            store
                .claim_event(&id, now, time::Duration::seconds(30))
                .await
        });
    }
    let mut won = 0;
    while let Some(r) = tasks.join_next().await {
        if let EventClaim::Claimed(_) = r.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(ctx.store.get_event(&id).await.unwrap().unwrap().attempts, 1);
}
