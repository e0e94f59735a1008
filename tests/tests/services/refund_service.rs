//! The refund use cases on a real store (embedded Dynoxide) with WeChat Pay scripted at the
//! edge: the answers the simulator cannot be made to give on cue (a timeout after
//! acceptance, NOT_ENOUGH, an ambiguous answer), and a count of the calls made.

use std::sync::Arc;

use shared::domain::{AnomalyKind, IdempotencyKey, Order, OrderStatus, Product, RefundStatus};
use shared::service::{
    Deps, RefundError, RefundInput, RefundReply, RefundSweepSummary, get_refund, out_refund_no_for,
    request_refund, sweep_refunds,
};
use shared::store::{MarkPaidOutcome, Store, StoreSupport};
use shared::wechatpay::gateway::PayError;
use wxpay_tests::*;

struct Fixture {
    ctx: StoreCtx,
    gateway: Arc<Scripted>,
    deps: Deps,
    tea: Product,
}

async fn fixture(test: &str) -> Fixture {
    let ctx = StoreCtx::dynoxide(test).await;
    let tea = product("tea", 1000, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let gateway = Arc::new(Scripted::default());
    let deps = scripted_deps(&ctx, gateway.clone());
    Fixture {
        ctx,
        gateway,
        deps,
        tea,
    }
}

impl Fixture {
    /// A paid order of `quantity` tea (1000 fen each).
    async fn paid(&self, quantity: i64) -> Order {
        let o = order("o_buyer", &[(&self.tea, quantity)]);
        self.ctx
            .store
            .create_order(&fresh_claim(&o), &o)
            .await
            .unwrap();
        match self
            .ctx
            .store
            .mark_paid(&o, &payment(&o, "4200000000202612070000000007"), now_ms())
            .await
            .unwrap()
        {
            MarkPaidOutcome::Applied(paid) => *paid,
            other => panic!("{other:?}"),
        }
    }

    async fn order(&self, o: &Order) -> Order {
        self.ctx
            .store
            .get_order(&o.out_trade_no)
            .await
            .unwrap()
            .unwrap()
    }

    async fn ask(
        &self,
        o: &Order,
        key: &str,
        input: RefundInput,
    ) -> Result<RefundReply, RefundError> {
        request_refund(&self.deps, &o.out_trade_no, &idem(key), input).await
    }
}

fn idem(key: &str) -> IdempotencyKey {
    IdempotencyKey::parse(key).unwrap()
}

fn input(amount: i64, restock: &[(&str, i64)]) -> RefundInput {
    RefundInput {
        amount,
        reason: Some("returned".into()),
        restock: restock.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
    }
}

fn network() -> PayError {
    PayError::Network("connection reset".into())
}

#[tokio::test]
async fn accepted_refund_is_processing_and_a_retry_resumes_it_without_a_second_refund() {
    let f = fixture("refund_accepted").await;
    let o = f.paid(2).await;
    let no = out_refund_no_for(&idem("refund-key-0001"));
    f.gateway
        .refund(Ok(refund_result(&o, no.as_str(), 1000, "PROCESSING")));
    let reply = f
        .ask(&o, "refund-key-0001", input(1000, &[("tea", 1)]))
        .await
        .unwrap();
    let RefundReply::Submitted(refund) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(refund.out_refund_no, no);
    assert_eq!(refund.status, RefundStatus::Processing);
    assert!(refund.refund_id.is_some());
    assert_eq!(f.gateway.calls(), [format!("refund {no} 1000 2000")]);
    assert_eq!(f.order(&o).await.refund_pending_total, fen(1000));

    // The merchant retries (its answer was lost): the same refund, no second request.
    let again = f
        .ask(&o, "refund-key-0001", input(1000, &[("tea", 1)]))
        .await
        .unwrap();
    let kept = again.refund();
    assert_eq!(
        (
            &kept.out_refund_no,
            kept.status,
            &kept.refund_id,
            kept.amount
        ),
        (
            &refund.out_refund_no,
            refund.status,
            &refund.refund_id,
            refund.amount
        )
    );
    assert_eq!(f.gateway.count("refund "), 1);
    assert_eq!(f.order(&o).await.refund_pending_total, fen(1000));

    // The same key for another refund is a reuse, refused.
    assert!(matches!(
        f.ask(&o, "refund-key-0001", input(999, &[])).await,
        Err(RefundError::KeyReused)
    ));

    // The merchant's lookup syncs it: SUCCESS applied once, restocked as asked.
    f.gateway
        .refund_query(Ok(refund_result(&o, no.as_str(), 1000, "SUCCESS")));
    let settled = get_refund(&f.deps, &no).await.unwrap();
    assert_eq!(settled.status, RefundStatus::Success);
    let after = f.order(&o).await;
    assert_eq!(
        (
            after.status,
            after.refunded_total,
            after.refund_pending_total
        ),
        (OrderStatus::PartiallyRefunded, fen(1000), fen(0))
    );
    project_events(&f.ctx.store).await;
    let tea = f
        .ctx
        .store
        .get_product(&f.tea.sku_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((tea.sold, tea.available()), (1, Some(9)));
    // Settled refunds are answered as stored, with no call.
    let calls = f.gateway.calls().len();
    let again = get_refund(&f.deps, &no).await.unwrap();
    assert_eq!(
        (again.status, again.history.len()),
        (settled.status, settled.history.len())
    );
    assert_eq!(f.gateway.calls().len(), calls);
}

#[tokio::test]
async fn a_crash_before_wechat_pay_answered_resumes_the_same_out_refund_no() {
    let f = fixture("refund_crash").await;
    let o = f.paid(1).await;
    let no = out_refund_no_for(&idem("refund-key-0002"));
    // WeChat Pay's answer is lost and its refund cannot be looked up either: kept REQUESTED.
    f.gateway
        .refund(Err(network()))
        .refund_query(Err(network()));
    let reply = f.ask(&o, "refund-key-0002", input(400, &[])).await.unwrap();
    assert!(
        matches!(&reply, RefundReply::Reserved(r) if r.status == RefundStatus::Requested),
        "{reply:?}"
    );
    assert_eq!(
        f.order(&o).await.refund_pending_total,
        fen(400),
        "still reserved"
    );
    // The retry sends the very same out_refund_no (WeChat Pay refunds it at most once).
    f.gateway
        .refund(Ok(refund_result(&o, no.as_str(), 400, "PROCESSING")));
    let reply = f.ask(&o, "refund-key-0002", input(400, &[])).await.unwrap();
    assert!(matches!(&reply, RefundReply::Submitted(r) if r.status == RefundStatus::Processing));
    let sent: Vec<String> = f
        .gateway
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("refund "))
        .collect();
    assert_eq!(
        sent,
        [
            format!("refund {no} 400 1000"),
            format!("refund {no} 400 1000")
        ]
    );
    assert_eq!(f.order(&o).await.refund_pending_total, fen(400));
}

#[tokio::test]
async fn frequency_limited_is_reserved_not_refused() {
    let f = fixture("refund_spacing").await;
    let o = f.paid(1).await;
    f.gateway.refund(Err(api_error(429, "FREQUENCY_LIMITED")));
    let reply = f.ask(&o, "refund-key-0003", input(100, &[])).await.unwrap();
    assert!(matches!(&reply, RefundReply::Reserved(r) if r.status == RefundStatus::Requested));
    assert_eq!(
        f.gateway.count("refund-query"),
        0,
        "a 429 is certain: nothing accepted"
    );
    assert_eq!(f.order(&o).await.refund_pending_total, fen(100));
}

#[tokio::test]
async fn a_certain_refusal_releases_the_reservation_only_after_wechat_pay_says_no_refund() {
    let f = fixture("refund_refused").await;
    let o = f.paid(1).await;
    f.gateway
        .refund(Err(api_error(403, "NOT_ENOUGH")))
        .refund_query(Err(api_error(404, "RESOURCE_NOT_EXISTS")));
    let err = f
        .ask(&o, "refund-key-0004", input(1000, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RefundError::Refused { code, .. } if code == "NOT_ENOUGH"),
        "{err:?}"
    );
    let after = f.order(&o).await;
    assert_eq!(
        (after.refund_pending_total, after.status),
        (fen(0), OrderStatus::Paid)
    );
    let no = out_refund_no_for(&idem("refund-key-0004"));
    let kept = f.ctx.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(kept.status, RefundStatus::Failed);
    // A refusal whose refund WeChat Pay cannot confirm absent keeps the reservation.
    f.gateway
        .refund(Err(api_error(403, "NOT_ENOUGH")))
        .refund_query(Err(network()));
    let reply = f
        .ask(&o, "refund-key-0005", input(1000, &[]))
        .await
        .unwrap();
    assert!(matches!(reply, RefundReply::Reserved(_)));
    assert_eq!(f.order(&o).await.refund_pending_total, fen(1000));
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let f = fixture("refund_bad").await;
    let o = f.paid(2).await;
    let pending = order("o_buyer", &[(&f.tea, 1)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&pending), &pending)
        .await
        .unwrap();
    type Expect = fn(&RefundError) -> bool;
    let cases: Vec<(&Order, RefundInput, Expect)> = vec![
        (&o, input(0, &[]), |e| {
            matches!(e, RefundError::InvalidRequest(_))
        }),
        (&o, input(-5, &[]), |e| {
            matches!(e, RefundError::InvalidRequest(_))
        }),
        (
            &o,
            input(2001, &[]),
            |e| matches!(e, RefundError::ExceedsPaid { refundable } if refundable.fen() == 2000),
        ),
        (&o, input(10, &[("cup", 1)]), |e| {
            matches!(e, RefundError::InvalidRequest(_))
        }),
        (&o, input(10, &[("tea", 3)]), |e| {
            matches!(e, RefundError::InvalidRequest(_))
        }),
        (&o, input(10, &[("tea", 1), ("tea", 1)]), |e| {
            matches!(e, RefundError::InvalidRequest(_))
        }),
        (&pending, input(10, &[]), |e| {
            matches!(e, RefundError::OrderNotPaid(OrderStatus::Pending))
        }),
    ];
    for (i, (target, input, expected)) in cases.into_iter().enumerate() {
        let err = f
            .ask(target, &format!("refund-bad-{i:04}"), input)
            .await
            .unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
        assert_eq!(
            f.ctx
                .store
                .get_refund(&out_refund_no_for(&idem(&format!("refund-bad-{i:04}"))))
                .await
                .unwrap(),
            None
        );
    }
    let mut ghost = o.clone();
    ghost.out_trade_no = order("o_buyer", &[(&f.tea, 1)]).out_trade_no;
    assert!(matches!(
        f.ask(&ghost, "refund-bad-ghost", input(1, &[])).await,
        Err(RefundError::OrderNotFound)
    ));
    assert_eq!(f.order(&o).await.refund_pending_total, fen(0));
    assert!(f.gateway.calls().is_empty(), "{:?}", f.gateway.calls());
}

#[tokio::test]
async fn abnormal_is_an_anomaly_for_the_merchant_and_the_amount_stays_reserved() {
    let f = fixture("refund_abnormal").await;
    let o = f.paid(1).await;
    let no = out_refund_no_for(&idem("refund-key-0006"));
    f.gateway
        .refund(Ok(refund_result(&o, no.as_str(), 700, "PROCESSING")))
        .refund_query(Ok(refund_result(&o, no.as_str(), 700, "ABNORMAL")))
        .refund_query(Ok(refund_result(&o, no.as_str(), 700, "CLOSED")));
    f.ask(&o, "refund-key-0006", input(700, &[])).await.unwrap();
    let abnormal = get_refund(&f.deps, &no).await.unwrap();
    assert_eq!(abnormal.status, RefundStatus::Abnormal);
    let anomalies = f.ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(
        anomalies
            .iter()
            .map(|a| (a.kind, a.cause.as_str()))
            .collect::<Vec<_>>(),
        [(AnomalyKind::RefundAbnormal, no.as_str())]
    );
    assert_eq!(f.order(&o).await.refund_pending_total, fen(700));
    // Resolved by the merchant and closed by WeChat Pay: released.
    let closed = get_refund(&f.deps, &no).await.unwrap();
    assert_eq!(closed.status, RefundStatus::Closed);
    let after = f.order(&o).await;
    assert_eq!(
        (after.refund_pending_total, after.status),
        (fen(0), OrderStatus::Paid)
    );
}

/// `deps` on a clock the test moves.
fn with_clock(deps: &Deps, at: std::sync::Arc<std::sync::Mutex<time::OffsetDateTime>>) -> Deps {
    Deps {
        clock: std::sync::Arc::new(move || *at.lock().unwrap()),
        ..deps.clone()
    }
}

#[tokio::test]
async fn the_sweeper_submits_deferred_refunds_and_settles_those_whose_notification_never_came() {
    let f = fixture("refund_sweep").await;
    let o = f.paid(2).await;
    let now = std::sync::Arc::new(std::sync::Mutex::new(now_ms()));
    let deps = with_clock(&f.deps, now.clone());
    let no = out_refund_no_for(&idem("refund-key-0007"));
    f.gateway.refund(Err(api_error(429, "FREQUENCY_LIMITED")));
    let reply = request_refund(
        &deps,
        &o.out_trade_no,
        &idem("refund-key-0007"),
        input(1000, &[("tea", 1)]),
    )
    .await
    .unwrap();
    assert!(matches!(reply, RefundReply::Reserved(_)));

    // Not due within the minute WeChat Pay asks for: nothing is sent.
    assert_eq!(
        sweep_refunds(&deps, None).await,
        RefundSweepSummary::default()
    );
    assert_eq!(f.gateway.count("refund "), 1);

    // A minute later it is submitted, with the same out_refund_no, and accepted.
    *now.lock().unwrap() += time::Duration::seconds(61);
    f.gateway
        .refund(Ok(refund_result(&o, no.as_str(), 1000, "PROCESSING")));
    let first = sweep_refunds(&deps, None).await;
    assert_eq!(
        (first.checked, first.submitted, first.failed),
        (1, 1, 0),
        "{first:?}"
    );
    let sent: Vec<String> = f
        .gateway
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("refund "))
        .collect();
    assert_eq!(
        sent,
        [
            format!("refund {no} 1000 2000"),
            format!("refund {no} 1000 2000")
        ]
    );

    // Its notification never comes: five minutes on, the sweep asks and applies SUCCESS once.
    *now.lock().unwrap() += time::Duration::minutes(5);
    f.gateway
        .refund_query(Ok(refund_result(&o, no.as_str(), 1000, "SUCCESS")));
    let second = sweep_refunds(&deps, None).await;
    assert_eq!((second.checked, second.settled), (1, 1), "{second:?}");
    let after = f.order(&o).await;
    assert_eq!(
        (
            after.status,
            after.refunded_total,
            after.refund_pending_total
        ),
        (OrderStatus::PartiallyRefunded, fen(1000), fen(0))
    );
    let settled = f.ctx.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(
        (settled.status, settled.next_check_at),
        (RefundStatus::Success, None)
    );
    // Final: out of the due index, never checked again.
    *now.lock().unwrap() += time::Duration::hours(2);
    assert_eq!(
        sweep_refunds(&deps, None).await,
        RefundSweepSummary::default()
    );
    assert_eq!(f.gateway.count("refund-query"), 1);
}

#[tokio::test]
async fn two_sweeps_at_once_check_a_due_refund_once() {
    let f = fixture("refund_sweep_race").await;
    let o = f.paid(1).await;
    let now = std::sync::Arc::new(std::sync::Mutex::new(now_ms()));
    let deps = with_clock(&f.deps, now.clone());
    let no = out_refund_no_for(&idem("refund-key-0008"));
    f.gateway
        .refund(Ok(refund_result(&o, no.as_str(), 300, "PROCESSING")));
    request_refund(
        &deps,
        &o.out_trade_no,
        &idem("refund-key-0008"),
        input(300, &[]),
    )
    .await
    .unwrap();
    *now.lock().unwrap() += time::Duration::minutes(6);
    f.gateway
        .refund_query(Ok(refund_result(&o, no.as_str(), 300, "PROCESSING")))
        .refund_query(Ok(refund_result(&o, no.as_str(), 300, "PROCESSING")));
    let (a, b) = tokio::join!(sweep_refunds(&deps, None), sweep_refunds(&deps, None));
    assert_eq!(a.checked + b.checked, 1, "{a:?} {b:?}");
    assert_eq!(f.gateway.count("refund-query"), 1);
    // Still processing: checked again only after the backoff.
    assert_eq!(sweep_refunds(&deps, None).await.checked, 0);
    // An hour after acceptance and still processing: reported stale.
    *now.lock().unwrap() += time::Duration::hours(2);
    f.gateway
        .refund_query(Ok(refund_result(&o, no.as_str(), 300, "PROCESSING")));
    let late = sweep_refunds(&deps, None).await;
    assert_eq!(
        (late.checked, late.stale, late.settled),
        (1, 1, 0),
        "{late:?}"
    );
}

/// Review findings: a client that cannot send (no notify_url on a sweeper) is no refusal;
/// a refund recorded FAILED that WeChat Pay later reports paid is kept as an anomaly; stock
/// promised back never exceeds what the order bought, across refunds.
#[tokio::test]
async fn uncertain_failures_keep_the_reservation_and_contradictions_are_never_silent() {
    let f = fixture("refund_review").await;
    let o = f.paid(2).await;
    f.gateway
        .refund(Err(PayError::Config("WXPAY_NOTIFY_URL is needed".into())))
        .refund_query(Err(api_error(404, "RESOURCE_NOT_EXISTS")));
    let reply = f.ask(&o, "refund-key-0009", input(100, &[])).await.unwrap();
    assert!(
        matches!(&reply, RefundReply::Reserved(r) if r.status == RefundStatus::Requested),
        "{reply:?}"
    );
    assert_eq!(f.order(&o).await.refund_pending_total, fen(100));

    // Refused for certain, then WeChat Pay says it paid it after all: kept, and seen.
    let no = out_refund_no_for(&idem("refund-key-0010"));
    f.gateway
        .refund(Err(api_error(403, "NOT_ENOUGH")))
        .refund_query(Err(api_error(404, "RESOURCE_NOT_EXISTS")));
    assert!(f.ask(&o, "refund-key-0010", input(200, &[])).await.is_err());
    let failed = f.ctx.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(failed.status, RefundStatus::Failed);
    let order = f.order(&o).await;
    let (kept, moved) = shared::service::apply_refund_result(
        &f.deps,
        &order,
        failed,
        &refund_result(&o, no.as_str(), 200, "SUCCESS"),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!((kept.status, moved), (RefundStatus::Failed, false));
    let anomalies = f.ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert!(
        anomalies
            .iter()
            .any(|a| a.kind == AnomalyKind::RefundMismatch && a.cause.starts_with(no.as_str())),
        "{anomalies:?}"
    );

    // Two refunds cannot together restock more than the order bought.
    let first = out_refund_no_for(&idem("refund-key-0011"));
    f.gateway
        .refund(Ok(refund_result(&o, first.as_str(), 300, "PROCESSING")));
    f.ask(&o, "refund-key-0011", input(300, &[("tea", 2)]))
        .await
        .unwrap();
    let err = f
        .ask(&o, "refund-key-0012", input(300, &[("tea", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, RefundError::InvalidRequest(_)), "{err:?}");
}
