//! The notify endpoint's answers that the end-to-end suite does not reach: a verified
//! notification for another merchant (400 FAIL: WeChat Pay keeps retrying, so a fixed
//! configuration still applies it; nothing stored) and a store that cannot be reached (500
//! FAIL: WeChat Pay retries; nothing half-applied); and what a notification costs in
//! DynamoDB calls. The real handler, over embedded Dynoxide.

use std::{sync::Arc, time::Duration};

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
        mch_private_key: RsaPrivateKey::from_pkcs8_pem(&pem("test_merchant_key.pem")).unwrap(),
        apiv3_key: ApiV3Key::new(APIV3).unwrap(),
        public_key: Some((
            PUB_KEY_ID.into(),
            RsaPublicKey::from_spki_pem(&pem("test_platform_public.pem")).unwrap(),
        )),
        notify_url: None,
        retry: RetryPolicy::default(),
        certificate_refresh_interval: Duration::from_secs(60),
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
    let draft = NotificationDraft::transaction_success(
        "n-edge",
        "2026-11-24T12:01:03+08:00",
        txn.as_bytes(),
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let platform = RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap();
    let (headers, body) = build_notification(
        &platform,
        PUB_KEY_ID,
        &ApiV3Key::new(APIV3).unwrap(),
        &draft,
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
    let handler = PaymentCallbackHandler {
        deps: deps(Arc::new(ctx.store.clone())),
    };
    (ctx, o, handler)
}

#[tokio::test]
async fn a_verified_notification_for_another_merchant_is_refused_and_stores_nothing() {
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
    assert!(
        ctx.store
            .list_anomalies(&o.out_trade_no)
            .await
            .unwrap()
            .is_empty()
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
    let handler = PaymentCallbackHandler {
        deps: deps(Arc::new(store)),
    };
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

/// The first delivery reads the order (its lines say which products' stock moves) and applies
/// it in one transaction; every later delivery is answered from the read alone.
#[tokio::test]
async fn a_notification_costs_two_dynamodb_calls_first_and_one_as_a_duplicate() {
    let (ctx, o, handler) = pending_order("notification_calls").await;
    let deliver = || notification(APPID, MCHID, o.out_trade_no.as_str(), 1980);

    ctx.counter.reset();
    assert_eq!(handler.handle(deliver()).await.status(), 204);
    let first = ctx.counter.snapshot();
    assert_eq!(first.calls_of("GetItem"), 1, "{first:?}");
    assert_eq!(first.calls_of("TransactWriteItems"), 1, "{first:?}");
    assert_eq!(first.total_calls(), 2, "{first:?}");

    for _ in 0..3 {
        ctx.counter.reset();
        assert_eq!(handler.handle(deliver()).await.status(), 204);
        let again = ctx.counter.snapshot();
        assert_eq!(again.calls_of("GetItem"), 1, "{again:?}");
        assert_eq!(again.total_calls(), 1, "{again:?}");
    }
    let stored = ctx.store.get_order(&o.out_trade_no).await.unwrap().unwrap();
    assert_eq!(stored.status, shared::domain::OrderStatus::Paid);
    assert_eq!(stored.version, o.version + 1, "one transition");
}
