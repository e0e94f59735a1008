//! Order states and the transitions DESIGN.md section 5 allows, as data: the store turns
//! each allowed edge into one conditional write, and nothing else may move an order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Paid,
    Closed,
    /// WeChat Pay collected money for the order, but not its amount: held (stock still
    /// reserved, nothing shipped) until the merchant settles it, and never swept again.
    AmountMismatch,
}

/// Every legal transition, with the cause recorded in the order's history.
pub const TRANSITIONS: &[(OrderStatus, OrderStatus, &str)] = &[
    (OrderStatus::Pending, OrderStatus::Paid, "payment confirmed"),
    (
        OrderStatus::Pending,
        OrderStatus::Closed,
        "expired, closed at WeChat Pay",
    ),
    (
        OrderStatus::Pending,
        OrderStatus::AmountMismatch,
        "paid, but not the order's amount: held for the merchant",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Closed => "CLOSED",
            OrderStatus::AmountMismatch => "AMOUNT_MISMATCH",
        }
    }

    pub fn can_transition(self, to: OrderStatus) -> bool {
        TRANSITIONS.iter().any(|&(f, t, _)| f == self && t == to)
    }

    pub fn transition(self, to: OrderStatus) -> Result<OrderStatus, TransitionError> {
        if self.can_transition(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        !TRANSITIONS.iter().any(|&(f, _, _)| f == self)
    }

    /// Whether WeChat Pay collected money for the order (so it can never be closed).
    pub fn is_paid(self) -> bool {
        matches!(self, OrderStatus::Paid | OrderStatus::AmountMismatch)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "PENDING" => Ok(OrderStatus::Pending),
            "PAID" => Ok(OrderStatus::Paid),
            "CLOSED" => Ok(OrderStatus::Closed),
            "AMOUNT_MISMATCH" => Ok(OrderStatus::AmountMismatch),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn only_pending_moves() {
        let all = [Pending, Paid, Closed, AmountMismatch];
        for from in all {
            for to in all {
                let expected = from == Pending && to != Pending;
                assert_eq!(from.can_transition(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected);
            }
        }
        assert!(Paid.is_terminal() && Closed.is_terminal() && !Pending.is_terminal());
        assert!(AmountMismatch.is_terminal());
    }

    #[test]
    fn round_trips_as_text() {
        for s in [Pending, Paid, Closed, AmountMismatch] {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("paid".parse::<OrderStatus>().is_err());
    }
}
