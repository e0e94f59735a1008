//! Anomalies: verified facts from WeChat Pay that could not be applied as they are (DESIGN
//! 6.5: never lost). Each is keyed by what makes it distinct, so a re-delivery finds it.

use time::OffsetDateTime;

use super::{OutTradeNo, Payment};

/// A verified payment or notification that could not be applied as is (DESIGN 6.5: never
/// lost). One item per kind and distinct cause, so a re-delivery lands on the same item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    AmountMismatch,
    PaidAfterClose,
    DoublePayment,
    UnknownOrder,
    /// Verified and decrypted, but its content cannot be applied (not a transaction, a
    /// field missing or out of range, another merchant's appid/mchid): kept with its
    /// plaintext so nothing WeChat Pay said is lost.
    MalformedNotification,
    /// WeChat Pay could not pay a refund back (REFUND.ABNORMAL): the merchant must act
    /// (the abnormal-refund API, or the merchant platform). One per out_refund_no.
    RefundAbnormal,
    /// A verified refund notification or answer that does not match a refund here (unknown
    /// out_refund_no, another amount or order): kept, never applied.
    RefundMismatch,
    /// The day's trade bill and the table disagree on a row (DESIGN 11): one per order and
    /// bill date (`BILL_MISMATCH#<bill date>`), its detail saying what differs.
    BillMismatch,
    /// WeChat's trade management did not take a shipment's info (refused for good, or kept
    /// refusing for a day): the buyer's money stays frozen until the merchant uploads it in
    /// the mini-program console. One per transaction.
    ShippingUploadFailed,
    /// WeChat's trade management and the table disagree on a shipped order: a settlement
    /// pushed for an order not SHIPPED here (shipped in the console, say), one for an unknown
    /// transaction, or WeChat showing refunded (state 5) an order not refunded here.
    ShippingStateMismatch,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 10] = [
        AnomalyKind::AmountMismatch,
        AnomalyKind::PaidAfterClose,
        AnomalyKind::DoublePayment,
        AnomalyKind::UnknownOrder,
        AnomalyKind::MalformedNotification,
        AnomalyKind::RefundAbnormal,
        AnomalyKind::RefundMismatch,
        AnomalyKind::BillMismatch,
        AnomalyKind::ShippingUploadFailed,
        AnomalyKind::ShippingStateMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::AmountMismatch => "AMOUNT_MISMATCH",
            AnomalyKind::PaidAfterClose => "PAID_AFTER_CLOSE",
            AnomalyKind::DoublePayment => "DOUBLE_PAYMENT",
            AnomalyKind::UnknownOrder => "UNKNOWN_ORDER",
            AnomalyKind::MalformedNotification => "MALFORMED_NOTIFICATION",
            AnomalyKind::RefundAbnormal => "REFUND_ABNORMAL",
            AnomalyKind::RefundMismatch => "REFUND_MISMATCH",
            AnomalyKind::BillMismatch => "BILL_MISMATCH",
            AnomalyKind::ShippingUploadFailed => "SHIPPING_UPLOAD_FAILED",
            AnomalyKind::ShippingStateMismatch => "SHIPPING_STATE_MISMATCH",
        }
    }

    pub fn parse(s: &str) -> Option<AnomalyKind> {
        AnomalyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The order it concerns; `None` only for a notification whose out_trade_no could not
    /// be read.
    pub out_trade_no: Option<OutTradeNo>,
    pub kind: AnomalyKind,
    /// What makes this anomaly distinct, part of the item key with the kind: the
    /// transaction_id of a payment, the notification id of a malformed notification. Never
    /// a time: two distinct payments may share a `success_time`.
    pub cause: String,
    /// When it happened (the payment's success_time, or when it was seen).
    pub at: OffsetDateTime,
    pub transaction_id: Option<String>,
    pub notification_id: Option<String>,
    pub detail: String,
    /// The decrypted notification as received, for a malformed one.
    pub plaintext: Option<String>,
}

impl Anomaly {
    /// The anomaly of a verified payment: one per transaction and kind.
    pub fn of_payment(payment: &Payment, kind: AnomalyKind, detail: impl Into<String>) -> Self {
        Anomaly {
            out_trade_no: Some(payment.out_trade_no.clone()),
            kind,
            cause: payment.transaction_id.clone(),
            at: payment.success_time,
            transaction_id: Some(payment.transaction_id.clone()),
            notification_id: payment.notification_id.clone(),
            detail: detail.into(),
            plaintext: None,
        }
    }
}
