//! Delivering notifications as WeChat Pay does: `TRANSACTION.SUCCESS` and `REFUND.*` signed
//! with the platform key and its resource sealed with the APIv3 key, fresh timestamp, nonce and
//! signature on every attempt; only 200 or 204 acknowledges, anything else (or no answer
//! within the timeout) is retried on WeChat Pay's schedule, scaled by `retry_scale`.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use shared::wechatpay::build_notification;
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::state::{DeliveryAttempt, DeliveryJob, timestamp_millis};
use super::{RETRY_SCHEDULE, Shared};

/// Registers the notification and starts delivering it in the background.
pub(super) fn start(shared: &Arc<Shared>, job: DeliveryJob, transaction_id: &str) {
    {
        let mut store = shared.store();
        store.notification_started(&job, transaction_id);
        if job.copies == 0 {
            // A notification that never arrives: the backend must reconcile by querying.
            store.notification_finished(&job.notification_id);
            return;
        }
    }
    let task_shared = shared.clone();
    shared.spawn(run(task_shared, job));
}

/// All copies at once, then one attempt per step of the schedule until one is acknowledged.
async fn run(shared: Arc<Shared>, job: DeliveryJob) {
    let job = Arc::new(job);
    let mut first = JoinSet::new();
    for _ in 0..job.copies {
        first.spawn(attempt(shared.clone(), job.clone(), 0));
    }
    let mut acknowledged = false;
    while let Some(result) = first.join_next().await {
        acknowledged |= result.unwrap_or(false);
    }

    let mut shutdown = shared.shutdown.clone();
    for (round, delay) in (1u32..).zip(RETRY_SCHEDULE) {
        if acknowledged {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(scaled(delay, shared.config.retry_scale)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        acknowledged = attempt(shared.clone(), job.clone(), round).await;
    }
    if !acknowledged {
        tracing::warn!(
            out_trade_no = %job.out_trade_no,
            notification_id = %job.notification_id,
            "notification never acknowledged: WeChat Pay's retry schedule is exhausted"
        );
    }
    shared.store().notification_finished(&job.notification_id);
}

fn scaled(delay: Duration, scale: f64) -> Duration {
    Duration::try_from_secs_f64(delay.as_secs_f64() * scale).unwrap_or(delay)
}

/// One POST to notify_url; returns whether it was acknowledged.
async fn attempt(shared: Arc<Shared>, job: Arc<DeliveryJob>, round: u32) -> bool {
    let Some(draft) = job.draft() else {
        // Never queued: only notified refund statuses make a job.
        return true;
    };
    let number = shared.store().next_attempt(&job.out_trade_no);
    let config = &shared.config;
    let now = OffsetDateTime::now_utc();
    let (headers, body) = build_notification(
        &config.platform_private_key,
        &shared.signing_serial(),
        &config.apiv3_key,
        &draft,
        now.unix_timestamp(),
    );
    let result = shared
        .http
        .post(&job.notify_url)
        .headers(headers)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let (status, error) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the answer to the end so the connection can be reused.
            let _ = response.bytes().await;
            (Some(status), None)
        }
        Err(e) => (None, Some(describe(&e, config.delivery_timeout))),
    };
    let acknowledged = matches!(status, Some(200 | 204));
    tracing::info!(
        out_trade_no = %job.out_trade_no,
        notification_id = %job.notification_id,
        event_type = draft.event_type,
        attempt = number,
        round,
        status,
        error = error.as_deref(),
        acknowledged,
        "notification delivery"
    );
    shared.store().record_attempt(
        &job.out_trade_no,
        DeliveryAttempt {
            attempt: number,
            notification_id: job.notification_id.clone(),
            event_type: draft.event_type.to_owned(),
            round,
            at: timestamp_millis(now),
            status,
            error,
        },
    );
    acknowledged
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f64());
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
