//! The event-dispatcher at the edge: a DynamoDB stream batch (AWS's fast path) or a timer run
//! (both clouds, and the retries of every event) handed to `service::events`, its outcome
//! logged in one line, emitted as EMF counts and returned to the platform.
//!
//! A stream batch answers `batchItemFailures` naming only the records whose store calls
//! failed: a webhook that fails is the timer's to retry, so it never holds a shard back.

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    runtime::{ScheduledJob, StreamRecord, Trigger},
    service::{DispatchSummary, EventDeps, dispatch_due, dispatch_ids},
};

/// The partition-key prefix of event items: the only stream records this job acts on (the
/// event source mapping's filter passes only these; checked again here).
const EVENT_PK_PREFIX: &str = "EVENT#";

pub struct DispatcherJob {
    pub deps: EventDeps,
}

#[async_trait]
impl ScheduledJob for DispatcherJob {
    async fn run(&self, trigger: Trigger, deadline: Option<OffsetDateTime>) -> Value {
        let started = (self.deps.clock)();
        match trigger {
            Trigger::DynamoDbStream { records } => self.stream(&records, started).await,
            trigger => {
                let summary = dispatch_due(&self.deps, deadline).await;
                finish(&summary, trigger.kind(), started, &self.deps);
                serde_json::to_value(summary).unwrap_or(Value::Null)
            }
        }
    }
}

impl DispatcherJob {
    async fn stream(&self, records: &[StreamRecord], started: OffsetDateTime) -> Value {
        let events: Vec<(&StreamRecord, String)> = records
            .iter()
            .filter(|r| r.event_name != "REMOVE")
            .filter_map(|r| {
                r.pk.strip_prefix(EVENT_PK_PREFIX)
                    .map(|id| (r, id.to_owned()))
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|(_, id)| id.clone()).collect();
        let results = dispatch_ids(&self.deps, &ids).await;
        let mut summary = DispatchSummary {
            scanned: ids.len() as u64,
            ..DispatchSummary::default()
        };
        let mut failures = Vec::new();
        for ((record, id), result) in events.iter().zip(&results) {
            if let Err(e) = result {
                tracing::error!(event_id = %id, sequence_number = %record.sequence_number, error = %e, outcome = "store_error", "event not dispatched; the stream retries it");
                failures.push(json!({"itemIdentifier": record.sequence_number}));
            }
        }
        for result in &results {
            summary.record(result);
        }
        finish(&summary, "dynamodb_stream", started, &self.deps);
        json!({ "batchItemFailures": failures })
    }
}

fn finish(summary: &DispatchSummary, trigger: &str, started: OffsetDateTime, deps: &EventDeps) {
    let now = (deps.clock)();
    crate::telemetry::emit_metrics(&summary.metrics(), now);
    let outcome = if summary.failed > 0 { "failed" } else { "ok" };
    tracing::info!(
        trigger,
        scanned = summary.scanned,
        delivered = summary.delivered,
        retrying = summary.retrying,
        dead = summary.dead,
        skipped = summary.skipped,
        failed = summary.failed,
        oldest_age_seconds = summary.oldest_age_seconds,
        stopped_early = summary.stopped_early,
        webhook = deps.webhook.is_some(),
        elapsed_ms = (now - started).whole_milliseconds() as i64,
        outcome,
        "dispatch finished"
    );
}
