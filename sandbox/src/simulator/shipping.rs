//! WeChat's mini-program trade management, simulated over the simulator's own payments
//! (reference `wechat-order-shipping.md` sections 2-3): `stable_token` (and the classic
//! `/cgi-bin/token`, which invalidates the previous classic token), `is_trade_managed`,
//! `upload_shipping_info` with WeChat's validation and error codes (`10060001` until a
//! payment is indexed, `--index-lag` after it), and `get_order`. Answers are WeChat's:
//! HTTP 200, JSON `{errcode, errmsg, ...}`, labelled `text/plain`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::on;
use serde::Serialize;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::login::{answer, error};
use super::{Endpoint, Shared};

/// How long an access token lives (WeChat: `expires_in` 7200).
const TOKEN_LIFETIME: Duration = Duration::seconds(7200);
/// A stable token within this of its expiry is rotated (and the old one stays valid).
const TOKEN_ROTATE_BEFORE: Duration = Duration::seconds(300);

pub(super) const ROUTES: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        path: "/cgi-bin/stable_token",
        what: "access token, stable (normal mode: the same token until it nears expiry)",
        handler: |m| on(m, stable_token),
    },
    Endpoint {
        method: "GET",
        path: "/cgi-bin/token",
        what: "access token, classic (each call invalidates the previous classic token)",
        handler: |m| on(m, classic_token),
    },
    Endpoint {
        method: "POST",
        path: "/wxa/sec/order/is_trade_managed",
        what: "whether the mini-program is under trade management (it is)",
        handler: |m| on(m, is_trade_managed),
    },
    Endpoint {
        method: "POST",
        path: "/wxa/sec/order/upload_shipping_info",
        what: "record a payment's shipping (WeChat's rules and error codes)",
        handler: |m| on(m, upload_shipping_info),
    },
    Endpoint {
        method: "POST",
        path: "/wxa/sec/order/get_order",
        what: "a payment's shipping state",
        handler: |m| on(m, get_order),
    },
];

pub(super) const CONTROL_ROUTES: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/sandbox/shipping/{transaction_id}",
        what: "a payment's shipping as the simulator keeps it: upload attempts, pushes sent",
        handler: |m| on(m, inspect),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/shipping/{transaction_id}/settle",
        what: "the buyer confirms receipt and WeChat settles: state 4, settlement push {\"deliveries\": 1} (0: lost)",
        handler: |m| on(m, settle),
    },
];

pub(super) fn routes() -> axum::Router<Arc<Shared>> {
    Endpoint::register(
        Endpoint::register(axum::Router::new(), ROUTES),
        CONTROL_ROUTES,
    )
}

/// A payment's shipping as WeChat keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct SimShipment {
    /// The accepted upload's body as sent.
    pub body: Value,
    /// 1 shipped, 2 re-shipped (WeChat allows one re-ship).
    pub finish_shipping_count: u8,
    /// WeChat's order_state: 2 shipped, 3 received, 4 settled, 6 waiting for settlement.
    pub order_state: u8,
    pub uploaded_at: String,
}

#[derive(Default)]
pub(crate) struct ShippingState {
    /// The current stable token and when it lapses; the one it replaced, still valid.
    stable: Option<(String, OffsetDateTime)>,
    previous_stable: Option<(String, OffsetDateTime)>,
    classic: Option<(String, OffsetDateTime)>,
    pub(crate) stable_token_calls: u32,
    pub(crate) force_refreshes: u32,
    shipments: HashMap<String, SimShipment>,
    /// Every upload attempt's errcode, by transaction_id.
    attempts: HashMap<String, Vec<i64>>,
    /// Every push delivery attempt: (transaction_id, kind, HTTP status or 0 for no answer,
    /// the answer's body).
    pushes: Vec<(String, &'static str, u16, String)>,
}

impl ShippingState {
    fn token_valid(&self, token: &str, now: OffsetDateTime) -> bool {
        [&self.stable, &self.previous_stable, &self.classic]
            .into_iter()
            .flatten()
            .any(|(t, until)| t == token && now < *until)
    }
}

fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    format!(
        "SANDBOXAT{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn shipping(s: &Shared) -> std::sync::MutexGuard<'_, ShippingState> {
    s.shipping.lock().unwrap_or_else(|p| p.into_inner())
}

/// WeChat's refusal of a token request's `grant_type`, `appid` and `secret` (the same
/// checks for `stable_token`'s JSON body and `cgi-bin/token`'s query), if it refuses them.
fn credentials_refused<'a>(s: &Shared, field: &dyn Fn(&str) -> &'a str) -> Option<Response> {
    if field("grant_type") != "client_credential" {
        return Some(error(40002, "invalid grant_type"));
    }
    if field("appid") != s.config.appid {
        return Some(error(40013, "invalid appid"));
    }
    if field("secret") != s.config.app_secret {
        return Some(error(40125, "invalid appsecret"));
    }
    None
}

async fn stable_token(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(47001, "data format error");
    };
    let field = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("");
    if let Some(refused) = credentials_refused(&s, &field) {
        return refused;
    }
    let force = request
        .get("force_refresh")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = now();
    let mut state = shipping(&s);
    state.stable_token_calls += 1;
    let rotate = match &state.stable {
        None => true,
        Some((_, until)) => force || *until - now <= TOKEN_ROTATE_BEFORE,
    };
    if rotate {
        if force {
            state.force_refreshes += 1;
            // A forced refresh cuts every other holder off (after WeChat's short grace).
            state.previous_stable = None;
        } else {
            state.previous_stable = state.stable.take();
        }
        state.stable = Some((new_token(), now + TOKEN_LIFETIME));
    }
    let Some((token, until)) = state.stable.clone() else {
        return error(-1, "system error");
    };
    answer(json!({"access_token": token, "expires_in": (until - now).whole_seconds()}))
}

async fn classic_token(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    if let Some(refused) = credentials_refused(&s, &param) {
        return refused;
    }
    let token = new_token();
    shipping(&s).classic = Some((token.clone(), now() + TOKEN_LIFETIME));
    answer(json!({"access_token": token, "expires_in": TOKEN_LIFETIME.whole_seconds()}))
}

/// WeChat's refusal of the caller's access token, if it refuses it.
fn refused_token(s: &Shared, q: &HashMap<String, String>) -> Option<Response> {
    match q.get("access_token") {
        None => Some(error(41001, "access_token missing")),
        Some(t) if shipping(s).token_valid(t, now()) => None,
        Some(_) => Some(error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        )),
    }
}

async fn is_trade_managed(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refused_token(&s, &q) {
        return refused;
    }
    let appid = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("appid").and_then(Value::as_str).map(str::to_owned));
    match appid {
        None => error(40097, "invalid args"),
        Some(a) if a != s.config.appid => error(40013, "invalid appid"),
        Some(_) => answer(json!({"errcode": 0, "errmsg": "ok", "is_trade_managed": true})),
    }
}

/// WeChat's checks of an upload, in its order, against the simulator's payments.
fn check_upload(
    s: &Shared,
    request: &Value,
    now: OffsetDateTime,
) -> Result<String, (i64, &'static str)> {
    let key = request
        .get("order_key")
        .ok_or((268485194, "order_key missing"))?;
    if key.get("order_number_type").and_then(Value::as_i64) != Some(2) {
        return Err((
            268485194,
            "order_number_type must be 1 or 2 (the simulator keys by transaction_id: 2)",
        ));
    }
    let transaction_id = key
        .get("transaction_id")
        .and_then(Value::as_str)
        .ok_or((268485195, "transaction_id missing"))?
        .to_owned();
    let logistics = match request.get("logistics_type") {
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=4).contains(n))
            .ok_or((10060005, "invalid logistics_type"))?,
        Some(Value::String(_)) => return Err((268485224, "logistics_type must be a number")),
        _ => return Err((10060005, "invalid logistics_type")),
    };
    let mode = match request.get("delivery_mode") {
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=2).contains(n))
            .ok_or((268485224, "invalid delivery_mode"))?,
        _ => return Err((268485224, "delivery_mode must be a number")),
    };
    let list = request
        .get("shipping_list")
        .and_then(Value::as_array)
        .ok_or((47001, "data format error: shipping_list"))?;
    if list.is_empty() || list.len() > 15 {
        return Err((10060024, "shipping_list must hold 1-15 packages"));
    }
    if mode == 1 && list.len() != 1 {
        return Err((268485228, "unified delivery takes exactly one package"));
    }
    if mode == 2 && logistics != 1 {
        return Err((10060006, "only express may be split"));
    }
    if mode == 2
        && request
            .get("is_all_delivered")
            .and_then(Value::as_bool)
            .is_none()
    {
        return Err((10060007, "is_all_delivered required for split delivery"));
    }
    for p in list {
        let desc = p.get("item_desc").and_then(Value::as_str).unwrap_or("");
        if desc.is_empty() {
            return Err((10060008, "item_desc empty"));
        }
        if desc.chars().count() > 120 {
            return Err((10060009, "item_desc too long"));
        }
        if logistics == 1 {
            let tracking = p.get("tracking_no").and_then(Value::as_str).unwrap_or("");
            if tracking.is_empty() {
                return Err((268485226, "tracking_no required for express"));
            }
            if tracking.len() > 128 {
                return Err((10060026, "tracking_no too long"));
            }
            let company = p
                .get("express_company")
                .and_then(Value::as_str)
                .unwrap_or("");
            if company.is_empty() {
                return Err((268485227, "express_company required for express"));
            }
            if company == "SF"
                && p.pointer("/contact/receiver_contact")
                    .or_else(|| p.pointer("/contact/consignor_contact"))
                    .is_none()
            {
                return Err((268485227, "contact required for SF Express"));
            }
        }
    }
    let upload_time = request
        .get("upload_time")
        .and_then(Value::as_str)
        .unwrap_or("");
    if OffsetDateTime::parse(upload_time, &time::format_description::well_known::Rfc3339).is_err() {
        return Err((268485216, "upload_time is not RFC 3339"));
    }
    let store = s.store();
    let payment = store
        .payment(&transaction_id)
        .ok_or((10060001, "支付单不存在"))?;
    let paid_at = payment
        .success_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .ok_or((10060001, "支付单不存在"))?;
    if now - paid_at < Duration::try_from(s.config.shipping_index_lag).unwrap_or(Duration::ZERO) {
        return Err((10060001, "支付单不存在"));
    }
    let payer = payment
        .payer
        .as_ref()
        .map(|p| p.openid.as_str())
        .unwrap_or("");
    if request.pointer("/payer/openid").and_then(Value::as_str) != Some(payer) {
        return Err((10060031, "payer openid does not match the payment"));
    }
    let paid = payment.amount.as_ref().map_or(0, |a| a.total);
    if paid > 0 && store.refunded_total(&payment.out_trade_no) >= paid {
        return Err((10060004, "支付单处于不可发货的状态"));
    }
    Ok(transaction_id)
}

async fn upload_shipping_info(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refused_token(&s, &q) {
        return refused;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(47001, "data format error");
    };
    let now = now();
    let transaction_id = request
        .pointer("/order_key/transaction_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let checked = check_upload(&s, &request, now);
    let mut state = shipping(&s);
    let (errcode, errmsg) = match checked {
        Err(e) => e,
        Ok(transaction_id) => match state.shipments.get_mut(&transaction_id) {
            None => {
                let express = request.get("logistics_type").and_then(Value::as_i64) == Some(1);
                state.shipments.insert(
                    transaction_id.clone(),
                    SimShipment {
                        body: request,
                        finish_shipping_count: 1,
                        order_state: 2,
                        uploaded_at: crate::simulator::state::timestamp_millis(now),
                    },
                );
                // WeChat's ship-time push, with its estimate (T+10 express, else T+2).
                let estimate = now
                    + if express {
                        Duration::days(10)
                    } else {
                        Duration::days(2)
                    };
                let message = settlement_message(&s, &transaction_id, now, None, Some(estimate));
                push(&s, transaction_id, "shipped", message, 1);
                (0, "ok")
            }
            Some(kept) if kept.body == request => (10060023, "发货信息未更新"),
            Some(kept) if kept.order_state >= 3 => (10060002, "支付单已完成发货，无法继续发货"),
            Some(kept) if kept.finish_shipping_count >= 2 => (10060003, "支付单已使用重新发货机会"),
            Some(kept) => {
                kept.body = request;
                kept.finish_shipping_count = 2;
                kept.uploaded_at = crate::simulator::state::timestamp_millis(now);
                (0, "ok")
            }
        },
    };
    state
        .attempts
        .entry(transaction_id)
        .or_default()
        .push(errcode);
    answer(json!({"errcode": errcode, "errmsg": errmsg}))
}

async fn get_order(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = refused_token(&s, &q) {
        return refused;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(transaction_id) = request.get("transaction_id").and_then(Value::as_str) else {
        return error(47001, "data format error");
    };
    let Some(payment) = s.store().payment(transaction_id) else {
        return error(10060001, "支付单不存在");
    };
    let refunded = {
        let paid = payment.amount.as_ref().map_or(0, |a| a.total);
        paid > 0 && s.store().refunded_total(&payment.out_trade_no) >= paid
    };
    let state = shipping(&s);
    let shipment = state.shipments.get(transaction_id);
    let order_state = match (refunded, shipment) {
        (true, _) => 5,
        (false, Some(k)) => k.order_state,
        (false, None) => 1,
    };
    answer(json!({
        "errcode": 0,
        "errmsg": "ok",
        "order": {
            "transaction_id": transaction_id,
            "merchant_id": payment.mchid,
            "sub_merchant_id": "0",
            "merchant_trade_no": payment.out_trade_no,
            "paid_amount": payment.amount.as_ref().map_or(0, |a| a.total),
            "openid": payment.payer.as_ref().map(|p| p.openid.clone()).unwrap_or_default(),
            "order_state": order_state,
            "in_complaint": false,
            "shipping": shipment.map(|k| json!({
                "delivery_mode": k.body.get("delivery_mode"),
                "logistics_type": k.body.get("logistics_type"),
                "finish_shipping": true,
                "finish_shipping_count": k.finish_shipping_count,
                "shipping_list": k.body.get("shipping_list"),
            })),
        }
    }))
}

async fn inspect(State(s): State<Arc<Shared>>, Path(transaction_id): Path<String>) -> Json<Value> {
    let state = shipping(&s);
    let pushes: Vec<Value> = state
        .pushes
        .iter()
        .filter(|p| p.0 == transaction_id)
        .map(|(_, kind, status, body)| json!({"kind": kind, "status": status, "answer": body}))
        .collect();
    Json(json!({
        "shipment": state.shipments.get(&transaction_id),
        "attempts": state.attempts.get(&transaction_id).cloned().unwrap_or_default(),
        "pushes": pushes,
        "stable_token_calls": state.stable_token_calls,
        "force_refreshes": state.force_refreshes,
    }))
}

/// `trade_manage_order_settlement` as WeChat pushes it: at shipment with its estimate, at
/// settlement with `settlement_time` (unix seconds, as strings are accepted too).
fn settlement_message(
    s: &Shared,
    transaction_id: &str,
    now: OffsetDateTime,
    settled_at: Option<OffsetDateTime>,
    estimate: Option<OffsetDateTime>,
) -> Value {
    let payment = s.store().payment(transaction_id);
    let pay_time = payment
        .as_ref()
        .and_then(|p| p.success_time.as_deref())
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .map_or(0, OffsetDateTime::unix_timestamp);
    let mut message = json!({
        "ToUserName": "gh_sandbox00000",
        "FromUserName": "o_wechat_system",
        "CreateTime": now.unix_timestamp(),
        "MsgType": "event",
        "Event": "trade_manage_order_settlement",
        "transaction_id": transaction_id,
        "merchant_id": s.config.mchid,
        "sub_merchant_id": "",
        "merchant_trade_no": payment.map(|p| p.out_trade_no).unwrap_or_default(),
        "pay_time": pay_time,
        "shipped_time": now.unix_timestamp(),
    });
    if let Some(e) = estimate {
        message["estimated_settlement_time"] = json!(e.unix_timestamp());
        message["settlement_time"] = json!("");
    }
    if let Some(t) = settled_at {
        message["confirm_receive_method"] = json!(2);
        message["confirm_receive_time"] = json!(t.unix_timestamp());
        message["settlement_time"] = json!(t.unix_timestamp());
    }
    message
}

/// Sends `message` to the configured push URL `copies` times, each as WeChat does: safe mode,
/// `Encrypt` in a JSON body, `msg_signature` over Token, timestamp, nonce and the ciphertext;
/// three tries of 5 s each.
fn push(s: &Arc<Shared>, transaction_id: String, kind: &'static str, message: Value, copies: u32) {
    let target = s.push.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(target) = target else {
        return;
    };
    let keys = match shared::miniprogram::push::PushKeys::new(
        &target.token,
        &target.encoding_aes_key,
        &s.config.appid,
    ) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "simulator push keys unusable; push not sent");
            return;
        }
    };
    for _ in 0..copies {
        let (shared, keys, target, transaction_id, text) = (
            s.clone(),
            keys.clone(),
            target.clone(),
            transaction_id.clone(),
            message.to_string(),
        );
        s.spawn(async move {
            let timestamp = now().unix_timestamp().to_string();
            let nonce = rand::random_range(100_000_000u64..999_999_999).to_string();
            let encrypt = keys.encrypt(&text, rand::random());
            let signature = shared::miniprogram::push::signature(&[&target.token, &timestamp, &nonce]);
            let msg_signature =
                shared::miniprogram::push::signature(&[&target.token, &timestamp, &nonce, &encrypt]);
            let url = format!(
                "{}?signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=o_wechat_system&encrypt_type=aes&msg_signature={msg_signature}",
                target.url
            );
            let body = json!({"ToUserName": "gh_sandbox00000", "Encrypt": encrypt}).to_string();
            for _ in 0..3 {
                let sent = shared
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let (status, answer) = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().await.unwrap_or_default())
                    }
                    Err(e) => (0, e.to_string()),
                };
                let done = status == 200 && answer == "success";
                shipping(&shared)
                    .pushes
                    .push((transaction_id.clone(), kind, status, answer));
                if done {
                    break;
                }
            }
        });
    }
}

#[derive(serde::Deserialize)]
struct SettleRequest {
    #[serde(default = "one")]
    deliveries: u32,
}

fn one() -> u32 {
    1
}

async fn settle(
    State(s): State<Arc<Shared>>,
    Path(transaction_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request: SettleRequest = if body.is_empty() {
        SettleRequest { deliveries: 1 }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(47001, &format!("data format error: {e}")),
        }
    };
    let now = now();
    {
        let mut state = shipping(&s);
        let Some(kept) = state.shipments.get_mut(&transaction_id) else {
            return error(10060001, "支付单未发货");
        };
        kept.order_state = 4;
    }
    let message = settlement_message(&s, &transaction_id, now, Some(now), None);
    push(
        &s,
        transaction_id.clone(),
        "settled",
        message,
        request.deliveries,
    );
    answer(
        json!({"errcode": 0, "errmsg": "ok", "transaction_id": transaction_id,
        "order_state": 4, "deliveries": request.deliveries}),
    )
}
