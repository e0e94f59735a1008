//! The timeout-sweeper's use case: every PENDING order past `expire_at` is settled with
//! WeChat Pay's word: paid ones are applied (one code path with the callback), unpaid ones
//! closed there and then locally (stock returned), USERPAYING ones left for the next run.
//!
//! It reads the sparse pending index shard by shard (a Query, never a Scan), works on a
//! bounded number of orders at once, and stops taking work before the invocation deadline.
//! Two sweeps at once are safe: each order is claimed with the same conditional
//! `last_synced_at` write query-order uses, and every transition is conditional anyway.

use std::sync::Arc;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use tokio::{sync::Semaphore, task::JoinSet};

use super::{ApplyError, Deps, PaymentOutcome, apply_payment, query_order::query_transaction};
use crate::{
    domain::{Order, OrderStatus},
    store::{CloseOutcome, Cursor, StoreError, SyncClaim},
    wechatpay::notification::{TradeState, Transaction},
};

#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// How long past `expire_at` an order is left alone, so a payment made in the last
    /// second (and its notification) can land first.
    pub grace: Duration,
    /// Orders worked on at once.
    pub concurrency: usize,
    /// Orders read from the index per Query.
    pub page_size: u32,
    /// An order claimed by a sweep is not touched by another for this long.
    pub lease: Duration,
    /// No new order is started later than this before the deadline: one order's worst case
    /// ([`SweepSettings::worst_case_per_order`] of the clients' budgets).
    pub deadline_margin: Duration,
}

impl SweepSettings {
    /// One order's worst case: three WeChat Pay calls (query, close, query again) and four
    /// DynamoDB calls (claim, mark_paid, hold_amount_mismatch or close, record_anomaly),
    /// each using its client's whole time budget, retries included.
    pub fn worst_case_per_order(
        store_call: std::time::Duration,
        wechat_call: std::time::Duration,
    ) -> Duration {
        Duration::try_from(store_call * 4 + wechat_call * 3).unwrap_or(Duration::MAX)
    }
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            grace: Duration::seconds(30),
            concurrency: 8,
            page_size: 100,
            lease: Duration::seconds(30),
            deadline_margin: Duration::seconds(5),
        }
    }
}

/// What one sweep did; logged, returned to the platform and emitted as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Due orders taken up (claimed or found settled by someone else).
    pub scanned: u64,
    /// Found paid at WeChat Pay and applied now.
    pub paid: u64,
    /// Closed at WeChat Pay and locally, stock returned.
    pub closed: u64,
    /// Left alone: USERPAYING, settled or claimed by someone else meanwhile.
    pub skipped: u64,
    /// Could not be settled this run (WeChat Pay or the store failed); the next run retries.
    pub failed: u64,
    /// Paid at WeChat Pay but recorded as an anomaly (e.g. amount mismatch).
    pub anomalies: u64,
    /// The deadline stopped the sweep before every due order was taken up.
    pub stopped_early: bool,
}

impl SweepSummary {
    fn count(&mut self, action: &Action) {
        self.scanned += 1;
        match action {
            Action::Paid => self.paid += 1,
            Action::Closed => self.closed += 1,
            Action::Skipped(_) => self.skipped += 1,
            Action::Failed(_) => self.failed += 1,
            Action::Anomaly => self.anomalies += 1,
        }
    }

    /// The EMF counts (`SweepFailed` is what the template alarms on).
    pub fn metrics(&self) -> [(&'static str, u64); 6] {
        [
            ("SweepScanned", self.scanned),
            ("SweepPaid", self.paid),
            ("SweepClosed", self.closed),
            ("SweepSkipped", self.skipped),
            ("SweepFailed", self.failed),
            ("SweepAnomalies", self.anomalies),
        ]
    }
}

/// What became of one due order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Paid,
    Closed,
    Skipped(&'static str),
    Failed(String),
    Anomaly,
}

impl Action {
    fn label(&self) -> String {
        match self {
            Action::Paid => "paid".into(),
            Action::Closed => "closed".into(),
            Action::Skipped(why) => format!("skipped:{why}"),
            Action::Failed(_) => "failed".into(),
            Action::Anomaly => "anomaly".into(),
        }
    }
}

impl From<Settled> for Action {
    fn from(settled: Settled) -> Action {
        match settled {
            Settled::Paid(_) => Action::Paid,
            Settled::AlreadyPaid(_) => Action::Skipped("already_paid"),
            Settled::Closed(_) => Action::Closed,
            Settled::Anomaly(_) => Action::Anomaly,
            Settled::UserPaying => Action::Skipped("userpaying"),
            Settled::Elsewhere(_) => Action::Skipped("already_settled"),
            Settled::Failed(f) => Action::Failed(f.to_string()),
        }
    }
}

/// What settling an unpaid order with WeChat Pay's word came to: the one code path of the
/// sweeper, a query of an expired order, and a close on demand.
#[derive(Debug)]
pub(crate) enum Settled {
    /// WeChat Pay had it paid: applied now.
    Paid(Box<Order>),
    /// WeChat Pay had it paid, and so did we.
    AlreadyPaid(Box<Order>),
    /// Closed at WeChat Pay (or unknown there) and locally, stock returned.
    Closed(Box<Order>),
    /// Paid at WeChat Pay but recorded as an anomaly (the order, when there is one).
    Anomaly(Option<Box<Order>>),
    /// The user is paying right now: left for later.
    UserPaying,
    /// Someone else settled it first (the order as it is, when there is one).
    Elsewhere(Option<Box<Order>>),
    Failed(SettleFailure),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SettleFailure {
    #[error("WeChat Pay: {0}")]
    WeChat(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Sweeps every shard once. `deadline` is the invocation's (None: no limit).
pub async fn sweep_expired(
    deps: &Deps,
    settings: &SweepSettings,
    shards: u32,
    deadline: Option<OffsetDateTime>,
) -> SweepSummary {
    let mut summary = SweepSummary::default();
    let limit = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks: JoinSet<Action> = JoinSet::new();
    'shards: for shard in 0..shards.max(1) {
        let mut cursor: Option<Cursor> = None;
        loop {
            if !before_deadline(deps.now(), deadline, settings.deadline_margin) {
                summary.stopped_early = true;
                break 'shards;
            }
            let due_before = deps.now() - settings.grace;
            let page = match deps
                .store
                .due_pending(shard, due_before, settings.page_size, cursor.as_ref())
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(shard, error = %e, outcome = "failed", "pending index query failed; shard left for the next run");
                    summary.failed += 1;
                    continue 'shards;
                }
            };
            for order in page.items {
                // Wait for a slot first, so the deadline is checked when the work would start.
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    break 'shards;
                };
                if !before_deadline(deps.now(), deadline, settings.deadline_margin) {
                    summary.stopped_early = true;
                    break 'shards;
                }
                let deps = deps.clone();
                let lease = settings.lease;
                tasks.spawn(async move {
                    let action = sweep_one(&deps, order, lease).await;
                    drop(permit);
                    action
                });
                while let Some(done) = tasks.try_join_next() {
                    summary.count(&joined(done));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        summary.count(&joined(done));
    }
    summary
}

fn joined(result: Result<Action, tokio::task::JoinError>) -> Action {
    result.unwrap_or_else(|e| Action::Failed(format!("task failed: {e}")))
}

/// Whether `now` leaves time to start work that needs `margin` before `deadline`.
fn before_deadline(
    now: OffsetDateTime,
    deadline: Option<OffsetDateTime>,
    margin: Duration,
) -> bool {
    deadline.is_none_or(|d| now + margin < d)
}

async fn sweep_one(deps: &Deps, due: Order, lease: Duration) -> Action {
    let out_trade_no = due.out_trade_no.clone();
    let action = match deps
        .store
        .claim_sweep(&out_trade_no, deps.now(), lease)
        .await
    {
        Ok(SyncClaim::Claimed(order)) => settle_unpaid(deps, *order, "expired").await.into(),
        Ok(SyncClaim::Refused(order)) if order.status == OrderStatus::Pending => {
            Action::Skipped("claimed_elsewhere")
        }
        Ok(SyncClaim::Refused(_)) | Ok(SyncClaim::NotFound) => Action::Skipped("already_settled"),
        Err(e) => Action::Failed(format!("claim: {e}")),
    };
    match &action {
        Action::Failed(why) => {
            tracing::warn!(%out_trade_no, error = %why, outcome = %action.label(), "expired order not settled")
        }
        _ => tracing::info!(%out_trade_no, outcome = %action.label(), "expired order swept"),
    }
    action
}

/// Settles a PENDING order that must not stay open (expired, or given up by its owner) with
/// WeChat Pay's word: paid -> applied; unpaid -> closed there, then locally.
/// `why` begins the history entry's cause ("expired", "closed by its owner").
pub(crate) async fn settle_unpaid(deps: &Deps, order: Order, why: &str) -> Settled {
    let txn = match query_transaction(deps, &order).await {
        Ok(Some(txn)) => txn,
        // WeChat Pay never saw the order (its prepay failed): nobody can pay it.
        Ok(None) => return close_locally(deps, &order, why, "unknown to WeChat Pay").await,
        Err(e) => return Settled::Failed(SettleFailure::WeChat(format!("query: {e}"))),
    };
    match &txn.trade_state {
        // The money arrived (REFUND: a refund was started, so it had).
        TradeState::Success | TradeState::Refund => apply(deps, order, &txn).await,
        TradeState::Closed => close_locally(deps, &order, why, "closed at WeChat Pay").await,
        TradeState::UserPaying => Settled::UserPaying,
        // Unpaid, or a state this code does not know: closing at WeChat Pay decides (it
        // refuses to close a paid order, and the query after a refusal says what it is).
        TradeState::NotPay | TradeState::PayError | TradeState::Revoked | TradeState::Other(_) => {
            close(deps, order, why).await
        }
    }
}

/// Closes at WeChat Pay first (so nobody can pay any more), then locally. A refused or
/// ambiguous close is followed by a query, and that answer decides.
async fn close(deps: &Deps, order: Order, why: &str) -> Settled {
    let close_error = match deps.gateway.close(order.out_trade_no.as_str()).await {
        Ok(()) => return close_locally(deps, &order, why, "closed at WeChat Pay").await,
        Err(e) => e,
    };
    tracing::info!(out_trade_no = %order.out_trade_no, error = %close_error, "close refused or ambiguous; querying again");
    match query_transaction(deps, &order).await {
        Ok(None) => close_locally(deps, &order, why, "unknown to WeChat Pay").await,
        Ok(Some(txn)) if txn.trade_state.is_paid() => apply(deps, order, &txn).await,
        Ok(Some(txn)) if txn.trade_state == TradeState::Closed => {
            close_locally(deps, &order, why, "closed at WeChat Pay").await
        }
        Ok(Some(txn)) if txn.trade_state == TradeState::UserPaying => Settled::UserPaying,
        Ok(Some(txn)) => Settled::Failed(SettleFailure::WeChat(format!(
            "close failed ({close_error}) and the order is still {}",
            txn.trade_state
        ))),
        Err(e) => Settled::Failed(SettleFailure::WeChat(format!(
            "close failed ({close_error}), then query: {e}"
        ))),
    }
}

async fn apply(deps: &Deps, order: Order, txn: &Transaction) -> Settled {
    // Query answers carry no notification id.
    match apply_payment(deps, Some(order), txn, None).await {
        Ok(PaymentOutcome::Applied(o)) => Settled::Paid(o),
        Ok(PaymentOutcome::Duplicate(o)) => Settled::AlreadyPaid(o),
        Ok(PaymentOutcome::Anomaly { order, .. }) => Settled::Anomaly(order),
        Err(ApplyError::Store(e)) => Settled::Failed(SettleFailure::Store(e)),
        Err(ApplyError::Malformed(m)) => Settled::Failed(SettleFailure::WeChat(format!(
            "WeChat Pay's transaction: {m}"
        ))),
    }
}

async fn close_locally(deps: &Deps, order: &Order, why: &str, how: &str) -> Settled {
    match deps
        .store
        .close(order, &format!("{why}; {how}"), deps.now())
        .await
    {
        Ok(CloseOutcome::Closed(o)) => Settled::Closed(o),
        Ok(CloseOutcome::NotPending(o)) => Settled::Elsewhere(Some(o)),
        Ok(CloseOutcome::NotFound) => Settled::Elsewhere(None),
        Err(e) => Settled::Failed(SettleFailure::Store(e)),
    }
}
