//! `POST /notify/wechatpay` at the edge: the raw body goes to the use case untouched (the
//! signature covers its exact bytes), and the outcome becomes the status WeChat Pay's retry
//! rules expect: 204 to stop, 401/400 for a notification we refuse, 500 to be retried.

use async_trait::async_trait;

use super::{ApiError, Handler, Request, Response, no_content};
use crate::service::{Deps, NotifyError, handle_notification};

pub struct PaymentCallbackHandler {
    pub deps: Deps,
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
        match handle_notification(&self.deps, request.headers(), request.body()).await {
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
