//! The order's lifecycle as pure functions: given the order as read and what happened, each
//! returns the [`Plan`] of one transition (the order as it becomes, its stock moves and the
//! records written with it) or refuses. The store applies a plan as one conditional
//! transaction and, when it lost a race, asks for a new plan on the order it lost to.

use time::OffsetDateTime;

use super::{
    Anomaly, EventType, HistoryEntry, Money, MoneyError, NotificationRecord, Order, OrderEvent,
    OrderStatus, OutTradeNo, Payment, Refund, RefundStatus, RefundTransitionError, SkuId,
    TransitionError,
};

/// Why the domain refuses a transition of the order as read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error(transparent)]
    RefundTransition(#[from] RefundTransitionError),
    /// A refund of `amount` would take the order's refunds past what was paid.
    #[error("refund of {amount} exceeds what is left to refund ({refundable})")]
    RefundExceedsPaid { amount: Money, refundable: Money },
    #[error("order {0} cannot be refunded in its state")]
    NotRefundable(OrderStatus),
    /// This refund is reserved on the order already (a retry of its request).
    #[error("refund {0} is reserved already")]
    RefundAlreadyReserved(String),
    /// A restock of more units of a sku than its line bought, counting earlier refunds.
    #[error("restock of {asked} x {sku_id}: only {left} of the order's units are left to restock")]
    RestockExceedsBought {
        sku_id: SkuId,
        asked: u32,
        left: u32,
    },
    #[error("refund {out_refund_no} is for another order")]
    RefundOfAnotherOrder { out_refund_no: String },
    #[error("payment for {0} is for another order")]
    PaymentOfAnotherOrder(String),
    /// `order.paid` asked of an order PAID never moved (or moved before this was recorded).
    #[error("order {0} was never paid")]
    NeverPaid(String),
    /// A shipment is recorded on the order already (under this Idempotency-Key).
    #[error("the order is shipped already")]
    AlreadyShipped(String),
    /// Only a paid order with something left unrefunded can ship.
    #[error("an order {0} cannot be shipped")]
    NotShippable(OrderStatus),
    /// An upload result or settlement for an order with no shipment (or none to upload).
    #[error("order {0} has no shipment waiting for this")]
    NotShipped(String),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// What a transition does to one sku's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// reserved -> sold (PAID).
    Sell,
    /// reserved -> available (CLOSED).
    Release,
    /// sold -> available (a refund that restocks).
    Restock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockMove {
    pub sku_id: SkuId,
    pub quantity: u32,
    pub change: StockChange,
    /// The stock shard the order's line recorded (a sharded sku): a release or restock
    /// goes back there; a sale counts `sold` on the product item only.
    pub shard: Option<u32>,
}

/// An item written in the same transaction as the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Written only if no payment of that transaction_id exists (one per transaction).
    Payment(Box<Payment>),
    /// Written only if the same anomaly (kind and cause) is not there yet.
    Anomaly(Box<Anomaly>),
    /// Overwrites an earlier delivery of the same notification.
    Notification(Box<NotificationRecord>),
    /// The refund as it becomes: created (`from: None`, only if absent) or moved from the
    /// status it was read in (only if still in it).
    Refund {
        refund: Box<Refund>,
        from: Option<RefundStatus>,
    },
    /// Written only if absent: the same id is the same event.
    Event(Box<OrderEvent>),
}

/// The order side of a transition, and what must still hold when it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    pub from: Box<Order>,
    pub to: Box<Order>,
    pub guard: Guard,
    /// `amount_total` must be this (a payment's transition).
    pub expect_amount_total: Option<Money>,
}

/// What a change of the order insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The order is still exactly as read (`from.version`, `from.status`): every status
    /// transition and settlement.
    Version,
    /// A refund reservation of `amount` (by the plan's refund): the order is in a refundable
    /// state and its refunds (refunded + reserved) leave room for `amount`. Reservations commute, so concurrent
    /// ones do not make each other retry; each still bumps the version, so a transition
    /// planned on an older read retries and sees it.
    RefundHeadroom { amount: Money },
}

/// One transition, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every transition planned here writes its order (a refund's reservation and outcome
    /// included); `None` is left for record-only changes.
    pub order: Option<OrderChange>,
    pub stock: Vec<StockMove>,
    pub records: Vec<Record>,
}

impl Plan {
    /// The order as the plan leaves it.
    pub fn order(&self) -> Option<&Order> {
        self.order.as_ref().map(|c| c.to.as_ref())
    }

    /// The refund as the plan leaves it, if it moves one.
    pub fn refund(&self) -> Option<&Refund> {
        self.records.iter().find_map(|r| match r {
            Record::Refund { refund, .. } => Some(refund.as_ref()),
            _ => None,
        })
    }

    /// The plan with one more record written in its transaction (the notification that
    /// brought it, say).
    pub fn with(mut self, record: Record) -> Plan {
        self.records.push(record);
        self
    }

    /// The plan without the stock moves of `skus` (products deleted since the order was
    /// placed), the history saying so: a deleted product never blocks a transition.
    pub fn without_stock_of(mut self, skus: &[SkuId]) -> Plan {
        if skus.is_empty() {
            return self;
        }
        self.stock.retain(|m| !skus.contains(&m.sku_id));
        let mut names: Vec<&str> = skus.iter().map(SkuId::as_str).collect();
        names.sort_unstable();
        if let Some(entry) = self.order.as_mut().and_then(|c| c.to.history.last_mut()) {
            entry.cause = format!(
                "{} (stock not moved for deleted product {})",
                entry.cause,
                names.join(", ")
            );
        }
        self
    }
}

/// PENDING -> PAID planned from the payment alone: a notification's path (DESIGN 5: one
/// DynamoDB call for a first notification, one for a duplicate). The store writes it as one
/// transaction on the condition that the order is still `from` with the payment's amount and
/// currency; a refusal returns the order as it is, and the plans that read it decide from
/// there. Its `order.paid` needs the order for its body and counters: the dispatcher
/// completes it ([`Order::paid_event`]) before its first delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidUnread {
    pub out_trade_no: OutTradeNo,
    /// The status the order must still be in, with this amount and currency.
    pub from: OrderStatus,
    pub amount_total: Money,
    pub currency: String,
    pub to: OrderStatus,
    pub transaction_id: String,
    pub paid_at: OffsetDateTime,
    pub notification_id: Option<String>,
    /// Appended to the order's history; `version` is incremented and kept as `paid_version`.
    pub entry: HistoryEntry,
    /// The payment item, `order.paid` to complete, the notification: as [`Plan::records`].
    pub records: Vec<Record>,
}

impl PaidUnread {
    pub fn plan(payment: &Payment, at: OffsetDateTime) -> Result<PaidUnread, LifecycleError> {
        let from = OrderStatus::Pending;
        let to = from.transition(OrderStatus::Paid)?;
        let mut records = vec![
            Record::Payment(Box::new(payment.clone())),
            Record::Event(Box::new(OrderEvent::of_unread_payment(payment, at))),
        ];
        records.extend(payment.notification.clone().map(Record::Notification));
        Ok(PaidUnread {
            out_trade_no: payment.out_trade_no.clone(),
            from,
            amount_total: payment.amount,
            currency: payment.currency.clone(),
            to,
            transaction_id: payment.transaction_id.clone(),
            paid_at: payment.success_time,
            notification_id: payment.notification_id.clone(),
            entry: HistoryEntry {
                from: Some(from),
                to,
                at,
                cause: from.edge_cause(to).unwrap_or("transition").to_owned(),
            },
            records,
        })
    }
}

impl Order {
    /// The order moved to `to` with the edge's own cause (or `cause`, when given).
    fn moved(
        &self,
        to: OrderStatus,
        cause: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Order, TransitionError> {
        let cause = match cause {
            Some(c) => c,
            None => self.status.edge_cause(to).unwrap_or("transition"),
        };
        self.transitioned(to, at, cause)
    }

    /// The order moved to `next` (on the version read) with `records`, no stock moved.
    pub(super) fn with_records(&self, next: Order, records: Vec<Record>) -> Plan {
        Plan {
            order: Some(self.change(next)),
            stock: Vec::new(),
            records,
        }
    }

    fn change(&self, to: Order) -> OrderChange {
        OrderChange {
            from: Box::new(self.clone()),
            to: Box::new(to),
            guard: Guard::Version,
            expect_amount_total: None,
        }
    }

    fn lines_moved(&self, change: StockChange) -> Vec<StockMove> {
        self.lines
            .iter()
            .map(|l| StockMove {
                sku_id: l.sku_id.clone(),
                quantity: l.quantity.get(),
                change,
                shard: l.stock_shard,
            })
            .collect()
    }

    fn paid_by(
        &self,
        to: OrderStatus,
        payment: &Payment,
        at: OffsetDateTime,
    ) -> Result<Order, LifecycleError> {
        if payment.out_trade_no != self.out_trade_no {
            return Err(LifecycleError::PaymentOfAnotherOrder(
                payment.out_trade_no.to_string(),
            ));
        }
        let mut next = self.moved(to, None, at)?;
        next.transaction_id = Some(payment.transaction_id.clone());
        next.paid_at = Some(payment.success_time);
        next.notification_id = payment.notification_id.clone();
        if to == OrderStatus::Paid {
            next.paid_version = Some(next.version);
        }
        Ok(next)
    }

    /// `order.paid` of this order, one per order: the order as PAID left it (whatever came
    /// after: refunds, shipping), its reserved stock counted sold when the event is
    /// projected. How a PAID written without reading the order ([`PaidUnread`]) gets its
    /// event completed, and how one planned on a read builds it.
    pub fn paid_event(&self, created_at: OffsetDateTime) -> Result<OrderEvent, LifecycleError> {
        let as_paid = self
            .as_paid()
            .ok_or_else(|| LifecycleError::NeverPaid(self.out_trade_no.to_string()))?;
        let mut event = OrderEvent::of_order(EventType::OrderPaid, &as_paid, created_at);
        event.stock = self.lines_moved(StockChange::Sell);
        Ok(event)
    }

    /// The order as its PAID transition left it: every field PAID set or left is kept,
    /// every later change (refunds, status, version, history) undone. Deterministic, so an
    /// event completed twice has the same bytes.
    fn as_paid(&self) -> Option<Order> {
        let version = self.paid_version?;
        self.transaction_id.as_ref()?;
        let paid = self
            .history
            .iter()
            .position(|h| h.to == OrderStatus::Paid)?;
        let mut order = self.clone();
        order.status = OrderStatus::Paid;
        order.version = version;
        order.history.truncate(paid + 1);
        order.refunded_total = Money::ZERO;
        order.refund_pending_total = Money::ZERO;
        order.refunds.clear();
        order.restocked.clear();
        order.shipping = None;
        Some(order)
    }

    /// PENDING -> PAID: the payment item (one per transaction_id), the notification kept,
    /// `order.paid`; only if the order's amount is the payment's. No product item is
    /// touched (DESIGN 5): the reserved stock is counted sold when the event is projected.
    pub fn plan_paid(&self, payment: &Payment, at: OffsetDateTime) -> Result<Plan, LifecycleError> {
        let next = self.paid_by(OrderStatus::Paid, payment, at)?;
        let event = next.paid_event(at)?;
        let mut change = self.change(next);
        change.expect_amount_total = Some(payment.amount);
        let mut records = vec![
            Record::Payment(Box::new(payment.clone())),
            Record::Event(Box::new(event)),
        ];
        records.extend(payment.notification.clone().map(Record::Notification));
        Ok(Plan {
            order: Some(change),
            stock: Vec::new(),
            records,
        })
    }

    /// PENDING -> AMOUNT_MISMATCH: WeChat Pay collected another amount. The payment and the
    /// anomaly are kept, the stock stays reserved, the order waits for the merchant.
    pub fn plan_amount_mismatch(
        &self,
        payment: &Payment,
        anomaly: &Anomaly,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let next = self.paid_by(OrderStatus::AmountMismatch, payment, at)?;
        let mut records = vec![
            Record::Payment(Box::new(payment.clone())),
            Record::Anomaly(Box::new(anomaly.clone())),
            Record::Event(Box::new(OrderEvent::of_anomaly(anomaly, at))),
        ];
        if let Some(record) = &payment.notification {
            let mut record = record.clone();
            record.outcome = "anomaly:amount_mismatch".into();
            records.push(Record::Notification(record));
        }
        Ok(Plan {
            order: Some(self.change(next)),
            stock: Vec::new(),
            records,
        })
    }

    /// PENDING -> CLOSED, its reserved stock returned, `order.closed`.
    pub fn plan_close(&self, cause: &str, at: OffsetDateTime) -> Result<Plan, LifecycleError> {
        let next = self.moved(OrderStatus::Closed, Some(cause), at)?;
        let event = OrderEvent::of_order(EventType::OrderClosed, &next, at);
        Ok(Plan {
            order: Some(self.change(next)),
            stock: self.lines_moved(StockChange::Release),
            records: vec![Record::Event(Box::new(event))],
        })
    }

    /// What may still be asked back: paid, less what is refunded or reserved by refunds.
    pub fn refundable(&self) -> Result<Money, MoneyError> {
        self.amount_total
            .checked_sub(self.refunded_total)?
            .checked_sub(self.refund_pending_total)
    }

    /// A new REQUESTED refund reserves its amount on the order (no status change), so no
    /// concurrent refund can take the order's refunds past what was paid.
    pub fn plan_refund_request(&self, refund: &Refund) -> Result<Plan, LifecycleError> {
        self.check_refund_of(refund)?;
        if !self.status.is_refundable() {
            return Err(LifecycleError::NotRefundable(self.status));
        }
        if self.refunds.contains(&refund.out_refund_no) {
            return Err(LifecycleError::RefundAlreadyReserved(
                refund.out_refund_no.to_string(),
            ));
        }
        let refundable = self.refundable()?;
        if refund.amount > refundable || refund.amount == Money::ZERO {
            return Err(LifecycleError::RefundExceedsPaid {
                amount: refund.amount,
                refundable,
            });
        }
        let mut next = self.clone();
        next.version += 1;
        next.refund_pending_total = self.refund_pending_total.checked_add(refund.amount)?;
        next.refunds.push(refund.out_refund_no.clone());
        for line in &refund.restock {
            let bought = self
                .lines
                .iter()
                .find(|l| l.sku_id == line.sku_id)
                .map_or(0, |l| l.quantity.get());
            let promised = restocked_of(&self.restocked, &line.sku_id);
            let left = bought.saturating_sub(promised);
            if line.quantity.get() > left {
                return Err(LifecycleError::RestockExceedsBought {
                    sku_id: line.sku_id.clone(),
                    asked: line.quantity.get(),
                    left,
                });
            }
            add_restocked(&mut next.restocked, line, true);
        }
        let mut change = self.change(next);
        // A reservation that promises stock back must see every earlier promise: it races on
        // the version like a transition. One that only reserves money commutes.
        if refund.restock.is_empty() {
            change.guard = Guard::RefundHeadroom {
                amount: refund.amount,
            };
        }
        Ok(Plan {
            order: Some(change),
            stock: Vec::new(),
            records: vec![Record::Refund {
                refund: Box::new(refund.clone()),
                from: None,
            }],
        })
    }

    /// WeChat Pay's final word on a refund holding a reservation: SUCCESS moves its amount
    /// to `refunded_total` (PARTIALLY_REFUNDED or REFUNDED when the order was PAID; a
    /// shipped or completed order keeps its status until everything is refunded) and
    /// restocks the lines it names; CLOSED (or FAILED) releases the reservation. The refund
    /// moves with it, and its event (`refund.succeeded`, or `refund.closed`).
    pub fn plan_refund_outcome(
        &self,
        refund: &Refund,
        outcome: RefundStatus,
        success_time: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        self.check_refund_of(refund)?;
        let mut moved = refund.transitioned(outcome, at)?;
        let refunded_total = match outcome {
            RefundStatus::Success => self.refunded_total.checked_add(refund.amount)?,
            _ => self.refunded_total,
        };
        let to = if outcome != RefundStatus::Success {
            None
        } else if refunded_total == self.amount_total {
            Some(OrderStatus::Refunded)
        } else if self.status == OrderStatus::Paid {
            Some(OrderStatus::PartiallyRefunded)
        } else {
            None
        };
        let mut next = match to {
            Some(to) => self.moved(to, None, at)?,
            None => Order {
                version: self.version + 1,
                ..self.clone()
            },
        };
        next.refunded_total = refunded_total;
        next.refund_pending_total = self.refund_pending_total.checked_sub(refund.amount)?;
        let mut stock = Vec::new();
        match outcome {
            RefundStatus::Success => {
                moved.success_time = success_time.or(Some(at));
                stock.extend(refund.restock.iter().map(|l| {
                    StockMove {
                        sku_id: l.sku_id.clone(),
                        quantity: l.quantity.get(),
                        change: StockChange::Restock,
                        shard: self
                            .lines
                            .iter()
                            .find(|line| line.sku_id == l.sku_id)
                            .and_then(|line| line.stock_shard),
                    }
                }));
            }
            RefundStatus::Closed | RefundStatus::Failed => {
                for line in &refund.restock {
                    add_restocked(&mut next.restocked, line, false);
                }
            }
            other => {
                return Err(RefundTransitionError {
                    from: refund.status,
                    to: other,
                }
                .into());
            }
        }
        let event_type = match outcome {
            RefundStatus::Success => EventType::RefundSucceeded,
            _ => EventType::RefundClosed,
        };
        let event = OrderEvent::of_refund(event_type, Some(&next), &moved, at);
        Ok(Plan {
            order: Some(self.change(next)),
            stock,
            records: vec![
                Record::Refund {
                    refund: Box::new(moved),
                    from: Some(refund.status),
                },
                Record::Event(Box::new(event)),
            ],
        })
    }

    fn check_refund_of(&self, refund: &Refund) -> Result<(), LifecycleError> {
        if refund.out_trade_no == self.out_trade_no {
            Ok(())
        } else {
            Err(LifecycleError::RefundOfAnotherOrder {
                out_refund_no: refund.out_refund_no.to_string(),
            })
        }
    }
}

/// Units of `sku_id` promised back so far.
fn restocked_of(restocked: &[super::RestockLine], sku_id: &SkuId) -> u32 {
    restocked
        .iter()
        .filter(|l| &l.sku_id == sku_id)
        .map(|l| l.quantity.get())
        .sum()
}

/// Adds (or, `add` false, gives back) a refund's restock promise of one line.
fn add_restocked(restocked: &mut Vec<super::RestockLine>, line: &super::RestockLine, add: bool) {
    let now = restocked_of(restocked, &line.sku_id);
    let q = line.quantity.get();
    let total = if add { now + q } else { now.saturating_sub(q) };
    restocked.retain(|l| l.sku_id != line.sku_id);
    if let Ok(quantity) = super::Quantity::new(i64::from(total)) {
        restocked.push(super::RestockLine {
            sku_id: line.sku_id.clone(),
            quantity,
        });
    }
    restocked.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
}

impl Anomaly {
    /// An anomaly recorded on its own (a payment or refund that could not be applied):
    /// the anomaly item, once per kind and cause, and `anomaly.recorded` with it.
    pub fn plan_recorded(&self, at: OffsetDateTime) -> Plan {
        Plan {
            order: None,
            stock: Vec::new(),
            records: vec![
                Record::Anomaly(Box::new(self.clone())),
                Record::Event(Box::new(OrderEvent::of_anomaly(self, at))),
            ],
        }
    }
}

impl Refund {
    /// PROCESSING (or REQUESTED) -> ABNORMAL: WeChat Pay could not pay it back. The amount
    /// stays reserved (a SUCCESS or CLOSED still follows); the anomaly tells the merchant,
    /// and so do `refund.abnormal` and `anomaly.recorded`.
    pub fn plan_abnormal(
        &self,
        anomaly: &Anomaly,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let next = self.transitioned(RefundStatus::Abnormal, at)?;
        let event = OrderEvent::of_refund(EventType::RefundAbnormal, None, &next, at);
        Ok(Plan {
            order: None,
            stock: Vec::new(),
            records: vec![
                Record::Refund {
                    refund: Box::new(next),
                    from: Some(self.status),
                },
                Record::Anomaly(Box::new(anomaly.clone())),
                Record::Event(Box::new(event)),
                Record::Event(Box::new(OrderEvent::of_anomaly(anomaly, at))),
            ],
        })
    }

    /// REQUESTED -> PROCESSING: WeChat Pay accepted the refund as `refund_id`. Only the
    /// refund moves (the amount stays reserved on the order).
    pub fn plan_accepted(
        &self,
        refund_id: &str,
        at: OffsetDateTime,
    ) -> Result<Plan, LifecycleError> {
        let mut next = self.transitioned(RefundStatus::Processing, at)?;
        next.refund_id = Some(refund_id.to_owned());
        next.submitted_at = Some(at);
        Ok(Plan {
            order: None,
            stock: Vec::new(),
            records: vec![Record::Refund {
                refund: Box::new(next),
                from: Some(self.status),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::{OrderLine, OutRefundNo, OutTradeNo, Quantity, RestockLine};

    const T: OffsetDateTime = datetime!(2026-12-07 04:00:00 UTC);

    fn order() -> Order {
        let line = |sku: &str, price: i64, q: i64| OrderLine {
            sku_id: SkuId::parse(sku).unwrap(),
            name: sku.to_uppercase(),
            unit_price: Money::from_fen(price).unwrap(),
            quantity: Quantity::new(q).unwrap(),
            stock_shard: None,
        };
        Order::new_pending(
            OutTradeNo::parse("ORDER-0001").unwrap(),
            crate::domain::Openid::parse("o_alice").unwrap(),
            vec![line("tea", 1000, 2), line("cup", 500, 1)],
            "Demo".into(),
            None,
            T,
            T + time::Duration::minutes(30),
        )
        .unwrap()
    }

    fn payment(o: &Order, fen: i64) -> Payment {
        Payment {
            transaction_id: "4200000000202612070000000001".into(),
            out_trade_no: o.out_trade_no.clone(),
            amount: Money::from_fen(fen).unwrap(),
            payer_total: Money::from_fen(fen).unwrap(),
            currency: "CNY".into(),
            request_id: None,
            payer: None,
            success_time: T + time::Duration::minutes(1),
            notification_id: Some("n-1".into()),
            notification: None,
        }
    }

    fn paid() -> Order {
        let o = order();
        let p = o.plan_paid(&payment(&o, 2500), T).unwrap();
        p.order().unwrap().clone()
    }

    fn refund(o: &Order, fen: i64, restock: &[(&str, i64)]) -> Refund {
        Refund::requested(
            OutRefundNo::generate(T),
            o.out_trade_no.clone(),
            Money::from_fen(fen).unwrap(),
            Some("returned".into()),
            restock
                .iter()
                .map(|&(s, q)| RestockLine {
                    sku_id: SkuId::parse(s).unwrap(),
                    quantity: Quantity::new(q).unwrap(),
                })
                .collect(),
            T,
        )
    }

    #[test]
    fn paid_sells_every_line_and_keeps_the_payment() {
        let o = order();
        let pay = payment(&o, 2500);
        let plan = o.plan_paid(&pay, T).unwrap();
        let change = plan.order.as_ref().unwrap();
        assert_eq!(change.from.version, 1);
        assert_eq!(change.expect_amount_total, Some(pay.amount));
        let next = plan.order().unwrap();
        assert_eq!((next.status, next.version), (OrderStatus::Paid, 2));
        assert_eq!(
            next.transaction_id.as_deref(),
            Some(pay.transaction_id.as_str())
        );
        assert_eq!(next.paid_at, Some(pay.success_time));
        assert_eq!(next.notification_id.as_deref(), Some("n-1"));
        assert_eq!(next.history.last().unwrap().cause, "payment confirmed");
        // No product item in the PAID transaction (DESIGN 5): the reserved units are
        // counted sold when `order.paid` is projected.
        assert!(plan.stock.is_empty(), "{:?}", plan.stock);
        assert_eq!(plan.records.len(), 2, "{:?}", plan.records);
        assert_eq!(plan.records[0], Record::Payment(Box::new(pay.clone())));
        let Record::Event(event) = &plan.records[1] else {
            panic!("{:?}", plan.records)
        };
        assert_eq!(event.event_type, EventType::OrderPaid);
        assert_eq!(
            event.data,
            crate::domain::EventData::Order(Box::new(next.clone()))
        );
        assert_eq!(
            event
                .stock
                .iter()
                .map(|m| (m.sku_id.as_str(), m.quantity, m.change))
                .collect::<Vec<_>>(),
            [("tea", 2, StockChange::Sell), ("cup", 1, StockChange::Sell)]
        );
        assert_eq!(event.id, format!("evt_{}_paid", o.out_trade_no));
        // Nothing leads back to PENDING: a paid order refuses a second payment and a close.
        assert!(matches!(
            next.plan_paid(&pay, T),
            Err(LifecycleError::Transition(_))
        ));
        assert!(next.plan_close("expired", T).is_err());
        let mut other = pay.clone();
        other.out_trade_no = OutTradeNo::parse("ORDER-0002").unwrap();
        assert!(matches!(
            o.plan_paid(&other, T),
            Err(LifecycleError::PaymentOfAnotherOrder(_))
        ));
    }

    #[test]
    fn an_unread_paid_plans_from_the_payment_alone() {
        let o = order();
        let mut pay = payment(&o, 2500);
        pay.payer = Some(crate::domain::Openid::parse("o_friend").unwrap());
        pay.notification = Some(Box::new(NotificationRecord {
            id: "n-1".into(),
            event_type: "TRANSACTION.SUCCESS".into(),
            received_at: T,
            body: "{}".into(),
            headers: Vec::new(),
            out_trade_no: Some(o.out_trade_no.clone()),
            outcome: "applied".into(),
        }));
        let plan = PaidUnread::plan(&pay, T).unwrap();
        assert_eq!(
            (plan.from, plan.to),
            (OrderStatus::Pending, OrderStatus::Paid)
        );
        assert_eq!(
            (plan.amount_total, plan.currency.as_str()),
            (pay.amount, "CNY")
        );
        assert_eq!(plan.paid_at, pay.success_time);
        assert_eq!(plan.notification_id.as_deref(), Some("n-1"));
        // The same history entry a read-planned PAID appends.
        let read_planned = o.plan_paid(&pay, T).unwrap();
        assert_eq!(
            Some(&plan.entry),
            read_planned.order().unwrap().history.last()
        );
        assert_eq!(plan.records[0], Record::Payment(Box::new(pay.clone())));
        let Record::Event(event) = &plan.records[1] else {
            panic!("{:?}", plan.records)
        };
        // The id a read-planned PAID gives its event: whichever wins, one order.paid.
        let Record::Event(read_event) = &read_planned.records[1] else {
            panic!("{:?}", read_planned.records)
        };
        assert_eq!(event.id, read_event.id);
        assert_eq!(event.event_type, EventType::OrderPaid);
        assert!(event.stock.is_empty(), "its lines are not known yet");
        assert_eq!(
            event.data,
            crate::domain::EventData::OrderToRead(crate::domain::OrderToRead {
                payer: Some("o_friend".into())
            })
        );
        assert!(matches!(plan.records[2], Record::Notification(_)));
    }

    #[test]
    fn order_paid_completed_later_is_the_event_its_paid_planned() {
        let o = order();
        let pay = payment(&o, 2500);
        let plan = o.plan_paid(&pay, T).unwrap();
        let Record::Event(planned) = &plan.records[1] else {
            panic!("{:?}", plan.records)
        };
        let paid = plan.order().unwrap().clone();
        assert_eq!(paid.paid_version, Some(paid.version));
        assert_eq!(paid.paid_event(T).unwrap(), **planned);
        // After a refund (status, totals, version and history all moved on), the order
        // still makes the same order.paid: what PAID left, not what is there now.
        let part = Refund::requested(
            OutRefundNo::parse("R-1").unwrap(),
            o.out_trade_no.clone(),
            Money::from_fen(1000).unwrap(),
            None,
            Vec::new(),
            T,
        );
        let reserved = paid
            .plan_refund_request(&part)
            .unwrap()
            .order()
            .unwrap()
            .clone();
        let later = T + time::Duration::minutes(5);
        let refunded = reserved
            .plan_refund_outcome(&part, RefundStatus::Success, Some(later), later)
            .unwrap()
            .order()
            .unwrap()
            .clone();
        assert_eq!(refunded.status, OrderStatus::PartiallyRefunded);
        assert!(refunded.version > paid.version);
        assert_eq!(refunded.paid_event(T).unwrap(), **planned);
        // An order PAID never moved has no order.paid to make.
        assert!(matches!(o.paid_event(T), Err(LifecycleError::NeverPaid(_))));
    }

    #[test]
    fn amount_mismatch_keeps_stock_reserved_and_the_anomaly() {
        let o = order();
        let mut pay = payment(&o, 1);
        pay.notification = Some(Box::new(NotificationRecord {
            id: "n-1".into(),
            event_type: "TRANSACTION.SUCCESS".into(),
            received_at: T,
            body: "{}".into(),
            headers: Vec::new(),
            out_trade_no: Some(o.out_trade_no.clone()),
            outcome: "applied".into(),
        }));
        let anomaly = Anomaly::of_payment(
            &pay,
            crate::domain::AnomalyKind::AmountMismatch,
            "1 != 2500",
        );
        let plan = o.plan_amount_mismatch(&pay, &anomaly, T).unwrap();
        assert_eq!(plan.order().unwrap().status, OrderStatus::AmountMismatch);
        assert!(plan.stock.is_empty());
        assert_eq!(plan.order.as_ref().unwrap().expect_amount_total, None);
        let Record::Notification(kept) = &plan.records[3] else {
            panic!("{:?}", plan.records)
        };
        assert_eq!(kept.outcome, "anomaly:amount_mismatch");
        assert_eq!(plan.records[1], Record::Anomaly(Box::new(anomaly.clone())));
        assert_eq!(
            plan.records[2],
            Record::Event(Box::new(OrderEvent::of_anomaly(&anomaly, T)))
        );
    }

    #[test]
    fn close_releases_and_a_deleted_product_is_skipped_with_a_note() {
        let o = order();
        let plan = o.plan_close("closed by owner", T).unwrap();
        assert_eq!(
            plan.order().unwrap().history.last().unwrap().cause,
            "closed by owner"
        );
        assert!(plan.stock.iter().all(|m| m.change == StockChange::Release));
        let plan = plan.without_stock_of(&[SkuId::parse("cup").unwrap()]);
        assert_eq!(plan.stock.len(), 1);
        assert_eq!(
            plan.order().unwrap().history.last().unwrap().cause,
            "closed by owner (stock not moved for deleted product cup)"
        );
    }

    #[test]
    fn refunds_never_exceed_what_was_paid() {
        let o = paid();
        assert!(matches!(
            order().plan_refund_request(&refund(&o, 1, &[])),
            Err(LifecycleError::NotRefundable(OrderStatus::Pending))
        ));
        let first = refund(&o, 2000, &[]);
        let plan = o.plan_refund_request(&first).unwrap();
        let reserved = plan.order().unwrap().clone();
        assert_eq!(
            reserved.status,
            OrderStatus::Paid,
            "a reservation is no status change"
        );
        assert_eq!(reserved.history, o.history);
        assert_eq!(
            (reserved.refund_pending_total.fen(), reserved.version),
            (2000, o.version + 1)
        );
        assert!(matches!(
            &plan.records[..],
            [Record::Refund { from: None, .. }]
        ));
        assert_eq!(
            reserved.plan_refund_request(&refund(&o, 501, &[])),
            Err(LifecycleError::RefundExceedsPaid {
                amount: Money::from_fen(501).unwrap(),
                refundable: Money::from_fen(500).unwrap()
            })
        );
        assert!(reserved.plan_refund_request(&refund(&o, 0, &[])).is_err());
        assert!(reserved.plan_refund_request(&refund(&o, 500, &[])).is_ok());
    }

    #[test]
    fn refund_success_moves_the_amount_status_and_stock_once() {
        let o = paid();
        let part = refund(&o, 1000, &[("tea", 1)]);
        let reserved = o
            .plan_refund_request(&part)
            .unwrap()
            .order()
            .unwrap()
            .clone();
        let later = T + time::Duration::minutes(5);
        let plan = reserved
            .plan_refund_outcome(&part, RefundStatus::Success, Some(later), later)
            .unwrap();
        let after = plan.order().unwrap();
        assert_eq!(after.status, OrderStatus::PartiallyRefunded);
        assert_eq!(
            (after.refunded_total.fen(), after.refund_pending_total.fen()),
            (1000, 0)
        );
        assert_eq!(
            plan.stock,
            [StockMove {
                sku_id: SkuId::parse("tea").unwrap(),
                quantity: 1,
                change: StockChange::Restock,
                shard: None,
            }]
        );
        let [
            Record::Refund {
                refund: moved,
                from,
            },
            Record::Event(event),
        ] = &plan.records[..]
        else {
            panic!("{:?}", plan.records)
        };
        assert_eq!(
            (moved.status, *from),
            (RefundStatus::Success, Some(RefundStatus::Requested))
        );
        assert_eq!(event.event_type, EventType::RefundSucceeded);
        assert_eq!(event.id, format!("evt_{}_SUCCESS", moved.out_refund_no));
        assert_eq!(
            event.data,
            crate::domain::EventData::Refund {
                order: plan.order().cloned().map(Box::new),
                refund: moved.clone(),
            }
        );
        assert_eq!(moved.success_time, Some(later));
        // The same refund cannot succeed twice.
        assert!(
            after
                .plan_refund_outcome(moved, RefundStatus::Success, None, later)
                .is_err()
        );

        let rest = refund(after, 1500, &[]);
        let reserved = after
            .plan_refund_request(&rest)
            .unwrap()
            .order()
            .unwrap()
            .clone();
        let done = reserved
            .plan_refund_outcome(&rest, RefundStatus::Success, None, later)
            .unwrap();
        let done = done.order().unwrap();
        assert_eq!(done.status, OrderStatus::Refunded);
        assert_eq!(done.refunded_total, done.amount_total);
        assert_eq!(done.history.last().unwrap().cause, "refund succeeded, rest");
    }

    #[test]
    fn accepted_moves_only_the_refund() {
        let o = paid();
        let r = refund(&o, 100, &[]);
        let plan = r.plan_accepted("50300000000000000001", T).unwrap();
        assert!(plan.order.is_none() && plan.stock.is_empty());
        let [
            Record::Refund {
                refund: moved,
                from: Some(RefundStatus::Requested),
            },
        ] = &plan.records[..]
        else {
            panic!("{:?}", plan.records)
        };
        assert_eq!(moved.status, RefundStatus::Processing);
        assert_eq!(moved.refund_id.as_deref(), Some("50300000000000000001"));
        assert!(moved.plan_accepted("x", T).is_err(), "accepted once");
    }

    #[test]
    fn restock_never_exceeds_what_was_bought_across_refunds() {
        let o = paid();
        let first = refund(&o, 500, &[("tea", 2)]);
        let plan = o.plan_refund_request(&first).unwrap();
        assert_eq!(
            plan.order.as_ref().unwrap().guard,
            Guard::Version,
            "stock promises race on the version"
        );
        let reserved = plan.order().unwrap().clone();
        assert_eq!(
            reserved.plan_refund_request(&refund(&o, 500, &[("tea", 1)])),
            Err(LifecycleError::RestockExceedsBought {
                sku_id: SkuId::parse("tea").unwrap(),
                asked: 1,
                left: 0
            })
        );
        assert!(
            reserved
                .plan_refund_request(&refund(&o, 500, &[("cup", 1)]))
                .is_ok()
        );
        // A closed refund gives its promise back.
        let closed = reserved
            .plan_refund_outcome(&first, RefundStatus::Closed, None, T)
            .unwrap();
        let after = closed.order().unwrap();
        assert!(after.restocked.is_empty(), "{:?}", after.restocked);
        assert!(
            after
                .plan_refund_request(&refund(&o, 500, &[("tea", 2)]))
                .is_ok()
        );
    }

    #[test]
    fn refund_closed_releases_the_reservation_only() {
        let o = paid();
        let r = refund(&o, 2500, &[("tea", 2)]);
        let reserved = o.plan_refund_request(&r).unwrap().order().unwrap().clone();
        let plan = reserved
            .plan_refund_outcome(&r, RefundStatus::Closed, None, T)
            .unwrap();
        let after = plan.order().unwrap();
        assert_eq!(
            (
                after.status,
                after.refund_pending_total,
                after.refunded_total
            ),
            (OrderStatus::Paid, Money::ZERO, Money::ZERO)
        );
        assert!(plan.stock.is_empty());
        assert!(
            reserved
                .plan_refund_outcome(&r, RefundStatus::Processing, None, T)
                .is_err()
        );
    }
}
