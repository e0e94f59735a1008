//! Process wiring shared by every function binary: one [`Handler`], three ways to be invoked.
//! [`serve`] picks the platform from the environment as DESIGN.md section 7 says, so the same
//! binary runs on AWS Lambda, on a Tencent SCF custom runtime and as a plain HTTP server.
//!
//! Whatever the platform, the handler sees the same [`Request`]: an origin-form URI
//! (`/path?query`, API Gateway stage prefix removed, query string as received), the headers,
//! and the body as the raw bytes the client sent (base64 transport encodings undone), plus
//! the [`AuthorizerClaims`], [`InvocationDeadline`] and [`InvocationId`] extensions where the
//! platform provides them.
//!
//! | environment | mode | entry point |
//! |---|---|---|
//! | `AWS_LAMBDA_RUNTIME_API` set | Lambda runtime API (lambda_http) | [`serve_lambda`] |
//! | `SCF_RUNTIME_API` set (+ `SCF_RUNTIME_API_PORT`) | SCF custom runtime | [`serve_scf`] |
//! | neither | HTTP/1 on `0.0.0.0:$PORT` (default 9000) | [`serve_http`] |
//!
//! Plain HTTP binds `0.0.0.0` rather than loopback because an SCF web function must listen on
//! `0.0.0.0:9000`; a local run on `0.0.0.0` is harmless. `PORT=0` lets the OS pick a port (the
//! `ready` log line names it).
//!
//! Cold start is measured from process start to the first runtime-API call or the listening
//! socket, so no mode makes a network call before that point, and each logs exactly one
//! `ready` line (field `mode`) at that moment.
//!
//! [`Handler`]: crate::http::Handler
//! [`Request`]: crate::http::Request
//! [`AuthorizerClaims`]: crate::http::AuthorizerClaims
//! [`InvocationDeadline`]: crate::http::InvocationDeadline
//! [`InvocationId`]: crate::http::InvocationId

pub mod http_server;
pub mod lambda;
pub mod scf;
pub mod schedule;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::Uri;
use serde_json::Value;

use crate::http::Handler;

pub use http_server::{MAX_BODY_BYTES, serve_http, serve_http_until, shutdown_signal};
pub use lambda::serve_lambda;
pub use scf::{serve_scf, serve_scf_events};
pub use schedule::{JobFailed, ScheduledJob, StreamRecord, Trigger, serve_schedule};

/// Port of the plain HTTP mode when `PORT` is unset; also what an SCF web function must use.
pub const DEFAULT_PORT: u16 = 9000;

/// Why the runtime could not start or had to stop. Each message names the variable or the
/// peer involved, so the one line a failed start-up logs is enough to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("environment variable {name} is required ({why})")]
    MissingEnv {
        name: &'static str,
        why: &'static str,
    },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    InvalidEnv {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("SCF runtime API unreachable at {url}: {reason}")]
    ScfUnreachable { url: String, reason: String },
    #[error("SCF runtime API at {url} answered {status}: {body}")]
    ScfRejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Lambda runtime stopped: {0}")]
    Lambda(String),
    /// A scheduled job run once locally failed (its summary is printed).
    #[error("the run failed")]
    JobFailed,
}

/// An event that cannot be turned into a [`crate::http::Request`]. The runtime loops report it
/// to the platform as an invocation error and carry on with the next event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct EventError(pub String);

impl EventError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EventError(message.into())
    }
}

/// Which platform this process serves, as decided from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    Lambda,
    /// Base URL of the SCF runtime API, e.g. `http://9.0.0.1:9001`.
    Scf {
        runtime_api_base: String,
    },
    Http {
        port: u16,
    },
}

impl Platform {
    /// Lambda and SCF hand an instance one event at a time; plain HTTP takes connections
    /// concurrently.
    pub fn is_one_event_at_a_time(&self) -> bool {
        !matches!(self, Platform::Http { .. })
    }

    /// Reads the process environment; see [`Platform::from_vars`].
    pub fn from_env() -> Result<Platform, RuntimeError> {
        Platform::from_vars(|name| std::env::var(name).ok())
    }

    /// The decision of DESIGN.md section 7 over any variable source (tests pass a map; the
    /// process environment is not safely mutable in-test). Empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Platform, RuntimeError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if var("AWS_LAMBDA_RUNTIME_API").is_some() {
            return Ok(Platform::Lambda);
        }
        if let Some(host) = var("SCF_RUNTIME_API") {
            return scf_base(host.trim(), var("SCF_RUNTIME_API_PORT").as_deref())
                .map(|runtime_api_base| Platform::Scf { runtime_api_base });
        }
        let port = match var("PORT") {
            None => DEFAULT_PORT,
            Some(value) => value
                .trim()
                .parse::<u16>()
                .map_err(|e| RuntimeError::InvalidEnv {
                    name: "PORT",
                    value: value.clone(),
                    reason: format!("not a TCP port number 0-65535 ({e})"),
                })?,
        };
        Ok(Platform::Http { port })
    }
}

/// `SCF_RUNTIME_API` is a host (SCF sets an IP) and `SCF_RUNTIME_API_PORT` its port; a host
/// that already carries a port or a scheme is accepted as-is so local fakes are easy to point at.
fn scf_base(host: &str, port: Option<&str>) -> Result<String, RuntimeError> {
    let invalid = |reason: &str| RuntimeError::InvalidEnv {
        name: "SCF_RUNTIME_API",
        value: host.to_string(),
        reason: reason.to_string(),
    };
    let base = if host.starts_with("http://") {
        host.trim_end_matches('/').to_string()
    } else if let Some(port) = port {
        let port = port.trim();
        port.parse::<u16>().map_err(|e| RuntimeError::InvalidEnv {
            name: "SCF_RUNTIME_API_PORT",
            value: port.to_string(),
            reason: format!("not a TCP port number ({e})"),
        })?;
        format!("http://{host}:{port}")
    } else if host.contains(':') {
        format!("http://{host}")
    } else {
        return Err(RuntimeError::MissingEnv {
            name: "SCF_RUNTIME_API_PORT",
            why: "the port of the SCF runtime API named by SCF_RUNTIME_API",
        });
    };
    match base.parse::<Uri>() {
        Ok(uri) if uri.host().is_some() => Ok(base),
        _ => Err(invalid(
            "not a host[:port] the runtime API can be reached at",
        )),
    }
}

/// Serves `handler` on the platform the environment names (see the module docs). Returns only
/// on a start-up error or, in plain HTTP mode, after a graceful shutdown (SIGTERM / ctrl-c).
pub async fn serve(handler: Arc<dyn Handler>) -> Result<(), RuntimeError> {
    match Platform::from_env()? {
        Platform::Lambda => serve_lambda(handler).await,
        Platform::Scf { runtime_api_base } => serve_scf(handler, &runtime_api_base).await,
        Platform::Http { port } => {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RuntimeError::Bind { addr, source })?;
            serve_http(handler, listener).await
        }
    }
}

/// Strips an API Gateway stage prefix: `/prod/orders` with stage `prod` becomes `/orders`.
/// HTTP APIs put a named stage in `rawPath` and SCF may put it in `path`; the `$default`
/// stage never appears. A path that merely starts with the same letters (`/products`) is kept.
pub(crate) fn strip_stage<'a>(path: &'a str, stage: Option<&str>) -> &'a str {
    let Some(stage) = stage
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "$default")
    else {
        return path;
    };
    match path.strip_prefix('/').and_then(|p| p.strip_prefix(stage)) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Builds the origin-form URI our handlers see. Platforms hand over paths that may be decoded
/// (REST APIs decode `%20`) so bytes a URI cannot carry are percent-encoded rather than
/// rejected; an existing `%XX` is kept, so an already-encoded path stays as it was.
pub(crate) fn origin_form(path: &str, query: Option<&str>) -> Result<Uri, EventError> {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 2);
    if !path.starts_with('/') {
        out.push('/');
    }
    encode_into(&mut out, path, |b| {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
    });
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        encode_into(&mut out, q, |b| {
            b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
        });
    }
    out.parse::<Uri>()
        .map_err(|e| EventError::new(format!("path {path:?} is not usable as a URI: {e}")))
}

fn encode_into(out: &mut String, s: &str, keep: impl Fn(u8) -> bool) {
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Percent-encodes one query-string key or value (RFC 3986 unreserved characters kept).
pub(crate) fn encode_query_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(&mut out, s, |b| {
        b.is_ascii_alphanumeric() || b"-._~".contains(&b)
    });
    out
}

/// An authorizer or event value as the string our claim map holds: strings as they are,
/// numbers and booleans in JSON notation, arrays and objects as compact JSON, null as absent.
pub(crate) fn value_to_string(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            Some(value.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn platform(vars: &[(&str, &str)]) -> Result<Platform, RuntimeError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Platform::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn lambda_wins_then_scf_then_http() {
        assert_eq!(
            platform(&[
                ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
                ("SCF_RUNTIME_API", "9.0.0.1"),
                ("SCF_RUNTIME_API_PORT", "9001"),
            ])
            .unwrap(),
            Platform::Lambda
        );
        assert_eq!(
            platform(&[
                ("SCF_RUNTIME_API", "9.0.0.1"),
                ("SCF_RUNTIME_API_PORT", "9001")
            ])
            .unwrap(),
            Platform::Scf {
                runtime_api_base: "http://9.0.0.1:9001".into()
            }
        );
        assert_eq!(platform(&[]).unwrap(), Platform::Http { port: 9000 });
        assert_eq!(
            platform(&[("PORT", "8080")]).unwrap(),
            Platform::Http { port: 8080 }
        );
        assert_eq!(
            platform(&[("AWS_LAMBDA_RUNTIME_API", ""), ("PORT", "0")]).unwrap(),
            Platform::Http { port: 0 }
        );
    }

    #[test]
    fn only_plain_http_takes_requests_concurrently() {
        let one_at_a_time =
            |vars: &[(&str, &str)]| platform(vars).unwrap().is_one_event_at_a_time();
        assert!(one_at_a_time(&[(
            "AWS_LAMBDA_RUNTIME_API",
            "127.0.0.1:9001"
        )]));
        assert!(one_at_a_time(&[
            ("SCF_RUNTIME_API", "9.0.0.1"),
            ("SCF_RUNTIME_API_PORT", "9001")
        ]));
        assert!(!one_at_a_time(&[("PORT", "8080")]));
    }

    #[test]
    fn bad_variables_are_named_in_the_error() {
        let e = platform(&[("PORT", "http")]).unwrap_err().to_string();
        assert!(e.contains("PORT=\"http\""), "{e}");
        let e = platform(&[("PORT", "70000")]).unwrap_err().to_string();
        assert!(e.contains("PORT"), "{e}");
        let e = platform(&[("SCF_RUNTIME_API", "9.0.0.1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SCF_RUNTIME_API_PORT"), "{e}");
        let e = platform(&[
            ("SCF_RUNTIME_API", "9.0.0.1"),
            ("SCF_RUNTIME_API_PORT", "x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("SCF_RUNTIME_API_PORT=\"x\""), "{e}");
        let e = platform(&[
            ("SCF_RUNTIME_API", "bad host"),
            ("SCF_RUNTIME_API_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("SCF_RUNTIME_API="), "{e}");
    }

    #[test]
    fn scf_host_with_port_or_scheme_is_taken_as_is() {
        assert_eq!(
            platform(&[("SCF_RUNTIME_API", "127.0.0.1:4000")]).unwrap(),
            Platform::Scf {
                runtime_api_base: "http://127.0.0.1:4000".into()
            }
        );
        assert_eq!(
            platform(&[("SCF_RUNTIME_API", "http://127.0.0.1:4000/")]).unwrap(),
            Platform::Scf {
                runtime_api_base: "http://127.0.0.1:4000".into()
            }
        );
    }

    #[test]
    fn stage_prefix_is_stripped_only_as_a_whole_segment() {
        assert_eq!(strip_stage("/prod/orders", Some("prod")), "/orders");
        assert_eq!(strip_stage("/prod", Some("prod")), "/");
        assert_eq!(strip_stage("/products", Some("prod")), "/products");
        assert_eq!(strip_stage("/orders", Some("prod")), "/orders");
        assert_eq!(strip_stage("/$default/x", Some("$default")), "/$default/x");
        assert_eq!(strip_stage("/prod/x", None), "/prod/x");
        assert_eq!(strip_stage("/prod/x", Some("")), "/prod/x");
    }

    #[test]
    fn origin_form_encodes_what_a_uri_cannot_carry() {
        assert_eq!(
            origin_form("/orders/a b", Some("x=1&y=%2F")).unwrap(),
            "/orders/a%20b?x=1&y=%2F"
        );
        assert_eq!(origin_form("orders", None).unwrap(), "/orders");
        assert_eq!(origin_form("/a?b#c", Some("")).unwrap(), "/a%3Fb%23c");
        assert_eq!(origin_form("/订单", None).unwrap(), "/%E8%AE%A2%E5%8D%95");
        assert_eq!(origin_form("/x", Some("q=a b")).unwrap(), "/x?q=a%20b");
    }

    #[test]
    fn values_flatten_to_strings() {
        assert_eq!(value_to_string(&Value::Null), None);
        assert_eq!(
            value_to_string(&serde_json::json!("o-1")).as_deref(),
            Some("o-1")
        );
        assert_eq!(value_to_string(&serde_json::json!(3)).as_deref(), Some("3"));
        assert_eq!(
            value_to_string(&serde_json::json!(true)).as_deref(),
            Some("true")
        );
        assert_eq!(
            value_to_string(&serde_json::json!(["a", "b"])).as_deref(),
            Some(r#"["a","b"]"#)
        );
    }
}
