//! `DynamoStore`, the one implementation of `Store`, on the DynamoDB API (AWS, Dynoxide, moto
//! or any compatible endpoint), and the client construction with the time budget every call
//! must fit in (DESIGN 8: the notify endpoint answers within 5 s, so ~3 s for the store).
//!
//! Every transition is one TransactWriteItems whose first action is the conditional write on
//! the item that decides; its cancellation reason carries that item (ALL_OLD), which is all a
//! loser needs to answer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put, PutRequest, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use time::OffsetDateTime;

use super::error::{from_sdk, reason_is_transient};
use super::items::{self, Item, attr};
use super::{
    Anomaly, AnomalyOutcome, CloseOutcome, CompleteOrderOutcome, CreateOrderOutcome, Cursor,
    FencedOutcome, MarkPaidOutcome, NotificationRecord, Page, Payment, PrepayOutcome, Store,
    StoreError, SyncClaim, TakeOverOutcome,
};
use crate::domain::time::to_utc_string;
use crate::domain::{
    HistoryEntry, Openid, Order, OrderStatus, OutTradeNo, Product, SkuId, TRANSITIONS,
};
use crate::idempotency::{
    IdempotencyRecord, IdempotencyScope, NewIdempotencyClaim, StoredResponse,
};

/// Timeouts and retries of the DynamoDB client. The defaults fit the notify endpoint's budget:
/// a call gives up after `operation_timeout` in all, retries included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The whole call, all attempts and backoff included.
    pub operation_timeout: Duration,
    /// One HTTP attempt.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per call, the first included (SDK standard retry: throttling, 5xx, I/O).
    pub max_attempts: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            operation_timeout: Duration::from_millis(3_000),
            attempt_timeout: Duration::from_millis(1_200),
            connect_timeout: Duration::from_millis(1_000),
            max_attempts: 3,
        }
    }
}

impl ClientSettings {
    /// For an engine on the same machine under heavy test load, where a slow answer is not a
    /// failure: long timeouts, same retries.
    pub fn local() -> Self {
        ClientSettings {
            operation_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
        }
    }

    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .connect_timeout(self.connect_timeout)
            .build()
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts.max(1))
    }
}

/// Region and credentials named by configuration rather than found by the SDK's default
/// chain. Fields left `None` fall back to the chain (on Lambda: the function's role).
#[derive(Clone, Default)]
pub struct AwsAccess {
    pub region: Option<String>,
    /// `(access key id, secret access key, session token)`.
    pub credentials: Option<(String, String, Option<String>)>,
}

impl std::fmt::Debug for AwsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsAccess")
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A client with `settings` applied, `endpoint` overriding AWS's (`DYNAMODB_ENDPOINT`) and
/// `access` overriding the default provider chain. A region given here also spares the
/// start-up the SDK's region lookup (which may ask IMDS, a network call).
pub async fn connect(
    endpoint: Option<&str>,
    access: &AwsAccess,
    settings: &ClientSettings,
) -> Client {
    Client::new(&sdk_config(endpoint, access, settings).await)
}

/// The AWS configuration [`connect`] builds its client from, for other AWS clients that
/// follow the same rules (Secrets Manager at start-up, `crate::secrets`).
pub async fn sdk_config(
    endpoint: Option<&str>,
    access: &AwsAccess,
    settings: &ClientSettings,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::tls::roots().aws_http_client())
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &access.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((id, secret, token)) = &access.credentials {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            token.clone(),
            None,
            "configuration",
        ));
    }
    loader.load().await
}

/// A client for a local engine (Dynoxide, moto): fixed region and dummy static credentials,
/// nothing read from the environment.
pub fn connect_static(endpoint: &str, region: &str, settings: &ClientSettings) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("local", "local", None, None, "static"))
        .endpoint_url(endpoint)
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .build();
    Client::from_conf(config)
}

/// The store on one table. Cheap to clone (the SDK client is an `Arc`).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    shards: u32,
}

/// Default number of shards of the pending index (`SWEEPER_SHARDS`).
const DEFAULT_SHARDS: u32 = 4;

/// Page size bounds for listings.
const MAX_PAGE: u32 = 100;

/// BatchGetItem / BatchWriteItem limits per request.
const BATCH_GET_MAX: usize = 100;
const BATCH_WRITE_MAX: usize = 25;

/// TransactWriteItems takes 100 actions; an order uses two besides its lines.
const MAX_LINES: usize = 98;

/// Rounds of resubmitting a batch's unprocessed part before reporting throttling.
const BATCH_ROUNDS: u32 = 8;

/// A transition rebuilt from a fresher read of the order (version moved on, e.g. a prepay_id
/// was recorded) is retried this many times before giving up as a conflict.
const STALE_RETRIES: usize = 3;

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

    /// The stored `available` counter of a product (a denormalised `stock - reserved - sold`
    /// that conditions can compare); exposed so tests can check it never drifts.
    pub async fn product_available_counter(
        &self,
        sku_id: &SkuId,
    ) -> Result<Option<i64>, StoreError> {
        match self.get_item("GetItem", items::product_key(sku_id)).await? {
            Some(item) => items::product_available_attr(&item),
            None => Ok(None),
        }
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
            .map(items::order_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = out.last_evaluated_key().map(Cursor::encode).transpose()?;
        Ok(Page { items, next })
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

    /// The actions of a transition PENDING -> `t.to` of the order as last read: the order
    /// update first (conditional on PENDING and the version read), then `t.extra_actions`,
    /// then a stock move per line whose product is not in `skip`; one transaction.
    fn transition_actions(
        &self,
        order: &Order,
        t: &Transition,
        history: &HistoryEntry,
        skip: &HashSet<SkuId>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut e = Expr::default();
        let mut sets = vec![
            format!(
                "{} = {}",
                e.name(attr::STATUS),
                e.value("to", items::s(t.to.as_str()))
            ),
            format!(
                "{} = {}",
                e.name(attr::VERSION),
                e.value("new_version", items::n(order.version + 1))
            ),
            format!(
                "{h} = list_append({h}, {v})",
                h = e.name(attr::HISTORY),
                v = e.value(
                    "history",
                    AttributeValue::L(vec![items::history_value(history)])
                )
            ),
        ];
        for (name, v) in &t.set {
            sets.push(format!("{} = {}", e.name(name), e.value(name, v.clone())));
        }
        let update_expr = format!(
            "SET {} REMOVE {}, {}",
            sets.join(", "),
            e.name(attr::GSI2PK),
            e.name(attr::GSI2SK)
        );
        let mut condition = format!(
            "{} = {} AND {} = {}",
            e.name(attr::STATUS),
            e.value("pending", items::s(OrderStatus::Pending.as_str())),
            e.name(attr::VERSION),
            e.value("version", items::n(order.version)),
        );
        if let Some((name, v)) = &t.require {
            condition.push_str(&format!(
                " AND {} = {}",
                e.name(name),
                e.value(&format!("expect_{name}"), v.clone())
            ));
        }
        let mut actions = vec![update_action(
            &self.table,
            items::order_key(&order.out_trade_no),
            update_expr,
            condition,
            e,
        )?];
        actions.extend(t.extra_actions.iter().cloned());
        let to_attr = match t.stock {
            StockMove::Keep => return Ok(actions),
            StockMove::Sell => attr::SOLD,
            StockMove::Release => attr::AVAILABLE,
        };
        for line in order.lines.iter().filter(|l| !skip.contains(&l.sku_id)) {
            let q = i64::from(line.quantity.get());
            let mut e = Expr::default();
            let update = format!(
                "ADD {} {}, {} {}",
                e.name(attr::RESERVED),
                e.value("neg_q", items::n(-q)),
                e.name(to_attr),
                e.value("q", items::n(q)),
            );
            // Without it the ADD would create a product item for a deleted sku.
            let condition = format!("attribute_exists({})", e.name(attr::PK));
            actions.push(self.stock_update(&line.sku_id, e, &update, &condition)?);
        }
        Ok(actions)
    }

    /// Applies a transition PENDING -> `t.to` to `order` (the caller's read; a stale one is
    /// fine) as one conditional transaction, with the one retry-and-read-the-winner loop
    /// every transition shares: a version that moved on while the order is still PENDING is
    /// retried on the fresher order; a product deleted since the order was placed never
    /// blocks the transition (its stock move is dropped, and the history and a log line say
    /// so); anything else is reported with the item that refused.
    async fn transition(
        &self,
        order: &Order,
        t: Transition,
        now: OffsetDateTime,
    ) -> Result<TransitionResult, StoreError> {
        if order.status != OrderStatus::Pending {
            // Nothing leads back to PENDING: the caller's read already is the answer.
            return Ok(TransitionResult::OrderRefused(Some(Box::new(
                order.clone(),
            ))));
        }
        let mut current = order.clone();
        let mut missing: HashSet<SkuId> = HashSet::new();
        let extra = t.extra_actions.len();
        for _ in 0..STALE_RETRIES + order.lines.len() {
            let cause = if missing.is_empty() {
                t.cause.clone()
            } else {
                let mut skus: Vec<&str> = missing.iter().map(SkuId::as_str).collect();
                skus.sort_unstable();
                format!(
                    "{} (stock not moved for deleted product {})",
                    t.cause,
                    skus.join(", ")
                )
            };
            let next = current
                .transitioned(t.to, now, cause)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let history =
                next.history.last().cloned().ok_or_else(|| {
                    StoreError::Inconsistent("a transition left no history".into())
                })?;
            let actions = self.transition_actions(&current, &t, &history, &missing)?;
            let reasons = match self.transact(actions).await? {
                Ok(()) => {
                    for sku_id in &missing {
                        tracing::warn!(out_trade_no = %order.out_trade_no, %sku_id, to = %t.to, outcome = "product_missing", "product deleted; the transition applied without moving its stock");
                        crate::telemetry::emit_metrics(&[("ProductMissing", 1)], now);
                    }
                    return Ok(TransitionResult::Applied(Box::new(next)));
                }
                Err(reasons) => reasons,
            };
            if let Some(r) = reasons.first().filter(|r| is_ccf(r)) {
                let Some(item) = r.item() else {
                    return Ok(TransitionResult::OrderRefused(None));
                };
                let latest = items::order_from_item(item)?;
                if latest.status == OrderStatus::Pending && latest.version != current.version {
                    current = latest;
                    continue;
                }
                return Ok(TransitionResult::OrderRefused(Some(Box::new(latest))));
            }
            if let Some((index, r)) = reasons
                .iter()
                .enumerate()
                .skip(1)
                .take(extra)
                .find(|(_, r)| is_ccf(r))
            {
                return Ok(TransitionResult::ActionRefused {
                    index: index - 1,
                    item: r.item().cloned(),
                });
            }
            let lines = current
                .lines
                .iter()
                .filter(|l| !missing.contains(&l.sku_id));
            let gone: Vec<SkuId> = lines
                .zip(reasons.iter().skip(1 + extra))
                .filter(|(_, r)| is_ccf(r))
                .map(|(l, _)| l.sku_id.clone())
                .collect();
            if gone.is_empty() {
                return Err(unexplained_cancel(&reasons));
            }
            missing.extend(gone);
        }
        Err(StoreError::TransactionConflict {
            op: "TransactWriteItems",
            message: format!("order {} kept changing", order.out_trade_no),
        })
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

    /// PENDING -> PAID (`mismatch` None: the amount must be the order's) or PENDING ->
    /// AMOUNT_MISMATCH (with the anomaly item, stock left reserved), writing the payment
    /// item in the same transaction.
    async fn paid_transition(
        &self,
        order: &Order,
        payment: &Payment,
        mismatch: Option<&Anomaly>,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError> {
        if payment.out_trade_no != order.out_trade_no {
            return Err(StoreError::Invalid(format!(
                "payment for {} applied to order {}",
                payment.out_trade_no, order.out_trade_no
            )));
        }
        let mut e = Expr::default();
        let mut extra_actions = vec![put_action(
            &self.table,
            items::payment_item(payment),
            format!("attribute_not_exists({})", e.name(attr::PK)),
            e,
        )?];
        let (to, require, stock) = match mismatch {
            None => (
                OrderStatus::Paid,
                Some((attr::AMOUNT_TOTAL, items::money(payment.amount))),
                StockMove::Sell,
            ),
            Some(anomaly) => {
                let mut e = Expr::default();
                extra_actions.push(put_action(
                    &self.table,
                    items::anomaly_item(anomaly),
                    format!("attribute_not_exists({})", e.name(attr::PK)),
                    e,
                )?);
                (OrderStatus::AmountMismatch, None, StockMove::Keep)
            }
        };
        if let Some(record) = &payment.notification {
            let mut record = record.as_ref().clone();
            if mismatch.is_some() {
                record.outcome = "anomaly:amount_mismatch".into();
            }
            let record = &record;
            // Unconditional: a re-delivery overwrites the same record, never cancels.
            extra_actions.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(items::notification_item(record)))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build(),
            );
        }
        let mut set = vec![
            (
                attr::TRANSACTION_ID,
                items::s(payment.transaction_id.clone()),
            ),
            (attr::PAID_AT, items::t(payment.success_time)),
        ];
        if let Some(id) = &payment.notification_id {
            set.push((attr::NOTIFICATION_ID, items::s(id.clone())));
        }
        let t = Transition {
            to,
            cause: history_cause(OrderStatus::Pending, to).to_owned(),
            set,
            require,
            extra_actions,
            stock,
        };
        Ok(match self.transition(order, t, now).await? {
            TransitionResult::Applied(mut paid) => {
                paid.transaction_id = Some(payment.transaction_id.clone());
                paid.paid_at = Some(payment.success_time);
                paid.notification_id = payment.notification_id.clone();
                MarkPaidOutcome::Applied(paid)
            }
            TransitionResult::OrderRefused(None) => MarkPaidOutcome::NotFound,
            TransitionResult::OrderRefused(Some(latest)) => match latest.status {
                OrderStatus::Closed => MarkPaidOutcome::Closed(latest),
                OrderStatus::Pending if latest.amount_total != payment.amount => {
                    MarkPaidOutcome::AmountMismatch(latest)
                }
                OrderStatus::Pending => {
                    return Err(StoreError::Inconsistent(format!(
                        "order {} refused {to} in the state it was read",
                        order.out_trade_no
                    )));
                }
                _ => MarkPaidOutcome::AlreadyPaid(latest),
            },
            TransitionResult::ActionRefused { index: 0, item } => {
                let item = item.ok_or_else(|| {
                    StoreError::Inconsistent("payment put refused without its item".into())
                })?;
                MarkPaidOutcome::PaymentExists {
                    out_trade_no: items::payment_out_trade_no(&item)?,
                }
            }
            // The anomaly item exists only if this very payment held the order already,
            // and then the order's condition fails first.
            TransitionResult::ActionRefused { .. } => {
                return Err(StoreError::Inconsistent(format!(
                    "anomaly of order {} recorded without its transition",
                    order.out_trade_no
                )));
            }
        })
    }
}

/// What a PENDING -> `to` transition writes besides status, version, history and the
/// removal of the pending-index keys.
struct Transition {
    to: OrderStatus,
    cause: String,
    set: Vec<(&'static str, AttributeValue)>,
    /// One more attribute the order must have (mark_paid: the amount).
    require: Option<(&'static str, AttributeValue)>,
    /// Written in the same transaction, right after the order (mark_paid: the payment).
    extra_actions: Vec<TransactWriteItem>,
    stock: StockMove,
}

/// What a transition does to the reserved stock of the order's lines.
#[derive(Clone, Copy)]
enum StockMove {
    /// Stays reserved (an order held for the merchant).
    Keep,
    /// Reserved -> sold (PAID).
    Sell,
    /// Reserved -> available (CLOSED).
    Release,
}

/// How a transition ended.
enum TransitionResult {
    /// Written; the order as it now stands (less the fields `set` wrote).
    Applied(Box<Order>),
    /// The order's own condition failed: the order as it is (not PENDING, or PENDING but
    /// failing `require`), or `None` when there is no such order.
    OrderRefused(Option<Box<Order>>),
    /// The `index`th extra action's condition failed; the item that refused, if any.
    ActionRefused { index: usize, item: Option<Item> },
}

/// Placeholders for an expression: `#name` for attribute names (so reserved words like
/// `status`, `name` and `ttl` are safe) and `:key` for values.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, name: &str) -> String {
        let ph = format!("#{name}");
        self.names.insert(ph.clone(), name.to_owned());
        ph
    }

    fn value(&mut self, key: &str, v: AttributeValue) -> String {
        let ph = format!(":{key}");
        self.values.insert(ph.clone(), v);
        ph
    }

    #[allow(clippy::type_complexity)]
    fn into_parts(
        self,
    ) -> (
        Option<HashMap<String, String>>,
        Option<HashMap<String, AttributeValue>>,
    ) {
        (
            (!self.names.is_empty()).then_some(self.names),
            (!self.values.is_empty()).then_some(self.values),
        )
    }
}

fn build_err(e: aws_smithy_types::error::operation::BuildError) -> StoreError {
    StoreError::Invalid(format!("request construction: {e}"))
}

fn is_ccf(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// A cancelled transaction with no condition failure: transient if any reason says so.
fn unexplained_cancel(reasons: &[CancellationReason]) -> StoreError {
    let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
    let message = format!("cancellation reasons {codes:?}");
    if codes.iter().any(|c| reason_is_transient(c)) {
        StoreError::TransactionConflict {
            op: "TransactWriteItems",
            message,
        }
    } else {
        StoreError::Rejected {
            op: "TransactWriteItems",
            code: "TransactionCanceled".into(),
            message,
        }
    }
}

fn history_cause(from: OrderStatus, to: OrderStatus) -> &'static str {
    TRANSITIONS
        .iter()
        .find(|&&(f, t, _)| f == from && t == to)
        .map(|&(_, _, cause)| cause)
        .unwrap_or("transition")
}

/// A single-item write's error that may be "condition failed", carrying the old item when
/// the engine returned it (ReturnValuesOnConditionCheckFailure = ALL_OLD).
trait ConditionFailure {
    fn is_condition_failure(&self) -> bool;
    fn into_old_item(self) -> Option<Item>;
}

macro_rules! condition_failure {
    ($err:ident) => {
        impl ConditionFailure for $err {
            fn is_condition_failure(&self) -> bool {
                matches!(self, $err::ConditionalCheckFailedException(_))
            }
            fn into_old_item(self) -> Option<Item> {
                match self {
                    $err::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                }
            }
        }
    };
}
condition_failure!(PutItemError);
condition_failure!(UpdateItemError);
condition_failure!(DeleteItemError);

/// `Ok(Ok(output))`, `Ok(Err(old item))` when the condition failed, or a store error.
fn conditional<O, E>(
    op: &'static str,
    result: Result<O, SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>>,
) -> Result<Result<O, Option<Item>>, StoreError>
where
    E: ConditionFailure
        + aws_sdk_dynamodb::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    match result {
        Ok(o) => Ok(Ok(o)),
        Err(SdkError::ServiceError(ctx)) if ctx.err().is_condition_failure() => {
            Ok(Err(ctx.into_err().into_old_item()))
        }
        Err(e) => Err(from_sdk(op, e)),
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn put_products(&self, products: &[Product]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        if let Some(dup) = products.iter().find(|p| !seen.insert(&p.sku_id)) {
            return Err(StoreError::Invalid(format!(
                "sku {} listed twice",
                dup.sku_id
            )));
        }
        for chunk in products.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk
                .iter()
                .map(|p| {
                    PutRequest::builder()
                        .set_item(Some(items::product_item(p)))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(build_err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for round in 0..=BATCH_ROUNDS {
                if pending.is_empty() {
                    break;
                }
                if round == BATCH_ROUNDS {
                    return Err(StoreError::Throttled {
                        op: "BatchWriteItem",
                        message: format!("{} items still unprocessed", pending.len()),
                    });
                }
                backoff(round).await;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| from_sdk("BatchWriteItem", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    async fn get_product(&self, sku_id: &SkuId) -> Result<Option<Product>, StoreError> {
        self.get_item("GetItem", items::product_key(sku_id))
            .await?
            .as_ref()
            .map(items::product_from_item)
            .transpose()
    }

    async fn get_products(&self, sku_ids: &[SkuId]) -> Result<HashMap<SkuId, Product>, StoreError> {
        // BatchGetItem refuses duplicate keys.
        let mut seen = HashSet::new();
        let unique: Vec<&SkuId> = sku_ids.iter().filter(|s| seen.insert(*s)).collect();
        let mut found = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.iter().map(|s| items::product_key(s)).collect()))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?,
            );
            let mut round = 0;
            while let Some(request) = pending.take() {
                if round == BATCH_ROUNDS {
                    return Err(StoreError::Throttled {
                        op: "BatchGetItem",
                        message: "keys still unprocessed".into(),
                    });
                }
                backoff(round).await;
                round += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| from_sdk("BatchGetItem", e))?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let p = items::product_from_item(&item)?;
                    found.insert(p.sku_id.clone(), p);
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
            }
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

        // 2..: stock reservations. Unlimited products (no `stock`) are counted too.
        for line in &order.lines {
            let q = i64::from(line.quantity.get());
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

    async fn get_idempotency(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.get_item("GetItem", items::idempotency_key(scope))
            .await?
            .as_ref()
            .map(items::idempotency_from_item)
            .transpose()
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

    async fn record_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
    ) -> Result<PrepayOutcome, StoreError> {
        let (e, update, condition) = prepay_expression(prepay_id, None);
        Ok(
            match self
                .update_order(out_trade_no, e, update, condition)
                .await?
            {
                Ok(order) => PrepayOutcome::Recorded(Box::new(order)),
                Err(Some(old)) => PrepayOutcome::NotPending(Box::new(old)),
                Err(None) => PrepayOutcome::NotFound,
            },
        )
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
        self.paid_transition(order, payment, None, now).await
    }

    async fn hold_amount_mismatch(
        &self,
        order: &Order,
        payment: &Payment,
        anomaly: &Anomaly,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError> {
        self.paid_transition(order, payment, Some(anomaly), now)
            .await
    }

    async fn close(
        &self,
        order: &Order,
        cause: &str,
        now: OffsetDateTime,
    ) -> Result<CloseOutcome, StoreError> {
        let t = Transition {
            to: OrderStatus::Closed,
            cause: cause.to_owned(),
            set: Vec::new(),
            require: None,
            extra_actions: Vec::new(),
            stock: StockMove::Release,
        };
        Ok(match self.transition(order, t, now).await? {
            TransitionResult::Applied(closed) => CloseOutcome::Closed(closed),
            TransitionResult::OrderRefused(Some(latest))
                if latest.status != OrderStatus::Pending =>
            {
                CloseOutcome::NotPending(latest)
            }
            TransitionResult::OrderRefused(None) => CloseOutcome::NotFound,
            TransitionResult::OrderRefused(Some(_)) | TransitionResult::ActionRefused { .. } => {
                return Err(StoreError::Inconsistent(format!(
                    "order {} refused CLOSED in the state it was read",
                    order.out_trade_no
                )));
            }
        })
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

    async fn record_anomaly(&self, anomaly: &Anomaly) -> Result<AnomalyOutcome, StoreError> {
        let mut e = Expr::default();
        let condition = format!("attribute_not_exists({})", e.name(attr::PK));
        let (names, values) = e.into_parts();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::anomaly_item(anomaly)))
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match conditional("PutItem", result)? {
            Ok(_) => Ok(AnomalyOutcome::Recorded),
            Err(_) => Ok(AnomalyOutcome::AlreadyRecorded),
        }
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

    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError> {
        self.get_item("GetItem", items::notification_key(id))
            .await?
            .as_ref()
            .map(items::notification_from_item)
            .transpose()
    }

    async fn list_anomalies(&self, out_trade_no: &OutTradeNo) -> Result<Vec<Anomaly>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let mut e = Expr::default();
            let condition = format!(
                "{} = {}",
                e.name(attr::PK),
                e.value("pk", items::s(items::anomaly_pk(out_trade_no)))
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
                found.push(items::anomaly_from_item(item)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(found);
            }
        }
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

    async fn due_pending(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError> {
        let partition = items::pending_gsi2pk(shard);
        let start = index_start(cursor, attr::GSI2PK, attr::GSI2SK, &partition)?;
        let mut e = Expr::default();
        let condition = format!(
            "{} = {} AND {} <= {}",
            e.name(attr::GSI2PK),
            e.value("shard", items::s(partition.clone())),
            e.name(attr::GSI2SK),
            e.value("now", items::s(to_utc_string(now))),
        );
        self.query_page(items::GSI2, e, &condition, true, limit, start)
            .await
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

fn update_action(
    table: &str,
    key: Item,
    update: String,
    condition: String,
    e: Expr,
) -> Result<TransactWriteItem, StoreError> {
    let (names, values) = e.into_parts();
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(update)
        .condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(build_err)?;
    Ok(TransactWriteItem::builder().update(update).build())
}

fn put_action(
    table: &str,
    item: Item,
    condition: String,
    e: Expr,
) -> Result<TransactWriteItem, StoreError> {
    let (names, values) = e.into_parts();
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(build_err)?;
    Ok(TransactWriteItem::builder().put(put).build())
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
