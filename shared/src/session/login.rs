//! WeChat's mini-program login: the [`WxLogin`] port and its HTTP implementation of
//! `GET /sns/jscode2session`, which turns a one-time `wx.login()` code into the user's openid.
//!
//! WeChat also answers a `session_key` (and sometimes a `unionid`). Only `openid` is ever
//! deserialised, so the key never exists in a field, a log line or an error. The request URL
//! carries the AppSecret, so it is never logged and errors are stripped of it.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::config::Secret;
use crate::domain::Openid;
use crate::wechatpay::RetryPolicy;

/// WeChat's server API (`WX_API_BASE` default).
pub use crate::config::DEFAULT_WX_API_BASE;
const USER_AGENT: &str = concat!("wxpay-orders/", env!("CARGO_PKG_VERSION"), " (rust)");

/// The `code` from `wx.login()`: one-time, valid for 5 minutes. Printable ASCII, no spaces,
/// at most 256 bytes; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginCode(String);

impl LoginCode {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.len() > 256 {
            return Err("code must be 1-256 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("code must be printable ASCII without spaces");
        }
        Ok(LoginCode(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginCode(..)")
    }
}

/// Why a code did not log anyone in. Messages keep WeChat's errcode, never the code or
/// the AppSecret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// 40029 (invalid code), 40163 (code already used).
    #[error("the login code is invalid or already used (WeChat errcode {errcode})")]
    InvalidCode { errcode: i64 },
    /// 45011: too many logins for this user.
    #[error("WeChat rate-limited this login (errcode 45011); retry in a minute")]
    RateLimited,
    /// 40226: WeChat's risk control blocked the user.
    #[error("WeChat refused the login of a high-risk user (errcode 40226)")]
    RiskyUser,
    /// Any other errcode (bad AppID or secret: 40013, 40125; system busy: -1; ...).
    #[error("WeChat refused the login: errcode {errcode} ({errmsg})")]
    Refused { errcode: i64, errmsg: String },
    /// Network failure, timeout, 5xx after retries, or an answer that is not WeChat's.
    #[error("WeChat login is unavailable: {0}")]
    Unavailable(String),
}

/// The port: a code in, the openid out.
#[async_trait]
pub trait WxLogin: Send + Sync + 'static {
    async fn jscode2session(&self, code: &LoginCode) -> Result<Openid, LoginError>;
}

/// What the HTTP client needs.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub api_base: String,
    pub appid: String,
    pub app_secret: Secret<String>,
    pub retry: RetryPolicy,
}

impl LoginSettings {
    /// A login must answer while the user waits: 2 tries (3 at most) inside 5 s.
    pub fn default_retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            total_budget: Duration::from_secs(5),
            request_timeout: Duration::from_secs(3),
        }
    }
}

/// A client for WeChat's server API (`WX_API_BASE`): our trust roots and user agent, no
/// redirects (an answer is WeChat's own or none).
pub(crate) fn wechat_api_client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    crate::tls::roots()
        .reqwest_builder()
        .user_agent(USER_AGENT)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// `jscode2session` over HTTPS with `reqwest`; retries network errors and 5xx only.
#[derive(Clone)]
pub struct HttpWxLogin {
    http: reqwest::Client,
    url: String,
    appid: String,
    app_secret: Secret<String>,
    retry: RetryPolicy,
}

/// Only `openid` and the error fields: `session_key` and `unionid` are never read.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

impl HttpWxLogin {
    /// Builds the client; no network call.
    pub fn new(settings: LoginSettings) -> Result<Self, String> {
        let http = wechat_api_client(settings.retry.request_timeout)?;
        Ok(HttpWxLogin {
            http,
            url: format!(
                "{}/sns/jscode2session",
                settings.api_base.trim_end_matches('/')
            ),
            appid: settings.appid,
            app_secret: settings.app_secret,
            retry: settings.retry,
        })
    }

    async fn attempt(&self, code: &LoginCode, timeout: Duration) -> Attempt {
        if timeout.is_zero() {
            return Attempt::Retryable("timed out".into());
        }
        let url = reqwest::Url::parse_with_params(
            &self.url,
            [
                ("appid", self.appid.as_str()),
                ("secret", self.app_secret.expose().as_str()),
                ("js_code", code.as_str()),
                ("grant_type", "authorization_code"),
            ],
        );
        let Ok(url) = url else {
            return Attempt::Done(Err(LoginError::Unavailable(
                "WX_API_BASE is not a URL".into(),
            )));
        };
        let sent = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .timeout(timeout)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            // `without_url`: the URL holds the AppSecret and the code.
            Err(e) => return Attempt::Retryable(transport(e)),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retryable(transport(e)),
        };
        if status.is_server_error() {
            return Attempt::Retryable(format!("HTTP {}", status.as_u16()));
        }
        if !status.is_success() {
            return Attempt::Done(Err(LoginError::Unavailable(format!(
                "HTTP {}",
                status.as_u16()
            ))));
        }
        // WeChat may label the JSON `text/plain`: parse the body whatever its type.
        let Ok(reply) = serde_json::from_slice::<Reply>(&body) else {
            return Attempt::Done(Err(LoginError::Unavailable(
                "the answer is not jscode2session JSON".into(),
            )));
        };
        Attempt::Done(interpret(reply))
    }
}

enum Attempt {
    Done(Result<Openid, LoginError>),
    Retryable(String),
}

fn transport(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else {
        e.without_url().to_string()
    }
}

fn interpret(reply: Reply) -> Result<Openid, LoginError> {
    match reply.errcode.unwrap_or(0) {
        0 => {
            let openid = reply.openid.ok_or_else(|| {
                LoginError::Unavailable("the answer has neither openid nor errcode".into())
            })?;
            Openid::parse(&openid)
                .map_err(|e| LoginError::Unavailable(format!("WeChat's openid is unusable: {e}")))
        }
        errcode @ (40029 | 40163) => Err(LoginError::InvalidCode { errcode }),
        45011 => Err(LoginError::RateLimited),
        40226 => Err(LoginError::RiskyUser),
        errcode => Err(LoginError::Refused {
            errcode,
            errmsg: reply.errmsg.unwrap_or_default().chars().take(120).collect(),
        }),
    }
}

#[async_trait]
impl WxLogin for HttpWxLogin {
    async fn jscode2session(&self, code: &LoginCode) -> Result<Openid, LoginError> {
        let policy = self.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = policy.total_budget.saturating_sub(started.elapsed());
            let reason = match self.attempt(code, policy.request_timeout.min(left)).await {
                Attempt::Done(outcome) => return outcome,
                Attempt::Retryable(reason) => reason,
            };
            let delay = policy.backoff(attempt);
            if attempt >= policy.max_attempts || started.elapsed() + delay >= policy.total_budget {
                return Err(LoginError::Unavailable(format!(
                    "{reason} (after {attempt} attempts)"
                )));
            }
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %reason,
                outcome = "retrying",
                "WeChat jscode2session failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::Router;
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;

    use super::*;

    const APPID: &str = "wxd678efh567hg6787";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const SESSION_KEY: &str = "SESSION-KEY-tiJtvJaNgMFt7Yy0bqV2Ig==";

    /// A fake WeChat: checks appid/secret/grant_type, then answers by code; `flaky-N`
    /// answers 503 N times before succeeding.
    #[derive(Default)]
    struct Fake {
        calls: AtomicU32,
    }

    async fn jscode2session(State(fake): State<Arc<Fake>>, RawQuery(query): RawQuery) -> Response {
        let url = reqwest::Url::parse(&format!("http://fake/?{}", query.unwrap_or_default()));
        let q: std::collections::HashMap<String, String> =
            url.unwrap().query_pairs().into_owned().collect();
        let n = fake.calls.fetch_add(1, Ordering::SeqCst);
        let plain =
            |body: String| (StatusCode::OK, [("content-type", "text/plain")], body).into_response();
        if q.get("appid").map(String::as_str) != Some(APPID)
            || q.get("secret").map(String::as_str) != Some(SECRET)
            || q.get("grant_type").map(String::as_str) != Some("authorization_code")
        {
            return plain(r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#.into());
        }
        let code = q.get("js_code").cloned().unwrap_or_default();
        let errcode = match code.as_str() {
            "bad" => 40029,
            "used" => 40163,
            "busy-user" => 45011,
            "risky" => 40226,
            "other" => 40001,
            "html" => return plain("<html>gateway</html>".into()),
            "teapot" => return StatusCode::IM_A_TEAPOT.into_response(),
            c if c.starts_with("flaky-") => {
                let failures: u32 = c[6..].parse().unwrap();
                if n < failures {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                0
            }
            _ => 0,
        };
        if errcode != 0 {
            return plain(format!(
                r#"{{"errcode":{errcode},"errmsg":"some error, rid: 1"}}"#
            ));
        }
        plain(format!(
            r#"{{"session_key":"{SESSION_KEY}","openid":"o_{code}","unionid":"u_1"}}"#
        ))
    }

    async fn start_fake() -> (String, Arc<Fake>) {
        let state = Arc::new(Fake::default());
        let app = Router::new()
            .route("/sns/jscode2session", get(jscode2session))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, state)
    }

    fn client(base: &str, secret: &str) -> HttpWxLogin {
        HttpWxLogin::new(LoginSettings {
            api_base: base.to_owned(),
            appid: APPID.into(),
            app_secret: Secret::new(secret.into()),
            retry: RetryPolicy {
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                ..LoginSettings::default_retry()
            },
        })
        .unwrap()
    }

    async fn login(c: &HttpWxLogin, code: &str) -> Result<Openid, LoginError> {
        c.jscode2session(&LoginCode::parse(code).unwrap()).await
    }

    #[tokio::test]
    async fn a_code_becomes_an_openid_and_the_session_key_is_never_kept() {
        let (url, fake) = start_fake().await;
        let c = client(&url, SECRET);
        assert_eq!(login(&c, "alice").await.unwrap().as_str(), "o_alice");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // Nothing the client returns or shows mentions the session key.
        let shown = format!("{:?}", login(&c, "alice").await);
        assert!(!shown.contains(SESSION_KEY), "{shown}");
    }

    #[tokio::test]
    async fn errcodes_map_to_the_documented_errors() {
        let (url, fake) = start_fake().await;
        let c = client(&url, SECRET);
        assert_eq!(
            login(&c, "bad").await,
            Err(LoginError::InvalidCode { errcode: 40029 })
        );
        assert_eq!(
            login(&c, "used").await,
            Err(LoginError::InvalidCode { errcode: 40163 })
        );
        assert_eq!(login(&c, "busy-user").await, Err(LoginError::RateLimited));
        assert_eq!(login(&c, "risky").await, Err(LoginError::RiskyUser));
        let e = login(&c, "other").await.unwrap_err();
        assert!(
            matches!(e, LoginError::Refused { errcode: 40001, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("40001"), "{e}");
        // Errcodes are final: one call each, no retry.
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);
        // A wrong secret is WeChat's 40125, reported without the secret.
        let e = login(&client(&url, "wrong-secret"), "alice")
            .await
            .unwrap_err();
        assert!(matches!(e, LoginError::Refused { errcode: 40125, .. }));
        assert!(!e.to_string().contains("wrong-secret"), "{e}");
        // Not JSON, or a 4xx: unavailable, not retried.
        let before = fake.calls.load(Ordering::SeqCst);
        assert!(matches!(
            login(&c, "html").await,
            Err(LoginError::Unavailable(_))
        ));
        assert!(matches!(
            login(&c, "teapot").await,
            Err(LoginError::Unavailable(_))
        ));
        assert_eq!(fake.calls.load(Ordering::SeqCst), before + 2);
    }

    #[tokio::test]
    async fn server_errors_are_retried_within_the_budget() {
        let (url, fake) = start_fake().await;
        let c = client(&url, SECRET);
        assert_eq!(login(&c, "flaky-2").await.unwrap().as_str(), "o_flaky-2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3, "two 503s, then 200");

        let (url, fake) = start_fake().await;
        let e = login(&client(&url, SECRET), "flaky-9").await.unwrap_err();
        assert!(
            matches!(e, LoginError::Unavailable(ref m) if m.contains("503")),
            "{e}"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3, "max_attempts");
    }

    #[tokio::test]
    async fn unreachable_wechat_is_unavailable_without_the_secret_or_code() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(&format!("http://127.0.0.1:{port}"), SECRET);
        let e = login(&c, "secret-looking-code").await.unwrap_err();
        assert!(matches!(e, LoginError::Unavailable(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            !text.contains(SECRET) && !text.contains("secret-looking-code"),
            "{text}"
        );
        assert!(text.contains("3 attempts"), "{text}");
    }

    #[test]
    fn codes_are_checked_and_hidden_from_debug() {
        assert!(LoginCode::parse("").is_err());
        assert!(LoginCode::parse("a b").is_err());
        assert!(LoginCode::parse(&"a".repeat(257)).is_err());
        let c = LoginCode::parse("0a3Xyz-_.").unwrap();
        assert_eq!(format!("{c:?}"), "LoginCode(..)");
    }
}
