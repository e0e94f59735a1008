//! What the bill reconciliation reads and keeps, on both engines (DESIGN 11): a Beijing day's
//! payments and successful refunds from their day partitions (written by the transaction that
//! writes the payment or settles the refund, no extra call), batched reads by key (payments,
//! refunds, orders), and the day's report, replaced by a re-run.

use shared::domain::{
    BillMismatch, BillMismatchKind, BillReport, BillSums, DAY_SHARDS, Order, OrderStatus,
    OutRefundNo, OutTradeNo, RefundStatus,
};
use shared::store::{
    MarkPaidOutcome, RefundMoveOutcome, RefundReserveOutcome, RefundSettleOutcome, Store,
    StoreSupport,
};
use shared::timefmt::{CHINA, beijing_date};
use time::macros::{date, datetime};
use wxpay_tests::*;

wxpay_tests::store_suite!(
    a_days_payments_are_listed_from_its_partitions_at_no_extra_cost,
    successful_refunds_are_listed_on_the_day_wechat_pay_accepted_them,
    payments_and_refunds_are_read_in_batches,
    a_days_report_is_kept_and_a_rerun_replaces_it,
    paid_orders_are_seeded_with_their_payments_for_benchmarks,
);

async fn placed(ctx: &StoreCtx) -> Order {
    let tea = product("tea", 100, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_bills", &[(&tea, 1)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    o
}

/// Every payment of `date`, over all its shards, a page of `limit` at a time.
async fn all_paid_on(ctx: &StoreCtx, date: time::Date, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for shard in 0..DAY_SHARDS {
        let mut cursor = None;
        loop {
            let page = ctx
                .store
                .payments_on(date, shard, limit, cursor.as_ref())
                .await
                .unwrap();
            assert!(page.items.len() <= limit as usize);
            ids.extend(page.items.into_iter().map(|p| p.transaction_id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    ids.sort();
    ids
}

async fn a_days_payments_are_listed_from_its_partitions_at_no_extra_cost(ctx: StoreCtx) {
    // Beijing 2026-12-06 runs from 2026-12-05T16:00Z to 2026-12-06T16:00Z.
    let times = [
        (
            "4200000000202612060000000001",
            datetime!(2026-12-05 16:00:00 UTC),
        ),
        (
            "4200000000202612060000000002",
            datetime!(2026-12-06 08:00:00 UTC),
        ),
        (
            "4200000000202612060000000003",
            datetime!(2026-12-06 15:59:59.999 UTC),
        ),
        (
            "4200000000202612070000000004",
            datetime!(2026-12-06 16:00:00 UTC),
        ),
        (
            "4200000000202612050000000005",
            datetime!(2026-12-05 15:59:59.999 UTC),
        ),
    ];
    for (txid, at) in times {
        let o = placed(&ctx).await;
        ctx.counter.reset();
        match ctx
            .store
            .mark_paid(&o, &payment_at(&o, txid, at), now_ms())
            .await
            .unwrap()
        {
            MarkPaidOutcome::Applied(_) => {}
            other => panic!("{other:?}"),
        }
        // The day partition rides on the payment item: the PAID transaction alone.
        assert_eq!(ctx.counter.snapshot().total_calls(), 1);
    }
    let day = date!(2026 - 12 - 06);
    let expected: Vec<String> = times[..3].iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(all_paid_on(&ctx, day, 1).await, expected);
    assert_eq!(all_paid_on(&ctx, day, 100).await, expected);
    assert_eq!(
        all_paid_on(&ctx, date!(2026 - 12 - 07), 100).await,
        [times[3].0]
    );
    assert_eq!(
        all_paid_on(&ctx, date!(2026 - 12 - 05), 100).await,
        [times[4].0]
    );
    // A listed payment is the payment as kept.
    let shard = shared::domain::day_shard(times[1].0);
    let page = ctx.store.payments_on(day, shard, 10, None).await.unwrap();
    let listed = page
        .items
        .iter()
        .find(|p| p.transaction_id == times[1].0)
        .unwrap();
    assert_eq!(listed.success_time, times[1].1);
    assert_eq!(listed.amount, fen(100));
}

async fn successful_refunds_are_listed_on_the_day_wechat_pay_accepted_them(ctx: StoreCtx) {
    let o = placed(&ctx).await;
    let paid = match ctx
        .store
        .mark_paid(&o, &payment(&o, "4200000000202612060000000011"), now_ms())
        .await
        .unwrap()
    {
        MarkPaidOutcome::Applied(p) => *p,
        other => panic!("{other:?}"),
    };
    let mut refunds = Vec::new();
    for amount in [30, 20] {
        let r = shared::domain::Refund::requested(
            OutRefundNo::generate(now_ms()),
            o.out_trade_no.clone(),
            fen(amount),
            None,
            Vec::new(),
            now_ms(),
        );
        let RefundReserveOutcome::Reserved(_) = ctx.store.reserve_refund(&paid, &r).await.unwrap()
        else {
            panic!("not reserved")
        };
        let RefundMoveOutcome::Moved(r) = ctx
            .store
            .accept_refund(&r, &format!("50300{amount}"), now_ms())
            .await
            .unwrap()
        else {
            panic!("not accepted")
        };
        refunds.push(*r);
    }
    let accepted_on = beijing_date(refunds[0].submitted_at.unwrap());
    let listed = |ctx: &StoreCtx, date| {
        let store = ctx.store.clone();
        async move {
            let mut nos = Vec::new();
            for shard in 0..DAY_SHARDS {
                let page = store.refunds_on(date, shard, 100, None).await.unwrap();
                assert!(page.next.is_none());
                nos.extend(page.items.into_iter().map(|r| r.out_refund_no));
            }
            nos
        }
    };
    // PROCESSING: not a successful refund yet.
    assert!(listed(&ctx, accepted_on).await.is_empty());
    // The first succeeds (the next day, Beijing time: still the day it was accepted).
    let order = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    let success_time = refunds[0].submitted_at.unwrap() + time::Duration::days(1);
    ctx.counter.reset();
    let RefundSettleOutcome::Applied { refund, .. } = ctx
        .store
        .settle_refund(
            &order,
            &refunds[0],
            RefundStatus::Success,
            Some(success_time),
            None,
            now_ms(),
        )
        .await
        .unwrap()
    else {
        panic!("not settled")
    };
    assert_eq!(ctx.counter.snapshot().total_calls(), 1);
    assert_eq!(refund.success_time, Some(success_time));
    let on_day = listed(&ctx, accepted_on).await;
    assert_eq!(on_day, [refunds[0].out_refund_no.clone()]);
    assert!(
        listed(&ctx, success_time.to_offset(CHINA).date())
            .await
            .is_empty()
    );
    // The second closes: never listed.
    let order = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    ctx.store
        .settle_refund(
            &order,
            &refunds[1],
            RefundStatus::Closed,
            None,
            None,
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(listed(&ctx, accepted_on).await.len(), 1);
}

async fn payments_and_refunds_are_read_in_batches(ctx: StoreCtx) {
    let o = placed(&ctx).await;
    let txid = "4200000000202612060000000021";
    ctx.store
        .mark_paid(&o, &payment(&o, txid), now_ms())
        .await
        .unwrap();
    // More than one BatchGetItem's 100 keys, mostly absent, one repeated.
    let mut ids: Vec<String> = (0..150)
        .map(|i| format!("4200000000202612069999{i:06}"))
        .collect();
    ids.push(txid.to_owned());
    ids.push(txid.to_owned());
    ctx.counter.reset();
    let found = ctx.store.get_payments(&ids).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[txid].out_trade_no, o.out_trade_no);
    assert_eq!(ctx.counter.snapshot().calls_of("BatchGetItem"), 2);
    assert!(ctx.store.get_payments(&[]).await.unwrap().is_empty());

    let order = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    let r = shared::domain::Refund::requested(
        OutRefundNo::generate(now_ms()),
        o.out_trade_no.clone(),
        fen(10),
        None,
        Vec::new(),
        now_ms(),
    );
    ctx.store.reserve_refund(&order, &r).await.unwrap();
    let missing = OutRefundNo::generate(now_ms());
    let found = ctx
        .store
        .get_refunds(&[r.out_refund_no.clone(), missing.clone()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[&r.out_refund_no].status, RefundStatus::Requested);
    assert!(!found.contains_key(&missing));

    // Orders too (what a payment row is held to besides its payment item): as they stand,
    // 101 distinct keys in two BatchGetItem calls.
    let mut nos: Vec<OutTradeNo> = (0..100).map(|_| OutTradeNo::generate(now_ms())).collect();
    nos.push(o.out_trade_no.clone());
    nos.push(o.out_trade_no.clone());
    ctx.counter.reset();
    let found = ctx.store.get_orders(&nos).await.unwrap();
    assert_eq!(ctx.counter.snapshot().calls_of("BatchGetItem"), 2);
    assert_eq!(found.len(), 1);
    let kept = &found[&o.out_trade_no];
    assert_eq!(kept.status, OrderStatus::Paid);
    assert_eq!(kept.transaction_id.as_deref(), Some(txid));
    assert_eq!(kept.refund_pending_total, fen(10));
    assert!(ctx.store.get_orders(&[]).await.unwrap().is_empty());
}

async fn a_days_report_is_kept_and_a_rerun_replaces_it(ctx: StoreCtx) {
    let day = date!(2026 - 12 - 06);
    assert_eq!(ctx.store.get_bill_report(day).await.unwrap(), None);
    let mut first = BillReport::empty(day, datetime!(2026-12-07 02:10:00.123 UTC));
    first.statement = true;
    // A run stopped at its deadline: kept as incomplete.
    first.complete = false;
    first.rows = 3;
    first.matched = 1;
    first.recovered = 1;
    first.sums = BillSums {
        paid: 15_000,
        refunded: 3_000,
        fees: 72,
        fees_millifen: 72_000,
    };
    first.push_mismatch(BillMismatch {
        kind: BillMismatchKind::PaymentAmount,
        out_trade_no: Some("ORDER-A".into()),
        transaction_id: Some("4200".into()),
        out_refund_no: None,
        detail: "bill 100 fen, table 90 fen".into(),
    });
    first.push_mismatch(BillMismatch {
        kind: BillMismatchKind::RefundUnknown,
        out_trade_no: None,
        transaction_id: None,
        out_refund_no: Some("RF-1".into()),
        detail: String::new(),
    });
    ctx.store.put_bill_report(&first).await.unwrap();
    assert_eq!(
        ctx.store.get_bill_report(day).await.unwrap().as_ref(),
        Some(&first)
    );
    let rerun = BillReport {
        complete: true,
        matched: 3,
        recovered: 0,
        mismatch_count: 0,
        mismatches: Vec::new(),
        created_at: datetime!(2026-12-07 03:00:00 UTC),
        ..first.clone()
    };
    ctx.store.put_bill_report(&rerun).await.unwrap();
    assert_eq!(ctx.store.get_bill_report(day).await.unwrap(), Some(rerun));
    assert_eq!(
        ctx.store
            .get_bill_report(date!(2026 - 12 - 05))
            .await
            .unwrap(),
        None
    );
}

/// `StoreSupport::put_paid_orders` (the reconciliation benchmark's seeding): the orders as given
/// and their payments, in the day's partitions, read back as a real payment's would be.
async fn paid_orders_are_seeded_with_their_payments_for_benchmarks(ctx: StoreCtx) {
    let tea = product("tea", 100, None);
    let at = datetime!(2026-12-06 04:00:00 UTC);
    let paid: Vec<(Order, shared::domain::Payment)> = (0..30)
        .map(|i| {
            let placed = order_at("o_seeded", &[(&tea, 1 + i)], at);
            let payment = payment_at(&placed, &format!("42000000002026120600000{i:05}"), at);
            let order = placed
                .plan_paid(&payment, at)
                .unwrap()
                .order()
                .unwrap()
                .clone();
            (order, payment)
        })
        .collect();
    ctx.store.put_paid_orders(&paid).await.unwrap();
    let nos: Vec<OutTradeNo> = paid.iter().map(|(o, _)| o.out_trade_no.clone()).collect();
    let orders = ctx.store.get_orders(&nos).await.unwrap();
    let ids: Vec<String> = paid.iter().map(|(_, p)| p.transaction_id.clone()).collect();
    let payments = ctx.store.get_payments(&ids).await.unwrap();
    for (order, payment) in &paid {
        assert_eq!(orders[&order.out_trade_no], *order);
        assert_eq!(orders[&order.out_trade_no].status, OrderStatus::Paid);
        assert_eq!(payments[&payment.transaction_id], *payment);
    }
    let mut listed = all_paid_on(&ctx, beijing_date(at), 7).await;
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
}
