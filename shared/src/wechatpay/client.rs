//! The HTTP implementation of `PayGateway`: every request signed with the merchant key, every
//! 2xx response's signature verified (204s too), WeChat Pay's error bodies typed, and bounded
//! retries with backoff and jitter on the failures a retry can fix (network, 5xx, 429).
//!
//! It also owns the key map that verifies WeChat Pay's signatures. With a configured WeChat Pay
//! public key that map is fixed; otherwise platform certificates are downloaded from
//! `/v3/certificates` on first need and again (rate-limited) when an unknown serial shows up.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use http::{HeaderMap, Method};
use serde::Deserialize;

use super::{
    aead::ApiV3Key,
    bill::BillLocation,
    certificates::decrypt_each_certificate,
    gateway::{PayError, PayGateway, PrepayRequest, PrepayResponse},
    keys::{RsaPrivateKey, RsaPublicKey},
    notification::{NotificationError, Transaction, VerifiedNotification, open_verified},
    refund::{RefundRequest, RefundResult},
    sign::{MerchantSigner, PayParams},
    verify::{SignatureInfo, Verifier, VerifyError, WechatpayHeaders},
};

pub const DEFAULT_API_BASE: &str = "https://api.mch.weixin.qq.com";
const USER_AGENT: &str = concat!("wxpay-orders/", env!("CARGO_PKG_VERSION"), " (rust)");

/// Largest bill download accepted: a 100,000-row day is about 35 MB of CSV and a few MB
/// gzipped, so this leaves ample room while keeping a runaway answer out of memory.
pub const MAX_BILL_DOWNLOAD: u64 = 64 * 1024 * 1024;

/// A bill download may take far longer than an API call's `request_timeout`.
pub const BILL_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How hard to try. The defaults keep a call, retries included, inside a few seconds so a
/// Lambda invocation can still answer; the notify path may pass a tighter budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No attempt starts, and no attempt runs, past this much time since the first one.
    pub total_budget: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            total_budget: Duration::from_secs(8),
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// Full jitter (AWS architecture blog): a random delay up to the exponential cap, so
    /// many instances retrying after one outage do not arrive together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=ms))
    }
}

/// Everything the client needs besides the network.
pub struct GatewaySettings {
    pub api_base: String,
    pub appid: String,
    pub mchid: String,
    pub mch_serial_no: String,
    /// `None` where nothing is signed (payment-callback with a public key): every WeChat Pay
    /// call and pay params then fail with [`PayError::Config`].
    pub mch_private_key: Option<RsaPrivateKey>,
    pub apiv3_key: ApiV3Key,
    /// `(PUB_KEY_ID_..., key)`: public-key mode. `None`: platform-certificate mode.
    pub public_key: Option<(String, RsaPublicKey)>,
    pub notify_url: Option<String>,
    pub retry: RetryPolicy,
    /// Least time between two downloads of `/v3/certificates`.
    pub certificate_refresh_interval: Duration,
    /// Downloaded certificates are downloaded again once they are this old (rotation: a new
    /// one is phased in before the old one expires).
    pub certificate_max_age: Duration,
}

/// [`GatewaySettings::certificate_max_age`] when deployed: WeChat Pay's SDKs refresh every
/// 1-24 h.
pub const CERTIFICATE_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

impl GatewaySettings {
    pub fn from_config(config: &crate::config::WechatPayConfig) -> Self {
        GatewaySettings {
            api_base: config.api_base.clone(),
            appid: config.appid.clone(),
            mchid: config.mchid.clone(),
            mch_serial_no: config.mch_serial_no.clone(),
            mch_private_key: config.mch_private_key.as_ref().map(|k| k.expose().clone()),
            apiv3_key: config.apiv3_key.expose().clone(),
            public_key: config.public_key.clone(),
            notify_url: config.notify_url.clone(),
            retry: RetryPolicy::default(),
            certificate_refresh_interval: Duration::from_secs(60),
            certificate_max_age: CERTIFICATE_MAX_AGE,
        }
    }
}

/// The WeChat Pay keys we verify with, shared by responses and notifications.
struct PlatformKeys {
    verifier: RwLock<Verifier>,
    /// Sent as `Wechatpay-Serial` so WeChat Pay signs with the key we hold (key migration).
    public_key_id: Option<String>,
    certificate_mode: bool,
    last_download: Mutex<Option<Instant>>,
    /// When certificates were last installed from a download (`None`: never).
    last_loaded: Mutex<Option<Instant>>,
    refresh_interval: Duration,
    max_age: Duration,
    /// One download at a time; latecomers wait and then use its result.
    download: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct HttpPayGateway {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_base: String,
    appid: String,
    notify_url: Option<String>,
    mchid: String,
    signer: Option<MerchantSigner>,
    apiv3_key: ApiV3Key,
    keys: PlatformKeys,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// WeChat Pay's `Request-ID` of an answer: what its support asks for about any call.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("request-id").and_then(|v| v.to_str().ok())
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// WeChat Pay ids travel in URL paths; anything outside their documented charset is refused
/// before it can change the path we sign.
fn path_segment(what: &str, id: &str) -> Result<String, PayError> {
    id_path_segment(what, id, false)
}

/// As [`path_segment`]; `at` also allows `@` (out_refund_no's charset).
fn id_path_segment(what: &str, id: &str, at: bool) -> Result<String, PayError> {
    let ok = (1..=64).contains(&id.len())
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'|' | b'*' | b'-') || (at && b == b'@')
        });
    if !ok {
        let charset = if at {
            "[0-9A-Za-z_|*@-]"
        } else {
            "[0-9A-Za-z_|*-]"
        };
        return Err(PayError::InvalidRequest(format!(
            "{what} must be 1-64 of {charset}"
        )));
    }
    // `|` and `@` are not allowed raw in a URL path; the signed path must be the bytes on
    // the wire.
    Ok(id.replace('|', "%7C").replace('@', "%40"))
}

impl HttpPayGateway {
    /// Builds the client; makes no network call (certificates are fetched on first need).
    pub fn new(settings: GatewaySettings) -> Result<Self, PayError> {
        let http = crate::tls::roots()
            .reqwest_builder()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.retry.request_timeout)
            .build()
            .map_err(|e| PayError::Config(format!("HTTP client: {e}")))?;
        let mut verifier = Verifier::new();
        let public_key_id = settings.public_key.as_ref().map(|(id, _)| id.clone());
        let certificate_mode = settings.public_key.is_none();
        if let Some((id, key)) = settings.public_key {
            verifier.add_public_key(id, key);
        }
        Ok(HttpPayGateway {
            inner: Arc::new(Inner {
                http,
                api_base: settings.api_base.trim_end_matches('/').to_owned(),
                appid: settings.appid,
                notify_url: settings.notify_url,
                mchid: settings.mchid.clone(),
                signer: settings
                    .mch_private_key
                    .map(|key| MerchantSigner::new(settings.mchid, settings.mch_serial_no, key)),
                apiv3_key: settings.apiv3_key,
                keys: PlatformKeys {
                    verifier: RwLock::new(verifier),
                    public_key_id,
                    certificate_mode,
                    last_download: Mutex::new(None),
                    last_loaded: Mutex::new(None),
                    refresh_interval: settings.certificate_refresh_interval,
                    max_age: settings.certificate_max_age,
                    download: tokio::sync::Mutex::new(()),
                },
                retry: settings.retry,
            }),
        })
    }

    pub fn signer(&self) -> Option<&MerchantSigner> {
        self.inner.signer.as_ref()
    }

    /// The merchant signer, or why there is none.
    fn signing(&self) -> Result<&MerchantSigner, PayError> {
        self.inner.signer.as_ref().ok_or_else(|| {
            PayError::Config("no merchant private key: this function signs nothing".into())
        })
    }

    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// Verifies a signature made by WeChat Pay (a notification or a response) with the public
    /// key or a platform certificate, whichever `Wechatpay-Serial` names: during a migration
    /// from certificates to the public key WeChat Pay signs with both. A certificate serial we
    /// do not know triggers one rate-limited download of `/v3/certificates` (in public-key
    /// mode too); certificates older than their maximum age are downloaded again first.
    pub async fn verify(
        &self,
        headers: &WechatpayHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<SignatureInfo, VerifyError> {
        self.refresh_if_stale().await;
        let first = self.verify_now(headers, body, now);
        match first {
            Err(VerifyError::UnknownSerial(serial)) if self.may_be_certificate(&serial) => {
                if let Err(e) = self.refresh_certificates().await {
                    tracing::warn!(error = %e, "platform certificate refresh failed");
                }
                self.verify_now(headers, body, now)
            }
            other => other,
        }
    }

    /// Whether an unknown serial may name a platform certificate worth a download: any serial
    /// in certificate mode; in public-key mode, one that is not a public-key id.
    fn may_be_certificate(&self, serial: &str) -> bool {
        self.inner.keys.certificate_mode || !serial.starts_with("PUB_KEY_ID_")
    }

    /// Downloads the certificates again once the installed ones reach their maximum age (a
    /// failure keeps the ones we have and is logged).
    async fn refresh_if_stale(&self) {
        let keys = &self.inner.keys;
        let stale = keys
            .last_loaded
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() >= keys.max_age))
            .unwrap_or(false);
        if stale && let Err(e) = self.refresh_certificates().await {
            tracing::warn!(error = %e, "periodic platform certificate refresh failed; keeping the current ones");
        }
    }

    fn verify_now(
        &self,
        headers: &WechatpayHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<SignatureInfo, VerifyError> {
        match self.inner.keys.verifier.read() {
            Ok(v) => v.verify(headers, body, now),
            Err(poisoned) => poisoned.into_inner().verify(headers, body, now),
        }
    }

    /// Serials of the keys we currently trust.
    pub fn known_serials(&self) -> Vec<String> {
        match self.inner.keys.verifier.read() {
            Ok(v) => v.serials(),
            Err(poisoned) => poisoned.into_inner().serials(),
        }
    }

    /// Downloads, decrypts and installs the platform certificates, unless another download
    /// finished within the refresh interval.
    pub async fn refresh_certificates(&self) -> Result<(), PayError> {
        let keys = &self.inner.keys;
        let _one_at_a_time = keys.download.lock().await;
        let recent = keys
            .last_download
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() < keys.refresh_interval))
            .unwrap_or(false);
        if recent {
            return Ok(());
        }
        if let Ok(mut t) = keys.last_download.lock() {
            *t = Some(Instant::now());
        }
        let (status, headers, body) = self.call_raw(Method::GET, "/v3/certificates", None).await?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        let entries = decrypt_each_certificate(&body, &self.inner.apiv3_key)
            .map_err(|e| PayError::Certificates(e.to_string()))?;
        let now = now_unix();
        let mut certificates = Vec::new();
        let mut refused = Vec::new();
        for entry in entries {
            match entry {
                Ok(c) if c.not_after <= now => refused.push(format!(
                    "certificate {} expired at {}",
                    c.serial_no, c.not_after
                )),
                Ok(c) => certificates.push(c),
                // One bad entry does not discard the good ones.
                Err(e) => refused.push(e.to_string()),
            }
        }
        for why in &refused {
            tracing::warn!(error = %why, "platform certificate entry refused");
        }
        if certificates.is_empty() {
            return Err(PayError::Certificates(if refused.is_empty() {
                "the response held no certificate".into()
            } else {
                refused.join("; ")
            }));
        }
        // The download is authenticated by the APIv3 key (AEAD) and then must verify its own
        // signature with one of the certificates it carries.
        let mut fresh = match keys.verifier.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for c in certificates {
            fresh.add_certificate(c);
        }
        if headers.get("Wechatpay-Signature").is_none() {
            return Err(PayError::UnsignedResponse);
        }
        fresh.verify(&WechatpayHeaders::from(&headers), &body, now)?;
        let serials = fresh.serials();
        match keys.verifier.write() {
            Ok(mut v) => *v = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        if let Ok(mut t) = keys.last_loaded.lock() {
            *t = Some(Instant::now());
        }
        tracing::info!(serials = ?serials, "platform certificates loaded");
        Ok(())
    }

    /// One signed request, retried per policy, with a verified 2xx response: its status,
    /// body and WeChat Pay's `Request-ID`.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Vec<u8>, Option<String>), PayError> {
        if self.inner.keys.certificate_mode && self.known_serials().is_empty() {
            self.refresh_certificates().await?;
        }
        let (status, headers, bytes) = self.call_raw(method, path_and_query, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        if headers.get("Wechatpay-Signature").is_none() {
            return Err(PayError::UnsignedResponse);
        }
        self.verify(&WechatpayHeaders::from(&headers), &bytes, now_unix())
            .await?;
        let request_id = request_id(&headers).map(str::to_owned);
        Ok((status, bytes, request_id))
    }

    /// The retry loop over single attempts; answers with the last response (2xx or not) or
    /// the last error once a non-retryable outcome, the attempt count or the budget is reached.
    async fn call_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, HeaderMap, Vec<u8>), PayError> {
        let policy = self.inner.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = policy.total_budget.saturating_sub(started.elapsed());
            let timeout = policy.request_timeout.min(left);
            let outcome = self
                .attempt(method.clone(), path_and_query, body.as_deref(), timeout)
                .await;
            if let Ok((status, headers, _)) = &outcome {
                let request_id = request_id(headers).unwrap_or("");
                tracing::info!(
                    method = method.as_str(),
                    path = path_and_query,
                    status = status.as_u16(),
                    request_id,
                    attempt,
                    "WeChat Pay answered"
                );
            }
            // Why this attempt may be repeated; `None`: success, or a failure no retry fixes.
            let retry_reason = match &outcome {
                Ok((status, _, bytes)) if !status.is_success() => {
                    let e = api_error(*status, bytes);
                    e.retryable().then(|| e.to_string())
                }
                Ok(_) => None,
                Err(e) => e.retryable().then(|| e.to_string()),
            };
            let Some(reason) = retry_reason else {
                return outcome;
            };
            if attempt >= policy.max_attempts {
                return outcome;
            }
            let delay = policy.backoff(attempt);
            if started.elapsed() + delay >= policy.total_budget {
                return outcome;
            }
            tracing::warn!(
                path = path_and_query,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %reason,
                "WeChat Pay call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(http::StatusCode, HeaderMap, Vec<u8>), PayError> {
        if timeout.is_zero() {
            return Err(PayError::Timeout(timeout));
        }
        let payload = body.unwrap_or_default();
        let authorization =
            self.signing()?
                .authorization_at(method.as_str(), path_and_query, payload, now_unix());
        let url = format!("{}{}", self.inner.api_base, path_and_query);
        let mut request = self
            .inner
            .http
            .request(method, &url)
            .timeout(timeout)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/json");
        if let Some(id) = &self.inner.keys.public_key_id {
            request = request.header("Wechatpay-Serial", id);
        }
        if let Some(b) = body {
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        Ok((status, headers, bytes.to_vec()))
    }
}

fn transport_error(e: reqwest::Error, timeout: Duration) -> PayError {
    if e.is_timeout() {
        PayError::Timeout(timeout)
    } else {
        // `without_url`: the URL is ours and harmless, but keep messages short and stable.
        PayError::Network(e.without_url().to_string())
    }
}

/// WeChat Pay's `{code, message, detail}`, or a synthetic code when the body is not that.
fn api_error(status: http::StatusCode, body: &[u8]) -> PayError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => PayError::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
            detail: e.detail,
        },
        Err(_) => PayError::Api {
            status: status.as_u16(),
            code: format!("HTTP_{}", status.as_u16()),
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            detail: None,
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, PayError> {
    serde_json::from_slice(body).map_err(|e| PayError::MalformedResponse(format!("{what}: {e}")))
}

/// WeChat Pay's two bill answers that are not failures of the call: no bill for an empty day,
/// and a bill not generated yet.
fn bill_error(e: PayError) -> PayError {
    match e {
        PayError::Api { code, .. } if code == "NO_STATEMENT_EXIST" => PayError::NoStatement,
        PayError::Api { code, .. } if code == "STATEMENT_CREATING" => PayError::StatementNotReady,
        other => other,
    }
}

/// `2026-03-01`: the `bill_date` WeChat Pay takes.
fn ymd(date: time::Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

impl HttpPayGateway {
    /// The merchant's `Authorization` goes only to WeChat Pay: a `download_url` must be on
    /// the configured API's origin (the simulator's, in the sandbox) or an https host of
    /// WeChat's own.
    fn download_target(&self, download_url: &str) -> Result<reqwest::Url, PayError> {
        let bad = |why: &str| PayError::MalformedResponse(format!("download_url {why}"));
        let url = reqwest::Url::parse(download_url).map_err(|_| bad("is not a URL"))?;
        let same_origin = reqwest::Url::parse(&self.inner.api_base)
            .is_ok_and(|base| base.origin() == url.origin());
        let wechat = url.scheme() == "https"
            && url
                .host_str()
                .is_some_and(|h| h == "weixin.qq.com" || h.ends_with(".weixin.qq.com"));
        if !same_origin && !wechat {
            return Err(bad(
                "is neither on the API's origin nor a WeChat Pay https host",
            ));
        }
        Ok(url)
    }
}

#[async_trait]
impl PayGateway for HttpPayGateway {
    async fn jsapi_prepay(&self, request: &PrepayRequest) -> Result<PrepayResponse, PayError> {
        let notify_url = self.inner.notify_url.as_deref().ok_or_else(|| {
            PayError::Config("WXPAY_NOTIFY_URL is needed to create orders".into())
        })?;
        let mut body = serde_json::json!({
            "appid": self.inner.appid,
            "mchid": self.inner.mchid,
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "time_expire": request.time_expire,
            "notify_url": notify_url,
            "amount": {"total": request.amount_total, "currency": "CNY"},
            "payer": {"openid": request.payer_openid},
        });
        // WeChat Pay refuses nulls: an absent attach is left out, not sent as null.
        if let (Some(attach), Some(map)) = (&request.attach, body.as_object_mut()) {
            map.insert("attach".into(), attach.clone().into());
        }
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| PayError::InvalidRequest(format!("prepay body: {e}")))?;
        let (_, response, request_id) = self
            .call(Method::POST, "/v3/pay/transactions/jsapi", Some(bytes))
            .await?;
        let prepay: PrepayResponse = parse("prepay response", &response)?;
        Ok(PrepayResponse {
            request_id,
            ..prepay
        })
    }

    async fn query_by_out_trade_no(&self, out_trade_no: &str) -> Result<Transaction, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            path_segment("out_trade_no", out_trade_no)?,
            self.inner.mchid
        );
        let (_, response, request_id) = self.call(Method::GET, &path, None).await?;
        let txn: Transaction = parse("transaction", &response)?;
        Ok(Transaction { request_id, ..txn })
    }

    async fn query_by_transaction_id(&self, transaction_id: &str) -> Result<Transaction, PayError> {
        let path = format!(
            "/v3/pay/transactions/id/{}?mchid={}",
            path_segment("transaction_id", transaction_id)?,
            self.inner.mchid
        );
        let (_, response, request_id) = self.call(Method::GET, &path, None).await?;
        let txn: Transaction = parse("transaction", &response)?;
        Ok(Transaction { request_id, ..txn })
    }

    async fn close(&self, out_trade_no: &str) -> Result<Option<String>, PayError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            path_segment("out_trade_no", out_trade_no)?
        );
        let body = serde_json::to_vec(&serde_json::json!({"mchid": self.inner.mchid}))
            .map_err(|e| PayError::InvalidRequest(format!("close body: {e}")))?;
        let (status, _, request_id) = self.call(Method::POST, &path, Some(body)).await?;
        if status != http::StatusCode::NO_CONTENT && status != http::StatusCode::OK {
            return Err(PayError::MalformedResponse(format!(
                "close answered HTTP {status}, expected 204"
            )));
        }
        Ok(request_id)
    }

    async fn create_refund(&self, request: &RefundRequest) -> Result<RefundResult, PayError> {
        let notify_url = self.inner.notify_url.as_deref().ok_or_else(|| {
            PayError::Config("WXPAY_NOTIFY_URL is needed to request refunds".into())
        })?;
        let mut body = serde_json::json!({
            "out_trade_no": request.out_trade_no,
            "out_refund_no": request.out_refund_no,
            "notify_url": notify_url,
            "amount": {"refund": request.refund, "total": request.total, "currency": "CNY"},
        });
        // No nulls: an absent reason is left out.
        if let (Some(reason), Some(map)) = (&request.reason, body.as_object_mut()) {
            map.insert("reason".into(), reason.clone().into());
        }
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| PayError::InvalidRequest(format!("refund body: {e}")))?;
        let (_, response, request_id) = self
            .call(Method::POST, "/v3/refund/domestic/refunds", Some(bytes))
            .await?;
        let refund: RefundResult = parse("refund", &response)?;
        Ok(RefundResult {
            request_id,
            ..refund
        })
    }

    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundResult, PayError> {
        let path = format!(
            "/v3/refund/domestic/refunds/{}",
            id_path_segment("out_refund_no", out_refund_no, true)?
        );
        let (_, response, request_id) = self.call(Method::GET, &path, None).await?;
        let refund: RefundResult = parse("refund", &response)?;
        Ok(RefundResult {
            request_id,
            ..refund
        })
    }

    async fn apply_abnormal_refund(
        &self,
        refund_id: &str,
        out_refund_no: &str,
    ) -> Result<RefundResult, PayError> {
        let path = format!(
            "/v3/refund/domestic/refunds/{}/apply-abnormal-refund",
            path_segment("refund_id", refund_id)?
        );
        let body = serde_json::to_vec(&serde_json::json!({
            "out_refund_no": out_refund_no,
            "type": "MERCHANT_BANK_CARD",
        }))
        .map_err(|e| PayError::InvalidRequest(format!("abnormal refund body: {e}")))?;
        let (_, response, request_id) = self.call(Method::POST, &path, Some(body)).await?;
        let refund: RefundResult = parse("refund", &response)?;
        Ok(RefundResult {
            request_id,
            ..refund
        })
    }

    async fn verify_notification(
        &self,
        headers: &WechatpayHeaders,
        raw_body: &[u8],
        now: i64,
    ) -> Result<VerifiedNotification, NotificationError> {
        let signature = self.verify(headers, raw_body, now).await?;
        open_verified(signature, &self.inner.apiv3_key, raw_body)
    }

    async fn trade_bill(&self, bill_date: time::Date) -> Result<BillLocation, PayError> {
        let path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=ALL&tar_type=GZIP",
            ymd(bill_date)
        );
        let (_, response, _) = self
            .call(Method::GET, &path, None)
            .await
            .map_err(bill_error)?;
        let location: BillLocation = parse("trade bill", &response)?;
        if !location.hash_type.eq_ignore_ascii_case("SHA1") {
            return Err(PayError::MalformedResponse(format!(
                "trade bill hash_type {:?}, expected SHA1",
                location.hash_type.chars().take(16).collect::<String>()
            )));
        }
        Ok(location)
    }

    /// One attempt, not retried: on failure the caller asks for a fresh `download_url` (it
    /// expires after 5 minutes anyway).
    async fn download_bill(&self, location: &BillLocation) -> Result<Vec<u8>, PayError> {
        let url = self.download_target(&location.download_url)?;
        // Signed over the path and query exactly as they go on the wire (the token is not
        // decoded and re-encoded), with an empty body (reference 6.3).
        let path_and_query = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let authorization =
            self.signing()?
                .authorization_at("GET", &path_and_query, b"", now_unix());
        let mut request = self
            .inner
            .http
            .get(url)
            .timeout(BILL_DOWNLOAD_TIMEOUT)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "*/*");
        if let Some(id) = &self.inner.keys.public_key_id {
            request = request.header("Wechatpay-Serial", id);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(e, BILL_DOWNLOAD_TIMEOUT))?;
        let status = response.status();
        let limit = if status.is_success() {
            MAX_BILL_DOWNLOAD
        } else {
            // An error body is a small JSON object; more of it is not worth holding.
            64 * 1024
        };
        if response.content_length().is_some_and(|n| n > limit) && status.is_success() {
            return Err(PayError::BillTooLarge(MAX_BILL_DOWNLOAD));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(e, BILL_DOWNLOAD_TIMEOUT))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                if status.is_success() {
                    return Err(PayError::BillTooLarge(MAX_BILL_DOWNLOAD));
                }
                break;
            }
            body.extend_from_slice(&chunk);
        }
        tracing::info!(
            status = status.as_u16(),
            bytes = body.len(),
            "WeChat Pay bill downloaded"
        );
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        // Deliberately no signature check: WeChat Pay does not sign this answer; the SHA-1
        // from the signed trade_bill answer is what the caller checks it against.
        Ok(body)
    }

    fn pay_params(&self, prepay_id: &str, timestamp: i64) -> Result<PayParams, PayError> {
        Ok(self
            .signing()?
            .pay_params_at(&self.inner.appid, prepay_id, timestamp))
    }
}
