//! One attempt to deliver one event to the merchant's `WEBHOOK_URL`, signed per Standard
//! Webhooks and classified the way the spec asks (2xx delivered, 410 gone, anything else
//! failed). It never retries and never touches the store: the dispatcher owns that, with
//! [`super::schedule`] and the [`Attempt`] this returns.

use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use time::OffsetDateTime;

use super::signature::{WebhookError, WebhookSecrets, sign};
use crate::config::WebhookConfig;

const USER_AGENT: &str = concat!("wxpay-orders/", env!("CARGO_PKG_VERSION"), " (webhook)");
/// Longest error text kept: enough for a status line and the start of the receiver's answer,
/// short enough to store on the event item and log.
const MAX_ERROR_CHARS: usize = 200;
/// How much of a failed answer's body is read for the error text.
const MAX_BODY_READ: usize = 1024;

/// How an attempt ended, for the dispatcher's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Any 2xx within the timeout.
    Delivered,
    /// Anything else: another status (3xx included: redirects are not followed), a timeout,
    /// a connection or TLS failure. Retried on the schedule.
    Failed,
    /// 410: the merchant turned this endpoint off. A failure, reported apart so the
    /// dispatcher can stop spending attempts and raise an alarm.
    Gone,
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: AttemptOutcome,
    /// The receiver's status, when it answered in time.
    pub status: Option<u16>,
    /// Why it failed, at most about 200 characters, no secret in it.
    pub error: Option<String>,
    /// The receiver's `Retry-After` in seconds, on a failure ([`super::honour_retry_after`]).
    pub retry_after: Option<Duration>,
    pub elapsed: Duration,
}

/// The merchant's endpoint with its secrets and an HTTP client that follows no redirect.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secrets: WebhookSecrets,
    client: reqwest::Client,
}

impl Webhook {
    /// Builds the client (trusting [`crate::tls::roots`]); no network call.
    pub fn new(config: &WebhookConfig) -> Result<Self, WebhookError> {
        let client = crate::tls::roots()
            .reqwest_builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout.min(config.timeout))
            .timeout(config.timeout)
            // Spec: a 3xx is a failure; following it would also send signed order data to
            // wherever the receiver points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Webhook {
            url: config.url.clone(),
            secrets: config.secrets.clone(),
            client,
        })
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// POSTs `body` (the event's stored JSON, byte for byte) as event `event_id`, signed with
    /// `now` as `webhook-timestamp`.
    pub async fn deliver(&self, event_id: &str, body: &[u8], now: OffsetDateTime) -> Attempt {
        let started = Instant::now();
        let failed = |error: String| Attempt {
            outcome: AttemptOutcome::Failed,
            status: None,
            error: Some(error),
            retry_after: None,
            elapsed: started.elapsed(),
        };
        // Receivers refuse such an id, so sending it would only spend the attempt.
        if event_id.is_empty() || event_id.contains('.') {
            return failed("event id is empty or contains '.', refused as webhook-id".into());
        }
        let Ok(id_header) = HeaderValue::from_str(event_id) else {
            return failed("event id is not a valid header value".into());
        };
        let timestamp = now.unix_timestamp();
        let signature = sign(&self.secrets, event_id, timestamp, body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id_header)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return failed(transport_error(&e)),
        };
        let status = response.status();
        if status.is_success() {
            // The status is the acknowledgement; the body is not read, so a receiver that
            // trickles one cannot turn a delivery into a timeout.
            return Attempt {
                outcome: AttemptOutcome::Delivered,
                status: Some(status.as_u16()),
                error: None,
                retry_after: None,
                elapsed: started.elapsed(),
            };
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (outcome, what) = match status.as_u16() {
            410 => (
                AttemptOutcome::Gone,
                "410 Gone: the receiver disabled this endpoint",
            ),
            300..=399 => (
                AttemptOutcome::Failed,
                "redirects are not followed; point WEBHOOK_URL at the final address",
            ),
            _ => (AttemptOutcome::Failed, ""),
        };
        let snippet = body_start(response).await;
        let mut error = format!("HTTP {}", status.as_u16());
        for part in [what, snippet.as_str()] {
            if !part.is_empty() {
                error.push_str(": ");
                error.push_str(part);
            }
        }
        Attempt {
            outcome,
            status: Some(status.as_u16()),
            error: Some(shorten(&error)),
            retry_after,
            elapsed: started.elapsed(),
        }
    }
}

/// The start of a failed answer's body, as one line; empty when there is none or it does not
/// arrive in time (the status already says what matters).
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_BODY_READ);
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A transport failure in words: the timeout said as such, otherwise the error's chain
/// (reqwest's own text is only "error sending request"), without the URL, whose query
/// string may carry the merchant's own token.
fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    shorten(&text)
}

fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(MAX_ERROR_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;

    use super::*;
    use crate::webhook::{WebhookSecret, verify};

    /// What the local receiver saw.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: HeaderMap,
        body: Bytes,
    }

    #[derive(Clone, Default)]
    struct Receiver {
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Receiver {
        fn record(&self, headers: HeaderMap, body: Bytes) {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Seen { headers, body });
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    async fn ok(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        r.record(headers, body);
        StatusCode::NO_CONTENT
    }

    async fn server_error() -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("retry-after", "120")],
            format!("database\nis down {}", "x".repeat(500)),
        )
            .into_response()
    }

    async fn redirect(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
        r.record(headers, body);
        (StatusCode::FOUND, [("location", "/ok")]).into_response()
    }

    async fn gone() -> StatusCode {
        StatusCode::GONE
    }

    async fn hang() -> StatusCode {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK
    }

    async fn late() -> StatusCode {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        StatusCode::OK
    }

    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/ok", post(ok))
            .route("/error", post(server_error))
            .route("/redirect", post(redirect))
            .route("/gone", post(gone))
            .route("/hang", post(hang))
            .route("/late", post(late))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"order.paid","data":{"out_trade_no":"A1"}}"#;

    fn webhook(addr: SocketAddr, path: &str) -> Webhook {
        Webhook::new(&WebhookConfig {
            url: reqwest::Url::parse(&format!("http://{addr}{path}")).unwrap(),
            secrets: WebhookSecrets::parse(SECRET).unwrap(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_with_headers_that_verify_on_the_exact_body() {
        let (receiver, addr) = start().await;
        let at = now();
        let attempt = webhook(addr, "/ok").deliver("evt_1", BODY, at).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Delivered, "{attempt:?}");
        assert_eq!(attempt.status, Some(204));
        assert_eq!(attempt.error, None);

        let seen = receiver.seen();
        assert_eq!(seen.len(), 1);
        let h = &seen[0].headers;
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert_eq!(get("webhook-id"), "evt_1");
        assert_eq!(get("webhook-timestamp"), at.unix_timestamp().to_string());
        assert!(get("webhook-signature").starts_with("v1,"));
        assert_eq!(get("content-type"), "application/json");
        assert!(get("user-agent").starts_with("wxpay-orders/"));
        assert_eq!(&seen[0].body[..], BODY);
        let secrets = WebhookSecrets::parse(SECRET).unwrap();
        verify(
            &secrets,
            get("webhook-id"),
            get("webhook-timestamp"),
            get("webhook-signature"),
            &seen[0].body,
            at.unix_timestamp(),
        )
        .expect("the receiver's check accepts what was sent");
        let other = WebhookSecrets::one(WebhookSecret::generate());
        assert!(
            verify(
                &other,
                get("webhook-id"),
                get("webhook-timestamp"),
                get("webhook-signature"),
                &seen[0].body,
                at.unix_timestamp(),
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_500_fails_with_a_short_one_line_error_and_its_retry_after() {
        let (_, addr) = start().await;
        let attempt = webhook(addr, "/error").deliver("evt_1", BODY, now()).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Failed);
        assert_eq!(attempt.status, Some(500));
        assert_eq!(attempt.retry_after, Some(Duration::from_secs(120)));
        let error = attempt.error.unwrap();
        assert!(error.starts_with("HTTP 500: database is down"), "{error}");
        assert!(!error.contains('\n'));
        assert!(error.chars().count() <= MAX_ERROR_CHARS + 1, "{error}");
        assert!(!error.contains("MfKQ9r8G"));
    }

    #[tokio::test]
    async fn a_redirect_is_a_failure_and_is_not_followed() {
        let (receiver, addr) = start().await;
        let attempt = webhook(addr, "/redirect")
            .deliver("evt_1", BODY, now())
            .await;
        assert_eq!(attempt.outcome, AttemptOutcome::Failed);
        assert_eq!(attempt.status, Some(302));
        assert!(attempt.error.unwrap().contains("redirect"));
        // Only the redirecting route saw a request: /ok was never called.
        assert_eq!(receiver.seen().len(), 1);
    }

    #[tokio::test]
    async fn a_410_is_gone() {
        let (_, addr) = start().await;
        let attempt = webhook(addr, "/gone").deliver("evt_1", BODY, now()).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Gone);
        assert_eq!(attempt.status, Some(410));
        assert!(attempt.error.unwrap().contains("Gone"));
    }

    #[tokio::test]
    async fn a_hanging_receiver_times_out() {
        let (_, addr) = start().await;
        let attempt = webhook(addr, "/hang").deliver("evt_1", BODY, now()).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Failed);
        assert_eq!(attempt.status, None);
        assert_eq!(attempt.error.as_deref(), Some("timed out"));
        assert!(attempt.elapsed >= Duration::from_millis(900), "{attempt:?}");
        assert!(attempt.elapsed < Duration::from_secs(5), "{attempt:?}");
    }

    #[tokio::test]
    async fn a_2xx_after_the_timeout_is_a_failure() {
        let (_, addr) = start().await;
        let attempt = webhook(addr, "/late").deliver("evt_1", BODY, now()).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Failed);
        assert_eq!(attempt.status, None);
        assert_eq!(attempt.error.as_deref(), Some("timed out"));
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let attempt = webhook(addr, "/ok").deliver("evt_1", BODY, now()).await;
        assert_eq!(attempt.outcome, AttemptOutcome::Failed);
        assert_eq!(attempt.status, None);
        let error = attempt.error.unwrap();
        assert!(error.starts_with("cannot connect"), "{error}");
    }

    #[tokio::test]
    async fn an_unusable_event_id_is_not_sent() {
        let (receiver, addr) = start().await;
        let hook = webhook(addr, "/ok");
        for id in ["", "evt.1", "evt\n1"] {
            let attempt = hook.deliver(id, BODY, now()).await;
            assert_eq!(attempt.outcome, AttemptOutcome::Failed, "{id:?}");
        }
        assert!(receiver.seen().is_empty());
    }

    #[tokio::test]
    async fn debug_shows_no_secret() {
        let hook = webhook(SocketAddr::from(([127, 0, 0, 1], 9)), "/ok");
        let shown = format!("{hook:?}");
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
    }
}
