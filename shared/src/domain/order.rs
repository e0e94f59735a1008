//! Orders and catalog products as the use cases see them. Amounts are always recomputed
//! from catalog prices captured on the order's lines, never taken from a client.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Money, Openid, OrderStatus, OutTradeNo, SkuId};

/// Units of one sku on one order line: 1..=999 (DESIGN.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity must be between 1 and {max} (got {got})", max = Quantity::MAX)]
pub struct QuantityError {
    pub got: i64,
}

impl Quantity {
    pub const MAX: u32 = 999;

    pub fn new(n: i64) -> Result<Self, QuantityError> {
        if (1..=i64::from(Self::MAX)).contains(&n) {
            Ok(Quantity(n as u32))
        } else {
            Err(QuantityError { got: n })
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = QuantityError;
    fn try_from(n: i64) -> Result<Self, QuantityError> {
        Quantity::new(n)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

/// One line of an order, priced from the catalog when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku_id: SkuId,
    pub name: String,
    pub unit_price: Money,
    pub quantity: Quantity,
    /// The stock shard this line reserved on (a sharded sku only): closing and restocking
    /// give the units back there. Internal: never in an event body or a response.
    #[serde(skip)]
    pub stock_shard: Option<u32>,
}

impl OrderLine {
    pub fn line_total(&self) -> Result<Money, super::MoneyError> {
        self.unit_price.checked_mul(self.quantity.get())
    }
}

/// One entry of an order's (or a refund's) audit trail, appended by the same write as the
/// transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry<S = OrderStatus> {
    pub from: Option<S>,
    pub to: S,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub out_trade_no: OutTradeNo,
    pub openid: Openid,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub amount_total: Money,
    pub currency: String,
    pub description: String,
    pub attach: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expire_at: OffsetDateTime,
    pub prepay_id: Option<String>,
    pub transaction_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// The id of the notification whose payment moved the order (absent when a query or the
    /// sweeper learned of it): its re-deliveries are duplicates already kept.
    #[serde(default)]
    pub notification_id: Option<String>,
    /// When query-order or the sweeper last claimed the right to ask WeChat Pay about this
    /// PENDING order (`Store::claim_sync`); not a state change, so `version` is not bumped.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_synced_at: Option<OffsetDateTime>,
    /// What successful refunds gave back (DESIGN 4); never above `amount_total`.
    #[serde(default = "zero")]
    pub refunded_total: Money,
    /// Reserved by refunds not yet settled, so concurrent refunds never exceed what was
    /// paid: `refunded_total + refund_pending_total <= amount_total`.
    #[serde(default = "zero")]
    pub refund_pending_total: Money,
    /// The refunds asked of this order (each a refund item), in no particular order.
    #[serde(default)]
    pub refunds: Vec<super::OutRefundNo>,
    /// Units promised back to stock by refunds reserved or succeeded (never more than a
    /// line bought; a closed refund gives its promise back).
    #[serde(default)]
    pub restocked: Vec<super::RestockLine>,
    /// Bumped by every write, so a conditional write can insist on the version it read.
    pub version: u64,
    /// The version PAID gave it: `order.paid` says this one, even when the event is
    /// completed from the order after later changes (DESIGN 5's unread PAID).
    #[serde(default)]
    pub paid_version: Option<u64>,
    /// The shipment and its upload to WeChat (DESIGN 12), once the merchant recorded one.
    #[serde(default)]
    pub shipping: Option<super::Shipping>,
    pub history: Vec<HistoryEntry>,
}

impl Order {
    /// A new PENDING order; `amount_total` is computed from the lines, not passed in.
    #[allow(clippy::too_many_arguments)]
    pub fn new_pending(
        out_trade_no: OutTradeNo,
        openid: Openid,
        lines: Vec<OrderLine>,
        description: String,
        attach: Option<String>,
        created_at: OffsetDateTime,
        expire_at: OffsetDateTime,
    ) -> Result<Order, super::MoneyError> {
        let amount_total = Money::total(lines.iter().map(|l| (l.unit_price, l.quantity.get())))?;
        Ok(Order {
            out_trade_no,
            openid,
            status: OrderStatus::Pending,
            lines,
            amount_total,
            currency: "CNY".to_owned(),
            description,
            attach,
            created_at,
            expire_at,
            prepay_id: None,
            transaction_id: None,
            paid_at: None,
            notification_id: None,
            last_synced_at: None,
            refunded_total: Money::ZERO,
            refund_pending_total: Money::ZERO,
            refunds: Vec::new(),
            restocked: Vec::new(),
            version: 1,
            paid_version: None,
            shipping: None,
            history: vec![HistoryEntry {
                from: None,
                to: OrderStatus::Pending,
                at: created_at,
                cause: "order placed".to_owned(),
            }],
        })
    }

    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expire_at
    }

    /// The order as a transition to `to` leaves it: status, a history entry and the next
    /// version; refused unless DESIGN.md section 5 allows the edge. What else the transition
    /// changes (payment fields, stock) is the caller's.
    pub fn transitioned(
        &self,
        to: OrderStatus,
        at: OffsetDateTime,
        cause: impl Into<String>,
    ) -> Result<Order, super::TransitionError> {
        let from = self.status;
        let mut next = self.clone();
        next.status = from.transition(to)?;
        next.version += 1;
        next.history.push(HistoryEntry {
            from: Some(from),
            to,
            at,
            cause: cause.into(),
        });
        Ok(next)
    }
}

/// A catalog entry. `stock: None` means unlimited; `reserved` is held by PENDING orders and
/// `sold` by PAID ones, so `available = stock - reserved - sold`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku_id: SkuId,
    pub name: String,
    pub price: Money,
    #[serde(default)]
    pub stock: Option<i64>,
    #[serde(default)]
    pub reserved: i64,
    #[serde(default)]
    pub sold: i64,
    #[serde(default = "yes")]
    pub active: bool,
    /// How many stock shard items hold its stock (issue 17): 1, the default, is the single
    /// counter on this item; more splits `stock` over shard items, so orders, closes and
    /// restocks write a shard and never this item (its price and active state are read
    /// through the catalog cache; `sold` is still counted here from events).
    #[serde(default = "single")]
    pub stock_shards: u32,
}

fn zero() -> Money {
    Money::ZERO
}

fn yes() -> bool {
    true
}

fn single() -> u32 {
    1
}

impl Product {
    /// `stock - reserved - sold` of a single-counter sku. A sharded sku's units left are
    /// its shards' ([`super::available_total`]).
    pub fn available(&self) -> Option<i64> {
        self.stock.map(|s| s - self.reserved - self.sold)
    }

    /// Its stock lives in shard items (limited stock, more than one shard).
    pub fn is_sharded(&self) -> bool {
        self.stock.is_some() && self.stock_shards > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn line(sku: &str, price: i64, q: i64) -> OrderLine {
        OrderLine {
            sku_id: SkuId::parse(sku).unwrap(),
            name: sku.to_uppercase(),
            unit_price: Money::from_fen(price).unwrap(),
            quantity: Quantity::new(q).unwrap(),
            stock_shard: None,
        }
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(1).is_ok());
        assert!(Quantity::new(999).is_ok());
        assert_eq!(Quantity::new(1000), Err(QuantityError { got: 1000 }));
        assert!(serde_json::from_str::<Quantity>("-1").is_err());
        assert!(serde_json::from_str::<Quantity>("2.5").is_err());
    }

    #[test]
    fn new_order_totals_its_lines_and_starts_pending() {
        let t = datetime!(2026-11-24 04:00:00 UTC);
        let o = Order::new_pending(
            OutTradeNo::generate(t),
            Openid::parse("o_alice").unwrap(),
            vec![line("a", 990, 2), line("b", 1, 3)],
            "Demo".into(),
            None,
            t,
            t + time::Duration::minutes(30),
        )
        .unwrap();
        assert_eq!(o.amount_total.fen(), 1983);
        assert_eq!(o.status, OrderStatus::Pending);
        assert_eq!(o.history.len(), 1);
        assert!(!o.is_expired(t));
        assert!(o.is_expired(t + time::Duration::minutes(30)));

        let later = t + time::Duration::minutes(1);
        let paid = o.transitioned(OrderStatus::Paid, later, "paid").unwrap();
        assert_eq!((paid.status, paid.version), (OrderStatus::Paid, 2));
        assert_eq!(
            paid.history.last(),
            Some(&HistoryEntry {
                from: Some(OrderStatus::Pending),
                to: OrderStatus::Paid,
                at: later,
                cause: "paid".into()
            })
        );
        assert!(paid.transitioned(OrderStatus::Closed, later, "x").is_err());
    }

    #[test]
    fn product_availability() {
        let p: Product = serde_json::from_str(
            r#"{"sku_id":"s","name":"S","price":100,"stock":10,"reserved":3,"sold":2}"#,
        )
        .unwrap();
        assert_eq!(p.available(), Some(5));
        assert!(p.active);
        let unlimited: Product =
            serde_json::from_str(r#"{"sku_id":"u","name":"U","price":1}"#).unwrap();
        assert_eq!(unlimited.available(), None);
    }
}
