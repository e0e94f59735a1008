//! `HttpPayGateway` against a local WeChat Pay stand-in: the server checks each request's
//! merchant signature with the merchant public key and answers from a script of replies,
//! signed by a test platform key (or unsigned, or tampered) to exercise every failure path.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use shared::wechatpay::{
    aead::{self, ApiV3Key},
    client::{GatewaySettings, HttpPayGateway, RetryPolicy},
    gateway::{PayError, PayGateway, PrepayRequest},
    keys::{RsaPrivateKey, RsaPublicKey},
    notification::{NotificationDraft, NotificationError, TradeState, build_notification},
    sign::{parse_authorization, request_message},
    verify::{VerifyError, WechatpayHeaders, sign_response_headers},
};

const APIV3: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const PUB_KEY_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";
const CERT_SERIAL: &str = "9F3C5A2E7B1D40086C11";

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

#[derive(Clone, Copy, PartialEq)]
enum Signing {
    Valid,
    Unsigned,
    /// Signed over other bytes than the body sent.
    Tampered,
    /// Signed by the right key but naming a serial the client does not know.
    Serial(&'static str),
}

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    signing: Signing,
    delay: Duration,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.to_owned(),
        signing: Signing::Valid,
        delay: Duration::ZERO,
    }
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    body: String,
    signature_ok: bool,
    headers: HeaderMap,
}

#[derive(Clone)]
struct Server {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    platform_key: Arc<RsaPrivateKey>,
    merchant_public: Arc<RsaPublicKey>,
    serial: &'static str,
}

async fn handle(
    State(s): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let signature_ok = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| parse_authorization(h).ok())
        .is_some_and(|a| {
            let msg = request_message(
                method.as_str(),
                &path_and_query,
                &a.timestamp,
                &a.nonce_str,
                &body,
            );
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&a.signature)
                .is_ok_and(|sig| s.merchant_public.verify(&msg, &sig))
                && a.mchid == "1900007291"
                && a.serial_no == "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB"
        });
    s.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path_and_query,
        body: String::from_utf8_lossy(&body).into_owned(),
        signature_ok,
        headers,
    });
    if !signature_ok {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code":"SIGN_ERROR","message":"bad signature"}"#,
        )
            .into_response();
    }
    let r = s.replies.lock().unwrap().pop_front().unwrap_or_else(|| {
        reply(
            500,
            r#"{"code":"SYSTEM_ERROR","message":"script exhausted"}"#,
        )
    });
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut out = Response::new(axum::body::Body::from(r.body.clone()));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap();
    let signed = match r.signing {
        Signing::Valid => Some((s.serial, r.body.clone())),
        Signing::Unsigned => None,
        Signing::Tampered => Some((s.serial, format!("{} ", r.body))),
        Signing::Serial(serial) => Some((serial, r.body.clone())),
    };
    if let Some((serial, signed_body)) = signed {
        let h = sign_response_headers(
            &s.platform_key,
            serial,
            ts,
            "c5ac7061fccab6bf3e254dcf98995b8c",
            signed_body.as_bytes(),
        );
        out.headers_mut().extend(h);
    }
    if !r.body.is_empty() {
        out.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    out
}

async fn start(serial: &'static str, replies: Vec<Reply>) -> (Server, SocketAddr) {
    let server = Server {
        replies: Arc::new(Mutex::new(replies.into())),
        seen: Arc::default(),
        platform_key: Arc::new(
            RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap(),
        ),
        merchant_public: Arc::new(
            RsaPublicKey::from_spki_pem(&pem("test_merchant_public.pem")).unwrap(),
        ),
        serial,
    };
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, addr)
}

fn settings(addr: SocketAddr, public_key: bool) -> GatewaySettings {
    GatewaySettings {
        api_base: format!("http://{addr}"),
        appid: "wx2421b1c4370ec43b".into(),
        mchid: "1900007291".into(),
        mch_serial_no: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        mch_private_key: Some(
            RsaPrivateKey::from_pkcs8_pem(&pem("test_merchant_key.pem")).unwrap(),
        ),
        apiv3_key: ApiV3Key::new(APIV3).unwrap(),
        public_key: public_key.then(|| {
            (
                PUB_KEY_ID.to_owned(),
                RsaPublicKey::from_spki_pem(&pem("test_platform_public.pem")).unwrap(),
            )
        }),
        notify_url: Some("https://pay.example.com/notify/wechatpay".into()),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            total_budget: Duration::from_secs(5),
            request_timeout: Duration::from_millis(500),
        },
        certificate_refresh_interval: Duration::from_secs(60),
        certificate_max_age: shared::wechatpay::client::CERTIFICATE_MAX_AGE,
    }
}

async fn gateway(replies: Vec<Reply>) -> (Server, HttpPayGateway) {
    let (server, addr) = start(PUB_KEY_ID, replies).await;
    (server, HttpPayGateway::new(settings(addr, true)).unwrap())
}

fn prepay_request() -> PrepayRequest {
    PrepayRequest {
        out_trade_no: "01JDQ8ZP5V9X8Y7W6T5S4R3Q2P".into(),
        description: "Demo shop - 2 items".into(),
        time_expire: "2026-11-24T12:30:00+08:00".into(),
        attach: None,
        amount_total: 1980,
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
    }
}

const NOTPAY: &str = r#"{"appid":"wx2421b1c4370ec43b","mchid":"1900007291","out_trade_no":"01JDQ8ZP5V9X8Y7W6T5S4R3Q2P","trade_state":"NOTPAY","trade_state_desc":"订单未支付","amount":{"total":1980,"currency":"CNY"}}"#;

#[tokio::test]
async fn prepay_is_signed_and_carries_what_wechat_pay_requires() {
    let (server, gw) = gateway(vec![reply(
        200,
        r#"{"prepay_id":"wx201410272009395522657a690389285100"}"#,
    )])
    .await;
    let r = gw.jsapi_prepay(&prepay_request()).await.unwrap();
    assert_eq!(r.prepay_id, "wx201410272009395522657a690389285100");

    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert!(s.signature_ok, "merchant signature must verify");
    assert_eq!(
        (s.method.as_str(), s.path_and_query.as_str()),
        ("POST", "/v3/pay/transactions/jsapi")
    );
    assert_eq!(s.headers["accept"], "application/json");
    assert_eq!(s.headers["content-type"], "application/json");
    assert!(
        s.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("wxpay-orders/")
    );
    assert_eq!(s.headers["wechatpay-serial"], PUB_KEY_ID);
    let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(body["appid"], "wx2421b1c4370ec43b");
    assert_eq!(body["mchid"], "1900007291");
    assert_eq!(
        body["notify_url"],
        "https://pay.example.com/notify/wechatpay"
    );
    assert_eq!(body["time_expire"], "2026-11-24T12:30:00+08:00");
    assert_eq!(
        body["amount"],
        serde_json::json!({"total": 1980, "currency": "CNY"})
    );
    assert_eq!(body["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert!(
        body.get("attach").is_none(),
        "absent attach must be left out, not null"
    );
}

#[tokio::test]
async fn query_signs_the_path_with_its_query_string() {
    let (server, gw) = gateway(vec![reply(200, NOTPAY)]).await;
    let t = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap();
    assert_eq!(t.trade_state, TradeState::NotPay);
    assert_eq!(t.out_trade_no, "01JDQ8ZP5V9X8Y7W6T5S4R3Q2P");
    assert!(t.transaction_id.is_none());
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].path_and_query,
        "/v3/pay/transactions/out-trade-no/01JDQ8ZP5V9X8Y7W6T5S4R3Q2P?mchid=1900007291"
    );
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].signature_ok);
    assert!(seen[0].body.is_empty());
}

#[tokio::test]
async fn query_by_transaction_id_and_close() {
    let paid = r#"{"appid":"wx2421b1c4370ec43b","mchid":"1900007291","out_trade_no":"01JDQ8ZP5V9X8Y7W6T5S4R3Q2P","transaction_id":"4200000000202611240000000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","success_time":"2026-11-24T12:01:02+08:00","payer":{"openid":"o1"},"amount":{"total":1980,"payer_total":1980,"currency":"CNY","payer_currency":"CNY"}}"#;
    let (server, gw) = gateway(vec![reply(200, paid), reply(204, "")]).await;
    let t = gw
        .query_by_transaction_id("4200000000202611240000000001")
        .await
        .unwrap();
    assert_eq!(t.trade_state, TradeState::Success);
    assert_eq!(
        t.transaction_id.as_deref(),
        Some("4200000000202611240000000001")
    );
    gw.close("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").await.unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].path_and_query,
        "/v3/pay/transactions/id/4200000000202611240000000001?mchid=1900007291"
    );
    assert_eq!(
        seen[1].path_and_query,
        "/v3/pay/transactions/out-trade-no/01JDQ8ZP5V9X8Y7W6T5S4R3Q2P/close"
    );
    assert_eq!(seen[1].body, r#"{"mchid":"1900007291"}"#);
    assert!(seen.iter().all(|s| s.signature_ok));
}

#[tokio::test]
async fn a_business_refusal_is_typed_and_not_retried() {
    let (server, gw) = gateway(vec![reply(
        403,
        r#"{"code":"OUT_TRADE_NO_USED","message":"商户订单号重复","detail":{"field":"out_trade_no"}}"#,
    )])
    .await;
    let e = gw.jsapi_prepay(&prepay_request()).await.unwrap_err();
    match &e {
        PayError::Api {
            status,
            code,
            detail,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (403, "OUT_TRADE_NO_USED"));
            assert_eq!(detail.as_ref().unwrap()["field"], "out_trade_no");
        }
        other => panic!("expected Api error, got {other:?}"),
    }
    assert!(!e.retryable());
    assert_eq!(e.code(), Some("OUT_TRADE_NO_USED"));
    assert_eq!(
        server.seen.lock().unwrap().len(),
        1,
        "4xx must not be retried"
    );
}

#[tokio::test]
async fn a_5xx_is_retried_then_succeeds() {
    let (server, gw) = gateway(vec![
        reply(500, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#),
        reply(200, NOTPAY),
    ])
    .await;
    let t = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap();
    assert_eq!(t.trade_state, TradeState::NotPay);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // each attempt is signed afresh (new nonce) and for the same path
    assert_ne!(
        seen[0].headers["authorization"],
        seen[1].headers["authorization"]
    );
    assert_eq!(seen[0].path_and_query, seen[1].path_and_query);
}

#[tokio::test]
async fn rate_limiting_is_retried_but_bounded() {
    let limited = r#"{"code":"FREQUENCY_LIMITED","message":"你的操作过于频繁"}"#;
    let (server, gw) = gateway(vec![
        reply(429, limited),
        reply(429, limited),
        reply(429, limited),
        reply(200, NOTPAY),
    ])
    .await;
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("FREQUENCY_LIMITED"));
    assert!(e.retryable());
    assert_eq!(server.seen.lock().unwrap().len(), 3, "max_attempts = 3");
}

#[tokio::test]
async fn an_unsigned_2xx_is_refused_as_forged() {
    let mut r = reply(200, r#"{"prepay_id":"wx_forged"}"#);
    r.signing = Signing::Unsigned;
    let (server, gw) = gateway(vec![r]).await;
    let e = gw.jsapi_prepay(&prepay_request()).await.unwrap_err();
    assert!(matches!(e, PayError::UnsignedResponse), "{e:?}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unsigned_204_is_refused_too() {
    let mut r = reply(204, "");
    r.signing = Signing::Unsigned;
    let (_, gw) = gateway(vec![r]).await;
    let e = gw.close("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").await.unwrap_err();
    assert!(matches!(e, PayError::UnsignedResponse), "{e:?}");
}

#[tokio::test]
async fn a_tampered_response_is_refused() {
    let mut r = reply(200, r#"{"prepay_id":"wx_tampered"}"#);
    r.signing = Signing::Tampered;
    let (_, gw) = gateway(vec![r]).await;
    let e = gw.jsapi_prepay(&prepay_request()).await.unwrap_err();
    assert!(
        matches!(e, PayError::BadResponseSignature(VerifyError::BadSignature)),
        "{e:?}"
    );
    assert!(!e.retryable());
}

#[tokio::test]
async fn a_response_signed_under_an_unknown_serial_is_refused() {
    let mut r = reply(200, NOTPAY);
    r.signing = Signing::Serial("PUB_KEY_ID_9999");
    let (_, gw) = gateway(vec![r]).await;
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            PayError::BadResponseSignature(VerifyError::UnknownSerial(_))
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_within_the_budget() {
    let mut slow = reply(200, NOTPAY);
    slow.delay = Duration::from_secs(3);
    let (server, gw) = gateway(vec![slow.clone(), slow.clone(), slow]).await;
    let started = std::time::Instant::now();
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::Timeout(_)), "{e:?}");
    assert!(e.retryable());
    assert_eq!(
        server.seen.lock().unwrap().len(),
        3,
        "timeouts are retried up to max_attempts"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "each attempt stops at request_timeout"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let gw = HttpPayGateway::new(settings(addr, true)).unwrap();
    let e = gw.close("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").await.unwrap_err();
    assert!(matches!(e, PayError::Network(_)), "{e:?}");
    assert!(e.retryable());
}

#[tokio::test]
async fn ids_that_would_change_the_signed_path_are_refused_before_sending() {
    let (server, gw) = gateway(vec![]).await;
    for bad in ["../../v3/refund", "a/b", "", "x?mchid=1"] {
        let e = gw.query_by_out_trade_no(bad).await.unwrap_err();
        assert!(matches!(e, PayError::InvalidRequest(_)), "{bad}: {e:?}");
    }
    assert!(server.seen.lock().unwrap().is_empty());
}

fn certificates_body(key: &ApiV3Key) -> String {
    serde_json::json!({"data": [certificate_entry(key, "test_platform_cert.pem", CERT_SERIAL)]})
        .to_string()
}

/// One `data` entry of a `/v3/certificates` answer: `file` sealed under `key`.
fn certificate_entry(key: &ApiV3Key, file: &str, serial: &str) -> serde_json::Value {
    let cert = pem(file);
    let ciphertext = aead::seal(key, "0123456789ab", "certificate", cert.as_bytes()).unwrap();
    serde_json::json!({
        "serial_no": serial,
        "effective_time": "2026-11-24T00:00:00+08:00",
        "expire_time": "2046-11-19T00:00:00+08:00",
        "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": "0123456789ab",
            "associated_data": "certificate", "ciphertext": ciphertext}
    })
}

const EXPIRED_SERIAL: &str = "7E57E4F1BED0000001";

fn downloads(server: &Server) -> usize {
    server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path_and_query == "/v3/certificates")
        .count()
}

/// A notification (the NOTPAY transaction) signed by the platform key under `serial`.
fn notification_as(serial: &str, id: &str) -> (WechatpayHeaders, Vec<u8>, i64) {
    let platform = RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap();
    let key = ApiV3Key::new(APIV3).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let draft =
        NotificationDraft::transaction_success(id, "2026-11-24T12:01:03+08:00", NOTPAY.as_bytes());
    let (headers, body) = build_notification(&platform, serial, &key, &draft, now);
    (WechatpayHeaders::from(&headers), body, now)
}

/// Issue 12.7: while a merchant migrates from platform certificates to the public key,
/// WeChat Pay signs notifications with either; both verify in public-key mode (a certificate
/// serial downloads the certificates once), and an unknown public-key id downloads nothing.
#[tokio::test]
async fn public_key_mode_also_verifies_certificate_signed_notifications() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let (server, addr) = start(CERT_SERIAL, vec![reply(200, &certificates_body(&key))]).await;
    let gw = HttpPayGateway::new(settings(addr, true)).unwrap();

    let (headers, body, now) = notification_as(PUB_KEY_ID, "n-pub");
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 0, "the public key needs no download");

    let (headers, body, now) = notification_as(CERT_SERIAL, "n-cert");
    let verified = gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(verified.signature.serial, CERT_SERIAL);
    assert_eq!(downloads(&server), 1);
    let (headers, body, now) = notification_as(CERT_SERIAL, "n-cert-2");
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 1, "cached");

    let (headers, body, now) =
        notification_as("PUB_KEY_ID_0000000000000000000000000000000001", "n-x");
    let e = gw
        .verify_notification(&headers, &body, now)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotificationError::Verify(VerifyError::UnknownSerial(_))),
        "{e:?}"
    );
    assert_eq!(downloads(&server), 1, "no download for a public-key id");
}

/// Issue 12.7: one entry that does not decrypt, or whose certificate has expired, does not
/// discard the good one beside it.
#[tokio::test]
async fn a_bad_or_expired_entry_does_not_discard_the_good_ones() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let wrong = ApiV3Key::new("00000000000000000000000000000000").unwrap();
    let body = serde_json::json!({"data": [
        certificate_entry(&wrong, "test_platform_cert.pem", "0A0B0C"),
        certificate_entry(&key, "test_platform_cert_expired.pem", EXPIRED_SERIAL),
        certificate_entry(&key, "test_platform_cert.pem", CERT_SERIAL),
    ]})
    .to_string();
    let (_, addr) = start(CERT_SERIAL, vec![reply(200, &body), reply(200, NOTPAY)]).await;
    let gw = HttpPayGateway::new(settings(addr, false)).unwrap();
    gw.query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap();
    assert_eq!(gw.known_serials(), vec![CERT_SERIAL.to_owned()]);

    // Only bad entries: refused, nothing installed.
    let only_bad = serde_json::json!({"data": [
        certificate_entry(&key, "test_platform_cert_expired.pem", EXPIRED_SERIAL),
    ]})
    .to_string();
    let (_, addr) = start(EXPIRED_SERIAL, vec![reply(200, &only_bad)]).await;
    let gw = HttpPayGateway::new(settings(addr, false)).unwrap();
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PayError::Certificates(m) if m.contains("expired")),
        "{e:?}"
    );
    assert!(gw.known_serials().is_empty());
}

/// Issue 12.7: downloaded certificates are downloaded again once they reach their maximum
/// age (12 h deployed; 300 ms here), and a failed refresh keeps the ones we have.
#[tokio::test]
async fn certificates_are_refreshed_once_they_reach_their_maximum_age() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let (server, addr) = start(
        CERT_SERIAL,
        vec![
            reply(200, &certificates_body(&key)),
            reply(500, r#"{"code":"SYSTEM_ERROR","message":"busy"}"#),
            reply(500, r#"{"code":"SYSTEM_ERROR","message":"busy"}"#),
            reply(500, r#"{"code":"SYSTEM_ERROR","message":"busy"}"#),
            reply(200, &certificates_body(&key)),
        ],
    )
    .await;
    let mut s = settings(addr, false);
    s.certificate_max_age = Duration::from_millis(300);
    s.certificate_refresh_interval = Duration::from_millis(100);
    let gw = HttpPayGateway::new(s).unwrap();
    gw.refresh_certificates().await.unwrap();
    let (headers, body, now) = notification_as(CERT_SERIAL, "n-1");
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 1, "fresh: no download");

    tokio::time::sleep(Duration::from_millis(350)).await;
    // Stale, and WeChat Pay fails the refresh (3 attempts): the old ones still verify.
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 4);
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 5, "refreshed");
    gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(downloads(&server), 5, "fresh again");
}

/// Issue 12.7: unknown serials download at most once per refresh interval, and a genuine new
/// certificate that shows up after the interval is still accepted (never locked out).
#[tokio::test]
async fn unknown_serials_are_rate_limited_without_locking_out_a_later_certificate() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let (server, addr) = start(
        CERT_SERIAL,
        vec![
            reply(404, r#"{"code":"RESOURCE_NOT_EXISTS","message":"none"}"#),
            reply(200, &certificates_body(&key)),
        ],
    )
    .await;
    let mut s = settings(addr, true);
    s.certificate_refresh_interval = Duration::from_millis(300);
    let gw = HttpPayGateway::new(s).unwrap();
    for i in 0..5 {
        let (headers, body, now) = notification_as("0DEADBEEF0", &format!("n-probe-{i}"));
        assert!(gw.verify_notification(&headers, &body, now).await.is_err());
    }
    assert_eq!(downloads(&server), 1, "one download for five probes");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (headers, body, now) = notification_as(CERT_SERIAL, "n-rotated");
    gw.verify_notification(&headers, &body, now)
        .await
        .expect("a new certificate after the interval is accepted");
    assert_eq!(downloads(&server), 2);
}

#[tokio::test]
async fn certificate_mode_downloads_decrypts_and_caches_platform_certificates() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let (server, addr) = start(
        CERT_SERIAL,
        vec![
            reply(200, &certificates_body(&key)),
            reply(200, NOTPAY),
            reply(200, NOTPAY),
        ],
    )
    .await;
    let gw = HttpPayGateway::new(settings(addr, false)).unwrap();
    assert!(
        gw.known_serials().is_empty(),
        "no network call before the first request"
    );
    assert!(server.seen.lock().unwrap().is_empty());

    gw.query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap();
    gw.query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap();
    assert_eq!(gw.known_serials(), vec![CERT_SERIAL.to_owned()]);
    let seen = server.seen.lock().unwrap().clone();
    let paths: Vec<_> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(paths[0], "/v3/certificates");
    assert_eq!(
        paths.len(),
        3,
        "certificates downloaded once, then cached: {paths:?}"
    );
    assert!(seen[1].headers.get("wechatpay-serial").is_none());
}

#[tokio::test]
async fn an_unknown_serial_triggers_one_rate_limited_refresh() {
    let key = ApiV3Key::new(APIV3).unwrap();
    let mut unknown = reply(200, NOTPAY);
    unknown.signing = Signing::Serial("0000AAAA");
    let (server, addr) = start(
        CERT_SERIAL,
        vec![
            reply(200, &certificates_body(&key)),
            unknown.clone(),
            unknown,
        ],
    )
    .await;
    let mut s = settings(addr, false);
    s.certificate_refresh_interval = Duration::from_secs(3600);
    let gw = HttpPayGateway::new(s).unwrap();
    gw.refresh_certificates().await.unwrap();
    for _ in 0..2 {
        let e = gw
            .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                PayError::BadResponseSignature(VerifyError::UnknownSerial(_))
            ),
            "{e:?}"
        );
    }
    let downloads = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path_and_query == "/v3/certificates")
        .count();
    assert_eq!(downloads, 1, "refresh is rate-limited");
}

#[tokio::test]
async fn a_certificate_download_that_does_not_decrypt_is_refused() {
    let wrong = ApiV3Key::new("00000000000000000000000000000000").unwrap();
    let (_, addr) = start(CERT_SERIAL, vec![reply(200, &certificates_body(&wrong))]).await;
    let gw = HttpPayGateway::new(settings(addr, false)).unwrap();
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::Certificates(_)), "{e:?}");
    assert!(gw.known_serials().is_empty());
}

#[tokio::test]
async fn notifications_verify_and_decrypt_through_the_same_key_map() {
    let (_, gw) = gateway(vec![]).await;
    let platform = RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap();
    let key = ApiV3Key::new(APIV3).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let draft = NotificationDraft::transaction_success(
        "n-1",
        "2026-11-24T12:01:03+08:00",
        NOTPAY.as_bytes(),
    );
    let (headers, body) = build_notification(&platform, PUB_KEY_ID, &key, &draft, now);
    let headers = WechatpayHeaders::from(&headers);
    let verified = gw.verify_notification(&headers, &body, now).await.unwrap();
    assert_eq!(verified.signature.serial, PUB_KEY_ID);
    assert_eq!(verified.notification.id, "n-1");
    assert_eq!(
        verified.transaction().unwrap().out_trade_no,
        "01JDQ8ZP5V9X8Y7W6T5S4R3Q2P"
    );

    let mut tampered = body.clone();
    tampered.push(b'\n');
    let e = gw
        .verify_notification(&headers, &tampered, now)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotificationError::Verify(VerifyError::BadSignature)),
        "{e:?}"
    );

    // signed correctly, but sealed under another APIv3 key: the tag does not verify
    let other = ApiV3Key::new("00000000000000000000000000000000").unwrap();
    let (headers, body) = build_notification(&platform, PUB_KEY_ID, &other, &draft, now);
    let headers = WechatpayHeaders::from(&headers);
    let e = gw
        .verify_notification(&headers, &body, now)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotificationError::Decrypt(aead::AeadError::BadTag)),
        "{e:?}"
    );
}

#[test]
fn pay_params_are_signed_for_the_configured_appid() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let gw = HttpPayGateway::new(settings(addr, true)).unwrap();
    let p = gw
        .pay_params("wx201410272009395522657a690389285100", 1_700_000_000)
        .unwrap();
    assert_eq!(p.app_id, "wx2421b1c4370ec43b");
    assert_eq!(p.time_stamp, "1700000000");
    assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(p.sign_type, "RSA");
    let merchant = RsaPublicKey::from_spki_pem(&pem("test_merchant_public.pem")).unwrap();
    assert!(p.verify(&merchant));
}

/// Issue 12.8: without the merchant private key (payment-callback with a public key) the
/// client verifies and decrypts notifications, and refuses anything that would sign.
#[tokio::test]
async fn without_a_merchant_key_notifications_verify_and_nothing_is_signed() {
    let (server, addr) = start(PUB_KEY_ID, vec![reply(200, NOTPAY)]).await;
    let mut s = settings(addr, true);
    s.mch_private_key = None;
    let gw = HttpPayGateway::new(s).unwrap();
    let (headers, body, now) = notification_as(PUB_KEY_ID, "n-keyless");
    gw.verify_notification(&headers, &body, now).await.unwrap();
    let e = gw
        .query_by_out_trade_no("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PayError::Config(m) if m.contains("private key")),
        "{e:?}"
    );
    assert!(matches!(gw.pay_params("wx1", 1), Err(PayError::Config(_))));
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "nothing sent unsigned"
    );
}
