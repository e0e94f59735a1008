//! Plain HTTP mode end to end: the echo-function binary with no runtime API in its
//! environment listens on `PORT` and serves any request; raw bodies are preserved and
//! oversize bodies get 413.

use crate::runtime_support::EchoFunction;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use shared::runtime::MAX_BODY_BYTES;

/// Starts the function with `PORT=0` and reads the port the OS chose from its `ready` line,
/// so no test depends on a fixed or pre-probed port.
fn start() -> (EchoFunction, String) {
    let function = EchoFunction::spawn(&[("PORT", "0")]);
    let line = function.wait_for_line(|l| l.contains("ready") && l.contains("mode=\"http\""));
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("ready line names the address: {line}"));
    let port = addr.rsplit(':').next().unwrap().to_string();
    (function, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_reach_the_handler_with_raw_bodies() {
    let (_function, base) = start();
    let client = reqwest::Client::new();

    let raw: Vec<u8> = (0..=255u8).rev().collect();
    let response = client
        .post(format!("{base}/notify/wechatpay?x=1&y=a%2Fb"))
        .header("Wechatpay-Serial", "PUB_KEY_ID_0001")
        .header("X-Echo-Status", "201")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    let seen: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/notify/wechatpay");
    assert_eq!(seen["query"], "x=1&y=a%2Fb");
    assert_eq!(seen["headers"]["wechatpay-serial"][0], "PUB_KEY_ID_0001");
    assert_eq!(seen["body_base64"], STANDARD.encode(&raw));
    assert_eq!(seen["claims"], Value::Null);
    assert_eq!(seen["deadline_ms"], Value::Null, "no deadline in HTTP mode");

    let response = client
        .post(format!("{base}/binary"))
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), raw.as_slice());

    let response = client.get(format!("{base}/orders")).send().await.unwrap();
    let seen: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["query"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_cap_get_413_and_the_cap_itself_is_fine() {
    let (_function, base) = start();
    let client = reqwest::Client::new();

    let response = client
        .post(format!("{base}/binary"))
        .body(vec![1u8; MAX_BODY_BYTES])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), MAX_BODY_BYTES);

    let response = client
        .post(format!("{base}/binary"))
        .body(vec![1u8; MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(error["code"], "PAYLOAD_TOO_LARGE");

    // The server is still there after refusing.
    let response = client.get(format!("{base}/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_port_stops_start_up_naming_the_variable() {
    let mut function = EchoFunction::spawn(&[("PORT", "nine-thousand")]);
    assert_eq!(function.wait_exit(), Some(1));
    let line = function.wait_for_line(|l| l.starts_with("echo-function:"));
    assert!(line.contains("PORT=\"nine-thousand\""), "{line}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let (mut function, base) = start();
    reqwest::get(format!("{base}/x")).await.unwrap();
    function.terminate();
    assert_eq!(function.wait_exit(), Some(0));
    function.wait_for_line(|l| l.contains("SIGTERM received"));
}
