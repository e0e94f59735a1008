//! The wire format of order events (DESIGN.md section 10): the exact JSON body the outbox
//! stores with each transition and the dispatcher signs and sends, byte for byte, on every
//! attempt. Built once, when the transition is written, so a retry never re-serializes.
//!
//! `{"id", "type", "created_at", "data"}`; `data` always carries `out_trade_no` (absent only
//! for an anomaly of an unreadable notification), then the order as the transition left it
//! (order events: its fields inline; refund events: under `order`), the refund or the anomaly.

use serde::Serialize;

use crate::domain::{
    Anomaly, DeliveryMode, EventData, LogisticsType, Order, OrderEvent, OrderLine, OrderStatus,
    Package, Refund, Shipping,
};
use crate::timefmt::to_wechat;

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'static str,
    created_at: String,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Order(OrderData<'a>),
    Refund {
        out_trade_no: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        order: Option<OrderData<'a>>,
        refund: RefundData<'a>,
    },
    Anomaly {
        #[serde(skip_serializing_if = "Option::is_none")]
        out_trade_no: Option<&'a str>,
        anomaly: AnomalyData<'a>,
    },
}

/// The order as the merchant's back office sees it; `version` orders one order's events.
#[derive(Serialize)]
struct OrderData<'a> {
    out_trade_no: &'a str,
    version: u64,
    status: OrderStatus,
    openid: &'a str,
    amount_total: i64,
    currency: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attach: Option<&'a str>,
    lines: &'a [OrderLine],
    created_at: String,
    expire_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paid_at: Option<String>,
    refunded_total: i64,
    refund_pending_total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shipping: Option<ShippingData<'a>>,
}

/// The shipment as the merchant (and the order's owner) sees it: what was shipped and how
/// far WeChat has it; the upload's wire bytes stay inside.
#[derive(Serialize)]
pub(crate) struct ShippingData<'a> {
    logistics_type: LogisticsType,
    delivery_mode: DeliveryMode,
    packages: &'a [Package],
    shipped_at: String,
    /// `NOT_REQUIRED` when the mini-program is not under trade management.
    upload_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uploaded_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_at: Option<String>,
}

pub(crate) fn shipping_data(s: &Shipping) -> ShippingData<'_> {
    let upload = s.upload.as_ref();
    ShippingData {
        logistics_type: s.shipment.logistics_type,
        delivery_mode: s.shipment.delivery_mode,
        packages: &s.shipment.packages,
        shipped_at: to_wechat(s.shipped_at),
        upload_state: upload.map_or("NOT_REQUIRED", |u| u.state.as_str()),
        upload_errcode: upload.and_then(|u| u.last_errcode),
        upload_error: upload.and_then(|u| u.last_error.as_deref()),
        uploaded_at: upload.and_then(|u| u.uploaded_at).map(to_wechat),
        settled_at: s.settled_at.map(to_wechat),
    }
}

#[derive(Serialize)]
struct RefundData<'a> {
    out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_id: Option<&'a str>,
    amount: i64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    restock: Vec<RestockData<'a>>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
}

#[derive(Serialize)]
struct RestockData<'a> {
    sku_id: &'a str,
    quantity: u32,
}

#[derive(Serialize)]
struct AnomalyData<'a> {
    kind: &'static str,
    cause: &'a str,
    at: String,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
}

fn order_data(o: &Order) -> OrderData<'_> {
    OrderData {
        out_trade_no: o.out_trade_no.as_str(),
        version: o.version,
        status: o.status,
        openid: o.openid.as_str(),
        amount_total: o.amount_total.fen(),
        currency: &o.currency,
        description: &o.description,
        attach: o.attach.as_deref(),
        lines: &o.lines,
        created_at: to_wechat(o.created_at),
        expire_at: to_wechat(o.expire_at),
        transaction_id: o.transaction_id.as_deref(),
        paid_at: o.paid_at.map(to_wechat),
        refunded_total: o.refunded_total.fen(),
        refund_pending_total: o.refund_pending_total.fen(),
        shipping: o.shipping.as_ref().map(shipping_data),
    }
}

fn refund_data(r: &Refund) -> RefundData<'_> {
    RefundData {
        out_refund_no: r.out_refund_no.as_str(),
        refund_id: r.refund_id.as_deref(),
        amount: r.amount.fen(),
        status: r.status.as_str(),
        reason: r.reason.as_deref(),
        restock: r
            .restock
            .iter()
            .map(|l| RestockData {
                sku_id: l.sku_id.as_str(),
                quantity: l.quantity.get(),
            })
            .collect(),
        created_at: to_wechat(r.created_at),
        success_time: r.success_time.map(to_wechat),
    }
}

fn anomaly_data(a: &Anomaly) -> AnomalyData<'_> {
    AnomalyData {
        kind: a.kind.as_str(),
        cause: &a.cause,
        at: to_wechat(a.at),
        detail: &a.detail,
        transaction_id: a.transaction_id.as_deref(),
    }
}

/// The event's body, exactly as it will be signed and sent; `None` for an `order.paid` whose
/// order is still to be read (its body is made from the order when it is completed).
pub fn body(event: &OrderEvent) -> Option<String> {
    let data = match &event.data {
        EventData::Order(order) => Data::Order(order_data(order)),
        EventData::Refund { order, refund } => Data::Refund {
            out_trade_no: refund.out_trade_no.as_str(),
            order: order.as_deref().map(order_data),
            refund: refund_data(refund),
        },
        EventData::Anomaly(anomaly) => Data::Anomaly {
            out_trade_no: anomaly.out_trade_no.as_ref().map(|o| o.as_str()),
            anomaly: anomaly_data(anomaly),
        },
        EventData::OrderToRead(_) => return None,
    };
    let body = Body {
        id: &event.id,
        event_type: event.event_type.as_str(),
        created_at: to_wechat(event.created_at),
        data,
    };
    // Only strings, integers and enums: serializing cannot fail.
    Some(serde_json::to_string(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::{
        AnomalyKind, EventType, Money, Openid, OutRefundNo, OutTradeNo, Quantity, RestockLine,
        SkuId,
    };

    fn order() -> Order {
        let mut o = Order::new_pending(
            OutTradeNo::parse("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").unwrap(),
            Openid::parse("o_alice").unwrap(),
            vec![OrderLine {
                sku_id: SkuId::parse("tea").unwrap(),
                name: "Tea".into(),
                unit_price: Money::from_fen(990).unwrap(),
                quantity: Quantity::new(2).unwrap(),
                stock_shard: None,
            }],
            "Demo".into(),
            None,
            datetime!(2026-12-07 04:00:00 UTC),
            datetime!(2026-12-07 04:30:00 UTC),
        )
        .unwrap();
        o.status = OrderStatus::Paid;
        o.version = 2;
        o.transaction_id = Some("4200000001".into());
        o.paid_at = Some(datetime!(2026-12-07 04:01:00 UTC));
        o
    }

    const T1: time::OffsetDateTime = datetime!(2026-12-08 00:00:00 UTC);

    fn parsed(event: &OrderEvent) -> serde_json::Value {
        serde_json::from_str(&body(event).unwrap()).unwrap()
    }

    #[test]
    fn an_order_event_carries_the_order_as_it_became() {
        let o = order();
        let e = OrderEvent::of_order(EventType::OrderPaid, &o, datetime!(2026-12-07 04:01:02 UTC));
        let v = parsed(&e);
        assert_eq!(v["id"], "evt_01JDQ8ZP5V9X8Y7W6T5S4R3Q2P_paid");
        assert_eq!(v["type"], "order.paid");
        assert_eq!(v["created_at"], "2026-12-07T12:01:02+08:00");
        assert_eq!(v["data"]["out_trade_no"], o.out_trade_no.as_str());
        assert_eq!(v["data"]["status"], "PAID");
        assert_eq!(v["data"]["version"], 2);
        assert_eq!(v["data"]["amount_total"], 1980);
        assert_eq!(v["data"]["transaction_id"], "4200000001");
        assert_eq!(v["data"]["paid_at"], "2026-12-07T12:01:00+08:00");
        assert_eq!(v["data"]["lines"][0]["quantity"], 2);
        // The same event is the same bytes: a retry signs what the first attempt signed.
        assert_eq!(body(&e), body(&e.clone()));
        assert!(!e.id.contains('.'));
    }

    #[test]
    fn refund_and_anomaly_events_name_their_order() {
        let o = order();
        let refund = Refund::requested(
            OutRefundNo::parse("R0123456789abcdef").unwrap(),
            o.out_trade_no.clone(),
            Money::from_fen(500).unwrap(),
            None,
            vec![RestockLine {
                sku_id: SkuId::parse("tea").unwrap(),
                quantity: Quantity::new(1).unwrap(),
            }],
            datetime!(2026-12-07 05:00:00 UTC),
        );
        let e = OrderEvent::of_refund(EventType::RefundAbnormal, None, &refund, refund.created_at);
        let v = parsed(&e);
        assert_eq!(v["type"], "refund.abnormal");
        assert_eq!(v["data"]["out_trade_no"], o.out_trade_no.as_str());
        assert_eq!(v["data"]["refund"]["amount"], 500);
        assert_eq!(v["data"]["refund"]["restock"][0]["sku_id"], "tea");
        assert!(v["data"].get("order").is_none());
        let e = OrderEvent::of_refund(
            EventType::RefundSucceeded,
            Some(&o),
            &refund,
            refund.created_at,
        );
        assert_eq!(parsed(&e)["data"]["order"]["status"], "PAID");

        let anomaly = Anomaly {
            out_trade_no: None,
            kind: AnomalyKind::MalformedNotification,
            cause: "notif.1/2".into(),
            at: datetime!(2026-12-07 05:00:00 UTC),
            transaction_id: None,
            notification_id: Some("notif.1/2".into()),
            detail: "no out_trade_no".into(),
            plaintext: Some("{}".into()),
        };
        let e = OrderEvent::of_anomaly(&anomaly, anomaly.at);
        assert!(e.id.starts_with("evt_malformed_notification_"), "{}", e.id);
        assert!(!e.id.contains('.'));
        let mut other = anomaly.clone();
        other.cause = "notif_1/2".into();
        assert_ne!(OrderEvent::of_anomaly(&other, anomaly.at).id, e.id);
        assert_eq!(OrderEvent::of_anomaly(&anomaly, T1).id, e.id);
        let v = parsed(&e);
        assert!(v["data"].get("out_trade_no").is_none());
        assert_eq!(v["data"]["anomaly"]["kind"], "MALFORMED_NOTIFICATION");
        // The plaintext stays in the table: the webhook is told there is one, not what it is.
        assert!(!body(&e).unwrap().contains("plaintext"));
    }
}
