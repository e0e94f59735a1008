//! Shipping in the store, on both engines (DESIGN.md sections 5 and 12): PAID -> SHIPPED
//! once with its upload body and `order.shipped`, the upload's progress and its index of due
//! resends, a shipment and a full refund in either order, settlement completing an order once,
//! and the access token every instance shares. The races themselves (a shipment against a
//! full refund, 20 settlements at once) run on Dynoxide only: moto loses acknowledged writes
//! when concurrent transactions roll back (see store_concurrency.rs).

use std::sync::Arc;

use shared::config::Secret;
use shared::domain::{
    AnomalyKind, LifecycleError, Order, OrderEvent, OrderStatus, Package, Shipment, Shipping,
    Upload, UploadResult, UploadState,
};
use shared::miniprogram::upload_body;
use shared::store::{
    AccessToken, MarkPaidOutcome, RefundReserveOutcome, RefundSettleOutcome, Store, StoreSupport,
    TransitionOutcome,
};
use wxpay_tests::*;

use crate::store_refunds::refund;

wxpay_tests::store_suite!(
    a_shipment_moves_a_paid_order_once_with_its_event,
    an_upload_waits_in_the_due_index_until_wechat_takes_it,
    an_upload_refused_for_good_is_an_anomaly_once,
    a_shipment_and_a_full_refund_end_refunded_in_either_order,
    a_settlement_completes_a_shipped_order_once,
    the_access_token_is_shared_and_replaced_only_by_a_longer_lived_one,
);

pub(crate) fn shipping(o: &Order, key: &str, at: time::OffsetDateTime) -> Shipping {
    let shipment = Shipment::parse(
        "express",
        vec![Package {
            tracking_no: Some("YT1234567890".into()),
            express_company: Some("YTO".into()),
            item_desc: "奶茶*1".into(),
            receiver_contact: None,
        }],
        true,
    )
    .unwrap();
    Shipping {
        upload: Some(Upload {
            body: upload_body(o, &shipment, at).expect("a paid order"),
            state: UploadState::Pending,
            attempts: 0,
            last_errcode: None,
            last_error: None,
            ambiguous: false,
            next_attempt_at: Some(at),
            uploaded_at: None,
        }),
        shipment,
        shipped_at: at,
        request_key: key.to_owned(),
        request_hash: format!("hash-{key}"),
        settled_at: None,
        estimated_settlement_at: None,
        settle_check_at: Some(at + time::Duration::days(10)),
    }
}

async fn ship(ctx: &StoreCtx, o: &Order, s: &Shipping) -> TransitionOutcome {
    let at = s.shipped_at;
    let plan = |order: &Order| order.plan_shipped(s, at);
    ctx.store.transition(o, &plan, at).await.unwrap()
}

async fn due(ctx: &StoreCtx, at: time::OffsetDateTime) -> Vec<String> {
    let page = ctx.store.due_shipments(at, 50, None).await.unwrap();
    page.items
        .into_iter()
        .map(|o| o.out_trade_no.to_string())
        .collect()
}

/// A paid order of its own transaction.
async fn paid(ctx: &StoreCtx) -> Order {
    let tea = product("tea", 990, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_shipper", &[(&tea, 2)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    let transaction_id = format!("42{}", &o.out_trade_no.as_str()[..26].to_ascii_uppercase());
    match ctx
        .store
        .mark_paid(&o, &payment(&o, &transaction_id), now_ms())
        .await
        .unwrap()
    {
        MarkPaidOutcome::Applied(paid) => *paid,
        other => panic!("{other:?}"),
    }
}

async fn a_shipment_moves_a_paid_order_once_with_its_event(ctx: StoreCtx) {
    let o = paid(&ctx).await;
    let at = now_ms();
    let s = shipping(&o, "ship-1", at);
    let TransitionOutcome::Applied(shipped) = ship(&ctx, &o, &s).await else {
        panic!("not shipped")
    };
    assert_eq!(shipped.status, OrderStatus::Shipped);
    assert_eq!(shipped.version, o.version + 1);
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored, *shipped, "the shipment round-trips whole");
    assert_eq!(stored.shipping.as_ref(), Some(&s));
    let event = ctx
        .store
        .get_event(&format!("evt_{}_{}", o.out_trade_no, shipped.version))
        .await
        .unwrap()
        .expect("order.shipped written with the transition");
    assert_eq!(event.event_type, "order.shipped");
    assert!(event.body.contains("\"SHIPPED\""));
    assert!(event.body.contains("YT1234567890"));

    // Another shipment (another key, or a stale read) changes nothing.
    let other = shipping(&o, "ship-2", at);
    match ship(&ctx, &o, &other).await {
        TransitionOutcome::Refused {
            order,
            reason: Some(LifecycleError::AlreadyShipped(key)),
        } => {
            assert_eq!(key, "ship-1");
            assert_eq!(*order, stored);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap(),
        stored
    );
}

async fn an_upload_waits_in_the_due_index_until_wechat_takes_it(ctx: StoreCtx) {
    let o = paid(&ctx).await;
    let at = now_ms();
    let TransitionOutcome::Applied(shipped) = ship(&ctx, &o, &shipping(&o, "k", at)).await else {
        panic!()
    };
    let otn = o.out_trade_no.to_string();
    assert_eq!(due(&ctx, at).await, vec![otn.clone()], "due at once");
    assert!(due(&ctx, at - time::Duration::seconds(1)).await.is_empty());

    let retry = UploadResult::Retry {
        errcode: Some(10060001),
        error: "not indexed".into(),
        ambiguous: false,
    };
    let plan = |order: &Order| order.plan_upload_result(&retry, at);
    let TransitionOutcome::Applied(retried) =
        ctx.store.transition(&shipped, &plan, at).await.unwrap()
    else {
        panic!()
    };
    let upload = retried.shipping.as_ref().unwrap().upload.as_ref().unwrap();
    assert_eq!(
        (upload.state, upload.attempts, upload.last_errcode),
        (UploadState::Pending, 1, Some(10060001))
    );
    assert!(due(&ctx, at).await.is_empty(), "backed off");
    assert_eq!(
        due(&ctx, at + time::Duration::seconds(15)).await,
        vec![otn.clone()]
    );

    // A result recorded on a stale read still lands on the order as it is.
    let plan = |order: &Order| order.plan_upload_result(&UploadResult::Uploaded, at);
    let TransitionOutcome::Applied(done) = ctx.store.transition(&shipped, &plan, at).await.unwrap()
    else {
        panic!()
    };
    let upload = done.shipping.as_ref().unwrap().upload.as_ref().unwrap();
    assert_eq!((upload.state, upload.attempts), (UploadState::Uploaded, 2));
    assert!(
        due(&ctx, at + time::Duration::days(1)).await.is_empty(),
        "left the index"
    );
    // Nothing left to record: a late result is refused, nothing written.
    match ctx.store.transition(&done, &plan, at).await.unwrap() {
        TransitionOutcome::Refused {
            reason: Some(LifecycleError::NotShipped(_)),
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

async fn an_upload_refused_for_good_is_an_anomaly_once(ctx: StoreCtx) {
    let o = paid(&ctx).await;
    let at = now_ms();
    let TransitionOutcome::Applied(shipped) = ship(&ctx, &o, &shipping(&o, "k", at)).await else {
        panic!()
    };
    let refused = UploadResult::Refused {
        errcode: 10060031,
        error: "payer openid does not match".into(),
    };
    let plan = |order: &Order| order.plan_upload_result(&refused, at);
    let TransitionOutcome::Applied(failed) =
        ctx.store.transition(&shipped, &plan, at).await.unwrap()
    else {
        panic!()
    };
    let upload = failed.shipping.as_ref().unwrap().upload.as_ref().unwrap();
    assert_eq!(
        (upload.state, upload.last_errcode),
        (UploadState::Failed, Some(10060031))
    );
    assert_eq!(failed.status, OrderStatus::Shipped, "the goods did leave");
    let anomalies = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(anomalies.len(), 1);
    assert_eq!(anomalies[0].kind, AnomalyKind::ShippingUploadFailed);
    assert!(anomalies[0].detail.contains("10060031"));
    let event = OrderEvent::of_anomaly(&anomalies[0], at);
    assert!(ctx.store.get_event(&event.id).await.unwrap().is_some());
    assert!(due(&ctx, at + time::Duration::days(2)).await.is_empty());
}

/// A shipment and a full refund of the same order race: whichever wins, the order ends
/// REFUNDED with everything refunded once, and it is SHIPPED in its history exactly when its
/// shipment is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_a_shipment_racing_a_full_refund_ends_in_one_consistent_state() {
    let ctx = StoreCtx::dynoxide("storm_ship_vs_refund").await;
    let ctx = Arc::new(ctx);
    let mut seen = std::collections::HashSet::new();
    for round in 0..12 {
        let o = paid(&ctx).await;
        let at = now_ms();
        let s = shipping(&o, &format!("ship-{round}"), at);
        let r = refund(&o, o.amount_total.fen(), &[]);
        let (shipped, reserved) = {
            let (c1, c2) = (ctx.clone(), ctx.clone());
            let (o1, o2, r2) = (o.clone(), o.clone(), r.clone());
            let ship_task = tokio::spawn(async move { ship(&c1, &o1, &s).await });
            let refund_task =
                tokio::spawn(async move { c2.store.reserve_refund(&o2, &r2).await.unwrap() });
            (ship_task.await.unwrap(), refund_task.await.unwrap())
        };
        assert!(
            matches!(reserved, RefundReserveOutcome::Reserved(_)),
            "a shipped order is still refundable: {reserved:?}"
        );
        let ship_won = matches!(shipped, TransitionOutcome::Applied(_));
        if !ship_won {
            assert!(
                matches!(
                    shipped,
                    TransitionOutcome::Refused {
                        reason: Some(LifecycleError::NotShippable(OrderStatus::Refunded)),
                        ..
                    }
                ),
                "{shipped:?}"
            );
        }
        seen.insert(ship_won);
        let read = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        let settled = ctx
            .store
            .settle_refund(
                &read,
                &r,
                shared::domain::RefundStatus::Success,
                Some(at),
                None,
                at,
            )
            .await
            .unwrap();
        let RefundSettleOutcome::Applied { order, .. } = settled else {
            panic!("{settled:?}")
        };
        assert_eq!(order.status, OrderStatus::Refunded);
        assert_eq!(order.refunded_total, o.amount_total);
        assert_eq!(order.refund_pending_total.fen(), 0);
        let in_history = order.history.iter().any(|h| h.to == OrderStatus::Shipped);
        assert_eq!(order.shipping.is_some(), ship_won);
        assert_eq!(in_history, ship_won);
        let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        assert_eq!(stored, *order);
    }
    println!("outcomes seen (shipment won?): {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_20_concurrent_settlements_complete_an_order_once() {
    let ctx = StoreCtx::dynoxide("storm_settlements").await;
    let ctx = Arc::new(ctx);
    let o = paid(&ctx).await;
    let at = now_ms();
    let TransitionOutcome::Applied(shipped) = ship(&ctx, &o, &shipping(&o, "k", at)).await else {
        panic!()
    };
    let settled_at = at + time::Duration::days(7);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (ctx, read) = (ctx.clone(), (*shipped).clone());
        tasks.push(tokio::spawn(async move {
            let plan = |order: &Order| {
                order.plan_completed(settled_at, "settled at WeChat (push)", settled_at)
            };
            ctx.store
                .transition(&read, &plan, settled_at)
                .await
                .unwrap()
        }));
    }
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap() {
            TransitionOutcome::Applied(order) => {
                applied += 1;
                assert_eq!(order.status, OrderStatus::Completed);
            }
            TransitionOutcome::Refused { order, .. } => {
                assert_eq!(order.status, OrderStatus::Completed)
            }
            TransitionOutcome::NotFound => panic!("order vanished"),
        }
    }
    assert_eq!(applied, 1, "completed exactly once");
    let order = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        order.shipping.as_ref().unwrap().settled_at,
        Some(settled_at)
    );
    assert_eq!(
        order
            .history
            .iter()
            .filter(|h| h.to == OrderStatus::Completed)
            .count(),
        1
    );
    let event = ctx
        .store
        .get_event(&format!("evt_{}_{}", o.out_trade_no, order.version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, "order.completed");
}

/// Shipped first, the full refund still succeeds (REFUNDED keeps the shipment); refund
/// reserved first, nothing is left to ship and the order is unchanged.
async fn a_shipment_and_a_full_refund_end_refunded_in_either_order(ctx: StoreCtx) {
    for ship_first in [true, false] {
        let o = paid(&ctx).await;
        let at = now_ms();
        let s = shipping(&o, "ship", at);
        let r = refund(&o, o.amount_total.fen(), &[]);
        if ship_first {
            assert!(matches!(
                ship(&ctx, &o, &s).await,
                TransitionOutcome::Applied(_)
            ));
        }
        let read = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        assert!(matches!(
            ctx.store.reserve_refund(&read, &r).await.unwrap(),
            RefundReserveOutcome::Reserved(_)
        ));
        if !ship_first {
            let before = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
            match ship(&ctx, &o, &s).await {
                TransitionOutcome::Refused {
                    order,
                    reason: Some(LifecycleError::NotShippable(OrderStatus::Refunded)),
                } => assert_eq!(*order, before),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap(),
                before
            );
        }
        let read = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        let RefundSettleOutcome::Applied { order, .. } = ctx
            .store
            .settle_refund(
                &read,
                &r,
                shared::domain::RefundStatus::Success,
                Some(at),
                None,
                at,
            )
            .await
            .unwrap()
        else {
            panic!("not settled")
        };
        assert_eq!(order.status, OrderStatus::Refunded);
        assert_eq!(order.refunded_total, o.amount_total);
        assert_eq!(order.shipping.is_some(), ship_first);
        let shipped_in_history = order.history.iter().any(|h| h.to == OrderStatus::Shipped);
        assert_eq!(shipped_in_history, ship_first);
    }
}

async fn a_settlement_completes_a_shipped_order_once(ctx: StoreCtx) {
    let o = paid(&ctx).await;
    let at = now_ms();
    let unshipped = |order: &Order| order.plan_completed(at, "settled at WeChat (push)", at);
    assert!(
        matches!(
            ctx.store.transition(&o, &unshipped, at).await.unwrap(),
            TransitionOutcome::Refused {
                reason: Some(LifecycleError::Transition(_)),
                ..
            }
        ),
        "PAID is not settled: only SHIPPED is"
    );
    let TransitionOutcome::Applied(shipped) = ship(&ctx, &o, &shipping(&o, "k", at)).await else {
        panic!()
    };
    let settled_at = at + time::Duration::days(7);
    let plan =
        |order: &Order| order.plan_completed(settled_at, "settled at WeChat (push)", settled_at);
    let TransitionOutcome::Applied(done) = ctx
        .store
        .transition(&shipped, &plan, settled_at)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(done.status, OrderStatus::Completed);
    assert_eq!(done.shipping.as_ref().unwrap().settled_at, Some(settled_at));
    // The same settlement again (a replayed push, a stale read) is refused, nothing written.
    match ctx
        .store
        .transition(&shipped, &plan, settled_at)
        .await
        .unwrap()
    {
        TransitionOutcome::Refused { order, .. } => assert_eq!(*order, *done),
        other => panic!("{other:?}"),
    }
    let event = ctx
        .store
        .get_event(&format!("evt_{}_{}", o.out_trade_no, done.version))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.event_type, "order.completed");
}

async fn the_access_token_is_shared_and_replaced_only_by_a_longer_lived_one(ctx: StoreCtx) {
    let appid = "wx_token_test";
    assert_eq!(ctx.store.get_access_token(appid).await.unwrap(), None);
    let at = now_ms();
    let token = |t: &str, secs: i64| AccessToken {
        token: Secret::new(t.to_owned()),
        expires_at: at + time::Duration::seconds(secs),
    };
    assert!(
        ctx.store
            .put_access_token(appid, &token("A", 7200), None)
            .await
            .unwrap()
    );
    assert!(
        !ctx.store
            .put_access_token(appid, &token("B", 3600), None)
            .await
            .unwrap()
    );
    assert!(
        !ctx.store
            .put_access_token(appid, &token("B", 7200), None)
            .await
            .unwrap()
    );
    assert_eq!(
        ctx.store.get_access_token(appid).await.unwrap(),
        Some(token("A", 7200))
    );
    assert!(
        ctx.store
            .put_access_token(appid, &token("tok-CCCC", 7300), None)
            .await
            .unwrap()
    );
    let kept = ctx.store.get_access_token(appid).await.unwrap().unwrap();
    assert_eq!(kept.token.expose(), "tok-CCCC");
    assert!(
        !format!("{kept:?}").contains("tok-CCCC"),
        "Debug redacts the token"
    );
    // WeChat rejected the stored token: a shorter-lived one replaces it, and only it.
    let rejected = Secret::new("tok-CCCC".to_owned());
    let other = Secret::new("tok-XXXX".to_owned());
    assert!(
        !ctx.store
            .put_access_token(appid, &token("D", 60), Some(&other))
            .await
            .unwrap()
    );
    assert!(
        ctx.store
            .put_access_token(appid, &token("D", 60), Some(&rejected))
            .await
            .unwrap()
    );
    assert_eq!(
        ctx.store.get_access_token(appid).await.unwrap(),
        Some(token("D", 60))
    );
}
