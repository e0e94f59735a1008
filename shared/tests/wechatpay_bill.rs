//! The trade-bill parser on bills in WeChat Pay's exact format: the ALL sample of
//! `reference/wechatpay-refunds-bills.md` section 7.4 verbatim, hand-written variants of it
//! (CRLF, BOM, revoked payments), every way a file can be unusable, and a generated
//! 100,000-row day read as a stream.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use shared::wechatpay::bill::{
    BillError, BillLocation, BillRow, BillSummary, BillTradeState, MAX_LINE_BYTES, TradeBillReader,
    check_download, sha1_hex, verify_sha1,
};
use time::macros::datetime;

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// Section 7.4 of the reference, byte for byte: two payments and a refund of the first.
const SAMPLE: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注
`2026-03-01 09:12:45,`wx00000000000000aa,`1900000001,`0,`,`4200000001202603010000000001,`ORD20260301A,`oUSER00000000000000000000001,`JSAPI,`SUCCESS,`OTHERS,`CNY,`100.00,`0.00,`0,`0,`0.00,`0.00,`,`,`咖啡豆 x2,`,`0.60000,`0.60%,`100.00,`0.00,`
`2026-03-01 10:03:11,`wx00000000000000aa,`1900000001,`0,`,`4200000001202603010000000002,`ORD20260301B,`oUSER00000000000000000000002,`JSAPI,`SUCCESS,`CFT,`CNY,`50.00,`0.00,`0,`0,`0.00,`0.00,`,`,`滤纸,`,`0.30000,`0.60%,`50.00,`0.00,`
`2026-03-01 15:40:02,`wx00000000000000aa,`1900000001,`0,`,`4200000001202603010000000001,`ORD20260301A,`oUSER00000000000000000000001,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000012026030100000000001,`RF-ORD20260301A-1,`30.00,`0.00,`ORIGINAL,`SUCCESS,`咖啡豆 x2,`,`-0.18000,`0.60%,`0.00,`30.00,`
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
`3,`150.00,`30.00,`0.00,`0.72000,`150.00,`30.00
";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn location_of(bill: &[u8]) -> BillLocation {
    BillLocation {
        hash_type: "SHA1".into(),
        hash_value: sha1_hex(bill),
        download_url: "https://api.mch.weixin.qq.com/v3/billdownload/file?token=t".into(),
    }
}

/// Every row, then the summary (fine for a few rows; the big test never collects).
fn read_all(bill: &[u8]) -> Result<(Vec<BillRow>, BillSummary), BillError> {
    let mut reader = TradeBillReader::new(bill);
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row()? {
        rows.push(row);
    }
    Ok((rows, reader.finish()?))
}

fn data_row(cells: &[&str]) -> String {
    cells
        .iter()
        .map(|c| format!("`{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A payment row in the ALL layout with the given 订单金额/应结订单金额 text.
fn payment(time: &str, out_trade_no: &str, amount: &str, fee: &str) -> String {
    data_row(&[
        time,
        "wx00000000000000aa",
        "1900000001",
        "0",
        "",
        &format!("42000000012026030100{:08}", out_trade_no.len()),
        out_trade_no,
        "oUSER1",
        "JSAPI",
        "SUCCESS",
        "OTHERS",
        "CNY",
        amount,
        "0.00",
        "0",
        "0",
        "0.00",
        "0.00",
        "",
        "",
        "商品",
        "",
        fee,
        "0.60%",
        amount,
        "0.00",
        "",
    ])
}

fn bill(rows: &[String], summary: &str) -> String {
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text.push_str(SUMMARY_HEADER);
    text.push('\n');
    text.push_str(summary);
    text.push('\n');
    text
}

#[test]
fn the_reference_sample_parses_to_exact_fen() {
    let (rows, summary) = read_all(SAMPLE.as_bytes()).unwrap();
    assert_eq!(rows.len(), 3);

    let first = &rows[0];
    assert_eq!(
        *first,
        BillRow {
            line: 2,
            trade_time: datetime!(2026-03-01 01:12:45 UTC),
            appid: "wx00000000000000aa".into(),
            mchid: "1900000001".into(),
            sub_mchid: None,
            device_info: None,
            transaction_id: "4200000001202603010000000001".into(),
            out_trade_no: "ORD20260301A".into(),
            openid: "oUSER00000000000000000000001".into(),
            trade_type: "JSAPI".into(),
            trade_state: BillTradeState::Success,
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_amount_fen: 10_000,
            coupon_amount_fen: 0,
            refund_id: None,
            out_refund_no: None,
            refund_fen: 0,
            recharge_coupon_refund_fen: 0,
            refund_type: None,
            refund_status: None,
            description: "咖啡豆 x2".into(),
            attach: None,
            fee_millifen: 60_000,
            fee_rate: "0.60%".into(),
            amount_fen: 10_000,
            refund_requested_fen: 0,
            fee_remark: None,
        }
    );
    assert!(first.is_payment() && !first.is_refund());
    assert_eq!(rows[1].bank_type, "CFT");
    assert_eq!(rows[1].amount_fen, 5_000);

    let refund = &rows[2];
    assert!(refund.is_refund());
    assert_eq!(refund.line, 4);
    assert_eq!(refund.trade_time, datetime!(2026-03-01 07:40:02 UTC));
    assert_eq!(refund.out_trade_no, "ORD20260301A");
    assert_eq!(
        refund.refund_id.as_deref(),
        Some("50300000012026030100000000001")
    );
    assert_eq!(refund.out_refund_no.as_deref(), Some("RF-ORD20260301A-1"));
    assert_eq!(
        (
            refund.refund_fen,
            refund.refund_requested_fen,
            refund.amount_fen
        ),
        (3_000, 3_000, 0)
    );
    assert_eq!(refund.refund_type.as_deref(), Some("ORIGINAL"));
    assert_eq!(refund.refund_status.as_deref(), Some("SUCCESS"));
    assert_eq!(refund.fee_millifen, -18_000);

    assert_eq!(
        summary,
        BillSummary {
            rows: 3,
            settlement_amount_fen: 15_000,
            refund_fen: 3_000,
            recharge_coupon_refund_fen: 0,
            fee_millifen: 72_000,
            amount_fen: 15_000,
            refund_requested_fen: 3_000,
        }
    );
}

/// The download path: gzip bytes in, the hash over the *decompressed* file (reference 6.1
/// "原始账单(gzip需要解压缩)的摘要值"), then the same bytes read again to apply the rows.
#[test]
fn a_gzip_download_is_checked_then_read() {
    let download = gzip(SAMPLE.as_bytes());
    let location = location_of(SAMPLE.as_bytes());
    let summary = check_download(&download, &location).unwrap();
    assert_eq!(summary.rows, 3);
    verify_sha1(SAMPLE.as_bytes(), &location.hash_value).unwrap();
    verify_sha1(SAMPLE.as_bytes(), &location.hash_value.to_uppercase()).unwrap();
    // Not the hash of the gzip bytes.
    assert_ne!(sha1_hex(&download), location.hash_value);

    let mut applied = 0;
    for row in TradeBillReader::gzip(&download[..]) {
        row.unwrap();
        applied += 1;
    }
    assert_eq!(applied, 3);
}

/// CRLF line ends, a BOM, blank lines, a revoked payment, free text with a backtick and a
/// quote, and the brief's exact-fen cases (`0.01` -> 1, `1980.00` -> 198000).
#[test]
fn hand_written_variants_parse_exactly() {
    let revoked = payment("2026-03-01 23:59:59", "ORD-REVOKED", "0.01", "0.00000")
        .replace("`SUCCESS,", "`REVOKED,");
    let quoted = data_row(&[
        "2026-03-01 00:00:00",
        "wx00000000000000aa",
        "1900000001",
        "0",
        "DEVICE-7",
        "4200000001202603010000000009",
        "ORD-QUOTE",
        "oUSER2",
        "NATIVE",
        "SUCCESS",
        "OTHERS",
        "CNY",
        "1980.00",
        "0.00",
        "0",
        "0",
        "0.00",
        "0.00",
        "",
        "",
        "`back \"tick\"",
        "cart=42",
        "11.88000",
        "0.60%",
        "1980.00",
        "0.00",
        "",
    ]);
    let text = format!(
        "\u{feff}{}",
        bill(
            &[revoked, String::new(), quoted],
            "`2,`1980.01,`0.00,`0.00,`11.88000,`1980.01,`0.00"
        )
    )
    .replace('\n', "\r\n");
    let (rows, summary) = read_all(text.as_bytes()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].trade_state, BillTradeState::Revoked);
    assert_eq!(rows[0].amount_fen, 1);
    assert_eq!(rows[0].trade_time, datetime!(2026-03-01 15:59:59 UTC));
    assert_eq!(rows[1].amount_fen, 198_000);
    assert_eq!(rows[1].line, 4, "the blank line still counts");
    assert_eq!(rows[1].trade_time, datetime!(2026-02-28 16:00:00 UTC));
    // Only WeChat Pay's one backtick is removed; quotes are text.
    assert_eq!(rows[1].description, "`back \"tick\"");
    assert_eq!(rows[1].attach.as_deref(), Some("cart=42"));
    assert_eq!(rows[1].device_info.as_deref(), Some("DEVICE-7"));
    assert_eq!(rows[1].fee_millifen, 1_188_000);
    assert_eq!((summary.rows, summary.amount_fen), (2, 198_001));
}

#[test]
fn a_truncated_gzip_is_an_error_not_a_short_bill() {
    let download = gzip(SAMPLE.as_bytes());
    for cut in [download.len() - 4, download.len() / 2, 12] {
        let truncated = &download[..cut];
        let e = check_download(truncated, &location_of(SAMPLE.as_bytes())).unwrap_err();
        assert!(matches!(e, BillError::Read(_)), "cut at {cut}: {e:?}");
        // Row by row it ends in the same error, never a clean end.
        let last = TradeBillReader::gzip(truncated).last().unwrap();
        assert!(matches!(last, Err(BillError::Read(_))), "{last:?}");
    }
    // Decompressed but cut before the summary: missing, not zero.
    let cut = SAMPLE.find(SUMMARY_HEADER).unwrap();
    let e = read_all(&SAMPLE.as_bytes()[..cut]).unwrap_err();
    assert_eq!(e, BillError::MissingSummary);
}

#[test]
fn other_layouts_are_refused_before_any_row() {
    let success_header = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注";
    let refund_header = HEADER.replace("代金券金额,", "代金券金额,退款申请时间,退款成功时间,");
    let old_header = HEADER
        .replace("应结订单金额", "总金额")
        .replace("代金券金额", "企业红包金额");
    for (header, says) in [
        (success_header.to_owned(), "SUCCESS bill"),
        (refund_header, "REFUND bill"),
        (old_header, "older trade-bill layout"),
        ("记账时间,微信支付业务单号".to_owned(), "fund-flow"),
        (
            HEADER.replace("手续费", "服务费"),
            "column 23 is \"服务费\"",
        ),
        (format!("{HEADER},新列"), "28 columns"),
    ] {
        let text = SAMPLE.replacen(HEADER, &header, 1);
        let mut reader = TradeBillReader::new(text.as_bytes());
        let e = reader.next_row().unwrap_err();
        match &e {
            BillError::UnknownLayout(why) => assert!(why.contains(says), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(reader.next_row().unwrap_err(), e, "it stays refused");
        assert!(reader.next().is_none());
    }
    assert!(matches!(
        read_all(b"").unwrap_err(),
        BillError::UnknownLayout(_)
    ));
    let summary_renamed = SAMPLE.replace("手续费总金额", "手续费");
    assert!(matches!(
        read_all(summary_renamed.as_bytes()).unwrap_err(),
        BillError::UnknownLayout(_)
    ));
}

/// A comma in free text (WeChat Pay does not quote) makes a row one field too wide: refused,
/// never shifted into the next column.
#[test]
fn a_row_of_another_width_is_refused() {
    let text = SAMPLE.replace("`滤纸,", "`滤纸,大号,");
    let (read, e) = {
        let mut reader = TradeBillReader::new(text.as_bytes());
        let first = reader.next_row().unwrap();
        (first, reader.next_row().unwrap_err())
    };
    assert!(read.is_some());
    assert_eq!(
        e,
        BillError::FieldCount {
            line: 3,
            part: "ALL layout",
            found: 28,
            expected: 27
        }
    );
    let short_summary = SAMPLE.replace("`3,`150.00", "`150.00");
    assert!(matches!(
        read_all(short_summary.as_bytes()).unwrap_err(),
        BillError::FieldCount {
            line: 6,
            part: "summary",
            found: 6,
            ..
        }
    ));
}

#[test]
fn a_malformed_amount_names_its_row_and_column() {
    for (bad, column) in [
        ("`50.0O,`0.00,`", "应结订单金额"),
        ("`50.001,`0.00,`", "应结订单金额"),
    ] {
        let text = SAMPLE.replacen("`50.00,`0.00,`", bad, 1);
        let e = read_all(text.as_bytes()).unwrap_err();
        match e {
            BillError::BadField {
                line,
                row,
                column: named,
                value,
                ..
            } => {
                assert_eq!((line, row.as_str(), named), (3, "ORD20260301B", column));
                assert_eq!(value, bad[1..bad.find(',').unwrap()]);
            }
            other => panic!("{other:?}"),
        }
    }
    let e = read_all(SAMPLE.replace("`-0.18000", "`-0.18x").as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains("line 4 (ORD20260301A): 手续费"),
        "{e}"
    );
    let e = read_all(
        SAMPLE
            .replace("`2026-03-01 10:03:11", "`2026/03/01 10:03")
            .as_bytes(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("交易时间"), "{e}");
    let e = read_all(SAMPLE.replace("`3,`150.00", "`three,`150.00").as_bytes()).unwrap_err();
    assert!(e.to_string().contains("(summary): 总交易单数"), "{e}");
    // A refund row must name its refund.
    let e = read_all(SAMPLE.replace("`RF-ORD20260301A-1", "`").as_bytes()).unwrap_err();
    assert!(e.to_string().contains("商户退款单号"), "{e}");
}

#[test]
fn a_summary_that_disagrees_with_the_rows_is_refused() {
    for (summary, column) in [
        (
            "`4,`150.00,`30.00,`0.00,`0.72000,`150.00,`30.00",
            "总交易单数",
        ),
        (
            "`3,`150.01,`30.00,`0.00,`0.72000,`150.00,`30.00",
            "应结订单总金额",
        ),
        (
            "`3,`150.00,`30.00,`0.00,`0.72001,`150.00,`30.00",
            "手续费总金额",
        ),
        (
            "`3,`150.00,`30.00,`0.00,`0.72000,`150.00,`29.99",
            "申请退款总金额",
        ),
    ] {
        let text = SAMPLE.replace("`3,`150.00,`30.00,`0.00,`0.72000,`150.00,`30.00", summary);
        match read_all(text.as_bytes()).unwrap_err() {
            BillError::SummaryMismatch { column: c, .. } => assert_eq!(c, column),
            other => panic!("{other:?}"),
        }
    }
    let trailing = format!("{SAMPLE}\n`4,`1.00\n");
    assert_eq!(
        read_all(trailing.as_bytes()).unwrap_err(),
        BillError::TrailingData { line: 8 }
    );
}

#[test]
fn a_tampered_file_fails_its_hash() {
    let location = location_of(SAMPLE.as_bytes());
    // An amount changed consistently with the summary: only the hash can tell.
    let consistent = SAMPLE
        .replace("`50.00,`0.00,`0,", "`51.00,`0.00,`0,")
        .replace(
            "`滤纸,`,`0.30000,`0.60%,`50.00",
            "`滤纸,`,`0.30000,`0.60%,`51.00",
        )
        .replace(
            "`3,`150.00,`30.00,`0.00,`0.72000,`150.00",
            "`3,`151.00,`30.00,`0.00,`0.72000,`151.00",
        );
    read_all(consistent.as_bytes()).unwrap();
    assert!(matches!(
        check_download(&gzip(consistent.as_bytes()), &location).unwrap_err(),
        BillError::HashMismatch { .. }
    ));
    assert!(matches!(
        verify_sha1(consistent.as_bytes(), &location.hash_value).unwrap_err(),
        BillError::HashMismatch { .. }
    ));
    // An amount changed alone also breaks the summary; the hash is what is reported.
    let careless = SAMPLE.replacen("`100.00", "`900.00", 1);
    assert!(matches!(
        check_download(&gzip(careless.as_bytes()), &location).unwrap_err(),
        BillError::HashMismatch { .. }
    ));
    // A corrupted gzip (a flipped byte) fails its CRC or inflate: a read error.
    let mut flipped = gzip(SAMPLE.as_bytes());
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    assert!(check_download(&flipped, &location).is_err());
    let md5 = BillLocation {
        hash_type: "MD5".into(),
        ..location.clone()
    };
    assert_eq!(
        check_download(&gzip(SAMPLE.as_bytes()), &md5).unwrap_err(),
        BillError::UnsupportedHash("MD5".into())
    );
}

#[test]
fn an_endless_line_is_refused_before_it_is_buffered() {
    let mut text = String::from(HEADER);
    text.push('\n');
    text.push_str(&"`9".repeat(usize::try_from(MAX_LINE_BYTES).unwrap()));
    let e = read_all(text.as_bytes()).unwrap_err();
    assert!(
        matches!(&e, BillError::Read(m) if m.contains("longer than")),
        "{e:?}"
    );
}

/// A day of `rows` payments of 0.01 to 99.99 yuan, produced on demand: the file never exists
/// whole, in the test or in the reader.
struct GeneratedBill {
    rows: u64,
    next: u64,
    pending: Vec<u8>,
    at: usize,
    amount_total: i64,
    fee_total: i64,
    finished: bool,
}

impl GeneratedBill {
    fn new(rows: u64) -> Self {
        GeneratedBill {
            rows,
            next: 0,
            pending: format!("{HEADER}\n").into_bytes(),
            at: 0,
            amount_total: 0,
            fee_total: 0,
            finished: false,
        }
    }

    fn refill(&mut self) {
        self.pending.clear();
        self.at = 0;
        if self.next < self.rows {
            let i = self.next;
            self.next += 1;
            let fen = i64::try_from(i % 9_999).unwrap() + 1;
            let fee = fen * 6; // 0.6 % in thousandths of a fen
            self.amount_total += fen;
            self.fee_total += fee;
            let yuan = format!("{}.{:02}", fen / 100, fen % 100);
            let fee_yuan = format!("{}.{:05}", fee / 100_000, fee % 100_000);
            let seconds = i % 86_400;
            let time = format!(
                "2026-03-01 {:02}:{:02}:{:02}",
                seconds / 3600,
                seconds / 60 % 60,
                seconds % 60
            );
            self.pending =
                (payment(&time, &format!("ORD{i:012}"), &yuan, &fee_yuan) + "\n").into_bytes();
        } else if !self.finished {
            self.finished = true;
            let yuan = |fen: i64| format!("{}.{:02}", fen / 100, fen % 100);
            self.pending = format!(
                "{SUMMARY_HEADER}\n`{},`{},`0.00,`0.00,`{}.{:05},`{},`0.00\n",
                self.rows,
                yuan(self.amount_total),
                self.fee_total / 100_000,
                self.fee_total % 100_000,
                yuan(self.amount_total)
            )
            .into_bytes();
        }
    }
}

impl Read for GeneratedBill {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            self.refill();
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_hundred_thousand_rows_stream_through() {
    const ROWS: u64 = 100_000;
    let mut reader = TradeBillReader::new(GeneratedBill::new(ROWS));
    let (mut count, mut amount, mut last_line) = (0u64, 0i64, 0u64);
    while let Some(row) = reader.next_row().unwrap() {
        count += 1;
        amount += row.amount_fen;
        assert!(row.line > last_line);
        last_line = row.line;
    }
    assert_eq!(count, ROWS);
    let expected: i64 = (0..ROWS)
        .map(|i| i64::try_from(i % 9_999).unwrap() + 1)
        .sum();
    assert_eq!(amount, expected);
    let summary = reader.finish().unwrap();
    assert_eq!(summary.rows, ROWS);
    assert_eq!(summary.amount_fen, expected);
    assert_eq!(summary.fee_millifen, expected * 6);
}
