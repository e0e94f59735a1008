//! The event-dispatcher's use case: every event the transitions stored reaches the merchant's
//! webhook (DESIGN.md section 10, invariant 9), at least once, with the same id every time.
//!
//! An attempt is claimed first (a lease and `attempts + 1` in one conditional write), so two
//! dispatchers (the stream fast path and the timer, or two timers) never send one event at
//! once; its result is recorded fenced by that claim. A failure is retried on the Standard
//! Webhooks schedule for 3 days, then the event is kept as dead for a redelivery.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use tokio::{sync::Semaphore, task::JoinSet};

use super::Clock;
use crate::{
    domain::{OutTradeNo, OutboxEvent},
    store::{EventClaim, Store, StoreError},
    telemetry::Metric,
    webhook::{Attempt, AttemptOutcome, Webhook, schedule},
};

/// The merchant's webhook as the dispatcher sees it: one signed attempt per call.
#[async_trait]
pub trait WebhookPort: Send + Sync {
    async fn deliver(&self, event_id: &str, body: &[u8], now: OffsetDateTime) -> Attempt;
}

#[async_trait]
impl WebhookPort for Webhook {
    async fn deliver(&self, event_id: &str, body: &[u8], now: OffsetDateTime) -> Attempt {
        Webhook::deliver(self, event_id, body, now).await
    }
}

/// The store calls one attempt may make around its webhook call, at most: the claim, the
/// order's read and the completing transaction (an `order.paid` written unread), the record.
/// A lease and an invocation's timeout are sized from it.
pub const STORE_CALLS_PER_ATTEMPT: u32 = 4;

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// The outbox's shard count (the store's, `SWEEPER_SHARDS`).
    pub shards: u32,
    /// Events sent at once.
    pub concurrency: usize,
    /// Events read from the index per Query.
    pub page_size: u32,
    /// A claimed attempt is left to its dispatcher this long: longer than the webhook's
    /// timeout and the two store calls around it.
    pub lease: Duration,
    /// No new event is started later than this before the invocation's deadline.
    pub deadline_margin: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            shards: 4,
            concurrency: 8,
            page_size: 100,
            lease: Duration::seconds(60),
            deadline_margin: Duration::seconds(20),
        }
    }
}

/// The dispatcher's ports: the store, the webhook (`None` when `WEBHOOK_URL` is unset:
/// events are kept, nothing is sent), a clock.
#[derive(Clone)]
pub struct EventDeps {
    pub store: Arc<dyn Store>,
    pub webhook: Option<Arc<dyn WebhookPort>>,
    pub clock: Clock,
    pub settings: DispatchSettings,
}

impl EventDeps {
    fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched {
    /// A 2xx acknowledged it.
    Delivered,
    /// The attempt failed; tried again at this time.
    Retrying(OffsetDateTime),
    /// The attempt failed and the retry window is spent: kept as dead.
    Dead,
    /// Not claimed: not due, leased by another dispatcher, delivered or dead already.
    Skipped,
    /// Sent, but the event moved before its result could be recorded (redelivered, or its
    /// lease lapsed and another dispatcher claimed it): that one records.
    Superseded,
    /// No webhook is configured: left as it is.
    NoWebhook,
}

/// One run over the due events; logged, returned to the platform and emitted as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DispatchSummary {
    pub scanned: u64,
    pub delivered: u64,
    pub retrying: u64,
    pub dead: u64,
    pub skipped: u64,
    /// The store failed for these; the next run (or the stream's retry) takes them again.
    pub failed: u64,
    /// Age in seconds of the oldest due event seen (since its `retry_since`: created, or
    /// redelivered).
    pub oldest_age_seconds: u64,
    pub stopped_early: bool,
}

impl DispatchSummary {
    /// Counts one event's result.
    pub fn record(&mut self, result: &Result<Dispatched, StoreError>) {
        match result {
            Ok(Dispatched::Delivered) => self.delivered += 1,
            Ok(Dispatched::Retrying(_)) => self.retrying += 1,
            Ok(Dispatched::Dead) => self.dead += 1,
            Ok(Dispatched::Skipped | Dispatched::Superseded | Dispatched::NoWebhook) => {
                self.skipped += 1;
            }
            Err(_) => self.failed += 1,
        }
    }

    pub fn metrics(&self) -> [(Metric, u64); 4] {
        [
            (Metric::EventDelivered, self.delivered),
            (Metric::EventAttemptFailed, self.retrying + self.dead),
            (Metric::EventDead, self.dead),
            (Metric::EventOldestUndeliveredAge, self.oldest_age_seconds),
        ]
    }
}

/// The event made ready to send: an `order.paid` written without its order completed from
/// it, and its counters moved once (`sold` from `order.paid`, DESIGN 5), both before any
/// delivery, so the merchant never hears of a sale not yet counted.
async fn prepare(
    deps: &EventDeps,
    event: OutboxEvent,
    now: OffsetDateTime,
) -> Result<OutboxEvent, StoreError> {
    if event.order_to_read.is_some() {
        return complete(deps, event, now).await;
    }
    if event.needs_projection() && deps.store.project_event(&event, now).await? {
        tracing::info!(event_id = %event.id, event_type = %event.event_type, out_trade_no = event.out_trade_no.as_deref().unwrap_or(""), outcome = "projected", "event's stock counters moved");
    }
    Ok(event)
}

/// Completes an `order.paid` stored by a PAID that read no order (DESIGN 5) from the order
/// as PAID left it, writing its body and moving its counters in one transaction. The body
/// is made the same way whenever it is made, so a completion that lost to another one
/// sends the same bytes.
async fn complete(
    deps: &EventDeps,
    event: OutboxEvent,
    now: OffsetDateTime,
) -> Result<OutboxEvent, StoreError> {
    let inconsistent = |why: String| StoreError::Inconsistent(format!("event {}: {why}", event.id));
    let out_trade_no = event
        .out_trade_no
        .as_deref()
        .and_then(|o| OutTradeNo::parse(o).ok())
        .ok_or_else(|| inconsistent("names no order".into()))?;
    let order = deps
        .store
        .get_order(&out_trade_no)
        .await?
        .ok_or_else(|| inconsistent(format!("order {out_trade_no} is gone")))?;
    let paid = order
        .paid_event(event.created_at)
        .map_err(|e| inconsistent(e.to_string()))?;
    let body = crate::outbox::body(&paid)
        .filter(|_| paid.id == event.id)
        .ok_or_else(|| inconsistent(format!("order {out_trade_no} makes event {}", paid.id)))?;
    let payer = event.order_to_read.as_ref().and_then(|r| r.payer.clone());
    let completed = event.completed(body, paid.stock);
    if deps.store.complete_event(&completed, now).await? {
        tracing::info!(event_id = %completed.id, event_type = %completed.event_type, out_trade_no = %out_trade_no, transaction_id = order.transaction_id.as_deref(), outcome = "completed", "order.paid completed from its order; stock counters moved");
        if let (Some(payer), Some(transaction_id)) = (payer, order.transaction_id.as_deref()) {
            super::payment::notice_payer(&order, transaction_id, &payer, now);
        }
    }
    Ok(completed)
}

/// Claims, sends and records one attempt of event `id` (its counters projected first).
/// Without a webhook, only the projection.
pub async fn dispatch_event(deps: &EventDeps, id: &str) -> Result<Dispatched, StoreError> {
    let now = deps.now();
    let Some(webhook) = deps.webhook.as_ref() else {
        if let Some(event) = deps.store.get_event(id).await? {
            prepare(deps, event, now).await?;
        }
        return Ok(Dispatched::NoWebhook);
    };
    let claimed = match deps.store.claim_event(id, now, deps.settings.lease).await? {
        EventClaim::Claimed(event) => *event,
        EventClaim::NotClaimed(_) => return Ok(Dispatched::Skipped),
    };
    let attempt = match prepare(deps, claimed.clone(), now).await {
        Ok(event) => webhook.deliver(&event.id, event.body.as_bytes(), now).await,
        // An event that cannot be made ready (its order gone or unreadable) is a failed
        // attempt like any other: retried on the schedule, then dead, never claimed forever.
        Err(StoreError::Inconsistent(why)) => {
            tracing::error!(event_id = %claimed.id, event_type = %claimed.event_type, out_trade_no = claimed.out_trade_no.as_deref().unwrap_or(""), error = %why, outcome = "not_ready", "event cannot be made ready to send");
            Attempt {
                outcome: AttemptOutcome::Failed,
                status: None,
                error: Some(format!(
                    "not sent: {}",
                    why.chars().take(160).collect::<String>()
                )),
                retry_after: None,
                elapsed: std::time::Duration::ZERO,
            }
        }
        Err(e) => return Err(e),
    };
    let done = deps.now();
    let (to, dispatched) = match attempt.outcome {
        AttemptOutcome::Delivered => (
            claimed.delivered(attempt.status.unwrap_or(200), done),
            Dispatched::Delivered,
        ),
        AttemptOutcome::Failed | AttemptOutcome::Gone => {
            let window = claimed.window_start();
            let next = schedule::next_attempt_at(
                claimed.attempts,
                window,
                done,
                schedule::jitter(&mut rand::rng()),
            )
            .map(|at| schedule::honour_retry_after(at, attempt.retry_after, window, done));
            let error = attempt.error.as_deref().unwrap_or("failed");
            let to = claimed.failed(attempt.status, error, next);
            (
                to,
                match next {
                    Some(at) => Dispatched::Retrying(at),
                    None => Dispatched::Dead,
                },
            )
        }
    };
    let recorded = deps.store.update_event(&claimed, &to).await?;
    let dispatched = if recorded {
        dispatched
    } else {
        Dispatched::Superseded
    };
    log_attempt(&claimed, &attempt, &dispatched);
    Ok(dispatched)
}

fn log_attempt(event: &OutboxEvent, attempt: &Attempt, dispatched: &Dispatched) {
    let outcome = match dispatched {
        Dispatched::Delivered => "delivered",
        Dispatched::Retrying(_) => "retrying",
        Dispatched::Dead => "dead",
        Dispatched::Superseded => "superseded",
        Dispatched::Skipped | Dispatched::NoWebhook => "skipped",
    };
    let next_attempt_at = match dispatched {
        Dispatched::Retrying(at) => Some(crate::timefmt::to_utc_string(*at)),
        _ => None,
    };
    let fields = (
        event.out_trade_no.as_deref().unwrap_or(""),
        attempt.status.unwrap_or(0),
        attempt.elapsed.as_millis() as u64,
    );
    match dispatched {
        Dispatched::Dead => {
            tracing::error!(event_id = %event.id, event_type = %event.event_type, out_trade_no = fields.0, attempts = event.attempts, status = fields.1, elapsed_ms = fields.2, error = attempt.error.as_deref().unwrap_or(""), outcome, "event undelivered for its whole retry window; kept as dead")
        }
        Dispatched::Retrying(_) => {
            tracing::warn!(event_id = %event.id, event_type = %event.event_type, out_trade_no = fields.0, attempts = event.attempts, status = fields.1, elapsed_ms = fields.2, error = attempt.error.as_deref().unwrap_or(""), next_attempt_at = next_attempt_at.as_deref().unwrap_or(""), outcome, "webhook attempt failed")
        }
        _ => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, out_trade_no = fields.0, attempts = event.attempts, status = fields.1, elapsed_ms = fields.2, outcome, "webhook attempt")
        }
    }
}

/// The stream's fast path: each id (of a new event item) dispatched once, results in order.
/// Only a store failure is an error: a failed delivery is scheduled for the timer, so a slow
/// webhook never holds the stream back.
pub async fn dispatch_ids(deps: &EventDeps, ids: &[String]) -> Vec<Result<Dispatched, StoreError>> {
    let limit = Arc::new(Semaphore::new(deps.settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (deps, id, limit) = (deps.clone(), id.clone(), Arc::clone(&limit));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, dispatch_event(&deps, &id).await)
        });
    }
    let mut results: Vec<Option<Result<Dispatched, StoreError>>> =
        ids.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, result)) => results[i] = Some(result),
            Err(e) => tracing::error!(error = %e, outcome = "panicked", "dispatch task failed"),
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Invalid("dispatch task failed".into()))))
        .collect()
}

/// The timer's run: every due event of every shard, soonest first, a bounded number at once,
/// no new one started within the deadline margin.
pub async fn dispatch_due(deps: &EventDeps, deadline: Option<OffsetDateTime>) -> DispatchSummary {
    let mut summary = DispatchSummary::default();
    let stop_at = deadline.map(|d| d - deps.settings.deadline_margin);
    let limit = Arc::new(Semaphore::new(deps.settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    // From a random shard on: a run that stops at its deadline leaves a different shard's
    // backlog for the next, never the same high shards every time.
    let shards = deps.settings.shards.max(1);
    let first = rand::random_range(0..shards);
    'shards: for shard in (0..shards).map(|i| (first + i) % shards) {
        let mut cursor = None;
        loop {
            let now = deps.now();
            if stop_at.is_some_and(|s| now >= s) {
                summary.stopped_early = true;
                break 'shards;
            }
            let page = match deps
                .store
                .due_events(shard, now, deps.settings.page_size, cursor.as_ref())
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(shard, error = %e, outcome = "store_error", "cannot read due events");
                    summary.failed += 1;
                    continue 'shards;
                }
            };
            for event in page.items {
                if stop_at.is_some_and(|s| deps.now() >= s) {
                    summary.stopped_early = true;
                    break 'shards;
                }
                if deps.webhook.is_none() && !event.needs_projection() {
                    // Kept for a webhook to come; nothing to do for it now.
                    continue;
                }
                summary.scanned += 1;
                // Since it became due for this round: its creation, or the merchant's
                // redelivery (an old event redelivered is not a backlog).
                let age = (now - event.retry_since).whole_seconds().max(0) as u64;
                summary.oldest_age_seconds = summary.oldest_age_seconds.max(age);
                let permit = Arc::clone(&limit).acquire_owned().await;
                let deps = deps.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    if deps.webhook.is_none() {
                        // Only the projection is due: from the event as read, no claim.
                        prepare(&deps, event, deps.now()).await?;
                        return Ok(Dispatched::NoWebhook);
                    }
                    dispatch_event(&deps, &event.id).await
                });
                while let Some(done) = tasks.try_join_next() {
                    summary.record(&flatten(done));
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        summary.record(&flatten(done));
    }
    summary
}

fn flatten(
    joined: Result<Result<Dispatched, StoreError>, tokio::task::JoinError>,
) -> Result<Dispatched, StoreError> {
    joined.unwrap_or_else(|e| Err(StoreError::Invalid(format!("dispatch task failed: {e}"))))
}

/// Why an event cannot be redelivered.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("event {0} not found")]
    NotFound(String),
    #[error("event {0} kept changing; try again")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The merchant's redelivery: the event due again at once, with the same id and body and a
/// fresh retry window, whatever became of it. The next dispatch sends it (on AWS the stream
/// sees it at once; the timer within its interval).
pub async fn redeliver_event(
    store: &dyn Store,
    id: &str,
    now: OffsetDateTime,
) -> Result<OutboxEvent, RedeliverError> {
    for _ in 0..3 {
        let Some(event) = store.get_event(id).await? else {
            return Err(RedeliverError::NotFound(id.to_owned()));
        };
        let again = event.redelivered(now);
        if store.update_event(&event, &again).await? {
            tracing::info!(event_id = %id, event_type = %event.event_type, out_trade_no = event.out_trade_no.as_deref().unwrap_or(""), previous_status = event.status.as_str(), outcome = "redelivery_scheduled", "event redelivery asked");
            return Ok(again);
        }
    }
    Err(RedeliverError::Conflict(id.to_owned()))
}
