//! Order events: what the merchant's webhook learns of each transition (DESIGN.md section
//! 10). An event is planned with its transition and stored in the same transaction, so
//! neither exists without the other; its id is derived from what happened, so a re-planned
//! transition or a redelivery carries the same id.

use std::fmt;

use time::OffsetDateTime;

use super::{Anomaly, Order, OutTradeNo, Payment, Refund, StockMove};

/// How long a delivered event is kept for lookups and redelivery before TTL removes it.
pub const DELIVERED_EVENT_RETENTION: time::Duration = time::Duration::days(30);

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
    /// A refund's move; the order as it became when the move changed it (a settlement),
    /// `None` when only the refund moved (ABNORMAL).
    Refund {
        order: Option<Box<Order>>,
        refund: Box<Refund>,
    },
    Anomaly(Box<Anomaly>),
    /// `order.paid` of a PAID written without reading the order ([`super::PaidUnread`]):
    /// stored without body or counters, completed from the order before its first delivery.
    OrderToRead(OrderToRead),
}

/// What an `order.paid` stored without the order keeps until it is completed: who paid, as
/// WeChat Pay said, so a payer other than the owner is still noticed then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderToRead {
    pub payer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEvent {
    /// Stable: derived from the order and the transition, never random.
    pub id: String,
    pub event_type: EventType,
    pub out_trade_no: Option<OutTradeNo>,
    pub created_at: OffsetDateTime,
    pub data: EventData,
    /// Counters this event moves once, when the dispatcher projects it (DESIGN 5: PAID
    /// touches no product item; `sold` is a report kept from `order.paid`).
    pub stock: Vec<StockMove>,
}

impl OrderEvent {
    /// The event of an order's transition: one per (order, version it reached), which no
    /// other transition of that order can reach; `order.paid` is one per order, whether its
    /// PAID was planned on a read or not (the version is unknown to the one that was not).
    pub fn of_order(event_type: EventType, order: &Order, at: OffsetDateTime) -> OrderEvent {
        let id = match event_type {
            EventType::OrderPaid => Self::paid_id(&order.out_trade_no),
            _ => format!("evt_{}_{}", order.out_trade_no, order.version),
        };
        OrderEvent {
            id,
            event_type,
            out_trade_no: Some(order.out_trade_no.clone()),
            created_at: at,
            data: EventData::Order(Box::new(order.clone())),
            stock: Vec::new(),
        }
    }

    /// `order.paid`'s id: the same however its PAID was written.
    pub fn paid_id(out_trade_no: &OutTradeNo) -> String {
        format!("evt_{out_trade_no}_paid")
    }

    /// `order.paid` of a PAID written without reading the order: its id, its payer; the
    /// rest comes from the order when it is completed ([`Order::paid_event`]).
    pub fn of_unread_payment(payment: &Payment, at: OffsetDateTime) -> OrderEvent {
        OrderEvent {
            id: Self::paid_id(&payment.out_trade_no),
            event_type: EventType::OrderPaid,
            out_trade_no: Some(payment.out_trade_no.clone()),
            created_at: at,
            data: EventData::OrderToRead(OrderToRead {
                payer: payment.payer.as_ref().map(|p| p.to_string()),
            }),
            stock: Vec::new(),
        }
    }

    /// The event of a refund's move to its current status: one per (refund, status).
    pub fn of_refund(
        event_type: EventType,
        order: Option<&Order>,
        refund: &Refund,
        at: OffsetDateTime,
    ) -> OrderEvent {
        OrderEvent {
            id: format!("evt_{}_{}", refund.out_refund_no, refund.status),
            event_type,
            out_trade_no: Some(refund.out_trade_no.clone()),
            created_at: at,
            data: EventData::Refund {
                order: order.map(|o| Box::new(o.clone())),
                refund: Box::new(refund.clone()),
            },
            stock: Vec::new(),
        }
    }

    /// The event of a recorded anomaly: one per anomaly item (kind and cause), so a
    /// re-delivered notification that finds the anomaly finds its event too. Its id hashes
    /// the anomaly's key: a cause is whatever WeChat Pay sent, and an id may hold no '.'.
    pub fn of_anomaly(anomaly: &Anomaly, at: OffsetDateTime) -> OrderEvent {
        let order = anomaly
            .out_trade_no
            .as_ref()
            .map_or("-", OutTradeNo::as_str);
        let key = format!("{order}#{}#{}", anomaly.kind, anomaly.cause);
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let hash: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        OrderEvent {
            id: format!("evt_{}_{hash}", anomaly.kind.as_str().to_ascii_lowercase()),
            event_type: EventType::AnomalyRecorded,
            out_trade_no: anomaly.out_trade_no.clone(),
            created_at: at,
            data: EventData::Anomaly(Box::new(anomaly.clone())),
            stock: Vec::new(),
        }
    }

    /// Which shard of the outbox partition of `gsi2` it waits in while undelivered.
    pub fn shard(id: &str, shards: u32) -> u32 {
        super::ids::fnv_shard(id, shards)
    }
}

/// Where an event's delivery to the merchant's webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Every attempt failed for the retry window: kept for redelivery.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Dead => "DEAD",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Dead,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// An event as the outbox keeps it: the exact body to sign and send, and its delivery so
/// far. Its type is kept as written, so an event of a newer version is still delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub event_type: String,
    pub out_trade_no: Option<String>,
    pub body: String,
    pub created_at: OffsetDateTime,
    pub status: DeliveryStatus,
    /// Attempts since it was written or last redelivered.
    pub attempts: u32,
    /// Bumped by every claim and every redelivery, never reset: a claim's holder records its
    /// attempt only while the fence is still the one its claim set, so a stale attempt never
    /// overwrites a newer claim or a redelivery.
    pub fence: u64,
    /// When its first attempt (since written, or since redelivered) was claimed: the retry
    /// window counts from here, so an event kept while no webhook was configured still gets
    /// its three days once one is.
    pub first_attempt_at: Option<OffsetDateTime>,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Whoever claimed the next attempt holds it until then.
    pub lease_until: Option<OffsetDateTime>,
    /// When it last became due from the start: `created_at`, or the last redelivery (the
    /// backlog's age counts from here).
    pub retry_since: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The counters it moves once projected ([`OrderEvent::stock`]), and when that was done.
    pub stock: Vec<StockMove>,
    pub projected_at: Option<OffsetDateTime>,
    /// An `order.paid` still to be completed from the order (`body` is empty, `stock` too).
    pub order_to_read: Option<OrderToRead>,
}

impl OutboxEvent {
    /// The event completed from its order ([`Order::paid_event`]): `body` (that event's
    /// exact JSON) to send, its counters to project. Written back with the attempt's result.
    pub fn completed(&self, body: String, stock: Vec<StockMove>) -> OutboxEvent {
        OutboxEvent {
            body,
            stock,
            order_to_read: None,
            ..self.clone()
        }
    }

    /// Its counters still to be moved (by the dispatcher, once, before it is delivered), or
    /// its order still to be read to know them.
    pub fn needs_projection(&self) -> bool {
        self.order_to_read.is_some() || (!self.stock.is_empty() && self.projected_at.is_none())
    }

    /// The instant the retry window counts from.
    pub fn window_start(&self) -> OffsetDateTime {
        self.first_attempt_at.unwrap_or(self.retry_since)
    }

    /// A 2xx answered this attempt: kept (for lookups and redelivery), never sent again.
    pub fn delivered(&self, status: u16, at: OffsetDateTime) -> OutboxEvent {
        OutboxEvent {
            status: DeliveryStatus::Delivered,
            next_attempt_at: None,
            lease_until: None,
            delivered_at: Some(at),
            last_status: Some(status),
            last_error: None,
            ..self.clone()
        }
    }

    /// This attempt failed: tried again at `next_attempt_at`, or dead when the retry window
    /// is spent (`None`).
    pub fn failed(
        &self,
        status: Option<u16>,
        error: &str,
        next_attempt_at: Option<OffsetDateTime>,
    ) -> OutboxEvent {
        OutboxEvent {
            status: match next_attempt_at {
                Some(_) => DeliveryStatus::Pending,
                None => DeliveryStatus::Dead,
            },
            next_attempt_at,
            lease_until: None,
            last_status: status,
            last_error: Some(error.to_owned()),
            ..self.clone()
        }
    }

    /// Sent again from its first attempt, whatever became of it (the merchant asked): the
    /// same id and body, a fresh retry window.
    pub fn redelivered(&self, at: OffsetDateTime) -> OutboxEvent {
        OutboxEvent {
            status: DeliveryStatus::Pending,
            attempts: 0,
            fence: self.fence + 1,
            first_attempt_at: None,
            next_attempt_at: Some(at),
            lease_until: None,
            retry_since: at,
            delivered_at: None,
            ..self.clone()
        }
    }
}
