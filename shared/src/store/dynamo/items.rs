//! The table's item layout (DESIGN 4), in one place: keys, attribute names, and the mapping of
//! every domain type to and from `AttributeValue` maps. Written by hand so the stored shape is
//! explicit; parsing reports a malformed item as `StoreError::Malformed` and never panics.
//!
//! Money is stored as N (fen), timestamps as `to_utc_string` (fixed width, so index sort keys
//! order by time), `ttl` as epoch seconds (what DynamoDB TTL reads).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use crate::domain::{
    BillMismatch, BillMismatchKind, BillReport, BillSums, DeliveryStatus, EventData, HistoryEntry,
    Money, Openid, Order, OrderEvent, OrderLine, OrderStatus, OrderToRead, OutRefundNo, OutTradeNo,
    OutboxEvent, Product, Quantity, Refund, RefundStatus, RestockLine, SkuId, StockChange,
    StockMove, StockShard,
};
use crate::idempotency::{IdempotencyRecord, IdempotencyScope, IdempotencyState, StoredResponse};
use crate::store::{
    Anomaly, AnomalyKind, NOTIFICATION_RETENTION, NotificationRecord, Payment, StoreError,
};
use crate::timefmt::{beijing_date, date_string, parse_date, parse_rfc3339, to_utc_string};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Attribute names, shared by the mapping and the expressions in `dynamo.rs`.
pub(crate) mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const GSI1PK: &str = "gsi1pk";
    pub const GSI1SK: &str = "gsi1sk";
    pub const GSI2PK: &str = "gsi2pk";
    pub const GSI2SK: &str = "gsi2sk";
    pub const ENTITY: &str = "entity";
    pub const TTL: &str = "ttl";
    // order
    pub const OUT_TRADE_NO: &str = "out_trade_no";
    pub const OPENID: &str = "openid";
    pub const STATUS: &str = "status";
    pub const LINES: &str = "lines";
    pub const AMOUNT_TOTAL: &str = "amount_total";
    pub const CURRENCY: &str = "currency";
    pub const DESCRIPTION: &str = "description";
    pub const ATTACH: &str = "attach";
    pub const CREATED_AT: &str = "created_at";
    pub const EXPIRE_AT: &str = "expire_at";
    pub const PREPAY_ID: &str = "prepay_id";
    /// WeChat Pay's `Request-ID` of the prepay answer (written by `complete_order`).
    pub const PREPAY_REQUEST_ID: &str = "prepay_request_id";
    pub const REQUEST_ID: &str = "request_id";
    pub const TRANSACTION_ID: &str = "transaction_id";
    pub const PAID_AT: &str = "paid_at";
    pub const LAST_SYNCED_AT: &str = "last_synced_at";
    /// The sweeper's lease (`Store::claim_sweep`), apart from readers' `last_synced_at`.
    pub const SWEPT_AT: &str = "swept_at";
    pub const REFUNDED_TOTAL: &str = "refunded_total";
    pub const REFUND_PENDING_TOTAL: &str = "refund_pending_total";
    pub const REFUND_RESERVED_TOTAL: &str = "refund_reserved_total";
    pub const OUT_REFUND_NO: &str = "out_refund_no";
    pub const REFUND_ID: &str = "refund_id";
    pub const REASON: &str = "reason";
    pub const RESTOCK: &str = "restock";
    pub const SUBMITTED_AT: &str = "submitted_at";
    pub const NEXT_CHECK_AT: &str = "next_check_at";
    pub const REFUND_NOS: &str = "refund_nos";
    pub const RESTOCKED: &str = "restocked";
    pub const VERSION: &str = "version";
    /// The version PAID gave the order (`order.paid`'s, whenever its body is made).
    pub const PAID_VERSION: &str = "paid_version";
    pub const HISTORY: &str = "history";
    /// The shipment and its upload (DESIGN 12), as JSON: read and written whole by the
    /// order's own transitions; no condition or index looks inside it.
    pub const SHIPPING: &str = "shipping";
    // access token
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const EXPIRES_AT: &str = "expires_at";
    // product
    pub const SKU_ID: &str = "sku_id";
    pub const NAME: &str = "name";
    pub const PRICE: &str = "price";
    pub const STOCK: &str = "stock";
    pub const RESERVED: &str = "reserved";
    pub const SOLD: &str = "sold";
    /// `stock - reserved - sold`, kept by every stock write because condition expressions
    /// cannot do arithmetic. Meaningless (and ignored) on unlimited products.
    pub const AVAILABLE: &str = "available";
    pub const ACTIVE: &str = "active";
    /// How many stock shard items a sku's stock is split over (absent: 1, the single counter).
    pub const STOCK_SHARDS: &str = "stock_shards";
    // stock shard (and an order line's or a stock move's shard)
    pub const SHARD: &str = "shard";
    /// Units reserved on a shard by orders that recorded it (paid ones included).
    pub const TAKEN: &str = "taken";
    // idempotency
    pub const IDEMPOTENCY_KEY: &str = "idempotency_key";
    pub const REQUEST_HASH: &str = "request_hash";
    pub const OWNER: &str = "owner";
    pub const RESPONSE_STATUS: &str = "response_status";
    pub const RESPONSE_BODY: &str = "response_body";
    pub const LOCKED_UNTIL: &str = "locked_until";
    // payment
    pub const AMOUNT: &str = "amount";
    pub const PAYER_TOTAL: &str = "payer_total";
    pub const SUCCESS_TIME: &str = "success_time";
    pub const NOTIFICATION_ID: &str = "notification_id";
    pub const PAYER: &str = "payer";
    // anomaly
    pub const KIND: &str = "kind";
    pub const AT: &str = "at";
    pub const DETAIL: &str = "detail";
    pub const CAUSE: &str = "cause";
    // notification record
    pub const ID: &str = "id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const RECEIVED_AT: &str = "received_at";
    pub const BODY: &str = "body";
    pub const HEADERS: &str = "headers";
    pub const OUTCOME: &str = "outcome";
    pub const PLAINTEXT: &str = "plaintext";
    // event (the outbox)
    pub const ATTEMPTS: &str = "attempts";
    pub const NEXT_ATTEMPT_AT: &str = "next_attempt_at";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const RETRY_SINCE: &str = "retry_since";
    pub const FENCE: &str = "fence";
    pub const FIRST_ATTEMPT_AT: &str = "first_attempt_at";
    pub const PROJECTED_AT: &str = "projected_at";
    /// An `order.paid` stored by a PAID that read no order: its body is still to be made.
    pub const ORDER_TO_READ: &str = "order_to_read";
    pub const CHANGE: &str = "change";
    pub const DELIVERED_AT: &str = "delivered_at";
    pub const LAST_STATUS: &str = "last_status";
    pub const LAST_ERROR: &str = "last_error";
    // bill report
    pub const BILL_DATE: &str = "bill_date";
    pub const ROWS: &str = "rows";
    pub const MATCHED: &str = "matched";
    pub const RECOVERED: &str = "recovered";
    pub const MISMATCH_COUNT: &str = "mismatch_count";
    pub const MISMATCHES: &str = "mismatches";
    pub const SUMS: &str = "sums";
    pub const STATEMENT: &str = "statement";
    pub const COMPLETE: &str = "complete";
}

use attr::*;

pub(crate) const GSI1: &str = "gsi1";
pub(crate) const GSI2: &str = "gsi2";

pub(crate) const IN_PROGRESS: &str = "IN_PROGRESS";
pub(crate) const COMPLETED: &str = "COMPLETED";

// ---- keys ----------------------------------------------------------------------------------

pub(crate) fn order_pk(out_trade_no: &OutTradeNo) -> String {
    format!("ORDER#{out_trade_no}")
}

pub(crate) fn product_pk(sku_id: &SkuId) -> String {
    format!("PRODUCT#{sku_id}")
}

/// A stock shard: the shard is in the partition key, so shards never share a partition.
pub(crate) fn stock_shard_key(sku_id: &SkuId, shard: u32) -> Item {
    key(format!("STOCK#{sku_id}#{shard}"), "STOCK")
}

/// The list of sharded skus (one item per sku under one key), written when their stock is
/// staged and read by the rebalancer: apart from the product items, whose writes (`sold`
/// counted from events) must never heat one index key.
pub(crate) const SHARDED_SKUS_PK: &str = "STOCK_SHARDED";

#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn sharded_sku_key(sku_id: &SkuId) -> Item {
    key(SHARDED_SKUS_PK.to_owned(), sku_id.as_str())
}

/// Neither an openid nor a key contains `#`, so the pk is unambiguous.
pub(crate) fn idempotency_pk(scope: &IdempotencyScope) -> String {
    format!("IDEM#{}#{}", scope.openid, scope.key)
}

pub(crate) fn payment_pk(transaction_id: &str) -> String {
    format!("PAYMENT#{transaction_id}")
}

pub(crate) fn anomaly_pk(out_trade_no: &OutTradeNo) -> String {
    format!("ANOMALY#{out_trade_no}")
}

/// Where the anomalies of notifications that named no readable order are kept.
pub(crate) const ANOMALY_PK_NO_ORDER: &str = "ANOMALY#-";

pub(crate) fn user_gsi1pk(openid: &Openid) -> String {
    format!("USER#{openid}")
}

/// The due-shipments partition of `gsi2`: shipped orders whose upload to WeChat is to be
/// sent again, by `next_attempt_at` (few at a time: one partition, like the refunds').
pub(crate) const SHIPPING_DUE_GSI2PK: &str = "SHIPPING_DUE";

/// The due-refunds partition of `gsi2` (refunds WeChat Pay may still change).
pub(crate) const REFUNDS_DUE_GSI2PK: &str = "REFUNDS_DUE";

pub(crate) fn pending_gsi2pk(shard: u32) -> String {
    format!("PENDING#{shard}")
}

/// The outbox partitions of `gsi2`: undelivered events by `next_attempt_at`, sharded like
/// pending orders because events are written at the order rate.
pub(crate) fn outbox_gsi2pk(shard: u32) -> String {
    format!("OUTBOX#{shard}")
}

/// The day partitions of `gsi2` the bill reconciliation reads (DESIGN 11): a payment item is
/// in `PAIDON#<Beijing date of its success_time>#<shard>` from the transaction that writes it,
/// a refund item in `REFUNDON#<Beijing date WeChat Pay accepted it>#<shard>` from the one that
/// makes it SUCCESS; `gsi2sk` is the success time. Sharded by a hash of the id
/// (`domain::day_shard`), so a flash sale's day is never one hot index key.
pub(crate) fn paid_on_gsi2pk(date: time::Date, shard: u32) -> String {
    format!("PAIDON#{}#{shard}", date_string(date))
}

pub(crate) fn refunded_on_gsi2pk(date: time::Date, shard: u32) -> String {
    format!("REFUNDON#{}#{shard}", date_string(date))
}

/// The day a refund's row is in WeChat Pay's bill: the day it was accepted there (a bill
/// lists a refund when it is initiated, not when it succeeds: reference 7.3). Accepted is
/// `submitted_at`; a refund settled before its acceptance was recorded has only its
/// `created_at`, moments earlier.
pub(crate) fn refund_bill_date(r: &Refund) -> time::Date {
    beijing_date(r.submitted_at.unwrap_or(r.created_at))
}

pub(crate) fn bill_key(date: time::Date) -> Item {
    key(format!("BILL#{}", date_string(date)), "TRADE")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (SK.to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(crate) fn order_key(out_trade_no: &OutTradeNo) -> Item {
    key(order_pk(out_trade_no), "ORDER")
}

pub(crate) fn product_key(sku_id: &SkuId) -> Item {
    key(product_pk(sku_id), "PRODUCT")
}

pub(crate) fn idempotency_key(scope: &IdempotencyScope) -> Item {
    key(idempotency_pk(scope), "IDEM")
}

pub(crate) fn notification_key(id: &str) -> Item {
    key(format!("NOTIFY#{id}"), "NOTIFY")
}

pub(crate) fn refund_key(out_refund_no: &OutRefundNo) -> Item {
    key(format!("REFUND#{out_refund_no}"), "REFUND")
}

pub(crate) fn payment_key(transaction_id: &str) -> Item {
    key(payment_pk(transaction_id), "PAYMENT")
}

pub(crate) fn event_key(id: &str) -> Item {
    key(format!("EVENT#{id}"), "EVENT")
}

pub(crate) fn anomaly_sk(kind: AnomalyKind, cause: &str) -> String {
    format!("{kind}#{cause}")
}

// ---- value helpers -------------------------------------------------------------------------

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn t(v: OffsetDateTime) -> AttributeValue {
    AttributeValue::S(to_utc_string(v))
}

pub(crate) fn money(m: Money) -> AttributeValue {
    n(m.fen())
}

fn put_opt(item: &mut Item, name: &str, v: Option<AttributeValue>) {
    if let Some(v) = v {
        item.insert(name.to_owned(), v);
    }
}

/// Reads typed attributes off one item, naming the item in every error.
struct Fields<'a> {
    item: &'a Item,
    entity: &'static str,
    key: String,
}

impl<'a> Fields<'a> {
    fn new(item: &'a Item, entity: &'static str) -> Self {
        let key = item
            .get(PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "<no pk>".to_owned());
        Fields { item, entity, key }
    }

    fn nested(&self, item: &'a Item, what: &str) -> Fields<'a> {
        Fields {
            item,
            entity: self.entity,
            key: format!("{} ({what})", self.key),
        }
    }

    fn err(&self, reason: impl Into<String>) -> StoreError {
        StoreError::malformed(self.entity, self.key.clone(), reason)
    }

    /// Absent and NULL are both "no value".
    fn get(&self, name: &str) -> Option<&'a AttributeValue> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => None,
            Some(v) => Some(v),
        }
    }

    fn opt_s(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(self.err(format!("{name} is not a string"))),
        }
    }

    /// A string set (absent: empty), sorted: DynamoDB keeps no order in a set.
    fn string_set(&self, name: &str) -> Result<Vec<&'a str>, StoreError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(v)) => {
                let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
                v.sort_unstable();
                Ok(v)
            }
            Some(_) => Err(self.err(format!("{name} is not a string set"))),
        }
    }

    fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.opt_s(name)?
            .ok_or_else(|| self.err(format!("{name} is missing")))
    }

    fn opt_i64(&self, name: &str) -> Result<Option<i64>, StoreError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.err(format!("{name} is not an integer: {v:?}"))),
            Some(_) => Err(self.err(format!("{name} is not a number"))),
        }
    }

    fn i64(&self, name: &str) -> Result<i64, StoreError> {
        self.opt_i64(name)?
            .ok_or_else(|| self.err(format!("{name} is missing")))
    }

    fn money(&self, name: &str) -> Result<Money, StoreError> {
        self.opt_money(name)?
            .ok_or_else(|| self.err(format!("{name} is missing")))
    }

    fn opt_money(&self, name: &str) -> Result<Option<Money>, StoreError> {
        self.opt_i64(name)?
            .map(|fen| Money::from_fen(fen).map_err(|e| self.err(format!("{name}: {e}"))))
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<bool, StoreError> {
        match self.get(name) {
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(format!("{name} is not a boolean"))),
            None => Err(self.err(format!("{name} is missing"))),
        }
    }

    fn time(&self, name: &str) -> Result<OffsetDateTime, StoreError> {
        let v = self.s(name)?;
        parse_rfc3339(v).map_err(|e| self.err(format!("{name}: {e}")))
    }

    fn opt_time(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        self.opt_s(name)?
            .map(|v| parse_rfc3339(v).map_err(|e| self.err(format!("{name}: {e}"))))
            .transpose()
    }

    fn list(&self, name: &str) -> Result<&'a [AttributeValue], StoreError> {
        match self.get(name) {
            Some(AttributeValue::L(v)) => Ok(v.as_slice()),
            Some(_) => Err(self.err(format!("{name} is not a list"))),
            None => Err(self.err(format!("{name} is missing"))),
        }
    }

    fn maps(&self, name: &str) -> Result<Vec<Fields<'a>>, StoreError> {
        self.list(name)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                AttributeValue::M(m) => Ok(self.nested(m, &format!("{name}[{i}]"))),
                _ => Err(self.err(format!("{name}[{i}] is not a map"))),
            })
            .collect()
    }

    fn parse<T, E: std::fmt::Display>(
        &self,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        let v = self.s(name)?;
        f(v).map_err(|e| self.err(format!("{name}: {e}")))
    }

    fn status(&self, name: &str) -> Result<OrderStatus, StoreError> {
        self.parse(name, str::parse::<OrderStatus>)
    }
}

// ---- orders --------------------------------------------------------------------------------

/// A status stored by its name in a history entry (orders' and refunds').
pub(crate) trait StatusName: Copy + Sized {
    fn name(self) -> &'static str;
    fn from_name(s: &str) -> Option<Self>;
}

impl StatusName for OrderStatus {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn from_name(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl StatusName for RefundStatus {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn from_name(s: &str) -> Option<Self> {
        RefundStatus::parse(s)
    }
}

pub(crate) fn history_value<S: StatusName>(h: &HistoryEntry<S>) -> AttributeValue {
    let mut m = HashMap::from([
        ("to".to_owned(), s(h.to.name())),
        (AT.to_owned(), t(h.at)),
        ("cause".to_owned(), s(h.cause.clone())),
    ]);
    put_opt(&mut m, "from", h.from.map(|f| s(f.name())));
    AttributeValue::M(m)
}

fn history_from<S: StatusName>(f: &Fields<'_>) -> Result<Vec<HistoryEntry<S>>, StoreError> {
    let status = |h: &Fields<'_>, v: &str| {
        S::from_name(v).ok_or_else(|| h.err(format!("unknown status {v:?}")))
    };
    f.maps(HISTORY)?
        .into_iter()
        .map(|h| {
            Ok(HistoryEntry {
                from: h.opt_s("from")?.map(|v| status(&h, v)).transpose()?,
                to: status(&h, h.s("to")?)?,
                at: h.time(AT)?,
                cause: h.s("cause")?.to_owned(),
            })
        })
        .collect()
}

fn line_value(l: &OrderLine) -> AttributeValue {
    let mut m = HashMap::from([
        (SKU_ID.to_owned(), s(l.sku_id.as_str())),
        (NAME.to_owned(), s(l.name.clone())),
        ("unit_price".to_owned(), money(l.unit_price)),
        ("quantity".to_owned(), n(l.quantity.get())),
    ]);
    put_opt(&mut m, SHARD, l.stock_shard.map(n));
    AttributeValue::M(m)
}

/// gsi1 sort key: newest first when read backwards; the out_trade_no breaks ties.
pub(crate) fn order_gsi1sk(order: &Order) -> String {
    format!("{}#{}", to_utc_string(order.created_at), order.out_trade_no)
}

/// The full item of an order; a PENDING order also carries the sparse pending-index keys.
pub(crate) fn order_item(order: &Order, shards: u32) -> Item {
    let mut item = order_key(&order.out_trade_no);
    item.extend([
        (ENTITY.to_owned(), s("ORDER")),
        (OUT_TRADE_NO.to_owned(), s(order.out_trade_no.as_str())),
        (OPENID.to_owned(), s(order.openid.as_str())),
        (STATUS.to_owned(), s(order.status.as_str())),
        (
            LINES.to_owned(),
            AttributeValue::L(order.lines.iter().map(line_value).collect()),
        ),
        (AMOUNT_TOTAL.to_owned(), money(order.amount_total)),
        (CURRENCY.to_owned(), s(order.currency.clone())),
        (DESCRIPTION.to_owned(), s(order.description.clone())),
        (CREATED_AT.to_owned(), t(order.created_at)),
        (EXPIRE_AT.to_owned(), t(order.expire_at)),
        (VERSION.to_owned(), n(order.version)),
        (
            HISTORY.to_owned(),
            AttributeValue::L(order.history.iter().map(history_value).collect()),
        ),
        (GSI1PK.to_owned(), s(user_gsi1pk(&order.openid))),
        (GSI1SK.to_owned(), s(order_gsi1sk(order))),
    ]);
    put_opt(&mut item, ATTACH, order.attach.clone().map(s));
    put_opt(&mut item, PREPAY_ID, order.prepay_id.clone().map(s));
    put_opt(
        &mut item,
        TRANSACTION_ID,
        order.transaction_id.clone().map(s),
    );
    put_opt(&mut item, PAID_AT, order.paid_at.map(t));
    put_opt(
        &mut item,
        NOTIFICATION_ID,
        order.notification_id.clone().map(s),
    );
    put_opt(&mut item, LAST_SYNCED_AT, order.last_synced_at.map(t));
    put_opt(&mut item, PAID_VERSION, order.paid_version.map(n));
    // Absent means zero: an order never refunded carries none. `refund_reserved_total`
    // (refunded + pending) is what a reservation's condition compares, since a condition
    // cannot add two attributes; it is derived, never read back.
    let reserved = Money::from_fen(order.refunded_total.fen() + order.refund_pending_total.fen())
        .unwrap_or(Money::ZERO);
    for (name, total) in [
        (REFUNDED_TOTAL, order.refunded_total),
        (REFUND_PENDING_TOTAL, order.refund_pending_total),
        (REFUND_RESERVED_TOTAL, reserved),
    ] {
        put_opt(
            &mut item,
            name,
            (total != Money::ZERO).then(|| money(total)),
        );
    }
    if !order.restocked.is_empty() {
        item.insert(RESTOCKED.to_owned(), restock_value(&order.restocked));
    }
    if !order.refunds.is_empty() {
        let mut nos: Vec<String> = order.refunds.iter().map(|n| n.to_string()).collect();
        nos.sort_unstable();
        item.insert(REFUND_NOS.to_owned(), AttributeValue::Ss(nos));
    }
    if let Some(shipping) = &order.shipping {
        // Serializing plain data with string keys cannot fail.
        let json = serde_json::to_string(shipping).unwrap_or_default();
        item.insert(SHIPPING.to_owned(), s(json));
    }
    if order.status == OrderStatus::Pending {
        item.insert(
            GSI2PK.to_owned(),
            s(pending_gsi2pk(order.out_trade_no.shard(shards))),
        );
        item.insert(GSI2SK.to_owned(), t(order.expire_at));
    } else if let Some(at) = order
        .shipping
        .as_ref()
        .and_then(|s| s.next_check_at(order.status))
    {
        item.insert(GSI2PK.to_owned(), s(SHIPPING_DUE_GSI2PK));
        item.insert(GSI2SK.to_owned(), t(at));
    }
    item
}

pub(crate) fn order_from_item(item: &Item) -> Result<Order, StoreError> {
    let f = Fields::new(item, "order");
    let lines = f
        .maps(LINES)?
        .into_iter()
        .map(|l| {
            Ok(OrderLine {
                sku_id: l.parse(SKU_ID, SkuId::parse)?,
                name: l.s(NAME)?.to_owned(),
                unit_price: l.money("unit_price")?,
                quantity: Quantity::new(l.i64("quantity")?)
                    .map_err(|e| l.err(format!("quantity: {e}")))?,
                stock_shard: opt_shard(&l)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let history = history_from::<OrderStatus>(&f)?;
    let version = f.i64(VERSION)?;
    Ok(Order {
        out_trade_no: f.parse(OUT_TRADE_NO, OutTradeNo::parse)?,
        openid: f.parse(OPENID, Openid::parse)?,
        status: f.status(STATUS)?,
        lines,
        amount_total: f.money(AMOUNT_TOTAL)?,
        currency: f.s(CURRENCY)?.to_owned(),
        description: f.opt_s(DESCRIPTION)?.unwrap_or_default().to_owned(),
        attach: f.opt_s(ATTACH)?.map(str::to_owned),
        created_at: f.time(CREATED_AT)?,
        expire_at: f.time(EXPIRE_AT)?,
        prepay_id: f.opt_s(PREPAY_ID)?.map(str::to_owned),
        transaction_id: f.opt_s(TRANSACTION_ID)?.map(str::to_owned),
        paid_at: f.opt_time(PAID_AT)?,
        notification_id: f.opt_s(NOTIFICATION_ID)?.map(str::to_owned),
        last_synced_at: f.opt_time(LAST_SYNCED_AT)?,
        refunded_total: f.opt_money(REFUNDED_TOTAL)?.unwrap_or(Money::ZERO),
        refund_pending_total: f.opt_money(REFUND_PENDING_TOTAL)?.unwrap_or(Money::ZERO),
        restocked: restock_from(&f, RESTOCKED)?,
        refunds: f
            .string_set(REFUND_NOS)?
            .into_iter()
            .map(|n| OutRefundNo::parse(n).map_err(|e| f.err(format!("{REFUND_NOS}: {e}"))))
            .collect::<Result<_, _>>()?,
        version: u64::try_from(version).map_err(|_| f.err("version is negative"))?,
        paid_version: f
            .opt_i64(PAID_VERSION)?
            .map(|v| u64::try_from(v).map_err(|_| f.err("paid_version is negative")))
            .transpose()?,
        shipping: f
            .opt_s(SHIPPING)?
            .map(|json| serde_json::from_str(json).map_err(|e| f.err(format!("{SHIPPING}: {e}"))))
            .transpose()?,
        history,
    })
}

// ---- access token ---------------------------------------------------------------------------

pub(crate) fn access_token_key(appid: &str) -> Item {
    key(format!("WXTOKEN#{appid}"), "WXTOKEN")
}

/// The shared access token; TTL a day after it lapses, so a dead one does not linger.
pub(crate) fn access_token_item(appid: &str, token: &crate::store::AccessToken) -> Item {
    let mut item = access_token_key(appid);
    item.extend([
        (ENTITY.to_owned(), s("WXTOKEN")),
        (ACCESS_TOKEN.to_owned(), s(token.token.expose().clone())),
        (EXPIRES_AT.to_owned(), t(token.expires_at)),
        (
            TTL.to_owned(),
            n((token.expires_at + time::Duration::days(1)).unix_timestamp()),
        ),
    ]);
    item
}

pub(crate) fn access_token_from_item(item: &Item) -> Result<crate::store::AccessToken, StoreError> {
    let f = Fields::new(item, "access token");
    Ok(crate::store::AccessToken {
        token: crate::config::Secret::new(f.s(ACCESS_TOKEN)?.to_owned()),
        expires_at: f.time(EXPIRES_AT)?,
    })
}

// ---- products ------------------------------------------------------------------------------

#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn product_item(p: &Product) -> Item {
    let mut item = product_key(&p.sku_id);
    item.extend([
        (ENTITY.to_owned(), s("PRODUCT")),
        (SKU_ID.to_owned(), s(p.sku_id.as_str())),
        (NAME.to_owned(), s(p.name.clone())),
        (PRICE.to_owned(), money(p.price)),
        (RESERVED.to_owned(), n(p.reserved)),
        (SOLD.to_owned(), n(p.sold)),
        // A sharded sku's units are in its shards: 0 here, so nothing that took it for a
        // single counter could sell them twice.
        (
            AVAILABLE.to_owned(),
            n(if p.is_sharded() {
                0
            } else {
                p.stock.unwrap_or(0) - p.reserved - p.sold
            }),
        ),
        (ACTIVE.to_owned(), AttributeValue::Bool(p.active)),
    ]);
    put_opt(&mut item, STOCK, p.stock.map(n));
    put_opt(
        &mut item,
        STOCK_SHARDS,
        (p.stock_shards > 1).then(|| n(p.stock_shards)),
    );
    item
}

/// A shard's `shard` attribute, when it has one (order lines, stock moves).
fn opt_shard(f: &Fields<'_>) -> Result<Option<u32>, StoreError> {
    f.opt_i64(SHARD)?
        .map(|v| u32::try_from(v).map_err(|_| f.err("shard out of range")))
        .transpose()
}

/// A stock shard as staged: `available` units, none taken.
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn stock_shard_item(sku_id: &SkuId, shard: u32, available: i64) -> Item {
    let mut item = stock_shard_key(sku_id, shard);
    item.extend([
        (ENTITY.to_owned(), s("STOCK")),
        (SKU_ID.to_owned(), s(sku_id.as_str())),
        (SHARD.to_owned(), n(shard)),
        (AVAILABLE.to_owned(), n(available)),
        (TAKEN.to_owned(), n(0)),
    ]);
    item
}

pub(crate) fn stock_shard_from_item(item: &Item) -> Result<StockShard, StoreError> {
    let f = Fields::new(item, "stock shard");
    Ok(StockShard {
        sku_id: f.parse(SKU_ID, SkuId::parse)?,
        shard: opt_shard(&f)?.ok_or_else(|| f.err("shard is missing"))?,
        available: f.i64(AVAILABLE)?,
        taken: f.opt_i64(TAKEN)?.unwrap_or(0),
    })
}

/// The rebalancer's entry for a sharded sku.
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn sharded_sku_item(sku_id: &SkuId, shards: u32) -> Item {
    let mut item = sharded_sku_key(sku_id);
    item.extend([
        (ENTITY.to_owned(), s("STOCK_SHARDED")),
        (SKU_ID.to_owned(), s(sku_id.as_str())),
        (STOCK_SHARDS.to_owned(), n(shards)),
    ]);
    item
}

pub(crate) fn sharded_sku_from_item(item: &Item) -> Result<(SkuId, u32), StoreError> {
    let f = Fields::new(item, "sharded sku");
    let shards =
        u32::try_from(f.i64(STOCK_SHARDS)?).map_err(|_| f.err("stock_shards out of range"))?;
    Ok((f.parse(SKU_ID, SkuId::parse)?, shards))
}

pub(crate) fn product_from_item(item: &Item) -> Result<Product, StoreError> {
    let f = Fields::new(item, "product");
    Ok(Product {
        sku_id: f.parse(SKU_ID, SkuId::parse)?,
        name: f.s(NAME)?.to_owned(),
        price: f.money(PRICE)?,
        stock: f.opt_i64(STOCK)?,
        reserved: f.opt_i64(RESERVED)?.unwrap_or(0),
        sold: f.opt_i64(SOLD)?.unwrap_or(0),
        active: f.bool(ACTIVE)?,
        stock_shards: u32::try_from(f.opt_i64(STOCK_SHARDS)?.unwrap_or(1))
            .map_err(|_| f.err("stock_shards out of range"))?,
    })
}

/// The stored `available` counter, for tests that check it tracks stock - reserved - sold.
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn product_available_attr(item: &Item) -> Result<Option<i64>, StoreError> {
    Fields::new(item, "product").opt_i64(AVAILABLE)
}

// ---- idempotency ---------------------------------------------------------------------------

pub(crate) fn idempotency_item(r: &IdempotencyRecord) -> Item {
    let mut item = idempotency_key(&r.scope);
    item.extend([
        (ENTITY.to_owned(), s("IDEMPOTENCY")),
        (OPENID.to_owned(), s(r.scope.openid.as_str())),
        (IDEMPOTENCY_KEY.to_owned(), s(r.scope.key.as_str())),
        (STATUS.to_owned(), s(r.state.as_str())),
        (REQUEST_HASH.to_owned(), s(r.request_hash.clone())),
        (OWNER.to_owned(), s(r.owner.clone())),
        (OUT_TRADE_NO.to_owned(), s(r.out_trade_no.as_str())),
        (LOCKED_UNTIL.to_owned(), t(r.locked_until)),
        (CREATED_AT.to_owned(), t(r.created_at)),
        (TTL.to_owned(), n(r.expires_at.unix_timestamp())),
    ]);
    if let IdempotencyState::Completed(resp) = &r.state {
        item.insert(RESPONSE_STATUS.to_owned(), n(resp.status_code));
        item.insert(RESPONSE_BODY.to_owned(), s(resp.body.clone()));
    }
    item
}

pub(crate) fn idempotency_from_item(item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let f = Fields::new(item, "idempotency");
    let state = match f.s(STATUS)? {
        IN_PROGRESS => IdempotencyState::InProgress,
        COMPLETED => {
            let code = f.i64(RESPONSE_STATUS)?;
            IdempotencyState::Completed(StoredResponse {
                status_code: u16::try_from(code)
                    .map_err(|_| f.err(format!("response_status out of range: {code}")))?,
                body: f.s(RESPONSE_BODY)?.to_owned(),
            })
        }
        other => return Err(f.err(format!("unknown status {other:?}"))),
    };
    let ttl = f.i64(TTL)?;
    Ok(IdempotencyRecord {
        scope: IdempotencyScope {
            openid: f.parse(OPENID, Openid::parse)?,
            key: f.parse(IDEMPOTENCY_KEY, crate::domain::IdempotencyKey::parse)?,
        },
        state,
        request_hash: f.s(REQUEST_HASH)?.to_owned(),
        owner: f.s(OWNER)?.to_owned(),
        out_trade_no: f.parse(OUT_TRADE_NO, OutTradeNo::parse)?,
        locked_until: f.time(LOCKED_UNTIL)?,
        created_at: f.time(CREATED_AT)?,
        expires_at: OffsetDateTime::from_unix_timestamp(ttl)
            .map_err(|_| f.err(format!("ttl out of range: {ttl}")))?,
    })
}

// ---- payments ------------------------------------------------------------------------------

pub(crate) fn payment_item(p: &Payment) -> Item {
    let mut item = payment_key(&p.transaction_id);
    item.extend([
        (ENTITY.to_owned(), s("PAYMENT")),
        (TRANSACTION_ID.to_owned(), s(p.transaction_id.clone())),
        (OUT_TRADE_NO.to_owned(), s(p.out_trade_no.as_str())),
        (AMOUNT.to_owned(), money(p.amount)),
        (PAYER_TOTAL.to_owned(), money(p.payer_total)),
        (CURRENCY.to_owned(), s(p.currency.clone())),
        (SUCCESS_TIME.to_owned(), t(p.success_time)),
    ]);
    put_opt(&mut item, NOTIFICATION_ID, p.notification_id.clone().map(s));
    put_opt(&mut item, PAYER, p.payer.as_ref().map(|o| s(o.as_str())));
    put_opt(&mut item, REQUEST_ID, p.request_id.clone().map(s));
    // Written with the payment, in the same transaction: the day's payments for the bill
    // reconciliation cost no extra call on any payment path.
    item.insert(
        GSI2PK.to_owned(),
        s(paid_on_gsi2pk(
            beijing_date(p.success_time),
            crate::domain::day_shard(&p.transaction_id),
        )),
    );
    item.insert(GSI2SK.to_owned(), t(p.success_time));
    item
}

#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn payment_from_item(item: &Item) -> Result<Payment, StoreError> {
    let f = Fields::new(item, "payment");
    Ok(Payment {
        transaction_id: f.s(TRANSACTION_ID)?.to_owned(),
        out_trade_no: f.parse(OUT_TRADE_NO, OutTradeNo::parse)?,
        amount: f.money(AMOUNT)?,
        payer_total: f.money(PAYER_TOTAL)?,
        // Items written before the currency was kept were all checked to be the order's.
        currency: f.opt_s(CURRENCY)?.unwrap_or("CNY").to_owned(),
        request_id: f.opt_s(REQUEST_ID)?.map(str::to_owned),
        payer: f
            .opt_s(PAYER)?
            .map(|v| Openid::parse(v).map_err(|e| f.err(format!("{PAYER}: {e}"))))
            .transpose()?,
        success_time: f.time(SUCCESS_TIME)?,
        notification_id: f.opt_s(NOTIFICATION_ID)?.map(str::to_owned),
        notification: None,
    })
}

/// Only the out_trade_no of a payment item, for a losing `mark_paid` (tolerates the rest).
pub(crate) fn payment_out_trade_no(item: &Item) -> Result<OutTradeNo, StoreError> {
    Fields::new(item, "payment").parse(OUT_TRADE_NO, OutTradeNo::parse)
}

// ---- anomalies -----------------------------------------------------------------------------

pub(crate) fn anomaly_item(a: &Anomaly) -> Item {
    let pk = match &a.out_trade_no {
        Some(no) => anomaly_pk(no),
        None => ANOMALY_PK_NO_ORDER.to_owned(),
    };
    let sk = anomaly_sk(a.kind, &a.cause);
    // Every anomaly in one partition of gsi1, by time: the merchant's list, newest first
    // (anomalies are rare; the key's tail keeps two of one instant apart).
    let gsi1sk = format!("{}#{pk}#{sk}", to_utc_string(a.at));
    let mut item = HashMap::from([
        (PK.to_owned(), s(pk)),
        (SK.to_owned(), s(sk)),
        (GSI1PK.to_owned(), s(ANOMALIES_GSI1PK)),
        (GSI1SK.to_owned(), s(gsi1sk)),
        (ENTITY.to_owned(), s("ANOMALY")),
        (KIND.to_owned(), s(a.kind.as_str())),
        (CAUSE.to_owned(), s(a.cause.clone())),
        (AT.to_owned(), t(a.at)),
        (DETAIL.to_owned(), s(a.detail.clone())),
    ]);
    put_opt(
        &mut item,
        OUT_TRADE_NO,
        a.out_trade_no.as_ref().map(|no| s(no.as_str())),
    );
    put_opt(&mut item, TRANSACTION_ID, a.transaction_id.clone().map(s));
    put_opt(&mut item, NOTIFICATION_ID, a.notification_id.clone().map(s));
    put_opt(&mut item, PLAINTEXT, a.plaintext.clone().map(s));
    item
}

/// The partition of `gsi1` that lists every anomaly.
pub(crate) const ANOMALIES_GSI1PK: &str = "ANOMALIES";

pub(crate) fn anomaly_from_item(item: &Item) -> Result<Anomaly, StoreError> {
    let f = Fields::new(item, "anomaly");
    Ok(Anomaly {
        out_trade_no: f
            .opt_s(OUT_TRADE_NO)?
            .map(|v| OutTradeNo::parse(v).map_err(|e| f.err(format!("{OUT_TRADE_NO}: {e}"))))
            .transpose()?,
        kind: f.parse(KIND, |k| {
            AnomalyKind::parse(k).ok_or_else(|| format!("unknown kind {k:?}"))
        })?,
        cause: f.s(CAUSE)?.to_owned(),
        at: f.time(AT)?,
        transaction_id: f.opt_s(TRANSACTION_ID)?.map(str::to_owned),
        notification_id: f.opt_s(NOTIFICATION_ID)?.map(str::to_owned),
        detail: f.opt_s(DETAIL)?.unwrap_or_default().to_owned(),
        plaintext: f.opt_s(PLAINTEXT)?.map(str::to_owned),
    })
}

// ---- notification records ------------------------------------------------------------------

pub(crate) fn notification_item(r: &NotificationRecord) -> Item {
    let mut item = notification_key(&r.id);
    let expires = (r.received_at + NOTIFICATION_RETENTION).unix_timestamp();
    item.extend([
        (ENTITY.to_owned(), s("NOTIFICATION")),
        (ID.to_owned(), s(r.id.clone())),
        (EVENT_TYPE.to_owned(), s(r.event_type.clone())),
        (RECEIVED_AT.to_owned(), t(r.received_at)),
        (BODY.to_owned(), s(r.body.clone())),
        (
            HEADERS.to_owned(),
            AttributeValue::M(
                r.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v.clone())))
                    .collect(),
            ),
        ),
        (OUTCOME.to_owned(), s(r.outcome.clone())),
        (TTL.to_owned(), n(expires)),
    ]);
    put_opt(
        &mut item,
        OUT_TRADE_NO,
        r.out_trade_no.as_ref().map(|no| s(no.as_str())),
    );
    item
}

#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub(crate) fn notification_from_item(item: &Item) -> Result<NotificationRecord, StoreError> {
    let f = Fields::new(item, "notification");
    let mut headers: Vec<(String, String)> = match f.get(HEADERS) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .map(|(k, v)| match v {
                AttributeValue::S(v) => Ok((k.clone(), v.clone())),
                _ => Err(f.err(format!("{HEADERS}.{k} is not a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(f.err(format!("{HEADERS} is not a map"))),
        None => Vec::new(),
    };
    headers.sort();
    Ok(NotificationRecord {
        id: f.s(ID)?.to_owned(),
        event_type: f.s(EVENT_TYPE)?.to_owned(),
        received_at: f.time(RECEIVED_AT)?,
        body: f.s(BODY)?.to_owned(),
        headers,
        out_trade_no: f
            .opt_s(OUT_TRADE_NO)?
            .map(|v| OutTradeNo::parse(v).map_err(|e| f.err(format!("{OUT_TRADE_NO}: {e}"))))
            .transpose()?,
        outcome: f.s(OUTCOME)?.to_owned(),
    })
}

// ---- refunds -------------------------------------------------------------------------------

fn restock_value(lines: &[RestockLine]) -> AttributeValue {
    AttributeValue::L(
        lines
            .iter()
            .map(|l| {
                AttributeValue::M(HashMap::from([
                    (SKU_ID.to_owned(), s(l.sku_id.as_str())),
                    ("quantity".to_owned(), n(l.quantity.get())),
                ]))
            })
            .collect(),
    )
}

fn restock_from(f: &Fields<'_>, name: &str) -> Result<Vec<RestockLine>, StoreError> {
    if f.get(name).is_none() {
        return Ok(Vec::new());
    }
    f.maps(name)?
        .into_iter()
        .map(|l| {
            Ok(RestockLine {
                sku_id: l.parse(SKU_ID, SkuId::parse)?,
                quantity: Quantity::new(l.i64("quantity")?)
                    .map_err(|e| l.err(format!("quantity: {e}")))?,
            })
        })
        .collect()
}

pub(crate) fn refund_item(r: &Refund) -> Item {
    let mut item = refund_key(&r.out_refund_no);
    item.extend([
        (ENTITY.to_owned(), s("REFUND")),
        (OUT_REFUND_NO.to_owned(), s(r.out_refund_no.as_str())),
        (OUT_TRADE_NO.to_owned(), s(r.out_trade_no.as_str())),
        (AMOUNT.to_owned(), money(r.amount)),
        (STATUS.to_owned(), s(r.status.as_str())),
        (CREATED_AT.to_owned(), t(r.created_at)),
        (RESTOCK.to_owned(), restock_value(&r.restock)),
        (
            HISTORY.to_owned(),
            AttributeValue::L(r.history.iter().map(history_value).collect()),
        ),
    ]);
    put_opt(&mut item, REFUND_ID, r.refund_id.clone().map(s));
    put_opt(&mut item, REASON, r.reason.clone().map(s));
    put_opt(&mut item, SUBMITTED_AT, r.submitted_at.map(t));
    put_opt(&mut item, SUCCESS_TIME, r.success_time.map(t));
    // Sparse: only a refund WeChat Pay may still change is in the due index (one partition:
    // refunds are few and never hot).
    if let Some(at) = r.next_check_at {
        item.insert(NEXT_CHECK_AT.to_owned(), t(at));
        item.insert(GSI2PK.to_owned(), s(REFUNDS_DUE_GSI2PK));
        item.insert(GSI2SK.to_owned(), t(at));
    } else if let (RefundStatus::Success, Some(at)) = (r.status, r.success_time) {
        // Final and paid out: in its bill day's partition, from the settling transaction.
        item.insert(
            GSI2PK.to_owned(),
            s(refunded_on_gsi2pk(
                refund_bill_date(r),
                crate::domain::day_shard(r.out_refund_no.as_str()),
            )),
        );
        item.insert(GSI2SK.to_owned(), t(at));
    }
    item
}

pub(crate) fn refund_from_item(item: &Item) -> Result<Refund, StoreError> {
    let f = Fields::new(item, "refund");
    let restock = restock_from(&f, RESTOCK)?;
    Ok(Refund {
        out_refund_no: f.parse(OUT_REFUND_NO, OutRefundNo::parse)?,
        out_trade_no: f.parse(OUT_TRADE_NO, OutTradeNo::parse)?,
        refund_id: f.opt_s(REFUND_ID)?.map(str::to_owned),
        amount: f.money(AMOUNT)?,
        reason: f.opt_s(REASON)?.map(str::to_owned),
        restock,
        status: f.parse(STATUS, |v| {
            RefundStatus::parse(v).ok_or_else(|| format!("unknown refund status {v:?}"))
        })?,
        created_at: f.time(CREATED_AT)?,
        submitted_at: f.opt_time(SUBMITTED_AT)?,
        success_time: f.opt_time(SUCCESS_TIME)?,
        next_check_at: f.opt_time(NEXT_CHECK_AT)?,
        history: history_from::<RefundStatus>(&f)?,
    })
}

/// A new event, as its transition writes it: due at once, in its outbox shard.
pub(crate) fn new_event_item(e: &OrderEvent, shards: u32) -> Item {
    event_item(
        &OutboxEvent {
            id: e.id.clone(),
            event_type: e.event_type.as_str().to_owned(),
            out_trade_no: e.out_trade_no.as_ref().map(|o| o.to_string()),
            body: crate::outbox::body(e).unwrap_or_default(),
            created_at: e.created_at,
            status: DeliveryStatus::Pending,
            attempts: 0,
            fence: 0,
            first_attempt_at: None,
            next_attempt_at: Some(e.created_at),
            lease_until: None,
            retry_since: e.created_at,
            delivered_at: None,
            last_status: None,
            last_error: None,
            stock: e.stock.clone(),
            projected_at: None,
            order_to_read: match &e.data {
                EventData::OrderToRead(to_read) => Some(to_read.clone()),
                _ => None,
            },
        },
        shards,
    )
}

/// The outbox item of an event. Only a PENDING one carries the outbox index keys; a
/// delivered one expires after [`crate::domain::DELIVERED_EVENT_RETENTION`].
pub(crate) fn event_item(e: &OutboxEvent, shards: u32) -> Item {
    let mut item = event_key(&e.id);
    item.extend([
        (ENTITY.to_owned(), s("EVENT")),
        (ID.to_owned(), s(e.id.clone())),
        (EVENT_TYPE.to_owned(), s(e.event_type.clone())),
        (CREATED_AT.to_owned(), t(e.created_at)),
        (STATUS.to_owned(), s(e.status.as_str())),
        (ATTEMPTS.to_owned(), n(e.attempts)),
        (FENCE.to_owned(), n(e.fence)),
        (RETRY_SINCE.to_owned(), t(e.retry_since)),
    ]);
    // An `order.paid` whose order is still to be read has no body yet, only that mark.
    match &e.order_to_read {
        None => {
            item.insert(BODY.to_owned(), s(e.body.clone()));
        }
        Some(to_read) => {
            item.insert(ORDER_TO_READ.to_owned(), AttributeValue::Bool(true));
            put_opt(&mut item, PAYER, to_read.payer.clone().map(s));
        }
    }
    put_opt(&mut item, FIRST_ATTEMPT_AT, e.first_attempt_at.map(t));
    put_opt(&mut item, PROJECTED_AT, e.projected_at.map(t));
    if !e.stock.is_empty() {
        item.insert(
            STOCK.to_owned(),
            AttributeValue::L(
                e.stock
                    .iter()
                    .map(|m| {
                        let mut v = HashMap::from([
                            (SKU_ID.to_owned(), s(m.sku_id.as_str())),
                            ("quantity".to_owned(), n(m.quantity)),
                            (CHANGE.to_owned(), s(stock_change_name(m.change))),
                        ]);
                        put_opt(&mut v, SHARD, m.shard.map(n));
                        AttributeValue::M(v)
                    })
                    .collect(),
            ),
        );
    }
    put_opt(&mut item, OUT_TRADE_NO, e.out_trade_no.clone().map(s));
    put_opt(&mut item, NEXT_ATTEMPT_AT, e.next_attempt_at.map(t));
    put_opt(&mut item, LEASE_UNTIL, e.lease_until.map(t));
    put_opt(&mut item, DELIVERED_AT, e.delivered_at.map(t));
    put_opt(&mut item, LAST_STATUS, e.last_status.map(n));
    put_opt(&mut item, LAST_ERROR, e.last_error.clone().map(s));
    if let (DeliveryStatus::Pending, Some(at)) = (e.status, e.next_attempt_at) {
        item.insert(
            GSI2PK.to_owned(),
            s(outbox_gsi2pk(OrderEvent::shard(&e.id, shards))),
        );
        item.insert(GSI2SK.to_owned(), t(at));
    }
    if let (DeliveryStatus::Delivered, Some(at)) = (e.status, e.delivered_at) {
        item.insert(
            TTL.to_owned(),
            n((at + crate::domain::DELIVERED_EVENT_RETENTION).unix_timestamp()),
        );
    }
    item
}

/// An outbox item as stored. Attributes this version does not know are ignored (the body is
/// sent as written), so an event of a newer version is still delivered.
pub(crate) fn event_from_item(item: &Item) -> Result<OutboxEvent, StoreError> {
    let f = Fields::new(item, "event");
    let created_at = f.time(CREATED_AT)?;
    let order_to_read = match f.get(ORDER_TO_READ) {
        Some(_) if f.bool(ORDER_TO_READ)? => Some(OrderToRead {
            payer: f.opt_s(PAYER)?.map(str::to_owned),
        }),
        _ => None,
    };
    Ok(OutboxEvent {
        id: f.s(ID)?.to_owned(),
        event_type: f.s(EVENT_TYPE)?.to_owned(),
        out_trade_no: f.opt_s(OUT_TRADE_NO)?.map(str::to_owned),
        body: match order_to_read {
            Some(_) => f.opt_s(BODY)?.unwrap_or_default().to_owned(),
            None => f.s(BODY)?.to_owned(),
        },
        created_at,
        status: f.parse(STATUS, |v| {
            DeliveryStatus::parse(v).ok_or_else(|| format!("unknown delivery status {v:?}"))
        })?,
        attempts: u32::try_from(f.opt_i64(ATTEMPTS)?.unwrap_or(0))
            .map_err(|_| f.err("attempts out of range"))?,
        fence: u64::try_from(f.opt_i64(FENCE)?.unwrap_or(0))
            .map_err(|_| f.err("fence out of range"))?,
        first_attempt_at: f.opt_time(FIRST_ATTEMPT_AT)?,
        next_attempt_at: f.opt_time(NEXT_ATTEMPT_AT)?,
        lease_until: f.opt_time(LEASE_UNTIL)?,
        retry_since: f.opt_time(RETRY_SINCE)?.unwrap_or(created_at),
        delivered_at: f.opt_time(DELIVERED_AT)?,
        last_status: f
            .opt_i64(LAST_STATUS)?
            .map(|v| u16::try_from(v).map_err(|_| f.err("last_status out of range")))
            .transpose()?,
        last_error: f.opt_s(LAST_ERROR)?.map(str::to_owned),
        stock: match f.get(STOCK) {
            None => Vec::new(),
            Some(_) => f
                .maps(STOCK)?
                .into_iter()
                .map(|m| {
                    Ok(StockMove {
                        sku_id: m.parse(SKU_ID, SkuId::parse)?,
                        quantity: u32::try_from(m.i64("quantity")?)
                            .map_err(|_| m.err("quantity out of range"))?,
                        change: m.parse(CHANGE, |v| {
                            stock_change_of(v).ok_or_else(|| format!("unknown stock change {v:?}"))
                        })?,
                        shard: opt_shard(&m)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        },
        projected_at: f.opt_time(PROJECTED_AT)?,
        order_to_read,
    })
}

// ---- bill reports --------------------------------------------------------------------------

pub(crate) fn bill_report_item(r: &BillReport) -> Item {
    let mut item = bill_key(r.bill_date);
    let mismatches = r
        .mismatches
        .iter()
        .map(|m| {
            let mut v = HashMap::from([
                (KIND.to_owned(), s(m.kind.as_str())),
                (DETAIL.to_owned(), s(m.detail.clone())),
            ]);
            put_opt(&mut v, OUT_TRADE_NO, m.out_trade_no.clone().map(s));
            put_opt(&mut v, TRANSACTION_ID, m.transaction_id.clone().map(s));
            put_opt(&mut v, OUT_REFUND_NO, m.out_refund_no.clone().map(s));
            AttributeValue::M(v)
        })
        .collect();
    item.extend([
        (ENTITY.to_owned(), s("BILL")),
        (BILL_DATE.to_owned(), s(date_string(r.bill_date))),
        (ROWS.to_owned(), n(r.rows)),
        (MATCHED.to_owned(), n(r.matched)),
        (RECOVERED.to_owned(), n(r.recovered)),
        (MISMATCH_COUNT.to_owned(), n(r.mismatch_count)),
        (MISMATCHES.to_owned(), AttributeValue::L(mismatches)),
        (
            SUMS.to_owned(),
            AttributeValue::M(HashMap::from([
                ("paid".to_owned(), n(r.sums.paid)),
                ("refunded".to_owned(), n(r.sums.refunded)),
                ("fees".to_owned(), n(r.sums.fees)),
                ("fees_millifen".to_owned(), n(r.sums.fees_millifen)),
            ])),
        ),
        (STATEMENT.to_owned(), AttributeValue::Bool(r.statement)),
        (COMPLETE.to_owned(), AttributeValue::Bool(r.complete)),
        (CREATED_AT.to_owned(), t(r.created_at)),
    ]);
    item
}

pub(crate) fn bill_report_from_item(item: &Item) -> Result<BillReport, StoreError> {
    let f = Fields::new(item, "bill report");
    let count =
        |name: &str| u64::try_from(f.i64(name)?).map_err(|_| f.err(format!("{name} is negative")));
    let sums = match f.get(SUMS) {
        Some(AttributeValue::M(m)) => {
            let g = f.nested(m, SUMS);
            BillSums {
                paid: g.i64("paid")?,
                refunded: g.i64("refunded")?,
                fees: g.i64("fees")?,
                fees_millifen: g.i64("fees_millifen")?,
            }
        }
        _ => return Err(f.err(format!("{SUMS} is not a map"))),
    };
    let mismatches = f
        .maps(MISMATCHES)?
        .into_iter()
        .map(|m| {
            Ok(BillMismatch {
                kind: m.parse(KIND, |k| {
                    BillMismatchKind::parse(k).ok_or_else(|| format!("unknown kind {k:?}"))
                })?,
                out_trade_no: m.opt_s(OUT_TRADE_NO)?.map(str::to_owned),
                transaction_id: m.opt_s(TRANSACTION_ID)?.map(str::to_owned),
                out_refund_no: m.opt_s(OUT_REFUND_NO)?.map(str::to_owned),
                detail: m.opt_s(DETAIL)?.unwrap_or_default().to_owned(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(BillReport {
        bill_date: f.parse(BILL_DATE, parse_date)?,
        rows: count(ROWS)?,
        matched: count(MATCHED)?,
        recovered: count(RECOVERED)?,
        mismatch_count: count(MISMATCH_COUNT)?,
        mismatches,
        sums,
        statement: f.bool(STATEMENT)?,
        // Reports stored before runs could stop at their deadline were all whole.
        complete: match f.get(COMPLETE) {
            None => true,
            Some(_) => f.bool(COMPLETE)?,
        },
        created_at: f.time(CREATED_AT)?,
    })
}

fn stock_change_name(c: StockChange) -> &'static str {
    match c {
        StockChange::Sell => "SELL",
        StockChange::Release => "RELEASE",
        StockChange::Restock => "RESTOCK",
    }
}

fn stock_change_of(name: &str) -> Option<StockChange> {
    [
        StockChange::Sell,
        StockChange::Release,
        StockChange::Restock,
    ]
    .into_iter()
    .find(|c| stock_change_name(*c) == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdempotencyKey;
    use crate::idempotency::NewIdempotencyClaim;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-24 04:00:00.123 UTC);

    fn order() -> Order {
        let mut o = Order::new_pending(
            OutTradeNo::parse("01JDQ8ZP5V9X8Y7W6T5S4R3Q2P").unwrap(),
            Openid::parse("o_alice").unwrap(),
            vec![OrderLine {
                sku_id: SkuId::parse("sku-1").unwrap(),
                name: "Tea".into(),
                unit_price: Money::from_fen(990).unwrap(),
                quantity: Quantity::new(2).unwrap(),
                stock_shard: None,
            }],
            String::new(),
            Some("attach".into()),
            T0,
            T0 + time::Duration::minutes(30),
        )
        .unwrap();
        o.prepay_id = Some("wx123".into());
        o
    }

    #[test]
    fn order_round_trips_and_pending_carries_gsi2() {
        let o = order();
        let item = order_item(&o, 4);
        assert_eq!(order_from_item(&item).unwrap(), o);
        assert_eq!(
            item[GSI2PK].as_s().unwrap(),
            &format!("PENDING#{}", o.out_trade_no.shard(4))
        );
        assert_eq!(item[GSI2SK].as_s().unwrap(), "2026-11-24T04:30:00.123Z");
        assert_eq!(
            item[GSI1SK].as_s().unwrap(),
            "2026-11-24T04:00:00.123Z#01JDQ8ZP5V9X8Y7W6T5S4R3Q2P"
        );
        assert_eq!(item[AMOUNT_TOTAL].as_n().unwrap(), "1980");

        let mut paid = o.clone();
        paid.status = OrderStatus::Paid;
        paid.paid_at = Some(T0);
        paid.transaction_id = Some("4200".into());
        let item = order_item(&paid, 4);
        assert!(!item.contains_key(GSI2PK) && !item.contains_key(GSI2SK));
        assert_eq!(order_from_item(&item).unwrap(), paid);
    }

    #[test]
    fn malformed_items_are_errors_not_panics() {
        let good = order_item(&order(), 4);
        let breakages: Vec<(&str, Option<AttributeValue>)> = vec![
            (STATUS, Some(s("DELIVERED"))),
            (STATUS, None),
            (AMOUNT_TOTAL, Some(s("12"))),
            (AMOUNT_TOTAL, Some(n("-1"))),
            (VERSION, Some(n("1.5"))),
            (LINES, Some(AttributeValue::L(vec![s("x")]))),
            (
                LINES,
                Some(AttributeValue::L(vec![AttributeValue::M(HashMap::new())])),
            ),
            (CREATED_AT, Some(s("yesterday"))),
            (OUT_TRADE_NO, Some(s("no spaces allowed"))),
            (HISTORY, Some(AttributeValue::Bool(true))),
        ];
        for (name, v) in breakages {
            let mut item = good.clone();
            match v.clone() {
                Some(v) => item.insert(name.to_owned(), v),
                None => item.remove(name),
            };
            let err = order_from_item(&item).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Malformed {
                        entity: "order",
                        ..
                    }
                ),
                "{name} {v:?}: {err}"
            );
        }
        assert!(product_from_item(&HashMap::new()).is_err());
        assert!(idempotency_from_item(&good).is_err());
    }

    #[test]
    fn product_and_available_counter() {
        let p = Product {
            sku_id: SkuId::parse("sku-1").unwrap(),
            name: "Tea".into(),
            price: Money::from_fen(990).unwrap(),
            stock: Some(10),
            reserved: 3,
            sold: 2,
            active: true,
            stock_shards: 1,
        };
        let item = product_item(&p);
        assert_eq!(product_from_item(&item).unwrap(), p);
        assert_eq!(product_available_attr(&item).unwrap(), Some(5));
        let unlimited = Product {
            stock: None,
            ..p.clone()
        };
        assert_eq!(
            product_from_item(&product_item(&unlimited)).unwrap(),
            unlimited
        );
        let sharded = Product {
            stock_shards: 16,
            ..p
        };
        assert_eq!(product_from_item(&product_item(&sharded)).unwrap(), sharded);
        assert_eq!(
            product_available_attr(&product_item(&sharded)).unwrap(),
            Some(0),
            "a sharded sku's units are in its shards"
        );
        let shard = stock_shard_from_item(&stock_shard_item(&sharded.sku_id, 7, 12)).unwrap();
        assert_eq!((shard.shard, shard.available, shard.taken), (7, 12, 0));
        assert_eq!(
            sharded_sku_from_item(&sharded_sku_item(&sharded.sku_id, 16)).unwrap(),
            (sharded.sku_id.clone(), 16)
        );
    }

    #[test]
    fn idempotency_round_trips_in_both_states() {
        let claim = NewIdempotencyClaim::new(
            IdempotencyScope::new(
                Openid::parse("o_alice").unwrap(),
                IdempotencyKey::parse("k-1").unwrap(),
            ),
            "h",
            "owner",
            datetime!(2026-11-24 04:00:00 UTC),
            T0,
        );
        let mut r = claim.record(&order().out_trade_no);
        let item = idempotency_item(&r);
        assert_eq!(item[PK].as_s().unwrap(), "IDEM#o_alice#k-1");
        assert_eq!(item[TTL].as_n().unwrap(), "1795579200");
        assert_eq!(idempotency_from_item(&item).unwrap(), r);
        r.state = IdempotencyState::Completed(StoredResponse {
            status_code: 201,
            body: "{}".into(),
        });
        assert_eq!(idempotency_from_item(&idempotency_item(&r)).unwrap(), r);
        let mut no_body = idempotency_item(&r);
        no_body.remove(RESPONSE_BODY);
        assert!(idempotency_from_item(&no_body).is_err());
    }

    #[test]
    fn payment_and_anomaly_round_trip() {
        let p = Payment {
            transaction_id: "4200001".into(),
            out_trade_no: order().out_trade_no,
            amount: Money::from_fen(1980).unwrap(),
            payer_total: Money::from_fen(1900).unwrap(),
            currency: "CNY".into(),
            request_id: Some("08F4A0C6B5B00000".into()),
            payer: Some(Openid::parse("o_alice").unwrap()),
            success_time: T0,
            notification_id: None,
            notification: None,
        };
        assert_eq!(payment_from_item(&payment_item(&p)).unwrap(), p);
        let a = Anomaly::of_payment(
            &Payment {
                notification_id: Some("n-1".into()),
                ..p
            },
            AnomalyKind::PaidAfterClose,
            "late",
        );
        let item = anomaly_item(&a);
        assert_eq!(item[SK].as_s().unwrap(), "PAID_AFTER_CLOSE#4200001");
        assert_eq!(anomaly_from_item(&item).unwrap(), a);
        // A notification that named no readable order: kept under the no-order partition.
        let malformed = Anomaly {
            out_trade_no: None,
            kind: AnomalyKind::MalformedNotification,
            cause: "n-2".into(),
            at: T0,
            transaction_id: None,
            notification_id: Some("n-2".into()),
            detail: "not JSON".into(),
            plaintext: Some("\u{1}garbage".into()),
        };
        let item = anomaly_item(&malformed);
        assert_eq!(item[PK].as_s().unwrap(), "ANOMALY#-");
        assert_eq!(item[SK].as_s().unwrap(), "MALFORMED_NOTIFICATION#n-2");
        assert_eq!(anomaly_from_item(&item).unwrap(), malformed);
    }
}
