//! The notify endpoint's answers that the end-to-end suite does not reach: verified
//! notifications that cannot be applied (another merchant's, malformed: 400 FAIL, WeChat Pay
//! keeps retrying so a fixed configuration still applies it; no order changed, the plaintext
//! kept as an anomaly), another currency (held as AMOUNT_MISMATCH), a store that cannot be
//! reached (500 FAIL: WeChat Pay retries; nothing half-applied); and what a notification
//! costs in DynamoDB calls. The real handler, over embedded Dynoxide.

use shared::store::StoreSupport;
use std::{sync::Arc, time::Duration};

use shared::domain::OrderStatus;
use shared::store::AnomalyKind;
use shared::{
    domain::Order,
    http::{Bytes, Handler, payment_callback::PaymentCallbackHandler},
    service::{Deps, ServiceSettings, system_clock},
    store::{ClientSettings, DynamoStore, Store, connect_static},
    wechatpay::{
        ApiV3Key, HttpPayGateway, NotificationDraft, RetryPolicy, RsaPrivateKey, RsaPublicKey,
        build_notification, client::GatewaySettings,
    },
};
use wxpay_tests::aws_sdk_dynamodb::types::AttributeValue;
use wxpay_tests::{StoreCtx, fresh_claim, order, product};

const APPID: &str = "wx2421b1c4370ec43b";
const MCHID: &str = "1900007291";
const APIV3: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn deps(store: Arc<dyn Store>) -> Deps {
    let gateway = HttpPayGateway::new(GatewaySettings {
        // Never called: verifying a notification needs no network.
        api_base: "http://127.0.0.1:9".into(),
        appid: APPID.into(),
        mchid: MCHID.into(),
        mch_serial_no: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        mch_private_key: Some(
            RsaPrivateKey::from_pkcs8_pem(&pem("test_merchant_key.pem")).unwrap(),
        ),
        apiv3_key: ApiV3Key::new(APIV3).unwrap(),
        public_key: Some((
            PUB_KEY_ID.into(),
            RsaPublicKey::from_spki_pem(&pem("test_platform_public.pem")).unwrap(),
        )),
        notify_url: None,
        retry: RetryPolicy::default(),
        certificate_refresh_interval: Duration::from_secs(60),
        certificate_max_age: shared::wechatpay::client::CERTIFICATE_MAX_AGE,
    })
    .unwrap();
    Deps {
        store,
        gateway: Arc::new(gateway),
        clock: system_clock(),
        settings: ServiceSettings {
            appid: APPID.into(),
            mchid: MCHID.into(),
            order_ttl: time::Duration::minutes(30),
        },
        catalog: Default::default(),
    }
}

/// A correctly signed and sealed TRANSACTION.SUCCESS for `out_trade_no` as `appid`/`mchid`.
fn notification(
    appid: &str,
    mchid: &str,
    out_trade_no: &str,
    amount: i64,
) -> shared::http::Request {
    let txn = serde_json::json!({
        "appid": appid, "mchid": mchid, "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202611240000000042", "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": "2026-11-24T12:01:02+08:00", "payer": {"openid": "o_alice"},
        "amount": {"total": amount, "payer_total": amount, "currency": "CNY", "payer_currency": "CNY"}
    })
    .to_string();
    sealed("n-edge", &txn)
}

/// A correctly signed TRANSACTION.SUCCESS notification `id` whose resource decrypts to
/// `plaintext`, whatever it says.
fn sealed(id: &str, plaintext: &str) -> shared::http::Request {
    let draft = NotificationDraft::transaction_success(
        id,
        "2026-11-24T12:01:03+08:00",
        plaintext.as_bytes(),
    );
    signed(&draft)
}

/// `draft` signed with the test platform key and sealed with the APIv3 key, as a request to
/// the notify endpoint.
fn signed(draft: &NotificationDraft<'_>) -> shared::http::Request {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let platform = RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap();
    let (headers, body) = build_notification(
        &platform,
        PUB_KEY_ID,
        &ApiV3Key::new(APIV3).unwrap(),
        draft,
        now,
    );
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/notify/wechatpay")
        .body(Bytes::from(body))
        .unwrap();
    *request.headers_mut() = headers;
    request
}

fn fail_body(response: &shared::http::Response) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["code"], "FAIL", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

/// A fresh store with one PENDING order of 2 teas (1,980 fen) and the real handler over it.
async fn pending_order(test: &str) -> (StoreCtx, Order, PaymentCallbackHandler) {
    let ctx = StoreCtx::dynoxide(test).await;
    let tea = product("sku-tea", 990, Some(10));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, 2)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    let handler = PaymentCallbackHandler::new(deps(Arc::new(ctx.store.clone())));
    (ctx, o, handler)
}

#[tokio::test]
async fn a_verified_notification_for_another_merchant_is_refused_and_kept_not_applied() {
    let (ctx, o, handler) = pending_order("another_merchant").await;

    for (appid, mchid) in [("wxOTHERAPP0000000", MCHID), (APPID, "1900000001")] {
        let r = handler
            .handle(notification(appid, mchid, o.out_trade_no.as_str(), 1980))
            .await;
        assert_eq!(r.status(), 400, "{appid}/{mchid}");
        assert!(
            fail_body(&r)["message"]
                .as_str()
                .unwrap()
                .contains("not this merchant")
        );
    }
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::domain::OrderStatus::Pending);
    assert!(
        ctx.store
            .get_payment("4200000000202611240000000042")
            .await
            .unwrap()
            .is_none()
    );
    // Verified, so kept (issue 20.6): one anomaly for the notification id, with its text.
    let kept = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].kind, AnomalyKind::MalformedNotification);
    assert_eq!(kept[0].cause, "n-edge");
    assert!(
        kept[0]
            .plaintext
            .as_deref()
            .unwrap()
            .contains("wxOTHERAPP0000000")
    );

    // control: the same notification for this merchant applies
    let r = handler
        .handle(notification(APPID, MCHID, o.out_trade_no.as_str(), 1980))
        .await;
    assert_eq!(r.status(), 204);
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::domain::OrderStatus::Paid);
}

#[tokio::test]
async fn an_unreachable_store_answers_500_so_wechat_pay_retries() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let settings = ClientSettings {
        operation_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(200),
        max_attempts: 2,
    };
    let store = DynamoStore::new(connect_static(&endpoint, "us-east-1", &settings), "orders");
    let handler = PaymentCallbackHandler::new(deps(Arc::new(store)));
    let r = handler
        .handle(notification(
            APPID,
            MCHID,
            "01JDQ8ZP5V9X8Y7W6T5S4R3Q2P",
            1980,
        ))
        .await;
    assert_eq!(r.status(), 500);
    fail_body(&r);
}

/// DESIGN 5: the first delivery applies PAID in one transaction without reading the order
/// (conditional on PENDING and the amount); every later delivery is that same transaction,
/// refused, and answered from the order it returns (ALL_OLD): one call each.
#[tokio::test]
async fn a_notification_costs_one_dynamodb_call_first_and_one_as_a_duplicate() {
    let (ctx, o, handler) = pending_order("notification_calls").await;
    let deliver = || notification(APPID, MCHID, o.out_trade_no.as_str(), 1980);

    ctx.counter.reset();
    let request = deliver();
    let (raw, signature) = (
        String::from_utf8(request.body().to_vec()).unwrap(),
        request.headers()["wechatpay-signature"]
            .to_str()
            .unwrap()
            .to_owned(),
    );
    assert_eq!(handler.handle(request).await.status(), 204);
    let first = ctx.counter.snapshot();
    assert_eq!(first.calls_of("TransactWriteItems"), 1, "{first:?}");
    assert_eq!(first.total_calls(), 1, "{first:?}");
    // Issue 12.9: the notification as received rode in that transaction.
    let kept = ctx
        .store
        .get_notification("n-edge")
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(kept.body, raw);
    assert_eq!(kept.outcome, "applied");
    assert_eq!(kept.out_trade_no.as_ref(), Some(&o.out_trade_no));
    assert!(
        kept.headers
            .contains(&("wechatpay-signature".to_owned(), signature)),
        "{:?}",
        kept.headers
    );
    for name in ["wechatpay-serial", "wechatpay-timestamp", "wechatpay-nonce"] {
        assert!(kept.headers.iter().any(|(k, _)| k == name), "{name}");
    }

    for _ in 0..3 {
        ctx.counter.reset();
        assert_eq!(handler.handle(deliver()).await.status(), 204);
        let again = ctx.counter.snapshot();
        assert_eq!(again.calls_of("TransactWriteItems"), 1, "{again:?}");
        assert_eq!(again.total_calls(), 1, "{again:?}");
    }
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::domain::OrderStatus::Paid);
    assert_eq!(stored.version, o.version + 1, "one transition");
    assert_eq!(stored.paid_version, Some(stored.version));
    assert_eq!(stored.notification_id.as_deref(), Some("n-edge"));
    let last = stored.history.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (
            Some(shared::domain::OrderStatus::Pending),
            shared::domain::OrderStatus::Paid
        )
    );
    // Out of the sweeper's index, as a read-planned PAID leaves it.
    let due = ctx
        .store
        .due_pending(
            o.out_trade_no.shard(4),
            o.expire_at + time::Duration::days(1),
            100,
            None,
        )
        .await
        .unwrap();
    assert!(due.items.iter().all(|d| d.out_trade_no != o.out_trade_no));
}

/// A verified payment of this merchant with `amount` edited by `edit`.
fn payment_notification(
    id: &str,
    out_trade_no: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> shared::http::Request {
    let mut txn = serde_json::json!({
        "appid": APPID, "mchid": MCHID, "out_trade_no": out_trade_no,
        "transaction_id": format!("42000000002026112400000{id}"), "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "trade_state_desc": "ok", "bank_type": "OTHERS",
        "success_time": "2026-11-24T12:01:02+08:00", "payer": {"openid": "o_alice"},
        "amount": {"total": 1980, "payer_total": 1980, "currency": "CNY", "payer_currency": "CNY"}
    });
    edit(&mut txn);
    sealed(&format!("n-{id}"), &txn.to_string())
}

/// Issue 20.2: the right total in another currency is not this order's payment: the order
/// is held as AMOUNT_MISMATCH with the anomaly, never PAID.
#[tokio::test]
async fn a_payment_in_another_currency_is_an_amount_mismatch_not_paid() {
    let (ctx, o, handler) = pending_order("currency").await;
    let r = handler
        .handle(payment_notification(
            "10001",
            o.out_trade_no.as_str(),
            |t| {
                t["amount"]["currency"] = "USD".into();
            },
        ))
        .await;
    assert_eq!(r.status(), 204);
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::AmountMismatch);
    let kept = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].kind, AnomalyKind::AmountMismatch);
    assert!(kept[0].detail.contains("USD"), "{}", kept[0].detail);
    let payment = ctx
        .store
        .get_payment(kept[0].transaction_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.currency, "USD");
}

/// Issue 20.3 and 20.6: a verified notification whose content cannot be a payment
/// (payer_total above total, plaintext that is not JSON, not a transaction) answers 400,
/// changes no order, and is kept once with its plaintext, however often it is re-sent.
#[tokio::test]
async fn verified_but_malformed_notifications_answer_400_and_are_kept_with_their_plaintext() {
    let (ctx, o, handler) = pending_order("malformed").await;
    let no = o.out_trade_no.as_str();
    let cases: Vec<(&str, shared::http::Request)> = vec![
        (
            "payer_total",
            payment_notification("10002", no, |t| {
                t["amount"]["payer_total"] = i64::MAX.into();
            }),
        ),
        (
            "currency code",
            payment_notification("10003", no, |t| {
                t["amount"]["currency"] = "cn\u{1}y".into();
            }),
        ),
        (
            "transaction_id",
            payment_notification("10004", no, |t| {
                t["transaction_id"] = "42\n000".into();
            }),
        ),
        (
            "payer.openid",
            payment_notification("10007", no, |t| {
                t["payer"]["openid"] = "o friend\n".into();
            }),
        ),
        (
            "decrypted transaction",
            sealed("n-10005", "this is not JSON"),
        ),
        (
            "decrypted transaction",
            sealed("n-10006", r#"{"out_trade_no": 7}"#),
        ),
    ];
    for (why, request) in cases {
        for _ in 0..3 {
            let r = handler.handle(request.clone()).await;
            assert_eq!(r.status(), 400, "{why}");
            let body = fail_body(&r);
            assert!(
                body["message"].as_str().unwrap().contains(why),
                "{why}: {body}"
            );
        }
    }
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored, o, "no order changed");
    let mut kept = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    assert_eq!(kept.len(), 4, "once per notification: {kept:?}");
    kept.sort_by(|a, b| a.cause.cmp(&b.cause));
    assert_eq!(
        kept.iter().map(|a| a.cause.as_str()).collect::<Vec<_>>(),
        ["n-10002", "n-10003", "n-10004", "n-10007"]
    );
    assert!(
        kept.iter()
            .all(|a| a.kind == AnomalyKind::MalformedNotification)
    );
    assert!(
        kept[0]
            .plaintext
            .as_deref()
            .unwrap()
            .contains("9223372036854775807")
    );
    // The ones that name no readable order are kept too (under no order).
    let raw = ctx
        .client()
        .query()
        .table_name(&ctx.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S("ANOMALY#-".into()),
        )
        .send()
        .await
        .unwrap();
    let texts: Vec<_> = raw
        .items()
        .iter()
        .map(|i| i["plaintext"].as_s().unwrap().clone())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts.contains(&"this is not JSON".to_owned()));
}

/// Issue 12.9: every notification that passes verification is kept for 30 days, whatever
/// became of it: ignored ones, refused ones, anomalies, and each with the outcome.
#[tokio::test]
async fn every_verified_notification_is_kept_with_its_outcome() {
    let (ctx, o, handler) = pending_order("audit").await;
    let no = o.out_trade_no.as_str();
    let unpaid = payment_notification("20001", no, |t| {
        t["trade_state"] = "NOTPAY".into();
    });
    assert_eq!(handler.handle(unpaid).await.status(), 204);
    let malformed = payment_notification("20002", no, |t| {
        t["amount"]["payer_total"] = 99_999.into();
    });
    assert_eq!(handler.handle(malformed).await.status(), 400);
    let wrong_amount = payment_notification("20003", no, |t| {
        t["amount"]["total"] = 1.into();
        t["amount"]["payer_total"] = 1.into();
    });
    assert_eq!(handler.handle(wrong_amount).await.status(), 204);
    let after_held = payment_notification("20004", no, |_| {});
    assert_eq!(handler.handle(after_held).await.status(), 204);
    let expect = [
        ("n-20001", "ignored"),
        ("n-20002", "rejected:malformed"),
        ("n-20003", "anomaly:amount_mismatch"),
        ("n-20004", "anomaly:double_payment"),
    ];
    for (id, outcome) in expect {
        let kept = ctx
            .store
            .get_notification(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id}"));
        assert_eq!(kept.outcome, outcome, "{id}");
        assert_eq!(kept.out_trade_no.as_ref(), Some(&o.out_trade_no), "{id}");
        let envelope: serde_json::Value = serde_json::from_str(&kept.body).unwrap();
        assert_eq!(envelope["id"], id);
        let age = kept.received_at - time::OffsetDateTime::now_utc();
        assert!(age.whole_seconds().abs() < 60);
    }
    // Kept 30 days: the table's TTL attribute says so.
    let item = ctx
        .client()
        .get_item()
        .table_name(&ctx.table)
        .key(
            "pk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S("NOTIFY#n-20001".into()),
        )
        .key(
            "sk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S("NOTIFY".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    let days = (ttl - time::OffsetDateTime::now_utc().unix_timestamp()) as f64 / 86_400.0;
    assert!((29.9..30.1).contains(&days), "{days}");
}

/// Issue 12.7: the payer is checked (a well-formed openid) and kept with the payment; a friend
/// paying for the owner (代付) still pays the order.
#[tokio::test]
async fn the_payer_is_checked_and_kept_and_a_friend_may_pay() {
    let (ctx, o, handler) = pending_order("payer").await;
    let r = handler
        .handle(payment_notification(
            "30001",
            o.out_trade_no.as_str(),
            |t| {
                t["payer"]["openid"] = "o_friend".into();
            },
        ))
        .await;
    assert_eq!(r.status(), 204);
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    let payment = ctx
        .store
        .get_payment(stored.transaction_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.payer.as_ref().map(|p| p.as_str()), Some("o_friend"));
}

/// A signed REFUND.* notification `id` for a refund of `o` (`refund` fen of its total).
fn refund_notification(
    id: &str,
    o: &Order,
    out_refund_no: &str,
    refund: i64,
    status: shared::wechatpay::RefundState,
) -> shared::http::Request {
    let notice = serde_json::json!({
        "mchid": MCHID, "out_trade_no": o.out_trade_no.as_str(),
        "transaction_id": "4200000000202611240000000042", "out_refund_no": out_refund_no,
        "refund_id": "50300000000000000000000001", "refund_status": status.as_str(),
        "success_time": "2026-11-24T12:05:00+08:00", "user_received_account": "支付用户零钱",
        "amount": {"total": o.amount_total.fen(), "refund": refund, "payer_total": o.amount_total.fen(), "payer_refund": refund}
    })
    .to_string();
    let draft =
        NotificationDraft::refund(id, "2026-11-24T12:05:01+08:00", &status, notice.as_bytes())
            .expect("a final refund status");
    signed(&draft)
}

/// A paid order of `quantity` tea with refund `no` of `amount` fen reserved on it, and the
/// notify handler over the same store.
async fn paid_with_a_reserved_refund(
    test: &str,
    quantity: i64,
    no: &str,
    amount: i64,
) -> (StoreCtx, Order, PaymentCallbackHandler) {
    use shared::domain::{OutRefundNo, Refund};
    use shared::store::{MarkPaidOutcome, RefundReserveOutcome};
    let ctx = StoreCtx::dynoxide(test).await;
    let tea = product("tea", 990, Some(5));
    ctx.store
        .put_products(std::slice::from_ref(&tea))
        .await
        .unwrap();
    let o = order("o_alice", &[(&tea, quantity)]);
    ctx.store.create_order(&fresh_claim(&o), &o).await.unwrap();
    let MarkPaidOutcome::Applied(paid) = ctx
        .store
        .mark_paid(
            &o,
            &wxpay_tests::payment(&o, "4200000000202611240000000042"),
            wxpay_tests::now_ms(),
        )
        .await
        .unwrap()
    else {
        panic!("not paid")
    };
    let refund = Refund::requested(
        OutRefundNo::parse(no).unwrap(),
        o.out_trade_no.clone(),
        wxpay_tests::fen(amount),
        None,
        Vec::new(),
        wxpay_tests::now_ms(),
    );
    assert!(matches!(
        ctx.store.reserve_refund(&paid, &refund).await.unwrap(),
        RefundReserveOutcome::Reserved(_)
    ));
    let handler = PaymentCallbackHandler::new(deps(Arc::new(ctx.store.clone())));
    (ctx, o, handler)
}

/// REFUND.SUCCESS delivered many times at once settles the refund once; a notice for a
/// refund we do not have, or for another amount, is kept as an anomaly and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_notifications_apply_once_and_strangers_are_kept_as_anomalies() {
    use shared::domain::RefundStatus;
    use shared::wechatpay::RefundState;
    let (ctx, o, handler) =
        paid_with_a_reserved_refund("callback_refunds", 2, "R-edge-1", 990).await;
    let handler = Arc::new(handler);
    let refund_no = shared::domain::OutRefundNo::parse("R-edge-1").unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (handler, o) = (handler.clone(), o.clone());
        tasks.spawn(async move {
            handler
                .handle(refund_notification(
                    &format!("n-refund-{i}"),
                    &o,
                    "R-edge-1",
                    990,
                    RefundState::Success,
                ))
                .await
                .status()
        });
    }
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let after = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status,
            after.refunded_total.fen(),
            after.refund_pending_total.fen()
        ),
        (OrderStatus::PartiallyRefunded, 990, 0)
    );
    assert_eq!(
        after
            .history
            .iter()
            .filter(|h| h.to == OrderStatus::PartiallyRefunded)
            .count(),
        1
    );
    let kept = ctx.store.get_refund(&refund_no).await.unwrap().unwrap();
    assert_eq!(kept.status, RefundStatus::Success);
    // One delivery applied it (its record kept in that transaction); the others were
    // duplicates: recognised from their read (nothing written) or, when they read before it
    // applied, refused by the refund's condition and recorded as such.
    let outcomes: Vec<Option<String>> = {
        let mut v = Vec::new();
        for i in 0..20 {
            v.push(
                ctx.store
                    .get_notification(&format!("n-refund-{i}"))
                    .await
                    .unwrap()
                    .map(|n| n.outcome),
            );
        }
        v
    };
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.as_deref() == Some("applied"))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.as_deref(), None | Some("applied" | "duplicate"))),
        "{outcomes:?}"
    );
    // And one refund.succeeded for the merchant, however many deliveries.
    let events = ctx
        .client()
        .scan()
        .table_name(&ctx.table)
        .filter_expression("begins_with(pk, :p) AND event_type = :t")
        .expression_attribute_values(":p", AttributeValue::S("EVENT#".into()))
        .expression_attribute_values(":t", AttributeValue::S("refund.succeeded".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(events.items().len(), 1, "{:?}", events.items());

    // A refund we never asked for, and one whose amount is not ours: kept, acknowledged.
    for (id, no, amount) in [("n-stranger", "R-unknown", 1), ("n-amount", "R-edge-1", 5)] {
        let r = handler
            .handle(refund_notification(id, &o, no, amount, RefundState::Closed))
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(
            ctx.store
                .get_notification(id)
                .await
                .unwrap()
                .unwrap()
                .outcome,
            "anomaly:refund_mismatch"
        );
    }
    let anomalies = ctx.store.list_anomalies(&o.out_trade_no).await.unwrap();
    let mut kinds: Vec<(AnomalyKind, String)> =
        anomalies.into_iter().map(|a| (a.kind, a.cause)).collect();
    kinds.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        kinds,
        [
            (AnomalyKind::RefundMismatch, "R-edge-1".to_owned()),
            (AnomalyKind::RefundMismatch, "R-unknown".to_owned())
        ]
    );
    // Nothing else moved.
    let last = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        (last.version, last.refunded_total.fen()),
        (after.version, 990)
    );
}

/// A refund notification costs what a payment notification costs (issue 14): one read of
/// its refund and order together, then one transaction settling both with its record and
/// event; a duplicate is recognised from that one read and writes nothing.
#[tokio::test]
async fn a_refund_notification_costs_two_dynamodb_calls_first_and_one_as_a_duplicate() {
    use shared::wechatpay::RefundState;
    let (ctx, o, handler) =
        paid_with_a_reserved_refund("refund_notification_calls", 1, "R-cost-1", 990).await;
    ctx.counter.reset();
    let first = handler
        .handle(refund_notification(
            "n-cost",
            &o,
            "R-cost-1",
            990,
            RefundState::Success,
        ))
        .await;
    assert_eq!(first.status(), 204);
    let calls = ctx.counter.snapshot();
    assert_eq!(
        (
            calls.calls_of("TransactGetItems"),
            calls.calls_of("TransactWriteItems"),
            calls.total_calls()
        ),
        (1, 1, 2),
        "{calls:?}"
    );
    let kept = ctx.store.get_notification("n-cost").await.unwrap().unwrap();
    assert_eq!(kept.outcome, "applied", "kept in the settling transaction");
    ctx.counter.reset();
    let again = handler
        .handle(refund_notification(
            "n-cost",
            &o,
            "R-cost-1",
            990,
            RefundState::Success,
        ))
        .await;
    assert_eq!(again.status(), 204);
    let calls = ctx.counter.snapshot();
    assert_eq!(
        (calls.calls_of("TransactGetItems"), calls.total_calls()),
        (1, 1),
        "{calls:?}"
    );
    // The first delivery's record stands; the refund and order did not move again.
    assert_eq!(
        ctx.store
            .get_notification("n-cost")
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "applied"
    );
    let refund = ctx
        .store
        .get_refund(&shared::domain::OutRefundNo::parse("R-cost-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refund.status, shared::domain::RefundStatus::Success);
    assert_eq!(refund.history.len(), 2, "{:?}", refund.history);
}

/// WeChat Pay's SUCCESS for one refund, learned at once by its notification (several
/// deliveries), the merchant's lookup (a query) and two sweeps (queries): applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_success_racing_lookups_and_sweeps_applies_once() {
    use shared::domain::{OrderStatus, OutRefundNo, RefundStatus};
    use shared::service::{get_refund, sweep_refunds};
    use shared::store::RefundMoveOutcome;
    use shared::wechatpay::RefundState;
    let (ctx, o, handler) = paid_with_a_reserved_refund("refund_race", 1, "R-race-1", 990).await;
    let no = OutRefundNo::parse("R-race-1").unwrap();
    let requested = ctx.store.get_refund(&no).await.unwrap().unwrap();
    assert!(matches!(
        ctx.store
            .accept_refund(
                &requested,
                "50300000000000000000000001",
                wxpay_tests::now_ms()
            )
            .await
            .unwrap(),
        RefundMoveOutcome::Moved(_)
    ));
    // The lookups and sweeps ask a scripted WeChat Pay, which says SUCCESS; the sweeps run
    // ten minutes on, when the refund is due.
    let gateway = Arc::new(wxpay_tests::Scripted::default());
    for _ in 0..6 {
        gateway.refund_query(Ok(wxpay_tests::refund_result(
            &o, "R-race-1", 990, "SUCCESS",
        )));
    }
    let lookups = wxpay_tests::scripted_deps(&ctx, gateway.clone());
    let later = wxpay_tests::now_ms() + time::Duration::minutes(10);
    let sweeps = Deps {
        clock: Arc::new(move || later),
        ..lookups.clone()
    };
    let handler = Arc::new(handler);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4 {
        let (handler, o) = (handler.clone(), o.clone());
        tasks.spawn(async move {
            let r = handler
                .handle(refund_notification(
                    &format!("n-race-{i}"),
                    &o,
                    "R-race-1",
                    990,
                    RefundState::Success,
                ))
                .await;
            assert_eq!(r.status(), 204);
        });
    }
    for _ in 0..2 {
        let (deps, no) = (lookups.clone(), no.clone());
        tasks.spawn(async move {
            let r = get_refund(&deps, &no).await.unwrap();
            assert!(matches!(
                r.status,
                RefundStatus::Success | RefundStatus::Processing
            ));
        });
        let deps = sweeps.clone();
        tasks.spawn(async move {
            let s = sweep_refunds(&deps, None).await;
            assert_eq!(s.failed, 0, "{s:?}");
        });
    }
    tasks.join_all().await;
    let after = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status,
            after.refunded_total.fen(),
            after.refund_pending_total.fen()
        ),
        (OrderStatus::Refunded, 990, 0)
    );
    assert_eq!(
        after
            .history
            .iter()
            .filter(|h| h.to == OrderStatus::Refunded)
            .count(),
        1
    );
    let kept = ctx.store.get_refund(&no).await.unwrap().unwrap();
    assert_eq!(kept.status, RefundStatus::Success);
    assert_eq!(
        kept.history
            .iter()
            .filter(|h| h.to == RefundStatus::Success)
            .count(),
        1
    );
}

/// An ABNORMAL refund notification keeps its record in the transaction that moves the refund
/// (with the anomaly and both events), so its duplicate, recognised from the read and
/// writing nothing, never finds the move without its record.
#[tokio::test]
async fn an_abnormal_refund_notification_keeps_its_record_with_the_move() {
    use shared::wechatpay::RefundState;
    let (ctx, o, handler) =
        paid_with_a_reserved_refund("refund_abnormal_record", 1, "R-abn-1", 990).await;
    ctx.counter.reset();
    let first = handler
        .handle(refund_notification(
            "n-abn",
            &o,
            "R-abn-1",
            990,
            RefundState::Abnormal,
        ))
        .await;
    assert_eq!(first.status(), 204);
    // Its one read, the acceptance it implies (the refund was REQUESTED), the move with the
    // record in it: no separate write of the record.
    let calls = ctx.counter.snapshot();
    assert_eq!(calls.calls_of("PutItem"), 0, "{calls:?}");
    assert_eq!(calls.calls_of("TransactGetItems"), 1, "{calls:?}");
    let kept = ctx.store.get_notification("n-abn").await.unwrap().unwrap();
    assert_eq!(kept.outcome, "applied");
    let refund = ctx
        .store
        .get_refund(&shared::domain::OutRefundNo::parse("R-abn-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refund.status, shared::domain::RefundStatus::Abnormal);
    let mut types: Vec<String> = ctx
        .client()
        .scan()
        .table_name(&ctx.table)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", AttributeValue::S("EVENT#".into()))
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .filter_map(|i| i.get("event_type").and_then(|v| v.as_s().ok()).cloned())
        .filter(|t| t != "order.paid")
        .collect();
    types.sort();
    assert_eq!(types, ["anomaly.recorded", "refund.abnormal"]);

    ctx.counter.reset();
    let again = handler
        .handle(refund_notification(
            "n-abn",
            &o,
            "R-abn-1",
            990,
            RefundState::Abnormal,
        ))
        .await;
    assert_eq!(again.status(), 204);
    let calls = ctx.counter.snapshot();
    assert_eq!(calls.total_calls(), 1, "{calls:?}");
    assert_eq!(
        ctx.store
            .get_notification("n-abn")
            .await
            .unwrap()
            .unwrap()
            .outcome,
        "applied"
    );
}
