//! The timeout-sweeper at the edge: one scheduled run of `service::sweep_expired`, its summary
//! logged (one line), emitted as CloudWatch EMF counts (the template alarms on `SweepFailed`)
//! and returned to the platform as the invocation's result.

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    runtime::{ScheduledJob, Trigger},
    service::{
        Deps, ShippingPorts, SweepSettings, rebalance_stock, sweep_expired, sweep_refunds,
        sweep_uploads,
    },
};

pub struct SweeperJob {
    pub deps: Deps,
    /// Shipments whose upload to WeChat is due again (DESIGN 12).
    pub shipping: ShippingPorts,
    pub settings: SweepSettings,
    /// `SWEEPER_SHARDS`: the pending index's shard count.
    pub shards: u32,
}

#[async_trait]
impl ScheduledJob for SweeperJob {
    async fn run(&self, trigger: Trigger, deadline: Option<OffsetDateTime>) -> Value {
        let started = self.deps.now();
        let summary = sweep_expired(&self.deps, &self.settings, self.shards, deadline).await;
        // Refunds after orders, inside the same deadline margin.
        let refunds_deadline = deadline.map(|d| d - self.settings.deadline_margin);
        let refunds = sweep_refunds(&self.deps, refunds_deadline).await;
        // Then the stock shards of flash-sale skus (issue 17), within the same margin.
        let stock = rebalance_stock(&self.deps, refunds_deadline).await;
        // Shipments last: a flash sale's stock moves come first.
        let uploads = sweep_uploads(&self.deps, &self.shipping, refunds_deadline).await;
        let elapsed_ms = (self.deps.now() - started).whole_milliseconds();
        let mut metrics = summary.metrics().to_vec();
        metrics.push((crate::telemetry::Metric::RefundStale, refunds.stale));
        crate::telemetry::emit_metrics(&metrics, self.deps.now());
        let outcome =
            if summary.failed > 0 || refunds.failed > 0 || uploads.errors > 0 || stock.failed > 0 {
                "failed"
            } else {
                "ok"
            };
        tracing::info!(
            trigger = trigger.kind(),
            scanned = summary.scanned,
            paid = summary.paid,
            closed = summary.closed,
            skipped = summary.skipped,
            failed = summary.failed,
            anomalies = summary.anomalies,
            stopped_early = summary.stopped_early,
            refunds_checked = refunds.checked,
            refunds_submitted = refunds.submitted,
            refunds_settled = refunds.settled,
            refunds_failed = refunds.failed,
            uploads_checked = uploads.checked,
            uploads_uploaded = uploads.uploaded,
            uploads_failed = uploads.failed,
            shipped_completed = uploads.completed,
            upload_errors = uploads.errors,
            stock_transfers = stock.transfers,
            stock_failed = stock.failed,
            elapsed_ms = elapsed_ms as i64,
            outcome,
            "sweep finished"
        );
        let mut out = serde_json::to_value(summary).unwrap_or(Value::Null);
        if let Some(map) = out.as_object_mut() {
            map.insert(
                "refunds".into(),
                serde_json::to_value(refunds).unwrap_or(Value::Null),
            );
            map.insert(
                "uploads".into(),
                serde_json::to_value(uploads).unwrap_or(Value::Null),
            );
            map.insert(
                "stock".into(),
                serde_json::to_value(stock).unwrap_or(Value::Null),
            );
        }
        out
    }
}
