//! mp-push at the edge, `GET|POST /notify/wechat-mp` (DESIGN.md section 12): the console's
//! URL check, and safe-mode message pushes verified by `msg_signature` over the encrypted
//! body and decrypted for our appid only, before anything is read. WeChat wants `success`
//! within 5 s; a store failure is a 500 so WeChat pushes again (the sweeper also asks).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{ApiError, Bytes, Handler, Request, Response, response};
use crate::miniprogram::push::{PushError, PushKeys, PushQuery, fields};
use crate::service::{Deps, handle_push};
use crate::telemetry::Metric;

pub struct MpPushHandler {
    pub deps: Deps,
    pub keys: PushKeys,
}

fn query(request: &Request) -> HashMap<String, String> {
    let Some(q) = request.uri().query() else {
        return HashMap::new();
    };
    reqwest::Url::parse(&format!("http://push.invalid/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn text(status: u16, body: String) -> Response {
    response(status, Bytes::from(body), Some("text/plain"))
}

fn refused(e: &PushError) -> ApiError {
    match e {
        PushError::Signature => ApiError::new(401, "SIGNATURE_INVALID", e.to_string()),
        PushError::TooLarge(_) => ApiError::new(413, "TOO_LARGE", e.to_string()),
        _ => ApiError::new(400, "INVALID_PUSH", e.to_string()),
    }
}

impl MpPushHandler {
    fn verify_url(&self, q: &HashMap<String, String>) -> Result<Response, ApiError> {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        self.keys
            .verify_url(get("signature"), get("timestamp"), get("nonce"))
            .map_err(|e| refused(&e))?;
        Ok(text(200, get("echostr").to_owned()))
    }

    async fn push(&self, q: &HashMap<String, String>, body: &[u8]) -> Result<Response, ApiError> {
        let push_query = PushQuery {
            timestamp: q.get("timestamp").cloned().unwrap_or_default(),
            nonce: q.get("nonce").cloned().unwrap_or_default(),
            msg_signature: q.get("msg_signature").cloned(),
            encrypt_type: q.get("encrypt_type").cloned(),
        };
        let opened = self
            .keys
            .open(&push_query, body)
            .and_then(|plain| fields(plain.as_bytes()));
        let message = match opened {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(error = %e, outcome = "rejected", "message push refused");
                crate::telemetry::emit_metrics(&[(Metric::PushRejected, 1)], self.deps.now());
                return Err(refused(&e));
            }
        };
        match handle_push(&self.deps, &message).await {
            Ok(_) => Ok(text(200, "success".into())),
            Err(e) => {
                tracing::error!(error = %e, outcome = "failed", "message push not applied; WeChat pushes again");
                Err(ApiError::new(
                    500,
                    "STORE_UNAVAILABLE",
                    "the order store is unavailable",
                ))
            }
        }
    }
}

#[async_trait]
impl Handler for MpPushHandler {
    async fn handle(&self, request: Request) -> Response {
        if request.uri().path().trim_end_matches('/') != "/notify/wechat-mp" {
            return ApiError::not_found().into_response();
        }
        let q = query(&request);
        let result = match *request.method() {
            http::Method::GET => self.verify_url(&q),
            http::Method::POST => self.push(&q, request.body()).await,
            _ => Err(ApiError::method_not_allowed()),
        };
        result.unwrap_or_else(|e| e.logged("mp-push"))
    }
}
