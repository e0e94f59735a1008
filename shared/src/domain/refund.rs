//! Refunds as the domain sees them: a refund item with its own small state machine
//! (DESIGN.md section 5), the amount it reserves on its order and the lines it restocks.
//! The order-side effects are planned in `lifecycle`; this module owns the refund's states.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{HistoryEntry, Money, OutRefundNo, OutTradeNo, Quantity, SkuId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Reserved on the order, not yet accepted by WeChat Pay (or not yet allowed: WeChat
    /// Pay wants refunds of one order a minute apart).
    Requested,
    /// Accepted by WeChat Pay (`refund_id` known), outcome pending.
    Processing,
    Success,
    /// Closed by WeChat Pay: nothing was refunded, the reservation is released.
    Closed,
    /// WeChat Pay could not pay it back (the payer's account, a card): the merchant acts.
    Abnormal,
    /// WeChat Pay certainly refused it (never created there): the reservation is released.
    Failed,
}

/// Every legal refund transition, with the cause recorded in its history.
pub const REFUND_TRANSITIONS: &[(RefundStatus, RefundStatus, &str)] = &[
    (
        RefundStatus::Requested,
        RefundStatus::Processing,
        "accepted by WeChat Pay",
    ),
    (
        RefundStatus::Requested,
        RefundStatus::Failed,
        "refused by WeChat Pay",
    ),
    // WeChat Pay's outcome may arrive before its acceptance was recorded (a crash between
    // the two): the outcome is what counts.
    (
        RefundStatus::Requested,
        RefundStatus::Success,
        "refund succeeded",
    ),
    (
        RefundStatus::Requested,
        RefundStatus::Closed,
        "refund closed",
    ),
    (
        RefundStatus::Requested,
        RefundStatus::Abnormal,
        "refund abnormal",
    ),
    (
        RefundStatus::Processing,
        RefundStatus::Success,
        "refund succeeded",
    ),
    (
        RefundStatus::Processing,
        RefundStatus::Closed,
        "refund closed",
    ),
    (
        RefundStatus::Processing,
        RefundStatus::Abnormal,
        "refund abnormal",
    ),
    (
        RefundStatus::Abnormal,
        RefundStatus::Success,
        "refund succeeded",
    ),
    (
        RefundStatus::Abnormal,
        RefundStatus::Closed,
        "refund closed",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a refund cannot go from {from} to {to}")]
pub struct RefundTransitionError {
    pub from: RefundStatus,
    pub to: RefundStatus,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 6] = [
        RefundStatus::Requested,
        RefundStatus::Processing,
        RefundStatus::Success,
        RefundStatus::Closed,
        RefundStatus::Abnormal,
        RefundStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Requested => "REQUESTED",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
            RefundStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<RefundStatus> {
        RefundStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn edge_cause(self, to: RefundStatus) -> Option<&'static str> {
        REFUND_TRANSITIONS
            .iter()
            .find(|&&(f, t, _)| f == self && t == to)
            .map(|&(_, _, cause)| cause)
    }

    /// Whether its amount is still reserved on the order (`refund_pending_total`).
    pub fn holds_reservation(self) -> bool {
        matches!(
            self,
            RefundStatus::Requested | RefundStatus::Processing | RefundStatus::Abnormal
        )
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Units of one order line to return to stock when the refund succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockLine {
    pub sku_id: SkuId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub out_refund_no: OutRefundNo,
    pub out_trade_no: OutTradeNo,
    /// WeChat Pay's id, once it accepted the refund.
    pub refund_id: Option<String>,
    pub amount: Money,
    pub reason: Option<String>,
    pub restock: Vec<RestockLine>,
    pub status: RefundStatus,
    pub created_at: OffsetDateTime,
    pub submitted_at: Option<OffsetDateTime>,
    pub success_time: Option<OffsetDateTime>,
    /// When to ask WeChat Pay about it next, while WeChat Pay may still change it (REQUESTED:
    /// submit it; PROCESSING, ABNORMAL: query it); `None` once final. Refunds whose
    /// notification never came are found by it.
    pub next_check_at: Option<OffsetDateTime>,
    pub history: Vec<HistoryEntry<RefundStatus>>,
}

/// WeChat Pay wants refunds of one order a minute apart: a REQUESTED refund is tried again
/// no sooner.
pub const REFUND_SPACING: time::Duration = time::Duration::minutes(1);

impl Refund {
    /// A new REQUESTED refund of `amount` on an order.
    pub fn requested(
        out_refund_no: OutRefundNo,
        out_trade_no: OutTradeNo,
        amount: Money,
        reason: Option<String>,
        restock: Vec<RestockLine>,
        at: OffsetDateTime,
    ) -> Refund {
        Refund {
            out_refund_no,
            out_trade_no,
            refund_id: None,
            amount,
            reason,
            restock,
            status: RefundStatus::Requested,
            created_at: at,
            submitted_at: None,
            success_time: None,
            next_check_at: Some(at + REFUND_SPACING),
            history: vec![HistoryEntry {
                from: None,
                to: RefundStatus::Requested,
                at,
                cause: "refund requested".to_owned(),
            }],
        }
    }

    /// The refund as a move to `to` leaves it (status and a history entry); refused unless
    /// the edge exists.
    pub fn transitioned(
        &self,
        to: RefundStatus,
        at: OffsetDateTime,
    ) -> Result<Refund, RefundTransitionError> {
        let from = self.status;
        let cause = from
            .edge_cause(to)
            .ok_or(RefundTransitionError { from, to })?;
        let mut next = self.clone();
        next.status = to;
        next.next_check_at = Refund::first_check(to, at);
        next.history.push(HistoryEntry {
            from: Some(from),
            to,
            at,
            cause: cause.to_owned(),
        });
        Ok(next)
    }
}

impl Refund {
    /// When a refund that just became `status` is first looked at again: REQUESTED after the
    /// spacing, PROCESSING after WeChat Pay's usual few minutes (its notification normally
    /// comes first), ABNORMAL after an hour (the merchant acts, WeChat Pay settles).
    fn first_check(status: RefundStatus, at: OffsetDateTime) -> Option<OffsetDateTime> {
        match status {
            RefundStatus::Requested => Some(at + REFUND_SPACING),
            RefundStatus::Processing => Some(at + time::Duration::minutes(5)),
            RefundStatus::Abnormal => Some(at + time::Duration::hours(1)),
            RefundStatus::Success | RefundStatus::Closed | RefundStatus::Failed => None,
        }
    }

    /// After a check at `now` that changed nothing: when to check again. Backs off with the
    /// refund's age as WeChat Pay advises (1, 5, then up to 30 minutes between queries); a
    /// REQUESTED refund is retried every spacing.
    pub fn recheck_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let age: time::Duration = now - self.created_at;
        let wait = match self.status {
            RefundStatus::Requested => REFUND_SPACING,
            RefundStatus::Processing => {
                (age / 2_i32).clamp(time::Duration::minutes(1), time::Duration::minutes(30))
            }
            RefundStatus::Abnormal => time::Duration::hours(1),
            _ => return None,
        };
        Some(now + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::RefundStatus::*;
    use super::*;

    #[test]
    fn refund_edges_follow_the_design() {
        for from in RefundStatus::ALL {
            for to in RefundStatus::ALL {
                let expected = matches!(
                    (from, to),
                    (Requested, Processing | Failed | Success | Closed | Abnormal)
                        | (Processing, Success | Closed | Abnormal)
                        | (Abnormal, Success | Closed)
                );
                assert_eq!(from.edge_cause(to).is_some(), expected, "{from} -> {to}");
            }
            assert_eq!(RefundStatus::parse(from.as_str()), Some(from));
            assert_eq!(serde_json::to_string(&from).unwrap(), format!("\"{from}\""));
        }
        assert!(Requested.holds_reservation() && Abnormal.holds_reservation());
        assert!(!Success.holds_reservation() && !Closed.holds_reservation());
        assert!(!Failed.holds_reservation());
    }

    #[test]
    fn a_refund_is_checked_until_final_backing_off_with_age() {
        use time::macros::datetime;
        let t = datetime!(2026-12-07 04:00:00 UTC);
        let r = Refund::requested(
            OutRefundNo::parse("R1").unwrap(),
            OutTradeNo::parse("ORDER-0001").unwrap(),
            Money::from_fen(1).unwrap(),
            None,
            Vec::new(),
            t,
        );
        assert_eq!(r.next_check_at, Some(t + REFUND_SPACING));
        assert_eq!(
            r.recheck_at(t + time::Duration::minutes(3)),
            Some(t + time::Duration::minutes(4))
        );
        let p = r.transitioned(Processing, t).unwrap();
        assert_eq!(p.next_check_at, Some(t + time::Duration::minutes(5)));
        let hour = t + time::Duration::hours(1);
        assert_eq!(p.recheck_at(hour), Some(hour + time::Duration::minutes(30)));
        let minute = t + time::Duration::minutes(1);
        assert_eq!(
            p.recheck_at(minute),
            Some(minute + time::Duration::minutes(1))
        );
        let done = p.transitioned(Success, hour).unwrap();
        assert_eq!((done.next_check_at, done.recheck_at(hour)), (None, None));
    }
}
