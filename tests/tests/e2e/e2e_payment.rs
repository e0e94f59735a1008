//! The payment flow end to end, driving the BUILT `place-order` and `payment-callback`
//! binaries: over plain HTTP (as child processes on OS-chosen ports), over a fake Lambda
//! Runtime API with API Gateway HTTP API v2 events, and over a fake SCF runtime API. Around
//! them: embedded Dynoxide with the real table definition, and the WeChat Pay simulator
//! (prepay with merchant-signature checks, signed responses, signed and sealed notifications
//! retried on WeChat Pay's schedule). DESIGN.md sections 3, 6, 7 and 9.
//!
//! Every test asserts answers (status, `code`) and the store's state read back through
//! `DynamoStore`; waits are polls with a deadline, never bare sleeps.

use shared::store::StoreSupport;
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::e2e_support::*;
use crate::runtime_support::FakeRuntime;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use sandbox::{Fault, PayRequest};
use serde_json::{Value, json};
use shared::domain::{IdempotencyKey, Openid, OrderStatus, OutTradeNo};
use shared::idempotency::{IdempotencyScope, IdempotencyState};
use shared::store::{AnomalyKind, Store};
use shared::timefmt::to_wechat;
use shared::wechatpay::{ApiV3Key, NotificationDraft, PayParams, build_notification};

const JSAPI: &str = "/v3/pay/transactions/jsapi";

fn out_trade_no(s: &str) -> OutTradeNo {
    OutTradeNo::parse(s).expect("out_trade_no")
}

fn pay(out_trade_no: &str, deliveries: u32) -> PayRequest {
    PayRequest {
        deliveries,
        ..PayRequest::new(out_trade_no)
    }
}

/// Number of PENDING -> PAID entries in the order's history.
fn paid_transitions(order: &shared::domain::Order) -> usize {
    order
        .history
        .iter()
        .filter(|h| h.from == Some(OrderStatus::Pending) && h.to == OrderStatus::Paid)
        .count()
}

/// Checks the 201 body of DESIGN.md section 3 and returns its pay params.
fn assert_placed(app: &TestApp, body: &Value, amount_total: i64) -> PayParams {
    let keys: HashSet<&str> = body
        .as_object()
        .expect("201 body is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "out_trade_no",
            "status",
            "amount_total",
            "currency",
            "expire_at",
            "pay_params"
        ]),
        "{body}"
    );
    let no = body["out_trade_no"].as_str().expect("out_trade_no");
    assert_eq!(no.len(), 26, "a ULID: {no}");
    assert!(OutTradeNo::parse(no).is_ok(), "{no}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["amount_total"], amount_total);
    assert_eq!(body["currency"], "CNY");
    let expire_at = body["expire_at"].as_str().expect("expire_at");
    assert!(expire_at.ends_with("+08:00"), "China time: {expire_at}");
    let expire = shared::timefmt::parse_rfc3339(expire_at).expect("RFC 3339");
    let ahead = (expire - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (1700..=1800).contains(&ahead),
        "expires ORDER_TTL_SECONDS (1800) after creation: {ahead} s ahead"
    );

    let params: PayParams =
        serde_json::from_value(body["pay_params"].clone()).expect("pay_params fields");
    assert_eq!(params.app_id, APPID);
    let stamp: i64 = params
        .time_stamp
        .parse()
        .expect("timeStamp is unix seconds");
    assert!(
        (stamp - now_unix()).abs() < 120,
        "timeStamp is now: {stamp}"
    );
    assert!(!params.nonce_str.is_empty());
    let prepay_id = params
        .package
        .strip_prefix("prepay_id=")
        .expect("package is prepay_id=...");
    assert!(!prepay_id.is_empty());
    assert_eq!(params.sign_type, "RSA");
    assert!(
        params.verify(&app.keys.merchant_public_key()),
        "paySign verifies with the merchant public key"
    );
    let mut forged = params.clone();
    forged.package = "prepay_id=wx_forged".to_owned();
    assert!(
        !forged.verify(&app.keys.merchant_public_key()),
        "paySign covers the package"
    );
    params
}

// ---- 1 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_is_placed_paid_and_notified_into_paid() {
    let app = spawn_app().await;
    // A client `amount` is ignored: the amount comes from the catalog.
    let body = json!({
        "items": [{"sku_id": SKU_LIMITED, "quantity": 2}],
        "amount": 1,
        "description": "Two teas"
    });
    let reply = app
        .post_order(Some("o_alice"), Some("k-happy"), body.to_string())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.header("idempotent-replayed"), None);
    let placed = reply.json();
    let params = assert_placed(&app, &placed, 2 * LIMITED_PRICE);
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();

    // The store: a PENDING order priced from the catalog, its prepay_id, stock reserved.
    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.openid.as_str(), "o_alice");
    assert_eq!(order.amount_total.fen(), 2 * LIMITED_PRICE);
    assert_eq!(order.description, "Two teas");
    assert_eq!(order.lines.len(), 1);
    assert_eq!(order.lines[0].unit_price.fen(), LIMITED_PRICE);
    assert_eq!(
        order.prepay_id.as_deref(),
        params.package.strip_prefix("prepay_id=")
    );
    assert_eq!(to_wechat(order.expire_at), placed["expire_at"]);
    let product = app.product(SKU_LIMITED).await;
    assert_eq!((product.reserved, product.sold), (2, 0));

    // WeChat Pay got the catalog amount, our notify_url and the order's expiry.
    let at_wechat = app.sim.transaction(&no).expect("the JSAPI order exists");
    assert_eq!(at_wechat.amount_total, 2 * LIMITED_PRICE);
    assert_eq!(at_wechat.notify_url, app.notify_url);
    assert_eq!(at_wechat.payer_openid, "o_alice");
    assert_eq!(
        at_wechat.time_expire.as_deref(),
        placed["expire_at"].as_str()
    );
    assert_eq!(
        Some(at_wechat.prepay_id.as_str()),
        order.prepay_id.as_deref()
    );

    // The user pays; WeChat Pay notifies once; the callback acknowledges with 204.
    let paid = app.sim.pay(&pay(&no, 1)).expect("the user pays");
    let log = app.wait_acknowledged(&no).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, Some(204));

    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(
        order.transaction_id.as_deref(),
        Some(paid.transaction_id.as_str())
    );
    assert!(order.paid_at.is_some());
    assert_eq!(paid_transitions(&order), 1);
    let payment = app
        .payment(&paid.transaction_id)
        .await
        .expect("the payment item exists");
    assert_eq!(payment.out_trade_no.as_str(), no);
    assert_eq!(payment.amount.fen(), 2 * LIMITED_PRICE);
    assert_eq!(
        payment.notification_id.as_deref(),
        Some(paid.notification_id.as_str())
    );
    // PAID touched no product item: the dispatcher counts the sale from order.paid.
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 2);
    app.run_dispatcher().await;
    let product = app.product(SKU_LIMITED).await;
    assert_eq!(
        (product.reserved, product.sold),
        (0, 2),
        "reserved stock moved to sold"
    );
    assert!(
        app.store
            .list_anomalies(&out_trade_no(&no))
            .await
            .unwrap()
            .is_empty()
    );
    // Issue 12.9: WeChat Pay's Request-ID of the prepay answer is in place-order's log.
    let logs = app.place_order.json_logs();
    let answered = logs
        .iter()
        .find(|l| {
            l["message"] == "WeChat Pay answered" && l["path"] == "/v3/pay/transactions/jsapi"
        })
        .unwrap_or_else(|| panic!("no answer logged: {logs:?}"));
    assert_eq!(answered["status"], 200);
    assert!(
        answered["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{answered}"
    );
    // ...and kept with the order (issue 12.9).
    let item = app
        .store
        .client()
        .get_item()
        .table_name(&app.table)
        .key(
            "pk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S(format!("ORDER#{no}")),
        )
        .key(
            "sk",
            wxpay_tests::aws_sdk_dynamodb::types::AttributeValue::S("ORDER".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item["prepay_request_id"].as_s().ok().map(String::as_str),
        answered["request_id"].as_str()
    );
    // And the notifications, as received, are in the table.
    let deliveries = app.sim.deliveries(&no);
    let id = &deliveries[0].notification_id;
    let kept = app.store.get_notification(id).await.unwrap().expect("kept");
    assert_eq!(
        kept.out_trade_no.as_ref().map(|n| n.as_str()),
        Some(no.as_str())
    );
}

// ---- 2 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_with_one_idempotency_key_make_one_order() {
    let app = spawn_app().await;

    // Sequential: the replay is the stored answer, byte for byte, and says so.
    let body = cart(&[(SKU_UNLIMITED, 1)]);
    let first = app
        .post_order(Some("o_bob"), Some("k-seq"), body.clone())
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("idempotent-replayed"), None);
    let second = app.post_order(Some("o_bob"), Some("k-seq"), body).await;
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body, "same body byte for byte");
    assert_eq!(
        second.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    // The same cart written differently (and with an ignored `amount`) is the same request.
    let third = app
        .post_order(
            Some("o_bob"),
            Some("k-seq"),
            r#"{ "amount": 1, "items" : [ {"quantity": 1, "sku_id": "sku-unlimited"} ] }"#,
        )
        .await;
    assert_eq!((third.status, &third.body), (201, &first.body));
    assert_eq!(third.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(app.orders_of("o_bob").await.len(), 1);

    // Concurrent: 20 identical requests at once.
    let body = cart(&[(SKU_LIMITED, 1)]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let request = app
            .http
            .post(format!("{}/orders", app.place_order_url))
            .header("content-type", "application/json")
            .header("x-debug-openid", "o_carol")
            .header("idempotency-key", "k-storm")
            .body(body.clone());
        tasks.spawn(async move { Reply::read(request.send().await.expect("answered")).await });
    }
    let replies = tasks.join_all().await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert!(!created.is_empty(), "at least one request succeeds");
    for r in &created {
        assert_eq!(r.body, created[0].body, "every 201 is the same answer");
    }
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "IDEMPOTENCY_KEY_IN_USE");
        let retry_after: u64 = r
            .header("retry-after")
            .expect("409 carries Retry-After")
            .parse()
            .expect("Retry-After in seconds");
        assert!(retry_after >= 1);
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    eprintln!("20 concurrent requests answered {statuses:?}");
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");

    let orders = app.orders_of("o_carol").await;
    assert_eq!(orders.len(), 1, "exactly one order for the key");
    assert_eq!(
        created[0].json()["out_trade_no"],
        orders[0].out_trade_no.as_str()
    );
    assert_eq!(
        app.product(SKU_LIMITED).await.reserved,
        1,
        "stock reserved once"
    );
    // Once settled, the key replays the one answer.
    let after = app.post_order(Some("o_carol"), Some("k-storm"), body).await;
    assert_eq!((after.status, &after.body), (201, &created[0].body));
    assert_eq!(after.header("idempotent-replayed").as_deref(), Some("true"));
}

// ---- 3 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_requests_answer_the_documented_errors_and_create_nothing() {
    /// (case, X-Debug-Openid, Idempotency-Key, body, expected status, expected code)
    type RefusalCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        String,
        u16,
        &'a str,
    );
    let app = spawn_app().await;
    let (first, _) = app.place("o_dave", "k-used", &[(SKU_LIMITED, 1)]).await;
    let before = app.snapshot().await;
    let prepays_before = app.sim.transactions().len();

    let one = cart(&[(SKU_LIMITED, 1)]);
    let fifty_one: Vec<String> = (0..51).map(|i| format!("sku-{i}")).collect();
    let fifty_one: Vec<(&str, i64)> = fifty_one.iter().map(|s| (s.as_str(), 1)).collect();
    let long_key = "k".repeat(65);
    #[rustfmt::skip]
    let cases: Vec<RefusalCase> = vec![
        ("same key, other body", Some("o_dave"), Some("k-used"), cart(&[(SKU_LIMITED, 2)]), 422, "IDEMPOTENCY_KEY_REUSED"),
        ("no Idempotency-Key", Some("o_dave"), None, one.clone(), 400, "IDEMPOTENCY_KEY_REQUIRED"),
        ("malformed key", Some("o_dave"), Some("bad key!"), one.clone(), 400, "IDEMPOTENCY_KEY_REQUIRED"),
        ("65-character key", Some("o_dave"), Some(&long_key), one.clone(), 400, "IDEMPOTENCY_KEY_REQUIRED"),
        ("no identity", None, Some("k-new-1"), one.clone(), 401, "UNAUTHENTICATED"),
        ("malformed JSON", Some("o_dave"), Some("k-new-2"), r#"{"items": [{"sku_id""#.to_owned(), 400, "INVALID_REQUEST"),
        ("quantity 0", Some("o_dave"), Some("k-new-3"), cart(&[(SKU_LIMITED, 0)]), 400, "INVALID_REQUEST"),
        ("quantity 1000", Some("o_dave"), Some("k-new-4"), cart(&[(SKU_UNLIMITED, 1000)]), 400, "INVALID_REQUEST"),
        ("duplicate sku", Some("o_dave"), Some("k-new-5"), cart(&[(SKU_LIMITED, 1), (SKU_LIMITED, 2)]), 400, "INVALID_REQUEST"),
        ("51 lines", Some("o_dave"), Some("k-new-6"), cart(&fifty_one), 400, "INVALID_REQUEST"),
        ("no items", Some("o_dave"), Some("k-new-7"), cart(&[]), 400, "INVALID_REQUEST"),
        ("unknown sku", Some("o_dave"), Some("k-new-8"), cart(&[("sku-nope", 1)]), 422, "UNKNOWN_SKU"),
        ("inactive sku", Some("o_dave"), Some("k-new-9"), cart(&[(SKU_INACTIVE, 1)]), 422, "UNKNOWN_SKU"),
        ("unknown among known", Some("o_dave"), Some("k-new-10"), cart(&[(SKU_UNLIMITED, 1), ("sku-nope", 1)]), 422, "UNKNOWN_SKU"),
    ];
    for (case, openid, key, body, status, code) in cases {
        let reply = app.post_order(openid, key, body).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{case}: {}",
            reply.text()
        );
        reply.assert_error(status, code);
        if code == "UNKNOWN_SKU" {
            let message = reply.json()["message"].as_str().unwrap().to_owned();
            assert!(
                message.contains("sku-nope") || message.contains(SKU_INACTIVE),
                "{case}: the message names the sku: {message}"
            );
        }
        assert_eq!(
            app.snapshot().await,
            before,
            "{case}: the store is unchanged"
        );
    }
    assert_eq!(
        app.sim.transactions().len(),
        prepays_before,
        "no prepay was attempted"
    );
    // The first request's key still replays its answer.
    let replay = app
        .post_order(Some("o_dave"), Some("k-used"), cart(&[(SKU_LIMITED, 1)]))
        .await;
    assert_eq!((replay.status, &replay.body), (201, &first.body));
}

// ---- 4 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_stock_names_the_sku_and_reserves_nothing() {
    let app = spawn_app().await;
    app.place("o_erin", "k-1", &[(SKU_LIMITED, 8)]).await;
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 8);
    let before = app.snapshot().await;

    // 3 more than the 2 left; the unlimited line must not be reserved either.
    let reply = app
        .post_order(
            Some("o_erin"),
            Some("k-2"),
            cart(&[(SKU_UNLIMITED, 1), (SKU_LIMITED, 3)]),
        )
        .await;
    reply.assert_error(409, "OUT_OF_STOCK");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains(SKU_LIMITED), "names the sku: {message}");
    assert_eq!(
        app.snapshot().await,
        before,
        "no order, no key, no stock moved"
    );
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 8);
    assert_eq!(app.product(SKU_UNLIMITED).await.reserved, 0);
    assert_eq!(app.orders_of("o_erin").await.len(), 1);

    // Exactly what is left can still be ordered, and then nothing more.
    app.place("o_erin", "k-3", &[(SKU_LIMITED, 2)]).await;
    assert_eq!(app.product(SKU_LIMITED).await.reserved, LIMITED_STOCK);
    let reply = app
        .post_order(Some("o_erin"), Some("k-4"), cart(&[(SKU_LIMITED, 1)]))
        .await;
    reply.assert_error(409, "OUT_OF_STOCK");
    assert_eq!(app.product(SKU_LIMITED).await.reserved, LIMITED_STOCK);
}

// ---- 5 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deliveries_make_exactly_one_transition() {
    let app = spawn_app().await;
    let (_, no) = app.place("o_frank", "k-1", &[(SKU_LIMITED, 3)]).await;

    let paid = app.sim.pay(&pay(&no, 50)).expect("the user pays");
    let log = app.wait_notifications_finished(&no).await;
    let first_round: Vec<_> = log.iter().filter(|d| d.round == 0).collect();
    assert_eq!(first_round.len(), 50, "{log:?}");
    let refused: Vec<_> = log.iter().filter(|d| d.status != Some(204)).collect();
    assert!(
        refused.is_empty(),
        "every delivery acknowledged with 204: {refused:?}"
    );

    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(
        order.transaction_id.as_deref(),
        Some(paid.transaction_id.as_str())
    );
    assert_eq!(
        paid_transitions(&order),
        1,
        "one PENDING->PAID: {:?}",
        order.history
    );
    assert!(app.payment(&paid.transaction_id).await.is_some());
    app.run_dispatcher().await;
    let product = app.product(SKU_LIMITED).await;
    assert_eq!(
        (product.reserved, product.sold),
        (0, 3),
        "sold counted once"
    );
    assert!(
        app.store
            .list_anomalies(&out_trade_no(&no))
            .await
            .unwrap()
            .is_empty()
    );

    // The callback's own account: one applied, 49 recognised as duplicates.
    let outcomes: Vec<String> = eventually("the callback logged every delivery", || {
        let outcomes: Vec<String> = app
            .callback
            .json_logs()
            .iter()
            .filter(|l| l["out_trade_no"] == no.as_str())
            .filter_map(|l| l["outcome"].as_str().map(str::to_owned))
            .collect();
        (outcomes.len() >= 50).then_some(outcomes)
    })
    .await;
    assert_eq!(outcomes.iter().filter(|o| *o == "applied").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 49);
}

// ---- 6 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unverifiable_notifications_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (_, no) = app.place("o_grace", "k-1", &[(SKU_LIMITED, 1)]).await;
    let order = app.order(&no).await;
    let transaction_id = "4200000000202611240000000001";
    // A genuine SUCCESS transaction for this order: only the way it is delivered is wrong.
    let txn = app.success_transaction(&order, transaction_id, order.amount_total.fen());
    let before = app.snapshot().await;

    let mut cases = Vec::new();
    {
        let (headers, body) = app.notification(&txn, "n-tampered", now_unix(), None);
        let text = String::from_utf8(body).unwrap();
        let tampered = text.replace("\"n-tampered\"", "\"n-tampereD\"");
        assert_ne!(tampered, text);
        cases.push(("body changed after signing", headers, tampered.into_bytes()));
    }
    {
        let (headers, body) = app.notification(&txn, "n-stale", now_unix() - 600, None);
        cases.push(("timestamp 10 minutes old", headers, body));
    }
    {
        let (mut headers, body) = app.notification(&txn, "n-probe", now_unix(), None);
        let signature = headers["wechatpay-signature"].to_str().unwrap().to_owned();
        headers.insert(
            "wechatpay-signature",
            HeaderValue::from_str(&format!("WECHATPAY/SIGNTEST/{signature}")).unwrap(),
        );
        cases.push(("signature probe", headers, body));
    }
    {
        let (headers, body) = app.notification(
            &txn,
            "n-serial",
            now_unix(),
            Some("PUB_KEY_ID_0000000000000000000000000000000001"),
        );
        cases.push(("unknown Wechatpay-Serial", headers, body));
    }
    {
        // Signed correctly, but the resource was sealed with another APIv3 key.
        let plaintext = serde_json::to_vec(&txn).unwrap();
        let create_time = to_wechat(time::OffsetDateTime::now_utc());
        let draft = NotificationDraft::transaction_success("n-aead", &create_time, &plaintext);
        let (headers, body) = build_notification(
            app.keys.wechatpay_key(),
            app.keys.wechatpay_public_key_id(),
            &ApiV3Key::new("0123456789abcdefghijABCDEFGHIJ01").unwrap(),
            &draft,
            now_unix(),
        );
        cases.push(("resource sealed with another APIv3 key", headers, body));
    }

    for (case, headers, body) in &cases {
        let reply = app.notify(headers, body).await;
        assert_eq!(reply.status, 401, "{case}: {}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["code"], "FAIL", "{case}: {answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: {answer}"
        );
        assert_eq!(app.snapshot().await, before, "{case}: nothing stored");
    }
    // Issue 12.9: each refusal is a NotifyRejected metric (EMF), which an alarm watches.
    eventually("one NotifyRejected metric per refusal", || {
        let metrics = app
            .callback
            .json_logs()
            .iter()
            .filter(|l| l["NotifyRejected"] == 1 && l["Function"] == "payment-callback")
            .count();
        (metrics == cases.len()).then_some(())
    })
    .await;
    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Pending);
    assert!(app.payment(transaction_id).await.is_none());
    assert!(
        app.store
            .list_anomalies(&out_trade_no(&no))
            .await
            .unwrap()
            .is_empty()
    );

    // Control: the same transaction delivered untouched is applied, so each refusal above
    // was about its one alteration.
    let (headers, body) = app.notification(&txn, "n-genuine", now_unix(), None);
    let reply = app.notify(&headers, &body).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());
    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.transaction_id.as_deref(), Some(transaction_id));
}

// ---- 7 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_of_the_wrong_amount_is_recorded_as_an_anomaly() {
    let app = spawn_app().await;
    let (_, no) = app.place("o_heidi", "k-1", &[(SKU_LIMITED, 2)]).await;

    let paid = app
        .sim
        .pay(&PayRequest {
            amount_total: Some(1),
            ..pay(&no, 1)
        })
        .expect("the user pays 1 fen");
    assert_eq!(paid.amount_total, 1);
    let log = app.wait_acknowledged(&no).await;
    assert!(
        log.iter().all(|d| d.status == Some(204)),
        "a verified anomaly is acknowledged: {log:?}"
    );

    let anomalies = app.store.list_anomalies(&out_trade_no(&no)).await.unwrap();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, AnomalyKind::AmountMismatch);
    assert_eq!(
        anomalies[0].transaction_id.as_deref(),
        Some(paid.transaction_id.as_str())
    );
    // Issue 12.3: the order leaves PENDING (the sweeper stops asking about it) into a state
    // the merchant acts on; the payment is kept and the stock stays reserved for it.
    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::AmountMismatch);
    assert_eq!(
        order.transaction_id.as_deref(),
        Some(paid.transaction_id.as_str())
    );
    let payment = app
        .payment(&paid.transaction_id)
        .await
        .expect("payment kept");
    assert_eq!(payment.amount.fen(), 1);
    let product = app.product(SKU_LIMITED).await;
    assert_eq!((product.reserved, product.sold), (2, 0));
}

// ---- 8 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_prepay_closes_the_order_releases_stock_and_frees_the_key() {
    let app = spawn_app().await;

    // Refused outright (403 NO_AUTH): not retried.
    app.sim
        .inject_fault(Fault::new(JSAPI, 403, "NO_AUTH", 1))
        .unwrap();
    let body = cart(&[(SKU_LIMITED, 4)]);
    let reply = app
        .post_order(Some("o_ivan"), Some("k-refused"), body.clone())
        .await;
    reply.assert_error(502, "PAYMENT_PROVIDER_ERROR");
    assert!(reply.text().contains("NO_AUTH"), "{}", reply.text());
    assert!(app.sim.pending_faults().is_empty());
    let orders = app.orders_of("o_ivan").await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].status, OrderStatus::Closed);
    let closed = orders[0].out_trade_no.to_string();
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 0, "stock released");

    // The key was released: the same request now goes through, as a new order.
    let retry = app
        .post_order(Some("o_ivan"), Some("k-refused"), body)
        .await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_placed(&app, &retry.json(), 4 * LIMITED_PRICE);
    assert_ne!(retry.json()["out_trade_no"], closed.as_str());
    assert_eq!(app.orders_of("o_ivan").await.len(), 2);
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 4);

    // 500 on every attempt: retried by the client, then given up.
    app.sim
        .inject_fault(Fault::new(JSAPI, 500, "SYSTEM_ERROR", 20))
        .unwrap();
    let body = cart(&[(SKU_LIMITED, 1)]);
    let reply = app
        .post_order(Some("o_ivan"), Some("k-flaky"), body.clone())
        .await;
    reply.assert_error(502, "PAYMENT_PROVIDER_ERROR");
    assert!(reply.text().contains("SYSTEM_ERROR"), "{}", reply.text());
    let left = app.sim.pending_faults().first().map_or(0, |f| f.times);
    let attempts = 20 - left;
    assert!(
        (2..20).contains(&attempts),
        "retried a bounded number of times: {attempts} attempts"
    );
    app.sim.clear_faults();
    let orders = app.orders_of("o_ivan").await;
    assert_eq!(orders.len(), 3);
    assert_eq!(orders[0].status, OrderStatus::Closed, "newest first");
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 4);

    let retry = app.post_order(Some("o_ivan"), Some("k-flaky"), body).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 5);
    assert_eq!(app.orders_of("o_ivan").await.len(), 4);
}

// ---- 9 ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_order_and_prepay_resumes_the_same_order() {
    let mut app = spawn_app().await;
    let (openid, key) = ("o_judy", "k-crash");
    let body = cart(&[(SKU_LIMITED, 2)]);

    // Every prepay hangs (two minutes, far past the client's timeout) until the instance is
    // killed mid-call: the crash lands after the order is written and before its prepay_id is.
    let mut hang = Fault::new(JSAPI, 500, "SYSTEM_ERROR", 10);
    hang.delay_ms = 120_000;
    app.sim.inject_fault(hang).unwrap();
    let request = app
        .http
        .post(format!("{}/orders", app.place_order_url))
        .header("content-type", "application/json")
        .header("x-debug-openid", openid)
        .header("idempotency-key", key)
        .body(body.clone());
    let in_flight = tokio::spawn(request.send());
    eventually("the first prepay reached WeChat Pay", || {
        (app.sim.pending_faults().first().map_or(0, |f| f.times) < 10).then_some(())
    })
    .await;
    app.place_order.kill();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed instance never answered"
    );
    app.sim.clear_faults();

    // What the crash left behind: a PENDING order without prepay_id, its stock reserved, and
    // the key IN_PROGRESS naming it.
    let orders = app.orders_of(openid).await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].status, OrderStatus::Pending);
    assert_eq!(orders[0].prepay_id, None);
    let no = orders[0].out_trade_no.to_string();
    assert_eq!(app.product(SKU_LIMITED).await.reserved, 2);
    let scope = IdempotencyScope::new(
        Openid::parse(openid).unwrap(),
        IdempotencyKey::parse(key).unwrap(),
    );
    let record = app.store.get_idempotency(&scope).await.unwrap().unwrap();
    assert_eq!(record.state, IdempotencyState::InProgress);
    assert_eq!(record.out_trade_no.as_str(), no);

    app.restart_place_order().await;

    // While the dead request's lock lasts, a retry is told to come back, and creates nothing.
    let before = app.snapshot().await;
    let reply = app.post_order(Some(openid), Some(key), body.clone()).await;
    reply.assert_error(409, "IDEMPOTENCY_KEY_IN_USE");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(app.snapshot().await, before);

    // The lock lapses (see `expire_idempotency_lock`: the clock's work, done directly), and
    // the retry resumes the very same order.
    app.expire_idempotency_lock(openid, key).await;
    let reply = app.post_order(Some(openid), Some(key), body.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let placed = reply.json();
    assert_placed(&app, &placed, 2 * LIMITED_PRICE);
    assert_eq!(placed["out_trade_no"], no.as_str(), "same out_trade_no");
    let orders = app.orders_of(openid).await;
    assert_eq!(orders.len(), 1, "exactly one order for the key");
    assert!(orders[0].prepay_id.is_some());
    assert_eq!(
        app.product(SKU_LIMITED).await.reserved,
        2,
        "stock reserved once"
    );
    assert!(app.sim.transaction(&no).is_some());
    let record = app.store.get_idempotency(&scope).await.unwrap().unwrap();
    assert!(matches!(record.state, IdempotencyState::Completed(_)));

    let replay = app.post_order(Some(openid), Some(key), body).await;
    assert_eq!((replay.status, &replay.body), (201, &reply.body));
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
}

// ---- 10 --------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An API Gateway HTTP API (payload 2.0) event.
fn v2_event(path: &str, headers: Value, authorizer: Value, body: &str, base64: bool) -> Value {
    json!({
        "version": "2.0",
        "routeKey": format!("POST {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "e2eapi",
            "authorizer": authorizer,
            "domainName": "e2eapi.execute-api.ap-east-1.amazonaws.com",
            "domainPrefix": "e2eapi",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "e2e"},
            "requestId": "apigw-e2e",
            "routeKey": format!("POST {path}"),
            "stage": "$default",
            "time": "24/Nov/2026:12:00:00 +0000",
            "timeEpoch": now_ms()
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_binaries_serve_the_lambda_runtime_api() {
    let backend = Backend::start().await;
    let deadline = now_ms() + 120_000;
    let mut orders_api = FakeRuntime::lambda(deadline).await;
    let mut notify_api = FakeRuntime::lambda(deadline).await;
    // Nothing listens on this notify_url: the notification is delivered as a Lambda event.
    let mut place_order = FunctionProcess::spawn(
        Function::PlaceOrder,
        &lambda_env(
            &backend,
            Some("http://127.0.0.1:9/notify/wechatpay"),
            orders_api.addr,
            "place-order",
        ),
    );
    let mut callback = FunctionProcess::spawn(
        Function::PaymentCallback,
        &lambda_env(&backend, None, notify_api.addr, "payment-callback"),
    );
    assert_eq!(place_order.wait_ready().await["mode"], "lambda");
    assert_eq!(callback.wait_ready().await["mode"], "lambda");

    // AUTH_MODE=authorizer without debug identity: the X-Debug-Openid header is not trusted.
    let order_body = cart(&[(SKU_LIMITED, 2)]);
    orders_api.push(
        "inv-anonymous",
        v2_event(
            "/orders",
            json!({"content-type": "application/json", "idempotency-key": "lambda-k0",
                   "x-debug-openid": "o_mallory"}),
            Value::Null,
            &order_body,
            false,
        )
        .to_string(),
    );
    let posted = orders_api.posted().await;
    assert_eq!(
        (posted.kind, posted.request_id.as_deref()),
        ("response", Some("inv-anonymous"))
    );
    let response = posted.json();
    assert_eq!(response["statusCode"], 401, "{response}");
    let error: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(error["code"], "UNAUTHENTICATED");

    // The caller named by the HTTP API JWT authorizer's `openid` claim.
    orders_api.push(
        "inv-order",
        v2_event(
            "/orders",
            json!({"content-type": "application/json", "idempotency-key": "lambda-k1"}),
            json!({"jwt": {"claims": {"openid": "o_lambda", "sub": "o_lambda", "aud": APPID},
                           "scopes": null}}),
            &order_body,
            false,
        )
        .to_string(),
    );
    let posted = orders_api.posted().await;
    assert_eq!(
        (posted.kind, posted.request_id.as_deref()),
        ("response", Some("inv-order"))
    );
    let response = posted.json();
    assert_eq!(response["statusCode"], 201, "{response}");
    let placed: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let no = placed["out_trade_no"].as_str().unwrap().to_owned();
    assert_eq!(placed["amount_total"], 2 * LIMITED_PRICE);
    let order = backend.order(&no).await;
    assert_eq!(order.openid.as_str(), "o_lambda");
    assert_eq!(order.status, OrderStatus::Pending);
    assert!(backend.orders_of("o_mallory").await.is_empty());

    // The user pays; WeChat Pay's notification arrives through API Gateway as a base64 body.
    let paid = backend
        .sim
        .pay(&pay(&no, 0))
        .expect("the user pays (notification sent by the test)");
    let txn = backend
        .sim
        .wechat_transaction(&no)
        .expect("WeChat Pay's view of the payment");
    let (headers, raw) = backend.notification(&txn, &paid.notification_id, now_unix(), None);
    let mut event_headers = serde_json::Map::new();
    for (name, value) in &headers {
        event_headers.insert(name.as_str().to_owned(), json!(value.to_str().unwrap()));
    }
    event_headers.insert("content-type".into(), json!("application/json"));
    notify_api.push(
        "inv-notify",
        v2_event(
            "/notify/wechatpay",
            Value::Object(event_headers),
            Value::Null,
            &STANDARD.encode(&raw),
            true,
        )
        .to_string(),
    );
    let posted = notify_api.posted().await;
    assert_eq!(
        (posted.kind, posted.request_id.as_deref()),
        ("response", Some("inv-notify"))
    );
    let response = posted.json();
    assert_eq!(response["statusCode"], 204, "{response}");

    let order = backend.order(&no).await;
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(
        order.transaction_id.as_deref(),
        Some(paid.transaction_id.as_str())
    );
    assert!(backend.payment(&paid.transaction_id).await.is_some());
    backend.run_dispatcher().await;
    let product = backend.product(SKU_LIMITED).await;
    assert_eq!((product.reserved, product.sold), (0, 2));
    assert!(place_order.is_running() && callback.is_running());
}

// ---- 11 --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn place_order_serves_the_scf_runtime_api() {
    let backend = Backend::start().await;
    let mut runtime = FakeRuntime::scf(10_000).await;
    let port = runtime.addr.port().to_string();
    let mut env: Vec<(String, String)> = backend
        .token_env(Some("http://127.0.0.1:9/notify/wechatpay"))
        .into_iter()
        .filter(|(k, _)| k != "PORT")
        .collect();
    env.push(("SCF_RUNTIME_API".into(), "127.0.0.1".into()));
    env.push(("SCF_RUNTIME_API_PORT".into(), port));
    let mut place_order = FunctionProcess::spawn(Function::PlaceOrder, &env);
    assert_eq!(place_order.wait_ready().await["mode"], "scf");

    let event = json!({
        "requestContext": {
            "serviceId": "service-e2e",
            "path": "/orders",
            "httpMethod": "POST",
            "requestId": "scf-apigw-1",
            "identity": {},
            "sourceIp": "10.0.2.14",
            "stage": "release"
        },
        "headers": {
            "Content-Type": "application/json",
            "Host": "service-e2e-1250000000.gz.apigw.tencentcs.com",
            "Authorization": backend.bearer("o_scf"),
            "Idempotency-Key": "scf-k1"
        },
        "body": cart(&[(SKU_UNLIMITED, 3)]),
        "pathParameters": {},
        "queryStringParameters": {},
        "headerParameters": {},
        "stageVariables": {"stage": "release"},
        "path": "/release/orders",
        "queryString": {},
        "httpMethod": "POST"
    });
    runtime.push("scf-inv-1", event.to_string());
    let posted = runtime.posted().await;
    assert_eq!(posted.kind, "response");
    let response = posted.json();
    assert_eq!(response["statusCode"], 201, "{response}");
    assert_eq!(response["isBase64Encoded"], false);
    let placed: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(placed["amount_total"], 3 * UNLIMITED_PRICE);
    let order = backend
        .order(placed["out_trade_no"].as_str().unwrap())
        .await;
    assert_eq!(order.openid.as_str(), "o_scf");
    assert_eq!(order.status, OrderStatus::Pending);
    assert!(order.prepay_id.is_some());
    assert_eq!(runtime.calls()[..3], ["ready", "next", "response"]);
}

// ---- 12 --------------------------------------------------------------------------------------

/// The APIv3 key and every base64 line of both private keys' PEM bodies.
fn secrets(app: &TestApp) -> Vec<String> {
    let mut out = vec![app.keys.apiv3_key_text().to_owned()];
    for pem in [app.keys.merchant_key_pem(), app.keys.wechatpay_key_pem()] {
        out.extend(
            pem.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
    }
    assert!(out.len() > 20, "the PEM bodies have many lines");
    out
}

/// The top-level keys of a JSON object as written, duplicates included (`Value` keeps only
/// the last of two equal keys).
fn top_level_keys(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    serde_json::from_str::<Keys>(line)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_reach_logs_or_answers_and_logs_are_json() {
    let app = spawn_app().await;
    let mut answers = Vec::new();

    let (placed, no) = app.place("o_kate", "k-1", &[(SKU_LIMITED, 1)]).await;
    answers.push(placed);
    let paid = app.sim.pay(&pay(&no, 1)).unwrap();
    app.wait_acknowledged(&no).await;
    app.sim.redeliver(&no, 1).unwrap();
    app.wait_deliveries(&no, "the duplicate acknowledged", |a| {
        a.iter().filter(|d| d.status == Some(204)).count() >= 2
    })
    .await;
    let order = app.order(&no).await;
    let txn = app.success_transaction(&order, &paid.transaction_id, order.amount_total.fen());
    let (headers, body) = app.notification(&txn, "n-forged", now_unix(), None);
    let forged = String::from_utf8(body)
        .unwrap()
        .replace("\"n-forged\"", "\"n-forgeD\"");
    let rejected = app.notify(&headers, forged.as_bytes()).await;
    assert_eq!(rejected.status, 401);
    answers.push(rejected);
    app.sim
        .inject_fault(Fault::new(JSAPI, 403, "NO_AUTH", 1))
        .unwrap();
    let refused = app
        .post_order(Some("o_kate"), Some("k-2"), cart(&[(SKU_UNLIMITED, 1)]))
        .await;
    refused.assert_error(502, "PAYMENT_PROVIDER_ERROR");
    answers.push(refused);

    // The reader threads may lag the answers a little: wait for the last expected lines.
    let has = |process: &FunctionProcess, outcome: &str, no: Option<&str>| {
        process.json_logs().iter().any(|l| {
            l["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with(outcome))
                && no.is_none_or(|no| l["out_trade_no"] == no)
        })
    };
    eventually("the outcome log lines", || {
        (has(&app.callback, "rejected:", None) && has(&app.place_order, "rejected:prepay", None))
            .then_some(())
    })
    .await;
    assert!(has(&app.place_order, "created", Some(&no)), "order logged");
    assert!(has(&app.callback, "applied", Some(&no)), "payment logged");
    assert!(
        has(&app.callback, "duplicate", Some(&no)),
        "duplicate logged"
    );

    let secrets = secrets(&app);
    for process in [&app.place_order, &app.callback] {
        let name = process.function.name();
        let lines: Vec<String> = process
            .stdout()
            .into_iter()
            .chain(process.stderr())
            .collect();
        assert!(lines.len() >= 3, "{name} logged");
        for line in &lines {
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "{name} logged a secret: {line}"
                );
            }
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: not a JSON log line ({e}): {line}"));
            assert!(
                parsed["level"].is_string() && parsed["message"].is_string(),
                "{name}: a structured log line: {line}"
            );
            // Two fields of one name (e.g. a `message` field beside the event's message)
            // parse, but a log index keeps only one of them.
            let keys = top_level_keys(line);
            let unique: HashSet<&String> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len(), "{name}: a field repeated: {line}");
        }
    }
    for answer in &answers {
        let text = answer.text();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "an answer holds a secret: {text}"
            );
        }
    }
    // Sanity: the check would have caught a leak of the key material in this output.
    assert!(
        app.keys.merchant_key_pem().contains(&secrets[1]),
        "secrets are the PEM lines"
    );
}

/// `SSL_CERT_FILE` is read by the built binary at start-up (`shared::app::run`): a file it
/// cannot use stops the process with one line naming the variable; a valid one starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_ssl_cert_file_at_start_up() {
    let backend = Backend::start().await;
    let with = |path: &str| {
        let mut env = backend.function_env(None);
        env.push(("SSL_CERT_FILE".into(), path.into()));
        env
    };
    let missing = "/nonexistent/wxpay-orders-roots.pem";
    let mut refused = FunctionProcess::spawn(Function::PaymentCallback, &with(missing));
    eventually("the process to stop on a bad SSL_CERT_FILE", || {
        (!refused.is_running()).then_some(())
    })
    .await;
    // The exit can be seen before the reader threads have taken its last line.
    let said = eventually("its last words", || {
        let said = [refused.stdout(), refused.stderr()].concat().join("\n");
        said.contains("configuration error").then_some(said)
    })
    .await;
    assert!(said.contains("SSL_CERT_FILE"), "{said}");
    assert!(said.contains(&format!("cannot read {missing}")), "{said}");
    assert!(!said.contains("\"ready\""), "{said}");

    let cert = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tls/localhost_cert.pem"
    );
    let mut started = FunctionProcess::spawn(Function::PaymentCallback, &with(cert));
    started.wait_http().await;
}

/// Issue 12.5: the notify handler answers within one overall deadline, whatever DynamoDB
/// does: here each call is held 2 s, so even the one call a first notification costs would
/// end after the invocation's own deadline (1.5 s, over the Lambda runtime API): the answer
/// is a 500 at once (WeChat Pay retries), not a late 204. With DynamoDB fast again, the
/// retry is applied (or found applied: the held call may still land), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalling_dynamodb_gets_a_500_within_the_notify_deadline() {
    let backend = Backend::start().await;
    let slow = SlowDynamo::start(
        backend.dynamodb_endpoint(),
        std::time::Duration::from_millis(2_000),
    )
    .await;
    let mut notify_api = FakeRuntime::lambda(now_ms() + 120_000).await;
    let mut env = lambda_env(&backend, None, notify_api.addr, "payment-callback");
    env.retain(|(k, _)| k != "DYNAMODB_ENDPOINT");
    env.push(("DYNAMODB_ENDPOINT".into(), slow.url.clone()));
    let mut callback = FunctionProcess::spawn(Function::PaymentCallback, &env);
    assert_eq!(callback.wait_ready().await["mode"], "lambda");

    let tea = backend.product(SKU_LIMITED).await;
    let o = wxpay_tests::order("o_slow", &[(&tea, 1)]);
    backend
        .store
        .create_order(&wxpay_tests::fresh_claim(&o), &o)
        .await
        .unwrap();
    let txn = backend.success_transaction(&o, "4200000000202612070000000077", o.amount_total.fen());
    let event = || {
        let (headers, raw) = backend.notification(&txn, "n-slow", now_unix(), None);
        let mut event_headers = serde_json::Map::new();
        for (name, value) in &headers {
            event_headers.insert(name.as_str().to_owned(), json!(value.to_str().unwrap()));
        }
        v2_event(
            "/notify/wechatpay",
            Value::Object(event_headers),
            Value::Null,
            &STANDARD.encode(&raw),
            true,
        )
        .to_string()
    };

    let started = std::time::Instant::now();
    notify_api.push_with_deadline("inv-slow", event(), now_ms() + 1_500);
    let posted = notify_api.posted().await;
    let elapsed = started.elapsed();
    let response = posted.json();
    assert_eq!(response["statusCode"], 500, "{response}");
    assert!(
        elapsed < std::time::Duration::from_millis(1_500),
        "answered after {elapsed:?}"
    );
    // The answer can be seen before the reader threads have taken the lines after it.
    eventually("the deadline's log line and metric", || {
        let logs = callback.json_logs();
        (logs.iter().any(|l| l["outcome"] == "error:deadline")
            && logs.iter().any(|l| l["NotifyFailed"] == 1))
        .then_some(())
    })
    .await;

    // WeChat Pay's retry, once DynamoDB is fast again (and the held call has landed, so the
    // two never meet): applied (or found applied), once.
    slow.set_delay(std::time::Duration::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    notify_api.push_with_deadline("inv-retry", event(), now_ms() + 10_000);
    let response = notify_api.posted().await.json();
    assert_eq!(response["statusCode"], 204, "{response}");
    let stored = backend.order(o.out_trade_no.as_str()).await;
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.version, o.version + 1, "one transition");
}

/// Issue 12.8: the built binary refuses `ALLOW_DEBUG_IDENTITY=1` on Lambda: it stops with
/// one line naming the variable before it polls for any event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_identity_is_refused_on_lambda() {
    let backend = Backend::start().await;
    let runtime = FakeRuntime::lambda(now_ms() + 120_000).await;
    let mut env = lambda_env(&backend, None, runtime.addr, "query-order");
    env.push(("ALLOW_DEBUG_IDENTITY".into(), "1".into()));
    let mut refused = FunctionProcess::spawn(Function::QueryOrder, &env);
    eventually("the process to stop", || {
        (!refused.is_running()).then_some(())
    })
    .await;
    let said = eventually("its last words", || {
        let said = [refused.stdout(), refused.stderr()].concat().join("\n");
        said.contains("configuration error").then_some(said)
    })
    .await;
    assert!(said.contains("ALLOW_DEBUG_IDENTITY"), "{said}");
    assert!(said.contains("AWS Lambda"), "{said}");
    assert!(
        runtime.calls().is_empty(),
        "never polled: {:?}",
        runtime.calls()
    );
}

/// Issue 12.7, against the simulator: a platform-certificate merchant (no public key). The
/// built place-order and payment-callback download `/v3/certificates` on first need (signed,
/// sealed under the APIv3 key), verify the prepay answer and the notification with it, and
/// follow a certificate rotation: a new serial, once the minute's rate limit has passed,
/// downloads again and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_mode_downloads_certificates_and_follows_a_rotation() {
    let key_pem = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../testdata/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("test key")
    };
    let (first, rotated) = ("9F3C5A2E7B1D40086C11", "5EC0AD0CE27000000002");
    let first_pem = key_pem("test_platform_cert.pem");
    let backend = Backend::start_with(|c: &mut sandbox::SimulatorConfig| {
        c.platform_private_key =
            shared::wechatpay::RsaPrivateKey::from_pkcs8_pem(&key_pem("test_platform_key.pem"))
                .expect("platform key");
        c.certificates = vec![(first.to_owned(), first_pem.clone())];
    })
    .await;
    let certificate_mode = |notify_url: Option<&str>| {
        let mut env = backend.function_env(notify_url);
        env.retain(|(k, _)| !k.starts_with("WXPAY_PUBLIC_KEY"));
        env
    };
    let mut callback = FunctionProcess::spawn(Function::PaymentCallback, &certificate_mode(None));
    let notify_url = format!("{}/notify/wechatpay", callback.wait_http().await);
    let mut place_order =
        FunctionProcess::spawn(Function::PlaceOrder, &certificate_mode(Some(&notify_url)));
    let place_url = place_order.wait_http().await;
    let place = |key: &'static str| {
        let request = backend
            .http
            .post(format!("{place_url}/orders"))
            .header("x-debug-openid", "o_certs")
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(cart(&[(SKU_UNLIMITED, 1)]));
        async move {
            let reply = Reply::read(request.send().await.expect("place-order answers")).await;
            assert_eq!(reply.status, 201, "{}", reply.text());
            reply.json()["out_trade_no"].as_str().unwrap().to_owned()
        }
    };
    let loaded = |process: &FunctionProcess| {
        process
            .json_logs()
            .into_iter()
            .filter(|l| l["message"] == "platform certificates loaded")
            .count()
    };

    let no = place("cert-1").await;
    assert_eq!(loaded(&place_order), 1, "downloaded before the first call");
    backend.sim.pay(&pay(&no, 1)).expect("pays");
    let log = backend.wait_acknowledged(&no).await;
    assert!(log.iter().all(|d| d.status == Some(204)), "{log:?}");
    assert_eq!(backend.order(&no).await.status, OrderStatus::Paid);
    assert_eq!(loaded(&callback), 1, "downloaded on the first notification");

    // WeChat Pay rotates its certificate; past the minute's rate limit, the new serial is
    // downloaded and verifies everywhere.
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    backend
        .sim
        .rotate_certificate(rotated, &key_pem("test_platform_cert_rotated.pem"));
    let no = place("cert-2").await;
    assert_eq!(loaded(&place_order), 2);
    backend.sim.pay(&pay(&no, 1)).expect("pays");
    let log = backend.wait_acknowledged(&no).await;
    assert!(log.iter().all(|d| d.status == Some(204)), "{log:?}");
    assert_eq!(backend.order(&no).await.status, OrderStatus::Paid);
    assert_eq!(loaded(&callback), 2, "downloaded again for the new serial");
}
