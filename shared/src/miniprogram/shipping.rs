//! WeChat's order-shipping API (`/wxa/sec/order/*`, reference sections 2-3): the
//! [`MiniProgramApi`] port the shipping use cases call, the exact upload body a shipment is
//! stored and resent as, and its HTTP implementation with the access token every instance
//! shares through the table (`stable_token`, normal mode only: never force-refreshed).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::config::Secret;
use crate::domain::{Order, Shipment, UploadResult};
use crate::store::{AccessToken, Store};
use crate::wechatpay::RetryPolicy;

/// What a call to WeChat's server API ended with, apart from success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WxApiError {
    /// WeChat answered an `errcode` (its `errmsg` cut short).
    #[error("WeChat errcode {errcode}: {errmsg}")]
    Code { errcode: i64, errmsg: String },
    /// No certain answer: a network failure, timeout or 5xx (WeChat may have acted).
    #[error("WeChat is unavailable: {0}")]
    Unavailable(String),
    /// No access token could be had (stable_token refused: an IP allow-list, a wrong
    /// AppSecret, the day's quota): the call itself was never made.
    #[error("no access token: {0}")]
    Token(String),
}

/// WeChat's `get_order`, the part the sweeper reads: `order_state` 1 waiting for shipment,
/// 2 shipped, 3 receipt confirmed, 4 settled, 5 refunded, 6 waiting for settlement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WxOrder {
    pub transaction_id: String,
    pub order_state: u8,
}

/// The port: WeChat's trade-management calls the use cases make.
#[async_trait]
pub trait MiniProgramApi: Send + Sync {
    /// `upload_shipping_info` with the stored body, byte for byte.
    async fn upload_shipping_info(&self, body: &str) -> Result<(), WxApiError>;
    async fn get_order(&self, transaction_id: &str) -> Result<WxOrder, WxApiError>;
    async fn is_trade_managed(&self) -> Result<bool, WxApiError>;
}

/// The upload body of `shipment` for `order` (paid: it has its transaction_id), as WeChat
/// wants it: numbers for the enums, `upload_time` RFC 3339 in +08:00 with milliseconds, the
/// payer's openid. Made once; every attempt sends these bytes.
pub fn upload_body(
    order: &Order,
    shipment: &Shipment,
    upload_time: OffsetDateTime,
) -> Option<String> {
    let transaction_id = order.transaction_id.as_deref()?;
    let shipping_list: Vec<serde_json::Value> = shipment
        .packages
        .iter()
        .map(|p| {
            let mut item = serde_json::Map::new();
            if let Some(t) = &p.tracking_no {
                item.insert("tracking_no".into(), json!(t));
            }
            if let Some(c) = &p.express_company {
                item.insert("express_company".into(), json!(c));
            }
            item.insert("item_desc".into(), json!(p.item_desc));
            if let Some(c) = &p.receiver_contact {
                item.insert("contact".into(), json!({ "receiver_contact": c }));
            }
            serde_json::Value::Object(item)
        })
        .collect();
    let body = json!({
        "order_key": {"order_number_type": 2, "transaction_id": transaction_id},
        "logistics_type": shipment.logistics_type.code(),
        "delivery_mode": shipment.delivery_mode.code(),
        "is_all_delivered": shipment.is_all_delivered,
        "shipping_list": shipping_list,
        "upload_time": wechat_millis(upload_time),
        "payer": {"openid": order.openid.as_str()},
    });
    Some(body.to_string())
}

/// `2026-11-24T12:00:00.000+08:00`.
fn wechat_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::macros::offset!(+8));
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+08:00"
    );
    t.format(&format).unwrap_or_default()
}

/// How an upload attempt's answer moves the shipment (reference 3.2): 0 and 10060023 (the
/// same info again) are done; busy, quota, not-yet-indexed (10060001) and no answer are
/// retried with the same bytes; every other code is WeChat's final word.
pub fn upload_result(answer: Result<(), WxApiError>) -> UploadResult {
    match answer {
        Ok(())
        | Err(WxApiError::Code {
            errcode: 10060023, ..
        }) => UploadResult::Uploaded,
        Err(WxApiError::Code { errcode, errmsg })
            if matches!(
                errcode,
                -1 | 10060001 | 10060012 | 10060019 | 45009 | 45011 | 44990 | 40001 | 42001 | 40014
            ) =>
        {
            UploadResult::Retry {
                errcode: Some(errcode),
                error: errmsg,
                ambiguous: false,
            }
        }
        Err(WxApiError::Code { errcode, errmsg }) => UploadResult::Refused {
            errcode,
            error: errmsg,
        },
        Err(WxApiError::Unavailable(e)) => UploadResult::Retry {
            errcode: None,
            error: e,
            ambiguous: true,
        },
        // WeChat never saw the upload: retried as it is, nothing to ask first.
        Err(WxApiError::Token(e)) => UploadResult::Retry {
            errcode: None,
            error: format!("no access token: {e}"),
            ambiguous: false,
        },
    }
}

/// What the HTTP client needs (`WX_API_BASE`, the AppID and its `WX_APP_SECRET`).
#[derive(Debug, Clone)]
pub struct MiniProgramSettings {
    pub api_base: String,
    pub appid: String,
    pub app_secret: Secret<String>,
    pub retry: RetryPolicy,
}

/// A token is used until this long before it lapses (WeChat rotates 5 min before expiry and
/// any token it hands out lasts at least that long).
const TOKEN_MARGIN: time::Duration = time::Duration::minutes(5);

/// The port over HTTPS; the access token comes from the table, or from `stable_token` when
/// the table has none that lasts (all instances racing get the same token: normal mode).
pub struct HttpMiniProgram {
    http: reqwest::Client,
    base: String,
    appid: String,
    app_secret: Secret<String>,
    retry: RetryPolicy,
    store: Arc<dyn Store>,
    cached: Mutex<Option<AccessToken>>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    is_trade_managed: Option<bool>,
    #[serde(default)]
    order: Option<WxOrder>,
}

#[derive(Serialize)]
struct StableTokenRequest<'a> {
    grant_type: &'static str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

impl HttpMiniProgram {
    pub fn new(settings: MiniProgramSettings, store: Arc<dyn Store>) -> Result<Self, String> {
        let http = crate::session::login::wechat_api_client(settings.retry.request_timeout)?;
        Ok(HttpMiniProgram {
            http,
            base: settings.api_base.trim_end_matches('/').to_owned(),
            appid: settings.appid,
            app_secret: settings.app_secret,
            retry: settings.retry,
            store,
            cached: Mutex::new(None),
        })
    }

    fn fresh(token: &AccessToken, now: OffsetDateTime) -> bool {
        token.expires_at - TOKEN_MARGIN > now
    }

    /// A token that lasts: memory, then the table, then `stable_token` (normal mode). A
    /// token WeChat just `rejected` is never taken from memory or the table again: normal
    /// mode then answers the one WeChat holds now, which replaces it for every instance.
    async fn token(
        &self,
        now: OffsetDateTime,
        rejected: Option<&Secret<String>>,
    ) -> Result<Secret<String>, WxApiError> {
        let usable = |t: &AccessToken| Self::fresh(t, now) && Some(&t.token) != rejected;
        if let Some(t) = self.cached.lock().ok().and_then(|c| c.clone())
            && usable(&t)
        {
            return Ok(t.token);
        }
        let stored = self
            .store
            .get_access_token(&self.appid)
            .await
            .map_err(|e| WxApiError::Token(format!("access token store: {e}")))?;
        let token = match stored.filter(|t| usable(t)) {
            Some(t) => t,
            None => {
                let t = self.stable_token(now).await.map_err(|e| match e {
                    WxApiError::Token(m) => WxApiError::Token(m),
                    other => WxApiError::Token(format!("stable_token: {other}")),
                })?;
                // Another instance storing a longer-lived one first is fine: both are valid.
                // A rejected one is replaced whatever its expiry said.
                if let Err(e) = self.store.put_access_token(&self.appid, &t, rejected).await {
                    tracing::warn!(error = %e, outcome = "not_shared", "access token not stored; used anyway");
                }
                t
            }
        };
        if let Ok(mut c) = self.cached.lock() {
            *c = Some(token.clone());
        }
        Ok(token.token)
    }

    async fn stable_token(&self, now: OffsetDateTime) -> Result<AccessToken, WxApiError> {
        let body = serde_json::to_string(&StableTokenRequest {
            grant_type: "client_credential",
            appid: &self.appid,
            secret: self.app_secret.expose(),
            force_refresh: false,
        })
        .map_err(|e| WxApiError::Unavailable(e.to_string()))?;
        let reply = self.post("/cgi-bin/stable_token", None, body, true).await?;
        let token = reply
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                WxApiError::Unavailable("stable_token answered no access_token".into())
            })?;
        let expires_in = reply.expires_in.unwrap_or(0).clamp(0, 7200);
        tracing::info!(
            expires_in,
            outcome = "refreshed",
            "access token from stable_token"
        );
        Ok(AccessToken {
            token: Secret::new(token),
            expires_at: now + time::Duration::seconds(expires_in),
        })
    }

    /// A call with the access token, made once more with another token when WeChat says
    /// the one used is stale (40001, 42001, 40014). `retry`: resend on no answer or 5xx
    /// (never for an upload: a resend must ask `get_order` first, which the caller does).
    async fn call(&self, path: &str, body: String, retry: bool) -> Result<Reply, WxApiError> {
        let mut rejected: Option<Secret<String>> = None;
        for round in 0..2 {
            let token = self
                .token(OffsetDateTime::now_utc(), rejected.as_ref())
                .await?;
            match self.post(path, Some(&token), body.clone(), retry).await {
                Err(WxApiError::Code {
                    errcode: 40001 | 42001 | 40014,
                    ..
                }) if round == 0 => {
                    if let Ok(mut c) = self.cached.lock() {
                        *c = None;
                    }
                    tracing::warn!(
                        path,
                        outcome = "token_refresh",
                        "WeChat refused the access token; getting the current one"
                    );
                    rejected = Some(token);
                }
                other => return other,
            }
        }
        Err(WxApiError::Token("access token refused twice".into()))
    }

    /// One POST, retried on no answer or 5xx within the policy. The URL carries the token
    /// and the body of stable_token the AppSecret: neither is ever logged or in an error.
    async fn post(
        &self,
        path: &str,
        token: Option<&Secret<String>>,
        body: String,
        retry: bool,
    ) -> Result<Reply, WxApiError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|_| WxApiError::Unavailable("WX_API_BASE is not a URL".into()))?;
        if let Some(t) = token {
            url.query_pairs_mut()
                .append_pair("access_token", t.expose());
        }
        let policy = self.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = policy.total_budget.saturating_sub(started.elapsed());
            let reason = match self
                .attempt(url.clone(), body.clone(), policy.request_timeout.min(left))
                .await
            {
                Ok(reply) if reply.errcode == 0 => return Ok(reply),
                Ok(reply) => {
                    return Err(WxApiError::Code {
                        errcode: reply.errcode,
                        errmsg: reply.errmsg.chars().take(200).collect(),
                    });
                }
                Err(reason) => reason,
            };
            let delay = policy.backoff(attempt);
            if !retry
                || attempt >= policy.max_attempts
                || started.elapsed() + delay >= policy.total_budget
            {
                return Err(WxApiError::Unavailable(format!(
                    "{reason} (after {attempt} attempts)"
                )));
            }
            tracing::warn!(path, attempt, error = %reason, outcome = "retrying", "WeChat API call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        url: reqwest::Url,
        body: String,
        timeout: Duration,
    ) -> Result<Reply, String> {
        if timeout.is_zero() {
            return Err("timed out".into());
        }
        let response = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        // WeChat labels its JSON text/plain at times: parse whatever the type.
        serde_json::from_slice(&bytes).map_err(|_| "the answer is not WeChat's JSON".to_owned())
    }
}

/// reqwest's error without its URL (which holds the access token).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

#[async_trait]
impl MiniProgramApi for HttpMiniProgram {
    async fn upload_shipping_info(&self, body: &str) -> Result<(), WxApiError> {
        self.call(
            "/wxa/sec/order/upload_shipping_info",
            body.to_owned(),
            false,
        )
        .await
        .map(|_| ())
    }

    async fn get_order(&self, transaction_id: &str) -> Result<WxOrder, WxApiError> {
        let body = json!({ "transaction_id": transaction_id }).to_string();
        let reply = self.call("/wxa/sec/order/get_order", body, true).await?;
        reply
            .order
            .ok_or_else(|| WxApiError::Unavailable("get_order answered no order".into()))
    }

    async fn is_trade_managed(&self) -> Result<bool, WxApiError> {
        let body = json!({ "appid": self.appid }).to_string();
        let reply = self
            .call("/wxa/sec/order/is_trade_managed", body, true)
            .await?;
        reply.is_trade_managed.ok_or_else(|| {
            WxApiError::Unavailable("is_trade_managed answered no is_trade_managed".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Package, Shipment};

    #[test]
    fn upload_time_is_beijing_time_with_milliseconds() {
        let t = time::macros::datetime!(2022-12-15 05:29:35.120 UTC);
        assert_eq!(wechat_millis(t), "2022-12-15T13:29:35.120+08:00");
    }

    #[test]
    fn answers_map_to_wechats_retry_rules() {
        let code = |errcode| {
            upload_result(Err(WxApiError::Code {
                errcode,
                errmsg: "m".into(),
            }))
        };
        assert_eq!(upload_result(Ok(())), UploadResult::Uploaded);
        assert_eq!(code(10060023), UploadResult::Uploaded);
        for retry in [10060001, -1, 10060012, 45009, 40001] {
            assert!(
                matches!(
                    code(retry),
                    UploadResult::Retry {
                        ambiguous: false,
                        ..
                    }
                ),
                "{retry}"
            );
        }
        for final_code in [10060002, 10060003, 10060004, 10060031, 47001, 268485216] {
            assert!(
                matches!(code(final_code), UploadResult::Refused { .. }),
                "{final_code}"
            );
        }
        assert!(matches!(
            upload_result(Err(WxApiError::Unavailable("timed out".into()))),
            UploadResult::Retry {
                ambiguous: true,
                ..
            }
        ));
    }

    #[test]
    fn the_upload_body_is_wechats_shape() {
        let mut order = crate::domain::Order::new_pending(
            crate::domain::OutTradeNo::parse("01JDABCDEFGHJKMNPQRSTVWXYZ").unwrap(),
            crate::domain::Openid::parse("o_payer").unwrap(),
            Vec::new(),
            "d".into(),
            None,
            time::macros::datetime!(2026-11-24 04:00 UTC),
            time::macros::datetime!(2026-11-24 04:30 UTC),
        )
        .unwrap();
        let shipment = Shipment::parse(
            "express",
            vec![Package {
                tracking_no: Some("SF001".into()),
                express_company: Some("SF".into()),
                item_desc: "奶茶*2".into(),
                receiver_contact: Some("189****1234".into()),
            }],
            true,
        )
        .unwrap();
        let at = time::macros::datetime!(2026-11-24 04:10 UTC);
        assert_eq!(
            upload_body(&order, &shipment, at),
            None,
            "unpaid: no transaction"
        );
        order.transaction_id = Some("4200000001".into());
        let body: serde_json::Value =
            serde_json::from_str(&upload_body(&order, &shipment, at).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "order_key": {"order_number_type": 2, "transaction_id": "4200000001"},
                "logistics_type": 1,
                "delivery_mode": 1,
                "is_all_delivered": true,
                "shipping_list": [{"tracking_no": "SF001", "express_company": "SF",
                    "item_desc": "奶茶*2", "contact": {"receiver_contact": "189****1234"}}],
                "upload_time": "2026-11-24T12:10:00.000+08:00",
                "payer": {"openid": "o_payer"},
            })
        );
    }
}
