//! AWS Lambda mode: lambda_http drives the Lambda runtime API and parses API Gateway events
//! (HTTP API payload 2.0, REST API 1.0); this module only translates between its request and
//! response types and ours, so the handler never sees a Lambda type.
//!
//! lambda_http has already decoded `isBase64Encoded` bodies into `Body::Binary` by the time we
//! see the request, so the bytes handed on are the ones the client sent (what WeChat Pay
//! signatures are computed over).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, IntoResponse, RequestExt, service_fn};
use time::OffsetDateTime;

use super::{EventError, RuntimeError, origin_form, strip_stage, value_to_string};
use crate::http::{
    ApiError, AuthorizerClaims, Handler, InvocationDeadline, InvocationId, Request, Response,
};

/// Variables lambda_runtime reads with `expect` at start-up; checked first so a misconfigured
/// function fails with our one-line error instead of a panic.
const REQUIRED_ENV: [(&str, &str); 4] = [
    (
        "AWS_LAMBDA_RUNTIME_API",
        "host:port of the Lambda runtime API",
    ),
    (
        "AWS_LAMBDA_FUNCTION_NAME",
        "set by Lambda for every function",
    ),
    (
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "set by Lambda for every function",
    ),
    (
        "AWS_LAMBDA_FUNCTION_VERSION",
        "set by Lambda for every function",
    ),
];

/// Serves `handler` through the Lambda runtime API named by `AWS_LAMBDA_RUNTIME_API` (plus the
/// other `AWS_LAMBDA_*` variables Lambda sets). Events that are not API Gateway HTTP events
/// are reported to Lambda as invocation errors by lambda_http; the loop keeps going.
pub async fn serve_lambda(handler: Arc<dyn Handler>) -> Result<(), RuntimeError> {
    check_env(|name| std::env::var(name).ok())?;
    tracing::info!(mode = "lambda", "ready");
    let service = service_fn(move |event: lambda_http::Request| {
        let handler = Arc::clone(&handler);
        async move {
            let response = match to_request(event) {
                Ok(request) => handler.handle(request).await,
                Err(e) => {
                    tracing::warn!(error = %e, "rejected an API Gateway event");
                    ApiError::new(400, "INVALID_REQUEST", e.to_string()).into_response()
                }
            };
            Ok::<_, Infallible>(LambdaResponse(response))
        }
    });
    lambda_http::run(service)
        .await
        .map_err(|e| RuntimeError::Lambda(e.to_string()))
}

fn check_env(var: impl Fn(&str) -> Option<String>) -> Result<(), RuntimeError> {
    for (name, why) in REQUIRED_ENV {
        let Some(value) = var(name).filter(|v| !v.is_empty()) else {
            return Err(RuntimeError::MissingEnv { name, why });
        };
        if name == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" && value.parse::<i32>().is_err() {
            return Err(RuntimeError::InvalidEnv {
                name,
                value,
                reason: "not a number of megabytes".into(),
            });
        }
    }
    Ok(())
}

/// lambda_http's request (as built from an API Gateway event) to ours: origin-form URI with
/// the stage removed and the query string as received, headers, raw body bytes, and the
/// authorizer claims, deadline and request id as extensions.
pub fn to_request(event: lambda_http::Request) -> Result<Request, EventError> {
    let context = event.request_context_ref();
    let stage = context.and_then(stage_of);
    let claims = context.map(authorizer_claims).unwrap_or_default();
    let path = strip_stage(event.raw_http_path(), stage.as_deref()).to_string();
    let uri = origin_form(&path, event.uri().query())?;
    let lambda_context = event.lambda_context_ref();
    let deadline = lambda_context.filter(|c| c.deadline > 0).and_then(|c| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(c.deadline) * 1_000_000).ok()
    });
    let request_id = lambda_context
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty());

    let (parts, body) = event.into_parts();
    let body = match body {
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        other => Bytes::copy_from_slice(other.as_ref()),
    };
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers;
    if !claims.is_empty() {
        request.extensions_mut().insert(AuthorizerClaims(claims));
    }
    if let Some(deadline) = deadline {
        request
            .extensions_mut()
            .insert(InvocationDeadline(deadline));
    }
    if let Some(id) = request_id {
        request.extensions_mut().insert(InvocationId(id));
    }
    Ok(request)
}

fn stage_of(context: &RequestContext) -> Option<String> {
    match context {
        RequestContext::ApiGatewayV2(c) => c.stage.clone(),
        RequestContext::ApiGatewayV1(c) => c.stage.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Every claim an API Gateway authorizer attached, flattened to strings. lambda_http puts the
/// HTTP API Lambda-authorizer context (`authorizer.lambda`) and the whole REST authorizer
/// object (Lambda-authorizer context keys, `principalId`, Cognito's nested `claims`) in
/// `fields`, and HTTP API JWT claims in `jwt.claims`. Nested claims and JWT claims win over a
/// same-named top-level key because they are what identity providers actually sign.
pub fn authorizer_claims(context: &RequestContext) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Some(authorizer) = context.authorizer() else {
        return out;
    };
    for (key, value) in &authorizer.fields {
        if key == "claims" && value.is_object() {
            continue;
        }
        if let Some(v) = value_to_string(value) {
            out.insert(key.clone(), v);
        }
    }
    if let Some(serde_json::Value::Object(claims)) = authorizer.fields.get("claims") {
        for (key, value) in claims {
            if let Some(v) = value_to_string(value) {
                out.insert(key.clone(), v);
            }
        }
    }
    if let Some(jwt) = &authorizer.jwt {
        for (key, value) in &jwt.claims {
            out.insert(key.clone(), value.clone());
        }
    }
    // An IAM-authorized HTTP API route (merchant-api): who signed the request. Only IAM sets
    // it: a claim of that name from any other authorizer is dropped.
    out.remove(crate::http::merchant::IAM_CALLER_CLAIM);
    if let Some(arn) = authorizer.iam.as_ref().and_then(|iam| iam.user_arn.clone()) {
        out.insert(crate::http::merchant::IAM_CALLER_CLAIM.to_owned(), arn);
    }
    out
}

/// Our response as lambda_http should send it. Returning `http::Response<Body>` directly would
/// let lambda_http re-decode the body by content type (lossy for binary without a binary
/// content type), so the text/binary choice is made here from the bytes themselves.
pub struct LambdaResponse(pub Response);

impl IntoResponse for LambdaResponse {
    fn into_response(self) -> Pin<Box<dyn Future<Output = http::Response<Body>> + Send>> {
        Box::pin(std::future::ready(to_lambda_response(self.0)))
    }
}

/// Text when the body is UTF-8 (and not content-encoded), binary (base64 on the wire,
/// `isBase64Encoded: true`) otherwise, empty when there is none.
pub fn to_lambda_response(response: Response) -> http::Response<Body> {
    let (parts, bytes) = response.into_parts();
    let body = if bytes.is_empty() {
        Body::Empty
    } else if parts.headers.contains_key(http::header::CONTENT_ENCODING) {
        Body::Binary(bytes.to_vec())
    } else {
        match std::str::from_utf8(&bytes) {
            Ok(text) => Body::Text(text.to_owned()),
            Err(_) => Body::Binary(bytes.to_vec()),
        }
    };
    http::Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use lambda_http::Context;
    use serde_json::json;

    use super::*;

    fn event(value: serde_json::Value) -> lambda_http::Request {
        lambda_http::request::from_str(&value.to_string()).expect("fixture is an API Gateway event")
    }

    fn v2(raw_path: &str, stage: &str, authorizer: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": raw_path,
            "rawQueryString": "limit=20&cursor=a%2Fb",
            "headers": {"content-type": "application/json", "host": "abc.execute-api.aws"},
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc",
                "authorizer": authorizer,
                "domainName": "abc.execute-api.aws",
                "http": {"method": "POST", "path": raw_path, "protocol": "HTTP/1.1",
                         "sourceIp": "1.2.3.4", "userAgent": "test"},
                "requestId": "r-1",
                "routeKey": "$default",
                "stage": stage,
                "time": "24/Nov/2026:12:00:00 +0000",
                "timeEpoch": 1_795_000_000_000u64
            },
            "body": "eyJhIjoxfQ==",
            "isBase64Encoded": true
        })
    }

    /// merchant-api's routes are IAM-authorized: the signer's ARN is what the handler
    /// trusts, and no Lambda-authorizer context key of the same name can pose as it.
    #[test]
    fn http_api_iam_caller_becomes_the_merchant_claim() {
        let iam = json!({"iam": {"accessKey": "AKIA", "accountId": "123456789012",
            "callerId": "AIDA", "principalOrgId": null,
            "userArn": "arn:aws:iam::123456789012:user/back-office", "userId": "AIDA"}});
        let request = to_request(event(v2("/merchant/orders/1", "$default", iam))).unwrap();
        let claims = &request.extensions().get::<AuthorizerClaims>().unwrap().0;
        assert_eq!(
            claims[crate::http::merchant::IAM_CALLER_CLAIM],
            "arn:aws:iam::123456789012:user/back-office"
        );
        let forged = json!({"lambda": {crate::http::merchant::IAM_CALLER_CLAIM: "arn:forged"}});
        let request = to_request(event(v2("/merchant/orders/1", "$default", forged))).unwrap();
        let claims = request.extensions().get::<AuthorizerClaims>();
        assert_eq!(
            claims.and_then(|c| c.0.get(crate::http::merchant::IAM_CALLER_CLAIM)),
            None,
            "only IAM authorization sets the merchant claim"
        );
    }

    #[test]
    fn http_api_jwt_claims_path_query_and_body() {
        let mut context = Context::default();
        context.request_id = "req-1".into();
        context.deadline = 1_795_000_003_000;
        let request = event(v2(
            "/orders/123",
            "$default",
            json!({"jwt": {"claims": {"openid": "o-abc", "sub": "o-abc"}, "scopes": null}}),
        ))
        .with_lambda_context(context);
        let request = to_request(request).unwrap();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri(), "/orders/123?limit=20&cursor=a%2Fb");
        assert_eq!(request.headers()["content-type"], "application/json");
        assert_eq!(request.body().as_ref(), br#"{"a":1}"#);
        let claims = &request.extensions().get::<AuthorizerClaims>().unwrap().0;
        assert_eq!(claims["openid"], "o-abc");
        assert_eq!(
            request.extensions().get::<InvocationDeadline>().unwrap().0,
            OffsetDateTime::from_unix_timestamp(1_795_000_003).unwrap()
        );
        assert_eq!(
            request.extensions().get::<InvocationId>().unwrap().0,
            "req-1"
        );
    }

    #[test]
    fn http_api_named_stage_is_stripped_and_lambda_authorizer_context_flattened() {
        let request = to_request(event(v2(
            "/prod/orders",
            "prod",
            json!({"lambda": {"openid": "o-lam", "tier": 3, "vip": true, "tags": ["a"]}}),
        )))
        .unwrap();
        assert_eq!(request.uri().path(), "/orders");
        let claims = &request.extensions().get::<AuthorizerClaims>().unwrap().0;
        assert_eq!(claims["openid"], "o-lam");
        assert_eq!(claims["tier"], "3");
        assert_eq!(claims["vip"], "true");
        assert_eq!(claims["tags"], r#"["a"]"#);
        assert!(request.extensions().get::<InvocationId>().is_none());
    }

    fn v1(authorizer: serde_json::Value) -> serde_json::Value {
        json!({
            "resource": "/orders/{id}",
            "path": "/orders/a b",
            "httpMethod": "GET",
            "headers": {"Host": "abc.execute-api.aws", "X-Thing": "1"},
            "multiValueHeaders": {"Host": ["abc.execute-api.aws"], "X-Thing": ["1"]},
            "queryStringParameters": {"limit": "5"},
            "multiValueQueryStringParameters": {"limit": ["5"]},
            "pathParameters": {"id": "a b"},
            "stageVariables": null,
            "requestContext": {
                "accountId": "123456789012",
                "resourceId": "x",
                "stage": "test",
                "requestId": "r-2",
                "identity": {"sourceIp": "1.2.3.4"},
                "resourcePath": "/orders/{id}",
                "httpMethod": "GET",
                "apiId": "abc",
                "path": "/test/orders/a b",
                "authorizer": authorizer
            },
            "body": null,
            "isBase64Encoded": false
        })
    }

    #[test]
    fn rest_api_path_has_no_stage_and_cognito_claims_are_flattened() {
        let request = to_request(event(v1(json!({
            "principalId": "p-1",
            "integrationLatency": 12,
            "openid": "top-level-loses",
            "claims": {"openid": "o-cog", "email_verified": "true"}
        }))))
        .unwrap();
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri(), "/orders/a%20b?limit=5");
        assert_eq!(request.headers()["x-thing"], "1");
        assert!(request.body().is_empty());
        let claims = &request.extensions().get::<AuthorizerClaims>().unwrap().0;
        assert_eq!(claims["openid"], "o-cog");
        assert_eq!(claims["principalId"], "p-1");
        assert_eq!(claims["integrationLatency"], "12");
    }

    #[test]
    fn no_authorizer_means_no_claims_extension() {
        let request = to_request(event(v1(serde_json::Value::Null))).unwrap();
        assert!(request.extensions().get::<AuthorizerClaims>().is_none());
        let request = to_request(event(v2("/x", "$default", serde_json::Value::Null))).unwrap();
        assert!(request.extensions().get::<AuthorizerClaims>().is_none());
    }

    #[test]
    fn events_lambda_http_cannot_parse_are_errors_not_panics() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"foo":1}"#,
            "{\"rawPath\": 3}",
            "not json",
        ] {
            assert!(lambda_http::request::from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_keep_text_as_text_and_binary_exact() {
        let text = crate::http::json(201, &json!({"ok": true}));
        let out = to_lambda_response(text);
        assert_eq!(out.status(), 201);
        assert_eq!(out.headers()["content-type"], "application/json");
        assert!(matches!(out.body(), Body::Text(t) if t == r#"{"ok":true}"#));

        let bytes = Bytes::from_static(&[0xff, 0x00, 0xfe, b'a']);
        let out = to_lambda_response(crate::http::response(200, bytes.clone(), None));
        assert!(matches!(out.body(), Body::Binary(b) if b.as_slice() == bytes.as_ref()));

        let out = to_lambda_response(crate::http::no_content());
        assert_eq!(out.status(), 204);
        assert!(matches!(out.body(), Body::Empty));

        let mut gz = crate::http::response(200, Bytes::from_static(b"abc"), Some("text/plain"));
        gz.headers_mut()
            .insert("content-encoding", http::HeaderValue::from_static("gzip"));
        assert!(matches!(to_lambda_response(gz).body(), Body::Binary(_)));
    }

    #[test]
    fn binary_body_survives_the_round_trip_through_base64() {
        let raw = [0u8, 159, 146, 150, 255, 10];
        let mut value = v2("/notify/wechatpay", "$default", serde_json::Value::Null);
        value["body"] = json!(STANDARD.encode(raw));
        let request = to_request(event(value)).unwrap();
        assert_eq!(request.body().as_ref(), raw);
    }

    #[test]
    fn missing_lambda_variables_are_named() {
        let vars: HashMap<&str, &str> = [
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ]
        .into();
        assert!(check_env(|n| vars.get(n).map(|v| v.to_string())).is_ok());
        let e = check_env(|n| {
            (n != "AWS_LAMBDA_FUNCTION_NAME")
                .then(|| vars.get(n).map(|v| v.to_string()))
                .flatten()
        })
        .unwrap_err();
        assert!(e.to_string().contains("AWS_LAMBDA_FUNCTION_NAME"), "{e}");
        let e = check_env(|n| {
            if n == "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" {
                Some("lots".into())
            } else {
                vars.get(n).map(|v| v.to_string())
            }
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=\"lots\""),
            "{e}"
        );
    }
}
