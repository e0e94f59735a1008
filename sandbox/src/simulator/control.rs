//! The simulator's control endpoints under `/sandbox/`: the user's side of a payment (pay,
//! start paying), WeChat Pay's side of a refund (settle it now), fault injection for the WeChat Pay API, and inspection of transactions and
//! notification deliveries. Not part of WeChat Pay's API: no merchant signature, JSON in and
//! out, refusals as `{code, message}` like WeChat Pay's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shared::wechatpay::RefundState;
use time::OffsetDateTime;

use super::wechat::{json_response, reply};
use super::{
    ApiError, Endpoint, Fault, PayOutcome, PayRequest, RefundSettled, Shared, bill, notify,
};

/// Copies of one notification sent at once; more is a load test, not a simulation.
const MAX_DELIVERIES: u32 = 100;

pub(super) const ROUTES: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/sandbox/info",
        what: "appid, mchid, key ids, retry scale",
        handler: |m| on(m, info),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/pay",
        what: "the user pays: {\"out_trade_no\", \"deliveries\": 1}",
        handler: |m| on(m, pay_endpoint),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/userpaying",
        what: "the user is paying: {\"out_trade_no\"}",
        handler: |m| on(m, user_paying),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/notify",
        what: "notify a paid order again: {\"out_trade_no\"}",
        handler: |m| on(m, redeliver_endpoint),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/refunds/{out_refund_no}",
        what: "settle a refund now: {\"status\": \"SUCCESS\"|\"CLOSED\"|\"ABNORMAL\", \"deliveries\": 1}",
        handler: |m| on(m, settle_refund_endpoint),
    },
    Endpoint {
        method: "POST",
        path: "/sandbox/fail",
        what: "queue a fault for /v3/*: {\"path_prefix\", \"status\"}; with status 200, \"tamper\": true alters a bill download",
        handler: |m| on(m, fail),
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/fail",
        what: "the queued faults",
        handler: |m| on(m, list_faults),
    },
    Endpoint {
        method: "DELETE",
        path: "/sandbox/fail",
        what: "clear the queued faults",
        handler: |m| on(m, clear_faults),
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/notifications",
        what: "?out_trade_no=: each delivery and its status",
        handler: |m| on(m, notifications),
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/transactions",
        what: "every transaction, as WeChat Pay knows it",
        handler: |m| on(m, transactions),
    },
    Endpoint {
        method: "GET",
        path: "/sandbox/transactions/{out_trade_no}",
        what: "one transaction",
        handler: |m| on(m, transaction),
    },
];

pub(super) fn routes() -> Router<Arc<Shared>> {
    Endpoint::register(Router::new(), ROUTES)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "INVALID_REQUEST", message)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("malformed JSON body: {e}")))
}

/// The user pays the order: SUCCESS, then the notification goes out.
pub(super) fn pay(shared: &Arc<Shared>, request: &PayRequest) -> Result<PayOutcome, ApiError> {
    if request.deliveries > MAX_DELIVERIES {
        return Err(invalid(format!(
            "deliveries must be at most {MAX_DELIVERIES}"
        )));
    }
    let (outcome, job) = shared.store().pay(request, OffsetDateTime::now_utc())?;
    tracing::info!(
        out_trade_no = %outcome.out_trade_no,
        transaction_id = %outcome.transaction_id,
        amount_total = outcome.amount_total,
        deliveries = outcome.deliveries,
        "user paid"
    );
    notify::start(shared, job, &outcome.transaction_id);
    Ok(outcome)
}

/// Sends the latest payment notification of a paid order again.
pub(super) fn redeliver(
    shared: &Arc<Shared>,
    out_trade_no: &str,
    deliveries: u32,
) -> Result<String, ApiError> {
    if !(1..=MAX_DELIVERIES).contains(&deliveries) {
        return Err(invalid(format!("deliveries must be 1 to {MAX_DELIVERIES}")));
    }
    let (job, transaction_id) = {
        let store = shared.store();
        let job = store.redelivery(out_trade_no, deliveries)?;
        let transaction_id = store
            .transaction(out_trade_no)
            .and_then(|t| t.transaction_id)
            .unwrap_or_default();
        (job, transaction_id)
    };
    let notification_id = job.notification_id.clone();
    notify::start(shared, job, &transaction_id);
    Ok(notification_id)
}

/// WeChat Pay's side of a refund: it reaches `status` now and its `REFUND.<status>`
/// notification goes out, `deliveries` copies at once, then retried until acknowledged.
pub(super) fn settle_refund(
    shared: &Arc<Shared>,
    out_refund_no: &str,
    status: RefundState,
    deliveries: u32,
) -> Result<RefundSettled, ApiError> {
    if deliveries > MAX_DELIVERIES {
        return Err(invalid(format!(
            "deliveries must be at most {MAX_DELIVERIES}"
        )));
    }
    if !matches!(
        status,
        RefundState::Success | RefundState::Closed | RefundState::Abnormal
    ) {
        return Err(invalid("status must be SUCCESS, CLOSED or ABNORMAL"));
    }
    let settled = shared.store().settle_refund(
        out_refund_no,
        status,
        OffsetDateTime::now_utc(),
        deliveries,
        false,
    )?;
    // Only an automatic settlement skips a refund that moved on.
    let (refund, job) = settled.ok_or_else(|| invalid("the refund is no longer PROCESSING"))?;
    let notification_id = job.notification_id.clone();
    tracing::info!(%out_refund_no, status = %refund.status, deliveries, "refund settled");
    notify::start(shared, job, &refund.transaction_id);
    Ok(RefundSettled {
        refund,
        notification_id,
        deliveries,
    })
}

/// A refund just accepted settles SUCCESS after `refund_delay`, notified once (then retried),
/// unless `/sandbox/refunds/...` settled it first.
pub(super) fn settle_later(shared: &Arc<Shared>, out_refund_no: String) {
    let task_shared = shared.clone();
    shared.spawn(async move {
        let mut shutdown = task_shared.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(task_shared.config.refund_delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let settled = task_shared.store().settle_refund(
            &out_refund_no,
            RefundState::Success,
            OffsetDateTime::now_utc(),
            1,
            true,
        );
        // Otherwise settled through the control route meanwhile.
        if let Ok(Some((refund, job))) = settled {
            tracing::info!(%out_refund_no, "refund succeeded");
            notify::start(&task_shared, job, &refund.transaction_id);
        }
    });
}

pub(super) fn inject_fault(shared: &Shared, fault: Fault) -> Result<(), ApiError> {
    let answered = (200..300).contains(&fault.status);
    if fault.tamper && (!answered || !fault.path_prefix.starts_with(bill::DOWNLOAD_PATH)) {
        return Err(invalid(format!(
            "tamper needs a 2xx status and path_prefix {}",
            bill::DOWNLOAD_PATH
        )));
    }
    let benign = answered && (fault.delay_ms > 0 || fault.tamper);
    if !(400..=599).contains(&fault.status) && !benign {
        return Err(invalid(
            "status must be an HTTP error status, 400 to 599 (or 2xx with delay_ms: slow answers, or with tamper: altered bills)",
        ));
    }
    if !fault.path_prefix.starts_with("/v3/") {
        return Err(invalid(
            "path_prefix must name a WeChat Pay API path, e.g. /v3/pay/transactions/jsapi",
        ));
    }
    if fault.times == 0 {
        return Err(invalid("times must be at least 1"));
    }
    tracing::info!(path_prefix = %fault.path_prefix, status = fault.status, code = %fault.code, times = fault.times, "fault queued");
    shared.store().faults.push(fault);
    Ok(())
}

async fn info(State(s): State<Arc<Shared>>) -> Response {
    let c = &s.config;
    json_response(
        StatusCode::OK,
        &json!({
            "appid": c.appid,
            "mchid": c.mchid,
            "merchant_serial_no": c.merchant_serial_no,
            "public_key_id": c.public_key_id,
            "retry_scale": c.retry_scale,
            "min_time_expire_ahead_secs": c.min_time_expire_ahead.as_secs_f64(),
            "delivery_timeout_secs": c.delivery_timeout.as_secs_f64(),
            "refund_delay_secs": c.refund_delay.as_secs_f64(),
            "refund_spacing_secs": c.refund_spacing.as_secs_f64(),
        }),
    )
}

async fn pay_endpoint(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    reply(parse::<PayRequest>(&body).and_then(|request| pay(&s, &request)))
}

#[derive(Deserialize)]
struct OutTradeNoBody {
    out_trade_no: String,
}

async fn user_paying(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    reply(parse::<OutTradeNoBody>(&body).and_then(|b| {
        let transaction = s.store().set_user_paying(&b.out_trade_no)?;
        tracing::info!(out_trade_no = %b.out_trade_no, "user is paying");
        Ok(json!({ "out_trade_no": transaction.out_trade_no, "trade_state": transaction.trade_state }))
    }))
}

#[derive(Deserialize)]
struct RedeliverBody {
    out_trade_no: String,
    #[serde(default = "one")]
    deliveries: u32,
}

fn one() -> u32 {
    1
}

async fn redeliver_endpoint(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    reply(parse::<RedeliverBody>(&body).and_then(|b| {
        let notification_id = redeliver(&s, &b.out_trade_no, b.deliveries)?;
        Ok(json!({
            "out_trade_no": b.out_trade_no,
            "notification_id": notification_id,
            "deliveries": b.deliveries,
        }))
    }))
}

#[derive(Deserialize)]
struct SettleRefundBody {
    #[serde(default = "success")]
    status: String,
    #[serde(default = "one")]
    deliveries: u32,
}

fn success() -> String {
    "SUCCESS".to_owned()
}

async fn settle_refund_endpoint(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path(out_refund_no)) = path else {
        return invalid("malformed out_refund_no").into_response();
    };
    // An empty body settles SUCCESS with one delivery.
    let request = if body.is_empty() {
        Ok(SettleRefundBody {
            status: success(),
            deliveries: 1,
        })
    } else {
        parse::<SettleRefundBody>(&body)
    };
    reply(request.and_then(|b| {
        settle_refund(
            &s,
            &out_refund_no,
            RefundState::from(b.status.as_str()),
            b.deliveries,
        )
    }))
}

async fn fail(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    reply(parse::<Fault>(&body).and_then(|fault| {
        inject_fault(&s, fault.clone())?;
        Ok(fault)
    }))
}

async fn list_faults(State(s): State<Arc<Shared>>) -> Response {
    let faults = s.store().faults.clone();
    json_response(StatusCode::OK, &faults)
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> Response {
    s.store().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn notifications(
    State(s): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return invalid("malformed query string").into_response();
    };
    let Some(out_trade_no) = params.get("out_trade_no") else {
        return invalid("out_trade_no is required: /sandbox/notifications?out_trade_no=...")
            .into_response();
    };
    let attempts = s.store().deliveries(out_trade_no);
    json_response(StatusCode::OK, &attempts)
}

async fn transactions(State(s): State<Arc<Shared>>) -> Response {
    let all = s.store().transactions();
    json_response(StatusCode::OK, &all)
}

async fn transaction(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(out_trade_no)) = path else {
        return invalid("malformed out_trade_no").into_response();
    };
    reply(
        s.store()
            .transaction(&out_trade_no)
            .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在")),
    )
}
