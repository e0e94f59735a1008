//! `POST /orders` at the edge: who is calling, the `Idempotency-Key`, the body, and the one
//! mapping of place-order's errors to DESIGN.md section 3's table.

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ApiError, Handler, InvocationDeadline, Request, Response,
    identity::{IdentitySettings, caller},
    response,
};
use crate::service::{Deps, PlaceOrderError, PlaceOrderInput, PlaceOrderRequest, place_order};

pub struct PlaceOrderHandler {
    pub deps: Deps,
    pub identity: IdentitySettings,
}

impl From<PlaceOrderError> for ApiError {
    fn from(e: PlaceOrderError) -> ApiError {
        let message = e.to_string();
        match e {
            PlaceOrderError::InvalidRequest(_) => ApiError::new(400, "INVALID_REQUEST", message),
            PlaceOrderError::KeyInUse { retry_after_secs } => {
                ApiError::new(409, "IDEMPOTENCY_KEY_IN_USE", message)
                    .with_header("retry-after", retry_after_secs.to_string())
            }
            PlaceOrderError::KeyReused => ApiError::new(422, "IDEMPOTENCY_KEY_REUSED", message),
            PlaceOrderError::UnknownSku(_) => ApiError::new(422, "UNKNOWN_SKU", message),
            PlaceOrderError::OutOfStock(_) => ApiError::new(409, "OUT_OF_STOCK", message),
            PlaceOrderError::PaymentProvider(_) => {
                ApiError::new(502, "PAYMENT_PROVIDER_ERROR", message)
            }
            PlaceOrderError::Store(ref s) if s.retryable() => ApiError::new(
                503,
                "STORE_UNAVAILABLE",
                "the order store is unavailable; retry",
            ),
            PlaceOrderError::Store(_) | PlaceOrderError::Internal(_) => {
                ApiError::new(500, "INTERNAL", "internal error")
            }
        }
    }
}

impl PlaceOrderHandler {
    async fn place(&self, request: Request) -> Result<Response, ApiError> {
        let openid = caller(&request, &self.identity)?;
        let idempotency_key = super::idempotency_key(&request)?;
        let input = PlaceOrderInput::parse(request.body())?;
        let deadline = request
            .extensions()
            .get::<InvocationDeadline>()
            .map(|d| d.0);
        let reply = place_order(
            &self.deps,
            PlaceOrderRequest {
                openid,
                idempotency_key,
                input,
                deadline,
            },
        )
        .await?;
        let mut r = response(
            reply.completion.status_code(),
            Bytes::from(reply.body),
            Some("application/json"),
        );
        if reply.replayed {
            r.headers_mut().insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
        }
        Ok(r)
    }
}

#[async_trait]
impl Handler for PlaceOrderHandler {
    async fn handle(&self, request: Request) -> Response {
        if request.uri().path().trim_end_matches('/') != "/orders" {
            return ApiError::not_found().into_response();
        }
        if request.method() != http::Method::POST {
            return ApiError::method_not_allowed().into_response();
        }
        self.place(request)
            .await
            .unwrap_or_else(|e| e.logged("place-order"))
    }
}
