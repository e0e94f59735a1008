//! The bill-reconciler at the edge: a scheduled run reconciles the previous Beijing date
//! (once: a date already reported whole is skipped), a run by hand the `bill_date` its event
//! names; the result is logged, counted (EMF) and returned as the invocation's result, or as
//! its error when the run failed (so the function's errors alarm fires).

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    http::bills::BillReportView,
    runtime::{JobFailed, ScheduledJob, Trigger},
    service::{Deps, ReconcileOutcome, previous_beijing_date, reconcile_bill},
    telemetry::Metric,
    timefmt::{CHINA, date_string, parse_date},
};

/// From this Beijing time on, a scheduled run that leaves the previous date unreconciled
/// counts it overdue (`BillOverdue`): the last of the morning's runs (11:45) is past it.
pub const OVERDUE_FROM: time::Time = time::macros::time!(11:30);

pub struct ReconcilerJob {
    pub deps: Deps,
}

#[async_trait]
impl ScheduledJob for ReconcilerJob {
    async fn run(&self, trigger: Trigger, deadline: Option<OffsetDateTime>) -> Value {
        match self.run_event(&Value::Null, trigger, deadline).await {
            Ok(summary) | Err(JobFailed { summary }) => summary,
        }
    }

    /// A run that could not reconcile (WeChat Pay or the store failing, a bill refused, an
    /// event that names no date) fails the invocation, so `BillReconcilerErrorsAlarm` fires;
    /// a bill not ready yet is not a failure (the next run asks again).
    async fn run_event(
        &self,
        event: &Value,
        trigger: Trigger,
        deadline: Option<OffsetDateTime>,
    ) -> Result<Value, JobFailed> {
        let now = self.deps.now();
        let asked = match event.get("bill_date").map(|d| d.as_str().map(parse_date)) {
            None => None,
            Some(Some(Ok(date))) => Some(date),
            Some(_) => {
                tracing::error!(
                    trigger = trigger.kind(),
                    outcome = "failed",
                    "the event's bill_date is not a yyyy-mm-dd date"
                );
                return Err(JobFailed {
                    summary: json!({"outcome": "failed", "error": "bill_date must be yyyy-mm-dd"}),
                });
            }
        };
        let date = asked.unwrap_or_else(|| previous_beijing_date(now));
        // The morning's schedule runs several times so a late bill is still caught; once a
        // date is reported whole after it ended, the later runs have nothing to do. A report
        // made during the day itself (by hand, or in the sandbox, whose simulator bills today)
        // saw only part of it, and an incomplete one stopped at its deadline: the schedule
        // reconciles that date again.
        if asked.is_none() {
            match self.deps.store.get_bill_report(date).await {
                Ok(Some(report))
                    if report.complete && report.created_at.to_offset(CHINA).date() > date =>
                {
                    tracing::info!(trigger = trigger.kind(), bill_date = %date_string(date), outcome = "already_reconciled", "the date is reconciled already");
                    return Ok(
                        json!({"outcome": "already_reconciled", "report": BillReportView::from(&report)}),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the stored report could not be read; reconciling");
                }
            }
        }
        let result = match reconcile_bill(&self.deps, date, deadline).await {
            Ok(ReconcileOutcome::Reconciled(report)) => {
                return Ok(
                    json!({"outcome": "reconciled", "report": BillReportView::from(report.as_ref())}),
                );
            }
            // Not a failure: the next scheduled run goes on from where the table now stands.
            Ok(ReconcileOutcome::Incomplete(report)) => Ok(
                json!({"outcome": "incomplete", "report": BillReportView::from(report.as_ref())}),
            ),
            Ok(ReconcileOutcome::NotReady) => {
                Ok(json!({"outcome": "not_ready", "bill_date": date_string(date)}))
            }
            Err(e) => {
                tracing::error!(trigger = trigger.kind(), bill_date = %date_string(date), error = %e, outcome = "failed", "bill reconciliation failed");
                Err(JobFailed {
                    summary: json!({"outcome": "failed", "bill_date": date_string(date), "error": e.to_string()}),
                })
            }
        };
        let beijing = now.to_offset(CHINA);
        if asked.is_none() && beijing.time() >= OVERDUE_FROM {
            tracing::error!(bill_date = %date_string(date), outcome = "overdue", "yesterday's bill is still unreconciled");
            crate::telemetry::emit_metrics(&[(Metric::BillOverdue, 1)], now);
        }
        result
    }
}
