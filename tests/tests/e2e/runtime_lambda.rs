//! Lambda mode end to end: the echo-function binary against a fake Lambda Runtime API. Checks
//! what a handler sees for HTTP API (v2) and REST API (v1) events (path without stage, query,
//! headers, exact body bytes, authorizer claims, deadline, request id) and what goes back.

use crate::runtime_support::{EchoFunction, FakeRuntime, Posted};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const DEADLINE_MS: u64 = 1_900_000_000_123;
/// Not UTF-8, and contains the bytes a lossy text conversion would mangle.
const RAW: &[u8] = &[0x00, 0xff, 0xfe, b'{', 0x80, b'\n', 0xc3, 0x28];

fn spawn(fake: &FakeRuntime) -> EchoFunction {
    let api = fake.addr.to_string();
    EchoFunction::spawn(&[
        ("AWS_LAMBDA_RUNTIME_API", api.as_str()),
        ("AWS_LAMBDA_FUNCTION_NAME", "echo"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/24/[$LATEST]abc"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/echo"),
    ])
}

fn v2_event(raw_path: &str, stage: &str, authorizer: Value) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "limit=20&cursor=a%2Fb",
        "cookies": ["session=1"],
        "headers": {
            "content-type": "application/octet-stream",
            "host": "abc123.execute-api.ap-east-1.amazonaws.com",
            "x-echo-status": "201",
            "wechatpay-serial": "PUB_KEY_ID_0001"
        },
        "queryStringParameters": {"limit": "20", "cursor": "a/b"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "authorizer": authorizer,
            "domainName": "abc123.execute-api.ap-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": "POST", "path": raw_path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "wechatpay"},
            "requestId": "apigw-req-1",
            "routeKey": "$default",
            "stage": stage,
            "time": "24/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_000_000_000u64
        },
        "body": STANDARD.encode(RAW),
        "isBase64Encoded": true
    })
}

/// The echo handler's description of the request, out of a v1 or v2 proxy response.
fn echoed(posted: &Posted) -> Value {
    let response = posted.json();
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    serde_json::from_str(response["body"].as_str().expect("text body")).expect("echo JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn http_api_events_map_to_the_request_and_the_response_comes_back() {
    let mut fake = FakeRuntime::lambda(DEADLINE_MS).await;
    let _function = spawn(&fake);

    // JWT authorizer, $default stage, base64 binary body.
    fake.push(
        "req-v2",
        v2_event(
            "/orders/123",
            "$default",
            json!({"jwt": {"claims": {"openid": "o-abc", "sub": "o-abc", "aud": "wx-app"},
                           "scopes": null}}),
        )
        .to_string(),
    );
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.request_id.as_deref(), Some("req-v2"));
    let response = posted.json();
    assert_eq!(response["statusCode"], 201);
    assert_eq!(response["headers"]["x-echo"], "yes");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let seen = echoed(&posted);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/orders/123");
    assert_eq!(seen["query"], "limit=20&cursor=a%2Fb");
    assert_eq!(seen["uri"], "/orders/123?limit=20&cursor=a%2Fb");
    assert_eq!(
        seen["body_base64"],
        STANDARD.encode(RAW),
        "raw bytes exactly"
    );
    assert_eq!(seen["claims"]["openid"], "o-abc");
    assert_eq!(seen["claims"]["aud"], "wx-app");
    assert_eq!(seen["deadline_ms"], DEADLINE_MS);
    assert_eq!(seen["invocation_id"], "req-v2");
    assert_eq!(
        seen["headers"]["wechatpay-serial"],
        json!(["PUB_KEY_ID_0001"])
    );
    assert_eq!(seen["headers"]["cookie"], json!(["session=1"]));

    // Named stage in rawPath is stripped; Lambda authorizer context becomes claims.
    fake.push(
        "req-stage",
        v2_event(
            "/prod/orders",
            "prod",
            json!({"lambda": {"openid": "o-lam", "level": 2}}),
        )
        .to_string(),
    );
    let posted = fake.posted().await;
    assert_eq!(posted.request_id.as_deref(), Some("req-stage"));
    let seen = echoed(&posted);
    assert_eq!(seen["path"], "/orders");
    assert_eq!(seen["claims"], json!({"openid": "o-lam", "level": "2"}));

    // A binary response goes out base64 with isBase64Encoded, byte for byte.
    fake.push(
        "req-bin",
        v2_event("/binary", "$default", Value::Null).to_string(),
    );
    let posted = fake.posted().await;
    let response = posted.json();
    assert_eq!(response["statusCode"], 200);
    assert_eq!(response["isBase64Encoded"], true);
    assert_eq!(
        response["headers"]["content-type"],
        "application/octet-stream"
    );
    let body = STANDARD.decode(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, RAW);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_api_event_has_its_stage_removed_and_cognito_claims_flattened() {
    let mut fake = FakeRuntime::lambda(DEADLINE_MS).await;
    let _function = spawn(&fake);
    let event = json!({
        "resource": "/orders/{out_trade_no}",
        "path": "/orders/T2026",
        "httpMethod": "GET",
        "headers": {"Host": "abc.execute-api.ap-east-1.amazonaws.com", "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {"Host": ["abc.execute-api.ap-east-1.amazonaws.com"],
                              "X-Forwarded-Proto": ["https"]},
        "queryStringParameters": {"limit": "5"},
        "multiValueQueryStringParameters": {"limit": ["5"]},
        "pathParameters": {"out_trade_no": "T2026"},
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "r1",
            "stage": "test",
            "requestId": "apigw-req-2",
            "identity": {"sourceIp": "203.0.113.7"},
            "resourcePath": "/orders/{out_trade_no}",
            "httpMethod": "GET",
            "apiId": "abc",
            "path": "/test/orders/T2026",
            "authorizer": {"principalId": "p-1", "claims": {"openid": "o-rest", "sub": "s"}}
        },
        "body": null,
        "isBase64Encoded": false
    });
    fake.push("req-v1", event.to_string());
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "response");
    let response = posted.json();
    assert_eq!(response["statusCode"], 200);
    // REST responses carry headers as multiValueHeaders.
    assert_eq!(response["multiValueHeaders"]["x-echo"], json!(["yes"]));
    let seen = echoed(&posted);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/orders/T2026");
    assert_eq!(seen["query"], "limit=5");
    assert_eq!(seen["body_base64"], "");
    assert_eq!(seen["claims"]["openid"], "o-rest");
    assert_eq!(seen["claims"]["principalId"], "p-1");
    assert_eq!(seen["invocation_id"], "req-v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_that_is_not_http_is_an_invocation_error_and_the_loop_goes_on() {
    let mut fake = FakeRuntime::lambda(DEADLINE_MS).await;
    let mut function = spawn(&fake);
    fake.push("bad-1", r#"{"hello": "world"}"#);
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "error");
    assert_eq!(posted.request_id.as_deref(), Some("bad-1"));
    assert!(posted.json()["errorMessage"].is_string());

    fake.push(
        "good-2",
        v2_event("/orders", "$default", Value::Null).to_string(),
    );
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.request_id.as_deref(), Some("good-2"));
    assert_eq!(echoed(&posted)["path"], "/orders");
    assert!(function.is_running());
    assert!(
        function
            .output()
            .iter()
            .any(|l| l.contains("ready") && l.contains("mode=\"lambda\"")),
        "a ready line names the mode"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_lambda_configuration_is_one_clear_line_not_a_panic() {
    let mut function = EchoFunction::spawn(&[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")]);
    assert_eq!(function.wait_exit(), Some(1));
    let line = function.wait_for_line(|l| l.starts_with("echo-function:"));
    assert!(line.contains("AWS_LAMBDA_FUNCTION_NAME"), "{line}");
    assert!(!function.output().iter().any(|l| l.contains("panicked")));
}
