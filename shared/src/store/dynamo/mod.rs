//! `DynamoStore`, the one implementation of `Store`, on the DynamoDB API (AWS, Dynoxide, moto
//! or any compatible endpoint). Here: the port's operations; `client` builds the SDK client
//! with its time budget, `expr` the requests, `items` the item codecs, `transition` applies
//! the domain's plans, `admin` is `StoreSupport` (tests and sandbox only).
//!
//! Every transition is one TransactWriteItems whose first action is the conditional write on
//! the item that decides; its cancellation reason carries that item (ALL_OLD), which is all a
//! loser needs to answer.

#[cfg(feature = "test-support")]
mod admin;
mod bills;
mod client;
mod expr;
pub(crate) mod items;
mod outbox;
mod stock;
mod transition;

pub use client::{AwsAccess, ClientSettings, connect, connect_static, sdk_config};
use expr::{Expr, build_err, conditional, is_ccf, put_action, unexplained_cancel, update_action};
use transition::Applied;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Get, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactGetItem, TransactWriteItem,
};
use time::OffsetDateTime;

use super::error::from_sdk;
use super::{
    Anomaly, AnomalyOutcome, CloseOutcome, CompleteOrderOutcome, CreateOrderOutcome, Cursor,
    EventClaim, FencedOutcome, MarkPaidOutcome, NotificationRecord, Page, PaidUnreadOutcome,
    Payment, RefundMoveOutcome, RefundReserveOutcome, RefundSettleOutcome, Store, StoreError,
    SyncClaim, TakeOverOutcome,
};
use crate::domain::{
    BillReport, LifecycleError, Openid, Order, OrderStatus, OutRefundNo, OutTradeNo, OutboxEvent,
    Plan, Product, Record, Refund, RefundStatus, SkuId, StockShard, StockTransfer,
};
use crate::idempotency::{IdempotencyScope, NewIdempotencyClaim, StoredResponse};
use crate::timefmt::to_utc_string;
use items::{Item, attr};

/// The store on one table. Cheap to clone (the SDK client is an `Arc`).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    shards: u32,
}

/// Shards of the pending index (and outbox) a store built without `with_shards` uses: tests
/// and the sandbox. A deployment sets `SWEEPER_SHARDS` (default
/// [`crate::config::DEFAULT_SWEEPER_SHARDS`]).
const DEFAULT_SHARDS: u32 = 4;

/// Page size bounds for listings.
const MAX_PAGE: u32 = 100;

/// BatchGetItem / BatchWriteItem limits per request.
const BATCH_GET_MAX: usize = 100;
#[cfg(feature = "test-support")]
const BATCH_WRITE_MAX: usize = 25;

/// TransactWriteItems takes 100 actions; an order uses two besides its lines.
const MAX_LINES: usize = 98;

/// Rounds of resubmitting a batch's unprocessed part before reporting throttling.
const BATCH_ROUNDS: u32 = 8;

impl DynamoStore {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table_name.into(),
            shards: DEFAULT_SHARDS,
        }
    }

    /// Shards of the pending index new orders are spread over (`SWEEPER_SHARDS`).
    pub fn with_shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    async fn get_item(&self, op: &'static str, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk(op, e))?;
        Ok(out.item)
    }

    async fn transact(
        &self,
        actions: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(ctx))
                if matches!(
                    ctx.err(),
                    TransactWriteItemsError::TransactionCanceledException(_)
                ) =>
            {
                match ctx.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(e) => {
                        Ok(Err(e.cancellation_reasons().to_vec()))
                    }
                    other => Err(StoreError::Rejected {
                        op: "TransactWriteItems",
                        code: "Unknown".into(),
                        message: other.to_string(),
                    }),
                }
            }
            Err(e) => Err(from_sdk("TransactWriteItems", e)),
        }
    }

    async fn query_page(
        &self,
        index: &'static str,
        key_condition: Expr,
        condition: &str,
        forward: bool,
        limit: u32,
        start: Option<Item>,
    ) -> Result<Page<Order>, StoreError> {
        self.query_page_of(
            index,
            key_condition,
            condition,
            forward,
            limit,
            start,
            items::order_from_item,
        )
        .await
    }

    /// The due work of one partition of `gsi2` (pending orders of a shard, refunds to check,
    /// undelivered events of a shard): items whose time key (`gsi2sk`) has come, soonest
    /// first, a page at a time.
    pub(super) async fn due_in<T>(
        &self,
        partition: String,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
        decode: fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        self.gsi2_page(partition, Some(now), limit, cursor, decode)
            .await
    }

    /// One page of a partition of `gsi2`, in `gsi2sk` order, up to `until` when given: the
    /// query behind the due-work partitions and the day partitions of payments and refunds.
    pub(super) async fn gsi2_page<T>(
        &self,
        partition: String,
        until: Option<OffsetDateTime>,
        limit: u32,
        cursor: Option<&Cursor>,
        decode: fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let start = index_start(cursor, attr::GSI2PK, attr::GSI2SK, &partition)?;
        let mut e = Expr::default();
        let mut condition = format!(
            "{} = {}",
            e.name(attr::GSI2PK),
            e.value("partition", items::s(partition.clone())),
        );
        if let Some(until) = until {
            condition.push_str(&format!(
                " AND {} <= {}",
                e.name(attr::GSI2SK),
                e.value("now", items::s(to_utc_string(until))),
            ));
        }
        self.query_page_of(items::GSI2, e, &condition, true, limit, start, decode)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn query_page_of<T>(
        &self,
        index: &'static str,
        key_condition: Expr,
        condition: &str,
        forward: bool,
        limit: u32,
        start: Option<Item>,
        decode: fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let (names, values) = key_condition.into_parts();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .scan_index_forward(forward)
            .limit(i32::try_from(limit.clamp(1, MAX_PAGE)).unwrap_or(1))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| from_sdk("Query", e))?;
        let items = out
            .items()
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out.last_evaluated_key().map(Cursor::encode).transpose()?;
        Ok(Page { items, next })
    }

    /// Every item of one table partition (`pk`), strongly consistent, every page read.
    async fn partition<T>(
        &self,
        pk: String,
        decode: fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let mut e = Expr::default();
            let condition = format!(
                "{} = {}",
                e.name(attr::PK),
                e.value("pk", items::s(pk.clone()))
            );
            let (names, values) = e.into_parts();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| from_sdk("Query", e))?;
            for item in out.items() {
                found.push(decode(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(found);
            }
        }
    }

    /// A conditional UpdateItem of an order: `Ok(new order)`, or `Err(old order)` when the
    /// condition failed (`None`: no such order).
    async fn update_order(
        &self,
        out_trade_no: &OutTradeNo,
        e: Expr,
        update: String,
        condition: String,
    ) -> Result<Result<Order, Option<Order>>, StoreError> {
        Ok(
            match self
                .update_returning(items::order_key(out_trade_no), e, update, condition)
                .await?
            {
                Ok(item) => Ok(items::order_from_item(&item)?),
                Err(old) => Err(old.as_ref().map(items::order_from_item).transpose()?),
            },
        )
    }

    /// A conditional UpdateItem returning the item: `Ok(new item)`, or `Err(old item)` when
    /// the condition failed (`None`: no such item).
    async fn update_returning(
        &self,
        key: Item,
        e: Expr,
        update: String,
        condition: String,
    ) -> Result<Result<Item, Option<Item>>, StoreError> {
        let (names, values) = e.into_parts();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match conditional("UpdateItem", result)? {
            Ok(out) => out
                .attributes
                .map(Ok)
                .ok_or_else(|| StoreError::Inconsistent("update returned no attributes".into())),
            Err(old) => Ok(Err(old)),
        }
    }

    fn stock_update(
        &self,
        sku_id: &SkuId,
        expr: Expr,
        update: &str,
        condition: &str,
    ) -> Result<TransactWriteItem, StoreError> {
        update_action(
            &self.table,
            items::product_key(sku_id),
            update.to_owned(),
            condition.to_owned(),
            expr,
        )
    }

    /// Sets `attribute = now` on a PENDING order (owned by `owner`, when given) whose
    /// `attribute` is absent or at least `interval` old: one conditional UpdateItem that
    /// does not bump `version`.
    async fn claim(
        &self,
        out_trade_no: &OutTradeNo,
        attribute: &'static str,
        owner: Option<&Openid>,
        now: OffsetDateTime,
        interval: time::Duration,
    ) -> Result<SyncClaim, StoreError> {
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {}",
            e.name(attribute),
            e.value("now", items::s(to_utc_string(now)))
        );
        let claimed = e.name(attribute);
        // attribute_exists: without it the update would create an item for an unknown key.
        let mut condition = format!(
            "attribute_exists({}) AND {} = {} AND (attribute_not_exists({claimed}) OR {claimed} <= {})",
            e.name(attr::PK),
            e.name(attr::STATUS),
            e.value("pending", items::s(OrderStatus::Pending.as_str())),
            e.value("cutoff", items::s(to_utc_string(now - interval))),
        );
        if let Some(owner) = owner {
            condition.push_str(&format!(
                " AND {} = {}",
                e.name(attr::OPENID),
                e.value("owner", items::s(owner.as_str()))
            ));
        }
        Ok(
            match self
                .update_order(out_trade_no, e, update, condition)
                .await?
            {
                Ok(order) => SyncClaim::Claimed(Box::new(order)),
                Err(Some(old)) => SyncClaim::Refused(Box::new(old)),
                Err(None) => SyncClaim::NotFound,
            },
        )
    }
}

impl DynamoStore {
    /// A plan that moves the refund alone (and writes its records).
    async fn move_refund(
        &self,
        refund: &Refund,
        plan: Result<Plan, LifecycleError>,
    ) -> Result<RefundMoveOutcome, StoreError> {
        let Ok(plan) = plan else {
            return Ok(RefundMoveOutcome::NotMoved(Box::new(refund.clone())));
        };
        Ok(match self.apply_records(&plan).await? {
            Ok(()) => match plan.records.into_iter().next() {
                Some(Record::Refund { refund, .. }) => RefundMoveOutcome::Moved(refund),
                _ => {
                    return Err(StoreError::Inconsistent(
                        "a refund move planned no refund".into(),
                    ));
                }
            },
            Err((0, item)) => RefundMoveOutcome::NotMoved(Box::new(refund_of(item)?)),
            // Only the refund's own anomaly follows it: present only if this very move
            // happened already, and then the refund's condition fails first.
            Err(_) => RefundMoveOutcome::NotMoved(Box::new(
                self.get_refund(&refund.out_refund_no)
                    .await?
                    .unwrap_or_else(|| refund.clone()),
            )),
        })
    }

    /// A payment's transition (PAID, or AMOUNT_MISMATCH held for the merchant), with what a
    /// loser learns from the order or the payment item it lost to.
    async fn paid<F>(
        &self,
        order: &Order,
        payment: &Payment,
        plan_for: F,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError>
    where
        F: Fn(&Order) -> Result<Plan, LifecycleError> + Send + Sync,
    {
        if payment.out_trade_no != order.out_trade_no {
            return Err(StoreError::Invalid(format!(
                "payment for {} applied to order {}",
                payment.out_trade_no, order.out_trade_no
            )));
        }
        Ok(match self.apply(order, plan_for, now).await? {
            Applied::Done(plan) => MarkPaidOutcome::Applied(Box::new(applied_order(*plan)?)),
            Applied::OrderRefused { order: None, .. } => MarkPaidOutcome::NotFound,
            Applied::OrderRefused {
                order: Some(latest),
                ..
            } => match latest.status {
                OrderStatus::Closed => MarkPaidOutcome::Closed(latest),
                OrderStatus::Pending if latest.amount_total != payment.amount => {
                    MarkPaidOutcome::AmountMismatch(latest)
                }
                OrderStatus::Pending => {
                    return Err(StoreError::Inconsistent(format!(
                        "order {} refused its payment in the state it was read",
                        order.out_trade_no
                    )));
                }
                _ => MarkPaidOutcome::AlreadyPaid(latest),
            },
            Applied::RecordRefused { index: 0, item } => {
                let item = item.ok_or_else(|| {
                    StoreError::Inconsistent("payment put refused without its item".into())
                })?;
                MarkPaidOutcome::PaymentExists {
                    out_trade_no: items::payment_out_trade_no(&item)?,
                }
            }
            // The anomaly item exists only if this very payment held the order already,
            // and then the order's condition fails first.
            Applied::RecordRefused { .. } => {
                return Err(StoreError::Inconsistent(format!(
                    "anomaly of order {} recorded without its transition",
                    order.out_trade_no
                )));
            }
        })
    }
}

/// How many times a transition is planned again on a fresher read before it gives up.
const STALE_READS: usize = 3;

#[async_trait]
impl Store for DynamoStore {
    async fn get_products(&self, sku_ids: &[SkuId]) -> Result<HashMap<SkuId, Product>, StoreError> {
        let keys = sku_ids.iter().map(items::product_key).collect();
        let mut found = HashMap::with_capacity(sku_ids.len());
        for item in self.batch_get(keys).await? {
            let p = items::product_from_item(&item)?;
            found.insert(p.sku_id.clone(), p);
        }
        Ok(found)
    }

    async fn create_order(
        &self,
        claim: &NewIdempotencyClaim,
        order: &Order,
    ) -> Result<CreateOrderOutcome, StoreError> {
        if order.status != OrderStatus::Pending {
            return Err(StoreError::Invalid("a new order must be PENDING".into()));
        }
        if order.openid != claim.scope.openid {
            return Err(StoreError::Invalid(
                "the order and its idempotency key belong to different users".into(),
            ));
        }
        if order.lines.is_empty() || order.lines.len() > MAX_LINES {
            return Err(StoreError::Invalid(format!(
                "an order needs 1..={MAX_LINES} lines (got {})",
                order.lines.len()
            )));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = order.lines.iter().find(|l| !seen.insert(&l.sku_id)) {
            return Err(StoreError::Invalid(format!(
                "sku {} on two lines",
                dup.sku_id
            )));
        }

        let mut actions = Vec::with_capacity(order.lines.len() + 2);

        // 0: the idempotency claim; an expired record (ttl passed, not yet deleted) is free.
        let mut e = Expr::default();
        let condition = format!(
            "attribute_not_exists({}) OR {} < {}",
            e.name(attr::PK),
            e.name(attr::TTL),
            e.value("now", items::n(claim.now.unix_timestamp()))
        );
        actions.push(put_action(
            &self.table,
            items::idempotency_item(&claim.record(&order.out_trade_no)),
            condition,
            e,
        )?);

        // 1: the order, never overwriting another.
        let mut e = Expr::default();
        let condition = format!("attribute_not_exists({})", e.name(attr::PK));
        actions.push(put_action(
            &self.table,
            items::order_item(order, self.shards),
            condition,
            e,
        )?);

        // 2..: stock reservations. Unlimited products (no `stock`) are counted too; a
        // sharded sku's line reserves on the shard it names and leaves the product alone.
        for line in &order.lines {
            let q = i64::from(line.quantity.get());
            if let Some(shard) = line.stock_shard {
                actions.push(self.shard_reservation(&line.sku_id, shard, q)?);
                continue;
            }
            let mut e = Expr::default();
            let update = format!(
                "ADD {} {}, {} {}",
                e.name(attr::RESERVED),
                e.value("q", items::n(q)),
                e.name(attr::AVAILABLE),
                e.value("neg_q", items::n(-q)),
            );
            let condition = format!(
                "attribute_exists({pk}) AND {active} = {yes} AND (attribute_not_exists({stock}) OR {available} >= {q})",
                pk = e.name(attr::PK),
                active = e.name(attr::ACTIVE),
                yes = e.value("yes", AttributeValue::Bool(true)),
                stock = e.name(attr::STOCK),
                available = e.name(attr::AVAILABLE),
                q = e.value("q", items::n(q)),
            );
            actions.push(self.stock_update(&line.sku_id, e, &update, &condition)?);
        }

        let reasons = match self.transact(actions).await? {
            Ok(()) => return Ok(CreateOrderOutcome::Created),
            Err(reasons) => reasons,
        };
        if let Some(r) = reasons.first().filter(|r| is_ccf(r)) {
            let item = r.item().ok_or_else(|| {
                StoreError::Inconsistent("idempotency claim refused without its record".into())
            })?;
            return Ok(CreateOrderOutcome::IdempotencyConflict(
                items::idempotency_from_item(item)?,
            ));
        }
        if let Some(r) = reasons.get(1).filter(|r| is_ccf(r)) {
            return match r.item() {
                Some(item) => Ok(CreateOrderOutcome::DuplicateOutTradeNo(Box::new(
                    items::order_from_item(item)?,
                ))),
                None => Err(StoreError::Inconsistent(
                    "order put refused without an existing order".into(),
                )),
            };
        }
        for (line, r) in order.lines.iter().zip(reasons.iter().skip(2)) {
            if !is_ccf(r) {
                continue;
            }
            let sku_id = line.sku_id.clone();
            if let Some(shard) = line.stock_shard {
                return Ok(CreateOrderOutcome::ShardShort { sku_id, shard });
            }
            return match r.item() {
                None => Ok(CreateOrderOutcome::UnknownSku { sku_id }),
                Some(item) if !items::product_from_item(item)?.active => {
                    Ok(CreateOrderOutcome::UnknownSku { sku_id })
                }
                Some(_) => Ok(CreateOrderOutcome::OutOfStock { sku_id }),
            };
        }
        Err(unexplained_cancel(&reasons))
    }

    async fn take_over_idempotency(
        &self,
        scope: &IdempotencyScope,
        request_hash: &str,
        new_owner: &str,
        new_locked_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<TakeOverOutcome, StoreError> {
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {}, {} = {}",
            e.name(attr::OWNER),
            e.value("owner", items::s(new_owner)),
            e.name(attr::LOCKED_UNTIL),
            e.value("locked_until", items::t(new_locked_until)),
        );
        let condition = format!(
            "{status} = {in_progress} AND {locked} < {now} AND {hash} = {h} AND {ttl} >= {now_secs}",
            status = e.name(attr::STATUS),
            in_progress = e.value("in_progress", items::s(items::IN_PROGRESS)),
            locked = e.name(attr::LOCKED_UNTIL),
            now = e.value("now", items::t(now)),
            hash = e.name(attr::REQUEST_HASH),
            h = e.value("hash", items::s(request_hash)),
            ttl = e.name(attr::TTL),
            now_secs = e.value("now_secs", items::n(now.unix_timestamp())),
        );
        Ok(
            match self
                .update_returning(items::idempotency_key(scope), e, update, condition)
                .await?
            {
                Ok(item) => TakeOverOutcome::Claimed(items::idempotency_from_item(&item)?),
                Err(Some(old)) => TakeOverOutcome::Conflict(items::idempotency_from_item(&old)?),
                Err(None) => TakeOverOutcome::Missing,
            },
        )
    }

    async fn complete_idempotency(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<FencedOutcome, StoreError> {
        let (e, update, condition) = completion_expression(owner, response);
        let (names, values) = e.into_parts();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(items::idempotency_key(scope)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        fenced(conditional("UpdateItem", result)?.map(|_| ()))
    }

    async fn release_idempotency(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
    ) -> Result<FencedOutcome, StoreError> {
        let mut e = Expr::default();
        // A completed record is the replay source of later retries: never released.
        let condition = format!(
            "{} = {} AND {} = {}",
            e.name(attr::OWNER),
            e.value("owner", items::s(owner)),
            e.name(attr::STATUS),
            e.value("in_progress", items::s(items::IN_PROGRESS)),
        );
        let (names, values) = e.into_parts();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(items::idempotency_key(scope)))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        fenced(conditional("DeleteItem", result)?.map(|_| ()))
    }

    async fn get_order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        self.get_item("GetItem", items::order_key(out_trade_no))
            .await?
            .as_ref()
            .map(items::order_from_item)
            .transpose()
    }

    async fn complete_order(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        prepay_request_id: Option<&str>,
        response: &StoredResponse,
    ) -> Result<CompleteOrderOutcome, StoreError> {
        let (e, order_update, order_condition) = prepay_expression(prepay_id, prepay_request_id);
        let order_action = update_action(
            &self.table,
            items::order_key(out_trade_no),
            order_update,
            order_condition,
            e,
        )?;
        let (e, idem_update, idem_condition) = completion_expression(owner, response);
        let idem_action = update_action(
            &self.table,
            items::idempotency_key(scope),
            idem_update,
            idem_condition,
            e,
        )?;
        let reasons = match self.transact(vec![order_action, idem_action]).await? {
            Ok(()) => return Ok(CompleteOrderOutcome::Completed),
            Err(reasons) => reasons,
        };
        if let Some(r) = reasons.first().filter(|r| is_ccf(r)) {
            return Ok(match r.item() {
                Some(item) => {
                    CompleteOrderOutcome::OrderNotPending(items::order_from_item(item)?.status)
                }
                None => CompleteOrderOutcome::OrderNotFound,
            });
        }
        if reasons.get(1).is_some_and(is_ccf) {
            return Ok(CompleteOrderOutcome::NotOwner);
        }
        Err(unexplained_cancel(&reasons))
    }

    async fn mark_paid(
        &self,
        order: &Order,
        payment: &Payment,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError> {
        self.paid(order, payment, |o| o.plan_paid(payment, now), now)
            .await
    }

    async fn mark_paid_unread(
        &self,
        plan: &crate::domain::PaidUnread,
    ) -> Result<PaidUnreadOutcome, StoreError> {
        self.paid_unread(plan).await
    }

    async fn hold_amount_mismatch(
        &self,
        order: &Order,
        payment: &Payment,
        anomaly: &Anomaly,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError> {
        self.paid(
            order,
            payment,
            |o| o.plan_amount_mismatch(payment, anomaly, now),
            now,
        )
        .await
    }

    async fn close(
        &self,
        order: &Order,
        cause: &str,
        now: OffsetDateTime,
    ) -> Result<CloseOutcome, StoreError> {
        Ok(
            match self.apply(order, |o| o.plan_close(cause, now), now).await? {
                Applied::Done(plan) => CloseOutcome::Closed(Box::new(applied_order(*plan)?)),
                Applied::OrderRefused {
                    order: Some(latest),
                    ..
                } if latest.status != OrderStatus::Pending => CloseOutcome::NotPending(latest),
                Applied::OrderRefused { order: None, .. } => CloseOutcome::NotFound,
                _ => {
                    return Err(StoreError::Inconsistent(format!(
                        "order {} refused CLOSED in the state it was read",
                        order.out_trade_no
                    )));
                }
            },
        )
    }

    async fn reserve_refund(
        &self,
        order: &Order,
        refund: &Refund,
    ) -> Result<RefundReserveOutcome, StoreError> {
        let mut read = order.clone();
        loop {
            let plan_for = |o: &Order| o.plan_refund_request(refund);
            let (order, reason) = match self.apply(&read, plan_for, refund.created_at).await? {
                Applied::Done(plan) => {
                    return Ok(RefundReserveOutcome::Reserved(Box::new(applied_order(
                        *plan,
                    )?)));
                }
                Applied::OrderRefused { order: None, .. } => {
                    return Ok(RefundReserveOutcome::NotFound);
                }
                Applied::OrderRefused {
                    order: Some(order),
                    reason,
                } => (order, reason),
                Applied::RecordRefused { item, .. } => {
                    return Ok(RefundReserveOutcome::Exists(Box::new(refund_of(item)?)));
                }
            };
            // A refusal is final only on the order as it is and for a refund not already
            // there (a retry of a reservation that was written): at most two reads, and
            // only on this path.
            if let Some(kept) = self.get_refund(&refund.out_refund_no).await? {
                return Ok(RefundReserveOutcome::Exists(Box::new(kept)));
            }
            if order.version == read.version
                && let Some(fresh) = self.get_order(&order.out_trade_no).await?
                && fresh.version != read.version
            {
                read = fresh;
                continue;
            }
            let reason = match reason {
                Some(reason) => reason,
                None => order.plan_refund_request(refund).err().ok_or_else(|| {
                    StoreError::Inconsistent(format!(
                        "order {} refused a reservation it has room for",
                        order.out_trade_no
                    ))
                })?,
            };
            return Ok(RefundReserveOutcome::Refused { order, reason });
        }
    }

    async fn accept_refund(
        &self,
        refund: &Refund,
        refund_id: &str,
        accepted_at: OffsetDateTime,
    ) -> Result<RefundMoveOutcome, StoreError> {
        self.move_refund(refund, refund.plan_accepted(refund_id, accepted_at))
            .await
    }

    async fn refund_abnormal(
        &self,
        refund: &Refund,
        anomaly: &Anomaly,
        notification: Option<&NotificationRecord>,
        now: OffsetDateTime,
    ) -> Result<RefundMoveOutcome, StoreError> {
        let plan = refund
            .plan_abnormal(anomaly, now)
            .map(|plan| match notification {
                Some(record) => plan.with(Record::Notification(Box::new(record.clone()))),
                None => plan,
            });
        self.move_refund(refund, plan).await
    }

    async fn settle_refund(
        &self,
        order: &Order,
        refund: &Refund,
        outcome: RefundStatus,
        success_time: Option<OffsetDateTime>,
        notification: Option<&NotificationRecord>,
        now: OffsetDateTime,
    ) -> Result<RefundSettleOutcome, StoreError> {
        let plan_for = |o: &Order| {
            let plan = o.plan_refund_outcome(refund, outcome, success_time, now)?;
            Ok(match notification {
                Some(record) => plan.with(Record::Notification(Box::new(record.clone()))),
                None => plan,
            })
        };
        let mut read = order.clone();
        loop {
            return Ok(match self.apply(&read, plan_for, now).await? {
                Applied::Done(plan) => {
                    let refund = plan.refund().cloned().ok_or_else(|| {
                        StoreError::Inconsistent("a settlement planned no refund".into())
                    })?;
                    RefundSettleOutcome::Applied {
                        order: Box::new(applied_order(*plan)?),
                        refund: Box::new(refund),
                    }
                }
                Applied::RecordRefused { index: 0, item } => {
                    RefundSettleOutcome::AlreadyMoved(Box::new(refund_of(item)?))
                }
                // Its event exists only if this very move happened, and then the refund's
                // own condition fails first.
                Applied::RecordRefused { index, .. } => {
                    return Err(StoreError::Inconsistent(format!(
                        "refund {}: record {index} of its settlement refused without it",
                        refund.out_refund_no
                    )));
                }
                Applied::OrderRefused { order: None, .. } => RefundSettleOutcome::NotFound,
                Applied::OrderRefused {
                    order: Some(order),
                    reason,
                } => {
                    // The caller's read may be older than the reservation it settles:
                    // planned again on the order as it is before refusing.
                    if order.version == read.version
                        && let Some(fresh) = self.get_order(&order.out_trade_no).await?
                        && fresh.version != read.version
                    {
                        read = fresh;
                        continue;
                    }
                    // So may the caller's read of the refund: a refund already settled is
                    // a duplicate, not a refusal.
                    if let Some(kept) = self.get_refund(&refund.out_refund_no).await?
                        && kept.status != refund.status
                    {
                        return Ok(RefundSettleOutcome::AlreadyMoved(Box::new(kept)));
                    }
                    RefundSettleOutcome::Refused {
                        order,
                        reason: reason.ok_or_else(|| {
                            StoreError::Inconsistent(
                                "an order refused a settlement planned on it".into(),
                            )
                        })?,
                    }
                }
            });
        }
    }

    async fn get_refund_and_order(
        &self,
        out_refund_no: &OutRefundNo,
        out_trade_no: &OutTradeNo,
    ) -> Result<(Option<Refund>, Option<Order>), StoreError> {
        let get = |key: Item| -> Result<TransactGetItem, StoreError> {
            Ok(TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name(&self.table)
                        .set_key(Some(key))
                        .build()
                        .map_err(build_err)?,
                )
                .build())
        };
        let out = self
            .client
            .transact_get_items()
            .transact_items(get(items::refund_key(out_refund_no))?)
            .transact_items(get(items::order_key(out_trade_no))?)
            .send()
            .await
            .map_err(|e| from_sdk("TransactGetItems", e))?;
        let found: Vec<Option<&Item>> = out
            .responses()
            .iter()
            .map(|r| r.item().filter(|i| !i.is_empty()))
            .collect();
        let refund = found
            .first()
            .copied()
            .flatten()
            .map(items::refund_from_item)
            .transpose()?;
        let order = found
            .get(1)
            .copied()
            .flatten()
            .map(items::order_from_item)
            .transpose()?;
        Ok((refund, order))
    }

    async fn get_refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
        self.get_item("GetItem", items::refund_key(out_refund_no))
            .await?
            .as_ref()
            .map(items::refund_from_item)
            .transpose()
    }

    async fn claim_sync(
        &self,
        out_trade_no: &OutTradeNo,
        owner: Option<&Openid>,
        now: OffsetDateTime,
        interval: time::Duration,
    ) -> Result<SyncClaim, StoreError> {
        self.claim(out_trade_no, attr::LAST_SYNCED_AT, owner, now, interval)
            .await
    }

    async fn claim_sweep(
        &self,
        out_trade_no: &OutTradeNo,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<SyncClaim, StoreError> {
        self.claim(out_trade_no, attr::SWEPT_AT, None, now, lease)
            .await
    }

    async fn get_payment(&self, transaction_id: &str) -> Result<Option<Payment>, StoreError> {
        self.get_item("GetItem", items::payment_key(transaction_id))
            .await?
            .as_ref()
            .map(items::payment_from_item)
            .transpose()
    }

    async fn list_anomalies(&self, out_trade_no: &OutTradeNo) -> Result<Vec<Anomaly>, StoreError> {
        self.partition(items::anomaly_pk(out_trade_no), items::anomaly_from_item)
            .await
    }

    async fn record_anomaly(
        &self,
        anomaly: &Anomaly,
        now: OffsetDateTime,
    ) -> Result<AnomalyOutcome, StoreError> {
        match self.apply_records(&anomaly.plan_recorded(now)).await? {
            Ok(()) => Ok(AnomalyOutcome::Recorded),
            Err((0, _)) => Ok(AnomalyOutcome::AlreadyRecorded),
            // Its event exists only with it: an event without its anomaly is a bug to see,
            // never an anomaly to drop.
            Err((index, _)) => Err(StoreError::Inconsistent(format!(
                "anomaly {}#{}: record {index} of its transaction refused without it",
                anomaly.kind, anomaly.cause
            ))),
        }
    }

    async fn transition(
        &self,
        read: &Order,
        plan_for: &crate::store::PlanFor<'_>,
        now: OffsetDateTime,
    ) -> Result<crate::store::TransitionOutcome, StoreError> {
        use crate::store::TransitionOutcome;
        let mut read = read.clone();
        for _ in 0..STALE_READS {
            return Ok(match self.apply(&read, plan_for, now).await? {
                Applied::Done(plan) => TransitionOutcome::Applied(Box::new(applied_order(*plan)?)),
                Applied::OrderRefused {
                    order: Some(order),
                    reason,
                } => TransitionOutcome::Refused { order, reason },
                Applied::OrderRefused { order: None, .. } => TransitionOutcome::NotFound,
                // Its records are an event keyed by the version it reaches and anomalies keyed
                // by the transaction: present only if the order moved on. An engine that checks
                // the order before a racing winner wrote it (moto) says so through the record:
                // planned again on the order as it now is.
                Applied::RecordRefused { index, .. } => {
                    match self.get_order(&read.out_trade_no).await? {
                        Some(fresh) if fresh.version != read.version => {
                            read = fresh;
                            continue;
                        }
                        _ => {
                            return Err(StoreError::Inconsistent(format!(
                                "order {}: record {index} of its transition exists without it",
                                read.out_trade_no
                            )));
                        }
                    }
                }
            });
        }
        Err(StoreError::TransactionConflict {
            op: "TransactWriteItems",
            message: format!("order {} kept changing", read.out_trade_no),
        })
    }

    async fn due_shipments(
        &self,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError> {
        self.due_in(
            items::SHIPPING_DUE_GSI2PK.to_owned(),
            now,
            limit,
            cursor,
            items::order_from_item,
        )
        .await
    }

    async fn get_access_token(
        &self,
        appid: &str,
    ) -> Result<Option<crate::store::AccessToken>, StoreError> {
        self.get_item("GetItem", items::access_token_key(appid))
            .await?
            .map(|item| items::access_token_from_item(&item))
            .transpose()
    }

    async fn put_access_token(
        &self,
        appid: &str,
        token: &crate::store::AccessToken,
        replacing: Option<&crate::config::Secret<String>>,
    ) -> Result<bool, StoreError> {
        let mut e = Expr::default();
        let mut condition = format!(
            "attribute_not_exists({}) OR {} < {}",
            e.name(attr::PK),
            e.name(attr::EXPIRES_AT),
            e.value("expires_at", items::t(token.expires_at)),
        );
        if let Some(rejected) = replacing {
            condition.push_str(&format!(
                " OR {} = {}",
                e.name(attr::ACCESS_TOKEN),
                e.value("rejected", items::s(rejected.expose().clone())),
            ));
        }
        let (names, values) = e.into_parts();
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::access_token_item(appid, token)))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        Ok(conditional("PutItem", sent)?.is_ok())
    }

    async fn record_notification(&self, record: &NotificationRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::notification_item(record)))
            .send()
            .await
            .map_err(|e| from_sdk("PutItem", e))?;
        Ok(())
    }

    async fn list_orders(
        &self,
        openid: &Openid,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError> {
        let partition = items::user_gsi1pk(openid);
        let start = index_start(cursor, attr::GSI1PK, attr::GSI1SK, &partition)?;
        let mut e = Expr::default();
        let condition = format!(
            "{} = {}",
            e.name(attr::GSI1PK),
            e.value("user", items::s(partition.clone()))
        );
        self.query_page(items::GSI1, e, &condition, false, limit, start)
            .await
    }

    async fn recent_anomalies(
        &self,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Anomaly>, StoreError> {
        let partition = items::ANOMALIES_GSI1PK.to_owned();
        let start = index_start(cursor, attr::GSI1PK, attr::GSI1SK, &partition)?;
        let mut e = Expr::default();
        let condition = format!(
            "{} = {}",
            e.name(attr::GSI1PK),
            e.value("anomalies", items::s(partition.clone()))
        );
        self.query_page_of(
            items::GSI1,
            e,
            &condition,
            false,
            limit,
            start,
            items::anomaly_from_item,
        )
        .await
    }

    async fn due_refunds(
        &self,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Refund>, StoreError> {
        self.due_in(
            items::REFUNDS_DUE_GSI2PK.to_owned(),
            now,
            limit,
            cursor,
            items::refund_from_item,
        )
        .await
    }

    async fn claim_refund_check(
        &self,
        refund: &Refund,
        now: OffsetDateTime,
        next: OffsetDateTime,
    ) -> Result<Option<Refund>, StoreError> {
        let mut e = Expr::default();
        let update = format!(
            "SET {} = {at}, {} = {at}",
            e.name(attr::NEXT_CHECK_AT),
            e.name(attr::GSI2SK),
            at = e.value("next", items::t(next)),
        );
        let condition = format!(
            "{} = {} AND {} <= {}",
            e.name(attr::STATUS),
            e.value("status", items::s(refund.status.as_str())),
            e.name(attr::NEXT_CHECK_AT),
            e.value("now", items::t(now)),
        );
        Ok(
            match self
                .update_returning(
                    items::refund_key(&refund.out_refund_no),
                    e,
                    update,
                    condition,
                )
                .await?
            {
                Ok(item) => Some(items::refund_from_item(&item)?),
                Err(_) => None,
            },
        )
    }

    async fn due_events(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<OutboxEvent>, StoreError> {
        self.outbox_due(shard, now, limit, cursor).await
    }

    async fn claim_event(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<EventClaim, StoreError> {
        self.outbox_claim(id, now, lease).await
    }

    async fn update_event(&self, from: &OutboxEvent, to: &OutboxEvent) -> Result<bool, StoreError> {
        self.outbox_update(from, to).await
    }

    async fn get_event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError> {
        self.outbox_get(id).await
    }

    async fn project_event(
        &self,
        event: &OutboxEvent,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.project(event, false, now).await
    }

    async fn complete_event(
        &self,
        event: &OutboxEvent,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.project(event, true, now).await
    }

    async fn due_pending(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError> {
        self.due_in(
            items::pending_gsi2pk(shard),
            now,
            limit,
            cursor,
            items::order_from_item,
        )
        .await
    }

    async fn payments_on(
        &self,
        date: time::Date,
        shard: u32,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Payment>, StoreError> {
        self.gsi2_page(
            items::paid_on_gsi2pk(date, shard),
            None,
            limit,
            cursor,
            items::payment_from_item,
        )
        .await
    }

    async fn refunds_on(
        &self,
        date: time::Date,
        shard: u32,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Refund>, StoreError> {
        self.gsi2_page(
            items::refunded_on_gsi2pk(date, shard),
            None,
            limit,
            cursor,
            items::refund_from_item,
        )
        .await
    }

    async fn get_payments(
        &self,
        transaction_ids: &[String],
    ) -> Result<HashMap<String, Payment>, StoreError> {
        self.payments_by_id(transaction_ids).await
    }

    async fn get_refunds(
        &self,
        out_refund_nos: &[OutRefundNo],
    ) -> Result<HashMap<OutRefundNo, Refund>, StoreError> {
        self.refunds_by_no(out_refund_nos).await
    }

    async fn get_orders(
        &self,
        out_trade_nos: &[OutTradeNo],
    ) -> Result<HashMap<OutTradeNo, Order>, StoreError> {
        self.orders_by_no(out_trade_nos).await
    }

    async fn put_bill_report(&self, report: &BillReport) -> Result<(), StoreError> {
        self.put_report(report).await
    }

    async fn stock_shards(
        &self,
        sku_id: &SkuId,
        shards: u32,
    ) -> Result<Vec<StockShard>, StoreError> {
        self.read_stock_shards(sku_id, shards).await
    }

    async fn move_stock(
        &self,
        sku_id: &SkuId,
        transfer: &StockTransfer,
    ) -> Result<bool, StoreError> {
        self.transfer_stock(sku_id, transfer).await
    }

    async fn sharded_skus(&self) -> Result<Vec<(SkuId, u32)>, StoreError> {
        self.list_sharded_skus().await
    }

    async fn get_bill_report(&self, date: time::Date) -> Result<Option<BillReport>, StoreError> {
        self.get_report(date).await
    }
}

/// The ExclusiveStartKey of a cursor over one partition of an index: the table key plus the
/// index key `index_pk`/`index_sk`, whose partition must be `partition`.
fn index_start(
    cursor: Option<&Cursor>,
    index_pk: &str,
    index_sk: &str,
    partition: &str,
) -> Result<Option<Item>, StoreError> {
    cursor
        .map(|c| {
            c.decode(
                &[attr::PK, attr::SK, index_pk, index_sk],
                index_pk,
                partition,
            )
        })
        .transpose()
}

/// The prepay_id stored and `version` bumped, only while the order is PENDING: shared by
/// `record_prepay` and `complete_order`. Returns (names/values, update, condition).
fn prepay_expression(prepay_id: &str, request_id: Option<&str>) -> (Expr, String, String) {
    let mut e = Expr::default();
    let mut sets = vec![format!(
        "{} = {}",
        e.name(attr::PREPAY_ID),
        e.value("prepay_id", items::s(prepay_id))
    )];
    if let Some(id) = request_id {
        sets.push(format!(
            "{} = {}",
            e.name(attr::PREPAY_REQUEST_ID),
            e.value("prepay_request_id", items::s(id))
        ));
    }
    let update = format!(
        "SET {} ADD {version} {one}",
        sets.join(", "),
        version = e.name(attr::VERSION),
        one = e.value("one", items::n(1)),
    );
    let condition = format!(
        "{} = {}",
        e.name(attr::STATUS),
        e.value("pending", items::s(OrderStatus::Pending.as_str()))
    );
    (e, update, condition)
}

/// An idempotency record COMPLETED with its response, only while `owner` holds it: shared by
/// `complete_idempotency` and `complete_order`. Owner only, not status: the owner repeating
/// its own completion (an SDK retry after a lost answer) must succeed, and nobody else can
/// match the token.
fn completion_expression(owner: &str, response: &StoredResponse) -> (Expr, String, String) {
    let mut e = Expr::default();
    let update = format!(
        "SET {} = {}, {} = {}, {} = {}",
        e.name(attr::STATUS),
        e.value("completed", items::s(items::COMPLETED)),
        e.name(attr::RESPONSE_STATUS),
        e.value("response_status", items::n(response.status_code)),
        e.name(attr::RESPONSE_BODY),
        e.value("response_body", items::s(response.body.clone())),
    );
    let condition = format!(
        "{} = {}",
        e.name(attr::OWNER),
        e.value("owner", items::s(owner))
    );
    (e, update, condition)
}

fn fenced(result: Result<(), Option<Item>>) -> Result<FencedOutcome, StoreError> {
    match result {
        Ok(()) => Ok(FencedOutcome::Applied),
        Err(old) => Ok(FencedOutcome::NotOwner(
            old.as_ref().map(items::idempotency_from_item).transpose()?,
        )),
    }
}

/// Pause before resubmitting a batch's unprocessed part (none before the first request).
async fn backoff(round: u32) {
    if round > 0 {
        let ms = 20u64 << round.min(6);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The refund item a refund write lost to (its condition's ALL_OLD).
fn refund_of(item: Option<Item>) -> Result<Refund, StoreError> {
    item.as_ref()
        .map(items::refund_from_item)
        .transpose()?
        .ok_or_else(|| StoreError::Inconsistent("refund write refused without its item".into()))
}

/// The order a plan the store applied left behind (every order transition plans one).
fn applied_order(plan: Plan) -> Result<Order, StoreError> {
    plan.order
        .map(|change| *change.to)
        .ok_or_else(|| StoreError::Inconsistent("a transition planned no order".into()))
}
