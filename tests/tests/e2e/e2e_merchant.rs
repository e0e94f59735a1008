//! merchant-api, the built binary over plain HTTP: only the merchant's bearer token opens
//! it (never a user's session token), and its lookups and refusals answer as DESIGN.md
//! section 3 says, against the simulator and embedded Dynoxide.

use sandbox::simulator::PayRequest;
use serde_json::Value;
use shared::domain::OrderStatus;

use crate::e2e_support::*;

const TOKEN: &str = "merchant-e2e-token-0123456789abcdef-0123";

/// merchant-api as deployed off AWS: `MERCHANT_AUTH=token`, no debug identity.
async fn start_merchant_api(app: &TestApp) -> (FunctionProcess, String) {
    let mut env: Vec<(String, String)> = app
        .token_env(Some(&app.notify_url))
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AUTH_") && !k.starts_with("SESSION_"))
        .collect();
    env.push(("MERCHANT_AUTH".into(), "token".into()));
    env.push(("MERCHANT_API_TOKEN".into(), TOKEN.into()));
    let mut process = FunctionProcess::spawn(Function::MerchantApi, &env);
    let url = process.wait_http().await;
    (process, url)
}

async fn get(app: &TestApp, url: &str, authorization: Option<&str>) -> Reply {
    let mut request = app.http.get(url);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    Reply::read(request.send().await.expect("merchant-api answers")).await
}

async fn post(app: &TestApp, url: &str, key: &str, body: Value) -> Reply {
    let request = app
        .http
        .post(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string());
    Reply::read(request.send().await.expect("merchant-api answers")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_merchant_opens_merchant_api_and_its_lookups_answer_whole_orders() {
    let app = spawn_app().await;
    let (mut merchant, url) = start_merchant_api(&app).await;
    let (_, no) = app
        .place("o_alice", "merchant-e2e-1", &[(SKU_LIMITED, 2)])
        .await;
    let order_url = format!("{url}/merchant/orders/{no}");

    // No credentials, a wrong token, a user's own session token: 401, nothing said.
    let user = app.bearer("o_alice");
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token"),
        Some(user.as_str()),
        Some(TOKEN),
    ] {
        let reply = get(&app, &order_url, auth).await;
        reply.assert_error(401, "UNAUTHENTICATED");
        assert!(!reply.text().contains(no.as_str()));
    }

    // A PENDING order cannot be refunded, and nothing is reserved.
    let refused = post(
        &app,
        &format!("{order_url}/refunds"),
        "merchant-refund-1",
        serde_json::json!({"amount": 1}),
    )
    .await;
    refused.assert_error(409, "ORDER_NOT_PAID");

    // Paid: the whole order by out_trade_no and by transaction_id.
    let paid = app
        .sim
        .pay(&PayRequest {
            deliveries: 1,
            ..PayRequest::new(&no)
        })
        .expect("the user pays");
    app.wait_acknowledged(&no).await;
    assert_eq!(app.order(&no).await.status, OrderStatus::Paid);
    let bearer = format!("Bearer {TOKEN}");
    let whole = get(&app, &order_url, Some(&bearer)).await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let body = whole.json();
    assert_eq!(body["out_trade_no"], no.as_str());
    assert_eq!(body["status"], "PAID");
    assert_eq!(body["openid"], "o_alice");
    assert_eq!(
        body["payment"]["transaction_id"],
        paid.transaction_id.as_str()
    );
    assert_eq!(body["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["anomalies"], serde_json::json!([]));
    assert_eq!(body["refunds"], serde_json::json!([]));
    let by_txn = get(
        &app,
        &format!(
            "{url}/merchant/orders?transaction_id={}",
            paid.transaction_id
        ),
        Some(&bearer),
    )
    .await;
    assert_eq!(by_txn.json(), body);

    // The anomalies list refuses a cursor it did not hand out.
    for bad in ["not-a-cursor", "eyJ4IjoxfQ", "%00"] {
        get(
            &app,
            &format!("{url}/merchant/anomalies?cursor={bad}"),
            Some(&bearer),
        )
        .await
        .assert_error(400, "INVALID_REQUEST");
    }

    // The payment's order.paid can be sent again; an unknown or malformed id names nothing.
    let paid_order = app.order(&no).await;
    let event_id = shared::domain::OrderEvent::paid_id(&paid_order.out_trade_no);
    let again = post(
        &app,
        &format!("{url}/merchant/events/{event_id}/redeliver"),
        "redeliver-1",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["id"], event_id.as_str());
    assert_eq!(again.json()["type"], "order.paid");
    assert_eq!(again.json()["status"], "PENDING");
    for unknown in ["evt_nope_1", "evt.dotted", "not-an-event"] {
        post(
            &app,
            &format!("{url}/merchant/events/{unknown}/redeliver"),
            "redeliver-2",
            serde_json::json!({}),
        )
        .await
        .assert_error(404, "EVENT_NOT_FOUND");
    }

    // Bad refunds change nothing.
    for (key, body, status, code) in [
        (
            "merchant-refund-2",
            serde_json::json!({"amount": 0}),
            422,
            "INVALID_REQUEST",
        ),
        (
            "merchant-refund-3",
            serde_json::json!({"amount": 999999}),
            422,
            "REFUND_EXCEEDS_PAID",
        ),
        (
            "merchant-refund-4",
            serde_json::json!({"amount": 1, "restock": [{"sku_id": "nope", "quantity": 1}]}),
            422,
            "INVALID_REQUEST",
        ),
        (
            "merchant-refund-5",
            serde_json::json!({"amount": "1"}),
            400,
            "INVALID_REQUEST",
        ),
    ] {
        post(&app, &format!("{order_url}/refunds"), key, body)
            .await
            .assert_error(status, code);
    }
    get(
        &app,
        &format!("{url}/merchant/orders/NOPE00000000"),
        Some(&bearer),
    )
    .await
    .assert_error(404, "ORDER_NOT_FOUND");
    get(
        &app,
        &format!("{url}/merchant/refunds/Rnope"),
        Some(&bearer),
    )
    .await
    .assert_error(404, "REFUND_NOT_FOUND");
    let after = app.order(&no).await;
    assert_eq!(
        (after.refund_pending_total.fen(), after.refunded_total.fen()),
        (0, 0)
    );

    // The token never reaches the logs.
    merchant.kill();
    let logs = merchant.stdout().join("\n") + &merchant.stderr().join("\n");
    assert!(!logs.contains(TOKEN));
    assert!(
        logs.contains("merchant call"),
        "every call is logged with its caller"
    );
}

/// The order once it reaches `status` (the simulator settles refunds asynchronously).
async fn order_in(app: &TestApp, no: &str, status: OrderStatus) -> shared::domain::Order {
    let start = std::time::Instant::now();
    loop {
        let o = app.order(no).await;
        if o.status == status {
            return o;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "order {no} still {} (waiting for {status})",
            o.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_refund_part_then_the_rest_and_the_order_is_refunded_with_its_stock_back() {
    // Refunds settle 200 ms after acceptance; no one-minute spacing between them here.
    let app = spawn_app_with(|c| {
        c.refund_delay = std::time::Duration::from_millis(200);
        c.refund_spacing = std::time::Duration::ZERO;
    })
    .await;
    let (_merchant, url) = start_merchant_api(&app).await;
    let (_, no) = app
        .place("o_alice", "merchant-e2e-2", &[(SKU_LIMITED, 3)])
        .await;
    app.sim
        .pay(&PayRequest {
            deliveries: 1,
            ..PayRequest::new(&no)
        })
        .expect("the user pays");
    app.wait_acknowledged(&no).await;
    let total = app.order(&no).await.amount_total.fen();
    let stock_paid = app.product(SKU_LIMITED).await;
    let refunds = format!("{url}/merchant/orders/{no}/refunds");

    // Part: one unit back, WeChat Pay accepts (201 PROCESSING), then notifies SUCCESS.
    let part = LIMITED_PRICE;
    let body = serde_json::json!({"amount": part, "reason": "one returned",
        "restock": [{"sku_id": SKU_LIMITED, "quantity": 1}]});
    let first = post(&app, &refunds, "merchant-e2e-refund-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.json()["status"], "PROCESSING");
    let out_refund_no = first.json()["out_refund_no"].as_str().unwrap().to_owned();
    // A retry of the same request is the same refund, not a second one.
    let again = post(&app, &refunds, "merchant-e2e-refund-1", body).await;
    assert_eq!(again.json()["out_refund_no"], out_refund_no.as_str());
    let order = order_in(&app, &no, OrderStatus::PartiallyRefunded).await;
    assert_eq!(
        (order.refunded_total.fen(), order.refund_pending_total.fen()),
        (part, 0)
    );
    let bearer = format!("Bearer {TOKEN}");
    let refund = get(
        &app,
        &format!("{url}/merchant/refunds/{out_refund_no}"),
        Some(&bearer),
    )
    .await;
    assert_eq!(refund.json()["status"], "SUCCESS", "{}", refund.text());
    let tea = app.product(SKU_LIMITED).await;
    assert_eq!(
        (tea.sold, tea.available()),
        (stock_paid.sold - 1, stock_paid.available().map(|a| a + 1))
    );
    // The rest: REFUNDED; nothing more can be refunded.
    let rest = post(
        &app,
        &refunds,
        "merchant-e2e-refund-2",
        serde_json::json!({"amount": total - part}),
    )
    .await;
    assert_eq!(rest.status, 201, "{}", rest.text());
    let done = order_in(&app, &no, OrderStatus::Refunded).await;
    assert_eq!(done.refunded_total.fen(), total);
    post(
        &app,
        &refunds,
        "merchant-e2e-refund-3",
        serde_json::json!({"amount": 1}),
    )
    .await
    .assert_error(422, "REFUND_EXCEEDS_PAID");
    let whole = get(&app, &format!("{url}/merchant/orders/{no}"), Some(&bearer)).await;
    assert_eq!(whole.json()["status"], "REFUNDED");
    assert_eq!(whole.json()["refunded_total"], total);
    let listed: Vec<(String, String, i64)> = whole.json()["refunds"]
        .as_array()
        .expect("refunds")
        .iter()
        .map(|r| {
            (
                r["out_refund_no"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
                r["amount"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        listed[0],
        (out_refund_no.clone(), "SUCCESS".to_owned(), part)
    );
    assert_eq!(
        (listed[1].1.as_str(), listed[1].2),
        ("SUCCESS", total - part)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abnormal_refund_is_kept_for_the_merchant_and_resolved_to_its_bank_account() {
    let app = spawn_app_with(|c| {
        c.refund_delay = std::time::Duration::from_millis(500);
        c.refund_spacing = std::time::Duration::ZERO;
    })
    .await;
    let (_merchant, url) = start_merchant_api(&app).await;
    let (_, no) = app
        .place("o_alice", "merchant-e2e-3", &[(SKU_LIMITED, 1)])
        .await;
    app.sim
        .pay(&PayRequest {
            deliveries: 1,
            ..PayRequest::new(&no)
        })
        .expect("the user pays");
    app.wait_acknowledged(&no).await;
    let total = app.order(&no).await.amount_total.fen();
    let asked = post(
        &app,
        &format!("{url}/merchant/orders/{no}/refunds"),
        "merchant-e2e-refund-abnormal",
        serde_json::json!({"amount": total}),
    )
    .await;
    assert_eq!(asked.status, 201, "{}", asked.text());
    let out_refund_no = asked.json()["out_refund_no"].as_str().unwrap().to_owned();
    // The user's card cannot take it: WeChat Pay notifies REFUND.ABNORMAL.
    app.sim
        .settle_refund(&out_refund_no, shared::wechatpay::RefundState::Abnormal, 1)
        .expect("abnormal");
    let bearer = format!("Bearer {TOKEN}");
    let refund_url = format!("{url}/merchant/refunds/{out_refund_no}");
    let start = std::time::Instant::now();
    loop {
        let whole = get(&app, &format!("{url}/merchant/orders/{no}"), Some(&bearer)).await;
        let kinds: Vec<String> = whole.json()["anomalies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["kind"].as_str().map(str::to_owned))
            .collect();
        if kinds.contains(&"REFUND_ABNORMAL".to_owned()) {
            assert_eq!(
                whole.json()["refund_pending_total"],
                total,
                "still reserved"
            );
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{}",
            whole.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Only MERCHANT_BANK_CARD is offered; then WeChat Pay pays it to the merchant's account
    // and the refund succeeds like any other.
    post(
        &app,
        &format!("{refund_url}/abnormal-refund"),
        "unused",
        serde_json::json!({"type": "USER_BANK_CARD"}),
    )
    .await
    .assert_error(422, "INVALID_REQUEST");
    let applied = post(
        &app,
        &format!("{refund_url}/abnormal-refund"),
        "unused",
        serde_json::json!({"type": "MERCHANT_BANK_CARD"}),
    )
    .await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let done = order_in(&app, &no, OrderStatus::Refunded).await;
    assert_eq!(
        (done.refunded_total.fen(), done.refund_pending_total.fen()),
        (total, 0)
    );
    post(
        &app,
        &format!("{refund_url}/abnormal-refund"),
        "unused",
        serde_json::json!({"type": "MERCHANT_BANK_CARD"}),
    )
    .await
    .assert_error(409, "REFUND_NOT_ABNORMAL");
}
