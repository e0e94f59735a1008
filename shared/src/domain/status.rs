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
    /// Part of what was paid has been refunded (`refunded_total` < `amount_total`).
    PartiallyRefunded,
    /// Everything that was paid has been refunded.
    Refunded,
    /// The merchant recorded a shipment (and uploaded it to WeChat's trade management).
    Shipped,
    /// WeChat settled the order after the buyer confirmed receipt (or its delay ran out).
    Completed,
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
    (
        OrderStatus::Paid,
        OrderStatus::PartiallyRefunded,
        "refund succeeded, part",
    ),
    (
        OrderStatus::Paid,
        OrderStatus::Refunded,
        "refund succeeded, all",
    ),
    (
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
        "refund succeeded, rest",
    ),
    (OrderStatus::Paid, OrderStatus::Shipped, "shipment recorded"),
    (
        OrderStatus::PartiallyRefunded,
        OrderStatus::Shipped,
        "shipment recorded",
    ),
    (
        OrderStatus::Shipped,
        OrderStatus::Completed,
        "settled at WeChat",
    ),
    (
        OrderStatus::Shipped,
        OrderStatus::Refunded,
        "refund succeeded, rest",
    ),
    (
        OrderStatus::Completed,
        OrderStatus::Refunded,
        "refund succeeded, rest",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Closed,
        OrderStatus::AmountMismatch,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
        OrderStatus::Shipped,
        OrderStatus::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Closed => "CLOSED",
            OrderStatus::AmountMismatch => "AMOUNT_MISMATCH",
            OrderStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            OrderStatus::Refunded => "REFUNDED",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Completed => "COMPLETED",
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
        !matches!(self, OrderStatus::Pending | OrderStatus::Closed)
    }

    /// Whether a refund may be asked of an order in this state: it was paid its amount and
    /// not everything is refunded yet (the amount check is the order's).
    pub fn is_refundable(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::PartiallyRefunded
                | OrderStatus::Shipped
                | OrderStatus::Completed
        )
    }

    /// The cause recorded in the history for the edge `self -> to`.
    pub fn edge_cause(self, to: OrderStatus) -> Option<&'static str> {
        TRANSITIONS
            .iter()
            .find(|&&(f, t, _)| f == self && t == to)
            .map(|&(_, _, cause)| cause)
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
            "PARTIALLY_REFUNDED" => Ok(OrderStatus::PartiallyRefunded),
            "REFUNDED" => Ok(OrderStatus::Refunded),
            "SHIPPED" => Ok(OrderStatus::Shipped),
            "COMPLETED" => Ok(OrderStatus::Completed),
            other => Err(format!("unknown order status {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    const ALL: [OrderStatus; 8] = OrderStatus::ALL;

    /// Exactly the edges of DESIGN.md section 5, and nothing leads back to PENDING.
    #[test]
    fn only_the_designed_edges_exist() {
        let designed = [
            (Pending, Paid),
            (Pending, Closed),
            (Pending, AmountMismatch),
            (Paid, PartiallyRefunded),
            (Paid, Refunded),
            (PartiallyRefunded, Refunded),
            (Paid, Shipped),
            (PartiallyRefunded, Shipped),
            (Shipped, Completed),
            (Shipped, Refunded),
            (Completed, Refunded),
        ];
        for from in ALL {
            for to in ALL {
                let expected = designed.contains(&(from, to));
                assert_eq!(from.can_transition(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected);
                assert_eq!(from.edge_cause(to).is_some(), expected);
            }
        }
        // Before refunds and shipping had callers, only PENDING moved: what it may become
        // is unchanged.
        for to in ALL {
            let from_pending = [Paid, Closed, AmountMismatch].contains(&to);
            assert_eq!(Pending.can_transition(to), from_pending, "PENDING -> {to}");
        }
        assert!(Closed.is_terminal() && Refunded.is_terminal() && !Pending.is_terminal());
        assert!(AmountMismatch.is_terminal());
        assert!(!Paid.is_terminal() && !Shipped.is_terminal());
        assert!(
            ALL.iter()
                .all(|s| s.is_paid() != matches!(s, Pending | Closed))
        );
        assert_eq!(
            ALL.into_iter()
                .filter(|s| s.is_refundable())
                .collect::<Vec<_>>(),
            [Paid, PartiallyRefunded, Shipped, Completed]
        );
    }

    #[test]
    fn round_trips_as_text() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("paid".parse::<OrderStatus>().is_err());
    }
}
