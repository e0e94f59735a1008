//! Order events: what the merchant's webhook learns of each transition (DESIGN.md section
//! 10). An event is planned with its transition and stored in the same transaction, so
//! neither exists without the other; its id is derived from what happened, so a re-planned
//! transition or a redelivery carries the same id.

use std::fmt;

use time::OffsetDateTime;

use super::{Anomaly, Order, OutTradeNo, Refund};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderPaid,
    OrderClosed,
    RefundSucceeded,
    RefundClosed,
    RefundAbnormal,
    OrderShipped,
    OrderCompleted,
    AnomalyRecorded,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::OrderPaid,
        EventType::OrderClosed,
        EventType::RefundSucceeded,
        EventType::RefundClosed,
        EventType::RefundAbnormal,
        EventType::OrderShipped,
        EventType::OrderCompleted,
        EventType::AnomalyRecorded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderPaid => "order.paid",
            EventType::OrderClosed => "order.closed",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundClosed => "refund.closed",
            EventType::RefundAbnormal => "refund.abnormal",
            EventType::OrderShipped => "order.shipped",
            EventType::OrderCompleted => "order.completed",
            EventType::AnomalyRecorded => "anomaly.recorded",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the event says: the order as the transition left it, and the refund or anomaly it
/// concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    Order(Box<Order>),
    Refund {
        order: Box<Order>,
        refund: Box<Refund>,
    },
    Anomaly(Box<Anomaly>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// Stable: derived from the order and the transition, never random.
    pub id: String,
    pub event_type: EventType,
    pub out_trade_no: Option<OutTradeNo>,
    pub created_at: OffsetDateTime,
    pub data: EventData,
}

impl OrderEvent {
    /// The event of an order's transition: one per (order, version it reached), which no
    /// other transition of that order can reach.
    pub fn of_order(event_type: EventType, order: &Order, at: OffsetDateTime) -> OrderEvent {
        OrderEvent {
            id: format!("evt_{}_{}", order.out_trade_no, order.version),
            event_type,
            out_trade_no: Some(order.out_trade_no.clone()),
            created_at: at,
            data: EventData::Order(Box::new(order.clone())),
        }
    }

    /// The event of a refund's move to its current status: one per (refund, status).
    pub fn of_refund(
        event_type: EventType,
        order: &Order,
        refund: &Refund,
        at: OffsetDateTime,
    ) -> OrderEvent {
        OrderEvent {
            id: format!("evt_{}_{}", refund.out_refund_no, refund.status),
            event_type,
            out_trade_no: Some(order.out_trade_no.clone()),
            created_at: at,
            data: EventData::Refund {
                order: Box::new(order.clone()),
                refund: Box::new(refund.clone()),
            },
        }
    }
}
