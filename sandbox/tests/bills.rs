//! The simulator's trade bills through the backend's real client (`HttpPayGateway::trade_bill`
//! and `download_bill`) and parser (`shared::wechatpay::bill`): a day with payments and a
//! refund downloads, verifies and parses to the exact amounts; an empty day, a bill not ready
//! and a tampered download are each their own error.

use std::time::Duration;

use sandbox::{Fault, PayRequest, SimulatorHandle};
use shared::timefmt::{CHINA, parse_rfc3339, to_wechat};
use shared::wechatpay::bill::{BillError, BillTradeState, TradeBillReader, check_download};
use shared::wechatpay::{
    HttpPayGateway, MerchantSigner, PayError, PayGateway, PrepayRequest, RefundRequest, nonce,
};
use time::{Date, OffsetDateTime};
use wxpay_tests::simulated::{
    APPID, MCH_SERIAL, MCHID, merchant_key, simulator_config, simulator_gateway, start_simulator,
};

const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

async fn simulator() -> SimulatorHandle {
    start_simulator(simulator_config()).await
}

fn gateway(sim: &SimulatorHandle) -> HttpPayGateway {
    // Nobody listens: the notifications are not what these tests look at.
    simulator_gateway(sim, "http://127.0.0.1:9/notify/wechatpay")
}

fn today() -> Date {
    OffsetDateTime::now_utc().to_offset(CHINA).date()
}

/// Prepays and pays `out_trade_no` for `total` fen; its transaction_id and Beijing date.
async fn paid(
    sim: &SimulatorHandle,
    client: &HttpPayGateway,
    out_trade_no: &str,
    total: i64,
) -> (String, Date) {
    client
        .jsapi_prepay(&PrepayRequest {
            out_trade_no: out_trade_no.into(),
            description: "咖啡豆, 2 袋".into(),
            time_expire: to_wechat(OffsetDateTime::now_utc() + Duration::from_secs(1800)),
            attach: Some("cart=42".into()),
            amount_total: total,
            payer_openid: OPENID.into(),
        })
        .await
        .unwrap();
    let outcome = sim.pay(&PayRequest::new(out_trade_no)).unwrap();
    let success_time = sim
        .transaction(out_trade_no)
        .and_then(|t| t.success_time)
        .unwrap();
    let date = parse_rfc3339(&success_time)
        .unwrap()
        .to_offset(CHINA)
        .date();
    (outcome.transaction_id, date)
}

#[tokio::test]
async fn a_days_bill_downloads_verifies_and_parses_to_the_exact_amounts() {
    let sim = simulator().await;
    let client = gateway(&sim);
    let (big, date) = paid(&sim, &client, "BILL-ORDER-BIG", 198_000).await;
    let (small, _) = paid(&sim, &client, "BILL-ORDER-SMALL", 1).await;
    let refund = client
        .create_refund(&RefundRequest {
            out_trade_no: "BILL-ORDER-BIG".into(),
            out_refund_no: "BILL-REFUND-1".into(),
            reason: None,
            refund: 30_000,
            total: 198_000,
        })
        .await
        .unwrap();

    let location = client.trade_bill(date).await.unwrap();
    assert_eq!(location.hash_type, "SHA1");
    assert_eq!(location.hash_value.len(), 40);
    assert!(
        location.download_url.starts_with(&sim.base_url()),
        "{}",
        location.download_url
    );
    let download = client.download_bill(&location).await.unwrap();
    assert_eq!(&download[..2], [0x1f, 0x8b], "a gzip stream");

    let summary = check_download(&download, &location).unwrap();
    assert_eq!(summary.rows, 3);
    assert_eq!(summary.amount_fen, 198_001);
    assert_eq!(summary.settlement_amount_fen, 198_001);
    assert_eq!(summary.refund_fen, 30_000);
    assert_eq!(summary.refund_requested_fen, 30_000);
    // 0.60 % rounded to the fen: 11.88 + 0.00 paid, 1.80 given back on the refund.
    assert_eq!(summary.fee_millifen, 1_188_000 - 180_000);

    let rows: Vec<_> = TradeBillReader::gzip(&download[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let payment = |id: &str| {
        rows.iter()
            .find(|r| r.is_payment() && r.transaction_id == id)
            .unwrap()
    };
    let big_row = payment(&big);
    assert_eq!(big_row.out_trade_no, "BILL-ORDER-BIG");
    assert_eq!(big_row.amount_fen, 198_000);
    assert_eq!(big_row.settlement_amount_fen, 198_000);
    assert_eq!(
        (big_row.appid.as_str(), big_row.mchid.as_str()),
        (APPID, MCHID)
    );
    assert_eq!(big_row.openid, OPENID);
    assert_eq!(big_row.trade_type, "JSAPI");
    assert_eq!(big_row.attach.as_deref(), Some("cart=42"));
    // WeChat Pay's bills neither quote nor escape: the comma comes out full-width.
    assert_eq!(big_row.description, "咖啡豆， 2 袋");
    let paid_at = sim
        .transaction("BILL-ORDER-BIG")
        .and_then(|t| t.success_time)
        .unwrap();
    assert_eq!(big_row.trade_time, parse_rfc3339(&paid_at).unwrap());
    assert_eq!(payment(&small).amount_fen, 1);

    let refund_row = rows.iter().find(|r| r.is_refund()).unwrap();
    assert_eq!(refund_row.trade_state, BillTradeState::Refund);
    assert_eq!(refund_row.out_trade_no, "BILL-ORDER-BIG");
    assert_eq!(refund_row.transaction_id, big);
    assert_eq!(refund_row.out_refund_no.as_deref(), Some("BILL-REFUND-1"));
    assert_eq!(
        refund_row.refund_id.as_deref(),
        Some(refund.refund_id.as_str())
    );
    assert_eq!(
        (refund_row.refund_requested_fen, refund_row.refund_fen),
        (30_000, 30_000)
    );
    assert_eq!(refund_row.amount_fen, 0);
    assert_eq!(refund_row.refund_status.as_deref(), Some("PROCESSING"));

    // The handle serves the same file.
    let text = sim.trade_bill(date).unwrap();
    shared::wechatpay::verify_sha1(text.as_bytes(), &location.hash_value).unwrap();
}

#[tokio::test]
async fn an_empty_day_has_no_statement_and_a_bill_not_ready_says_so() {
    let sim = simulator().await;
    let client = gateway(&sim);
    let yesterday = today().previous_day().unwrap();
    let e = client.trade_bill(yesterday).await.unwrap_err();
    assert!(matches!(e, PayError::NoStatement), "{e:?}");
    assert_eq!(e.code(), Some("NO_STATEMENT_EXIST"));
    assert!(sim.trade_bill(yesterday).is_none());

    let (_, date) = paid(&sim, &client, "BILL-ORDER-LATE", 500).await;
    sim.inject_fault(Fault::bill_not_ready(1)).unwrap();
    let e = client.trade_bill(date).await.unwrap_err();
    assert!(matches!(e, PayError::StatementNotReady), "{e:?}");
    assert!(
        !e.retryable(),
        "not within one call's retries: half an hour later"
    );
    // Ready on the next ask.
    client.trade_bill(date).await.unwrap();

    // Neither the future nor beyond 3 months.
    for date in [
        today().next_day().unwrap(),
        today() - time::Duration::days(200),
    ] {
        match client.trade_bill(date).await.unwrap_err() {
            PayError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (400, "INVALID_REQUEST"))
            }
            other => panic!("{date}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_tampered_download_fails_its_hash() {
    let sim = simulator().await;
    let client = gateway(&sim);
    let (_, date) = paid(&sim, &client, "BILL-ORDER-TAMPER", 2_590).await;
    let location = client.trade_bill(date).await.unwrap();

    sim.inject_fault(Fault::tampered_bill(1)).unwrap();
    let tampered = client.download_bill(&location).await.unwrap();
    // It still parses, summary and all: only the hash tells.
    TradeBillReader::gzip(&tampered[..]).finish().unwrap();
    assert!(matches!(
        check_download(&tampered, &location).unwrap_err(),
        BillError::HashMismatch { .. }
    ));

    // The fault is used up: the same URL now serves the true file.
    let honest = client.download_bill(&location).await.unwrap();
    assert_eq!(
        check_download(&honest, &location).unwrap().amount_fen,
        2_590
    );
}

/// The download is merchant-signed like any call but answered unsigned (WeChat Pay's rule,
/// reference 6.3), and its token expires with its bill.
#[tokio::test]
async fn the_download_needs_a_signed_request_and_is_answered_unsigned() {
    let sim = simulator().await;
    let client = gateway(&sim);
    let (_, date) = paid(&sim, &client, "BILL-ORDER-RAW", 100).await;
    let location = client.trade_bill(date).await.unwrap();
    let url = reqwest::Url::parse(&location.download_url).unwrap();
    assert_eq!(url.path(), "/v3/billdownload/file");
    let path_and_query = format!("{}?{}", url.path(), url.query().unwrap());

    let http = reqwest::Client::new();
    let unsigned = http
        .get(url.clone())
        .header("accept", "*/*")
        .header("user-agent", "bill-tests")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    let authorization = MerchantSigner::new(MCHID, MCH_SERIAL, merchant_key()).authorization(
        "GET",
        &path_and_query,
        b"",
        OffsetDateTime::now_utc().unix_timestamp(),
        &nonce(),
    );
    let signed = http
        .get(url.clone())
        .header("accept", "*/*")
        .header("user-agent", "bill-tests")
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 200);
    assert!(signed.headers().get("wechatpay-signature").is_none());

    let unknown = shared::wechatpay::BillLocation {
        download_url: format!("{}/v3/billdownload/file?token=nope", sim.base_url()),
        ..location
    };
    match client.download_bill(&unknown).await.unwrap_err() {
        PayError::Api { status, .. } => assert_eq!(status, 400),
        other => panic!("{other:?}"),
    }
}

/// The controls: a tamper fault only on the download, with a 2xx status.
#[tokio::test]
async fn tamper_faults_are_checked() {
    let sim = simulator().await;
    for fault in [
        Fault {
            tamper: true,
            ..Fault::new("/v3/pay/transactions/jsapi", 200, "X", 1)
        },
        Fault {
            tamper: true,
            ..Fault::new("/v3/billdownload/file", 500, "X", 1)
        },
    ] {
        assert_eq!(sim.inject_fault(fault).unwrap_err().status, 400);
    }
    sim.inject_fault(Fault::tampered_bill(2)).unwrap();
    assert_eq!(sim.pending_faults().len(), 1);

    let response = reqwest::Client::new()
        .post(format!("{}/sandbox/fail", sim.base_url()))
        .header("content-type", "application/json")
        .body(r#"{"path_prefix": "/v3/billdownload/file", "status": 200, "tamper": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(sim.pending_faults().len(), 2);
}
