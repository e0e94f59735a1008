//! The timeout-sweeper's use case: every PENDING order past `expire_at` is settled with
//! WeChat Pay's word: paid ones are applied (one code path with the callback), unpaid ones
//! closed there and then locally (stock returned), USERPAYING ones left for the next run.
//!
//! It reads the sparse pending index shard by shard (a Query, never a Scan), works on a
//! bounded number of orders at once, and stops taking work before the invocation deadline.
//! Two sweeps at once are safe: each order is leased with a conditional write on its own
//! attribute (`swept_at`, apart from readers' `last_synced_at`, so polling never keeps a
//! sweep out), and every transition is conditional anyway. Settling itself is `settle`'s.

use std::sync::Arc;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use tokio::{sync::Semaphore, task::JoinSet};

use super::Deps;
use super::settle::{Settled, settle_unpaid};
use crate::{
    domain::{Order, OrderStatus},
    store::{Cursor, SyncClaim},
    telemetry::Metric,
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
    pub fn metrics(&self) -> [(Metric, u64); 6] {
        [
            (Metric::SweepScanned, self.scanned),
            (Metric::SweepPaid, self.paid),
            (Metric::SweepClosed, self.closed),
            (Metric::SweepSkipped, self.skipped),
            (Metric::SweepFailed, self.failed),
            (Metric::SweepAnomalies, self.anomalies),
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
