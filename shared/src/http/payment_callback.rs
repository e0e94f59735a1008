//! `POST /notify/wechatpay` at the edge: the raw body goes to the use case untouched (the
//! signature covers its exact bytes), and the outcome becomes the status WeChat Pay's retry
//! rules expect: 204 to stop, 401/400 for a notification we refuse, 500 to be retried.

use std::time::Duration;

use async_trait::async_trait;

use super::{ApiError, Handler, InvocationDeadline, Request, Response, no_content};
use crate::service::{Deps, NotifyError, WechatpayHeaders, handle_notification};
use crate::telemetry::Metric;

/// WeChat Pay waits 5 s for an answer; this leaves the rest for the network and the
/// platform's own hops. Past it the answer is a 500 at once (WeChat Pay retries), never a
/// late 204 it has already given up on.
pub const NOTIFY_BUDGET: Duration = Duration::from_secs(4);

/// Kept back from the platform's invocation deadline, to post the answer before it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(200);

pub struct PaymentCallbackHandler {
    pub deps: Deps,
    /// The whole notification (verification, certificate download, every DynamoDB call)
    /// must be answered within this; [`NOTIFY_BUDGET`] unless a test says otherwise.
    pub budget: Duration,
}

impl PaymentCallbackHandler {
    pub fn new(deps: Deps) -> Self {
        PaymentCallbackHandler {
            deps,
            budget: NOTIFY_BUDGET,
        }
    }

    /// When the answer must be out: the budget, or sooner if the platform cuts the
    /// invocation off sooner.
    fn deadline(&self, request: &Request) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let by_budget = now + self.budget;
        let Some(InvocationDeadline(at)) = request.extensions().get::<InvocationDeadline>() else {
            return by_budget;
        };
        let left = *at - self.deps.now();
        let left = Duration::try_from(left)
            .unwrap_or_default()
            .saturating_sub(DEADLINE_MARGIN);
        by_budget.min(now + left)
    }
}

fn fail(status: u16, message: &str) -> Response {
    ApiError::new(status, "FAIL", message).into_response()
}

#[async_trait]
impl Handler for PaymentCallbackHandler {
    async fn handle(&self, request: Request) -> Response {
        if request.uri().path().trim_end_matches('/') != "/notify/wechatpay" {
            return ApiError::not_found().into_response();
        }
        if request.method() != http::Method::POST {
            return ApiError::method_not_allowed().into_response();
        }
        let deadline = self.deadline(&request);
        let headers = WechatpayHeaders::from(request.headers());
        let handled = tokio::time::timeout_at(
            deadline,
            handle_notification(&self.deps, &headers, request.body()),
        )
        .await;
        let Ok(handled) = handled else {
            // Whatever was in flight is either applied whole or not at all (each write is one
            // conditional transaction), so WeChat Pay's retry finds a consistent table.
            crate::telemetry::emit_metrics(
                &[
                    (Metric::NotifyDeadlineExceeded, 1),
                    (Metric::NotifyFailed, 1),
                ],
                self.deps.now(),
            );
            tracing::error!(
                outcome = "error:deadline",
                budget_ms = self.budget.as_millis() as u64,
                "notification not answered within its deadline; WeChat Pay will retry"
            );
            return fail(500, "temporarily unable to process the notification");
        };
        let answer = self.answer(handled);
        // Refusals and failures as metrics: a 401 storm (probes, a wrong key after a
        // rotation), a 400 (kept, but needing a fix) and a 5xx (WeChat Pay retrying) each
        // have an alarm.
        let metric = match answer.status().as_u16() {
            401 => Some(Metric::NotifyRejected),
            400 => Some(Metric::NotifyRefused),
            s if s >= 500 => Some(Metric::NotifyFailed),
            _ => None,
        };
        if let Some(metric) = metric {
            crate::telemetry::emit_metrics(&[(metric, 1)], self.deps.now());
        }
        answer
    }
}

impl PaymentCallbackHandler {
    fn answer(
        &self,
        handled: Result<crate::service::NotificationOutcome, NotifyError>,
    ) -> Response {
        match handled {
            Ok(_) => no_content(),
            Err(e) => {
                let outcome = e.label();
                match &e {
                    NotifyError::Store(_) => {
                        tracing::error!(error = %e, outcome, "notification not applied; WeChat Pay will retry");
                        fail(500, "temporarily unable to process the notification")
                    }
                    NotifyError::Rejected(_) => {
                        tracing::warn!(error = %e, outcome, "notification rejected");
                        fail(401, &e.to_string())
                    }
                    NotifyError::NotOurs(_) | NotifyError::Malformed(_) => {
                        // Non-2xx so WeChat Pay keeps it visible and retries: a fixed
                        // configuration then applies it.
                        tracing::error!(error = %e, outcome, "verified notification refused");
                        fail(400, &e.to_string())
                    }
                }
            }
        }
    }
}
