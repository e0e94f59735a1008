//! The HTTP edge shared by every function: one request/response type whatever the platform
//! (Lambda, SCF, plain HTTP), the `Handler` each function implements, and the error table of
//! DESIGN.md section 3 mapped to responses in exactly one place.
//!
//! Runtime adapters (`crate::runtime`) turn platform events into a [`Request`] whose body is
//! the raw bytes as received (base64 bodies decoded), so WeChat Pay signatures verify, and
//! attach what the platform knows as request extensions ([`AuthorizerClaims`],
//! [`InvocationDeadline`]).

use std::collections::HashMap;

pub mod bills;
pub mod identity;
pub mod merchant;
pub mod mp_push;
pub mod payment_callback;
pub mod place_order;
pub mod query_order;
pub mod session;

use async_trait::async_trait;
pub use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;

/// A request as the function sees it: path without any API Gateway stage prefix, headers,
/// query string in the URI, and the raw body.
pub type Request = http::Request<Bytes>;
pub type Response = http::Response<Bytes>;

/// Claims an API Gateway authorizer attached to the request (HTTP API JWT claims, a Lambda
/// authorizer's context, REST API authorizer claims), flattened to strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerClaims(pub HashMap<String, String>);

/// When the platform will cut the invocation off (Lambda's and SCF's deadline). Absent in
/// plain HTTP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationDeadline(pub OffsetDateTime);

/// The platform's id of this invocation (Lambda or SCF request id), for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationId(pub String);

/// What every function implements; the runtime adapters call it once per request.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, request: Request) -> Response;
}

/// An error as the client sees it: `{"code": "UPPER_SNAKE", "message": "human text"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Extra headers (`Retry-After` on 409 `IDEMPOTENCY_KEY_IN_USE`).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn not_found() -> Self {
        ApiError::new(404, "NOT_FOUND", "no such route")
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this route",
        )
    }

    /// Logs the refusal (`outcome = rejected:<code>`; error level for 5xx) and answers it.
    pub fn logged(self, function: &'static str) -> Response {
        let outcome = format!("rejected:{}", self.code.to_ascii_lowercase());
        if self.status >= 500 {
            tracing::error!(function, code = self.code, error = %self.message, %outcome, "request failed");
        } else {
            tracing::info!(function, code = self.code, error = %self.message, %outcome, "request refused");
        }
        self.into_response()
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            code: self.code,
            message: &self.message,
        })
        .unwrap_or_default();
        let mut r = response(self.status, Bytes::from(body), Some("application/json"));
        for (name, value) in self.headers {
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    }
}

/// A response with a body and, when there is one, its content type.
pub fn response(status: u16, body: Bytes, content_type: Option<&'static str>) -> Response {
    let mut r = http::Response::new(body);
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
    }
    r
}

/// A JSON response; serialisation of our own types cannot fail, but if it did the client
/// gets a 500 rather than a panic.
pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, Bytes::from(body), Some("application/json")),
        Err(_) => ApiError::new(500, "INTERNAL", "response could not be encoded").into_response(),
    }
}

/// The `Idempotency-Key` header, parsed (400 `IDEMPOTENCY_KEY_REQUIRED` when absent or
/// malformed).
pub fn idempotency_key(request: &Request) -> Result<crate::domain::IdempotencyKey, ApiError> {
    let refused = |message: &str| ApiError::new(400, "IDEMPOTENCY_KEY_REQUIRED", message);
    let value = request
        .headers()
        .get("idempotency-key")
        .ok_or_else(|| refused("the Idempotency-Key header is required"))?;
    value
        .to_str()
        .ok()
        .and_then(|s| crate::domain::IdempotencyKey::parse(s).ok())
        .ok_or_else(|| refused("Idempotency-Key must be 1-64 characters of [A-Za-z0-9_-]"))
}

/// `204 No Content`.
pub fn no_content() -> Response {
    response(204, Bytes::new(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_the_documented_body_and_headers() {
        let r = ApiError::new(409, "IDEMPOTENCY_KEY_IN_USE", "still processing")
            .with_header("retry-after", "2")
            .into_response();
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["retry-after"], "2");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": "IDEMPOTENCY_KEY_IN_USE", "message": "still processing"})
        );
    }

    #[test]
    fn no_content_is_empty() {
        let r = no_content();
        assert_eq!(r.status(), 204);
        assert!(r.body().is_empty());
        assert!(r.headers().get("content-type").is_none());
    }
}
