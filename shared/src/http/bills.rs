//! The bill reconciliation at the edge: its report as JSON (merchant-api's
//! `/merchant/bills/{date}` routes and the bill-reconciler's run summary) and its errors as
//! HTTP answers, mapped once here.

use serde::Serialize;

use super::ApiError;
use crate::{
    domain::BillReport,
    service::ReconcileError,
    timefmt::{date_string, to_wechat},
};

/// A report as the merchant reads it (DESIGN 11: at least `bill_date`, `rows`, `matched`,
/// `recovered`, `mismatches`, `sums`).
#[derive(Serialize)]
pub struct BillReportView<'a> {
    bill_date: String,
    /// `false`: WeChat Pay had no bill for the date (no trades).
    statement: bool,
    /// `false`: the run stopped at its deadline; run the date again to finish it.
    complete: bool,
    rows: u64,
    matched: u64,
    recovered: u64,
    mismatch_count: u64,
    mismatches: Vec<MismatchView<'a>>,
    sums: SumsView,
    created_at: String,
}

#[derive(Serialize)]
struct MismatchView<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_trade_no: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_refund_no: Option<&'a str>,
    detail: &'a str,
}

#[derive(Serialize)]
struct SumsView {
    paid: i64,
    refunded: i64,
    fees: i64,
    fees_millifen: i64,
}

impl<'a> From<&'a BillReport> for BillReportView<'a> {
    fn from(r: &'a BillReport) -> Self {
        BillReportView {
            bill_date: date_string(r.bill_date),
            statement: r.statement,
            complete: r.complete,
            rows: r.rows,
            matched: r.matched,
            recovered: r.recovered,
            mismatch_count: r.mismatch_count,
            mismatches: r
                .mismatches
                .iter()
                .map(|m| MismatchView {
                    kind: m.kind.as_str(),
                    out_trade_no: m.out_trade_no.as_deref(),
                    transaction_id: m.transaction_id.as_deref(),
                    out_refund_no: m.out_refund_no.as_deref(),
                    detail: &m.detail,
                })
                .collect(),
            sums: SumsView {
                paid: r.sums.paid,
                refunded: r.sums.refunded,
                fees: r.sums.fees,
                fees_millifen: r.sums.fees_millifen,
            },
            created_at: to_wechat(r.created_at),
        }
    }
}

/// A bill date in a path: `yyyy-mm-dd`, or 422.
pub fn parse_bill_date(s: &str) -> Result<time::Date, ApiError> {
    crate::timefmt::parse_date(s).map_err(|_| {
        ApiError::new(
            422,
            "INVALID_REQUEST",
            "the bill date must be a calendar date, yyyy-mm-dd (Beijing time)",
        )
    })
}

/// WeChat Pay asks to be asked for a bill not generated yet every half hour.
pub const NOT_READY_RETRY_AFTER_SECONDS: u32 = 1800;

/// The answer when WeChat Pay has not generated the bill yet.
pub fn not_ready(date: time::Date) -> ApiError {
    ApiError::new(
        409,
        "BILL_NOT_READY",
        format!(
            "WeChat Pay has not generated the bill of {} yet (from about 10:00 Beijing time the next day); nothing was done, retry later",
            date_string(date)
        ),
    )
    .with_header("Retry-After", NOT_READY_RETRY_AFTER_SECONDS.to_string())
}

impl From<ReconcileError> for ApiError {
    fn from(e: ReconcileError) -> ApiError {
        let message = e.to_string();
        match e {
            ReconcileError::FutureDate(_) | ReconcileError::DateRefused { .. } => {
                ApiError::new(422, "INVALID_REQUEST", message)
            }
            ReconcileError::Bill { .. } => ApiError::new(502, "BILL_REFUSED", message),
            ReconcileError::WeChat(_) => ApiError::new(502, "PAYMENT_PROVIDER_ERROR", message),
            ReconcileError::Store(e) if e.retryable() => ApiError::new(
                503,
                "STORE_UNAVAILABLE",
                "the order store is busy or unavailable; run the reconciliation again (it applies nothing twice)",
            ),
            ReconcileError::Store(_) | ReconcileError::Refund(_) | ReconcileError::Aborted(_) => {
                tracing::error!(error = %message, "reconciliation failed");
                ApiError::new(500, "INTERNAL", "internal error")
            }
        }
    }
}
