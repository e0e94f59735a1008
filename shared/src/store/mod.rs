//! The `Store` port: every read and state change the use cases make on the system of record,
//! in domain terms, and its one implementation on the DynamoDB API (`DynamoStore`).
//!
//! Each state change is one conditional write or one TransactWriteItems. A writer that loses
//! its condition gets a typed outcome carrying the winner's item, taken from the failed
//! condition's ALL_OLD return values, never from an extra read (DESIGN 5).

use std::collections::HashMap;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use crate::domain::{
    Anomaly, AnomalyKind, DeliveryStatus, NOTIFICATION_RETENTION, NotificationRecord, OutboxEvent,
    Payment,
};
use crate::domain::{
    BillReport, Openid, Order, OutRefundNo, OutTradeNo, Product, Refund, SkuId, StockShard,
    StockTransfer,
};
use crate::idempotency::{
    IdempotencyRecord, IdempotencyScope, NewIdempotencyClaim, StoredResponse,
};

mod calls;
mod cursor;
mod dynamo;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;

pub mod table;

pub use calls::{CallCounter, CallCounts, with_interceptor};
pub use cursor::Cursor;
pub use dynamo::{AwsAccess, ClientSettings, DynamoStore, connect, connect_static, sdk_config};
pub use error::StoreError;
pub use table::{TABLE_DEFINITION_JSON, TABLE_NAME_PLACEHOLDER, TableDefinition, create_table};

/// One page of a listing; `next` is set when more may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderOutcome {
    /// The key is claimed (IN_PROGRESS, naming this order), the order is PENDING and every
    /// line's stock is reserved.
    Created,
    /// The key is held by a live record (returned as it is): decide with
    /// [`crate::idempotency::decide`]. Nothing was written.
    IdempotencyConflict(IdempotencyRecord),
    /// Not enough available stock for this sku. Nothing was written.
    OutOfStock { sku_id: SkuId },
    /// The stock shard this sharded sku's line named has not enough available (or is not
    /// there): another shard may. Nothing was written.
    ShardShort { sku_id: SkuId, shard: u32 },
    /// This sku is not in the catalog or not active. Nothing was written.
    UnknownSku { sku_id: SkuId },
    /// An order with this out_trade_no already exists (a reused number). Nothing was written.
    DuplicateOutTradeNo(Box<Order>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOverOutcome {
    /// The record is now ours (new owner and lock); resume its out_trade_no.
    Claimed(IdempotencyRecord),
    /// The record was not takeable (lock live, completed, other hash, past ttl): as it is.
    Conflict(IdempotencyRecord),
    /// No record under this key (deleted by release or TTL): claim anew.
    Missing,
}

/// Outcome of a write fenced by the owner token (complete, release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedOutcome {
    Applied,
    /// Someone else owns the record now, or it is in a state the write may not touch; the
    /// record as it is, if there is one.
    NotOwner(Option<IdempotencyRecord>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepayOutcome {
    Recorded(Box<Order>),
    NotPending(Box<Order>),
    NotFound,
}

/// Outcome of recording the prepay_id and completing the idempotency record together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOrderOutcome {
    /// prepay_id stored on the PENDING order and the record COMPLETED with the response.
    Completed,
    /// Someone else owns the record now (it was taken over); nothing was written.
    NotOwner,
    /// The order left PENDING before its prepay_id could be recorded; nothing was written.
    OrderNotPending(crate::domain::OrderStatus),
    OrderNotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkPaidOutcome {
    /// PENDING -> PAID, payment item written, reserved stock moved to sold (or PENDING ->
    /// AMOUNT_MISMATCH by `hold_amount_mismatch`).
    Applied(Box<Order>),
    /// Already paid (PAID or AMOUNT_MISMATCH): same transaction_id is a duplicate, another
    /// one a double payment.
    AlreadyPaid(Box<Order>),
    /// The order was CLOSED first: paid after close.
    Closed(Box<Order>),
    /// PENDING, but the payment's amount differs from the order's amount_total.
    AmountMismatch(Box<Order>),
    /// The transaction_id is already recorded for this out_trade_no (another order when it
    /// differs from ours).
    PaymentExists {
        out_trade_no: OutTradeNo,
    },
    NotFound,
}

/// How a PAID written without reading the order ([`crate::domain::PaidUnread`]) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaidUnreadOutcome {
    /// PENDING -> PAID, with its payment item, notification and `order.paid` (to complete).
    Applied,
    /// The order was not PENDING with the payment's amount and currency: as it is, or
    /// `None` when there is no such order. Nothing was written.
    OrderRefused(Option<Box<Order>>),
    /// The transaction_id is recorded already, for this out_trade_no or another one, while
    /// the order was still payable. Nothing was written.
    PaymentExists { out_trade_no: OutTradeNo },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// PENDING -> CLOSED, reserved stock returned.
    Closed(Box<Order>),
    NotPending(Box<Order>),
    NotFound,
}

/// Outcome of reserving a refund on its order (`Store::reserve_refund`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundReserveOutcome {
    /// The refund item is written REQUESTED and its amount reserved on the order: the order
    /// as this reservation left it (concurrent reservations may have added theirs).
    Reserved(Box<Order>),
    /// The order refused it as it stands (not refundable, or no room left); the domain's
    /// reason. Nothing was written.
    Refused {
        order: Box<Order>,
        reason: crate::domain::LifecycleError,
    },
    /// A refund with this out_refund_no exists (as it is). Nothing was written.
    Exists(Box<Refund>),
    NotFound,
}

/// Outcome of a move of the refund alone (`Store::accept_refund`, `Store::refund_abnormal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundMoveOutcome {
    /// Moved (REQUESTED -> PROCESSING with its refund_id, or -> ABNORMAL with its anomaly).
    Moved(Box<Refund>),
    /// The refund was no longer in the status it was read in (or the move is not one its
    /// status allows): as it is.
    NotMoved(Box<Refund>),
}

/// Outcome of settling a refund with WeChat Pay's word (`Store::settle_refund`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundSettleOutcome {
    /// The refund and its order moved together: both as they now stand.
    Applied {
        order: Box<Order>,
        refund: Box<Refund>,
    },
    /// The refund had already left the status it was read in (another notification, a query
    /// or the sweeper settled it): as it is. Nothing was written.
    AlreadyMoved(Box<Refund>),
    /// The domain refused the settlement on the order as it stands. Nothing was written.
    Refused {
        order: Box<Order>,
        reason: crate::domain::LifecycleError,
    },
    NotFound,
}

/// Outcome of claiming an event's next delivery attempt (`Store::claim_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventClaim {
    /// Ours until `lease_until`: the event with its attempt counted.
    Claimed(Box<OutboxEvent>),
    /// Not due, delivered, dead, or leased by another dispatcher: as it is (`None`: no such
    /// event). Nothing was written.
    NotClaimed(Option<Box<OutboxEvent>>),
}

/// Outcome of claiming the right to ask WeChat Pay about an order (`Store::claim_sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncClaim {
    /// `last_synced_at` is now ours: the order as it stands after the claim (PENDING).
    Claimed(Box<Order>),
    /// Not claimed: the order is not PENDING, belongs to someone else, or was claimed less
    /// than the interval ago. The order as it stands; nothing was written.
    Refused(Box<Order>),
    NotFound,
}

/// A transition the domain plans on the order as it stands (`Store::transition`).
pub type PlanFor<'a> =
    dyn Fn(&Order) -> Result<crate::domain::Plan, crate::domain::LifecycleError> + Send + Sync + 'a;

/// Outcome of [`Store::transition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// Written: the order as it now stands.
    Applied(Box<Order>),
    /// The domain refused to plan on the order as it stands (its reason), or the order
    /// failed a condition of the plan. Nothing was written.
    Refused {
        order: Box<Order>,
        reason: Option<crate::domain::LifecycleError>,
    },
    NotFound,
}

/// WeChat's server-API access token (`stable_token`), shared by every instance through the
/// table (DESIGN 12). `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: crate::config::Secret<String>,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyOutcome {
    Recorded,
    /// The same anomaly (kind and cause) was already there: a re-delivered notification.
    AlreadyRecorded,
}

/// The system of record, in domain terms. Implementations must make every state change atomic
/// and conditional; see each outcome type for what a losing writer learns.
#[async_trait]
pub trait Store: Send + Sync {
    /// The catalog entries among `sku_ids` that exist (missing ones are simply absent).
    async fn get_products(&self, sku_ids: &[SkuId]) -> Result<HashMap<SkuId, Product>, StoreError>;

    /// Claims the key, creates the PENDING order and reserves stock, all or nothing.
    async fn create_order(
        &self,
        claim: &NewIdempotencyClaim,
        order: &Order,
    ) -> Result<CreateOrderOutcome, StoreError>;

    /// Takes over an IN_PROGRESS record whose lock expired, if the request hash matches.
    async fn take_over_idempotency(
        &self,
        scope: &IdempotencyScope,
        request_hash: &str,
        new_owner: &str,
        new_locked_until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<TakeOverOutcome, StoreError>;
    /// IN_PROGRESS -> COMPLETED with the response, only while `owner` holds the record.
    async fn complete_idempotency(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<FencedOutcome, StoreError>;
    /// Deletes an IN_PROGRESS record, only while `owner` holds it.
    async fn release_idempotency(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
    ) -> Result<FencedOutcome, StoreError>;

    async fn get_order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError>;
    /// place-order's last step, one transaction: stores the prepay_id and the `Request-ID`
    /// of WeChat Pay's answer (only while PENDING) and completes the idempotency record with
    /// the response (only while `owner` holds it).
    async fn complete_order(
        &self,
        scope: &IdempotencyScope,
        owner: &str,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        prepay_request_id: Option<&str>,
        response: &StoredResponse,
    ) -> Result<CompleteOrderOutcome, StoreError>;
    /// PENDING -> PAID with its payment item and stock, in one transaction. `order` is the
    /// caller's read (its lines say which stock to move); a stale read is fine.
    async fn mark_paid(
        &self,
        order: &Order,
        payment: &Payment,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError>;
    /// PENDING -> PAID as `plan` says, without a read of the order: one TransactWriteItems,
    /// conditional on the order's status, amount and currency (DESIGN 5: a notification's
    /// first delivery costs one call, a duplicate one).
    async fn mark_paid_unread(
        &self,
        plan: &crate::domain::PaidUnread,
    ) -> Result<PaidUnreadOutcome, StoreError>;
    /// PENDING -> AMOUNT_MISMATCH: a payment WeChat Pay collected whose amount is not the
    /// order's. One transaction writes the payment item and `anomaly` and leaves the stock
    /// reserved, so the order leaves the sweeper's index and waits for the merchant.
    async fn hold_amount_mismatch(
        &self,
        order: &Order,
        payment: &Payment,
        anomaly: &Anomaly,
        now: OffsetDateTime,
    ) -> Result<MarkPaidOutcome, StoreError>;
    /// PENDING -> CLOSED, returning reserved stock, in one transaction.
    async fn close(
        &self,
        order: &Order,
        cause: &str,
        now: OffsetDateTime,
    ) -> Result<CloseOutcome, StoreError>;

    /// Sets `last_synced_at = now` on a PENDING order not claimed since `now - interval`
    /// (and owned by `owner`, when given), so concurrent callers ask WeChat Pay about one
    /// order at most once per interval. One conditional write; `version` is not bumped, so a
    /// transition prepared from an earlier read still applies.
    /// Creates the REQUESTED refund and reserves its amount on the order, in one
    /// transaction, only while the order is refundable and its refunds (refunded + reserved
    /// + this one) stay within what was paid. Concurrent reservations never make each other
    /// retry.
    async fn reserve_refund(
        &self,
        order: &Order,
        refund: &Refund,
    ) -> Result<RefundReserveOutcome, StoreError>;
    /// REQUESTED -> PROCESSING with WeChat Pay's refund_id (the refund item alone), at
    /// `accepted_at`: when WeChat Pay accepted it (its `submitted_at`, the bill's day).
    async fn accept_refund(
        &self,
        refund: &Refund,
        refund_id: &str,
        accepted_at: OffsetDateTime,
    ) -> Result<RefundMoveOutcome, StoreError>;
    /// -> ABNORMAL with its `REFUND_ABNORMAL` anomaly, the amount still reserved; the
    /// notification that brought it, if any, kept in the same transaction.
    async fn refund_abnormal(
        &self,
        refund: &Refund,
        anomaly: &Anomaly,
        notification: Option<&NotificationRecord>,
        now: OffsetDateTime,
    ) -> Result<RefundMoveOutcome, StoreError>;
    /// WeChat Pay's final word on a refund (`outcome` SUCCESS, CLOSED, or FAILED for one it
    /// certainly never created), applied once with its order: totals, status, restock.
    /// `refund` is the caller's read; a refund that moved since is `AlreadyMoved`. The
    /// notification that brought it, if any, is kept in the same transaction.
    async fn settle_refund(
        &self,
        order: &Order,
        refund: &Refund,
        outcome: crate::domain::RefundStatus,
        success_time: Option<OffsetDateTime>,
        notification: Option<&NotificationRecord>,
        now: OffsetDateTime,
    ) -> Result<RefundSettleOutcome, StoreError>;
    /// A refund and the order a notification names, in one consistent read (a refund
    /// notification's only read): either may be absent.
    async fn get_refund_and_order(
        &self,
        out_refund_no: &crate::domain::OutRefundNo,
        out_trade_no: &OutTradeNo,
    ) -> Result<(Option<Refund>, Option<Order>), StoreError>;
    async fn get_refund(
        &self,
        out_refund_no: &crate::domain::OutRefundNo,
    ) -> Result<Option<Refund>, StoreError>;

    async fn claim_sync(
        &self,
        out_trade_no: &OutTradeNo,
        owner: Option<&Openid>,
        now: OffsetDateTime,
        interval: time::Duration,
    ) -> Result<SyncClaim, StoreError>;

    /// The sweeper's (and any closer's) lease on an expired PENDING order: like
    /// `claim_sync`, but on its own attribute (`swept_at`), so a reader's sync claim never
    /// keeps a closer out (issue 12.1) while two sweeps still split the work.
    async fn claim_sweep(
        &self,
        out_trade_no: &OutTradeNo,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<SyncClaim, StoreError>;

    /// One transition `plan_for` plans on `read` (planned again on the order a lost race
    /// found), as one conditional transaction: shipping, an upload's result, settlement.
    async fn transition(
        &self,
        read: &Order,
        plan_for: &PlanFor<'_>,
        now: OffsetDateTime,
    ) -> Result<TransitionOutcome, StoreError>;
    /// Shipped orders whose upload to WeChat is due again at `now`, soonest first.
    async fn due_shipments(
        &self,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError>;
    /// The shared access token of `appid`, if one is stored (maybe expired).
    async fn get_access_token(&self, appid: &str) -> Result<Option<AccessToken>, StoreError>;
    /// Stores `token` unless the one stored lasts at least as long, or, with `replacing`,
    /// when the one stored is that token (WeChat rejected it); whether it was written.
    async fn put_access_token(
        &self,
        appid: &str,
        token: &AccessToken,
        replacing: Option<&crate::config::Secret<String>>,
    ) -> Result<bool, StoreError>;

    /// The payment item of a WeChat Pay transaction (merchant-api's lookup by transaction_id).
    async fn get_payment(&self, transaction_id: &str) -> Result<Option<Payment>, StoreError>;
    /// An order's anomalies (merchant-api's whole order).
    async fn list_anomalies(&self, out_trade_no: &OutTradeNo) -> Result<Vec<Anomaly>, StoreError>;
    /// Keeps an anomaly once per kind and cause, with its `anomaly.recorded` event, in one
    /// transaction.
    async fn record_anomaly(
        &self,
        anomaly: &Anomaly,
        now: OffsetDateTime,
    ) -> Result<AnomalyOutcome, StoreError>;
    /// Keeps a verified notification (overwriting an earlier delivery of the same id).
    async fn record_notification(&self, record: &NotificationRecord) -> Result<(), StoreError>;

    /// A user's orders, newest first.
    async fn list_orders(
        &self,
        openid: &Openid,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError>;
    /// Every anomaly, newest first (merchant-api's list).
    async fn recent_anomalies(
        &self,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Anomaly>, StoreError>;
    /// Refunds WeChat Pay may still change whose `next_check_at` has come, soonest first.
    async fn due_refunds(
        &self,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Refund>, StoreError>;
    /// A sweep's lease on a due refund: `next_check_at = next`, only if the refund is still
    /// in its status and due at `now` (two sweeps never check one refund at once). The
    /// refund as claimed, or `None` when someone else took it or it moved.
    async fn claim_refund_check(
        &self,
        refund: &Refund,
        now: OffsetDateTime,
        next: OffsetDateTime,
    ) -> Result<Option<Refund>, StoreError>;
    /// Undelivered events of one outbox shard whose `next_attempt_at` has come, soonest
    /// first (`shard` < the store's shard count).
    async fn due_events(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<OutboxEvent>, StoreError>;
    /// Claims an event's next attempt: `attempts + 1` and a lease until `now + lease`, only if
    /// it is PENDING, due at `now` and not leased. One conditional UpdateItem returning the
    /// event, so a stream record's id is all a dispatcher needs.
    async fn claim_event(
        &self,
        id: &str,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<EventClaim, StoreError>;
    /// Writes `to` (an attempt's result, a redelivery) over `from`, only if the event's
    /// status and attempts are still `from`'s: `false` when someone else moved it first
    /// (another claim, a redelivery). Nothing was written then.
    async fn update_event(&self, from: &OutboxEvent, to: &OutboxEvent) -> Result<bool, StoreError>;
    async fn get_event(&self, id: &str) -> Result<Option<OutboxEvent>, StoreError>;
    /// Moves the event's counters (`OutboxEvent::stock`) once, with its `projected_at`, in
    /// one transaction: `true` when this call moved them, `false` when they were already
    /// moved (or the event is gone).
    async fn project_event(
        &self,
        event: &OutboxEvent,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// An `order.paid` completed from its order ([`OutboxEvent::completed`]): its body and
    /// counters written and its `order_to_read` mark removed in the transaction that
    /// projects it, as `project_event` (`false`: done already).
    async fn complete_event(
        &self,
        event: &OutboxEvent,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// PENDING orders of one shard of the pending index with expire_at <= now, oldest first.
    async fn due_pending(
        &self,
        shard: u32,
        now: OffsetDateTime,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Order>, StoreError>;

    /// The payments (payment items) whose `success_time` falls on the Beijing date `date`,
    /// in one of its [`crate::domain::DAY_SHARDS`] shards, by success time, a page at a time:
    /// what the bill reconciliation holds the day's bill to (DESIGN 11).
    async fn payments_on(
        &self,
        date: time::Date,
        shard: u32,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Payment>, StoreError>;
    /// The SUCCESS refunds WeChat Pay accepted on the Beijing date `date` (the day its bill
    /// lists them), in one shard, by success time, a page at a time.
    async fn refunds_on(
        &self,
        date: time::Date,
        shard: u32,
        limit: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page<Refund>, StoreError>;
    /// The payment items of these transactions that exist (batched reads).
    async fn get_payments(
        &self,
        transaction_ids: &[String],
    ) -> Result<HashMap<String, Payment>, StoreError>;
    /// The orders of these numbers that exist (batched reads): what the reconciliation holds
    /// a bill's payment rows to, besides their payment items.
    async fn get_orders(
        &self,
        out_trade_nos: &[OutTradeNo],
    ) -> Result<HashMap<OutTradeNo, Order>, StoreError>;
    /// The refunds of these numbers that exist (batched reads).
    async fn get_refunds(
        &self,
        out_refund_nos: &[OutRefundNo],
    ) -> Result<HashMap<OutRefundNo, Refund>, StoreError>;
    /// Keeps a date's reconciliation report, replacing an earlier run's.
    async fn put_bill_report(&self, report: &BillReport) -> Result<(), StoreError>;
    async fn get_bill_report(&self, date: time::Date) -> Result<Option<BillReport>, StoreError>;

    /// The stock shards `0..shards` of a sharded sku, strongly consistent, in shard order:
    /// what an order checks before saying OUT_OF_STOCK, the rebalancer evens out, and the
    /// catalog sums for display.
    async fn stock_shards(
        &self,
        sku_id: &SkuId,
        shards: u32,
    ) -> Result<Vec<StockShard>, StoreError>;
    /// Moves stock between two shards of a sku in one transaction, only if the giver still
    /// has it: `false` when it did not (nothing moved).
    async fn move_stock(
        &self,
        sku_id: &SkuId,
        transfer: &StockTransfer,
    ) -> Result<bool, StoreError>;
    /// Every sku whose stock is sharded, with its shard count.
    async fn sharded_skus(&self) -> Result<Vec<(SkuId, u32)>, StoreError>;
}

/// What tests and the sandbox need besides the port: seeding the catalog and reading items
/// directly. Behind the `test-support` feature, so the function binaries never carry it.
#[cfg(feature = "test-support")]
#[async_trait]
pub trait StoreSupport: Store {
    /// Seeds or replaces catalog entries (whole items, counters included). A sharded sku's
    /// stock is staged once: its shard items (its `stock` split evenly) are created when
    /// absent and never overwritten, so a re-seed never loses a reservation.
    async fn put_products(&self, products: &[Product]) -> Result<(), StoreError>;
    /// Seeds paid orders (as given: PAID as `Order::plan_paid` leaves them) with their
    /// payment items (day index included), no event and no stock moved: for benchmarks of
    /// what reads a day's payments and their orders in bulk.
    async fn put_paid_orders(&self, paid: &[(Order, Payment)]) -> Result<(), StoreError>;
    async fn get_product(&self, sku_id: &SkuId) -> Result<Option<Product>, StoreError>;
    async fn get_idempotency(
        &self,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Stores the JSAPI prepay_id, only while the order is PENDING.
    async fn record_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
    ) -> Result<PrepayOutcome, StoreError>;
    async fn get_notification(&self, id: &str) -> Result<Option<NotificationRecord>, StoreError>;
}
