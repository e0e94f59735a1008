//! Tencent SCF custom runtime: the `bootstrap` loop (init/ready once, then
//! invocation/next -> response | error) and the mapping of SCF's API Gateway trigger event to
//! our [`Request`] and of our [`Response`] to the API Gateway integration response.
//!
//! No maintained crate exists for this protocol, so the loop is ours. It never stops on a bad
//! event: anything that cannot be parsed or handled is answered on invocation/error and the
//! loop asks for the next one. [`serve_scf_events`] is the event-agnostic core (the timer
//! sweeper plugs in there); [`serve_scf`] is the HTTP handler on top of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::Instrument;

use super::{
    EventError, RuntimeError, encode_query_component, origin_form, strip_stage, value_to_string,
};
use crate::http::{Handler, InvocationDeadline, InvocationId, Request, Response};

/// Consecutive failed invocation/next polls tolerated before giving up. The runtime API is
/// local to the instance, so a run of failures means the instance is going away.
const MAX_POLL_FAILURES: u32 = 5;
/// Bound on posting a result: the runtime API answers at once, and a hung post would wedge
/// the instance. The next-event poll itself is never timed out (SCF's docs require that).
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// One invocation as the runtime API delivered it: the raw event and what the headers said.
#[derive(Debug, Clone)]
pub struct ScfInvocation {
    /// `request_id` response header of invocation/next.
    pub request_id: Option<String>,
    /// Now + `time_limit_in_ms`, taken when the event arrived.
    pub deadline: Option<OffsetDateTime>,
    /// `memory_limit_in_mb` response header.
    pub memory_limit_mb: Option<u32>,
    /// The trigger event, as received (JSON for every SCF trigger).
    pub event: Bytes,
}

/// An SCF event after classification. API Gateway and function-URL events become a
/// [`Request`]; anything else (timer, COS, CMQ...) is handed on as JSON.
#[derive(Debug)]
pub enum ScfEvent {
    Http(Box<Request>),
    Other(Value),
}

impl ScfEvent {
    /// The timer trigger's event (`{"Type": "Timer", "TriggerName", "Time", "Message"}`); the
    /// `Type` spelling varies between SCF docs, so compare case-insensitively.
    pub fn is_timer(&self) -> bool {
        matches!(self, ScfEvent::Other(event) if is_timer_event(event))
    }
}

/// Whether a raw SCF event is a timer trigger's (`Type` compared case-insensitively).
pub fn is_timer_event(event: &Value) -> bool {
    event.as_object().is_some_and(|map| {
        map.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("type")
                && v.as_str().is_some_and(|t| t.eq_ignore_ascii_case("timer"))
        })
    })
}

/// Serves an HTTP `handler` on the SCF runtime API at `runtime_api_base`
/// (`http://host:port`). Non-HTTP events are answered with an invocation error.
pub async fn serve_scf(
    handler: Arc<dyn Handler>,
    runtime_api_base: &str,
) -> Result<(), RuntimeError> {
    serve_scf_events(runtime_api_base, move |invocation| {
        let handler = Arc::clone(&handler);
        async move { handle_http_invocation(handler.as_ref(), invocation).await }
    })
    .await
}

/// Parses the invocation as an HTTP event, runs the handler, and encodes the integration
/// response; `Err` is the message for invocation/error.
pub async fn handle_http_invocation(
    handler: &dyn Handler,
    invocation: ScfInvocation,
) -> Result<Bytes, String> {
    match parse_event(&invocation.event).map_err(|e| e.to_string())? {
        ScfEvent::Http(request) => {
            let mut request = *request;
            attach_invocation(&mut request, &invocation);
            let response = handler.handle(request).await;
            Ok(integration_response(response))
        }
        ScfEvent::Other(_) => {
            Err("unsupported event: this function serves API Gateway (HTTP) triggers only".into())
        }
    }
}

/// Adds the invocation id and deadline the runtime API announced. The runtime's `request_id`
/// header wins over the event's `requestContext.requestId`, which SCF does not always send.
pub fn attach_invocation(request: &mut Request, invocation: &ScfInvocation) {
    if let Some(id) = &invocation.request_id {
        request.extensions_mut().insert(InvocationId(id.clone()));
    }
    if let Some(deadline) = invocation.deadline {
        request
            .extensions_mut()
            .insert(InvocationDeadline(deadline));
    }
}

/// The runtime loop, for any event: `f` gets each invocation and returns the response body
/// for invocation/response or an error message for invocation/error. Returns only when the
/// runtime API cannot be reached (at init, or for several polls in a row).
pub async fn serve_scf_events<F, Fut>(runtime_api_base: &str, mut f: F) -> Result<(), RuntimeError>
where
    F: FnMut(ScfInvocation) -> Fut,
    Fut: Future<Output = Result<Bytes, String>>,
{
    let api = RuntimeApi::new(runtime_api_base)?;
    tracing::info!(mode = "scf", runtime_api = %api.base, "ready");
    // SCF rejects an empty init/ready body; one space is what its own runtimes send.
    api.post(&api.ready, Bytes::from_static(b" "))
        .await
        .map_err(|reason| RuntimeError::ScfUnreachable {
            url: api.ready.to_string(),
            reason,
        })
        .and_then(|(status, body)| check_status(&api.ready, status, body))?;

    let mut failures = 0u32;
    loop {
        let invocation = match api.next().await {
            Ok(invocation) => {
                failures = 0;
                invocation
            }
            Err(reason) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(RuntimeError::ScfUnreachable {
                        url: api.next.to_string(),
                        reason,
                    });
                }
                tracing::warn!(%reason, failures, "invocation/next failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures))).await;
                continue;
            }
        };
        let request_id = invocation.request_id.clone().unwrap_or_default();
        let span = tracing::info_span!("invocation", request_id = %request_id);
        let result = f(invocation).instrument(span.clone()).await;
        api.post_result(result).instrument(span).await;
    }
}

/// hyper's client errors say "client error (Connect)" at the top and the useful part
/// ("Connection refused") in their sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn check_status(url: &Uri, status: u16, body: Bytes) -> Result<(), RuntimeError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(RuntimeError::ScfRejected {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A plain-HTTP client for the runtime API. hyper rather than reqwest: no TLS configuration
/// (and no certificate-store load) on the cold-start path, and pooled keep-alive.
struct RuntimeApi {
    base: String,
    ready: Uri,
    next: Uri,
    response: Uri,
    error: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl RuntimeApi {
    fn new(base: &str) -> Result<Self, RuntimeError> {
        let base = base.trim_end_matches('/').to_string();
        let uri = |path: &str| {
            format!("{base}{path}")
                .parse::<Uri>()
                .map_err(|e| RuntimeError::InvalidEnv {
                    name: "SCF_RUNTIME_API",
                    value: base.clone(),
                    reason: format!("not a base URL: {e}"),
                })
        };
        Ok(RuntimeApi {
            ready: uri("/runtime/init/ready")?,
            next: uri("/runtime/invocation/next")?,
            response: uri("/runtime/invocation/response")?,
            error: uri("/runtime/invocation/error")?,
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
        })
    }

    async fn next(&self) -> Result<ScfInvocation, String> {
        let request = http::Request::get(self.next.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let arrived = OffsetDateTime::now_utc();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !parts.status.is_success() {
            return Err(format!(
                "status {}: {}",
                parts.status,
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(invocation_from(&parts.headers, body, arrived))
    }

    /// Posts a handler's outcome; a rejected or failed post is logged, never fatal, since the
    /// next poll is the only way to learn whether the instance is still wanted.
    async fn post_result(&self, result: Result<Bytes, String>) {
        let (url, body) = match result {
            Ok(body) => (&self.response, body),
            Err(message) => {
                tracing::warn!(error = %message, "invocation failed");
                (&self.error, Bytes::from(message))
            }
        };
        match self.post(url, body).await {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok((status, body)) => tracing::error!(
                %url,
                status,
                body = %String::from_utf8_lossy(&body),
                "the runtime API rejected the result"
            ),
            Err(reason) => tracing::error!(%url, %reason, "could not post the result"),
        }
    }

    async fn post(&self, url: &Uri, body: Bytes) -> Result<(u16, Bytes), String> {
        let request = http::Request::post(url.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(POST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {POST_TIMEOUT:?}"))?
    }
}

/// Reads the invocation headers (`request_id`, `time_limit_in_ms`, `memory_limit_in_mb`);
/// a missing or garbled header only loses that piece of context, never the event.
pub fn invocation_from(
    headers: &HeaderMap,
    event: Bytes,
    arrived: OffsetDateTime,
) -> ScfInvocation {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let deadline = header("time_limit_in_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| arrived.checked_add(time::Duration::milliseconds(ms)));
    ScfInvocation {
        request_id: header("request_id").map(str::to_owned),
        deadline,
        memory_limit_mb: header("memory_limit_in_mb").and_then(|m| m.parse().ok()),
        event,
    }
}

/// Classifies and, for HTTP events, maps an SCF event. An event is HTTP when it carries an
/// `httpMethod` (API Gateway trigger and function URL both do); a body that is not a JSON
/// value at all, or an HTTP event that cannot be mapped, is an error.
pub fn parse_event(event: &[u8]) -> Result<ScfEvent, EventError> {
    let value: Value = serde_json::from_slice(event)
        .map_err(|e| EventError::new(format!("event is not JSON: {e}")))?;
    let is_http = value.as_object().is_some_and(|map| {
        map.get("httpMethod").is_some_and(Value::is_string)
            || map
                .get("requestContext")
                .and_then(|c| c.get("httpMethod"))
                .is_some_and(Value::is_string)
    });
    if is_http {
        api_gateway_request(&value).map(|r| ScfEvent::Http(Box::new(r)))
    } else {
        Ok(ScfEvent::Other(value))
    }
}

/// Maps SCF's API Gateway trigger event (or function-URL event, the same shape without
/// `requestContext`) to a [`Request`]:
/// method from `httpMethod` (else `requestContext.httpMethod`); path from `path` with a
/// leading `/{requestContext.stage}` segment removed; query rebuilt from `queryString`
/// (keys sorted, repeated values from arrays); headers from `headers` (array values become
/// repeated headers); body from `body`, base64-decoded when `isBase64Encoded` is true.
pub fn api_gateway_request(event: &Value) -> Result<Request, EventError> {
    let map = event
        .as_object()
        .ok_or_else(|| EventError::new("event is not a JSON object"))?;
    let context = map.get("requestContext").and_then(Value::as_object);
    let context_str = |key: &str| context.and_then(|c| c.get(key)).and_then(Value::as_str);

    let method = map
        .get("httpMethod")
        .and_then(Value::as_str)
        .or_else(|| context_str("httpMethod"))
        .ok_or_else(|| EventError::new("httpMethod is missing"))?;
    let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| EventError::new(format!("httpMethod {method:?} is not an HTTP method")))?;

    let raw_path = match map.get("path") {
        Some(Value::String(p)) => p.as_str(),
        None | Some(Value::Null) => "/",
        Some(other) => return Err(EventError::new(format!("path is not a string: {other}"))),
    };
    let (raw_path, inline_query) = match raw_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw_path, None),
    };
    let path = strip_stage(raw_path, context_str("stage"));
    let query = match map.get("queryString") {
        None | Some(Value::Null) => inline_query.map(str::to_owned),
        Some(Value::Object(q)) if q.is_empty() => inline_query.map(str::to_owned),
        Some(Value::Object(q)) => Some(encode_query(q)?),
        Some(other) => {
            return Err(EventError::new(format!(
                "queryString is not an object: {other}"
            )));
        }
    };
    let uri = origin_form(path, query.as_deref())?;

    let headers = match map.get("headers") {
        None | Some(Value::Null) => HeaderMap::new(),
        Some(Value::Object(h)) => header_map(h)?,
        Some(other) => {
            return Err(EventError::new(format!(
                "headers is not an object: {other}"
            )));
        }
    };

    let base64 = match map.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => {
            return Err(EventError::new(format!(
                "isBase64Encoded is not a boolean: {other}"
            )));
        }
    };
    let body = match map.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if base64 => STANDARD
            .decode(s.trim())
            .map(Bytes::from)
            .map_err(|e| EventError::new(format!("body is not valid base64: {e}")))?,
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => return Err(EventError::new(format!("body is not a string: {other}"))),
    };

    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if let Some(id) = context_str("requestId").filter(|id| !id.is_empty()) {
        request
            .extensions_mut()
            .insert(InvocationId(id.to_string()));
    }
    Ok(request)
}

fn encode_query(query: &Map<String, Value>) -> Result<String, EventError> {
    let mut pairs = Vec::new();
    for (key, value) in query {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let key = encode_query_component(key);
            match v {
                // `?flag` arrives as an empty or null value; keep the bare key.
                Value::Null => pairs.push(key),
                Value::String(s) if s.is_empty() => pairs.push(key),
                Value::Array(_) | Value::Object(_) => {
                    return Err(EventError::new(format!(
                        "queryString value for {key:?} is not a scalar"
                    )));
                }
                scalar => {
                    let text = value_to_string(scalar).unwrap_or_default();
                    pairs.push(format!("{key}={}", encode_query_component(&text)));
                }
            }
        }
    }
    Ok(pairs.join("&"))
}

fn header_map(headers: &Map<String, Value>) -> Result<HeaderMap, EventError> {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| EventError::new(format!("header name {name:?} is invalid")))?;
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let Some(text) = (match v {
                Value::Array(_) | Value::Object(_) => {
                    return Err(EventError::new(format!("header {name:?} is not a string")));
                }
                scalar => value_to_string(scalar),
            }) else {
                continue;
            };
            let value = HeaderValue::from_bytes(text.as_bytes())
                .map_err(|_| EventError::new(format!("header {name:?} has an invalid value")))?;
            out.append(header.clone(), value);
        }
    }
    Ok(out)
}

/// Our response as the API Gateway integration response:
/// `{"isBase64Encoded", "statusCode", "headers": {name: value}, "body"}`. A UTF-8 body goes
/// as text, anything else base64 with `isBase64Encoded: true`. Repeated headers are joined
/// with ", " because the integration response carries one string per header name.
pub fn integration_response(response: Response) -> Bytes {
    let (parts, body) = response.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_string(), Value::String(joined));
    }
    let (is_base64, body) = match std::str::from_utf8(&body) {
        Ok(text) => (false, text.to_owned()),
        Err(_) => (true, STANDARD.encode(&body)),
    };
    let out = serde_json::json!({
        "isBase64Encoded": is_base64,
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
    });
    Bytes::from(out.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn sample_event() -> Value {
        json!({
            "requestContext": {"serviceId": "service-f94sy04v", "path": "/orders/{id}",
                "httpMethod": "POST", "requestId": "c6af9ac6-7b61", "identity": {"secretId": "x"},
                "sourceIp": "10.0.2.14", "stage": "release"},
            "headers": {"Content-Type": "application/json", "X-Multi": ["a", "b"], "X-N": 3},
            "body": "{\"test\":\"body\"}",
            "pathParameters": {"id": "abc"},
            "queryStringParameters": {},
            "headerParameters": {},
            "stageVariables": {"stage": "release"},
            "path": "/release/orders/abc",
            "queryString": {"limit": "20", "q": "a b/c", "tag": ["x", "y"], "flag": ""},
            "httpMethod": "POST"
        })
    }

    fn http(event: &Value) -> Request {
        match parse_event(event.to_string().as_bytes()).unwrap() {
            ScfEvent::Http(r) => *r,
            ScfEvent::Other(v) => panic!("not classified as HTTP: {v}"),
        }
    }

    #[test]
    fn api_gateway_event_maps_to_a_request() {
        let r = http(&sample_event());
        assert_eq!(r.method(), "POST");
        assert_eq!(r.uri().path(), "/orders/abc");
        assert_eq!(
            r.uri().query(),
            Some("flag&limit=20&q=a%20b%2Fc&tag=x&tag=y")
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        let multi: Vec<_> = r.headers().get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert_eq!(r.headers()["x-n"], "3");
        assert_eq!(r.body().as_ref(), br#"{"test":"body"}"#);
        assert_eq!(
            r.extensions().get::<InvocationId>().unwrap().0,
            "c6af9ac6-7b61"
        );
    }

    #[test]
    fn path_without_stage_and_function_url_events_work() {
        let r = http(
            &json!({"httpMethod": "get", "path": "/orders", "headers": {},
            "queryString": {}, "body": ""}),
        );
        assert_eq!(r.method(), "GET");
        assert_eq!(r.uri(), "/orders");
        assert!(r.body().is_empty());
        let mut e = sample_event();
        e["path"] = json!("/orders/abc");
        assert_eq!(http(&e).uri().path(), "/orders/abc");
        e["path"] = json!("/releases/1");
        assert_eq!(http(&e).uri().path(), "/releases/1");
    }

    #[test]
    fn base64_bodies_are_decoded_to_the_exact_bytes() {
        let raw = [0u8, 0xff, 0x80, b'{', 0x0a];
        let mut e = sample_event();
        e["isBase64Encoded"] = json!(true);
        e["body"] = json!(STANDARD.encode(raw));
        assert_eq!(http(&e).body().as_ref(), raw);
        e["isBase64Encoded"] = json!("true");
        assert_eq!(http(&e).body().as_ref(), raw);
    }

    #[test]
    fn malformed_events_are_errors() {
        let bad = |e: Value| parse_event(e.to_string().as_bytes()).unwrap_err();
        let mut e = sample_event();
        e["isBase64Encoded"] = json!(true);
        e["body"] = json!("%%% not base64");
        assert!(bad(e).0.contains("base64"));
        let mut e = sample_event();
        e["httpMethod"] = json!("GE T");
        assert!(bad(e).0.contains("httpMethod"));
        let mut e = sample_event();
        e["headers"] = json!({"bad header": "x"});
        assert!(bad(e).0.contains("header name"));
        let mut e = sample_event();
        e["headers"] = json!({"x-a": "line\nbreak"});
        assert!(bad(e).0.contains("invalid value"));
        let mut e = sample_event();
        e["body"] = json!(42);
        assert!(bad(e).0.contains("body"));
        let mut e = sample_event();
        e["queryString"] = json!("a=b");
        assert!(bad(e).0.contains("queryString"));
        let mut e = sample_event();
        e["path"] = json!(["x"]);
        assert!(bad(e).0.contains("path"));
        assert!(parse_event(b"not json{").is_err());
        assert!(parse_event(b"").is_err());
    }

    #[test]
    fn non_http_events_are_handed_on() {
        let timer = parse_event(
            br#"{"Type":"Timer","TriggerName":"EveryMinute","Time":"2026-11-24T12:00:00Z","Message":""}"#,
        )
        .unwrap();
        assert!(timer.is_timer());
        let lower = parse_event(br#"{"type":"timer"}"#).unwrap();
        assert!(lower.is_timer());
        for other in [&b"[1,2]"[..], b"\"hi\"", b"null", br#"{"Records":[]}"#] {
            let event = parse_event(other).unwrap();
            assert!(matches!(event, ScfEvent::Other(_)));
            assert!(!event.is_timer());
        }
    }

    #[test]
    fn invocation_headers_give_id_and_deadline() {
        let mut headers = HeaderMap::new();
        headers.insert("request_id", HeaderValue::from_static("req-9"));
        headers.insert("time_limit_in_ms", HeaderValue::from_static("3000"));
        headers.insert("memory_limit_in_mb", HeaderValue::from_static("128"));
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let inv = invocation_from(&headers, Bytes::new(), now);
        assert_eq!(inv.request_id.as_deref(), Some("req-9"));
        assert_eq!(inv.deadline, Some(now + time::Duration::seconds(3)));
        assert_eq!(inv.memory_limit_mb, Some(128));
        headers.insert("time_limit_in_ms", HeaderValue::from_static("soon"));
        headers.remove("request_id");
        let inv = invocation_from(&headers, Bytes::new(), now);
        assert_eq!(inv.deadline, None);
        assert_eq!(inv.request_id, None);
    }

    #[test]
    fn integration_response_is_text_or_base64() {
        let mut r = crate::http::json(201, &json!({"ok": true}));
        r.headers_mut()
            .append("x-multi", HeaderValue::from_static("a"));
        r.headers_mut()
            .append("x-multi", HeaderValue::from_static("b"));
        let out: Value = serde_json::from_slice(&integration_response(r)).unwrap();
        assert_eq!(
            out,
            json!({"isBase64Encoded": false, "statusCode": 201,
                   "headers": {"content-type": "application/json", "x-multi": "a, b"},
                   "body": "{\"ok\":true}"})
        );
        let raw = Bytes::from_static(&[0xff, 0xfe, 0x00]);
        let out: Value = serde_json::from_slice(&integration_response(crate::http::response(
            200,
            raw.clone(),
            Some("application/octet-stream"),
        )))
        .unwrap();
        assert_eq!(out["isBase64Encoded"], true);
        assert_eq!(STANDARD.decode(out["body"].as_str().unwrap()).unwrap(), raw);
        let out: Value =
            serde_json::from_slice(&integration_response(crate::http::no_content())).unwrap();
        assert_eq!(out["statusCode"], 204);
        assert_eq!(out["body"], "");
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_event(&bytes);
        }

        #[test]
        fn any_field_replaced_by_any_value_never_panics(
            field in prop::sample::select(vec!["httpMethod", "path", "headers", "queryString",
                "body", "isBase64Encoded", "requestContext"]),
            value in json_value(),
        ) {
            let mut event = sample_event();
            event[field] = value;
            let _ = parse_event(event.to_string().as_bytes());
        }
    }
}
