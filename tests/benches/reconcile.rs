//! The bill reconciliation (issue 16) over a 100,000-row trade bill against embedded Dynoxide:
//! `reconcile_bill` as the bill-reconciler runs it, on a day whose every payment the table
//! has (the common case: each row's payment and order are read back and matched, the day's
//! payments are listed to find any the bill lacks). One measured run, not a criterion loop: seeding 100,000 payments
//! per sample would measure the seeding.
//!
//! The bill is written by the simulator's own bill writer (`sandbox::bills`, WeChat Pay's ALL
//! format, gzip, SHA-1 of the text) and served by a gateway stub that answers only the two
//! bill calls (a unit's edge: the download flow itself is tested against the simulator).
//! Reports rows/s, the peak RSS of the run (VmHWM, reset just before it through
//! `/proc/self/clear_refs`), and the DynamoDB calls by operation per row, counted by the
//! interceptor the tests use; checks every row matched and nothing applied or recorded.
//!
//! Run: `cargo bench -p wxpay-tests --bench reconcile` (`RECONCILE_BENCH_ROWS=n` for another
//! size).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use sandbox::bills::{BillEntry, EntryKind, gzip, render};
use shared::domain::{Order, Payment};
use shared::service::{Deps, ReconcileOutcome, ServiceSettings, reconcile_bill, system_clock};
use shared::store::embedded::Embedded;
use shared::store::{CallCounter, DynamoStore, StoreSupport, with_interceptor};
use shared::timefmt::CHINA;
use shared::wechatpay::bill::{BillLocation, sha1_hex};
use shared::wechatpay::gateway::PayError;
use shared::wechatpay::{
    NotificationError, PayGateway, PayParams, PrepayRequest, PrepayResponse, RefundRequest,
    RefundResult, Transaction, VerifiedNotification, WechatpayHeaders,
};
use time::{Duration, OffsetDateTime, Time};
use wxpay_tests::aws_sdk_dynamodb::{
    self,
    types::{StreamSpecification, StreamViewType},
};
use wxpay_tests::{order_at, payment_at, product};

const APPID: &str = "wxd678efh567hg6787";
const MCHID: &str = "1230000109";
const TABLE: &str = "orders-reconcile-bench";
const DEFAULT_ROWS: usize = 100_000;

/// WeChat Pay as far as a bill goes: the day's location, then its bytes.
struct BillOnly {
    location: BillLocation,
    gzip: Vec<u8>,
}

fn unsupported<T>(what: &'static str) -> Result<T, PayError> {
    Err(PayError::NotSupported(what))
}

#[async_trait]
impl PayGateway for BillOnly {
    async fn jsapi_prepay(&self, _: &PrepayRequest) -> Result<PrepayResponse, PayError> {
        unsupported("jsapi_prepay")
    }
    async fn query_by_out_trade_no(&self, _: &str) -> Result<Transaction, PayError> {
        unsupported("query_by_out_trade_no")
    }
    async fn query_by_transaction_id(&self, _: &str) -> Result<Transaction, PayError> {
        unsupported("query_by_transaction_id")
    }
    async fn close(&self, _: &str) -> Result<Option<String>, PayError> {
        unsupported("close")
    }
    async fn create_refund(&self, _: &RefundRequest) -> Result<RefundResult, PayError> {
        unsupported("create_refund")
    }
    async fn query_refund(&self, _: &str) -> Result<RefundResult, PayError> {
        unsupported("query_refund")
    }
    async fn apply_abnormal_refund(&self, _: &str, _: &str) -> Result<RefundResult, PayError> {
        unsupported("apply_abnormal_refund")
    }
    async fn verify_notification(
        &self,
        _: &WechatpayHeaders,
        _: &[u8],
        _: i64,
    ) -> Result<VerifiedNotification, NotificationError> {
        Err(NotificationError::MalformedEnvelope("not supported".into()))
    }
    async fn trade_bill(&self, _: time::Date) -> Result<BillLocation, PayError> {
        Ok(self.location.clone())
    }
    async fn download_bill(&self, _: &BillLocation) -> Result<Vec<u8>, PayError> {
        Ok(self.gzip.clone())
    }
    fn pay_params(&self, _: &str, _: i64) -> Result<PayParams, PayError> {
        unsupported("pay_params")
    }
}

fn main() {
    let rows = std::env::var("RECONCILE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROWS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(rows));
}

/// Turns the table's stream (NEW_AND_OLD_IMAGES) on or off.
async fn stream(client: &aws_sdk_dynamodb::Client, enabled: bool) {
    let mut spec = StreamSpecification::builder().stream_enabled(enabled);
    if enabled {
        spec = spec.stream_view_type(StreamViewType::NewAndOldImages);
    }
    client
        .update_table()
        .table_name(TABLE)
        .stream_specification(spec.build().expect("stream specification"))
        .send()
        .await
        .expect("UpdateTable of the stream");
}

/// Peak resident set of this process so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn run(n: usize) {
    let engine = Embedded::memory(TABLE).await.expect("embedded Dynoxide");
    let counter = CallCounter::new();
    let store = DynamoStore::new(with_interceptor(engine.client(), counter.clone()), TABLE);

    // Yesterday in Beijing, its orders paid over the day, by 1,000 buyers.
    let date = (OffsetDateTime::now_utc().to_offset(CHINA) - Duration::days(1)).date();
    let midnight = date.with_time(Time::MIDNIGHT).assume_offset(CHINA);
    let step = Duration::seconds(86_000) / n as u32;
    let tea = product("tea", 100, None);
    let paid: Vec<(Order, Payment)> = (0..n)
        .map(|i| {
            let at = midnight + step * i as u32;
            let placed = order_at(
                &format!("o_bench_{}", i % 1_000),
                &[(&tea, 1 + (i as i64 % 20))],
                at - Duration::minutes(1),
            );
            let payment = payment_at(&placed, &format!("4200000{}{i:010}", date.year()), at);
            let plan = placed.plan_paid(&payment, at).expect("payable");
            let order = plan.order().expect("the paid order").clone();
            (order, payment)
        })
        .collect();
    // Dynoxide numbers each stream record from a MAX over all the table's records (a scan per
    // write): seeding with the table's stream on is quadratic (20,000 payments took 52 s,
    // 100,000 did not finish in 34 min). Off while seeding, on again for the run.
    stream(engine.client(), false).await;
    println!("reconcile bench: seeding {n} paid orders and their payments of {date} ...");
    let seeding = Instant::now();
    store
        .put_paid_orders(&paid)
        .await
        .expect("seed paid orders");
    let seeded_in = seeding.elapsed();
    stream(engine.client(), true).await;
    let payments: Vec<Payment> = paid.into_iter().map(|(_, p)| p).collect();
    let payer = "o_bench_payer";
    let entries: Vec<BillEntry> = payments
        .iter()
        .map(|p| BillEntry {
            at: p.success_time,
            appid: APPID.into(),
            mchid: MCHID.into(),
            transaction_id: p.transaction_id.clone(),
            out_trade_no: p.out_trade_no.to_string(),
            openid: payer.to_owned(),
            description: "Milk tea".into(),
            attach: String::new(),
            kind: EntryKind::Payment {
                amount: p.amount.fen(),
            },
        })
        .collect();
    let text = render(entries).expect("a bill");
    let bill = BillOnly {
        location: BillLocation {
            hash_type: "SHA1".into(),
            hash_value: sha1_hex(text.as_bytes()),
            download_url: "https://api.mch.weixin.qq.com/v3/billdownload/file?token=bench".into(),
        },
        gzip: gzip(&text).expect("gzip"),
    };
    println!(
        "reconcile bench: seeded in {:.1} s ({:.0} items/s); bill {} rows, {:.1} MB of text, {:.1} MB gzip",
        seeded_in.as_secs_f64(),
        2.0 * n as f64 / seeded_in.as_secs_f64(),
        n,
        text.len() as f64 / 1e6,
        bill.gzip.len() as f64 / 1e6
    );
    drop(text);
    drop(payments);
    let deps = Deps {
        store: Arc::new(store.clone()),
        gateway: Arc::new(bill),
        clock: system_clock(),
        settings: ServiceSettings {
            appid: APPID.to_owned(),
            mchid: MCHID.to_owned(),
            order_ttl: Duration::minutes(30),
        },
        catalog: Default::default(),
    };

    // Peak RSS from here on: "5" resets VmHWM to the current RSS (Linux).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = peak_rss_kib();
    counter.reset();
    let started = Instant::now();
    let outcome = reconcile_bill(&deps, date, None).await.expect("reconciled");
    let elapsed = started.elapsed();
    let peak = peak_rss_kib();
    let calls = counter.snapshot();

    let ReconcileOutcome::Reconciled(report) = outcome else {
        panic!("the bill was ready");
    };
    assert_eq!(report.rows, n as u64, "{report:?}");
    assert_eq!(
        report.matched, n as u64,
        "every row matched, its order paid by it"
    );
    assert_eq!((report.recovered, report.mismatch_count), (0, 0));
    assert_eq!(calls.calls_of("TransactWriteItems"), 0, "nothing applied");
    assert_eq!(calls.calls_of("Scan"), 0);

    println!(
        "reconcile bench: {n} rows in {:.2} s = {:.0} rows/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "reconcile bench: peak RSS {:.1} MiB during the run ({:.1} MiB at its start{})",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        if reset {
            ""
        } else {
            "; clear_refs refused: the peak includes the seeding"
        }
    );
    let total = calls.total_calls();
    println!(
        "reconcile bench: {total} DynamoDB calls = {:.4} per row: {:?}",
        total as f64 / n as f64,
        calls
    );
}
