//! The trade bill (`bill_type=ALL`) as exact values (fen, UTC), read as a stream so a day of
//! any size passes in bounded memory, and checked whole (layout, summary sums, SHA-1) so a
//! reconciliation acts on nothing from a damaged file.
//!
//! The file (`reference/wechatpay-refunds-bills.md` sections 6.3 and 7): UTF-8 CSV, a header
//! line of Chinese column names, data rows whose every cell starts with one backtick, then a
//! summary header and one summary row, `\n` (or `\r\n`) line ends, no quoting. Amounts are yuan
//! with two decimals, fees yuan with five, times Beijing local. `hash_value` is the SHA-1 of
//! the *decompressed* file ("原始账单(gzip需要解压缩)的摘要值"; WeChat Pay's Java SDK digests
//! the `GZIPInputStream`, `DigestBillEntity`), not of the gzip bytes downloaded.
//!
//! Applying a bill safely takes two passes over the downloaded bytes: [`check_download`]
//! (every row parsed, the summary and the SHA-1 checked, nothing kept), then
//! [`TradeBillReader::gzip`] again to apply the rows one at a time.

use std::collections::VecDeque;
use std::io::{self, Read};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset, macros::format_description};

use super::crypto::Sha1;
use crate::timefmt::CHINA;

/// The ALL bill's detail header, verbatim and in order (reference 7.2).
pub const ALL_COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The ALL bill's summary header (reference 7.2).
pub const SUMMARY_COLUMNS: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];

// Positions in ALL_COLUMNS. Fixed positions are safe only because the header is checked to be
// exactly ALL_COLUMNS first: other bill types and the older layout move columns (reference
// 7.2, WxJava#308), and those are refused rather than read.
const TRADE_TIME: usize = 0;
const APPID: usize = 1;
const MCHID: usize = 2;
const SUB_MCHID: usize = 3;
const DEVICE_INFO: usize = 4;
const TRANSACTION_ID: usize = 5;
const OUT_TRADE_NO: usize = 6;
const OPENID: usize = 7;
const TRADE_TYPE: usize = 8;
const TRADE_STATE: usize = 9;
const BANK_TYPE: usize = 10;
const CURRENCY: usize = 11;
const SETTLEMENT_AMOUNT: usize = 12;
const COUPON_AMOUNT: usize = 13;
const REFUND_ID: usize = 14;
const OUT_REFUND_NO: usize = 15;
const REFUND_AMOUNT: usize = 16;
const RECHARGE_COUPON_REFUND: usize = 17;
const REFUND_TYPE: usize = 18;
const REFUND_STATUS: usize = 19;
const DESCRIPTION: usize = 20;
const ATTACH: usize = 21;
const FEE: usize = 22;
const FEE_RATE: usize = 23;
const AMOUNT: usize = 24;
const REFUND_REQUESTED: usize = 25;
const FEE_REMARK: usize = 26;

/// Amounts are yuan with (at most) two decimals: fen.
const FEN_DECIMALS: u32 = 2;
/// Fees are yuan with five decimals (`0.60000`): thousandths of a fen.
const MILLIFEN_DECIMALS: u32 = 5;

/// A row is a few hundred bytes; a "line" longer than this is not a bill (or is a
/// decompression bomb) and is refused before the CSV reader buffers it whole.
pub const MAX_LINE_BYTES: u64 = 64 * 1024;

/// The answer of `GET /v3/bill/tradebill`: where the day's file is and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillLocation {
    /// `SHA1`, the only value WeChat Pay documents.
    pub hash_type: String,
    /// SHA-1 of the decompressed file, 40 hex digits.
    pub hash_value: String,
    /// Valid for 5 minutes; fetched with a merchant-signed GET, answered unsigned.
    pub download_url: String,
}

/// 交易状态 of a bill row: what happened, not the order's state now.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BillTradeState {
    /// A payment.
    Success,
    /// A refund initiated that day (the row carries the refund's fields).
    Refund,
    /// A revoked 付款码 payment.
    Revoked,
    /// A value WeChat Pay may add later; kept for the reconciler to report.
    Other(String),
}

impl BillTradeState {
    fn parse(s: &str) -> Self {
        match s {
            "SUCCESS" => BillTradeState::Success,
            "REFUND" => BillTradeState::Refund,
            "REVOKED" => BillTradeState::Revoked,
            other => BillTradeState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BillTradeState::Success => "SUCCESS",
            BillTradeState::Refund => "REFUND",
            BillTradeState::Revoked => "REVOKED",
            BillTradeState::Other(s) => s,
        }
    }
}

impl std::fmt::Display for BillTradeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detail row of an ALL bill, backticks stripped, money in integer fen.
///
/// Which amount to reconcile (reference 7.6 step 10): a payment on `amount_fen` (订单金额,
/// the order's `amount.total`), a refund on `refund_requested_fen` (申请退款金额, the refund's
/// `amount.refund`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRow {
    /// The row's line in the file (1 = the header), for reports and errors.
    pub line: u64,
    /// 交易时间, Beijing time in the file, UTC here: the payment's success time, or when the
    /// refund was initiated.
    pub trade_time: OffsetDateTime,
    pub appid: String,
    pub mchid: String,
    /// 特约商户号; `None` for a direct merchant (the file writes `0`).
    pub sub_mchid: Option<String>,
    pub device_info: Option<String>,
    pub transaction_id: String,
    pub out_trade_no: String,
    /// 用户标识 (the payer's openid).
    pub openid: String,
    /// `JSAPI`, `NATIVE`, `APP`, ... (more may be added).
    pub trade_type: String,
    pub trade_state: BillTradeState,
    pub bank_type: String,
    pub currency: String,
    /// 应结订单金额: the order amount less non-recharge coupons; 0 on refund rows.
    pub settlement_amount_fen: i64,
    /// 代金券金额.
    pub coupon_amount_fen: i64,
    /// 微信退款单号; `None` on payment rows (the file writes `0`).
    pub refund_id: Option<String>,
    /// 商户退款单号; `None` on payment rows (the file writes `0`).
    pub out_refund_no: Option<String>,
    /// 退款金额: refunded settlement amount; 0 on payment rows.
    pub refund_fen: i64,
    /// 充值券退款金额.
    pub recharge_coupon_refund_fen: i64,
    /// 退款类型, e.g. `ORIGINAL`.
    pub refund_type: Option<String>,
    /// 退款状态 when the bill was made; never updated afterwards (query the refund for the
    /// final state, reference 7.3).
    pub refund_status: Option<String>,
    /// 商品名称 (the order's `description`).
    pub description: String,
    /// 商户数据包 (the order's `attach`).
    pub attach: Option<String>,
    /// 手续费 in thousandths of a fen (five decimals of yuan, kept exact); may be negative on
    /// refund rows (a fee given back).
    pub fee_millifen: i64,
    /// 费率, as written (`0.60%`).
    pub fee_rate: String,
    /// 订单金额: the order's total; 0 on refund rows.
    pub amount_fen: i64,
    /// 申请退款金额: the refund asked for; 0 on payment rows.
    pub refund_requested_fen: i64,
    pub fee_remark: Option<String>,
}

impl BillRow {
    pub fn is_payment(&self) -> bool {
        self.trade_state == BillTradeState::Success
    }

    pub fn is_refund(&self) -> bool {
        self.trade_state == BillTradeState::Refund
    }
}

/// The summary row: totals over every detail row, payments and refunds alike (reference 7.3:
/// 总交易单数 counts both kinds; each sum is its column's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillSummary {
    /// 总交易单数.
    pub rows: u64,
    /// 应结订单总金额.
    pub settlement_amount_fen: i64,
    /// 退款总金额.
    pub refund_fen: i64,
    /// 充值券退款总金额.
    pub recharge_coupon_refund_fen: i64,
    /// 手续费总金额, thousandths of a fen.
    pub fee_millifen: i64,
    /// 订单总金额.
    pub amount_fen: i64,
    /// 申请退款总金额.
    pub refund_requested_fen: i64,
}

/// Every way a bill can be unusable. Any of them means: apply nothing from this file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    /// The bytes could not be read or decompressed: a truncated or corrupt download, or a
    /// line longer than [`MAX_LINE_BYTES`].
    #[error("the bill could not be read (truncated or corrupt download?): {0}")]
    Read(String),
    /// The header is not the ALL layout (another bill type, the older layout, not a bill).
    #[error("not a trade bill in the ALL layout: {0}")]
    UnknownLayout(String),
    #[error("line {line}: {found} fields where the {part} has {expected}")]
    FieldCount {
        line: u64,
        part: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("line {line} ({row}): {column} {value:?} {problem}")]
    BadField {
        line: u64,
        /// The row's 商户订单号, or `summary`.
        row: String,
        column: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error("the bill ends without its summary (truncated?)")]
    MissingSummary,
    #[error("line {line}: data after the summary")]
    TrailingData { line: u64 },
    #[error("the summary's {column} is {summary} but the rows add up to {rows} ({unit})")]
    SummaryMismatch {
        column: &'static str,
        summary: i128,
        rows: i128,
        unit: &'static str,
    },
    #[error("hash_type {0:?} is not SHA1, the only one WeChat Pay documents")]
    UnsupportedHash(String),
    #[error(
        "the bill's SHA-1 is {actual} but WeChat Pay's hash_value is {expected}: damaged or tampered, discard it"
    )]
    HashMismatch { expected: String, actual: String },
}

/// SHA-1 of `data`, lower-case hex: what WeChat Pay puts in `hash_value` for a decompressed
/// bill (the simulator computes its bills' with this).
pub fn sha1_hex(data: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(data);
    sha1.finish_hex()
}

/// Checks a decompressed bill against `hash_value` (hex, any case). For a gzip download use
/// [`check_download`], which hashes while it decompresses.
pub fn verify_sha1(bill: &[u8], hash_value: &str) -> Result<(), BillError> {
    compare_hash(hash_value, sha1_hex(bill))
}

fn compare_hash(expected: &str, actual: String) -> Result<(), BillError> {
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(BillError::HashMismatch {
            expected: bounded(expected),
            actual,
        })
    }
}

fn check_hash_type(location: &BillLocation) -> Result<(), BillError> {
    if location.hash_type.eq_ignore_ascii_case("SHA1") {
        Ok(())
    } else {
        Err(BillError::UnsupportedHash(bounded(&location.hash_type)))
    }
}

/// The first pass over a downloaded (gzip) bill: decompresses, parses every row, checks the
/// summary against them and the SHA-1 against `location`, keeping nothing but the summary.
/// Only once this succeeds should the rows be applied (a second [`TradeBillReader::gzip`]).
pub fn check_download(gzip: &[u8], location: &BillLocation) -> Result<BillSummary, BillError> {
    TradeBillReader::gzip(gzip).finish_verified(location)
}

/// Hashes what the CSV reader pulls, notes where lines end (the CSV reader does not count
/// blank lines), and refuses to feed it an endless line.
struct Hashing<R> {
    inner: R,
    sha1: Sha1,
    /// Bytes pulled so far.
    offset: u64,
    /// Offsets of the `\n`s pulled but not yet behind the current record: only the CSV
    /// reader's read-ahead (8 KiB), so this stays small.
    newlines: VecDeque<u64>,
    /// Newlines already behind the records read.
    lines_before: u64,
    /// Bytes pulled since the current record started: with the CSV reader's own buffer
    /// (8 KiB), a bound on how much one record can make it hold.
    since_record: u64,
    /// Draining after the reader stopped: bytes go to the hash only, so no line limit.
    draining: bool,
}

impl<R> Hashing<R> {
    /// The 1-based line of the byte at `offset` (called with increasing offsets).
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|&at| at < offset) {
            self.newlines.pop_front();
            self.lines_before += 1;
        }
        self.lines_before + 1
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.draining && self.since_record > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        let n = self.inner.read(buf)?;
        // `Read` promises n <= buf.len(); `get` keeps a reader that breaks it from panicking.
        let read = buf.get(..n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "reader overran its buffer")
        })?;
        self.sha1.update(read);
        if !self.draining {
            let offset = self.offset;
            self.newlines.extend(
                read.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| offset + i as u64),
            );
        }
        self.offset += n as u64;
        self.since_record = self.since_record.saturating_add(n as u64);
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Header,
    Rows,
    Done,
}

/// Sums of the detail rows, to hold the summary to. i128: no row count or amount can
/// overflow them.
#[derive(Debug, Default)]
struct Tally {
    rows: u64,
    settlement_amount: i128,
    refund: i128,
    recharge_coupon_refund: i128,
    fee: i128,
    amount: i128,
    refund_requested: i128,
}

impl Tally {
    fn add(&mut self, row: &BillRow) {
        self.rows += 1;
        self.settlement_amount += i128::from(row.settlement_amount_fen);
        self.refund += i128::from(row.refund_fen);
        self.recharge_coupon_refund += i128::from(row.recharge_coupon_refund_fen);
        self.fee += i128::from(row.fee_millifen);
        self.amount += i128::from(row.amount_fen);
        self.refund_requested += i128::from(row.refund_requested_fen);
    }

    fn check(&self, s: &BillSummary) -> Result<(), BillError> {
        let pairs: [(&'static str, i128, i128, &'static str); 7] = [
            (SUMMARY_COLUMNS[0], s.rows.into(), self.rows.into(), "rows"),
            (
                SUMMARY_COLUMNS[1],
                s.settlement_amount_fen.into(),
                self.settlement_amount,
                "fen",
            ),
            (SUMMARY_COLUMNS[2], s.refund_fen.into(), self.refund, "fen"),
            (
                SUMMARY_COLUMNS[3],
                s.recharge_coupon_refund_fen.into(),
                self.recharge_coupon_refund,
                "fen",
            ),
            (
                SUMMARY_COLUMNS[4],
                s.fee_millifen.into(),
                self.fee,
                "thousandths of a fen",
            ),
            (SUMMARY_COLUMNS[5], s.amount_fen.into(), self.amount, "fen"),
            (
                SUMMARY_COLUMNS[6],
                s.refund_requested_fen.into(),
                self.refund_requested,
                "fen",
            ),
        ];
        match pairs
            .into_iter()
            .find(|(_, summary, rows, _)| summary != rows)
        {
            None => Ok(()),
            Some((column, summary, rows, unit)) => Err(BillError::SummaryMismatch {
                column,
                summary,
                rows,
                unit,
            }),
        }
    }
}

/// Reads an ALL trade bill one row at a time from any byte stream: the header is checked on
/// the first call, rows come out as they are read (never collected), and the summary is
/// checked against them at the end. Any error ends the reading; [`finish`](Self::finish)
/// reports it again.
///
/// As an iterator it yields `Ok(row)` until the summary (then ends) or one `Err` (then ends).
pub struct TradeBillReader<R: Read> {
    csv: csv::Reader<Hashing<R>>,
    record: csv::StringRecord,
    stage: Stage,
    tally: Tally,
    summary: Option<BillSummary>,
    failed: Option<BillError>,
}

impl<R: Read> TradeBillReader<GzDecoder<R>> {
    /// A reader of a gzip bill (`tar_type=GZIP`, what [`PayGateway::download_bill`] returns).
    ///
    /// [`PayGateway::download_bill`]: super::PayGateway::download_bill
    pub fn gzip(compressed: R) -> Self {
        TradeBillReader::new(GzDecoder::new(compressed))
    }
}

impl<R: Read> TradeBillReader<R> {
    /// A reader of an uncompressed bill. Reads nothing yet.
    pub fn new(bill: R) -> Self {
        let csv = csv::ReaderBuilder::new()
            .has_headers(false)
            // The header, detail rows and summary have different widths; each is checked
            // against its own expected width instead.
            .flexible(true)
            // WeChat Pay neither quotes nor escapes: a `"` is text, and a comma in free text
            // makes a row too wide, refused rather than shifted (reference 7.6 step 7).
            .quoting(false)
            .from_reader(Hashing {
                inner: bill,
                sha1: Sha1::new(),
                offset: 0,
                newlines: VecDeque::new(),
                lines_before: 0,
                since_record: 0,
                draining: false,
            });
        TradeBillReader {
            csv,
            record: csv::StringRecord::new(),
            stage: Stage::Header,
            tally: Tally::default(),
            summary: None,
            failed: None,
        }
    }

    /// The next detail row; `Ok(None)` once the summary has been read and checked.
    pub fn next_row(&mut self) -> Result<Option<BillRow>, BillError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.advance()
            .inspect_err(|e| self.failed = Some(e.clone()))
    }

    /// The checked summary, once every row has been read.
    pub fn summary(&self) -> Option<&BillSummary> {
        self.summary.as_ref()
    }

    /// Reads (and drops) the rows left and returns the checked summary.
    pub fn finish(mut self) -> Result<BillSummary, BillError> {
        self.drain_rows()
    }

    /// As [`finish`](Self::finish), and the SHA-1 of everything read must be `location`'s.
    /// A file that fails to parse is still hashed to its end: a mismatch then explains the
    /// failure (tampering) and is the error reported.
    pub fn finish_verified(mut self, location: &BillLocation) -> Result<BillSummary, BillError> {
        check_hash_type(location)?;
        let parsed = self.drain_rows();
        if let Err(BillError::Read(_)) = parsed {
            // The stream itself broke: there is no whole file to hash.
            return parsed;
        }
        let mut rest = self.csv.into_inner();
        rest.draining = true;
        io::copy(&mut rest, &mut io::sink()).map_err(|e| BillError::Read(e.to_string()))?;
        compare_hash(&location.hash_value, rest.sha1.finish_hex())?;
        parsed
    }

    fn drain_rows(&mut self) -> Result<BillSummary, BillError> {
        while self.next_row()?.is_some() {}
        self.summary.ok_or(BillError::MissingSummary)
    }

    fn advance(&mut self) -> Result<Option<BillRow>, BillError> {
        if self.stage == Stage::Header {
            self.read_header()?;
            self.stage = Stage::Rows;
        }
        if self.stage == Stage::Done {
            return Ok(None);
        }
        let Some(line) = self.read_nonblank()? else {
            return Err(BillError::MissingSummary);
        };
        // Header cells carry no backtick: the summary header is told from a row by its
        // first cell.
        if self.record.get(0) == Some(SUMMARY_COLUMNS[0]) {
            self.read_summary(line)?;
            self.stage = Stage::Done;
            return Ok(None);
        }
        let row = parse_row(&self.record, line)?;
        self.tally.add(&row);
        Ok(Some(row))
    }

    /// The next record that is not a blank line, and its line number; `None` at the end.
    fn read_nonblank(&mut self) -> Result<Option<u64>, BillError> {
        loop {
            self.csv.get_mut().since_record = 0;
            match self.csv.read_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(csv_error(e)),
            }
            let blank = self.record.iter().all(str::is_empty);
            if !blank {
                // The reader stands just past the record's terminator (or its `\r`): the
                // record's line is one more than the newlines before its last byte. (The
                // CSV reader's own line and start positions skip or misplace blank lines.)
                let end = self.csv.position().byte();
                return Ok(Some(self.csv.get_mut().line_of(end.saturating_sub(1))));
            }
        }
    }

    fn read_header(&mut self) -> Result<(), BillError> {
        if self.read_nonblank()?.is_none() {
            return Err(BillError::UnknownLayout("the file is empty".into()));
        }
        let cells: Vec<&str> = self
            .record
            .iter()
            .enumerate()
            .map(|(i, cell)| if i == 0 { strip_bom(cell) } else { cell })
            .collect();
        if cells == ALL_COLUMNS {
            return Ok(());
        }
        Err(BillError::UnknownLayout(describe_layout(&cells)))
    }

    fn read_summary(&mut self, header_line: u64) -> Result<(), BillError> {
        if !self.record.iter().eq(SUMMARY_COLUMNS) {
            let found: Vec<&str> = self.record.iter().collect();
            return Err(BillError::UnknownLayout(format!(
                "line {header_line}: summary header {:?}, expected {}",
                bounded(&found.join(",")),
                SUMMARY_COLUMNS.join(",")
            )));
        }
        let Some(line) = self.read_nonblank()? else {
            return Err(BillError::MissingSummary);
        };
        let summary = parse_summary(&self.record, line)?;
        self.tally.check(&summary)?;
        if let Some(line) = self.read_nonblank()? {
            return Err(BillError::TrailingData { line });
        }
        self.summary = Some(summary);
        Ok(())
    }
}

impl<R: Read> Iterator for TradeBillReader<R> {
    type Item = Result<BillRow, BillError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed.is_some() {
            return None;
        }
        self.next_row().transpose()
    }
}

fn csv_error(e: csv::Error) -> BillError {
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, .. } => BillError::Read(format!(
            "line {}: not UTF-8",
            pos.as_ref().map_or(0, |p| p.line())
        )),
        // A `GzDecoder` reports a cut-off stream as an I/O error (UnexpectedEof), and a bad
        // CRC or header as InvalidInput/InvalidData.
        _ => BillError::Read(e.to_string()),
    }
}

/// WeChat Pay's v2 files start with a UTF-8 BOM, and one sample shows it mis-rendered as `?`
/// (reference 7.1, 7.6 step 2): both are dropped from the first header cell.
fn strip_bom(cell: &str) -> &str {
    let cell = cell.strip_prefix('\u{feff}').unwrap_or(cell);
    match cell.strip_prefix('?') {
        Some(rest) if rest == ALL_COLUMNS[0] => rest,
        _ => cell,
    }
}

/// Why a header is not ALL's: a known other layout by name, else the first differing column.
fn describe_layout(cells: &[&str]) -> String {
    let known = if cells.len() == 20 && cells.contains(&"商品名称") && !cells.contains(&"退款金额")
    {
        Some("a SUCCESS bill (bill_type=SUCCESS)")
    } else if cells.contains(&"退款申请时间") {
        Some("a REFUND bill (bill_type=REFUND)")
    } else if cells.contains(&"企业红包金额") || cells.contains(&"总金额") {
        Some("the older trade-bill layout (总金额/企业红包金额)")
    } else if cells.first() == Some(&"记账时间") {
        Some("a fund-flow bill")
    } else {
        None
    };
    let difference = cells
        .iter()
        .zip(ALL_COLUMNS)
        .position(|(found, expected)| *found != expected)
        .map_or_else(
            || {
                format!(
                    "{} columns where ALL has {}",
                    cells.len(),
                    ALL_COLUMNS.len()
                )
            },
            |i| {
                format!(
                    "column {} is {:?}, ALL has {:?}",
                    i + 1,
                    bounded(cells.get(i).copied().unwrap_or_default()),
                    ALL_COLUMNS[i]
                )
            },
        );
    match known {
        Some(kind) => format!("{kind}: {difference}"),
        None => difference,
    }
}

/// The cells of one data row (or the summary), each with WeChat Pay's one leading backtick
/// removed (only one: free text may itself start with a backtick).
struct Cells<'a> {
    record: &'a csv::StringRecord,
    line: u64,
    /// What errors call the row: its 商户订单号, or `summary`.
    row: String,
}

impl<'a> Cells<'a> {
    fn text(&self, i: usize) -> &'a str {
        let cell = self.record.get(i).unwrap_or_default();
        cell.strip_prefix('`').unwrap_or(cell)
    }

    fn owned(&self, i: usize) -> String {
        self.text(i).to_owned()
    }

    /// Empty is `None`; so is `0` where a direct merchant's file writes it for "none".
    fn optional(&self, i: usize, zero_is_none: bool) -> Option<String> {
        match self.text(i) {
            "" => None,
            "0" if zero_is_none => None,
            s => Some(s.to_owned()),
        }
    }

    fn bad(&self, column: usize, names: &[&'static str], problem: &'static str) -> BillError {
        BillError::BadField {
            line: self.line,
            row: self.row.clone(),
            column: names.get(column).copied().unwrap_or("?"),
            value: bounded(self.text(column)),
            problem,
        }
    }

    fn required(&self, i: usize) -> Result<String, BillError> {
        match self.text(i) {
            "" => Err(self.bad(i, &ALL_COLUMNS, "is empty")),
            s => Ok(s.to_owned()),
        }
    }

    fn fen(&self, i: usize, names: &[&'static str]) -> Result<i64, BillError> {
        parse_decimal(self.text(i), FEN_DECIMALS, false)
            .ok_or_else(|| self.bad(i, names, "is not an amount in yuan with at most 2 decimals"))
    }

    fn millifen(&self, i: usize, names: &[&'static str]) -> Result<i64, BillError> {
        parse_decimal(self.text(i), MILLIFEN_DECIMALS, true)
            .ok_or_else(|| self.bad(i, names, "is not a fee in yuan with at most 5 decimals"))
    }
}

fn parse_row(record: &csv::StringRecord, line: u64) -> Result<BillRow, BillError> {
    if record.len() != ALL_COLUMNS.len() {
        return Err(BillError::FieldCount {
            line,
            part: "ALL layout",
            found: record.len(),
            expected: ALL_COLUMNS.len(),
        });
    }
    let mut c = Cells {
        record,
        line,
        row: String::new(),
    };
    c.row = bounded(c.text(OUT_TRADE_NO));
    let names = &ALL_COLUMNS;
    let trade_time = parse_beijing(c.text(TRADE_TIME)).ok_or_else(|| {
        c.bad(
            TRADE_TIME,
            names,
            "is not a Beijing time yyyy-MM-dd HH:mm:ss",
        )
    })?;
    let trade_state = BillTradeState::parse(&c.required(TRADE_STATE)?);
    let refund = trade_state == BillTradeState::Refund;
    // On payment rows the refund ids are `0`; on a refund row `0` would be an id (and
    // a refund row without its ids cannot be reconciled).
    let (refund_id, out_refund_no) = if refund {
        (
            Some(c.required(REFUND_ID)?),
            Some(c.required(OUT_REFUND_NO)?),
        )
    } else {
        (c.optional(REFUND_ID, true), c.optional(OUT_REFUND_NO, true))
    };
    Ok(BillRow {
        line,
        trade_time,
        appid: c.owned(APPID),
        mchid: c.owned(MCHID),
        sub_mchid: c.optional(SUB_MCHID, true),
        device_info: c.optional(DEVICE_INFO, false),
        transaction_id: c.required(TRANSACTION_ID)?,
        out_trade_no: c.required(OUT_TRADE_NO)?,
        openid: c.owned(OPENID),
        trade_type: c.owned(TRADE_TYPE),
        trade_state,
        bank_type: c.owned(BANK_TYPE),
        currency: c.owned(CURRENCY),
        settlement_amount_fen: c.fen(SETTLEMENT_AMOUNT, names)?,
        coupon_amount_fen: c.fen(COUPON_AMOUNT, names)?,
        refund_id,
        out_refund_no,
        refund_fen: c.fen(REFUND_AMOUNT, names)?,
        recharge_coupon_refund_fen: c.fen(RECHARGE_COUPON_REFUND, names)?,
        refund_type: c.optional(REFUND_TYPE, false),
        refund_status: c.optional(REFUND_STATUS, false),
        description: c.owned(DESCRIPTION),
        attach: c.optional(ATTACH, false),
        fee_millifen: c.millifen(FEE, names)?,
        fee_rate: c.owned(FEE_RATE),
        amount_fen: c.fen(AMOUNT, names)?,
        refund_requested_fen: c.fen(REFUND_REQUESTED, names)?,
        fee_remark: c.optional(FEE_REMARK, false),
    })
}

fn parse_summary(record: &csv::StringRecord, line: u64) -> Result<BillSummary, BillError> {
    if record.len() != SUMMARY_COLUMNS.len() {
        return Err(BillError::FieldCount {
            line,
            part: "summary",
            found: record.len(),
            expected: SUMMARY_COLUMNS.len(),
        });
    }
    let c = Cells {
        record,
        line,
        row: "summary".into(),
    };
    let names = &SUMMARY_COLUMNS;
    let rows = c.text(0);
    let rows = (!rows.is_empty() && rows.len() <= 18 && rows.bytes().all(|b| b.is_ascii_digit()))
        .then(|| rows.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| c.bad(0, names, "is not a count"))?;
    Ok(BillSummary {
        rows,
        settlement_amount_fen: c.fen(1, names)?,
        refund_fen: c.fen(2, names)?,
        recharge_coupon_refund_fen: c.fen(3, names)?,
        fee_millifen: c.millifen(4, names)?,
        amount_fen: c.fen(5, names)?,
        refund_requested_fen: c.fen(6, names)?,
    })
}

/// `2026-03-01 09:12:45` at Beijing time, as the UTC instant.
fn parse_beijing(s: &str) -> Option<OffsetDateTime> {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(s, format)
        .ok()
        .map(|t| t.assume_offset(CHINA).to_offset(UtcOffset::UTC))
}

/// Parses `[-]digits[.1 to decimals digits]` into an integer count of 10^-decimals yuan, by
/// string arithmetic, never floats (`0.29` is 29 fen, where `0.29 * 100.0` truncates to 28,
/// reference 7.6 step 8). `None` for anything else, or too large for an i64.
fn parse_decimal(s: &str, decimals: u32, signed: bool) -> Option<i64> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) if signed => (true, rest),
        Some(_) => return None,
        None => (false, s),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.len() <= decimals as usize => (w, f),
        Some(_) => return None,
        None => (unsigned, ""),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    // 15 digits of yuan is far beyond any bill and keeps every step inside an i64.
    if whole.is_empty() || whole.len() > 15 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let scale = 10i64.checked_pow(decimals)?;
    let whole: i64 = whole.parse().ok()?;
    // Right-pad the fraction to `decimals` digits: `1.5` is 150 fen.
    let pad = 10i64.checked_pow(decimals - fraction.len() as u32)?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().ok()?.checked_mul(pad)?
    };
    let value = whole.checked_mul(scale)?.checked_add(fraction)?;
    Some(if negative { -value } else { value })
}

/// Values from the file end up in messages and logs: keep them short.
fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_become_exact_integers() {
        let fen = |s| parse_decimal(s, FEN_DECIMALS, false);
        assert_eq!(fen("0.01"), Some(1));
        assert_eq!(fen("0.29"), Some(29));
        assert_eq!(fen("1980.00"), Some(198_000));
        assert_eq!(fen("1.5"), Some(150));
        assert_eq!(fen("7"), Some(700));
        assert_eq!(fen("999999999999999.99"), Some(99_999_999_999_999_999));
        for bad in [
            "",
            ".5",
            "1.",
            "1.234",
            "-1.00",
            "+1.00",
            "1,980.00",
            "1e3",
            " 1.00",
            "1.0 ",
            "０.01",
            "1..0",
            "9999999999999999.00",
        ] {
            assert_eq!(fen(bad), None, "{bad:?}");
        }
        let millifen = |s| parse_decimal(s, MILLIFEN_DECIMALS, true);
        assert_eq!(millifen("0.60000"), Some(60_000));
        assert_eq!(millifen("-0.18000"), Some(-18_000));
        assert_eq!(millifen("7.79"), Some(779_000));
        assert_eq!(millifen("0.00001"), Some(1));
        assert_eq!(millifen("0.000001"), None);
        assert_eq!(millifen("--1"), None);
    }

    #[test]
    fn beijing_times_become_utc() {
        assert_eq!(
            parse_beijing("2026-03-01 09:12:45"),
            Some(time::macros::datetime!(2026-03-01 01:12:45 UTC))
        );
        // Just after midnight in Beijing is the previous UTC day.
        assert_eq!(
            parse_beijing("2026-03-01 00:00:00"),
            Some(time::macros::datetime!(2026-02-28 16:00:00 UTC))
        );
        for bad in [
            "2026-03-01T09:12:45",
            "2026-02-30 00:00:00",
            "2026-03-01",
            "",
        ] {
            assert_eq!(parse_beijing(bad), None, "{bad:?}");
        }
    }
}
