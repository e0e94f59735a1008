//! What WeChat Pay told us about money that moved: a confirmed payment and the notification
//! that carried it, kept as received. Both are facts to record, never to recompute.

use time::OffsetDateTime;

use super::{Money, Openid, OutTradeNo};

/// A payment WeChat Pay confirmed (from a notification or an order query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// WeChat Pay's id of the transaction; one payment item per transaction_id.
    pub transaction_id: String,
    pub out_trade_no: OutTradeNo,
    /// `amount.total`: what the order was charged.
    pub amount: Money,
    /// `amount.payer_total`: what the payer paid after coupons (never above `amount`).
    pub payer_total: Money,
    /// `amount.currency` (`CNY`).
    pub currency: String,
    /// WeChat Pay's `Request-ID` of the query answer that reported it (absent when a
    /// notification did).
    pub request_id: Option<String>,
    /// `payer.openid`: who paid (the order's owner, or a friend paying for them).
    pub payer: Option<Openid>,
    pub success_time: OffsetDateTime,
    /// The notification's `id`; absent when the payment was learned by querying.
    pub notification_id: Option<String>,
    /// The notification as received, kept in the same transaction as the payment it made
    /// (the audit trail; issue 12.9). Not read back with the payment.
    pub notification: Option<Box<NotificationRecord>>,
}

/// A verified notification as received, kept for [`NOTIFICATION_RETENTION`] so an operator
/// can see exactly what WeChat Pay sent and replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub id: String,
    pub event_type: String,
    pub received_at: OffsetDateTime,
    /// The body exactly as received: the envelope with its encrypted resource.
    pub body: String,
    /// The `Wechatpay-*` headers as received (serial, signature, timestamp, nonce).
    pub headers: Vec<(String, String)>,
    /// The order it named, when that could be read.
    pub out_trade_no: Option<OutTradeNo>,
    /// What became of it (`applied`, `duplicate`, `anomaly:<kind>`, `ignored`, `refused`).
    pub outcome: String,
}

/// How long a [`NotificationRecord`] is kept (the table's TTL deletes it after).
pub const NOTIFICATION_RETENTION: time::Duration = time::Duration::days(30);
