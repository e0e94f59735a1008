//! The WeChat Pay API surface: JSAPI prepay, query by out_trade_no and by transaction_id,
//! close, create and query refund, the trade bill and its download, with WeChat Pay's request
//! checks (headers, merchant signature, parameters) and `{code, message, detail}` errors.
//! Every response, errors and 204s included, leaves through `sign_responses`, so the
//! backend's "an unsigned 2xx is forged" rule is exercised; the one exception is WeChat Pay's
//! own, the bill download, answered unsigned.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use shared::wechatpay::{VerifyError, nonce, parse_authorization, sign_response_headers};
use time::OffsetDateTime;

use super::bill::{self, DOWNLOAD_PATH, StoredBill, TamperBill};
use super::state::{NewOrder, NewRefund, RefundRules};
use super::{ApiError, Endpoint, Shared, SimulatorConfig, control};

/// Bodies of the JSAPI calls are a few hundred bytes; anything this large is not one.
const MAX_BODY: usize = 64 * 1024;

const MAX_OUT_TRADE_NO: usize = 32;
const MIN_OUT_TRADE_NO: usize = 6;
const MAX_OUT_REFUND_NO: usize = 64;

pub(super) const ROUTES: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        path: "/v3/pay/transactions/jsapi",
        what: "JSAPI prepay",
        handler: |m| on(m, prepay),
    },
    Endpoint {
        method: "GET",
        path: "/v3/pay/transactions/out-trade-no/{out_trade_no}",
        what: "query an order",
        handler: |m| on(m, query_by_out_trade_no),
    },
    Endpoint {
        method: "GET",
        path: "/v3/pay/transactions/id/{transaction_id}",
        what: "query a payment",
        handler: |m| on(m, query_by_transaction_id),
    },
    Endpoint {
        method: "POST",
        path: "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
        what: "close an order",
        handler: |m| on(m, close),
    },
    Endpoint {
        method: "POST",
        path: "/v3/refund/domestic/refunds",
        what: "create a refund (PROCESSING, then SUCCESS after --refund-delay)",
        handler: |m| on(m, create_refund),
    },
    Endpoint {
        method: "GET",
        path: "/v3/refund/domestic/refunds/{out_refund_no}",
        what: "query a refund",
        handler: |m| on(m, query_refund),
    },
    Endpoint {
        method: "POST",
        path: "/v3/refund/domestic/refunds/{refund_id}/apply-abnormal-refund",
        what: "an ABNORMAL refund sent to another account (PROCESSING, then SUCCESS after --refund-delay)",
        handler: |m| on(m, apply_abnormal_refund),
    },
    Endpoint {
        method: "GET",
        path: "/v3/bill/tradebill",
        what: "a Beijing day's trade bill (ALL, any date up to today): download_url and SHA-1",
        handler: |m| on(m, trade_bill),
    },
    Endpoint {
        method: "GET",
        path: DOWNLOAD_PATH,
        what: "download a bill (gzip; answered unsigned, as WeChat Pay does)",
        handler: |m| on(m, download_bill),
    },
    Endpoint {
        method: "GET",
        path: "/v3/certificates",
        what: "the platform certificates (404 for a public-key merchant)",
        handler: |m| on(m, certificates),
    },
];

pub(super) fn routes(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Endpoint::register(Router::new(), ROUTES)
        .method_not_allowed_fallback(method_not_allowed)
        // Only matched WeChat Pay routes are authenticated; `/sandbox/*` is not WeChat Pay's.
        .route_layer(axum::middleware::from_fn_with_state(shared, authenticate))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self)
    }
}

/// 200 with the value as JSON, or the error.
pub(super) fn reply<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => e.into_response(),
    }
}

pub(super) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Signs whatever the simulator answers with the platform key: `ts\nnonce\nbody\n`, the body
/// empty for a 204, `Wechatpay-Serial` = the public-key id or the signing certificate's
/// serial (reference section 2).
pub(super) async fn sign_responses(
    State(s): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    // WeChat Pay does not sign the bill file (reference `wechatpay-refunds-bills.md` 6.3):
    // a client that insists on a signature there fails here as it would there.
    if request.uri().path() == DOWNLOAD_PATH {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let signed = sign_response_headers(
        &s.config.platform_private_key,
        &s.signing_serial(),
        now().unix_timestamp(),
        &nonce(),
        &bytes,
    );
    parts.headers.extend(signed);
    if let Ok(id) = HeaderValue::from_str(&nonce()) {
        parts.headers.insert("request-id", id);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// What WeChat Pay checks before it looks at a request: `Accept` and `User-Agent`, the body,
/// then the merchant's `Authorization` (mchid, serial, 5-minute window, signature over the
/// exact path, query and body bytes). Queued faults apply to authenticated requests only.
async fn authenticate(State(s): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let present = |name| {
        parts
            .headers
            .get(name)
            .is_some_and(|v: &HeaderValue| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    };
    if !present(header::ACCEPT) || !present(header::USER_AGENT) {
        return ApiError::new(400, "INVALID_REQUEST", "Http头缺少Accept或User-Agent")
            .into_response();
    }
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ApiError::new(400, "INVALID_REQUEST", "请求体过大或无法读取").into_response();
    };
    if parts.method == Method::POST && !bytes.is_empty() && !is_json(&parts.headers) {
        return ApiError::new(400, "INVALID_REQUEST", "Content-Type必须为application/json")
            .into_response();
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Err(e) = verify_merchant(
        &s.config,
        parts.method.as_str(),
        path_and_query,
        &parts.headers,
        &bytes,
    ) {
        tracing::info!(path = parts.uri.path(), code = %e.code, error = %e.message, "merchant request refused");
        return e.into_response();
    }

    let fault = s
        .store()
        .take_fault(parts.method.as_str(), parts.uri.path());
    let mut request = Request::from_parts(parts, Body::from(bytes));
    let Some(fault) = fault else {
        return next.run(request).await;
    };
    tracing::info!(path = request.uri().path(), status = fault.status, code = %fault.code, "injected fault");
    if fault.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
    }
    // A 2xx "fault" is only slowness, or a bill altered on its way: the real answer, late
    // or damaged.
    if (200..300).contains(&fault.status) {
        if fault.tamper {
            request.extensions_mut().insert(TamperBill);
        }
        return next.run(request).await;
    }
    if fault.process {
        let _ = next.run(request).await;
    }
    ApiError::new(fault.status, fault.code, fault.message).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn sign_error(message: impl Into<String>) -> ApiError {
    ApiError::new(401, "SIGN_ERROR", message)
}

fn verify_merchant(
    config: &SimulatorConfig,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| sign_error("Http头缺少Authorization"))?;
    let value = value
        .to_str()
        .map_err(|_| sign_error("Http头Authorization值格式错误: not ASCII"))?;
    let auth = parse_authorization(value)
        .map_err(|e| sign_error(format!("Http头Authorization值格式错误: {e}")))?;
    if auth.mchid != config.mchid {
        return Err(sign_error(format!(
            "Http头Authorization中的mchid `{}` 不是本商户号",
            bounded(&auth.mchid)
        )));
    }
    if !auth
        .serial_no
        .eq_ignore_ascii_case(&config.merchant_serial_no)
    {
        return Err(sign_error(format!(
            "商户证书序列号有误: serial_no `{}` is not the merchant API certificate's",
            bounded(&auth.serial_no)
        )));
    }
    match auth.verify(
        &config.merchant_public_key,
        method,
        path_and_query,
        body,
        now().unix_timestamp(),
    ) {
        Ok(_) => Ok(()),
        Err(VerifyError::Expired { .. } | VerifyError::MalformedTimestamp) => Err(sign_error(
            "Http头Authorization中的timestamp与发起请求的时间不得超过5分钟",
        )),
        Err(_) => {
            // WeChat Pay echoes what it reconstructed so merchants can diff it against what
            // they signed (reference section 1.4).
            let message = auth.message(method, path_and_query, body);
            let truncated: String = String::from_utf8_lossy(&message)
                .chars()
                .take(256)
                .collect();
            Err(sign_error("错误的签名，验签失败").with_detail(json!({
                "detail": {"issue": "sign not match"},
                "field": "signature",
                "location": "authorization",
                "sign_information": {
                    "method": method,
                    "sign_message_length": message.len(),
                    "truncated_sign_message": truncated,
                    "url": path_and_query,
                },
            })))
        }
    }
}

/// Network-supplied values end up in messages and logs: keep them short.
fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

// -----------------------------------------------------------------------------------------
// Handlers
// -----------------------------------------------------------------------------------------

async fn prepay(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let created = parse_prepay(&s.config, &body).and_then(|new| {
        let out_trade_no = new.out_trade_no.clone();
        let prepay_id = s
            .store()
            .prepay(new, now(), s.config.min_time_expire_ahead)?;
        Ok((out_trade_no, prepay_id))
    });
    match created {
        Ok((out_trade_no, prepay_id)) => {
            tracing::info!(%out_trade_no, %prepay_id, "JSAPI prepay");
            json_response(StatusCode::OK, &json!({ "prepay_id": prepay_id }))
        }
        Err(e) => {
            tracing::info!(code = %e.code, error = %e.message, "JSAPI prepay refused");
            e.into_response()
        }
    }
}

async fn query_by_out_trade_no(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let found = check_query_mchid(&s.config, query)
        .and_then(|()| path_out_trade_no(path))
        .and_then(|out_trade_no| {
            s.store()
                .wechat_view(&out_trade_no)
                .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在"))
        });
    match found {
        Ok(transaction) => json_response(StatusCode::OK, &transaction),
        Err(e) => e.into_response(),
    }
}

/// Only paid orders have a transaction_id; anything else is "no such order".
async fn query_by_transaction_id(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let found = check_query_mchid(&s.config, query)
        .and_then(|()| {
            let Path(transaction_id) = path.map_err(|_| {
                param_error(
                    "transaction_id",
                    None,
                    "must be a WeChat Pay transaction_id",
                    "path",
                )
            })?;
            if transaction_id.is_empty()
                || transaction_id.len() > 32
                || !transaction_id.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(param_error(
                    "transaction_id",
                    Some(&Value::String(bounded(&transaction_id))),
                    "must be the digits of a WeChat Pay transaction_id",
                    "path",
                ));
            }
            Ok(transaction_id)
        })
        .and_then(|transaction_id| {
            s.store()
                .payment(&transaction_id)
                .ok_or_else(|| ApiError::new(404, "ORDER_NOT_EXIST", "订单不存在"))
        });
    match found {
        Ok(transaction) => json_response(StatusCode::OK, &transaction),
        Err(e) => e.into_response(),
    }
}

async fn close(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let closed = path_out_trade_no(path).and_then(|out_trade_no| {
        let value = parse_object(&body)?;
        let mchid = required_str(&value, "/mchid", 32)?;
        if mchid != s.config.mchid {
            return Err(param_error(
                "/mchid",
                Some(&Value::String(bounded(mchid))),
                "does not match the merchant of the Authorization header",
                "body",
            ));
        }
        s.store().close(&out_trade_no, now())?;
        Ok(out_trade_no)
    });
    match closed {
        Ok(out_trade_no) => {
            tracing::info!(%out_trade_no, "order closed");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn create_refund(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let rules = RefundRules {
        spacing: s.config.refund_spacing,
    };
    let created = parse_refund(&body).and_then(|new| s.store().create_refund(new, now(), rules));
    match &created {
        Ok((refund, true)) => {
            tracing::info!(out_trade_no = %refund.out_trade_no, out_refund_no = %refund.out_refund_no, refund = refund.amount.refund, "refund accepted");
            control::settle_later(&s, refund.out_refund_no.clone());
        }
        Ok((_, false)) => {}
        Err(e) => tracing::info!(code = %e.code, error = %e.message, "refund refused"),
    }
    reply(created.map(|(refund, _)| refund))
}

async fn query_refund(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    reply(
        path_id(
            path,
            "out_refund_no",
            valid_out_refund_no,
            OUT_REFUND_NO_RULE,
        )
        .and_then(|out_refund_no| {
            s.store()
                .refund(&out_refund_no)
                .ok_or_else(|| ApiError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))
        }),
    )
}

/// WeChat Pay's abnormal-refund API (reference 4.5): only for an ABNORMAL refund, named by
/// its refund_id and out_refund_no; `USER_BANK_CARD` needs the (encrypted) bank fields.
async fn apply_abnormal_refund(
    State(s): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let applied = path_id(
        path,
        "refund_id",
        |id: &str| id.bytes().all(|b| b.is_ascii_digit()),
        "digits",
    )
    .and_then(|refund_id| {
        let value = parse_object(&body)?;
        let out_refund_no = required_str(&value, "/out_refund_no", MAX_OUT_REFUND_NO)?.to_owned();
        match required_str(&value, "/type", 32)? {
            "MERCHANT_BANK_CARD" => {}
            "USER_BANK_CARD" => {
                for field in ["/bank_type", "/bank_account", "/real_name"] {
                    required_str(&value, field, 1024)?;
                }
            }
            other => {
                return Err(param_error(
                    "/type",
                    Some(&Value::String(bounded(other))),
                    "USER_BANK_CARD or MERCHANT_BANK_CARD",
                    "body",
                ));
            }
        }
        s.store().apply_abnormal_refund(&refund_id, &out_refund_no)
    });
    if let Ok(refund) = &applied {
        tracing::info!(out_refund_no = %refund.out_refund_no, "abnormal refund applied");
        control::settle_later(&s, refund.out_refund_no.clone());
    }
    reply(applied)
}

/// WeChat Pay keeps bills for 3 months (reference 6.1); roughly, in days.
const BILL_DAYS_KEPT: i64 = 92;

/// `GET /v3/bill/tradebill`: the day's ALL bill of the simulator's own payments and refunds,
/// made now (so any date up to today, unlike WeChat Pay, whose bill for day D exists from
/// about 10:00 on D+1: `Fault::bill_not_ready` plays that), held for 5 minutes under a
/// random token.
async fn trade_bill(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let served = bill_request(query).and_then(|(date, gzip)| {
        let text = bill::render(s.store().bill_entries(date))
            .ok_or_else(|| ApiError::new(400, "NO_STATEMENT_EXIST", "请求的账单文件不存在"))?;
        let hash_value = shared::wechatpay::bill::sha1_hex(text.as_bytes());
        let token = nonce();
        let now = now();
        s.store().bills.insert(
            token.clone(),
            StoredBill {
                text,
                gzip,
                expires_at: now + bill::DOWNLOAD_TTL,
            },
            now,
        );
        // The host the merchant called: the URL works from wherever it reached us.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| s.config.addr.to_string(), str::to_owned);
        let tartype = if gzip { "&tartype=gzip" } else { "" };
        tracing::info!(%date, gzip, "trade bill applied for");
        Ok(json!({
            "hash_type": "SHA1",
            "hash_value": hash_value,
            "download_url": format!("http://{host}{DOWNLOAD_PATH}?token={token}{tartype}"),
        }))
    });
    reply(served)
}

/// `bill_date` (yyyy-MM-dd, within the last 3 months, not after today in Beijing),
/// `bill_type` (ALL, the only one simulated) and `tar_type` (GZIP or absent): the date and
/// whether to gzip.
fn bill_request(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(time::Date, bool), ApiError> {
    let Query(params) =
        query.map_err(|_| param_error("bill_date", None, "malformed query string", "query"))?;
    let raw = params
        .get("bill_date")
        .ok_or_else(|| param_error("bill_date", None, "is required", "query"))?;
    let date = time::Date::parse(
        raw,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        param_error(
            "bill_date",
            Some(&Value::String(bounded(raw))),
            "must be yyyy-MM-DD",
            "query",
        )
    })?;
    let today = bill::beijing_date(now());
    if date > today || (today - date).whole_days() > BILL_DAYS_KEPT {
        return Err(ApiError::new(
            400,
            "INVALID_REQUEST",
            "请检查bill_date: only dates of the last 3 months up to today",
        ));
    }
    match params.get("bill_type").map(String::as_str) {
        None | Some("ALL") => {}
        Some(
            "SUCCESS" | "REFUND" | "RECHARGE_REFUND" | "ALL_SPECIAL" | "SUC_SPECIAL"
            | "REF_SPECIAL",
        ) => {
            return Err(ApiError::new(
                400,
                "INVALID_REQUEST",
                "the simulator serves bill_type=ALL only",
            ));
        }
        Some(other) => {
            return Err(param_error(
                "bill_type",
                Some(&Value::String(bounded(other))),
                "must be ALL, SUCCESS, REFUND, ...",
                "query",
            ));
        }
    }
    let gzip = match params.get("tar_type").map(String::as_str) {
        None => false,
        Some("GZIP") => true,
        Some(other) => {
            return Err(param_error(
                "tar_type",
                Some(&Value::String(bounded(other))),
                "must be GZIP or absent",
                "query",
            ));
        }
    };
    Ok((date, gzip))
}

/// `GET /v3/billdownload/file?token=`: the bill's bytes (gzip when asked), unsigned.
async fn download_bill(
    State(s): State<Arc<Shared>>,
    tamper: Option<axum::Extension<TamperBill>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|Query(p)| p.get("token").cloned());
    let stored = token.and_then(|t| s.store().bills.get(&t, now()));
    let Some(stored) = stored else {
        // The error for an expired download_url is not documented (reference 10).
        return ApiError::new(
            400,
            "INVALID_REQUEST",
            "下载链接不存在或已过期，请重新申请账单",
        )
        .into_response();
    };
    let text = if tamper.is_some() {
        bill::tamper(&stored.text)
    } else {
        stored.text
    };
    let body = if stored.gzip {
        match bill::gzip(&text) {
            Ok(bytes) => bytes,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    } else {
        text.into_bytes()
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

/// The platform certificates, each sealed under the APIv3 key as WeChat Pay does; a merchant
/// with a WeChat Pay public key has none (404, reference 2.4).
async fn certificates(State(s): State<Arc<Shared>>) -> Response {
    let published = s.published_certificates();
    if !published.is_empty() {
        let mut data = Vec::new();
        for (serial, pem) in published {
            let nonce = shared::wechatpay::aead::resource_nonce();
            let Ok(ciphertext) = shared::wechatpay::aead::seal(
                &s.config.apiv3_key,
                &nonce,
                "certificate",
                pem.as_bytes(),
            ) else {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            };
            data.push(serde_json::json!({
                "serial_no": serial,
                "effective_time": "2026-12-01T08:00:00+08:00",
                "expire_time": "2046-12-01T08:00:00+08:00",
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                    "associated_data": "certificate", "ciphertext": ciphertext,
                },
            }));
        }
        return json_response(StatusCode::OK, &serde_json::json!({ "data": data }));
    }
    ApiError::new(
        404,
        "RESOURCE_NOT_EXISTS",
        "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥。可查看指引https://pay.weixin.qq.com/docs/merchant/products/platform-certificate/wxp-pub-key-guide.html",
    )
    .into_response()
}

pub(super) async fn not_found() -> Response {
    ApiError::new(404, "NOT_FOUND", "请求的资源不存在").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(405, "METHOD_NOT_ALLOWED", "请求方法不被允许").into_response()
}

// -----------------------------------------------------------------------------------------
// Parameters
// -----------------------------------------------------------------------------------------

/// WeChat Pay's PARAM_ERROR, naming the field as a JSON pointer the way its `detail` does.
fn param_error(field: &str, value: Option<&Value>, issue: &str, location: &str) -> ApiError {
    let mut detail = json!({ "field": field, "issue": issue, "location": location });
    if let (Some(value), Some(map)) = (value, detail.as_object_mut()) {
        map.insert("value".into(), value.clone());
    }
    ApiError::new(400, "PARAM_ERROR", format!("参数错误: {field} {issue}")).with_detail(detail)
}

fn check_query_mchid(
    config: &SimulatorConfig,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(), ApiError> {
    let Query(params) =
        query.map_err(|_| param_error("mchid", None, "malformed query string", "query"))?;
    match params.get("mchid") {
        None => Err(param_error("mchid", None, "is required", "query")),
        Some(mchid) if *mchid != config.mchid => Err(param_error(
            "mchid",
            Some(&Value::String(bounded(mchid))),
            "does not match the merchant of the Authorization header",
            "query",
        )),
        Some(_) => Ok(()),
    }
}

fn valid_out_trade_no(s: &str) -> bool {
    (MIN_OUT_TRADE_NO..=MAX_OUT_TRADE_NO).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'|' | b'*' | b'-'))
}

const OUT_REFUND_NO_RULE: &str = "must be 1-64 characters of [0-9A-Za-z_|*@-]";

fn valid_out_refund_no(s: &str) -> bool {
    (1..=MAX_OUT_REFUND_NO).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'|' | b'*' | b'@' | b'-'))
}

fn path_out_trade_no(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path_id(
        path,
        "out_trade_no",
        valid_out_trade_no,
        "must be 6-32 characters of [0-9A-Za-z_|*-]",
    )
}

/// The merchant's id in the path, checked against its rule.
fn path_id(
    path: Result<Path<String>, PathRejection>,
    name: &str,
    valid: fn(&str) -> bool,
    rule: &str,
) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|_| param_error(name, None, "malformed path", "path"))?;
    if !valid(&id) {
        return Err(param_error(
            name,
            Some(&Value::String(bounded(&id))),
            rule,
            "path",
        ));
    }
    Ok(id)
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "PARAM_ERROR", format!("请求体不是合法的JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::new(400, "PARAM_ERROR", "请求体必须是JSON对象"));
    }
    // WeChat Pay refuses nulls: absent fields are omitted, never sent as null.
    if let Some(field) = find_null(&value, String::new()) {
        return Err(param_error(
            &field,
            None,
            "must not be null (omit absent fields)",
            "body",
        ));
    }
    Ok(value)
}

fn find_null(value: &Value, at: String) -> Option<String> {
    match value {
        Value::Null => Some(at),
        Value::Object(map) => map
            .iter()
            .find_map(|(key, v)| find_null(v, format!("{at}/{key}"))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_null(v, format!("{at}/{i}"))),
        _ => None,
    }
}

fn optional_str<'a>(
    value: &'a Value,
    pointer: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, ApiError> {
    match value.pointer(pointer) {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max_bytes => Ok(Some(s)),
        Some(Value::String(s)) => Err(param_error(
            pointer,
            Some(&Value::String(bounded(s))),
            &format!("must be at most {max_bytes} bytes"),
            "body",
        )),
        Some(_) => Err(param_error(pointer, None, "must be a string", "body")),
    }
}

fn required_str<'a>(
    value: &'a Value,
    pointer: &str,
    max_bytes: usize,
) -> Result<&'a str, ApiError> {
    match optional_str(value, pointer, max_bytes)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(param_error(pointer, None, "must not be empty", "body")),
        None => Err(param_error(pointer, None, "is required", "body")),
    }
}

/// The object at `pointer` (`/amount`, `/payer`) must be there.
fn required_object(value: &Value, pointer: &str) -> Result<(), ApiError> {
    if value.pointer(pointer).is_some_and(Value::is_object) {
        Ok(())
    } else {
        Err(param_error(
            pointer,
            None,
            "is required and must be an object",
            "body",
        ))
    }
}

/// A required amount: a whole number of fen, at least 1 (and an `i32`, as WeChat Pay's).
fn fen(value: &Value, pointer: &str) -> Result<i64, ApiError> {
    let Some(v) = value.pointer(pointer) else {
        return Err(param_error(pointer, None, "is required", "body"));
    };
    v.as_i64()
        .filter(|t| (1..=i64::from(i32::MAX)).contains(t))
        .ok_or_else(|| {
            param_error(
                pointer,
                Some(v),
                "must be a whole number of fen, at least 1",
                "body",
            )
        })
}

/// Domestic merchants take CNY only.
fn cny(currency: &str) -> Result<&str, ApiError> {
    if currency == "CNY" {
        return Ok(currency);
    }
    Err(param_error(
        "/amount/currency",
        Some(&Value::String(bounded(currency))),
        "Currency code is invalid (domestic merchants take CNY only)",
        "body",
    ))
}

/// Checks a JSAPI prepay body the way WeChat Pay does (reference section 4.1). The
/// `time_expire` minimum is checked by the store, only for new orders: a repeat keeps the
/// original `time_expire`, which may by then be closer than the minimum.
fn parse_prepay(config: &SimulatorConfig, body: &[u8]) -> Result<NewOrder, ApiError> {
    let value = parse_object(body)?;
    let appid = required_str(&value, "/appid", 32)?;
    let mchid = required_str(&value, "/mchid", 32)?;
    if appid != config.appid || mchid != config.mchid {
        return Err(ApiError::new(
            400,
            "APPID_MCHID_NOT_MATCH",
            "AppID和mch_id不匹配",
        ));
    }
    let description = required_str(&value, "/description", 127)?;
    let out_trade_no = required_str(&value, "/out_trade_no", MAX_OUT_TRADE_NO)?;
    if !valid_out_trade_no(out_trade_no) {
        return Err(param_error(
            "/out_trade_no",
            Some(&Value::String(bounded(out_trade_no))),
            "must be 6-32 characters of [0-9A-Za-z_|*-]",
            "body",
        ));
    }
    let time_expire = match optional_str(&value, "/time_expire", 64)? {
        None => None,
        Some(raw) => {
            let at = shared::timefmt::parse_rfc3339(raw).map_err(|_| {
                param_error(
                    "/time_expire",
                    Some(&Value::String(bounded(raw))),
                    "must be RFC 3339, e.g. 2018-06-08T10:34:56+08:00",
                    "body",
                )
            })?;
            Some((raw.to_owned(), at))
        }
    };
    let attach = optional_str(&value, "/attach", 128)?;
    let notify_url = required_str(&value, "/notify_url", 255)?;
    check_notify_url(notify_url)?;

    required_object(&value, "/amount")?;
    let amount_total = fen(&value, "/amount/total")?;
    let currency = cny(optional_str(&value, "/amount/currency", 16)?.unwrap_or("CNY"))?;
    required_object(&value, "/payer")?;
    let payer_openid = required_str(&value, "/payer/openid", 128)?;

    Ok(NewOrder {
        appid: appid.to_owned(),
        mchid: mchid.to_owned(),
        description: description.to_owned(),
        out_trade_no: out_trade_no.to_owned(),
        time_expire,
        attach: attach.map(str::to_owned),
        notify_url: notify_url.to_owned(),
        amount_total,
        currency: currency.to_owned(),
        payer_openid: payer_openid.to_owned(),
        request: value.clone(),
    })
}

/// Checks a create-refund body the way WeChat Pay does (reference
/// `wechatpay-refunds-bills.md` section 1.1): a direct merchant sends no appid or mchid, one
/// of transaction_id and out_trade_no, an out_refund_no, and the amounts in CNY. The rules
/// that need the order (paid, total, refundable, spacing) are the store's.
fn parse_refund(body: &[u8]) -> Result<NewRefund, ApiError> {
    let value = parse_object(body)?;
    let undefined: Vec<Value> = ["appid", "mchid", "sub_mchid"]
        .iter()
        .filter(|field| value.get(**field).is_some())
        .map(|field| Value::String(format!("/body/{field}")))
        .collect();
    if !undefined.is_empty() {
        return Err(
            ApiError::new(400, "PARAM_ERROR", "请求中含有未在API文档中定义的参数")
                .with_detail(json!({ "location": "body", "value": undefined })),
        );
    }
    let transaction_id = optional_str(&value, "/transaction_id", 32)?;
    let out_trade_no = optional_str(&value, "/out_trade_no", MAX_OUT_TRADE_NO)?;
    if transaction_id.is_none() && out_trade_no.is_none() {
        return Err(param_error(
            "/out_trade_no",
            None,
            "one of transaction_id and out_trade_no is required",
            "body",
        ));
    }
    let out_refund_no = required_str(&value, "/out_refund_no", MAX_OUT_REFUND_NO)?;
    if !valid_out_refund_no(out_refund_no) {
        return Err(param_error(
            "/out_refund_no",
            Some(&Value::String(bounded(out_refund_no))),
            OUT_REFUND_NO_RULE,
            "body",
        ));
    }
    // string(80): counted in characters here, so a Chinese reason is not refused early.
    if let Some(reason) = optional_str(&value, "/reason", 4 * 80)?
        && reason.chars().count() > 80
    {
        return Err(param_error(
            "/reason",
            None,
            "must be at most 80 characters",
            "body",
        ));
    }
    let notify_url = optional_str(&value, "/notify_url", 256)?;
    if let Some(url) = notify_url {
        check_notify_url(url)?;
    }
    required_object(&value, "/amount")?;
    let refund = fen(&value, "/amount/refund")?;
    let total = fen(&value, "/amount/total")?;
    cny(required_str(&value, "/amount/currency", 16)?)?;
    if refund > total {
        return Err(ApiError::new(
            400,
            "INVALID_REQUEST",
            "退款金额不能大于订单金额: amount.refund exceeds amount.total",
        ));
    }
    Ok(NewRefund {
        out_trade_no: out_trade_no.map(str::to_owned),
        transaction_id: transaction_id.map(str::to_owned),
        out_refund_no: out_refund_no.to_owned(),
        notify_url: notify_url.map(str::to_owned),
        refund,
        total,
    })
}

/// WeChat Pay calls only https URLs without a query string; plain http is accepted for
/// loopback so the sandbox can deliver to the local backend.
fn check_notify_url(raw: &str) -> Result<(), ApiError> {
    let invalid = |issue: &str| {
        param_error(
            "/notify_url",
            Some(&Value::String(bounded(raw))),
            issue,
            "body",
        )
    };
    let url = reqwest::Url::parse(raw).map_err(|_| invalid("must be an absolute URL"))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(invalid("must be an https URL (http only on loopback)")),
    }
    if url.query().is_some() {
        return Err(invalid("must not carry a query string"));
    }
    Ok(())
}
