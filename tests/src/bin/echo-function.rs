//! echo-function: a function binary whose handler reports exactly what it was given, so the
//! runtime_* tests can drive `shared::runtime::serve` over all three platforms (Lambda runtime
//! API, SCF runtime API, plain HTTP) and check the event mapping from the outside.
//!
//! `POST /binary` answers with the raw request body (binary response path); any other request
//! gets a JSON description of itself with status `x-echo-status` (default 200) and `x-echo: yes`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use shared::http::{
    AuthorizerClaims, Handler, InvocationDeadline, InvocationId, Request, Response,
};

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, request: Request) -> Response {
        if request.uri().path() == "/binary" {
            return shared::http::response(
                200,
                request.body().clone(),
                Some("application/octet-stream"),
            );
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in request.headers() {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let extensions = request.extensions();
        let description = serde_json::json!({
            "method": request.method().as_str(),
            "uri": request.uri().to_string(),
            "path": request.uri().path(),
            "query": request.uri().query(),
            "headers": headers,
            "body_base64": STANDARD.encode(request.body()),
            "claims": extensions.get::<AuthorizerClaims>().map(|c| &c.0),
            "deadline_ms": extensions
                .get::<InvocationDeadline>()
                .map(|d| d.0.unix_timestamp_nanos() / 1_000_000),
            "invocation_id": extensions.get::<InvocationId>().map(|i| &i.0),
        });
        let status = request
            .headers()
            .get("x-echo-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(200);
        let mut response = shared::http::json(status, &description);
        response
            .headers_mut()
            .insert("x-echo", http::HeaderValue::from_static("yes"));
        response
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    match shared::runtime::serve(Arc::new(Echo)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-function: {e}");
            ExitCode::FAILURE
        }
    }
}
