//! Concurrency storms on the store, on embedded Dynoxide only (moto loses acknowledged writes
//! when concurrent transactions roll back). Each test races real tasks over HTTP against one
//! engine and checks DESIGN 6.1 and 6.2: one PAID transition, one payment item, `sold` counted
//! once (by projecting `order.paid`), stock never negative, reserved stock released exactly once.

use shared::store::StoreSupport;
use std::sync::Arc;

use shared::domain::OrderStatus;
use shared::store::{CloseOutcome, CreateOrderOutcome, MarkPaidOutcome, Store};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wxpay_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mark_paid_200_times_at_once_applies_once() {
    let ctx = StoreCtx::dynoxide("storm_mark_paid").await;
    let tea = product("tea", 990, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 3)]);
    assert_eq!(
        ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap(),
        CreateOrderOutcome::Created
    );
    let pay = payment(&o, "4200000001");

    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (store, o, pay, barrier) = (ctx.store.clone(), o.clone(), pay.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            store.mark_paid(&o, &pay, now_ms()).await
        });
    }
    let (mut applied, mut duplicates) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        match res.unwrap().unwrap() {
            MarkPaidOutcome::Applied(_) => applied += 1,
            MarkPaidOutcome::AlreadyPaid(current) => {
                assert_eq!(current.transaction_id.as_deref(), Some("4200000001"));
                duplicates += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((applied, duplicates), (1, n - 1));

    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.version, o.version + 1, "one write moved it");
    assert_eq!(stored.history.len(), 2);
    assert_eq!(
        ctx.store.get_payment("4200000001").await.unwrap(),
        Some(pay)
    );
    // One transition, one event: 200 notifications of one payment make one `order.paid`.
    let events = crate::store_outbox::event_items(&ctx).await;
    assert_eq!(
        events,
        [(
            shared::domain::OrderEvent::paid_id(&o.out_trade_no),
            "order.paid".to_owned(),
            o.out_trade_no.to_string()
        )]
    );
    // PAID touched no product item: reserved until the event is projected, then sold once
    // however many dispatchers project it at once (DESIGN 6.1).
    let p = ctx.store.get_product(&tea.sku_id).await.unwrap().unwrap();
    assert_eq!((p.reserved, p.sold, p.available()), (3, 0, Some(7)));
    let event = ctx
        .store
        .get_event(&shared::domain::OrderEvent::paid_id(&o.out_trade_no))
        .await
        .unwrap()
        .unwrap();
    let mut projections = JoinSet::new();
    for _ in 0..20 {
        let (store, event) = (ctx.store.clone(), event.clone());
        projections.spawn(async move { store.project_event(&event, now_ms()).await.unwrap() });
    }
    let moved = projections
        .join_all()
        .await
        .into_iter()
        .filter(|m| *m)
        .count();
    assert_eq!(moved, 1, "projected once");
    let p = ctx.store.get_product(&tea.sku_id).await.unwrap().unwrap();
    assert_eq!((p.reserved, p.sold, p.available()), (0, 3, Some(7)));
    assert_eq!(
        ctx.store
            .product_available_counter(&tea.sku_id)
            .await
            .unwrap(),
        Some(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_order_100_times_against_stock_10() {
    let ctx = StoreCtx::dynoxide("storm_create").await;
    let rare = product("rare", 5000, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&rare))
        .await
        .unwrap();

    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let (store, rare, barrier) = (ctx.store.clone(), rare.clone(), barrier.clone());
        tasks.spawn(async move {
            let user = format!("o_user{i}");
            let o = order(&user, &[(&rare, 1)]);
            let c = claim(&user, "k-1", "hash");
            barrier.wait().await;
            (store.create_order(&c, &o).await, o)
        });
    }
    let mut created = Vec::new();
    let mut refused = 0;
    while let Some(res) = tasks.join_next().await {
        let (out, o) = res.unwrap();
        match out.unwrap() {
            CreateOrderOutcome::Created => created.push(o),
            CreateOrderOutcome::OutOfStock { sku_id } => {
                assert_eq!(sku_id, rare.sku_id);
                refused += 1;
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((created.len(), refused), (10, n - 10));
    let p = ctx.store.get_product(&rare.sku_id).await.unwrap().unwrap();
    assert_eq!((p.reserved, p.sold, p.available()), (10, 0, Some(0)));
    assert_eq!(
        ctx.store
            .product_available_counter(&rare.sku_id)
            .await
            .unwrap(),
        Some(0)
    );
    // Exactly the winners' orders exist, all pending in the sweeper's index.
    for o in &created {
        assert!(
            ctx.store
                .get_order(&o.out_trade_no)
                .await
                .unwrap()
                .is_some()
        );
    }
    let mut pending = 0;
    for shard in 0..ctx.store.shards() {
        let far_future = now_ms() + time::Duration::days(1);
        let page = ctx
            .store
            .due_pending(shard, far_future, 100, None)
            .await
            .unwrap();
        assert!(page.next.is_none());
        pending += page.items.len();
    }
    assert_eq!(pending, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_races_mark_paid_and_exactly_one_wins() {
    let ctx = StoreCtx::dynoxide("storm_close_vs_paid").await;
    let (mut paid_wins, mut close_wins) = (0, 0);
    for round in 0..20 {
        let tea = product(&format!("tea-{round}"), 990, Some(5));
        ctx.store
            .put_products(std::slice::from_ref(&tea))
            .await
            .unwrap();
        let o = order("o_alice", &[(&tea, 2)]);
        ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
        let pay = payment(&o, &format!("txn-{round}"));

        let barrier = Arc::new(Barrier::new(2));
        let closer = {
            let (store, o, barrier) = (ctx.store.clone(), o.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.close(&o, "expired", now_ms()).await
            })
        };
        let payer = {
            let (store, o, pay, barrier) =
                (ctx.store.clone(), o.clone(), pay.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.mark_paid(&o, &pay, now_ms()).await
            })
        };
        let closed = closer.await.unwrap().unwrap();
        let paid = payer.await.unwrap().unwrap();
        project_events(&ctx.store).await;

        let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
        let p = ctx.store.get_product(&tea.sku_id).await.unwrap().unwrap();
        let payment_item = ctx.store.get_payment(&pay.transaction_id).await.unwrap();
        match (&closed, &paid) {
            (CloseOutcome::NotPending(seen), MarkPaidOutcome::Applied(new)) => {
                paid_wins += 1;
                assert_eq!(seen.status, OrderStatus::Paid);
                assert_eq!(&stored, &**new);
                assert_eq!((p.reserved, p.sold, p.available()), (0, 2, Some(3)));
                assert!(payment_item.is_some());
            }
            (CloseOutcome::Closed(new), MarkPaidOutcome::Closed(seen)) => {
                close_wins += 1;
                assert_eq!(seen.status, OrderStatus::Closed);
                assert_eq!(&stored, &**new);
                assert_eq!((p.reserved, p.sold, p.available()), (0, 0, Some(5)));
                assert!(payment_item.is_none(), "paid-after-close writes no payment");
            }
            other => panic!("round {round}: both or neither won: {other:?}"),
        }
        assert_eq!(stored.version, o.version + 1, "exactly one transition");
        assert_eq!(
            ctx.store
                .product_available_counter(&tea.sku_id)
                .await
                .unwrap(),
            p.available()
        );
    }
    println!("close_vs_paid: paid won {paid_wins}, close won {close_wins}");
    assert_eq!(paid_wins + close_wins, 20);
}
