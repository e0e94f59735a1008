//! Shipping end to end (DESIGN.md section 12), the built binaries against the simulator:
//! the merchant records a shipment right after payment, WeChat has not indexed the payment
//! yet (`10060001`), the shipment is kept (202) and the timeout-sweeper resends the same
//! bytes once WeChat can take them; one access token (stable_token) serves both processes
//! through the table, and never reaches a log.

use std::process::{Command, Stdio};
use std::time::Duration;

use sandbox::simulator::PayRequest;
use serde_json::{Value, json};
use shared::domain::{OrderStatus, UploadState};
use shared::store::Store;

use crate::e2e_support::*;

const TOKEN: &str = "merchant-e2e-token-0123456789abcdef-ship";

fn shipping_env(app: &TestApp) -> Vec<(String, String)> {
    let mut env = app.function_env(Some(&app.notify_url));
    env.push(("WX_APP_SECRET".into(), app.keys.app_secret().to_owned()));
    env.push(("WX_API_BASE".into(), app.sim.base_url()));
    env
}

async fn start_merchant_api(app: &TestApp) -> (FunctionProcess, String) {
    let mut env = shipping_env(app);
    env.push(("MERCHANT_AUTH".into(), "token".into()));
    env.push(("MERCHANT_API_TOKEN".into(), TOKEN.into()));
    let mut process = FunctionProcess::spawn(Function::MerchantApi, &env);
    let url = process.wait_http().await;
    (process, url)
}

async fn ship(app: &TestApp, url: &str, no: &str, key: &str, body: &Value) -> Reply {
    let request = app
        .http
        .post(format!("{url}/merchant/orders/{no}/shipments"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string());
    Reply::read(request.send().await.expect("merchant-api answers")).await
}

/// One run of the timeout-sweeper binary; its summary (last stdout line) and its output.
fn run_sweeper(env: &[(String, String)]) -> (Value, String) {
    let output = Command::new(binary(Function::TimeoutSweeper))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("timeout-sweeper runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "timeout-sweeper failed:\n{all}");
    let summary = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("summary");
    (summary, all)
}

async fn sim_shipping(app: &TestApp, transaction_id: &str) -> Value {
    app.http
        .get(format!(
            "{}/sandbox/shipping/{transaction_id}",
            app.sim.base_url()
        ))
        .send()
        .await
        .expect("simulator answers")
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shipment_waits_out_wechats_indexing_and_the_sweeper_uploads_it_once() {
    let app = spawn_app_with(|c| c.shipping_index_lag = Duration::from_secs(3)).await;
    let (mut merchant, url) = start_merchant_api(&app).await;
    let (_, unpaid) = app
        .place("o_alice", "ship-e2e-0", &[(SKU_LIMITED, 1)])
        .await;
    let (_, no) = app
        .place("o_alice", "ship-e2e-1", &[(SKU_LIMITED, 2)])
        .await;
    let express = json!({"logistics_type": "express", "packages": [
        {"tracking_no": "SF1234567890", "express_company": "SF", "item_desc": "奶茶*2",
         "receiver_contact": "189****1234"}]});

    // Not paid yet: refused, nothing stored.
    ship(&app, &url, &unpaid, "ship-key-0", &express)
        .await
        .assert_error(409, "ORDER_NOT_PAID");

    app.sim
        .pay(&PayRequest {
            deliveries: 1,
            ..PayRequest::new(&no)
        })
        .expect("the user pays");
    app.wait_acknowledged(&no).await;
    let before = app.order(&no).await;
    assert_eq!(before.status, OrderStatus::Paid);

    // WeChat's rules first: SF Express needs the masked phone; nothing stored.
    let unmasked = json!({"logistics_type": "express", "packages": [
        {"tracking_no": "SF1", "express_company": "SF", "item_desc": "奶茶*2"}]});
    let refused = ship(&app, &url, &no, "ship-key-bad", &unmasked).await;
    refused.assert_error(422, "INVALID_REQUEST");
    assert!(
        refused.text().contains("receiver_contact"),
        "{}",
        refused.text()
    );
    assert_eq!(app.order(&no).await, before);

    // Right after payment WeChat has not indexed it (10060001): recorded, 202, uploading.
    let first = ship(&app, &url, &no, "ship-key-1", &express).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let body = first.json();
    assert_eq!(body["status"], "SHIPPED");
    assert_eq!(body["shipping"]["upload_state"], "PENDING");
    assert_eq!(body["shipping"]["upload_errcode"], 10060001);
    assert_eq!(body["shipping"]["logistics_type"], "express");
    let order = app.order(&no).await;
    assert_eq!(order.status, OrderStatus::Shipped);
    let transaction_id = order.transaction_id.clone().expect("paid");
    let stored_body = order
        .shipping
        .as_ref()
        .and_then(|s| s.upload.as_ref())
        .map(|u| u.body.clone())
        .expect("the upload body is stored");

    // The same request again is answered from the order; the key with another shipment,
    // or another key, is refused; nothing changes.
    let again = ship(&app, &url, &no, "ship-key-1", &express).await;
    assert_eq!(
        (again.status, again.json()["status"].clone()),
        (202, json!("SHIPPED"))
    );
    let mut changed = express.clone();
    changed["packages"][0]["tracking_no"] = json!("SF999");
    ship(&app, &url, &no, "ship-key-1", &changed)
        .await
        .assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    ship(&app, &url, &no, "ship-key-2", &express)
        .await
        .assert_error(409, "ORDER_ALREADY_SHIPPED");
    assert_eq!(app.order(&no).await.version, order.version);

    // The sweeper resends once the backoff (15 s) is over, by then WeChat has the payment.
    let sweeper_env = {
        let mut env = shipping_env(&app);
        env.retain(|(k, _)| k != "PORT");
        env.push(("SWEEP_GRACE_SECONDS".into(), "0".into()));
        env
    };
    let (early, _) = tokio::task::spawn_blocking({
        let env = sweeper_env.clone();
        move || run_sweeper(&env)
    })
    .await
    .unwrap();
    assert_eq!(early["uploads"]["checked"], 0, "not due yet: {early}");
    tokio::time::sleep(Duration::from_secs(16)).await;
    let (summary, sweeper_logs) = tokio::task::spawn_blocking(move || run_sweeper(&sweeper_env))
        .await
        .unwrap();
    assert_eq!(summary["uploads"]["uploaded"], 1, "{summary}");
    let done = app.order(&no).await;
    let upload = done.shipping.as_ref().unwrap().upload.as_ref().unwrap();
    assert_eq!(upload.state, UploadState::Uploaded);
    assert_eq!(upload.attempts, 2);
    assert_eq!(upload.body, stored_body, "the same bytes were resent");
    assert_eq!(done.status, OrderStatus::Shipped);

    let wechat = sim_shipping(&app, &transaction_id).await;
    assert_eq!(wechat["attempts"], json!([10060001, 0]), "{wechat}");
    assert_eq!(wechat["shipment"]["order_state"], 2);
    assert_eq!(
        wechat["shipment"]["body"],
        serde_json::from_str::<Value>(&stored_body).unwrap()
    );
    // One stable_token call for both processes: the token is shared through the table.
    assert_eq!(wechat["stable_token_calls"], 1, "{wechat}");
    assert_eq!(wechat["force_refreshes"], 0);

    // order.shipped was written with the transition.
    let shipped_event = format!("evt_{no}_{}", before.version + 1);
    let event = app
        .store
        .get_event(&shipped_event)
        .await
        .unwrap()
        .expect("order.shipped");
    assert_eq!(event.event_type, "order.shipped");

    // The access token and the AppSecret never reach a log.
    let token = app
        .store
        .get_access_token(APPID)
        .await
        .unwrap()
        .expect("the shared token");
    merchant.kill();
    let logs = merchant.stdout().join("\n") + &merchant.stderr().join("\n") + &sweeper_logs;
    assert!(logs.contains("shipment recorded"));
    assert!(!logs.contains(token.token.expose().as_str()));
    assert!(!logs.contains(app.keys.app_secret()));
}

/// A free loopback port for a process started after the simulator that must know its URL.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The order once `done` holds for it (pushes are delivered asynchronously).
async fn order_when(
    app: &TestApp,
    no: &str,
    what: &str,
    done: impl Fn(&shared::domain::Order) -> bool,
) -> shared::domain::Order {
    let start = std::time::Instant::now();
    loop {
        let o = app.order(no).await;
        if done(&o) {
            return o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "order {no}: {what} did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ten days pass: the order's settlement check comes due (the binaries run on the real
/// clock, so the test moves the order's check time instead, through the domain's own plan).
async fn settlement_check_due(app: &TestApp, no: &str) {
    let order = app.order(no).await;
    let due = order.shipping.as_ref().unwrap().settled_at.is_none();
    assert!(due, "not settled yet");
    let past = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let plan = |o: &shared::domain::Order| {
        let mut to = o.clone();
        to.version += 1;
        if let Some(s) = to.shipping.as_mut() {
            s.settle_check_at = Some(past);
        }
        Ok(shared::domain::Plan {
            order: Some(shared::domain::OrderChange {
                from: Box::new(o.clone()),
                to: Box::new(to),
                guard: shared::domain::Guard::Version,
                expect_amount_total: None,
            }),
            stock: Vec::new(),
            records: Vec::new(),
        })
    };
    let moved = app.store.transition(&order, &plan, past).await.unwrap();
    assert!(matches!(
        moved,
        shared::store::TransitionOutcome::Applied(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settlement_push_completes_the_order_once_and_a_lost_one_is_found_by_the_sweeper() {
    let push_port = free_port();
    let app = spawn_app_with(|c| {
        c.shipping_index_lag = Duration::ZERO;
        c.push = None;
    })
    .await;
    // mp-push on the port the simulated console pushes to.
    let keys = &app.keys;
    let push_env = {
        let mut env = app.function_env(None);
        env.retain(|(k, _)| k != "PORT");
        env.push(("PORT".into(), push_port.to_string()));
        env.push(("WX_PUSH_TOKEN".into(), keys.push_token()));
        env.push(("WX_PUSH_AES_KEY".into(), keys.push_aes_key()));
        env
    };
    let mut mp_push = FunctionProcess::spawn(Function::MpPush, &push_env);
    let push_url = format!("{}/notify/wechat-mp", mp_push.wait_http().await);
    app.sim
        .set_push_target(Some(sandbox::simulator::PushTarget {
            url: push_url.clone(),
            token: keys.push_token(),
            encoding_aes_key: keys.push_aes_key(),
        }));
    let (_merchant, url) = start_merchant_api(&app).await;
    let virtual_goods = json!({"logistics_type": "virtual",
        "packages": [{"item_desc": "会员月卡*1"}]});

    // The console's URL check: signature over Token, timestamp, nonce; echostr back.
    let signature =
        shared::miniprogram::push::signature(&[&keys.push_token(), "1714037059", "486452656"]);
    let check = app
        .http
        .get(format!("{push_url}?signature={signature}&timestamp=1714037059&nonce=486452656&echostr=hello-echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    assert_eq!(check.text().await.unwrap(), "hello-echo");
    let forged = app
        .http
        .get(format!(
            "{push_url}?signature=00{}&timestamp=1714037059&nonce=486452656&echostr=x",
            &signature[2..]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let mut nos = Vec::new();
    for i in 0..2 {
        let (_, no) = app
            .place("o_bob", &format!("settle-e2e-{i}"), &[(SKU_LIMITED, 1)])
            .await;
        app.sim
            .pay(&PayRequest {
                deliveries: 1,
                ..PayRequest::new(&no)
            })
            .expect("the user pays");
        app.wait_acknowledged(&no).await;
        let shipped = ship(&app, &url, &no, &format!("settle-ship-{i}"), &virtual_goods).await;
        assert_eq!(shipped.status, 201, "{}", shipped.text());
        assert_eq!(shipped.json()["shipping"]["upload_state"], "UPLOADED");
        // WeChat's ship-time push brings its estimate (T+2 for virtual goods).
        let o = order_when(&app, &no, "ship-time push", |o| {
            o.shipping
                .as_ref()
                .is_some_and(|s| s.estimated_settlement_at.is_some())
        })
        .await;
        assert_eq!(o.status, OrderStatus::Shipped);
        nos.push((no, o.transaction_id.clone().unwrap()));
    }

    // Settled with the push delivered twice: COMPLETED once.
    let (pushed, pushed_tid) = &nos[0];
    let settle = |tid: &str, deliveries: u32| {
        app.http
            .post(format!(
                "{}/sandbox/shipping/{tid}/settle",
                app.sim.base_url()
            ))
            .body(json!({"deliveries": deliveries}).to_string())
            .send()
    };
    assert_eq!(settle(pushed_tid, 2).await.unwrap().status(), 200);
    let done = order_when(&app, pushed, "COMPLETED", |o| {
        o.status == OrderStatus::Completed
    })
    .await;
    assert!(done.shipping.as_ref().unwrap().settled_at.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = app.order(pushed).await;
    assert_eq!(
        done.history
            .iter()
            .filter(|h| h.to == OrderStatus::Completed)
            .count(),
        1
    );
    let event = app
        .store
        .get_event(&format!("evt_{pushed}_{}", done.version))
        .await
        .unwrap()
        .expect("order.completed");
    assert_eq!(event.event_type, "order.completed");
    // The merchant sees it whole: COMPLETED, with its shipment and when WeChat settled it.
    let view = app
        .http
        .get(format!("{url}/merchant/orders/{pushed}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    let view: Value = serde_json::from_str(&view.text().await.unwrap()).unwrap();
    assert_eq!(view["status"], "COMPLETED", "{view}");
    assert_eq!(view["shipping"]["upload_state"], "UPLOADED", "{view}");
    assert!(view["shipping"]["settled_at"].is_string(), "{view}");
    let pushes = sim_shipping(&app, pushed_tid).await["pushes"].clone();
    let answers: Vec<(String, u64)> = pushes
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["answer"].as_str().unwrap_or("").to_owned(),
                p["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        answers.len(),
        3,
        "one ship-time push, two settlement copies: {answers:?}"
    );
    assert!(
        answers.iter().all(|(a, s)| a == "success" && *s == 200),
        "{answers:?}"
    );

    // Settled with the push lost: SHIPPED until the sweeper's check asks get_order.
    let (lost, lost_tid) = &nos[1];
    assert_eq!(settle(lost_tid, 0).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.order(lost).await.status, OrderStatus::Shipped);
    settlement_check_due(&app, lost).await;
    let sweeper_env = {
        let mut env = shipping_env(&app);
        env.retain(|(k, _)| k != "PORT");
        env.push(("SWEEP_GRACE_SECONDS".into(), "0".into()));
        env
    };
    let (summary, _) = tokio::task::spawn_blocking(move || run_sweeper(&sweeper_env))
        .await
        .unwrap();
    assert_eq!(summary["uploads"]["completed"], 1, "{summary}");
    let found = app.order(lost).await;
    assert_eq!(found.status, OrderStatus::Completed);
    assert!(found.history.last().unwrap().cause.contains("get_order"));

    // A push that does not verify changes nothing: 401; a plaintext one: 400.
    let before = app.order(lost).await;
    let bad = app
        .http
        .post(format!(
            "{push_url}?timestamp=1&nonce=2&msg_signature=deadbeef&encrypt_type=aes"
        ))
        .body(json!({"ToUserName": "gh_x", "Encrypt": "AAAA"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let plain = app
        .http
        .post(format!("{push_url}?timestamp=1&nonce=2"))
        .body(json!({"Event": "trade_manage_order_settlement", "transaction_id": lost_tid, "settlement_time": 1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(app.order(lost).await, before);
    mp_push.kill();
    let logs = mp_push.stdout().join("\n") + &mp_push.stderr().join("\n");
    assert!(!logs.contains(&keys.push_aes_key()));
    assert!(logs.contains("settlement"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_wechat_rejects_is_replaced_for_every_instance_and_the_upload_goes_through() {
    let app = spawn_app_with(|c| c.shipping_index_lag = Duration::ZERO).await;
    let (_merchant, url) = start_merchant_api(&app).await;
    let virtual_goods = json!({"logistics_type": "virtual",
        "packages": [{"item_desc": "会员月卡*1"}]});
    let mut shipped = Vec::new();
    for i in 0..2 {
        let (_, no) = app
            .place("o_carol", &format!("token-e2e-{i}"), &[(SKU_LIMITED, 1)])
            .await;
        app.sim
            .pay(&PayRequest {
                deliveries: 1,
                ..PayRequest::new(&no)
            })
            .expect("the user pays");
        app.wait_acknowledged(&no).await;
        shipped.push(no);
    }
    let first = ship(&app, &url, &shipped[0], "token-ship-0", &virtual_goods).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let before = app
        .store
        .get_access_token(APPID)
        .await
        .unwrap()
        .expect("shared token");

    // Someone force-refreshes the stable token (a leaked-token drill, another system):
    // the token merchant-api holds in memory and the table is dead at once.
    let forced: Value = serde_json::from_str(
        &app.http
            .post(format!("{}/cgi-bin/stable_token", app.sim.base_url()))
            .body(
                json!({"grant_type": "client_credential", "appid": APPID,
                    "secret": app.keys.app_secret(), "force_refresh": true})
                .to_string(),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let current = forced["access_token"]
        .as_str()
        .expect("a new token")
        .to_owned();
    assert_ne!(current, before.token.expose().as_str());

    // The next upload is refused 40001, then made with the token WeChat holds now, which
    // replaces the dead one in the table for every instance.
    let second = ship(&app, &url, &shipped[1], "token-ship-1", &virtual_goods).await;
    assert_eq!(second.status, 201, "{}", second.text());
    assert_eq!(
        second.json()["shipping"]["upload_state"],
        "UPLOADED",
        "{}",
        second.text()
    );
    let after = app
        .store
        .get_access_token(APPID)
        .await
        .unwrap()
        .expect("shared token");
    assert_eq!(
        after.token.expose().as_str(),
        current,
        "the table holds the live token"
    );
    let tid = app.order(&shipped[1]).await.transaction_id.unwrap();
    let wechat = sim_shipping(&app, &tid).await;
    assert_eq!(wechat["force_refreshes"], 1, "never forced by us: {wechat}");
}
