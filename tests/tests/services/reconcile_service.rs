//! The reconciliation use cases (`sweep_expired`, `query_order`) on a real store (embedded
//! Dynoxide) with a scripted `PayGateway` at the edge: the WeChat Pay answers the simulator
//! cannot be made to give on cue (a close refused because the order was paid meanwhile, an
//! ambiguous close, REFUND, an order WeChat Pay never saw) and a count of the calls made;
//! and DynamoDB failing on cue, after WeChat Pay answered, through an SDK interceptor.

use shared::store::StoreSupport;
use std::sync::Arc;

use shared::config::AuthMode;
use shared::domain::{Order, OrderStatus, Product};
use shared::http::{Bytes, Handler, identity::IdentitySettings, query_order::QueryOrderHandler};
use shared::service::{Deps, SweepSettings, SweepSummary, query_order, sweep_expired};
use shared::store::{ClientSettings, DynamoStore, Store, connect_static};
use shared::wechatpay::gateway::PayError;
use time::Duration;
use wxpay_tests::*;

struct Fixture {
    ctx: StoreCtx,
    gateway: Arc<Scripted>,
    deps: Deps,
    tea: Product,
}

async fn fixture(test: &str) -> Fixture {
    let ctx = StoreCtx::dynoxide(test).await;
    let tea = product("tea", 990, Some(100));
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
    /// A PENDING order that expired 30 minutes ago (created an hour ago).
    async fn expired_order(&self, quantity: i64) -> Order {
        let o = order_at(
            "o_recon",
            &[(&self.tea, quantity)],
            now_ms() - Duration::hours(1),
        );
        self.ctx
            .store
            .create_order(&fresh_claim(&o), &o)
            .await
            .unwrap();
        o
    }

    async fn status(&self, o: &Order) -> OrderStatus {
        self.ctx
            .store
            .get_order(&o.out_trade_no)
            .await
            .unwrap()
            .unwrap()
            .status
    }

    async fn reserved(&self) -> i64 {
        self.ctx
            .store
            .get_product(&self.tea.sku_id)
            .await
            .unwrap()
            .unwrap()
            .reserved
    }

    /// The fixture's ports, with DynamoDB failing on cue as `fail` says.
    fn deps_failing(&self, fail: &FailOn) -> Deps {
        Deps {
            store: Arc::new(DynamoStore::new(
                shared::store::with_interceptor(self.ctx.client(), fail.clone()),
                &self.ctx.table,
            )),
            ..self.deps.clone()
        }
    }

    async fn sweep(&self) -> SweepSummary {
        sweep_expired(&self.deps, &SweepSettings::default(), 4, None).await
    }
}

fn summary(scanned: u64, paid: u64, closed: u64, skipped: u64, failed: u64) -> SweepSummary {
    SweepSummary {
        scanned,
        paid,
        closed,
        skipped,
        failed,
        ..SweepSummary::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_refused_because_paid_meanwhile_is_queried_again_and_applied() {
    let f = fixture("close-refused-paid").await;
    let o = f.expired_order(2).await;
    f.gateway
        .query(Ok(txn(&o, "NOTPAY")))
        .query(Ok(txn(&o, "SUCCESS")));
    f.gateway.close(Err(api_error(400, "ORDER_PAID")));
    assert_eq!(f.sweep().await, summary(1, 1, 0, 0, 0));
    let no = o.out_trade_no.as_str();
    assert_eq!(
        f.gateway.calls(),
        [
            format!("query {no}"),
            format!("close {no}"),
            format!("query {no}")
        ]
    );
    assert_eq!(f.status(&o).await, OrderStatus::Paid);
    project_events(&f.ctx.store).await;
    assert_eq!(f.reserved().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_close_is_settled_by_the_next_query() {
    let f = fixture("ambiguous-close").await;
    let closed_there = f.expired_order(1).await;
    f.gateway
        .query(Ok(txn(&closed_there, "NOTPAY")))
        .query(Ok(txn(&closed_there, "CLOSED")));
    f.gateway
        .close(Err(PayError::Timeout(std::time::Duration::from_secs(3))));
    assert_eq!(f.sweep().await, summary(1, 0, 1, 0, 0));
    assert_eq!(f.status(&closed_there).await, OrderStatus::Closed);
    assert_eq!(f.reserved().await, 0, "stock returned");

    // Both the close and the query after it fail: nothing changes, the next run retries.
    let stuck = f.expired_order(3).await;
    f.gateway.query(Ok(txn(&stuck, "NOTPAY")));
    f.gateway.close(Err(PayError::Network("reset".into())));
    f.gateway.query(Err(PayError::Network("reset".into())));
    assert_eq!(f.sweep().await, summary(1, 0, 0, 0, 1));
    assert_eq!(f.status(&stuck).await, OrderStatus::Pending);
    assert_eq!(f.reserved().await, 3, "still reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_to_wechat_pay_closes_locally_and_refund_counts_as_paid() {
    let f = fixture("unknown-and-refund").await;
    let never_prepaid = f.expired_order(1).await;
    f.gateway.query(Err(api_error(404, "ORDER_NOT_EXIST")));
    assert_eq!(f.sweep().await, summary(1, 0, 1, 0, 0));
    assert_eq!(f.status(&never_prepaid).await, OrderStatus::Closed);
    assert!(
        f.gateway.count("close") == 0,
        "nothing to close at WeChat Pay"
    );

    let refunded = f.expired_order(1).await;
    f.gateway.query(Ok(txn(&refunded, "REFUND")));
    assert_eq!(f.sweep().await, summary(1, 1, 0, 0, 0));
    assert_eq!(f.status(&refunded).await, OrderStatus::Paid);

    // A 5xx on the query: failed, untouched.
    let flaky = f.expired_order(1).await;
    f.gateway.query(Err(api_error(500, "SYSTEM_ERROR")));
    assert_eq!(f.sweep().await, summary(1, 0, 0, 0, 1));
    assert_eq!(f.status(&flaky).await, OrderStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_ask_wechat_pay_once_per_interval() {
    let f = fixture("query-once").await;
    let o = order("o_recon", &[(&f.tea, 1)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&o), &o)
        .await
        .unwrap();
    f.ctx
        .store
        .record_prepay(&o.out_trade_no, "wx-prepay-1")
        .await
        .unwrap();
    f.gateway.query(Ok(txn(&o, "SUCCESS")));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (deps, no) = (f.deps.clone(), o.out_trade_no.clone());
        callers.spawn(async move { query_order(&deps, &openid("o_recon"), &no).await });
    }
    let views: Vec<_> = callers
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("query succeeds"))
        .collect();
    let queries = f.gateway.count("query");
    assert_eq!(queries, 1, "one WeChat Pay query for 20 concurrent callers");
    let synced = views.iter().filter(|v| v.synced).count();
    assert!(synced >= 1);
    // The claimant applied the payment before answering.
    assert!(
        views
            .iter()
            .any(|v| v.order.status == OrderStatus::Paid && v.synced)
    );
    assert_eq!(f.status(&o).await, OrderStatus::Paid);
    // Pending answers carried pay params; the paid one does not.
    for v in &views {
        assert_eq!(
            v.pay_params.is_some(),
            v.order.status == OrderStatus::Pending
        );
    }
}

/// A store whose endpoint refuses connections, with short timeouts.
fn unreachable_store() -> DynamoStore {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let settings = ClientSettings {
        operation_timeout: std::time::Duration::from_secs(2),
        attempt_timeout: std::time::Duration::from_millis(500),
        connect_timeout: std::time::Duration::from_millis(200),
        max_attempts: 2,
    };
    DynamoStore::new(connect_static(&endpoint, "us-east-1", &settings), "orders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_each_shard_and_answers_503_to_queries() {
    let f = fixture("store-down").await;
    let deps = Deps {
        store: Arc::new(unreachable_store()),
        ..f.deps.clone()
    };
    // Each shard's index query fails: counted, nothing asked of WeChat Pay.
    let summary = sweep_expired(&deps, &SweepSettings::default(), 4, None).await;
    assert_eq!(
        summary,
        SweepSummary {
            failed: 4,
            ..SweepSummary::default()
        }
    );
    assert!(f.gateway.calls().is_empty());

    // query-order answers 503 STORE_UNAVAILABLE (retryable), not a 500 or a stale answer.
    let handler = QueryOrderHandler {
        deps,
        identity: IdentitySettings {
            mode: AuthMode::Authorizer,
            openid_claim: "openid".into(),
            allow_debug_identity: true,
            verifier: None,
        },
    };
    for uri in ["/orders/01JDQ8ZP5V9X8Y7W6T5S4R3Q2P", "/orders"] {
        let request = http::Request::builder()
            .uri(uri)
            .header("x-debug-openid", "o_recon")
            .body(Bytes::new())
            .unwrap();
        let r = handler.handle(request).await;
        assert_eq!(r.status(), 503, "{uri}");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["code"], "STORE_UNAVAILABLE", "{uri}");
    }
}

/// Fails the next `remaining` calls of one DynamoDB operation before they are sent, like a
/// throttled or unreachable table; every other call goes through.
#[derive(Debug, Clone)]
struct FailOn {
    operation: &'static str,
    remaining: Arc<std::sync::atomic::AtomicU32>,
}

impl FailOn {
    fn new(operation: &'static str, times: u32) -> Self {
        FailOn {
            operation,
            remaining: Arc::new(std::sync::atomic::AtomicU32::new(times)),
        }
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for FailOn {
    fn name(&self) -> &'static str {
        "FailOn"
    }

    fn read_before_serialization(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::sync::atomic::Ordering;
        let this_one = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .is_some_and(|m| m.name() == self.operation);
        if this_one
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(format!("injected {} failure", self.operation).into());
        }
        Ok(())
    }
}

/// DESIGN.md invariant 6 in the sweeper: WeChat Pay has answered (closed there, or paid) but
/// the local write fails. The order is counted `failed`, left PENDING with its stock
/// reserved, and the next sweep (once the claim's lease is over) finishes it from WeChat Pay's
/// answer, without a second close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_after_wechat_pay_answered_is_finished_by_the_next_sweep() {
    let f = fixture("store-fails-late").await;
    let fail = FailOn::new("TransactWriteItems", 1);
    let deps = f.deps_failing(&fail);
    let settings = SweepSettings {
        lease: Duration::milliseconds(300),
        ..SweepSettings::default()
    };
    let sweep = || sweep_expired(&deps, &settings, 4, None);

    use std::sync::atomic::Ordering::SeqCst;
    let after_the_lease = || tokio::time::sleep(std::time::Duration::from_millis(400));

    // Closed at WeChat Pay, then the local close transaction fails.
    let closing = f.expired_order(2).await;
    f.gateway.query(Ok(txn(&closing, "NOTPAY")));
    f.gateway.close(Ok(()));
    assert_eq!(sweep().await, summary(1, 0, 0, 0, 1));
    assert_eq!(
        fail.remaining.load(SeqCst),
        0,
        "the close transaction was refused"
    );
    assert_eq!(f.status(&closing).await, OrderStatus::Pending);
    assert_eq!(
        f.reserved().await,
        2,
        "nothing half-done: stock still reserved"
    );
    // Next sweep: WeChat Pay says CLOSED, so it is closed locally, not closed there again.
    after_the_lease().await;
    f.gateway.query(Ok(txn(&closing, "CLOSED")));
    assert_eq!(sweep().await, summary(1, 0, 1, 0, 0));
    assert_eq!(f.status(&closing).await, OrderStatus::Closed);
    assert_eq!(f.reserved().await, 0, "stock returned once");
    assert_eq!(f.gateway.count("close"), 1, "{:?}", f.gateway.calls());

    // Paid at WeChat Pay, then the local mark_paid transaction fails: no payment item either.
    let paying = f.expired_order(1).await;
    fail.remaining.store(1, SeqCst);
    f.gateway.query(Ok(txn(&paying, "SUCCESS")));
    assert_eq!(sweep().await, summary(1, 0, 0, 0, 1));
    assert_eq!(
        fail.remaining.load(SeqCst),
        0,
        "the mark_paid transaction was refused"
    );
    assert_eq!(f.status(&paying).await, OrderStatus::Pending);
    let transaction_id = txn(&paying, "SUCCESS").transaction_id.expect("paid");
    let payment_stored = || async { f.ctx.store.get_payment(&transaction_id).await.unwrap() };
    assert!(payment_stored().await.is_none());
    assert_eq!(f.reserved().await, 1);
    after_the_lease().await;
    f.gateway.query(Ok(txn(&paying, "SUCCESS")));
    assert_eq!(sweep().await, summary(1, 1, 0, 0, 0));
    assert_eq!(f.status(&paying).await, OrderStatus::Paid);
    assert!(payment_stored().await.is_some());
    project_events(&f.ctx.store).await;
    assert_eq!(f.reserved().await, 0, "paid stock moved to sold");
}

// ---- issue 12: nothing keeps an order from closing ----------------------------------------

fn owner_handler(deps: Deps) -> QueryOrderHandler {
    QueryOrderHandler {
        deps,
        identity: IdentitySettings {
            mode: AuthMode::Authorizer,
            openid_claim: "openid".into(),
            allow_debug_identity: true,
            verifier: None,
        },
    }
}

async fn call(
    handler: &QueryOrderHandler,
    method: &str,
    uri: &str,
    openid: &str,
) -> (u16, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("x-debug-openid", openid)
        .body(Bytes::new())
        .unwrap();
    let r = handler.handle(request).await;
    let body = serde_json::from_slice(r.body()).unwrap_or(serde_json::Value::Null);
    (r.status().as_u16(), body)
}

/// A reader's sync claim (taken moments ago, well inside the sweeper's lease) does not keep
/// the sweeper from closing the order: they claim different attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_claim_never_keeps_the_sweeper_out() {
    let f = fixture("reader-claim").await;
    let o = f.expired_order(2).await;
    let claimed = f
        .ctx
        .store
        .claim_sync(
            &o.out_trade_no,
            Some(&openid("o_recon")),
            now_ms(),
            shared::service::SYNC_INTERVAL,
        )
        .await
        .unwrap();
    assert!(matches!(claimed, shared::store::SyncClaim::Claimed(_)));
    f.gateway.query(Ok(txn(&o, "NOTPAY")));
    f.gateway.close(Ok(()));
    assert_eq!(f.sweep().await, summary(1, 0, 1, 0, 0));
    assert_eq!(f.status(&o).await, OrderStatus::Closed);
    assert_eq!(f.reserved().await, 0);
    // Two sweeps still split the work: the sweeper's own lease keeps a second one out.
    let held = f.expired_order(1).await;
    let first = f
        .ctx
        .store
        .claim_sweep(&held.out_trade_no, now_ms(), Duration::seconds(30))
        .await
        .unwrap();
    assert!(matches!(first, shared::store::SyncClaim::Claimed(_)));
    assert_eq!(f.sweep().await, summary(1, 0, 0, 1, 0));
    assert!(
        f.gateway.calls().len() == 2,
        "no WeChat Pay call for a leased order"
    );
}

/// A query of an expired PENDING order closes it (WeChat Pay first, then locally, stock
/// back) before answering; one found paid is applied instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_of_an_expired_order_closes_it_before_answering() {
    let f = fixture("query-expired").await;
    let handler = owner_handler(f.deps.clone());
    let o = f.expired_order(2).await;
    f.gateway.query(Ok(txn(&o, "NOTPAY")));
    f.gateway.close(Ok(()));
    let (status, body) = call(
        &handler,
        "GET",
        &format!("/orders/{}", o.out_trade_no),
        "o_recon",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CLOSED", "{body}");
    assert_eq!(body["synced"], true);
    assert_eq!(f.status(&o).await, OrderStatus::Closed);
    assert_eq!(f.reserved().await, 0, "stock returned");
    let no = o.out_trade_no.as_str();
    assert_eq!(
        f.gateway.calls(),
        [format!("query {no}"), format!("close {no}")]
    );

    let paid = f.expired_order(1).await;
    f.gateway.query(Ok(txn(&paid, "SUCCESS")));
    let (_, body) = call(
        &handler,
        "GET",
        &format!("/orders/{}", paid.out_trade_no),
        "o_recon",
    )
    .await;
    assert_eq!(body["status"], "PAID", "{body}");
    assert_eq!(f.status(&paid).await, OrderStatus::Paid);
    // Issue 12.9: the payment learned by querying keeps the answer's Request-ID.
    let transaction_id = txn(&paid, "SUCCESS").transaction_id.unwrap();
    let payment = f
        .ctx
        .store
        .get_payment(&transaction_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.request_id.as_deref(), Some(SCRIPTED_REQUEST_ID));
}

/// Issue 12.4: a trade state this code does not know is not a reason to loop forever: the
/// close at WeChat Pay decides, and a refused close is queried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_trade_state_is_closed_at_wechat_pay_not_retried_forever() {
    let f = fixture("unknown-state").await;
    let o = f.expired_order(1).await;
    f.gateway.query(Ok(txn(&o, "ACCEPT")));
    f.gateway.close(Ok(()));
    assert_eq!(f.sweep().await, summary(1, 0, 1, 0, 0));
    assert_eq!(f.status(&o).await, OrderStatus::Closed);
    for state in ["REVOKED", "PAYERROR"] {
        let o = f.expired_order(1).await;
        f.gateway.query(Ok(txn(&o, state)));
        f.gateway.close(Ok(()));
        assert_eq!(f.sweep().await, summary(1, 0, 1, 0, 0), "{state}");
        assert_eq!(f.status(&o).await, OrderStatus::Closed, "{state}");
    }
}

/// Issue 12.3: a wrong-amount payment found by the sweeper is recorded once and the order
/// leaves PENDING, so the next sweep does not ask about it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_mismatch_found_by_the_sweeper_is_recorded_once_and_not_swept_again() {
    let f = fixture("mismatch-once").await;
    let o = f.expired_order(2).await;
    let mut wrong = txn(&o, "SUCCESS");
    if let Some(a) = wrong.amount.as_mut() {
        a.total = 1;
        a.payer_total = Some(1);
    }
    f.gateway.query(Ok(wrong));
    let first = f.sweep().await;
    assert_eq!((first.scanned, first.anomalies), (1, 1), "{first:?}");
    assert_eq!(f.status(&o).await, OrderStatus::AmountMismatch);
    assert_eq!(f.sweep().await, SweepSummary::default(), "not due any more");
    assert_eq!(f.gateway.count("query"), 1);
    let anomalies = f.ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(
        f.reserved().await,
        2,
        "the held order's stock stays reserved"
    );
}

/// `POST /orders/{out_trade_no}/close`: the owner gives up an unpaid order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_closes_an_unpaid_order_on_demand() {
    let f = fixture("close-on-demand").await;
    let handler = owner_handler(f.deps.clone());
    let o = order("o_recon", &[(&f.tea, 3)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&o), &o)
        .await
        .unwrap();
    let uri = format!("/orders/{}/close", o.out_trade_no);

    // Someone else's (or a malformed number): 404, nothing asked of WeChat Pay.
    let (status, body) = call(&handler, "POST", &uri, "o_mallory").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ORDER_NOT_FOUND"))
    );
    let (status, _) = call(&handler, "POST", "/orders/nope/close", "o_recon").await;
    assert_eq!(status, 404);
    let (status, _) = call(&handler, "GET", &uri, "o_recon").await;
    assert_eq!(status, 405);
    assert!(f.gateway.calls().is_empty());

    // WeChat Pay unreachable: 502, still PENDING, stock still held.
    f.gateway.query(Err(PayError::Network("reset".into())));
    let (status, body) = call(&handler, "POST", &uri, "o_recon").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("PAYMENT_PROVIDER_ERROR")),
        "{body}"
    );
    assert_eq!(f.status(&o).await, OrderStatus::Pending);
    assert_eq!(f.reserved().await, 3);

    // The user is paying right now: 409 ORDER_PAYING with Retry-After, nothing closed.
    f.gateway.query(Ok(txn(&o, "USERPAYING")));
    let request = http::Request::builder()
        .method("POST")
        .uri(&uri)
        .header("x-debug-openid", "o_recon")
        .body(Bytes::new())
        .unwrap();
    let r = handler.handle(request).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body["code"], "ORDER_PAYING", "{body}");
    assert_eq!(f.status(&o).await, OrderStatus::Pending);
    assert_eq!(f.gateway.count("close"), 0, "not closed at WeChat Pay");

    f.gateway.query(Ok(txn(&o, "NOTPAY")));
    f.gateway.close(Ok(()));
    let (status, body) = call(&handler, "POST", &uri, "o_recon").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CLOSED");
    assert_eq!(f.status(&o).await, OrderStatus::Closed);
    assert_eq!(f.reserved().await, 0, "stock returned");
    let history = f
        .ctx
        .store
        .get_order(&o.out_trade_no)
        .await
        .unwrap()
        .unwrap()
        .history;
    let cause = &history.last().unwrap().cause;
    assert!(cause.starts_with("closed by its owner"), "{history:?}");
    // Issue 12.9: the Request-ID of WeChat Pay's close answer is kept with the order.
    assert!(cause.contains(SCRIPTED_REQUEST_ID), "{cause}");
    // Again: 200, unchanged, WeChat Pay not asked.
    let calls = f.gateway.calls().len();
    let (status, body) = call(&handler, "POST", &uri, "o_recon").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("CLOSED")));
    assert_eq!(f.gateway.calls().len(), calls);

    // Paid at WeChat Pay meanwhile: the close is refused there, the payment applied, 409.
    let p = order("o_recon", &[(&f.tea, 1)]);
    f.ctx
        .store
        .create_order(&fresh_claim(&p), &p)
        .await
        .unwrap();
    f.gateway.query(Ok(txn(&p, "NOTPAY")));
    f.gateway.close(Err(api_error(400, "ORDERPAID")));
    f.gateway.query(Ok(txn(&p, "SUCCESS")));
    let (status, body) = call(
        &handler,
        "POST",
        &format!("/orders/{}/close", p.out_trade_no),
        "o_recon",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("ORDER_PAID")),
        "{body}"
    );
    assert_eq!(f.status(&p).await, OrderStatus::Paid);
    // And once PAID: 409 without asking anyone.
    let calls = f.gateway.calls().len();
    let (status, _) = call(
        &handler,
        "POST",
        &format!("/orders/{}/close", p.out_trade_no),
        "o_recon",
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(f.gateway.calls().len(), calls);
}

// ---- issue 12.6: idempotency keys never stick ---------------------------------------------

fn place_request(key: &str, deadline: time::OffsetDateTime) -> shared::service::PlaceOrderRequest {
    shared::service::PlaceOrderRequest {
        openid: openid("o_recon"),
        idempotency_key: wxpay_tests::key(key),
        input: shared::service::PlaceOrderInput::parse(
            br#"{"items":[{"sku_id":"tea","quantity":2}]}"#,
        )
        .unwrap(),
        deadline: Some(deadline),
    }
}

/// WeChat Pay refuses the prepay and the store then refuses to release the key: the key's
/// lock still expires, and the retry after it places the order afresh (the closed one is
/// nobody's to pay), instead of a 24-hour 409 or 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_release_failed_is_free_again_once_its_lock_expires() {
    use shared::service::{PlaceOrderError, place_order};
    let f = fixture("key-release-fails").await;
    let fail = FailOn::new("DeleteItem", 1);
    let deps = f.deps_failing(&fail);
    f.gateway.prepay(Err(api_error(500, "SYSTEM_ERROR")));
    let lock = now_ms() + Duration::milliseconds(400);
    let first = place_order(&deps, place_request("stuck-1", lock)).await;
    assert!(
        matches!(first, Err(PlaceOrderError::PaymentProvider(_))),
        "{first:?}"
    );
    assert_eq!(
        fail.remaining.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the release was refused"
    );
    assert_eq!(f.reserved().await, 0, "the refused order was closed");
    // Within the lock: the key is still held.
    let again = place_order(&deps, place_request("stuck-1", lock)).await;
    assert!(
        matches!(again, Err(PlaceOrderError::KeyInUse { .. })),
        "{again:?}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    f.gateway
        .prepay(Ok(shared::wechatpay::gateway::PrepayResponse {
            prepay_id: "wx-prepay-fresh".into(),
            request_id: Some("REQ-PREPAY".into()),
        }));
    let retried = place_order(
        &deps,
        place_request("stuck-1", now_ms() + Duration::seconds(5)),
    )
    .await
    .expect("the retry places the order");
    assert_eq!(retried.completion.status_code(), 201, "{}", retried.body);
    let body: serde_json::Value = serde_json::from_str(&retried.body).unwrap();
    let no = body["out_trade_no"].as_str().unwrap();
    let prepays: Vec<_> = f
        .gateway
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("prepay"))
        .collect();
    assert_eq!(prepays.len(), 2);
    assert_eq!(
        prepays[1],
        format!("prepay {no}"),
        "a fresh order, not the closed one"
    );
    assert_ne!(prepays[0], prepays[1]);
    assert_eq!(f.reserved().await, 2, "only the new order holds stock");
    // And it is the key's answer from now on.
    let replay = place_order(
        &deps,
        place_request("stuck-1", now_ms() + Duration::seconds(5)),
    )
    .await
    .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.body, retried.body);
}

/// A request that died after creating its order, whose order was then paid: the retry
/// answers the paid order (200, no second order, no 502), and so does every later retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_an_order_paid_meanwhile_answers_the_paid_order() {
    use shared::idempotency::{IdempotencyScope, NewIdempotencyClaim};
    use shared::service::place_order;
    let f = fixture("key-paid-meanwhile").await;
    let request = place_request("paid-1", now_ms() + Duration::seconds(5));
    let o = order("o_recon", &[(&f.tea, 2)]);
    let claim = NewIdempotencyClaim::new(
        IdempotencyScope::new(openid("o_recon"), wxpay_tests::key("paid-1")),
        request.input.request_hash(),
        "crashed-owner",
        now_ms(),
        now_ms() + Duration::milliseconds(200),
    );
    f.ctx.store.create_order(&claim, &o).await.unwrap();
    f.ctx
        .store
        .mark_paid(&o, &payment(&o, "4200000000202612070000000123"), now_ms())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let reply = place_order(&f.deps, request.clone())
        .await
        .expect("answered");
    assert_eq!(reply.completion.status_code(), 200, "{}", reply.body);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["out_trade_no"], o.out_trade_no.as_str());
    assert_eq!(body["status"], "PAID");
    assert_eq!(body["transaction_id"], "4200000000202612070000000123");
    assert!(body.get("pay_params").is_none());
    assert!(f.gateway.calls().is_empty(), "nothing asked of WeChat Pay");
    assert_eq!(
        f.ctx
            .store
            .list_orders(&openid("o_recon"), 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let replay = place_order(&f.deps, request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(
        (replay.completion.status_code(), replay.body),
        (200, reply.body)
    );
}
