//! SCF custom-runtime mode end to end: the echo-function binary against a fake SCF runtime
//! API. Checks the protocol (init/ready once, then invocation/next -> response | error), the
//! API Gateway event mapping and the integration response, and that bad events do not stop
//! the loop.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::runtime_support::{EchoFunction, FakeRuntime};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const TIME_LIMIT_MS: u64 = 3_000;
const RAW: &[u8] = &[0x00, 0xff, 0xfe, b'{', 0x80, b'\n', 0xc3, 0x28];

fn spawn(fake: &FakeRuntime) -> EchoFunction {
    let port = fake.addr.port().to_string();
    EchoFunction::spawn(&[
        ("SCF_RUNTIME_API", "127.0.0.1"),
        ("SCF_RUNTIME_API_PORT", port.as_str()),
    ])
}

/// An API Gateway trigger event shaped like Tencent's documented sample.
fn api_gateway_event(path: &str, method: &str) -> Value {
    json!({
        "requestContext": {
            "serviceId": "service-f94sy04v",
            "path": "/orders/{out_trade_no}",
            "httpMethod": method,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"secretId": "abdcdxxxxxxxsdfs"},
            "sourceIp": "10.0.2.14",
            "stage": "release"
        },
        "headers": {
            "Content-Type": "application/json",
            "Host": "service-f94sy04v-1250000000.gz.apigw.tencentcs.com",
            "X-Echo-Status": "202",
            "Wechatpay-Serial": "PUB_KEY_ID_0001"
        },
        "body": "{\"items\":[{\"sku_id\":\"sku-1\",\"quantity\":2}]}",
        "pathParameters": {"out_trade_no": "T2026"},
        "queryStringParameters": {},
        "headerParameters": {},
        "stageVariables": {"stage": "release"},
        "path": path,
        "queryString": {"limit": "20", "cursor": "a b/c"},
        "httpMethod": method
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn api_gateway_events_round_trip_through_the_custom_runtime() {
    let mut fake = FakeRuntime::scf(TIME_LIMIT_MS).await;
    let function = spawn(&fake);

    let before = now_ms();
    fake.push(
        "scf-req-1",
        api_gateway_event("/release/orders/T2026", "POST").to_string(),
    );
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(
        &fake.calls()[..3],
        ["ready", "next", "response"],
        "init/ready comes first, once"
    );

    let response = posted.json();
    assert_eq!(response["isBase64Encoded"], false);
    assert_eq!(response["statusCode"], 202);
    assert_eq!(response["headers"]["x-echo"], "yes");
    assert_eq!(response["headers"]["content-type"], "application/json");
    let seen: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/orders/T2026", "stage prefix removed");
    assert_eq!(seen["query"], "cursor=a%20b%2Fc&limit=20");
    assert_eq!(
        seen["headers"]["wechatpay-serial"],
        json!(["PUB_KEY_ID_0001"])
    );
    assert_eq!(
        STANDARD
            .decode(seen["body_base64"].as_str().unwrap())
            .unwrap(),
        br#"{"items":[{"sku_id":"sku-1","quantity":2}]}"#
    );
    assert_eq!(
        seen["invocation_id"], "scf-req-1",
        "runtime request_id wins"
    );
    assert_eq!(seen["claims"], Value::Null, "SCF has no authorizer claims");
    let deadline = seen["deadline_ms"].as_i64().expect("deadline set");
    let limit = TIME_LIMIT_MS as i64;
    assert!(
        deadline >= before + limit && deadline <= now_ms() + limit,
        "deadline = arrival + time_limit_in_ms"
    );

    // Base64 request body decoded exactly; binary response base64-encoded.
    let mut event = api_gateway_event("/binary", "POST");
    event["isBase64Encoded"] = json!(true);
    event["body"] = json!(STANDARD.encode(RAW));
    fake.push("scf-req-2", event.to_string());
    let response = fake.posted().await.json();
    assert_eq!(response["statusCode"], 200);
    assert_eq!(response["isBase64Encoded"], true);
    assert_eq!(
        STANDARD.decode(response["body"].as_str().unwrap()).unwrap(),
        RAW
    );
    assert_eq!(
        fake.calls().iter().filter(|c| **c == "ready").count(),
        1,
        "init/ready is posted once"
    );
    assert!(
        function
            .output()
            .iter()
            .any(|l| l.contains("ready") && l.contains("mode=\"scf\""))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_events_are_invocation_errors_and_the_loop_continues() {
    let mut fake = FakeRuntime::scf(TIME_LIMIT_MS).await;
    let mut function = spawn(&fake);

    fake.push("bad-json", "not json{");
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "error");
    assert!(String::from_utf8_lossy(&posted.body).contains("not JSON"));

    let mut event = api_gateway_event("/orders", "POST");
    event["isBase64Encoded"] = json!(true);
    event["body"] = json!("%%% not base64");
    fake.push("bad-base64", event.to_string());
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "error");
    assert!(String::from_utf8_lossy(&posted.body).contains("base64"));

    fake.push(
        "timer",
        r#"{"Type":"Timer","TriggerName":"EveryMinute","Time":"2026-11-24T12:00:00Z","Message":""}"#,
    );
    let posted = fake.posted().await;
    assert_eq!(
        posted.kind, "error",
        "an HTTP function refuses timer events"
    );

    fake.push("good", api_gateway_event("/orders", "GET").to_string());
    let posted = fake.posted().await;
    assert_eq!(posted.kind, "response");
    assert_eq!(posted.json()["statusCode"], 202);
    assert!(function.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_runtime_api_fails_start_up_with_a_clear_message() {
    // Bind then drop: a port on which nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut function = EchoFunction::spawn(&[
        ("SCF_RUNTIME_API", "127.0.0.1"),
        ("SCF_RUNTIME_API_PORT", port.as_str()),
    ]);
    assert_eq!(function.wait_exit(), Some(1));
    let line = function.wait_for_line(|l| l.starts_with("echo-function:"));
    assert!(line.contains("SCF runtime API unreachable"), "{line}");
    assert!(line.contains("/runtime/init/ready"), "{line}");
}
