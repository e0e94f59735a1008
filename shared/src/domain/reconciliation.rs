//! The daily bill reconciliation's report (DESIGN 11): what comparing WeChat Pay's trade bill
//! of one Beijing date with the table found, row by row and in sums. Pure data: the service
//! fills it, the store keeps it (`BILL#<date>`), the edge shows it.

use time::{Date, OffsetDateTime};

/// Shards of each day's payment and refund partitions (`PAIDON#<date>#<shard>`,
/// `REFUNDON#<date>#<shard>`): fixed, so a reader always knows every partition a day has, and
/// enough that a flash sale's day never makes one hot index key.
pub const DAY_SHARDS: u32 = 16;

/// The shard (0..[`DAY_SHARDS`]) of a payment's transaction_id or a refund's out_refund_no
/// in its day's partitions.
pub fn day_shard(id: &str) -> u32 {
    super::ids::fnv_shard(id, DAY_SHARDS)
}

/// At most this many mismatches are kept in one report (the item must stay far below
/// DynamoDB's 400 KB); `mismatch_count` still counts them all, and each is an anomaly.
pub const MAX_REPORTED_MISMATCHES: usize = 500;

/// What one difference between the bill and the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BillMismatchKind {
    /// A payment in both, for different amounts (or orders).
    PaymentAmount,
    /// A payment row WeChat Pay's own query does not confirm (not paid, another transaction).
    PaymentUnconfirmed,
    /// A payment confirmed and applied by the payment path, which kept it as an anomaly
    /// (paid after close, double payment, unknown order, amount mismatch): the detail names it.
    PaymentAnomaly,
    /// A payment of that date in the table that the bill lacks.
    PaymentNotInBill,
    /// A refund row the table has no refund for (made outside this service?).
    RefundUnknown,
    /// A refund in both, for different amounts (or orders).
    RefundAmount,
    /// WeChat Pay's final word on a refund is not what the table says.
    RefundState,
    /// A successful refund of that date in the table that the bill lacks.
    RefundNotInBill,
    /// A row that is neither a payment nor a refund (`REVOKED`, a new 交易状态).
    UnexpectedRow,
}

impl BillMismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BillMismatchKind::PaymentAmount => "PAYMENT_AMOUNT",
            BillMismatchKind::PaymentUnconfirmed => "PAYMENT_UNCONFIRMED",
            BillMismatchKind::PaymentAnomaly => "PAYMENT_ANOMALY",
            BillMismatchKind::PaymentNotInBill => "PAYMENT_NOT_IN_BILL",
            BillMismatchKind::RefundUnknown => "REFUND_UNKNOWN",
            BillMismatchKind::RefundAmount => "REFUND_AMOUNT",
            BillMismatchKind::RefundState => "REFUND_STATE",
            BillMismatchKind::RefundNotInBill => "REFUND_NOT_IN_BILL",
            BillMismatchKind::UnexpectedRow => "UNEXPECTED_ROW",
        }
    }

    pub const ALL: [BillMismatchKind; 9] = [
        BillMismatchKind::PaymentAmount,
        BillMismatchKind::PaymentUnconfirmed,
        BillMismatchKind::PaymentAnomaly,
        BillMismatchKind::PaymentNotInBill,
        BillMismatchKind::RefundUnknown,
        BillMismatchKind::RefundAmount,
        BillMismatchKind::RefundState,
        BillMismatchKind::RefundNotInBill,
        BillMismatchKind::UnexpectedRow,
    ];

    pub fn parse(s: &str) -> Option<BillMismatchKind> {
        BillMismatchKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for BillMismatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference, as the merchant reads it. Ids are as the bill or the table wrote them
/// (a bill's out_trade_no need not be one of ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillMismatch {
    pub kind: BillMismatchKind,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
    pub out_refund_no: Option<String>,
    pub detail: String,
}

/// The bill's sums (its checked summary row), integer fen; fees exact in thousandths of a fen
/// as the bill writes them (5 decimals of yuan), and rounded to the fen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BillSums {
    /// 订单总金额: what the day's payments charged.
    pub paid: i64,
    /// 申请退款总金额: what the day's refunds asked for.
    pub refunded: i64,
    /// 手续费总金额, rounded half away from zero to the fen.
    pub fees: i64,
    pub fees_millifen: i64,
}

impl BillSums {
    /// Fen from thousandths of a fen, rounded half away from zero.
    pub fn fen_of_millifen(millifen: i64) -> i64 {
        let sign = millifen.signum();
        sign * ((millifen.unsigned_abs() + 500) / 1000) as i64
    }
}

/// The report of one Beijing date's reconciliation (`BILL#<date>` / `TRADE`): a re-run
/// replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillReport {
    pub bill_date: Date,
    /// Detail rows of the bill (payments and refunds); 0 when WeChat Pay had no bill.
    pub rows: u64,
    /// Rows the table already agreed with.
    pub matched: u64,
    /// Rows this run applied (a payment or refund the table lacked or still had open).
    pub recovered: u64,
    /// Every mismatch found (each also kept as a `BILL_MISMATCH` anomaly).
    pub mismatch_count: u64,
    /// The first [`MAX_REPORTED_MISMATCHES`] of them.
    pub mismatches: Vec<BillMismatch>,
    pub sums: BillSums,
    /// Whether WeChat Pay had a bill for the date (`false`: no trades, `NO_STATEMENT_EXIST`).
    pub statement: bool,
    /// `false`: the run reached its deadline first; the counts cover the rows it got to, the
    /// table's own payments were not yet checked against the bill, and the next run (the
    /// schedule's, or one by hand) does the date again, applying nothing twice.
    pub complete: bool,
    pub created_at: OffsetDateTime,
}

impl BillReport {
    /// The report of a date WeChat Pay has no bill for (no trades): zeros.
    pub fn empty(bill_date: Date, created_at: OffsetDateTime) -> BillReport {
        BillReport {
            bill_date,
            rows: 0,
            matched: 0,
            recovered: 0,
            mismatch_count: 0,
            mismatches: Vec::new(),
            sums: BillSums::default(),
            statement: false,
            complete: true,
            created_at,
        }
    }

    /// Counts a mismatch, keeping it while the report has room.
    pub fn push_mismatch(&mut self, mismatch: BillMismatch) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MAX_REPORTED_MISMATCHES {
            self.mismatches.push(mismatch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_round_half_away_from_zero() {
        assert_eq!(BillSums::fen_of_millifen(600), 1);
        assert_eq!(BillSums::fen_of_millifen(499), 0);
        assert_eq!(BillSums::fen_of_millifen(500), 1);
        assert_eq!(BillSums::fen_of_millifen(-180), 0);
        assert_eq!(BillSums::fen_of_millifen(-1500), -2);
        assert_eq!(BillSums::fen_of_millifen(7_790), 8);
    }

    #[test]
    fn mismatch_kinds_round_trip() {
        for k in BillMismatchKind::ALL {
            assert_eq!(BillMismatchKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(BillMismatchKind::parse("NOPE"), None);
    }

    #[test]
    fn a_report_keeps_a_bounded_list_and_counts_all() {
        let mut r = BillReport::empty(
            time::macros::date!(2026 - 12 - 06),
            OffsetDateTime::UNIX_EPOCH,
        );
        for i in 0..MAX_REPORTED_MISMATCHES + 3 {
            r.push_mismatch(BillMismatch {
                kind: BillMismatchKind::PaymentNotInBill,
                out_trade_no: Some(format!("o{i}")),
                transaction_id: None,
                out_refund_no: None,
                detail: String::new(),
            });
        }
        assert_eq!(r.mismatch_count, MAX_REPORTED_MISMATCHES as u64 + 3);
        assert_eq!(r.mismatches.len(), MAX_REPORTED_MISMATCHES);
    }
}
