//! The bill reconciliation (DESIGN 11) on a real store (embedded Dynoxide) with the WeChat
//! Pay simulator behind the real client: a payment and a refund whose notifications never
//! came are recovered through their own paths, a re-run applies nothing twice, a tampered
//! bill applies nothing, a bill not ready is "later", a day without trades is zeros, and what
//! the bill and the table disagree on becomes `BILL_MISMATCH` anomalies.

use std::sync::Arc;

use sandbox::{Fault, PayRequest, SimulatorHandle};
use shared::domain::{
    AnomalyKind, BillMismatchKind, IdempotencyKey, Order, OrderStatus, Product, RefundStatus,
};
use shared::service::{
    Deps, PaymentOutcome, ReconcileError, ReconcileOutcome, RefundInput, ServiceSettings,
    apply_payment, reconcile_bill, request_refund, system_clock,
};
use shared::store::{MarkPaidOutcome, Store, StoreSupport};
use shared::timefmt::{CHINA, to_wechat};
use shared::wechatpay::bill::BillError;
use shared::wechatpay::{HttpPayGateway, PayGateway, PrepayRequest, RefundRequest, RefundState};
use time::{Date, OffsetDateTime};
use wxpay_tests::simulated::{
    APPID, MCHID, Metered, simulator_config, simulator_gateway, start_simulator,
};
use wxpay_tests::*;

struct Fixture {
    ctx: StoreCtx,
    sim: SimulatorHandle,
    gateway: Arc<HttpPayGateway>,
    deps: Deps,
    tea: Product,
}

async fn fixture(test: &str) -> Fixture {
    let ctx = StoreCtx::dynoxide(test).await;
    let tea = product("tea", 1000, None);
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let sim = start_simulator(simulator_config()).await;
    // Nobody listens: every notification is lost, as the tests want.
    let gateway = Arc::new(simulator_gateway(
        &sim,
        "http://127.0.0.1:9/notify/wechatpay",
    ));
    let deps = Deps {
        store: Arc::new(ctx.store.clone()),
        gateway: gateway.clone(),
        clock: system_clock(),
        settings: ServiceSettings {
            appid: APPID.into(),
            mchid: MCHID.into(),
            order_ttl: time::Duration::minutes(30),
        },
        catalog: Default::default(),
    };
    Fixture {
        ctx,
        sim,
        gateway,
        deps,
        tea,
    }
}

/// (rows, matched, recovered, mismatch_count) of a report.
fn counts(report: &shared::domain::BillReport) -> (u64, u64, u64, u64) {
    (
        report.rows,
        report.matched,
        report.recovered,
        report.mismatch_count,
    )
}

/// The report's mismatches as (kind, out_trade_no), in out_trade_no order.
fn kinds_by_order(report: &shared::domain::BillReport) -> Vec<(BillMismatchKind, Option<String>)> {
    let mut kinds: Vec<_> = report
        .mismatches
        .iter()
        .map(|m| (m.kind, m.out_trade_no.clone()))
        .collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    kinds
}

/// `kind` for each of `orders`, in out_trade_no order (as [`kinds_by_order`] answers).
fn each(kind: BillMismatchKind, orders: &[&str]) -> Vec<(BillMismatchKind, Option<String>)> {
    let mut kinds: Vec<_> = orders.iter().map(|o| (kind, Some(o.to_string()))).collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    kinds
}

fn today() -> Date {
    OffsetDateTime::now_utc().to_offset(CHINA).date()
}

impl Fixture {
    /// A PENDING order of `quantity` tea, known to the simulator (prepaid).
    async fn placed(&self, quantity: i64) -> Order {
        self.placed_for(quantity, None).await
    }

    /// [`Self::placed`], prepaid at WeChat Pay for `charged` fen instead of its amount when
    /// given (what a tampered or buggy client would make WeChat Pay collect).
    async fn placed_for(&self, quantity: i64, charged: Option<i64>) -> Order {
        let o = order("o_bills", &[(&self.tea, quantity)]);
        self.ctx
            .store
            .create_order(&fresh_claim(&o), &o)
            .await
            .unwrap();
        self.gateway
            .jsapi_prepay(&PrepayRequest {
                out_trade_no: o.out_trade_no.to_string(),
                description: o.description.clone(),
                time_expire: to_wechat(o.expire_at),
                attach: None,
                amount_total: charged.unwrap_or(o.amount_total.fen()),
                payer_openid: o.openid.to_string(),
            })
            .await
            .unwrap();
        o
    }

    /// Paid at WeChat Pay, its notification lost: the table still has it PENDING.
    async fn paid_unnotified(&self, quantity: i64) -> Order {
        let o = self.placed(quantity).await;
        self.pay_lost(o.out_trade_no.as_str());
        o
    }

    /// Pays `out_trade_no` at WeChat Pay, every notification of it lost: its transaction_id.
    fn pay_lost(&self, out_trade_no: &str) -> String {
        self.sim
            .pay(&PayRequest {
                deliveries: 0,
                ..PayRequest::new(out_trade_no)
            })
            .unwrap()
            .transaction_id
    }

    /// Paid, and applied as a notification would apply it.
    async fn paid(&self, quantity: i64) -> Order {
        let o = self.paid_unnotified(quantity).await;
        let txn = self
            .sim
            .wechat_transaction(o.out_trade_no.as_str())
            .unwrap();
        match apply_payment(&self.deps, Some(o.clone()), &txn, Some("n-1"))
            .await
            .unwrap()
        {
            PaymentOutcome::Applied(o) => *o,
            other => panic!("{other:?}"),
        }
    }

    /// An order of another system on the same merchant id, paid at WeChat Pay: its
    /// out_trade_no and transaction_id.
    async fn paid_elsewhere(&self, out_trade_no: &str, total: i64) -> (String, String) {
        self.gateway
            .jsapi_prepay(&PrepayRequest {
                out_trade_no: out_trade_no.into(),
                description: "elsewhere".into(),
                time_expire: to_wechat(OffsetDateTime::now_utc() + time::Duration::minutes(30)),
                attach: None,
                amount_total: total,
                payer_openid: "o_someone".into(),
            })
            .await
            .unwrap();
        let transaction_id = self.pay_lost(out_trade_no);
        (out_trade_no.to_owned(), transaction_id)
    }

    /// A refund made at WeChat Pay outside this service (the merchant platform), of `fen`.
    async fn refunded_elsewhere(&self, o: &Order, out_refund_no: &str, fen: i64) {
        self.gateway
            .create_refund(&RefundRequest {
                out_trade_no: o.out_trade_no.to_string(),
                out_refund_no: out_refund_no.into(),
                reason: None,
                refund: fen,
                total: o.amount_total.fen(),
            })
            .await
            .unwrap();
    }

    /// `refund.succeeded` events written so far.
    async fn refunds_succeeded(&self) -> usize {
        use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
        self.ctx
            .client()
            .scan()
            .table_name(&self.ctx.table)
            .filter_expression("begins_with(pk, :p) AND event_type = :t")
            .expression_attribute_values(":p", AttributeValue::S("EVENT#".into()))
            .expression_attribute_values(":t", AttributeValue::S("refund.succeeded".into()))
            .send()
            .await
            .unwrap()
            .items()
            .len()
    }

    /// A refund of `fen` the merchant asks for through this service, without restock.
    async fn refund_asked(&self, o: &Order, key: &str, fen: i64) -> shared::domain::Refund {
        request_refund(
            &self.deps,
            &o.out_trade_no,
            &IdempotencyKey::parse(key).unwrap(),
            RefundInput {
                amount: fen,
                reason: None,
                restock: Vec::new(),
            },
        )
        .await
        .unwrap()
        .refund()
        .clone()
    }

    /// With WeChat Pay failing `path` for now (a 5xx: asking again may work), the run fails
    /// as a whole, to be run again; WeChat Pay recovers after.
    async fn run_fails_while_down(&self, path: &str, status: u16) {
        self.sim.clear_faults();
        self.sim
            .inject_fault(Fault::new(path, status, "SYSTEM_ERROR", 10))
            .unwrap();
        let failed = reconcile_bill(&self.deps, today(), None).await;
        assert!(
            matches!(failed, Err(ReconcileError::WeChat(_))),
            "{failed:?}"
        );
        self.sim.clear_faults();
    }

    async fn order(&self, o: &Order) -> Order {
        self.ctx
            .store
            .get_order(&o.out_trade_no)
            .await
            .unwrap()
            .unwrap()
    }

    async fn reconcile(&self, date: Date) -> shared::domain::BillReport {
        match reconcile_bill(&self.deps, date, None).await.unwrap() {
            ReconcileOutcome::Reconciled(report) => *report,
            other => panic!("{other:?}"),
        }
    }

    async fn bill_anomalies(&self, o: &Order) -> Vec<shared::domain::Anomaly> {
        self.ctx
            .store
            .list_anomalies(&o.out_trade_no)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == AnomalyKind::BillMismatch)
            .collect()
    }
}

#[tokio::test]
async fn a_payment_whose_notification_was_lost_is_recovered_and_a_rerun_applies_nothing_twice() {
    let f = fixture("bill_recovers_payment").await;
    let notified = f.paid(1).await;
    let lost = f.paid_unnotified(2).await;
    assert_eq!(f.order(&lost).await.status, OrderStatus::Pending);

    let report = f.reconcile(today()).await;
    assert_eq!(counts(&report), (2, 1, 1, 0), "{report:?}");
    assert!(report.statement);
    assert_eq!(report.sums.paid, 3000);
    assert_eq!(report.sums.refunded, 0);
    // 0.6 % of each payment, rounded to the fen by the bill: 6 + 12.
    assert_eq!(report.sums.fees, 18);
    let recovered = f.order(&lost).await;
    assert_eq!(recovered.status, OrderStatus::Paid);
    assert_eq!(
        recovered.transaction_id,
        f.sim
            .transaction(lost.out_trade_no.as_str())
            .unwrap()
            .transaction_id
    );
    assert_eq!(
        f.ctx.store.get_bill_report(today()).await.unwrap().as_ref(),
        Some(&report)
    );

    // Again: everything matches now, the report is replaced, nothing written twice.
    let events_before = f.ctx.counter.snapshot().calls_of("TransactWriteItems");
    let again = f.reconcile(today()).await;
    assert_eq!(counts(&again), (2, 2, 0, 0));
    assert_eq!(
        f.ctx.counter.snapshot().calls_of("TransactWriteItems"),
        events_before
    );
    assert_eq!(
        f.ctx.store.get_bill_report(today()).await.unwrap(),
        Some(again)
    );
    assert_eq!(f.order(&notified).await.status, OrderStatus::Paid);
    assert!(f.bill_anomalies(&lost).await.is_empty());
}

#[tokio::test]
async fn a_refund_left_processing_is_settled_from_the_bill() {
    let f = fixture("bill_recovers_refund").await;
    let o = f.paid(2).await;
    let refund = f.refund_asked(&o, "bill-refund-1", 500).await;
    assert_eq!(refund.status, RefundStatus::Processing);
    // WeChat Pay pays it back; its notification never arrives.
    f.sim
        .settle_refund(refund.out_refund_no.as_str(), RefundState::Success, 0)
        .unwrap();

    let report = f.reconcile(today()).await;
    assert_eq!(counts(&report), (2, 1, 1, 0), "{report:?}");
    assert_eq!(report.sums.refunded, 500);
    let settled = f
        .ctx
        .store
        .get_refund(&refund.out_refund_no)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.status, RefundStatus::Success);
    let order = f.order(&o).await;
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunded_total, fen(500));
    assert_eq!(order.refund_pending_total, fen(0));

    let again = f.reconcile(today()).await;
    assert_eq!(
        (again.matched, again.recovered, again.mismatch_count),
        (2, 0, 0)
    );
    assert_eq!(f.order(&o).await.refunded_total, fen(500));
}

#[tokio::test]
async fn a_tampered_bill_is_refused_with_nothing_applied() {
    let f = fixture("bill_tampered").await;
    let lost = f.paid_unnotified(1).await;
    f.sim.inject_fault(Fault::tampered_bill(1)).unwrap();
    let err = reconcile_bill(&f.deps, today(), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Bill {
                source: BillError::HashMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(f.order(&lost).await.status, OrderStatus::Pending);
    assert_eq!(f.ctx.store.get_bill_report(today()).await.unwrap(), None);
    assert!(f.bill_anomalies(&lost).await.is_empty());

    // The next download is whole: applied then.
    assert_eq!(f.reconcile(today()).await.recovered, 1);
    assert_eq!(f.order(&lost).await.status, OrderStatus::Paid);
}

#[tokio::test]
async fn a_bill_not_ready_is_later_and_a_day_without_trades_is_zeros() {
    let f = fixture("bill_not_ready").await;
    f.paid(1).await;
    f.sim.inject_fault(Fault::bill_not_ready(1)).unwrap();
    assert_eq!(
        reconcile_bill(&f.deps, today(), None).await.unwrap(),
        ReconcileOutcome::NotReady
    );
    assert_eq!(f.ctx.store.get_bill_report(today()).await.unwrap(), None);

    let yesterday = today().previous_day().unwrap();
    let report = f.reconcile(yesterday).await;
    assert_eq!(
        (
            report.statement,
            report.rows,
            report.matched,
            report.mismatch_count,
            report.sums.paid
        ),
        (false, 0, 0, 0, 0)
    );
    assert_eq!(
        f.ctx.store.get_bill_report(yesterday).await.unwrap(),
        Some(report)
    );
    let tomorrow = today().next_day().unwrap();
    assert!(matches!(
        reconcile_bill(&f.deps, tomorrow, None).await,
        Err(ReconcileError::FutureDate(_))
    ));

    // Today without trades so far: no bill *yet*, never a report of zeros (which would
    // turn every later payment of today into a mismatch).
    let quiet = fixture("bill_today_quiet").await;
    assert_eq!(
        reconcile_bill(&quiet.deps, today(), None).await.unwrap(),
        ReconcileOutcome::NotReady
    );
    assert_eq!(
        quiet.ctx.store.get_bill_report(today()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn what_the_bill_and_the_table_disagree_on_becomes_bill_mismatch_anomalies() {
    let f = fixture("bill_mismatches").await;
    f.paid(1).await;
    // A payment in the table that WeChat Pay never billed.
    let ghost = f.placed(1).await;
    let MarkPaidOutcome::Applied(_) = f
        .ctx
        .store
        .mark_paid(
            &ghost,
            &payment(&ghost, "4200000000209912310000000001"),
            now_ms(),
        )
        .await
        .unwrap()
    else {
        panic!("not paid")
    };
    // A refund at WeChat Pay of an order of another system on the same merchant id.
    let (other, _) = f.paid_elsewhere("OTHER-SYSTEM-0002", 1000).await;
    f.gateway
        .create_refund(&RefundRequest {
            out_trade_no: other.clone(),
            out_refund_no: "OUTSIDE-REFUND-1".into(),
            reason: None,
            refund: 100,
            total: 1000,
        })
        .await
        .unwrap();

    let report = f.reconcile(today()).await;
    assert_eq!(report.rows, 3, "{report:?}");
    assert_eq!(report.matched, 1);
    assert_eq!(report.mismatch_count, 3);
    let kinds: Vec<BillMismatchKind> = report.mismatches.iter().map(|m| m.kind).collect();
    assert!(
        kinds.contains(&BillMismatchKind::PaymentNotInBill),
        "{kinds:?}"
    );
    // Its payment, applied by the payment path as an UNKNOWN_ORDER anomaly.
    assert!(
        kinds.contains(&BillMismatchKind::PaymentAnomaly),
        "{kinds:?}"
    );
    let unknown = report
        .mismatches
        .iter()
        .find(|m| m.kind == BillMismatchKind::RefundUnknown)
        .expect("the refund of an order not ours");
    assert_eq!(unknown.out_refund_no.as_deref(), Some("OUTSIDE-REFUND-1"));
    assert!(unknown.detail.contains("not in the table"), "{unknown:?}");
    let ghost_anomalies = f.bill_anomalies(&ghost).await;
    assert_eq!(ghost_anomalies.len(), 1);
    assert_eq!(
        ghost_anomalies[0].cause,
        format!(
            "{}#PAYMENT_NOT_IN_BILL#4200000000209912310000000001",
            shared::timefmt::date_string(today())
        )
    );
    assert!(ghost_anomalies[0].detail.contains("PAYMENT_NOT_IN_BILL"));

    // A re-run reports them again and records nothing new.
    let again = f.reconcile(today()).await;
    assert_eq!(again.mismatch_count, 3);
    assert_eq!(f.bill_anomalies(&ghost).await, ghost_anomalies);
    assert_eq!(
        f.ctx
            .store
            .get_refund(&shared::domain::OutRefundNo::parse("OUTSIDE-REFUND-1").unwrap())
            .await
            .unwrap(),
        None,
        "a refund of an order not ours is never recorded"
    );
}

async fn call(
    handler: &shared::http::merchant::MerchantApiHandler,
    method: &str,
    uri: &str,
) -> (u16, serde_json::Value, Option<String>) {
    call_by(handler, method, uri, None).await
}

/// [`call`] in an invocation that ends at `deadline` (as Lambda and SCF set it).
async fn call_by(
    handler: &shared::http::merchant::MerchantApiHandler,
    method: &str,
    uri: &str,
    deadline: Option<OffsetDateTime>,
) -> (u16, serde_json::Value, Option<String>) {
    use shared::http::Handler;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {}", "m".repeat(40)))
        .body(shared::http::Bytes::new())
        .unwrap();
    if let Some(deadline) = deadline {
        request
            .extensions_mut()
            .insert(shared::http::InvocationDeadline(deadline));
    }
    let r = handler.handle(request).await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = serde_json::from_slice(r.body()).unwrap_or(serde_json::Value::Null);
    (r.status().as_u16(), body, retry_after)
}

#[tokio::test]
async fn merchant_api_runs_a_reconciliation_and_answers_its_report() {
    let f = fixture("bill_merchant_routes").await;
    let lost = f.paid_unnotified(1).await;
    let handler = merchant_api(&f.deps);
    let day = shared::timefmt::date_string(today());
    let (status, body, _) = call(&handler, "GET", &format!("/merchant/bills/{day}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("BILL_NOT_FOUND"))
    );

    f.sim.inject_fault(Fault::bill_not_ready(1)).unwrap();
    let reconcile = format!("/merchant/bills/{day}/reconcile");
    let (status, body, retry_after) = call(&handler, "POST", &reconcile).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("BILL_NOT_READY"))
    );
    assert_eq!(retry_after.as_deref(), Some("1800"));

    // merchant-api's invocation about to end: the run stops before it, incomplete.
    let (status, report, _) = call_by(
        &handler,
        "POST",
        &reconcile,
        Some(OffsetDateTime::now_utc() + shared::service::REPORT_MARGIN),
    )
    .await;
    assert_eq!(
        (status, &report["complete"]),
        (200, &serde_json::json!(false)),
        "{report}"
    );
    assert_eq!(report["rows"], 1, "{report}");
    assert_eq!(report["recovered"], 0, "{report}");
    assert_eq!(f.order(&lost).await.status, OrderStatus::Pending);

    let (status, report, _) = call(&handler, "POST", &reconcile).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["bill_date"], day.as_str());
    assert_eq!(report["statement"], true);
    assert_eq!(report["rows"], 1);
    assert_eq!(report["recovered"], 1);
    assert_eq!(report["matched"], 0);
    assert_eq!(report["mismatches"], serde_json::json!([]));
    assert_eq!(report["sums"]["paid"], 1000);
    assert!(report["created_at"].as_str().unwrap().ends_with("+08:00"));
    assert_eq!(f.order(&lost).await.status, OrderStatus::Paid);
    let (status, stored, _) = call(&handler, "GET", &format!("/merchant/bills/{day}")).await;
    assert_eq!((status, &stored), (200, &report));

    for bad in ["2026-13-01", "yesterday", "2026-1-1"] {
        for (method, uri) in [
            ("GET", format!("/merchant/bills/{bad}")),
            ("POST", format!("/merchant/bills/{bad}/reconcile")),
        ] {
            let (status, body, _) = call(&handler, method, &uri).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (422, Some("INVALID_REQUEST")),
                "{method} {uri}"
            );
        }
    }
    let tomorrow = shared::timefmt::date_string(today().next_day().unwrap());
    let (status, _, _) = call(
        &handler,
        "POST",
        &format!("/merchant/bills/{tomorrow}/reconcile"),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _, _) = call(&handler, "DELETE", &format!("/merchant/bills/{day}")).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn the_scheduled_job_reconciles_yesterday_once_and_a_run_by_hand_any_date() {
    use shared::runtime::{ScheduledJob, Trigger};
    let f = fixture("bill_job").await;
    f.paid_unnotified(1).await;
    let job = shared::reconciler::ReconcilerJob {
        deps: f.deps.clone(),
    };
    // By hand, today's date (the simulator bills today too).
    let day = shared::timefmt::date_string(today());
    let out = job
        .run_event(
            &serde_json::json!({"bill_date": day}),
            Trigger::Manual,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out["outcome"], "reconciled", "{out}");
    assert_eq!(out["report"]["recovered"], 1);
    // A report of yesterday made during yesterday (by hand) saw part of the day only: the
    // schedule does that date again.
    let yesterday = today().previous_day().unwrap();
    let during = yesterday
        .with_time(time::Time::from_hms(12, 0, 0).unwrap())
        .assume_offset(CHINA);
    f.ctx
        .store
        .put_bill_report(&shared::domain::BillReport::empty(yesterday, during))
        .await
        .unwrap();
    // Scheduled: yesterday, which had no trades, then nothing more to do.
    let scheduled = serde_json::json!({"detail-type": "Scheduled Event"});
    let trigger = Trigger::from_event(&scheduled).unwrap();
    let out = job
        .run_event(&scheduled, trigger.clone(), None)
        .await
        .unwrap();
    assert_eq!(out["outcome"], "reconciled", "{out}");
    let redone = f
        .ctx
        .store
        .get_bill_report(yesterday)
        .await
        .unwrap()
        .unwrap();
    assert!(redone.created_at > during);
    assert_eq!(out["report"]["statement"], false);
    let out = job
        .run_event(&scheduled, trigger.clone(), None)
        .await
        .unwrap();
    assert_eq!(out["outcome"], "already_reconciled", "{out}");
    // A report left incomplete by a run's deadline is never "already reconciled": the next
    // scheduled run finishes the date.
    let stopped = shared::domain::BillReport {
        complete: false,
        ..shared::domain::BillReport::empty(yesterday, OffsetDateTime::now_utc())
    };
    f.ctx.store.put_bill_report(&stopped).await.unwrap();
    let out = job
        .run_event(&scheduled, trigger.clone(), None)
        .await
        .unwrap();
    assert_eq!(out["outcome"], "reconciled", "{out}");
    assert_eq!(out["report"]["complete"], true, "{out}");
    let out = job.run_event(&scheduled, trigger, None).await.unwrap();
    assert_eq!(out["outcome"], "already_reconciled", "{out}");
    // A run that cannot reconcile ends in an error (the function's errors alarm), its summary
    // carried by it.
    let failed = job
        .run_event(
            &serde_json::json!({"bill_date": 20261206}),
            Trigger::Manual,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(failed.summary["outcome"], "failed");
}

/// Review finding: WeChat Pay's 400 for the date (older than the 3 months it keeps bills for)
/// is the caller's date at fault: 422, never a 502; and a scheduled run that fails (here
/// WeChat Pay down) ends the invocation in an error, not a JSON success.
#[tokio::test]
async fn a_date_wechat_pay_refuses_is_the_callers_and_a_failed_run_is_an_error() {
    use shared::runtime::{ScheduledJob, Trigger};
    let f = fixture("bill_date_refused").await;
    let old = today() - time::Duration::days(200);
    let err = reconcile_bill(&f.deps, old, None).await.unwrap_err();
    assert!(
        matches!(&err, ReconcileError::DateRefused { code, .. } if code == "PARAM_ERROR" || code == "INVALID_REQUEST"),
        "{err:?}"
    );
    let handler = merchant_api(&f.deps);
    let uri = format!(
        "/merchant/bills/{}/reconcile",
        shared::timefmt::date_string(old)
    );
    let (status, body, _) = call(&handler, "POST", &uri).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("INVALID_REQUEST")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("3 months"),
        "{body}"
    );
    assert_eq!(f.ctx.store.get_bill_report(old).await.unwrap(), None);

    let job = shared::reconciler::ReconcilerJob {
        deps: f.deps.clone(),
    };
    let by_hand = serde_json::json!({"bill_date": shared::timefmt::date_string(old)});
    let failed = job
        .run_event(&by_hand, Trigger::Manual, None)
        .await
        .unwrap_err();
    assert_eq!(failed.summary["outcome"], "failed", "{}", failed.summary);
    f.sim
        .inject_fault(Fault::new("/v3/bill/tradebill", 500, "SYSTEM_ERROR", 10))
        .unwrap();
    let scheduled = serde_json::json!({"detail-type": "Scheduled Event"});
    let trigger = Trigger::from_event(&scheduled).unwrap();
    let failed = job.run_event(&scheduled, trigger, None).await.unwrap_err();
    assert_eq!(failed.summary["outcome"], "failed", "{}", failed.summary);
    assert!(
        failed.to_string().contains("SYSTEM_ERROR"),
        "{}",
        failed.summary
    );
    // A bill not ready yet is no failure: the next run asks again.
    f.sim.clear_faults();
    f.sim.inject_fault(Fault::bill_not_ready(1)).unwrap();
    let day = serde_json::json!({"bill_date": shared::timefmt::date_string(today())});
    let later = job.run_event(&day, Trigger::Manual, None).await.unwrap();
    assert_eq!(later["outcome"], "not_ready", "{later}");
}

#[tokio::test]
async fn a_billed_payment_the_payment_path_keeps_as_an_anomaly_is_reported_once_per_run() {
    let f = fixture("bill_payment_anomalies").await;
    // Closed here (its close never reached WeChat Pay), then paid there.
    let closed = f.placed(1).await;
    f.ctx
        .store
        .close(&closed, "closed by a test", now_ms())
        .await
        .unwrap();
    f.pay_lost(closed.out_trade_no.as_str());
    // An order of another system on the same merchant id.
    f.paid_elsewhere("OTHER-SYSTEM-0001", 300).await;

    for _run in 0..2 {
        let report = f.reconcile(today()).await;
        assert_eq!(
            (report.rows, report.matched, report.recovered),
            (2, 0, 0),
            "{report:?}"
        );
        assert_eq!(
            kinds_by_order(&report),
            each(
                BillMismatchKind::PaymentAnomaly,
                &[closed.out_trade_no.as_str(), "OTHER-SYSTEM-0001"]
            )
        );
        assert!(
            report
                .mismatches
                .iter()
                .any(|m| m.detail.contains("PAID_AFTER_CLOSE"))
        );
        assert!(
            report
                .mismatches
                .iter()
                .any(|m| m.detail.contains("UNKNOWN_ORDER"))
        );
    }
    // The payment path's own anomaly, once; the order stays CLOSED.
    let anomalies = f
        .ctx
        .store
        .list_anomalies(&closed.out_trade_no)
        .await
        .unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, AnomalyKind::PaidAfterClose);
    assert_eq!(f.order(&closed).await.status, OrderStatus::Closed);
}

/// Review finding: a row whose confirmation WeChat Pay refuses for good (a 4xx other than
/// ORDER_NOT_EXIST) is reported as a mismatch and the run goes on to the other rows and its
/// report; a transient failure (5xx) fails the run, to be run again, with nothing lost (what
/// it applied before failing stays applied, once).
#[tokio::test]
async fn a_row_wechat_pay_refuses_to_confirm_is_reported_and_the_run_goes_on() {
    let f = fixture("bill_row_refused").await;
    let refused = f.paid_unnotified(1).await;
    let lost = f.paid_unnotified(1).await;
    let prefix = format!("/v3/pay/transactions/out-trade-no/{}", refused.out_trade_no);
    f.run_fails_while_down(&prefix, 500).await;
    f.sim
        .inject_fault(sandbox::Fault::new(prefix, 400, "PARAM_ERROR", 10))
        .unwrap();
    let report = f.reconcile(today()).await;
    assert_eq!(report.rows, 2, "{report:?}");
    // The other lost payment is applied, by this run or by the failed one if its row came
    // first (rows are applied as they come, each through its idempotent path).
    assert_eq!(
        report.recovered + report.matched,
        1,
        "the other lost payment still applied: {report:?}"
    );
    assert_eq!(report.mismatch_count, 1);
    assert_eq!(
        report.mismatches[0].kind,
        BillMismatchKind::PaymentUnconfirmed
    );
    assert!(
        report.mismatches[0].detail.contains("PARAM_ERROR"),
        "{report:?}"
    );
    let status = |o: &Order| {
        let store = f.ctx.store.clone();
        let no = o.out_trade_no.clone();
        async move { store.get_order(&no).await.unwrap().unwrap().status }
    };
    assert_eq!(status(&lost).await, OrderStatus::Paid);
    assert_eq!(status(&refused).await, OrderStatus::Pending);
}

/// Review finding: an order held AMOUNT_MISMATCH has a payment item with WeChat Pay's amount
/// (the bill's), but was not paid: every run reports it, never counts it matched, whether the
/// notification held it before any run or a run recovered it, and records nothing new.
#[tokio::test]
async fn a_payment_held_as_amount_mismatch_is_reported_on_every_run() {
    let f = fixture("bill_amount_mismatch").await;
    // Held by its notification before any run.
    let notified = f.placed_for(1, Some(900)).await;
    f.pay_lost(notified.out_trade_no.as_str());
    let txn = f
        .sim
        .wechat_transaction(notified.out_trade_no.as_str())
        .unwrap();
    let held = apply_payment(&f.deps, Some(notified.clone()), &txn, Some("n-held"))
        .await
        .unwrap();
    assert!(
        matches!(
            held,
            PaymentOutcome::Anomaly {
                kind: AnomalyKind::AmountMismatch,
                ..
            }
        ),
        "{held:?}"
    );
    // Its notification lost: held by the first run's recovery.
    let lost = f.placed_for(1, Some(1100)).await;
    f.pay_lost(lost.out_trade_no.as_str());

    for run in 0..2 {
        let report = f.reconcile(today()).await;
        assert_eq!(counts(&report), (2, 0, 0, 2), "run {run}: {report:?}");
        assert_eq!(
            kinds_by_order(&report),
            each(
                BillMismatchKind::PaymentAnomaly,
                &[notified.out_trade_no.as_str(), lost.out_trade_no.as_str()]
            ),
            "run {run}"
        );
        assert!(
            report
                .mismatches
                .iter()
                .all(|m| m.detail.contains("AMOUNT_MISMATCH")),
            "run {run}: {report:?}"
        );
    }
    for o in [&notified, &lost] {
        assert_eq!(f.order(o).await.status, OrderStatus::AmountMismatch);
        let kinds: Vec<AnomalyKind> = f
            .ctx
            .store
            .list_anomalies(&o.out_trade_no)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(kinds, [AnomalyKind::AmountMismatch], "{}", o.out_trade_no);
    }
}

/// Review finding: a run with a deadline (the Lambda's 900 s, merchant-api's 29 s) stops
/// before it, [`REPORT_MARGIN`] ahead, with an incomplete report the next run finishes; the
/// rows the table lacks are confirmed [`RECOVERIES_AT_ONCE`] at a time, never more; and
/// nothing is applied twice across the two runs.
#[tokio::test]
async fn a_run_stops_before_its_deadline_and_the_next_one_finishes_it_applying_nothing_twice() {
    use shared::service::{RECOVERIES_AT_ONCE, REPORT_MARGIN};
    let f = fixture("bill_deadline").await;
    const LOST: usize = 40;
    let mut lost = Vec::new();
    for _ in 0..LOST {
        lost.push(f.paid_unnotified(1).await);
    }
    let metered = Arc::new(Metered::new(f.gateway.clone()));
    let deps = Deps {
        gateway: metered.clone(),
        ..f.deps.clone()
    };
    // A slow WeChat Pay: each payment query answers after 400 ms.
    f.sim
        .inject_fault(Fault {
            delay_ms: 400,
            ..Fault::new("/v3/pay/transactions/out-trade-no/", 200, "SLOW", 1000)
        })
        .unwrap();
    let deadline = OffsetDateTime::now_utc() + REPORT_MARGIN + time::Duration::milliseconds(1500);
    let first = match reconcile_bill(&deps, today(), Some(deadline))
        .await
        .unwrap()
    {
        ReconcileOutcome::Incomplete(report) => *report,
        other => panic!("{other:?}"),
    };
    // Stopped in time, leaving room for the report's write.
    assert!(OffsetDateTime::now_utc() < deadline, "{first:?}");
    assert!(!first.complete);
    assert_eq!(first.rows, LOST as u64);
    assert!(
        first.recovered > 0 && first.recovered < LOST as u64,
        "{first:?}"
    );
    assert_eq!(first.mismatch_count, 0, "{first:?}");
    assert_eq!(
        f.ctx.store.get_bill_report(today()).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(metered.most_in_flight(), RECOVERIES_AT_ONCE);
    let mut paid_before = 0;
    for o in &lost {
        if f.order(o).await.status == OrderStatus::Paid {
            paid_before += 1;
        }
    }
    assert!(paid_before >= first.recovered, "{paid_before} {first:?}");
    assert!(paid_before < LOST as u64);

    // The next run, WeChat Pay fast again and no deadline: the rest, each once.
    f.sim.clear_faults();
    let second = f.reconcile(today()).await;
    assert!(second.complete);
    assert_eq!(second.recovered, LOST as u64 - paid_before, "{second:?}");
    assert_eq!(second.matched, paid_before, "{second:?}");
    assert_eq!(second.mismatch_count, 0, "{second:?}");
    for o in &lost {
        let order = f.order(o).await;
        assert_eq!(order.status, OrderStatus::Paid);
        let paid = order
            .history
            .iter()
            .filter(|h| h.to == OrderStatus::Paid)
            .count();
        assert_eq!(paid, 1, "{:?}", order.history);
    }

    // A run given no time at all does nothing but say so.
    let job = shared::reconciler::ReconcilerJob {
        deps: f.deps.clone(),
    };
    let day = serde_json::json!({"bill_date": shared::timefmt::date_string(today())});
    let out = shared::runtime::ScheduledJob::run_event(
        &job,
        &day,
        shared::runtime::Trigger::Manual,
        Some(OffsetDateTime::now_utc() + REPORT_MARGIN),
    )
    .await
    .unwrap();
    assert_eq!(out["outcome"], "incomplete", "{out}");
    assert_eq!(out["report"]["complete"], false, "{out}");
    assert_eq!(out["report"]["matched"], 0, "{out}");
}

/// Review finding: a refund row the table lacks (made in the merchant platform) is confirmed
/// by WeChat Pay's refund query and, its order being ours, recorded and moved through the
/// refund path as a notification would move it (refunded_total, status, event); a re-run
/// matches it. A refund of an order not ours, or one WeChat Pay's query does not confirm, is
/// reported as REFUND_UNKNOWN and the run goes on; a transient failure fails the run.
#[tokio::test]
async fn a_refund_the_table_lacks_is_confirmed_and_applied_through_the_refund_path() {
    let f = fixture("bill_recovers_unknown_refund").await;
    let o = f.paid(2).await;
    // Paid back at WeChat Pay; and another still being paid back (WeChat Pay wants refunds
    // of one order a minute apart: of another order).
    f.refunded_elsewhere(&o, "PLATFORM-REFUND-1", 500).await;
    f.sim
        .settle_refund("PLATFORM-REFUND-1", RefundState::Success, 0)
        .unwrap();
    let o2 = f.paid(1).await;
    f.refunded_elsewhere(&o2, "PLATFORM-REFUND-2", 300).await;
    // One WeChat Pay's query will refuse to confirm.
    let other = f.paid(1).await;
    f.refunded_elsewhere(&other, "PLATFORM-REFUND-3", 100).await;
    let refused_query = "/v3/refund/domestic/refunds/PLATFORM-REFUND-3";
    f.run_fails_while_down(refused_query, 500).await;
    f.sim
        .inject_fault(Fault::new(refused_query, 404, "RESOURCE_NOT_EXISTS", 10))
        .unwrap();

    let report = f.reconcile(today()).await;
    assert_eq!(report.rows, 6, "{report:?}");
    // The payments; the two refunds recorded now (or by the failed run first).
    assert_eq!(report.matched + report.recovered, 5, "{report:?}");
    assert_eq!(report.mismatch_count, 1, "{report:?}");
    let m = &report.mismatches[0];
    assert_eq!(
        (m.kind, m.out_refund_no.as_deref()),
        (BillMismatchKind::RefundUnknown, Some("PLATFORM-REFUND-3"))
    );
    assert!(m.detail.contains("does not know it"), "{m:?}");
    let refund = |no: &str| {
        let store = f.ctx.store.clone();
        let no = shared::domain::OutRefundNo::parse(no).unwrap();
        async move { store.get_refund(&no).await.unwrap() }
    };
    let settled = refund("PLATFORM-REFUND-1").await.expect("recorded");
    assert_eq!(settled.status, RefundStatus::Success);
    assert_eq!(settled.amount, fen(500));
    assert_eq!(settled.out_trade_no, o.out_trade_no);
    assert!(settled.restock.is_empty());
    // Filed under the day WeChat Pay accepted it: today's bill.
    assert_eq!(
        settled.submitted_at.unwrap().to_offset(CHINA).date(),
        today()
    );
    let open = refund("PLATFORM-REFUND-2").await.expect("recorded");
    assert_eq!(open.status, RefundStatus::Processing);
    assert_eq!(refund("PLATFORM-REFUND-3").await, None);
    let order = f.order(&o).await;
    assert_eq!(order.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order.refunded_total, fen(500));
    assert_eq!(order.refund_pending_total, fen(0));
    let order2 = f.order(&o2).await;
    assert_eq!(order2.status, OrderStatus::Paid);
    assert_eq!(order2.refund_pending_total, fen(300));
    assert_eq!(f.order(&other).await.refunded_total, fen(0));
    // As a notification's move: its event, once.
    assert_eq!(f.refunds_succeeded().await, 1);

    // The second is paid back later; a re-run settles it and applies nothing twice.
    f.sim
        .settle_refund("PLATFORM-REFUND-2", RefundState::Success, 0)
        .unwrap();
    let again = f.reconcile(today()).await;
    assert_eq!(
        (again.matched, again.recovered, again.mismatch_count),
        (4, 1, 1),
        "{again:?}"
    );
    let order2 = f.order(&o2).await;
    assert_eq!(order2.status, OrderStatus::PartiallyRefunded);
    assert_eq!(order2.refunded_total, fen(300));
    assert_eq!(order2.refund_pending_total, fen(0));
    let third = f.reconcile(today()).await;
    assert_eq!((third.matched, third.recovered), (5, 0), "{third:?}");
    assert_eq!(f.order(&o).await.refunded_total, fen(500));
    assert_eq!(f.order(&o2).await.refunded_total, fen(300));
    assert_eq!(f.refunds_succeeded().await, 2);
}

/// The refusal paths of an open refund's sync: WeChat Pay's query not knowing it, or refusing
/// for good, is a REFUND_STATE mismatch with the refund left as it is and the run going on;
/// a 5xx fails the run; once WeChat Pay answers, the refund settles.
#[tokio::test]
async fn an_open_refund_wechat_pay_will_not_confirm_is_reported_and_left_as_it_is() {
    let f = fixture("bill_refund_sync_refused").await;
    let o = f.paid(2).await;
    let no = f
        .refund_asked(&o, "bill-refund-refused", 400)
        .await
        .out_refund_no;
    f.sim
        .settle_refund(no.as_str(), RefundState::Success, 0)
        .unwrap();
    let query = format!("/v3/refund/domestic/refunds/{no}");
    for (status, code, says) in [
        (404, "RESOURCE_NOT_EXISTS", "does not know it"),
        (400, "PARAM_ERROR", "was refused"),
    ] {
        f.sim.clear_faults();
        f.sim
            .inject_fault(Fault::new(query.clone(), status, code, 10))
            .unwrap();
        let report = f.reconcile(today()).await;
        assert_eq!(
            (report.matched, report.recovered, report.mismatch_count),
            (1, 0, 1),
            "{code}: {report:?}"
        );
        let m = &report.mismatches[0];
        assert_eq!(m.kind, BillMismatchKind::RefundState, "{m:?}");
        assert!(m.detail.contains(says), "{m:?}");
        let kept = f.ctx.store.get_refund(&no).await.unwrap().unwrap();
        assert_eq!(kept.status, RefundStatus::Processing);
        assert_eq!(f.order(&o).await.refund_pending_total, fen(400));
    }
    f.run_fails_while_down(&query, 503).await;
    let report = f.reconcile(today()).await;
    assert_eq!(
        (report.matched, report.recovered, report.mismatch_count),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(f.order(&o).await.refunded_total, fen(400));
}

/// merchant-api over `deps`, opened by a bearer token (no WeChat mini-program API).
fn merchant_api(deps: &shared::service::Deps) -> shared::http::merchant::MerchantApiHandler {
    shared::http::merchant::MerchantApiHandler {
        deps: deps.clone(),
        auth: shared::config::MerchantAuth::Token(shared::config::Secret::new("m".repeat(40))),
        shipping: std::sync::Arc::new(shared::service::ShippingPorts::new(
            None,
            shared::service::TradeManaged::Off,
        )),
    }
}
