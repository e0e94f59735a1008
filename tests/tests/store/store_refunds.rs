//! Refunds in the store, on both engines: reservations that never exceed what was paid
//! however many race, settlements applied once with their restock, and each way a refund
//! write can lose (DESIGN.md section 5, invariant 8).

use shared::domain::{
    LifecycleError, Order, OrderStatus, OutRefundNo, Product, Quantity, Refund, RefundStatus,
    RestockLine,
};
use shared::store::DynamoStore;
use shared::store::{
    MarkPaidOutcome, RefundMoveOutcome, RefundReserveOutcome, RefundSettleOutcome, Store,
    StoreSupport,
};
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
use wxpay_tests::*;

use crate::store_conformance::stock;

wxpay_tests::store_suite!(
    refund_reservations_never_exceed_what_was_paid,
    a_refund_settles_once_with_its_restock,
    closed_refunds_release_and_refusals_write_nothing,
    anomalies_are_listed_newest_first_across_orders,
);

async fn anomalies_are_listed_newest_first_across_orders(ctx: StoreCtx) {
    use shared::domain::{Anomaly, AnomalyKind, OutTradeNo};
    let at = now_ms();
    let anomaly = |no: Option<&str>, cause: &str, minutes: i64| Anomaly {
        out_trade_no: no.map(|n| OutTradeNo::parse(n).unwrap()),
        kind: AnomalyKind::DoublePayment,
        cause: cause.to_owned(),
        at: at + time::Duration::minutes(minutes),
        transaction_id: Some(cause.to_owned()),
        notification_id: None,
        detail: "test".into(),
        plaintext: None,
    };
    let kept = [
        anomaly(Some("ORDER-A0001"), "t-1", 0),
        anomaly(Some("ORDER-B0001"), "t-2", 2),
        anomaly(None, "t-3", 1),
        // Same instant as t-2: both listed, neither lost.
        anomaly(Some("ORDER-A0001"), "t-4", 2),
    ];
    for a in &kept {
        ctx.store.record_anomaly(a, now_ms()).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = ctx
            .store
            .recent_anomalies(3, cursor.as_ref())
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|a| (a.at, a.cause)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let causes: Vec<&str> = seen.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(causes.len(), 4, "{causes:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 >= w[1].0),
        "newest first: {seen:?}"
    );
    assert_eq!(causes[3], "t-1");
    assert_eq!(causes[2], "t-3");
}

/// A paid order of `lines`, stock reserved then sold as the payment path and the
/// dispatcher do it.
async fn paid_order(ctx: &StoreCtx, lines: &[(&Product, i64)]) -> Order {
    let products: Vec<Product> = lines.iter().map(|(p, _)| (*p).clone()).collect();
    ctx.store.put_products(&products).await.unwrap();
    let o = order("o_alice", lines);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    match ctx
        .store
        .mark_paid(&o, &payment(&o, "4200000000202612070000000001"), now_ms())
        .await
        .unwrap()
    {
        MarkPaidOutcome::Applied(paid) => {
            // Its `order.paid` projected, as the dispatcher does: the units counted sold.
            project_events(&ctx.store).await;
            *paid
        }
        other => panic!("{other:?}"),
    }
}

pub(crate) fn refund(o: &Order, amount: i64, restock: &[(&Product, i64)]) -> Refund {
    Refund::requested(
        OutRefundNo::generate(now_ms()),
        o.out_trade_no.clone(),
        fen(amount),
        Some("returned".into()),
        restock
            .iter()
            .map(|(p, q)| RestockLine {
                sku_id: p.sku_id.clone(),
                quantity: Quantity::new(*q).unwrap(),
            })
            .collect(),
        now_ms(),
    )
}

/// A merchant's retry: a transient store error (a transaction conflict, throttling) is
/// asked again, as the merchant-api's 503 would be.
async fn reserve(store: &DynamoStore, o: &Order, r: &Refund) -> RefundReserveOutcome {
    for _ in 0..20 {
        match store.reserve_refund(o, r).await {
            Ok(out) => return out,
            Err(e) if e.retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("still conflicting")
}

async fn raw_reserved_total(ctx: &StoreCtx, o: &Order) -> Option<String> {
    let item = ctx
        .client()
        .get_item()
        .table_name(&ctx.table)
        .key("pk", AttributeValue::S(format!("ORDER#{}", o.out_trade_no)))
        .key("sk", AttributeValue::S("ORDER".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    match item.get("refund_reserved_total") {
        Some(AttributeValue::N(n)) => Some(n.clone()),
        _ => None,
    }
}

async fn refund_reservations_never_exceed_what_was_paid(ctx: StoreCtx) {
    let tea = product("tea", 10, Some(10));
    let o = paid_order(&ctx, &[(&tea, 3)]).await;
    assert_eq!(o.amount_total, fen(30));
    let refunds: Vec<Refund> = (0..50).map(|_| refund(&o, 1, &[])).collect();
    // At once on Dynoxide; one after another on moto (DESIGN section 7: moto loses
    // concurrent writes), where the stale read still proves the bound is the store's.
    let outcomes = if ctx.engine == Engine::Dynoxide {
        let mut tasks = tokio::task::JoinSet::new();
        for r in refunds.clone() {
            let (store, o) = (ctx.store.clone(), o.clone());
            tasks.spawn(async move { (r.out_refund_no.clone(), reserve(&store, &o, &r).await) });
        }
        tasks.join_all().await
    } else {
        let mut done = Vec::new();
        for r in &refunds {
            done.push((r.out_refund_no.clone(), reserve(&ctx.store, &o, r).await));
        }
        done
    };
    let reserved: Vec<&OutRefundNo> = outcomes
        .iter()
        .filter(|(_, out)| matches!(out, RefundReserveOutcome::Reserved(_)))
        .map(|(no, _)| no)
        .collect();
    assert_eq!(reserved.len(), 30, "{outcomes:?}");
    for (_, out) in &outcomes {
        match out {
            RefundReserveOutcome::Reserved(_) => {}
            RefundReserveOutcome::Refused {
                reason: LifecycleError::RefundExceedsPaid { amount, refundable },
                ..
            } => assert_eq!((*amount, *refundable), (fen(1), fen(0))),
            other => panic!("{other:?}"),
        }
    }
    let after = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        (
            after.refund_pending_total,
            after.refunded_total,
            after.status
        ),
        (fen(30), fen(0), OrderStatus::Paid)
    );
    assert_eq!(raw_reserved_total(&ctx, &o).await.as_deref(), Some("30"));
    let mut listed: Vec<&OutRefundNo> = after.refunds.iter().collect();
    let mut expected = reserved.clone();
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the order lists exactly its reserved refunds"
    );
    for (no, out) in &outcomes {
        let stored = ctx.store.get_refund(no).await.unwrap();
        match out {
            RefundReserveOutcome::Reserved(_) => {
                assert_eq!(stored.map(|r| r.status), Some(RefundStatus::Requested))
            }
            _ => assert_eq!(stored, None, "a refused reservation wrote its refund"),
        }
    }
    // A new reservation on a stale read of the order is still held to the bound.
    assert!(matches!(
        reserve(&ctx.store, &o, &refund(&o, 1, &[])).await,
        RefundReserveOutcome::Refused { .. }
    ));
}

async fn a_refund_settles_once_with_its_restock(ctx: StoreCtx) {
    let tea = product("tea", 1000, Some(10));
    let cup = product("cup", 500, Some(10));
    let o = paid_order(&ctx, &[(&tea, 2), (&cup, 1)]).await;
    assert_eq!(stock(&ctx, &tea).await, (0, 2, Some(8)));

    let part = refund(&o, 1000, &[(&tea, 1)]);
    assert!(matches!(
        reserve(&ctx.store, &o, &part).await,
        RefundReserveOutcome::Reserved(_)
    ));
    let stored = ctx
        .store
        .get_refund(&part.out_refund_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, part, "the refund item round-trips");
    let accepted = match ctx
        .store
        .accept_refund(&part, "50300000000000000001", now_ms())
        .await
        .unwrap()
    {
        RefundMoveOutcome::Moved(r) => *r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (accepted.status, accepted.refund_id.as_deref()),
        (RefundStatus::Processing, Some("50300000000000000001"))
    );
    assert!(matches!(
        ctx.store.accept_refund(&part, "50300000000000000001", now_ms()).await.unwrap(),
        RefundMoveOutcome::NotMoved(r) if r.status == RefundStatus::Processing
    ));

    // WeChat Pay's SUCCESS, delivered (and queried) many times at once, applies once.
    let success_time = now_ms();
    let deliveries = if ctx.engine == Engine::Dynoxide {
        100
    } else {
        5
    };
    let settle = |store: DynamoStore, o: Order, r: Refund| async move {
        for _ in 0..20 {
            match store
                .settle_refund(
                    &o,
                    &r,
                    RefundStatus::Success,
                    Some(success_time),
                    None,
                    now_ms(),
                )
                .await
            {
                Ok(out) => return out,
                Err(e) if e.retryable() => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("still conflicting")
    };
    let mut outcomes = Vec::new();
    if ctx.engine == Engine::Dynoxide {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..deliveries {
            tasks.spawn(settle(ctx.store.clone(), o.clone(), accepted.clone()));
        }
        outcomes = tasks.join_all().await;
    } else {
        for _ in 0..deliveries {
            outcomes.push(settle(ctx.store.clone(), o.clone(), accepted.clone()).await);
        }
    }
    let applied: Vec<&RefundSettleOutcome> = outcomes
        .iter()
        .filter(|out| matches!(out, RefundSettleOutcome::Applied { .. }))
        .collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    // One settlement, one event: its order as it became, and the refund.
    let events = crate::store_outbox::event_items(&ctx).await;
    let succeeded: Vec<_> = events
        .iter()
        .filter(|(_, kind, _)| kind == "refund.succeeded")
        .collect();
    assert_eq!(
        succeeded,
        [&(
            format!("evt_{}_SUCCESS", accepted.out_refund_no),
            "refund.succeeded".to_owned(),
            o.out_trade_no.to_string()
        )]
    );
    assert!(outcomes.iter().all(|out| match out {
        RefundSettleOutcome::Applied { .. } => true,
        RefundSettleOutcome::AlreadyMoved(r) => r.status == RefundStatus::Success,
        _ => false,
    }));
    let after = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status,
            after.refunded_total,
            after.refund_pending_total
        ),
        (OrderStatus::PartiallyRefunded, fen(1000), fen(0))
    );
    assert_eq!(
        after.history.last().unwrap().to,
        OrderStatus::PartiallyRefunded
    );
    let settled = ctx
        .store
        .get_refund(&part.out_refund_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (settled.status, settled.success_time),
        (RefundStatus::Success, Some(success_time))
    );
    assert_eq!(stock(&ctx, &tea).await, (0, 1, Some(9)), "restocked once");
    assert_eq!(
        stock(&ctx, &cup).await,
        (0, 1, Some(9)),
        "not asked: untouched"
    );

    // The rest, from a stale read of the order: REFUNDED.
    let rest = refund(&after, 1500, &[]);
    assert!(matches!(
        reserve(&ctx.store, &o, &rest).await,
        RefundReserveOutcome::Reserved(_)
    ));
    let out = settle(ctx.store.clone(), o.clone(), rest.clone()).await;
    let RefundSettleOutcome::Applied { order: done, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(
        (done.status, done.refunded_total, done.refund_pending_total),
        (OrderStatus::Refunded, fen(2500), fen(0))
    );
    assert_eq!(
        ctx.store.get_order(&o.out_trade_no).await.unwrap().as_ref(),
        Some(done.as_ref())
    );
    assert_eq!(raw_reserved_total(&ctx, &o).await.as_deref(), Some("2500"));
    assert!(matches!(
        reserve(&ctx.store, &o, &refund(&o, 1, &[])).await,
        RefundReserveOutcome::Refused {
            reason: LifecycleError::NotRefundable(OrderStatus::Refunded),
            ..
        }
    ));
}

async fn closed_refunds_release_and_refusals_write_nothing(ctx: StoreCtx) {
    let tea = product("tea", 1000, Some(10));
    let o = paid_order(&ctx, &[(&tea, 1)]).await;
    let r = refund(&o, 600, &[(&tea, 1)]);
    assert!(matches!(
        reserve(&ctx.store, &o, &r).await,
        RefundReserveOutcome::Reserved(_)
    ));
    // The same out_refund_no again: the refund as it is, nothing reserved twice.
    match reserve(&ctx.store, &o, &r).await {
        RefundReserveOutcome::Exists(kept) => assert_eq!(*kept, r),
        other => panic!("{other:?}"),
    }
    let out = ctx
        .store
        .settle_refund(&o, &r, RefundStatus::Closed, None, None, now_ms())
        .await
        .unwrap();
    let RefundSettleOutcome::Applied {
        order: after,
        refund: closed,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (
            after.status,
            after.refund_pending_total,
            after.refunded_total
        ),
        (OrderStatus::Paid, fen(0), fen(0))
    );
    assert_eq!(closed.status, RefundStatus::Closed);
    let closed_event = ctx
        .store
        .get_event(&format!("evt_{}_CLOSED", r.out_refund_no))
        .await
        .unwrap()
        .expect("refund.closed written with the settlement");
    assert_eq!(closed_event.event_type, "refund.closed");
    let body: serde_json::Value = serde_json::from_str(&closed_event.body).unwrap();
    assert_eq!(body["data"]["refund"]["status"], "CLOSED");
    assert_eq!(body["data"]["order"]["refund_pending_total"], 0);
    assert_eq!(
        stock(&ctx, &tea).await,
        (0, 1, Some(9)),
        "a closed refund restocks nothing"
    );
    // A SUCCESS read before the close loses to it.
    assert!(matches!(
        ctx.store
            .settle_refund(&o, &r, RefundStatus::Success, None, None, now_ms())
            .await
            .unwrap(),
        RefundSettleOutcome::AlreadyMoved(kept) if kept.status == RefundStatus::Closed
    ));
    assert_eq!(raw_reserved_total(&ctx, &o).await, None, "all released");

    // Refusals: an unpaid order, an unknown one, another order's refund.
    let pending = order("o_alice", &[(&tea, 1)]);
    ctx.store
        .create_order(&fresh_claim(&pending), &pending)
        .await
        .unwrap();
    let unpaid = refund(&pending, 1, &[]);
    assert!(matches!(
        reserve(&ctx.store, &pending, &unpaid).await,
        RefundReserveOutcome::Refused {
            reason: LifecycleError::NotRefundable(OrderStatus::Pending),
            ..
        }
    ));
    assert_eq!(
        ctx.store.get_refund(&unpaid.out_refund_no).await.unwrap(),
        None
    );
    let ghost = order("o_alice", &[(&tea, 1)]);
    assert_eq!(
        reserve(&ctx.store, &ghost, &refund(&ghost, 1, &[])).await,
        RefundReserveOutcome::Refused {
            order: Box::new(ghost.clone()),
            reason: LifecycleError::NotRefundable(OrderStatus::Pending)
        },
        "the caller's read already refuses"
    );
    let mut unknown = o.clone();
    unknown.out_trade_no = ghost.out_trade_no.clone();
    assert_eq!(
        reserve(&ctx.store, &unknown, &refund(&unknown, 1, &[])).await,
        RefundReserveOutcome::NotFound
    );
    assert!(matches!(
        reserve(&ctx.store, &o, &refund(&pending, 1, &[])).await,
        RefundReserveOutcome::Refused {
            reason: LifecycleError::RefundOfAnotherOrder { .. },
            ..
        }
    ));
}
