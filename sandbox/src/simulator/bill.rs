//! The simulator's trade bills: a Beijing day's payments and refunds written as WeChat Pay's
//! ALL bill, and the short-lived download tokens that serve them, so the reconciler can be
//! run locally against the same file format it meets in production.
//!
//! Format (`reference/wechatpay-refunds-bills.md` sections 7 and 9): header without
//! backticks, every data cell after one backtick, the summary, `\n` line ends, UTF-8.
//!
//! Written here independently of `shared::wechatpay::bill` (which reads bills), so a test of
//! the two together checks the parser against the format, not against itself. Choices the
//! reference leaves open follow its own sample (7.4): a 0.60 % fee rounded to the fen,
//! negative on refund rows, and a refund row timed at its initiation.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use shared::timefmt::CHINA;
use time::{Date, Duration, OffsetDateTime};

/// WeChat Pay's `download_url` is valid for 5 minutes (reference 6.1).
pub(crate) const DOWNLOAD_TTL: Duration = Duration::minutes(5);

/// Bills held for download at once; older tokens give way (each bill is a copy of a day).
const MAX_STORED: usize = 32;

/// The download path of every `download_url`; its answers are not signed.
pub(crate) const DOWNLOAD_PATH: &str = "/v3/billdownload/file";

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// The simulated merchant's fee rate: 0.60 %, as 6 per mille.
const FEE_PER_MILLE: i64 = 6;
const FEE_RATE: &str = "0.60%";

/// Request extension set by a `tamper` fault: the download is altered after its hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TamperBill;

/// One line of a bill, from the simulator's own records (public for benchmarks that need a
/// bill of a size no simulator run would make).
#[derive(Debug, Clone)]
pub struct BillEntry {
    pub at: OffsetDateTime,
    pub appid: String,
    pub mchid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub openid: String,
    pub description: String,
    pub attach: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    /// A payment of `amount` fen.
    Payment { amount: i64 },
    /// A refund of `amount` fen, its status when the bill is made.
    Refund {
        refund_id: String,
        out_refund_no: String,
        amount: i64,
        status: String,
    },
}

/// A bill waiting for its download.
#[derive(Debug, Clone)]
pub(crate) struct StoredBill {
    pub(crate) text: String,
    pub(crate) gzip: bool,
    pub(crate) expires_at: OffsetDateTime,
}

/// Download tokens and their bills.
#[derive(Debug, Default)]
pub(crate) struct BillStore {
    bills: Vec<(String, StoredBill)>,
}

impl BillStore {
    pub(crate) fn insert(&mut self, token: String, bill: StoredBill, now: OffsetDateTime) {
        self.bills.retain(|(_, b)| b.expires_at > now);
        if self.bills.len() >= MAX_STORED {
            self.bills.remove(0);
        }
        self.bills.push((token, bill));
    }

    /// The bill of an unexpired token.
    pub(crate) fn get(&self, token: &str, now: OffsetDateTime) -> Option<StoredBill> {
        self.bills
            .iter()
            .find(|(t, b)| t == token && b.expires_at > now)
            .map(|(_, b)| b.clone())
    }
}

/// The Beijing date of an instant.
pub(crate) fn beijing_date(t: OffsetDateTime) -> Date {
    t.to_offset(CHINA).date()
}

/// `entries` as an ALL bill, oldest first; `None` for a day without any (WeChat Pay's
/// `NO_STATEMENT_EXIST`).
pub fn render(mut entries: Vec<BillEntry>) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then_with(|| a.transaction_id.cmp(&b.transaction_id))
    });
    let mut text = format!("{HEADER}\n");
    let (mut settlement, mut refunded, mut fees, mut ordered, mut requested) = (0, 0, 0, 0, 0);
    for e in &entries {
        let time = beijing_time(e.at);
        let (state, settle, refund_id, out_refund_no, refund, refund_type, status, fee, amount) =
            match &e.kind {
                EntryKind::Payment { amount } => (
                    "SUCCESS",
                    *amount,
                    "0",
                    "0",
                    0,
                    "",
                    "",
                    fee_fen(*amount),
                    *amount,
                ),
                EntryKind::Refund {
                    refund_id,
                    out_refund_no,
                    amount,
                    status,
                } => (
                    "REFUND",
                    0,
                    refund_id.as_str(),
                    out_refund_no.as_str(),
                    *amount,
                    "ORIGINAL",
                    status.as_str(),
                    -fee_fen(*amount),
                    0,
                ),
            };
        settlement += settle;
        refunded += refund;
        fees += fee;
        ordered += amount;
        requested += refund;
        let cells = [
            time.as_str(),
            &e.appid,
            &e.mchid,
            "0",
            "",
            &e.transaction_id,
            &e.out_trade_no,
            &e.openid,
            "JSAPI",
            state,
            "OTHERS",
            "CNY",
            &yuan(settle),
            "0.00",
            refund_id,
            out_refund_no,
            &yuan(refund),
            "0.00",
            refund_type,
            status,
            &free_text(&e.description),
            &free_text(&e.attach),
            &fee_yuan(fee),
            FEE_RATE,
            &yuan(amount),
            &yuan(refund),
            "",
        ];
        text.push_str(&data_line(&cells));
    }
    text.push_str(SUMMARY_HEADER);
    text.push('\n');
    text.push_str(&data_line(&[
        &entries.len().to_string(),
        &yuan(settlement),
        &yuan(refunded),
        "0.00",
        &fee_yuan(fees),
        &yuan(ordered),
        &yuan(requested),
    ]));
    Some(text)
}

/// Each cell after WeChat Pay's backtick, comma-separated, `\n`-terminated.
fn data_line(cells: &[&str]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push('`');
        line.push_str(cell);
    }
    line.push('\n');
    line
}

/// WeChat Pay neither quotes nor escapes (reference 7.6 step 7, unconfirmed): a comma or line
/// break in a description would break the row, so the simulator writes them as a full-width
/// comma and a space.
fn free_text(s: &str) -> String {
    s.replace(',', "，").replace(['\r', '\n'], " ")
}

/// `2026-03-01 09:12:45`, Beijing time.
fn beijing_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Fen as yuan with two decimals.
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

/// A fee in fen as yuan with five decimals (`0.60000`), as the bills write fees.
fn fee_yuan(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

/// 0.60 % of `amount` fen, rounded half up to the fen (real bills show fen-rounded fees).
fn fee_fen(amount: i64) -> i64 {
    (amount * FEE_PER_MILLE + 500) / 1000
}

/// The gzip stream of a bill (`tar_type=GZIP`).
pub fn gzip(text: &str) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes())?;
    encoder.finish()
}

/// The bill with one figure changed after its hash was taken: the first digit of the first
/// data row (its trade time's year), as an intermediary altering a figure would. Still UTF-8,
/// still the ALL layout, the summary still adds up: only the SHA-1 can tell.
pub(crate) fn tamper(text: &str) -> String {
    let body_start = text.find('\n').map_or(0, |i| i + 1);
    let mut bytes = text.as_bytes().to_vec();
    if let Some(digit) = bytes
        .iter_mut()
        .skip(body_start)
        .find(|b| b.is_ascii_digit())
    {
        *digit = if *digit == b'0' { b'1' } else { b'0' };
    }
    // Only an ASCII digit was replaced by another: still UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn money_is_written_as_wechat_pay_writes_it() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(198_000), "1980.00");
        assert_eq!(yuan(-18), "-0.18");
        assert_eq!(fee_yuan(60), "0.60000");
        assert_eq!(fee_fen(10_000), 60);
        assert_eq!(fee_fen(1), 0);
        assert_eq!(fee_fen(84), 1); // 0.504 fen rounds up
        assert_eq!(
            beijing_time(datetime!(2026-02-28 16:00:00 UTC)),
            "2026-03-01 00:00:00"
        );
    }

    #[test]
    fn free_text_cannot_break_a_row() {
        assert_eq!(free_text("豆,滤纸\r\nx"), "豆，滤纸  x");
    }
}
