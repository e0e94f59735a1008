//! The WeChat Pay simulator driven through the backend's real client (`HttpPayGateway` in
//! public-key mode), plus raw signed requests for what the client never sends, a local
//! notify endpoint that verifies and decrypts every notification with `shared`, and the
//! sandbox key generation.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sandbox::{Fault, SandboxKeys, Simulator, SimulatorConfig, SimulatorHandle};
use shared::timefmt::to_wechat;
use shared::wechatpay::{
    ApiV3Key, GatewaySettings, HttpPayGateway, MerchantSigner, PayError, PayGateway, PrepayRequest,
    RefundNotice, RefundRequest, RefundState, RsaPrivateKey, TradeState, Transaction, Verifier,
    WechatpayHeaders, nonce, verify_and_decrypt,
};
use time::OffsetDateTime;
use wxpay_tests::simulated::{
    APIV3, APPID, MCH_SERIAL, MCHID, PUB_KEY_ID, merchant_key, platform_public_key,
    simulator_config, simulator_gateway_settings, start_simulator, test_pem,
};

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const DEADLINE: Duration = Duration::from_secs(10);

/// Notifications are given 5 s, refunds settle after 2 s.
fn config() -> SimulatorConfig {
    SimulatorConfig {
        delivery_timeout: Duration::from_secs(5),
        refund_delay: Duration::from_secs(2),
        ..simulator_config()
    }
}

async fn simulator() -> SimulatorHandle {
    start_simulator(config()).await
}

fn gateway_with(sim: &SimulatorHandle, notify_url: &str, key: RsaPrivateKey) -> HttpPayGateway {
    HttpPayGateway::new(GatewaySettings {
        mch_private_key: Some(key),
        ..simulator_gateway_settings(sim, notify_url)
    })
    .unwrap()
}

fn gateway(sim: &SimulatorHandle, notify_url: &str) -> HttpPayGateway {
    gateway_with(sim, notify_url, merchant_key())
}

fn order(out_trade_no: &str, amount_total: i64) -> PrepayRequest {
    PrepayRequest {
        out_trade_no: out_trade_no.into(),
        description: "wxpay-orders test order".into(),
        time_expire: to_wechat(OffsetDateTime::now_utc() + Duration::from_secs(1800)),
        attach: Some("cart=42".into()),
        amount_total,
        payer_openid: OPENID.into(),
    }
}

fn api_error(e: PayError) -> (u16, String) {
    match e {
        PayError::Api { status, code, .. } => (status, code),
        other => panic!("expected a WeChat Pay error body, got {other:?}"),
    }
}

/// Polls `f` until it yields, failing the test at the deadline.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A control call (`/sandbox/*`): JSON in, (status, JSON) out.
async fn control(
    sim: &SimulatorHandle,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", sim.base_url());
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

/// A request signed like the client signs, with knobs the client does not have.
struct Raw<'a> {
    method: &'a str,
    path_and_query: &'a str,
    body: &'a str,
    key: RsaPrivateKey,
    timestamp: i64,
    user_agent: bool,
}

impl<'a> Raw<'a> {
    fn new(method: &'a str, path_and_query: &'a str, body: &'a str) -> Self {
        Raw {
            method,
            path_and_query,
            body,
            key: merchant_key(),
            timestamp: OffsetDateTime::now_utc().unix_timestamp(),
            user_agent: true,
        }
    }

    async fn send(self, sim: &SimulatorHandle) -> (u16, HeaderMap, Bytes) {
        let signer = MerchantSigner::new(MCHID, MCH_SERIAL, self.key);
        let authorization = signer.authorization(
            self.method,
            self.path_and_query,
            self.body.as_bytes(),
            self.timestamp,
            &nonce(),
        );
        let mut request = reqwest::Client::new()
            .request(
                self.method.parse().unwrap(),
                format!("{}{}", sim.base_url(), self.path_and_query),
            )
            .header("authorization", authorization)
            .header("accept", "application/json");
        if self.user_agent {
            request = request.header("user-agent", "sandbox-tests");
        }
        if !self.body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(self.body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap())
    }
}

fn code_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["code"].as_str().unwrap().to_owned()
}

fn verifier() -> Verifier {
    let mut verifier = Verifier::new();
    verifier.add_public_key(PUB_KEY_ID, platform_public_key());
    verifier
}

// -----------------------------------------------------------------------------------------
// A notify endpoint that verifies every notification the way the backend must.
// -----------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Received {
    notification_id: String,
    event_type: String,
    signature_nonce: String,
    transaction: Transaction,
    /// The most deliveries in flight together, seen when this one was answered.
    in_flight: usize,
}

/// A verified, decrypted `REFUND.*` notification.
#[derive(Debug, Clone)]
struct ReceivedRefund {
    notification_id: String,
    event_type: String,
    notice: RefundNotice,
}

#[derive(Default)]
struct ReceiverState {
    /// Statuses to answer, in order; 204 once used up.
    plan: VecDeque<u16>,
    received: Vec<Received>,
    refunds: Vec<ReceivedRefund>,
    rejected: Vec<String>,
    in_flight: usize,
    /// The most deliveries ever in flight together.
    peak: usize,
    /// Hold each delivery until this many are in flight together (or a deadline passes).
    hold_until_in_flight: usize,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(plan: &[u16], hold_until_in_flight: usize) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            plan: plan.iter().copied().collect(),
            hold_until_in_flight,
            ..Default::default()
        }));
        let app = axum::Router::new()
            .route("/notify/wechatpay", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/notify/wechatpay", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn refunds(&self) -> Vec<ReceivedRefund> {
        self.state.lock().unwrap().refunds.clone()
    }

    fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let verified = verify_and_decrypt(
        &verifier(),
        &ApiV3Key::new(APIV3).unwrap(),
        &WechatpayHeaders::from(&headers),
        &body,
        now,
    );
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            state.lock().unwrap().rejected.push(e.to_string());
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"code":"FAIL","message":"verification failed"}"#,
            )
                .into_response();
        }
    };

    let hold = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.peak = s.peak.max(s.in_flight);
        s.hold_until_in_flight
    };
    let start = Instant::now();
    while state.lock().unwrap().peak < hold && start.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut s = state.lock().unwrap();
    s.in_flight -= 1;
    let in_flight = s.peak;
    if verified.notification.event_type.starts_with("REFUND.") {
        s.refunds.push(ReceivedRefund {
            notification_id: verified.notification.id.clone(),
            event_type: verified.notification.event_type.clone(),
            notice: verified.refund_notice().unwrap(),
        });
    } else {
        s.received.push(Received {
            notification_id: verified.notification.id.clone(),
            event_type: verified.notification.event_type.clone(),
            signature_nonce: verified.signature.nonce.clone(),
            transaction: verified.transaction().unwrap(),
            in_flight,
        });
    }
    let status = s.plan.pop_front().unwrap_or(204);
    drop(s);
    if status == 204 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            StatusCode::from_u16(status).unwrap(),
            r#"{"code":"FAIL","message":"try again"}"#,
        )
            .into_response()
    }
}

// -----------------------------------------------------------------------------------------
// The WeChat Pay API through the real client
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn an_order_goes_from_prepay_to_paid_through_the_real_client() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000001";

    let prepay = client.jsapi_prepay(&order(no, 1980)).await.unwrap();
    assert!(
        prepay.prepay_id.starts_with("wx") && prepay.prepay_id.len() == 36,
        "{}",
        prepay.prepay_id
    );

    let unpaid = client.query_by_out_trade_no(no).await.unwrap();
    assert_eq!(unpaid.trade_state, TradeState::NotPay);
    assert_eq!(
        (unpaid.appid.as_str(), unpaid.mchid.as_str()),
        (APPID, MCHID)
    );
    assert_eq!(unpaid.amount.as_ref().unwrap().total, 1980);
    assert!(
        unpaid.payer.is_none() && unpaid.transaction_id.is_none() && unpaid.success_time.is_none()
    );

    let (status, paid) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": no, "deliveries": 1})),
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["trade_state"], "SUCCESS");
    let transaction_id = paid["transaction_id"].as_str().unwrap().to_owned();
    assert!(
        transaction_id.len() == 28
            && transaction_id.starts_with("4200")
            && transaction_id.bytes().all(|b| b.is_ascii_digit()),
        "{transaction_id}"
    );

    let by_no = client.query_by_out_trade_no(no).await.unwrap();
    assert_eq!(by_no.trade_state, TradeState::Success);
    assert_eq!(
        by_no.transaction_id.as_deref(),
        Some(transaction_id.as_str())
    );
    assert_eq!(by_no.payer.as_ref().unwrap().openid, OPENID);
    assert_eq!(by_no.amount.as_ref().unwrap().payer_total, Some(1980));
    assert_eq!(by_no.attach.as_deref(), Some("cart=42"));
    assert!(by_no.success_time.as_deref().unwrap().ends_with("+08:00"));
    let by_id = client
        .query_by_transaction_id(&transaction_id)
        .await
        .unwrap();
    // The same transaction, each answer with its own Request-ID.
    assert!(by_no.request_id.is_some() && by_id.request_id != by_no.request_id);
    let without_id = |t: &Transaction| Transaction {
        request_id: None,
        ..t.clone()
    };
    assert_eq!(without_id(&by_id), without_id(&by_no));

    let refused = client.close(no).await.unwrap_err();
    assert_eq!(api_error(refused), (400, "ORDERPAID".to_owned()));

    let received = eventually("the notification", || receiver.received().pop()).await;
    assert_eq!(received.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(
        received.notification_id,
        paid["notification_id"].as_str().unwrap()
    );
    // The notification's transaction is the query's, less the query answer's Request-ID.
    assert_eq!(received.transaction, without_id(&by_no));
    assert!(receiver.rejected().is_empty());
    let attempts = eventually("the delivery log", || {
        let list = sim.deliveries(no);
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, Some(204));

    // Paying twice is refused.
    let (status, again) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": no})),
    )
    .await;
    assert_eq!((status, again["code"].as_str()), (400, Some("ORDERPAID")));
    sim.shutdown().await;
}

#[tokio::test]
async fn out_trade_no_may_carry_every_character_wechat_pay_allows() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    // The client sends `|` as %7C in paths and signs those bytes; the simulator must agree.
    let no = "A_b-c|d*e0123";
    client.jsapi_prepay(&order(no, 100)).await.unwrap();
    assert_eq!(
        client.query_by_out_trade_no(no).await.unwrap().out_trade_no,
        no
    );
    let paid = sim.pay(&sandbox::PayRequest::new(no)).unwrap();
    assert_eq!(paid.notification_id.len(), 36);
    let received = eventually("the notification", || receiver.received().pop()).await;
    assert_eq!(received.transaction.out_trade_no, no);
    let e = client.close(no).await.unwrap_err();
    assert_eq!(api_error(e), (400, "ORDERPAID".to_owned()));
}

#[tokio::test]
async fn a_repeated_prepay_gets_the_same_prepay_id_and_changed_parameters_are_refused() {
    let sim = simulator().await;
    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");
    let request = order("ORDER0000000000000000000002", 1980);

    let first = client.jsapi_prepay(&request).await.unwrap();
    let again = client.jsapi_prepay(&request).await.unwrap();
    assert_eq!(first.prepay_id, again.prepay_id);
    assert!(first.request_id.is_some() && first.request_id != again.request_id);

    let changed_amount = PrepayRequest {
        amount_total: 1,
        ..request.clone()
    };
    let refused = client.jsapi_prepay(&changed_amount).await.unwrap_err();
    assert_eq!(api_error(refused), (403, "OUT_TRADE_NO_USED".to_owned()));

    let changed_description = PrepayRequest {
        description: "something else".into(),
        ..request
    };
    let refused = client.jsapi_prepay(&changed_description).await.unwrap_err();
    assert_eq!(api_error(refused), (403, "OUT_TRADE_NO_USED".to_owned()));
}

#[tokio::test]
async fn a_closed_order_stays_closed() {
    let sim = simulator().await;
    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");
    let no = "ORDER0000000000000000000003";
    let request = order(no, 500);
    client.jsapi_prepay(&request).await.unwrap();

    client.close(no).await.unwrap();
    // Closing again answers 204 too: the sweeper may run twice.
    client.close(no).await.unwrap();
    let closed = client.query_by_out_trade_no(no).await.unwrap();
    assert_eq!(closed.trade_state, TradeState::Closed);
    assert!(closed.transaction_id.is_none());

    let refused = client.jsapi_prepay(&request).await.unwrap_err();
    assert_eq!(api_error(refused), (400, "ORDER_CLOSED".to_owned()));
    let (status, body) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": no})),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("ORDER_CLOSED")));
}

#[tokio::test]
async fn unknown_orders_do_not_exist() {
    let sim = simulator().await;
    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");

    let e = client
        .query_by_out_trade_no("NO_SUCH_ORDER_1")
        .await
        .unwrap_err();
    assert_eq!(api_error(e), (404, "ORDER_NOT_EXIST".to_owned()));
    let e = client.close("NO_SUCH_ORDER_1").await.unwrap_err();
    assert_eq!(api_error(e), (404, "ORDER_NOT_EXIST".to_owned()));
    let e = client
        .query_by_transaction_id("4200000000202611240000000000")
        .await
        .unwrap_err();
    assert_eq!(api_error(e), (404, "ORDER_NOT_EXIST".to_owned()));

    // Unpaid orders have no transaction_id to be found by.
    client
        .jsapi_prepay(&order("ORDER0000000000000000000004", 100))
        .await
        .unwrap();
    let (status, body) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": "NO_SUCH_ORDER_1"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ORDER_NOT_EXIST"))
    );
}

/// Every route `sandbox --help` lists for the simulator (the lists its router is built from)
/// reaches its own handler: never the fallback's 404 `NOT_FOUND`, never a 405.
#[tokio::test]
async fn every_listed_route_reaches_its_handler() {
    let sim = simulator().await;
    let answer = |status: u16, body: &[u8]| {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned));
        (status, code)
    };
    let not_served = |(status, code): &(u16, Option<String>)| {
        *status == 405 || (*status == 404 && code.as_deref() == Some("NOT_FOUND"))
    };
    // The check tells a route the simulator lacks.
    let (status, body) = control(&sim, "GET", "/sandbox/nothing", None).await;
    assert!(not_served(&(
        status,
        body["code"].as_str().map(str::to_owned)
    )));

    let endpoints =
        sandbox::simulator::wechat_endpoints().chain(sandbox::simulator::control_endpoints());
    for e in endpoints {
        let path = e
            .path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    "NO_SUCH_ORDER_1"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        // WeChat Pay's routes authenticate first: signed, so the handler itself answers.
        let got = if path.starts_with("/v3/") {
            let (status, _, body) = Raw::new(e.method, &path, "").send(&sim).await;
            answer(status, &body)
        } else {
            let (status, body) = control(&sim, e.method, &path, None).await;
            (status, body["code"].as_str().map(str::to_owned))
        };
        assert!(!not_served(&got), "{} {path}: {got:?}", e.method);
    }
}

#[tokio::test]
async fn a_request_signed_with_another_key_is_refused_with_sign_error() {
    let sim = simulator().await;
    let other = RsaPrivateKey::from_pkcs8_pem(&test_pem("test_other_key.pem")).unwrap();
    let client = gateway_with(&sim, "https://merchant.example.com/notify/wechatpay", other);

    let e = client
        .jsapi_prepay(&order("ORDER0000000000000000000005", 100))
        .await
        .unwrap_err();
    assert_eq!(api_error(e), (401, "SIGN_ERROR".to_owned()));
    let e = client
        .query_by_out_trade_no("ORDER0000000000000000000005")
        .await
        .unwrap_err();
    assert_eq!(api_error(e), (401, "SIGN_ERROR".to_owned()));
    assert!(sim.transaction("ORDER0000000000000000000005").is_none());

    // WeChat Pay echoes the message it rebuilt, for debugging.
    let mut raw = Raw::new(
        "GET",
        "/v3/pay/transactions/out-trade-no/ORDER_X_1?mchid=1230000109",
        "",
    );
    raw.key = RsaPrivateKey::from_pkcs8_pem(&test_pem("test_other_key.pem")).unwrap();
    let (status, _, body) = raw.send(&sim).await;
    assert_eq!(status, 401);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["detail"]["sign_information"]["url"],
        "/v3/pay/transactions/out-trade-no/ORDER_X_1?mchid=1230000109"
    );
}

#[tokio::test]
async fn an_old_timestamp_or_a_missing_user_agent_is_refused() {
    let sim = simulator().await;
    let path = "/v3/pay/transactions/out-trade-no/ORDER_X_2?mchid=1230000109";

    let mut stale = Raw::new("GET", path, "");
    stale.timestamp -= 600;
    let (status, _, body) = stale.send(&sim).await;
    assert_eq!((status, code_of(&body)), (401, "SIGN_ERROR".to_owned()));

    let mut anonymous = Raw::new("GET", path, "");
    anonymous.user_agent = false;
    let (status, _, body) = anonymous.send(&sim).await;
    assert_eq!(
        (status, code_of(&body)),
        (400, "INVALID_REQUEST".to_owned())
    );

    let (status, _, body) = Raw::new("GET", "/v3/pay/transactions/out-trade-no/ORDER_X_2", "")
        .send(&sim)
        .await;
    assert_eq!((status, code_of(&body)), (400, "PARAM_ERROR".to_owned()));
}

#[tokio::test]
async fn time_expire_must_be_far_enough_ahead() {
    let sim = simulator().await;
    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");
    let soon = PrepayRequest {
        time_expire: to_wechat(OffsetDateTime::now_utc() + Duration::from_secs(30)),
        ..order("ORDER0000000000000000000006", 100)
    };
    let e = client.jsapi_prepay(&soon).await.unwrap_err();
    assert_eq!(api_error(e), (400, "PARAM_ERROR".to_owned()));
    sim.shutdown().await;

    // The sandbox relaxes the minimum for a short --order-ttl.
    let relaxed = Simulator::start(SimulatorConfig {
        min_time_expire_ahead: Duration::from_secs(5),
        ..config()
    })
    .await
    .unwrap();
    let client = gateway(&relaxed, "https://merchant.example.com/notify/wechatpay");
    client.jsapi_prepay(&soon).await.unwrap();
}

#[tokio::test]
async fn malformed_prepay_bodies_get_wechat_pay_errors_not_panics() {
    let sim = simulator().await;
    let path = "/v3/pay/transactions/jsapi";
    let valid = serde_json::json!({
        "appid": APPID, "mchid": MCHID, "description": "d", "out_trade_no": "ORDER_MALFORMED_1",
        "notify_url": "https://merchant.example.com/notify", "amount": {"total": 1, "currency": "CNY"},
        "payer": {"openid": OPENID},
        "time_expire": to_wechat(OffsetDateTime::now_utc() + Duration::from_secs(1800)),
    });
    let with = |pointer: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    let cases = [
        ("not JSON", "{\"appid\":".to_owned(), 400, "PARAM_ERROR"),
        ("an array", "[]".to_owned(), 400, "PARAM_ERROR"),
        (
            "a null",
            with("/description", serde_json::Value::Null),
            400,
            "PARAM_ERROR",
        ),
        ("no payer", without("payer"), 400, "PARAM_ERROR"),
        (
            "short out_trade_no",
            with("/out_trade_no", "abc".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "bad characters",
            with("/out_trade_no", "ORDER 0001/x".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "long description",
            with("/description", "x".repeat(128).into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "zero amount",
            with("/amount/total", 0.into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "fractional amount",
            with("/amount/total", 1.5.into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "USD",
            with("/amount/currency", "USD".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "public http",
            with("/notify_url", "http://merchant.example.com/n".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "query string",
            with("/notify_url", "https://merchant.example.com/n?a=1".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "bad time",
            with("/time_expire", "tomorrow".into()),
            400,
            "PARAM_ERROR",
        ),
        (
            "other appid",
            with("/appid", "wx0000000000000000".into()),
            400,
            "APPID_MCHID_NOT_MATCH",
        ),
        (
            "other mchid",
            with("/mchid", "1900000000".into()),
            400,
            "APPID_MCHID_NOT_MATCH",
        ),
    ];
    for (what, body, status, code) in cases {
        let (got, headers, answer) = Raw::new("POST", path, &body).send(&sim).await;
        assert_eq!(
            (got, code_of(&answer)),
            (status, code.to_owned()),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            headers.contains_key("wechatpay-signature"),
            "{what}: error responses are signed too"
        );
    }
    // http on loopback is accepted: that is how the sandbox delivers locally.
    let local = with(
        "/notify_url",
        "http://127.0.0.1:3000/notify/wechatpay".into(),
    );
    let (status, _, answer) = Raw::new("POST", path, &local).send(&sim).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn every_response_is_signed_errors_and_204s_included() {
    let sim = simulator().await;
    let now = || OffsetDateTime::now_utc().unix_timestamp();

    let (status, headers, body) = Raw::new(
        "GET",
        "/v3/pay/transactions/out-trade-no/ORDER_X_3?mchid=1230000109",
        "",
    )
    .send(&sim)
    .await;
    assert_eq!(status, 404);
    let info = verifier()
        .verify(&WechatpayHeaders::from(&headers), &body, now())
        .unwrap();
    assert_eq!(info.serial, PUB_KEY_ID);
    assert_eq!(
        headers["wechatpay-signature-type"],
        "WECHATPAY2-SHA256-RSA2048"
    );

    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");
    client
        .jsapi_prepay(&order("ORDER0000000000000000000007", 100))
        .await
        .unwrap();
    let body = format!("{{\"mchid\":\"{MCHID}\"}}");
    let (status, headers, answer) = Raw::new(
        "POST",
        "/v3/pay/transactions/out-trade-no/ORDER0000000000000000000007/close",
        &body,
    )
    .send(&sim)
    .await;
    assert_eq!(status, 204);
    assert!(answer.is_empty());
    verifier()
        .verify(&WechatpayHeaders::from(&headers), b"", now())
        .unwrap();

    // Public-key merchants have no platform certificates, as at WeChat Pay.
    let (status, _, body) = Raw::new("GET", "/v3/certificates", "").send(&sim).await;
    assert_eq!(
        (status, code_of(&body)),
        (404, "RESOURCE_NOT_EXISTS".to_owned())
    );
}

#[tokio::test]
async fn an_injected_server_error_is_retried_by_the_client() {
    let sim = simulator().await;
    let client = gateway(&sim, "https://merchant.example.com/notify/wechatpay");
    let (status, _) = control(
        &sim,
        "POST",
        "/sandbox/fail",
        Some(serde_json::json!({
            "path_prefix": "/v3/pay/transactions/jsapi", "status": 500, "code": "SYSTEM_ERROR",
            "message": "系统错误", "times": 1,
        })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.pending_faults().len(), 1);

    let prepay = client
        .jsapi_prepay(&order("ORDER0000000000000000000008", 100))
        .await
        .unwrap();
    assert!(
        sim.pending_faults().is_empty(),
        "the fault was used by the first attempt"
    );
    assert_eq!(
        sim.transaction("ORDER0000000000000000000008")
            .unwrap()
            .prepay_id,
        prepay.prepay_id
    );

    // A 4xx is not retried: the client sees it.
    sim.inject_fault(Fault::new(
        "/v3/pay/transactions/out-trade-no/",
        403,
        "NO_AUTH",
        1,
    ))
    .unwrap();
    let e = client
        .query_by_out_trade_no("ORDER0000000000000000000008")
        .await
        .unwrap_err();
    assert_eq!(api_error(e), (403, "NO_AUTH".to_owned()));
    client
        .query_by_out_trade_no("ORDER0000000000000000000008")
        .await
        .unwrap();

    // `process`: WeChat Pay did the work but the merchant only saw the error.
    let mut ambiguous = Fault::new("/v3/pay/transactions/out-trade-no/", 403, "SYSTEM_BUSY", 1);
    ambiguous.process = true;
    sim.inject_fault(ambiguous).unwrap();
    client
        .close("ORDER0000000000000000000008")
        .await
        .unwrap_err();
    assert_eq!(
        sim.transaction("ORDER0000000000000000000008")
            .unwrap()
            .trade_state,
        TradeState::Closed
    );
}

#[tokio::test]
async fn user_paying_orders_cannot_be_closed_but_can_be_paid() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000009";
    client.jsapi_prepay(&order(no, 100)).await.unwrap();

    let (status, body) = control(
        &sim,
        "POST",
        "/sandbox/userpaying",
        Some(serde_json::json!({"out_trade_no": no})),
    )
    .await;
    assert_eq!(
        (status, body["trade_state"].as_str()),
        (200, Some("USERPAYING"))
    );
    let paying = client.query_by_out_trade_no(no).await.unwrap();
    assert_eq!(paying.trade_state, TradeState::UserPaying);
    assert!(paying.payer.is_none());
    let e = client.close(no).await.unwrap_err();
    assert_eq!(api_error(e), (429, "FREQUENCY_LIMITED".to_owned()));

    sim.pay(&sandbox::PayRequest::new(no)).unwrap();
    assert_eq!(
        client.query_by_out_trade_no(no).await.unwrap().trade_state,
        TradeState::Success
    );
}

// -----------------------------------------------------------------------------------------
// Notifications
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unacknowledged_notification_is_retried_until_acknowledged() {
    let receiver = Receiver::start(&[500], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000010";
    client.jsapi_prepay(&order(no, 1980)).await.unwrap();
    let paid = sim.pay(&sandbox::PayRequest::new(no)).unwrap();

    let status = eventually("the retries to end", || {
        sim.notifications(no).into_iter().find(|n| n.finished)
    })
    .await;
    assert!(status.acknowledged);
    assert_eq!(status.attempts, 2);

    let (code, log) = control(
        &sim,
        "GET",
        &format!("/sandbox/notifications?out_trade_no={no}"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0]["attempt"].as_u64(), log[0]["status"].as_u64()),
        (Some(1), Some(500))
    );
    assert_eq!(
        (log[1]["attempt"].as_u64(), log[1]["status"].as_u64()),
        (Some(2), Some(204))
    );
    assert!(
        log.iter()
            .all(|a| a["notification_id"] == paid.notification_id.as_str() && a["error"].is_null())
    );

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].notification_id, received[1].notification_id);
    assert_ne!(
        received[0].signature_nonce, received[1].signature_nonce,
        "each delivery is signed afresh"
    );
}

#[tokio::test]
async fn an_unreachable_notify_url_is_logged_with_its_error() {
    // Nothing listens there: every attempt fails until the (tiny) schedule ends.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sim = Simulator::start(SimulatorConfig {
        // The whole 24 h schedule in under a second.
        retry_scale: 0.00001,
        ..config()
    })
    .await
    .unwrap();
    let client = gateway(&sim, &format!("http://127.0.0.1:{closed_port}/notify"));
    let no = "ORDER0000000000000000000011";
    client.jsapi_prepay(&order(no, 100)).await.unwrap();
    sim.pay(&sandbox::PayRequest::new(no)).unwrap();

    let status = eventually("the schedule to end", || {
        sim.notifications(no).into_iter().find(|n| n.finished)
    })
    .await;
    assert!(!status.acknowledged);
    let attempts = sim.deliveries(no);
    assert_eq!(attempts.len(), 16, "the first delivery and 15 retries");
    assert!(
        attempts
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );
    assert_eq!(attempts.last().unwrap().round, 15);
}

#[tokio::test]
async fn concurrent_deliveries_all_verify_and_share_one_notification_id() {
    let receiver = Receiver::start(&[], 5).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000012";
    client.jsapi_prepay(&order(no, 1980)).await.unwrap();

    let (status, paid) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": no, "deliveries": 5})),
    )
    .await;
    assert_eq!(status, 200);

    let received = eventually("five deliveries", || {
        let r = receiver.received();
        (r.len() == 5).then_some(r)
    })
    .await;
    assert!(receiver.rejected().is_empty(), "{:?}", receiver.rejected());
    assert!(
        received
            .iter()
            .all(|r| r.notification_id == paid["notification_id"].as_str().unwrap())
    );
    assert!(
        received.iter().all(|r| r.in_flight == 5),
        "all five were in flight at once: {received:?}"
    );
    let nonces: std::collections::HashSet<_> =
        received.iter().map(|r| r.signature_nonce.clone()).collect();
    assert_eq!(nonces.len(), 5);

    let done = eventually("the deliveries to settle", || {
        sim.notifications(no).into_iter().find(|n| n.finished)
    })
    .await;
    assert!(done.acknowledged);
    let log = sim.deliveries(no);
    assert_eq!(log.len(), 5);
    assert!(log.iter().all(|a| a.round == 0 && a.status == Some(204)));

    // A redelivery is the same notification again.
    let (status, again) = control(
        &sim,
        "POST",
        "/sandbox/notify",
        Some(serde_json::json!({"out_trade_no": no})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["notification_id"], paid["notification_id"]);
    eventually("the redelivery", || {
        (receiver.received().len() == 6).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_amount_override_reaches_the_decrypted_transaction() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000013";
    client.jsapi_prepay(&order(no, 1980)).await.unwrap();

    let (status, paid) = control(
        &sim,
        "POST",
        "/sandbox/pay",
        Some(serde_json::json!({"out_trade_no": no, "amount_total": 1})),
    )
    .await;
    assert_eq!((status, paid["amount_total"].as_i64()), (200, Some(1)));

    let received = eventually("the notification", || receiver.received().pop()).await;
    let amount = received.transaction.amount.unwrap();
    assert_eq!((amount.total, amount.payer_total), (1, Some(1)));
    assert_eq!(
        client
            .query_by_out_trade_no(no)
            .await
            .unwrap()
            .amount
            .unwrap()
            .total,
        1
    );
    let raw = sim.transaction(no).unwrap();
    assert_eq!((raw.amount_total, raw.paid_total), (1980, Some(1)));
}

#[tokio::test]
async fn forced_payments_simulate_the_races_the_backend_must_record() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000014";
    client.jsapi_prepay(&order(no, 100)).await.unwrap();
    client.close(no).await.unwrap();

    let mut late = sandbox::PayRequest::new(no);
    late.force = true;
    let first = sim.pay(&late).unwrap();
    let second = sim.pay(&late).unwrap();
    assert_ne!(first.transaction_id, second.transaction_id);
    assert_eq!(
        client
            .query_by_transaction_id(&first.transaction_id)
            .await
            .unwrap()
            .trade_state,
        TradeState::Success
    );
    eventually("both notifications", || {
        (receiver.received().len() == 2).then_some(())
    })
    .await;

    let (status, raw) = control(&sim, "GET", &format!("/sandbox/transactions/{no}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(raw["transaction_ids"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_lost_notification_is_never_sent() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = simulator().await;
    let client = gateway(&sim, &receiver.url());
    let no = "ORDER0000000000000000000015";
    client.jsapi_prepay(&order(no, 100)).await.unwrap();
    let mut lost = sandbox::PayRequest::new(no);
    lost.deliveries = 0;
    sim.pay(&lost).unwrap();

    let status = sim.notifications(no);
    assert_eq!(status.len(), 1);
    assert!(status[0].finished && !status[0].acknowledged && status[0].attempts == 0);
    assert!(sim.deliveries(no).is_empty());
    assert_eq!(
        client.query_by_out_trade_no(no).await.unwrap().trade_state,
        TradeState::Success
    );
}

// -----------------------------------------------------------------------------------------
// Keys
// -----------------------------------------------------------------------------------------

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("sandbox-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn sandbox_keys_are_generated_once_and_drive_the_simulator() {
    let data = TempDir::new("keys");
    let first = SandboxKeys::load_or_generate(&data.0).unwrap();
    assert!(first.generated());
    let second = SandboxKeys::load_or_generate(&data.0).unwrap();
    assert!(!second.generated());

    assert_eq!(first.merchant_key_pem(), second.merchant_key_pem());
    assert_eq!(first.wechatpay_key_pem(), second.wechatpay_key_pem());
    assert_eq!(first.merchant_public_pem(), second.merchant_public_pem());
    assert_eq!(first.apiv3_key_text(), second.apiv3_key_text());
    assert_eq!(first.merchant_serial_no(), second.merchant_serial_no());
    assert_eq!(
        first.wechatpay_public_key_id(),
        second.wechatpay_public_key_id()
    );
    assert_ne!(first.merchant_key_pem(), first.wechatpay_key_pem());

    let serial = first.merchant_serial_no();
    assert!(
        serial.len() == 40
            && serial
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
        "{serial}"
    );
    let id = first.wechatpay_public_key_id();
    assert!(
        id.starts_with("PUB_KEY_ID_")
            && id.len() == 45
            && id[11..].bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(first.apiv3_key_text().len(), 32);
    assert!(
        first
            .merchant_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        first
            .wechatpay_public_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    let keys_dir = data.0.join("keys");
    for file in [
        "merchant_key.pem",
        "merchant_public.pem",
        "wechatpay_key.pem",
        "wechatpay_public.pem",
        "apiv3_key.txt",
    ] {
        assert!(keys_dir.join(file).is_file(), "{file}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for secret in ["merchant_key.pem", "wechatpay_key.pem", "apiv3_key.txt"] {
            let mode = std::fs::metadata(keys_dir.join(secret))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{secret} must be private");
        }
    }
    let text = format!("{first:?}");
    assert!(!text.contains(first.apiv3_key_text()) && !text.contains("PRIVATE KEY"));

    // A deleted public key is rewritten from its private key.
    std::fs::remove_file(keys_dir.join("wechatpay_public.pem")).unwrap();
    let third = SandboxKeys::load_or_generate(&data.0).unwrap();
    assert_eq!(third.wechatpay_public_pem(), first.wechatpay_public_pem());

    // The generated keys work end to end: the client signs, the simulator verifies and signs back.
    let sim = Simulator::start(SimulatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        APPID,
        MCHID,
        &first,
    ))
    .await
    .unwrap();
    let client = HttpPayGateway::new(GatewaySettings {
        api_base: sim.base_url(),
        appid: APPID.into(),
        mchid: MCHID.into(),
        mch_serial_no: first.merchant_serial_no().into(),
        mch_private_key: Some(first.merchant_key().clone()),
        apiv3_key: first.apiv3_key().clone(),
        public_key: Some((
            first.wechatpay_public_key_id().into(),
            first.wechatpay_public_key(),
        )),
        notify_url: Some("https://merchant.example.com/notify".into()),
        retry: Default::default(),
        certificate_refresh_interval: Duration::from_secs(60),
        certificate_max_age: shared::wechatpay::client::CERTIFICATE_MAX_AGE,
    })
    .unwrap();
    client
        .jsapi_prepay(&order("ORDER0000000000000000000016", 100))
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = simulator().await;
    let addr = sim.addr();
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Platform-certificate mode: `/v3/certificates` serves the certificates sealed under the
/// APIv3 key and signed by the first; a client without a public key downloads them, verifies
/// every answer with them, and follows a rotation to a new serial.
#[tokio::test]
async fn certificate_mode_serves_sealed_certificates_and_rotates() {
    let sim = Simulator::start(SimulatorConfig {
        certificates: vec![(
            "9F3C5A2E7B1D40086C11".into(),
            test_pem("test_platform_cert.pem"),
        )],
        ..config()
    })
    .await
    .unwrap();
    let mut settings = GatewaySettings {
        public_key: None,
        certificate_refresh_interval: Duration::from_millis(100),
        ..simulator_gateway_settings(&sim, "http://127.0.0.1:9/notify")
    };
    settings.retry.total_budget = Duration::from_secs(5);
    let client = HttpPayGateway::new(settings).unwrap();
    client
        .jsapi_prepay(&order("cert-mode-1", 100))
        .await
        .unwrap();
    assert_eq!(
        client.known_serials(),
        vec!["9F3C5A2E7B1D40086C11".to_owned()]
    );

    sim.rotate_certificate(
        "5EC0AD0CE27000000002",
        &test_pem("test_platform_cert_rotated.pem"),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    client
        .jsapi_prepay(&order("cert-mode-2", 100))
        .await
        .unwrap();
    let mut serials = client.known_serials();
    serials.sort();
    assert_eq!(serials, ["5EC0AD0CE27000000002", "9F3C5A2E7B1D40086C11"]);
}

// -----------------------------------------------------------------------------------------
// Refunds
// -----------------------------------------------------------------------------------------

fn refund(out_trade_no: &str, out_refund_no: &str, refund: i64, total: i64) -> RefundRequest {
    RefundRequest {
        out_trade_no: out_trade_no.into(),
        out_refund_no: out_refund_no.into(),
        reason: Some("商品已售完".into()),
        refund,
        total,
    }
}

fn api_error_message(e: PayError) -> (u16, String, String) {
    match e {
        PayError::Api {
            status,
            code,
            message,
            ..
        } => (status, code, message),
        other => panic!("expected a WeChat Pay error body, got {other:?}"),
    }
}

/// A paid order of `total` fen whose payment notification was acknowledged.
async fn paid_order(
    sim: &SimulatorHandle,
    client: &HttpPayGateway,
    receiver: &Receiver,
    no: &str,
    total: i64,
) {
    client.jsapi_prepay(&order(no, total)).await.unwrap();
    sim.pay(&sandbox::PayRequest::new(no)).unwrap();
    eventually("the payment notification", || {
        receiver
            .received()
            .iter()
            .any(|r| r.transaction.out_trade_no == no)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_refund_is_processing_then_succeeds_and_is_notified() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = Simulator::start(SimulatorConfig {
        refund_delay: Duration::from_millis(700),
        ..config()
    })
    .await
    .unwrap();
    let client = gateway(&sim, &receiver.url());
    let no = "REFUND-ORDER-0001";
    paid_order(&sim, &client, &receiver, no, 1980).await;
    let paid = client.query_by_out_trade_no(no).await.unwrap();

    let created = client
        .create_refund(&refund(no, "R|1*a@b_c-1", 300, 1980))
        .await
        .unwrap();
    assert_eq!(created.status, RefundState::Processing);
    assert_eq!(created.out_refund_no, "R|1*a@b_c-1");
    assert_eq!(created.out_trade_no.as_deref(), Some(no));
    assert_eq!(created.transaction_id, paid.transaction_id);
    assert!(
        created.refund_id.starts_with("50")
            && created.refund_id.len() == 29
            && created.refund_id.bytes().all(|b| b.is_ascii_digit()),
        "{}",
        created.refund_id
    );
    assert!(created.create_time.as_deref().unwrap().ends_with("+08:00"));
    assert_eq!(created.success_time, None);
    assert_eq!((created.amount.refund, created.amount.total), (300, 1980));

    // Like WeChat Pay: the order says REFUND, by out_trade_no and by transaction_id, with
    // its amounts unchanged.
    let after = client.query_by_out_trade_no(no).await.unwrap();
    assert_eq!(after.trade_state, TradeState::Refund);
    assert_eq!(after.amount, paid.amount);
    assert_eq!(after.transaction_id, paid.transaction_id);
    let by_id = client
        .query_by_transaction_id(paid.transaction_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(by_id.trade_state, TradeState::Refund);

    // Still PROCESSING before the delay.
    let queried = client.query_refund("R|1*a@b_c-1").await.unwrap();
    assert_eq!(queried.status, RefundState::Processing);
    assert_eq!(queried.refund_id, created.refund_id);

    let notified = eventually("the REFUND.SUCCESS notification", || {
        receiver.refunds().pop()
    })
    .await;
    assert_eq!(notified.event_type, "REFUND.SUCCESS");
    let notice = &notified.notice;
    assert_eq!(notice.refund_status, RefundState::Success);
    assert_eq!(notice.mchid, MCHID);
    assert_eq!(notice.out_trade_no, no);
    assert_eq!(Some(&notice.transaction_id), paid.transaction_id.as_ref());
    assert_eq!(notice.out_refund_no, "R|1*a@b_c-1");
    assert_eq!(notice.refund_id, created.refund_id);
    assert_eq!((notice.amount.refund, notice.amount.total), (300, 1980));
    assert!(receiver.rejected().is_empty());

    let settled = client.query_refund("R|1*a@b_c-1").await.unwrap();
    assert_eq!(settled.status, RefundState::Success);
    assert!(settled.success_time.as_deref().unwrap().ends_with("+08:00"));
    assert_eq!(settled.success_time, notice.success_time);

    // The order's delivery log lists the refund's delivery after the payment's.
    let (status, log) = control(
        &sim,
        "GET",
        &format!("/sandbox/notifications?out_trade_no={no}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let events: Vec<(&str, u64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["event_type"].as_str().unwrap(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [("TRANSACTION.SUCCESS", 204), ("REFUND.SUCCESS", 204)]
    );
    assert_eq!(
        log[1]["notification_id"].as_str(),
        Some(notified.notification_id.as_str())
    );

    // The same out_refund_no and amount: the same refund, not a second one (no spacing
    // refusal either). Another amount under that number is refused.
    let again = client
        .create_refund(&refund(no, "R|1*a@b_c-1", 300, 1980))
        .await
        .unwrap();
    assert_eq!(again.refund_id, created.refund_id);
    assert_eq!(again.status, RefundState::Success);
    let changed = client
        .create_refund(&refund(no, "R|1*a@b_c-1", 301, 1980))
        .await
        .unwrap_err();
    assert_eq!(api_error(changed), (400, "INVALID_REQUEST".to_owned()));

    // A new refund of the order within the minute: FREQUENCY_LIMITED (after the client's
    // own retries), and nothing accepted.
    let spaced = client
        .create_refund(&refund(no, "R-2", 100, 1980))
        .await
        .unwrap_err();
    assert_eq!(api_error(spaced), (429, "FREQUENCY_LIMITED".to_owned()));
    assert!(sim.refund("R-2").is_none());
    let unknown = client.query_refund("R-2").await.unwrap_err();
    assert_eq!(api_error(unknown), (404, "RESOURCE_NOT_EXISTS".to_owned()));
    // The notification count did not move: one refund notified once.
    assert_eq!(receiver.refunds().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn refunds_follow_wechat_pays_rules() {
    let receiver = Receiver::start(&[], 0).await;
    let sim = Simulator::start(SimulatorConfig {
        refund_delay: Duration::from_secs(60),
        refund_spacing: Duration::ZERO,
        ..config()
    })
    .await
    .unwrap();
    let client = gateway(&sim, &receiver.url());

    // No such order, or not paid: one answer.
    let unknown = client
        .create_refund(&refund("NO-SUCH-ORDER", "R-0", 100, 100))
        .await
        .unwrap_err();
    assert_eq!(
        api_error_message(unknown),
        (
            404,
            "RESOURCE_NOT_EXISTS".to_owned(),
            "订单不存在或未支付".to_owned()
        )
    );
    let no = "REFUND-ORDER-0002";
    client.jsapi_prepay(&order(no, 2000)).await.unwrap();
    let unpaid = client
        .create_refund(&refund(no, "R-0", 100, 2000))
        .await
        .unwrap_err();
    assert_eq!(api_error(unpaid), (404, "RESOURCE_NOT_EXISTS".to_owned()));
    sim.pay(&sandbox::PayRequest::new(no)).unwrap();

    // amount.total is the order's total, not what is left.
    let wrong_total = client
        .create_refund(&refund(no, "R-0", 100, 1999))
        .await
        .unwrap_err();
    assert_eq!(api_error(wrong_total), (400, "INVALID_REQUEST".to_owned()));

    client
        .create_refund(&refund(no, "R-1", 1000, 2000))
        .await
        .unwrap();
    let over = client
        .create_refund(&refund(no, "R-2", 1001, 2000))
        .await
        .unwrap_err();
    let (status, code, message) = api_error_message(over);
    assert_eq!((status, code.as_str()), (400, "INVALID_REQUEST"));
    assert!(message.contains("exceeds the refundable 1000"), "{message}");
    assert!(sim.refund("R-2").is_none());
    // Exactly what is left is fine.
    client
        .create_refund(&refund(no, "R-2", 1000, 2000))
        .await
        .unwrap();
    let nothing_left = client
        .create_refund(&refund(no, "R-3", 1, 2000))
        .await
        .unwrap_err();
    assert_eq!(api_error(nothing_left), (400, "INVALID_REQUEST".to_owned()));
    // A CLOSED refund gave its amount back.
    sim.settle_refund("R-1", RefundState::Closed, 0).unwrap();
    client
        .create_refund(&refund(no, "R-3", 1000, 2000))
        .await
        .unwrap();

    let missing = client.query_refund("R-404").await.unwrap_err();
    assert_eq!(api_error(missing), (404, "RESOURCE_NOT_EXISTS".to_owned()));

    // What the client never sends: appid/mchid in the body, a bad out_refund_no.
    let with_ids = format!(
        r#"{{"appid":"{APPID}","mchid":"{MCHID}","out_trade_no":"{no}","out_refund_no":"R-9","amount":{{"refund":1,"total":2000,"currency":"CNY"}}}}"#
    );
    let (status, _, body) = Raw::new("POST", "/v3/refund/domestic/refunds", &with_ids)
        .send(&sim)
        .await;
    assert_eq!((status, code_of(&body).as_str()), (400, "PARAM_ERROR"));
    let detail: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        detail["detail"]["value"],
        serde_json::json!(["/body/appid", "/body/mchid"])
    );
    let long = "R".repeat(65);
    for bad in ["R#1", "", long.as_str()] {
        let body = format!(
            r#"{{"out_trade_no":"{no}","out_refund_no":"{bad}","amount":{{"refund":1,"total":2000,"currency":"CNY"}}}}"#
        );
        let (status, _, answer) = Raw::new("POST", "/v3/refund/domestic/refunds", &body)
            .send(&sim)
            .await;
        assert_eq!(
            (status, code_of(&answer).as_str()),
            (400, "PARAM_ERROR"),
            "{bad}"
        );
    }
    assert!(sim.refund("R-9").is_none());
    // An unsigned refund request is refused like any other.
    let (status, _, answer) = Raw {
        key: RsaPrivateKey::from_pkcs8_pem(&test_pem("test_other_key.pem")).unwrap(),
        ..Raw::new("GET", "/v3/refund/domestic/refunds/R-1", "")
    }
    .send(&sim)
    .await;
    assert_eq!((status, code_of(&answer).as_str()), (401, "SIGN_ERROR"));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_route_settles_refunds_closed_abnormal_or_silently() {
    // The payment and the CLOSED notification are acknowledged, the two concurrent ABNORMAL
    // copies are not, their retry is.
    let receiver = Receiver::start(&[204, 204, 503, 503], 0).await;
    let sim = Simulator::start(SimulatorConfig {
        refund_delay: Duration::from_millis(300),
        refund_spacing: Duration::ZERO,
        ..config()
    })
    .await
    .unwrap();
    let client = gateway(&sim, &receiver.url());
    let no = "REFUND-ORDER-0003";
    paid_order(&sim, &client, &receiver, no, 1000).await;
    client
        .create_refund(&refund(no, "R-closed", 100, 1000))
        .await
        .unwrap();
    client
        .create_refund(&refund(no, "R-abnormal", 200, 1000))
        .await
        .unwrap();

    let (status, closed) = control(
        &sim,
        "POST",
        "/sandbox/refunds/R-closed",
        Some(serde_json::json!({"status": "CLOSED", "deliveries": 1})),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["refund"]["status"], "CLOSED");
    eventually("the CLOSED notification", || {
        (receiver.refunds().len() == 1).then_some(())
    })
    .await;
    let (status, abnormal) = control(
        &sim,
        "POST",
        "/sandbox/refunds/R-abnormal",
        Some(serde_json::json!({"status": "ABNORMAL", "deliveries": 2})),
    )
    .await;
    assert_eq!(status, 200, "{abnormal}");
    let abnormal_id = abnormal["notification_id"].as_str().unwrap().to_owned();

    let notified = eventually("CLOSED once and ABNORMAL three times", || {
        let r = receiver.refunds();
        (r.len() == 4).then_some(r)
    })
    .await;
    let closed_notices: Vec<_> = notified
        .iter()
        .filter(|r| r.event_type == "REFUND.CLOSED")
        .collect();
    assert_eq!(closed_notices.len(), 1);
    assert_eq!(closed_notices[0].notice.refund_status, RefundState::Closed);
    assert_eq!(closed_notices[0].notice.success_time, None);
    let abnormal_notices: Vec<_> = notified
        .iter()
        .filter(|r| r.event_type == "REFUND.ABNORMAL")
        .collect();
    assert_eq!(abnormal_notices.len(), 3);
    assert!(
        abnormal_notices
            .iter()
            .all(|r| r.notification_id == abnormal_id
                && r.notice.refund_status == RefundState::Abnormal
                && r.notice.out_refund_no == "R-abnormal")
    );
    let status_of = |id: &str| {
        sim.notifications(no)
            .into_iter()
            .find(|n| n.notification_id == id)
            .unwrap()
    };
    let abnormal_status = eventually("the ABNORMAL notification finished", || {
        let n = status_of(&abnormal_id);
        n.finished.then_some(n)
    })
    .await;
    assert!(abnormal_status.acknowledged);
    assert_eq!(abnormal_status.attempts, 3);
    assert_eq!(abnormal_status.event_type, "REFUND.ABNORMAL");

    // The delay passes: neither refund is settled SUCCESS behind the control route's back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed_now = client.query_refund("R-closed").await.unwrap();
    assert_eq!(closed_now.status, RefundState::Closed);
    assert_eq!(closed_now.success_time, None);
    assert_eq!(
        client.query_refund("R-abnormal").await.unwrap().status,
        RefundState::Abnormal
    );
    assert_eq!(receiver.refunds().len(), 4);

    // ABNORMAL is not final: SUCCESS with no notification (the query path's case).
    let silent = sim
        .settle_refund("R-abnormal", RefundState::Success, 0)
        .unwrap();
    assert_eq!(silent.refund.status, RefundState::Success);
    assert!(status_of(&silent.notification_id).finished);
    assert_eq!(status_of(&silent.notification_id).attempts, 0);
    let succeeded = client.query_refund("R-abnormal").await.unwrap();
    assert_eq!(succeeded.status, RefundState::Success);
    assert!(succeeded.success_time.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.refunds().len(), 4);

    // Final refunds stay final; unknown ones and unknown statuses are refused.
    for (path, body, expected) in [
        (
            "/sandbox/refunds/R-closed",
            serde_json::json!({"status": "SUCCESS"}),
            409,
        ),
        (
            "/sandbox/refunds/R-abnormal",
            serde_json::json!({"status": "CLOSED"}),
            409,
        ),
        (
            "/sandbox/refunds/R-unknown",
            serde_json::json!({"status": "SUCCESS"}),
            404,
        ),
        (
            "/sandbox/refunds/R-closed",
            serde_json::json!({"status": "PROCESSING"}),
            400,
        ),
    ] {
        let (status, answer) = control(&sim, "POST", path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    assert!(receiver.rejected().is_empty());
    sim.shutdown().await;
}
