//! Applying the domain's plans (`domain::lifecycle`): one TransactWriteItems whose first
//! action is the conditional write on the order, then the plan's records, then its stock
//! moves; and the one retry-and-read-the-winner loop every transition shares.

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use time::OffsetDateTime;

use super::DynamoStore;
use super::expr::{Expr, build_err, is_ccf, put_action, unexplained_cancel, update_action};
use super::items::{self, Item, attr};
use super::stock::action_skus;
use crate::domain::{
    Guard, LifecycleError, Money, Order, OrderChange, OrderStatus, OutRefundNo, OutboxEvent,
    PaidUnread, Plan, Record, SkuId,
};
use crate::store::{PaidUnreadOutcome, StoreError};

/// A plan rebuilt from a fresher read of the order (version moved on, e.g. a prepay_id was
/// recorded) is retried this many times before giving up as a conflict.
const STALE_RETRIES: usize = 3;

/// How applying a plan ended.
pub(super) enum Applied {
    /// Written: the plan as applied (its order and records as they now stand).
    Done(Box<Plan>),
    /// The order refused: as it is now (the domain refused to plan on it, with its reason,
    /// or it failed a condition of the plan such as the amount), or `None` when there is no
    /// such order.
    OrderRefused {
        order: Option<Box<Order>>,
        reason: Option<LifecycleError>,
    },
    /// The `index`th record's condition failed (the payment or anomaly already exists); the
    /// item that refused, if the engine returned it.
    RecordRefused { index: usize, item: Option<Item> },
}

impl DynamoStore {
    /// Applies the plan `plan_for` makes of `read` (the caller's read of the order; a stale
    /// one is fine) as one conditional transaction. A version that moved on is planned again
    /// on the order the transaction lost to, so the domain decides on what is there; a
    /// product deleted since the order was placed never blocks the transition (its stock
    /// move is dropped, and the history and a log line say so).
    pub(super) async fn apply<F>(
        &self,
        read: &Order,
        plan_for: F,
        now: OffsetDateTime,
    ) -> Result<Applied, StoreError>
    where
        F: Fn(&Order) -> Result<Plan, LifecycleError>,
    {
        let mut current = read.clone();
        let mut missing: Vec<SkuId> = Vec::new();
        for _ in 0..STALE_RETRIES + read.lines.len() {
            let plan = match plan_for(&current) {
                Ok(plan) => plan.without_stock_of(&missing),
                Err(reason) => {
                    return Ok(Applied::OrderRefused {
                        order: Some(Box::new(current)),
                        reason: Some(reason),
                    });
                }
            };
            let reasons = match self.transact(self.plan_actions(&plan)?).await? {
                Ok(()) => {
                    for sku_id in &missing {
                        tracing::warn!(out_trade_no = %read.out_trade_no, %sku_id, outcome = "product_missing", "product deleted; the transition applied without moving its stock");
                        crate::telemetry::emit_metrics(
                            &[(crate::telemetry::Metric::ProductMissing, 1)],
                            now,
                        );
                    }
                    return Ok(Applied::Done(Box::new(plan)));
                }
                Err(reasons) => reasons,
            };
            let records_at = usize::from(plan.order.is_some());
            if plan.order.is_some()
                && let Some(r) = reasons.first().filter(|r| is_ccf(r))
            {
                let Some(item) = r.item() else {
                    return Ok(Applied::OrderRefused {
                        order: None,
                        reason: None,
                    });
                };
                let latest = items::order_from_item(item)?;
                if latest.version != current.version {
                    current = latest;
                    continue;
                }
                return Ok(Applied::OrderRefused {
                    order: Some(Box::new(latest)),
                    reason: None,
                });
            }
            let records = plan.records.len();
            if let Some((index, r)) = reasons
                .iter()
                .enumerate()
                .skip(records_at)
                .take(records)
                .find(|(_, r)| is_ccf(r))
            {
                return Ok(Applied::RecordRefused {
                    index: index - records_at,
                    item: r.item().cloned(),
                });
            }
            let gone: Vec<SkuId> = action_skus(&plan.stock)
                .into_iter()
                .zip(reasons.iter().skip(records_at + records))
                .filter(|(_, r)| is_ccf(r))
                .map(|(sku_id, _)| sku_id.clone())
                .collect();
            if gone.is_empty() {
                return Err(unexplained_cancel(&reasons));
            }
            missing.extend(gone);
        }
        Err(StoreError::TransactionConflict {
            op: "TransactWriteItems",
            message: format!("order {} kept changing", read.out_trade_no),
        })
    }

    /// Applies a plan that writes no order (a refund accepted by WeChat Pay): `Err` names
    /// the record whose condition failed and the item that failed it.
    pub(super) async fn apply_records(
        &self,
        plan: &Plan,
    ) -> Result<Result<(), (usize, Option<Item>)>, StoreError> {
        if plan.order.is_some() {
            return Err(StoreError::Invalid(
                "a plan with an order goes through apply".into(),
            ));
        }
        let reasons = match self.transact(self.plan_actions(plan)?).await? {
            Ok(()) => return Ok(Ok(())),
            Err(reasons) => reasons,
        };
        match reasons.iter().enumerate().find(|(_, r)| is_ccf(r)) {
            Some((index, r)) if index < plan.records.len() => Ok(Err((index, r.item().cloned()))),
            _ => Err(unexplained_cancel(&reasons)),
        }
    }

    /// The plan's actions: the order first, then its records, then a stock move per sku.
    fn plan_actions(&self, plan: &Plan) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut actions = Vec::with_capacity(1 + plan.records.len() + plan.stock.len());
        if let Some(change) = &plan.order {
            actions.push(self.order_update(change)?);
        }
        for record in &plan.records {
            actions.push(self.record_action(record)?);
        }
        for stock_move in &plan.stock {
            actions.extend(self.stock_actions(stock_move)?);
        }
        Ok(actions)
    }

    /// The order as read -> as planned: every attribute that differs is set (or removed),
    /// new history entries appended, `version` set; conditional on the status and version
    /// read, so any change in between makes it lose. Attributes the plan did not change
    /// (a sync claim written since the read) are left as they are.
    fn order_update(&self, change: &OrderChange) -> Result<TransactWriteItem, StoreError> {
        if let Guard::RefundHeadroom { amount } = change.guard {
            let added: Vec<&OutRefundNo> = change
                .to
                .refunds
                .iter()
                .filter(|n| !change.from.refunds.contains(n))
                .collect();
            return self.refund_reservation(change.from.as_ref(), amount, &added);
        }
        let (from, to) = (change.from.as_ref(), change.to.as_ref());
        let old = items::order_item(from, self.shards);
        let new = items::order_item(to, self.shards);
        let mut e = Expr::default();
        let fixed = [attr::PK, attr::SK, attr::HISTORY, attr::VERSION];
        let (mut sets, removed) = item_diff(&mut e, &old, &new, &fixed);
        sets.push(format!(
            "{} = {}",
            e.name(attr::VERSION),
            e.value("to_version", items::n(to.version))
        ));
        let appended = to
            .history
            .get(from.history.len()..)
            .filter(|_| to.history.starts_with(&from.history))
            .ok_or_else(|| StoreError::Invalid("a plan rewrote the order's history".into()))?;
        if !appended.is_empty() {
            sets.push(format!(
                "{h} = list_append({h}, {v})",
                h = e.name(attr::HISTORY),
                v = e.value(
                    "history",
                    aws_sdk_dynamodb::types::AttributeValue::L(
                        appended.iter().map(items::history_value).collect()
                    )
                )
            ));
        }
        let mut update = format!("SET {}", sets.join(", "));
        if !removed.is_empty() {
            update.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        let mut condition = format!(
            "{} = {} AND {} = {}",
            e.name(attr::STATUS),
            e.value("from_status", items::s(from.status.as_str())),
            e.name(attr::VERSION),
            e.value("from_version", items::n(from.version)),
        );
        if let Some(amount) = change.expect_amount_total {
            condition.push_str(&format!(
                " AND {} = {}",
                e.name(attr::AMOUNT_TOTAL),
                e.value("expect_amount_total", items::money(amount))
            ));
        }
        update_action(
            &self.table,
            items::order_key(&from.out_trade_no),
            update,
            condition,
            e,
        )
    }

    /// A refund's reservation: commutative counters, conditional on a refundable status and
    /// on `refund_reserved_total + amount <= amount_total` (written as `<= amount_total -
    /// amount`: `amount_total` never changes, and a condition cannot add attributes).
    fn refund_reservation(
        &self,
        from: &Order,
        amount: Money,
        added: &[&OutRefundNo],
    ) -> Result<TransactWriteItem, StoreError> {
        let limit = from.amount_total.checked_sub(amount).map_err(|_| {
            StoreError::Invalid(format!("a refund of {amount} exceeds the order's amount"))
        })?;
        let mut e = Expr::default();
        let mut update = format!(
            "ADD {} {amount}, {} {amount}, {} {one}",
            e.name(attr::REFUND_PENDING_TOTAL),
            e.name(attr::REFUND_RESERVED_TOTAL),
            e.name(attr::VERSION),
            amount = e.value("amount", items::money(amount)),
            one = e.value("one", items::n(1)),
        );
        if !added.is_empty() {
            // A set, so concurrent reservations each add theirs.
            update.push_str(&format!(
                ", {} {}",
                e.name(attr::REFUND_NOS),
                e.value(
                    "refund_nos",
                    aws_sdk_dynamodb::types::AttributeValue::Ss(
                        added.iter().map(|n| n.to_string()).collect()
                    )
                )
            ));
        }
        let refundable: Vec<String> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_refundable())
            .map(|s| e.value(&format!("s_{}", s.as_str()), items::s(s.as_str())))
            .collect();
        let reserved = e.name(attr::REFUND_RESERVED_TOTAL);
        let condition = format!(
            "{} IN ({}) AND (attribute_not_exists({reserved}) OR {reserved} <= {})",
            e.name(attr::STATUS),
            refundable.join(", "),
            e.value("limit", items::money(limit)),
        );
        update_action(
            &self.table,
            items::order_key(&from.out_trade_no),
            update,
            condition,
            e,
        )
    }

    fn record_action(&self, record: &Record) -> Result<TransactWriteItem, StoreError> {
        let if_absent = |item: Item| {
            let mut e = Expr::default();
            let condition = format!("attribute_not_exists({})", e.name(attr::PK));
            put_action(&self.table, item, condition, e)
        };
        match record {
            Record::Payment(payment) => if_absent(items::payment_item(payment)),
            Record::Anomaly(anomaly) => if_absent(items::anomaly_item(anomaly)),
            // Unconditional: a re-delivery overwrites the same record, never cancels.
            Record::Notification(record) => Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(items::notification_item(record)))
                        .build()
                        .map_err(build_err)?,
                )
                .build()),
            Record::Refund { refund, from: None } => if_absent(items::refund_item(refund)),
            Record::Refund {
                refund,
                from: Some(status),
            } => {
                let mut e = Expr::default();
                let condition = format!(
                    "{} = {}",
                    e.name(attr::STATUS),
                    e.value("refund_from", items::s(status.as_str()))
                );
                put_action(&self.table, items::refund_item(refund), condition, e)
            }
            Record::Event(event) => if_absent(items::new_event_item(event, self.shards)),
        }
    }

    /// PENDING -> PAID without a read (DESIGN 5): the order's update, conditional on status,
    /// amount and currency rather than on a version read, and the plan's records, in one
    /// TransactWriteItems. A refusal names the order as it is (ALL_OLD) for the caller to
    /// judge, or the payment item that exists.
    pub(super) async fn paid_unread(
        &self,
        plan: &PaidUnread,
    ) -> Result<PaidUnreadOutcome, StoreError> {
        let mut actions = Vec::with_capacity(1 + plan.records.len());
        actions.push(self.unread_paid_update(plan)?);
        for record in &plan.records {
            actions.push(self.record_action(record)?);
        }
        let reasons = match self.transact(actions).await? {
            Ok(()) => return Ok(PaidUnreadOutcome::Applied),
            Err(reasons) => reasons,
        };
        if let Some(r) = reasons.first().filter(|r| is_ccf(r)) {
            return Ok(PaidUnreadOutcome::OrderRefused(
                r.item()
                    .map(items::order_from_item)
                    .transpose()?
                    .map(Box::new),
            ));
        }
        let payment_at = plan
            .records
            .iter()
            .position(|r| matches!(r, Record::Payment(_)));
        match reasons.iter().skip(1).enumerate().find(|(_, r)| is_ccf(r)) {
            Some((index, r)) if Some(index) == payment_at => {
                let item = r.item().ok_or_else(|| {
                    StoreError::Inconsistent("payment put refused without its item".into())
                })?;
                Ok(PaidUnreadOutcome::PaymentExists {
                    out_trade_no: items::payment_out_trade_no(item)?,
                })
            }
            // The order was payable, so no event of its PAID can exist yet.
            _ => Err(unexplained_cancel(&reasons)),
        }
    }

    /// The order's side of [`PaidUnread`]: what PAID sets, `version` incremented and kept
    /// as `paid_version` (both from the version as it is: nothing was read), the history
    /// entry appended, the due-work index keys removed.
    fn unread_paid_update(&self, plan: &PaidUnread) -> Result<TransactWriteItem, StoreError> {
        let mut e = Expr::default();
        let version = e.name(attr::VERSION);
        let one = e.value("one", items::n(1));
        let history = e.name(attr::HISTORY);
        let mut sets = vec![
            format!(
                "{} = {}",
                e.name(attr::STATUS),
                e.value("to_status", items::s(plan.to.as_str()))
            ),
            format!(
                "{} = {}",
                e.name(attr::TRANSACTION_ID),
                e.value("transaction_id", items::s(plan.transaction_id.clone()))
            ),
            format!(
                "{} = {}",
                e.name(attr::PAID_AT),
                e.value("paid_at", items::t(plan.paid_at))
            ),
            format!("{version} = {version} + {one}"),
            format!("{} = {version} + {one}", e.name(attr::PAID_VERSION)),
            format!(
                "{history} = list_append({history}, {})",
                e.value(
                    "history",
                    aws_sdk_dynamodb::types::AttributeValue::L(vec![items::history_value(
                        &plan.entry
                    )])
                )
            ),
        ];
        if let Some(id) = &plan.notification_id {
            sets.push(format!(
                "{} = {}",
                e.name(attr::NOTIFICATION_ID),
                e.value("notification_id", items::s(id.clone()))
            ));
        }
        let update = format!(
            "SET {} REMOVE {}, {}",
            sets.join(", "),
            e.name(attr::GSI2PK),
            e.name(attr::GSI2SK)
        );
        let condition = format!(
            "{} = {} AND {} = {} AND {} = {}",
            e.name(attr::STATUS),
            e.value("from_status", items::s(plan.from.as_str())),
            e.name(attr::AMOUNT_TOTAL),
            e.value("amount_total", items::money(plan.amount_total)),
            e.name(attr::CURRENCY),
            e.value("currency", items::s(plan.currency.clone())),
        );
        update_action(
            &self.table,
            items::order_key(&plan.out_trade_no),
            update,
            condition,
            e,
        )
    }

    /// An event's counters moved once (`sold` kept from `order.paid`, DESIGN 5): the event's
    /// `projected_at` and each product's ADDs in one transaction. `false` when it was
    /// projected already (or is gone). A product deleted since is skipped, as a
    /// transition skips it.
    /// `completing`: the event was just completed from its order ([`OutboxEvent::completed`]),
    /// so its body and counters are written with the projection and its mark removed.
    pub(super) async fn project(
        &self,
        event: &OutboxEvent,
        completing: bool,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut moves = event.stock.clone();
        for _ in 0..=event.stock.len() {
            let mut e = Expr::default();
            let mut update = format!(
                "SET {} = {}",
                e.name(attr::PROJECTED_AT),
                e.value("now", items::t(now))
            );
            if completing {
                let item = items::event_item(event, self.shards);
                for name in [attr::BODY, attr::STOCK] {
                    if let Some(v) = item.get(name) {
                        update.push_str(&format!(
                            ", {} = {}",
                            e.name(name),
                            e.value(name, v.clone())
                        ));
                    }
                }
                update.push_str(&format!(
                    " REMOVE {}, {}",
                    e.name(attr::ORDER_TO_READ),
                    e.name(attr::PAYER)
                ));
            }
            let projected = e.name(attr::PROJECTED_AT);
            let condition = format!(
                "attribute_exists({}) AND attribute_not_exists({projected})",
                e.name(attr::PK)
            );
            let mut actions = vec![update_action(
                &self.table,
                items::event_key(&event.id),
                update,
                condition,
                e,
            )?];
            for m in &moves {
                actions.extend(self.stock_actions(m)?);
            }
            let reasons = match self.transact(actions).await? {
                Ok(()) => return Ok(true),
                Err(reasons) => reasons,
            };
            if reasons.first().is_some_and(is_ccf) {
                return Ok(false);
            }
            let gone: Vec<SkuId> = action_skus(&moves)
                .into_iter()
                .zip(reasons.iter().skip(1))
                .filter(|(_, r)| is_ccf(r))
                .map(|(sku_id, _)| sku_id.clone())
                .collect();
            if gone.is_empty() {
                return Err(unexplained_cancel(&reasons));
            }
            for sku_id in &gone {
                tracing::warn!(event_id = %event.id, out_trade_no = event.out_trade_no.as_deref().unwrap_or(""), %sku_id, outcome = "product_missing", "product deleted; the event projected without moving its stock");
                crate::telemetry::emit_metrics(
                    &[(crate::telemetry::Metric::ProductMissing, 1)],
                    now,
                );
            }
            moves.retain(|m| !gone.contains(&m.sku_id));
        }
        Err(StoreError::Inconsistent(format!(
            "event {} kept refusing its projection",
            event.id
        )))
    }
}

/// What turns item `old` into item `new`: a `SET` clause per attribute that differs and the
/// names of those `new` lacks (to `REMOVE`), leaving `fixed` ones to the caller. Attributes
/// neither knows are untouched, so a field written since the read (or by a newer version)
/// survives.
pub(super) fn item_diff(
    e: &mut Expr,
    old: &Item,
    new: &Item,
    fixed: &[&str],
) -> (Vec<String>, Vec<String>) {
    let mut changed: Vec<&String> = new
        .iter()
        .filter(|(name, v)| !fixed.contains(&name.as_str()) && old.get(*name) != Some(v))
        .map(|(name, _)| name)
        .collect();
    changed.sort();
    let sets = changed
        .into_iter()
        .map(|name| {
            format!(
                "{} = {}",
                e.name(name),
                e.value(&format!("to_{name}"), new[name].clone())
            )
        })
        .collect();
    let mut removed: Vec<&String> = old
        .keys()
        .filter(|k| !fixed.contains(&k.as_str()) && !new.contains_key(*k))
        .collect();
    removed.sort();
    let removed = removed.into_iter().map(|n| e.name(n)).collect();
    (sets, removed)
}
