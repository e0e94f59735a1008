//! merchant-api at the edge: the merchant's back office under `/merchant/` (DESIGN.md
//! section 3). Authorized as the merchant, never by a user's session token: API Gateway's
//! IAM (SigV4) authorization on AWS, a bearer token compared in constant time elsewhere.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{ApiError, AuthorizerClaims, Handler, Request, Response, json};
use crate::{
    config::MerchantAuth,
    domain::{Anomaly, Order, OutRefundNo, OutTradeNo, Package, Payment, Refund},
    http::bills::{BillReportView, not_ready, parse_bill_date},
    http::query_order::OrderBody,
    service::{
        Deps, ReconcileOutcome, RedeliverError, RefundError, RefundInput, RefundReply,
        ShipmentError, ShipmentInput, ShipmentReply, ShippingPorts, bill_report,
        close_order_as_merchant, get_refund, reconcile_bill, record_shipment, redeliver_event,
        request_refund, resolve_abnormal,
    },
    store::StoreError,
    timefmt::to_wechat,
};

/// The claim the runtime adapter sets from an IAM-authorized API Gateway request.
pub const IAM_CALLER_CLAIM: &str = "iam:userArn";

pub struct MerchantApiHandler {
    pub deps: Deps,
    pub auth: MerchantAuth,
    /// WeChat's mini-program API and `TRADE_MANAGED`, for shipments.
    pub shipping: std::sync::Arc<ShippingPorts>,
}

impl From<ShipmentError> for ApiError {
    fn from(e: ShipmentError) -> ApiError {
        let message = e.to_string();
        match e {
            ShipmentError::InvalidRequest(_) => ApiError::new(422, "INVALID_REQUEST", message),
            ShipmentError::OrderNotFound => ApiError::new(404, "ORDER_NOT_FOUND", message),
            ShipmentError::OrderNotPaid(_) => ApiError::new(409, "ORDER_NOT_PAID", message),
            ShipmentError::OrderRefunded => ApiError::new(409, "ORDER_REFUNDED", message),
            ShipmentError::AlreadyShipped => ApiError::new(409, "ORDER_ALREADY_SHIPPED", message),
            ShipmentError::KeyReused => ApiError::new(422, "IDEMPOTENCY_KEY_REUSED", message),
            ShipmentError::NotConfigured(_) => {
                ApiError::new(503, "SHIPPING_NOT_CONFIGURED", message)
            }
            ShipmentError::Store(e) => store_error(e),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipmentBody {
    logistics_type: String,
    packages: Vec<Package>,
    #[serde(default = "all_delivered")]
    is_all_delivered: bool,
}

fn all_delivered() -> bool {
    true
}

/// A shipped order as the merchant sees it after `POST .../shipments`.
#[derive(Serialize)]
struct ShipmentView<'a> {
    out_trade_no: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    shipping: Option<crate::outbox::ShippingData<'a>>,
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> ApiError {
        let message = e.to_string();
        match e {
            RefundError::InvalidRequest(_) => ApiError::new(422, "INVALID_REQUEST", message),
            RefundError::OrderNotFound => ApiError::new(404, "ORDER_NOT_FOUND", message),
            RefundError::RefundNotFound => ApiError::new(404, "REFUND_NOT_FOUND", message),
            RefundError::NotAbnormal(_) => ApiError::new(409, "REFUND_NOT_ABNORMAL", message),
            RefundError::OrderNotPaid(_) => ApiError::new(409, "ORDER_NOT_PAID", message),
            RefundError::ExceedsPaid { .. } => ApiError::new(422, "REFUND_EXCEEDS_PAID", message),
            RefundError::KeyReused => ApiError::new(422, "IDEMPOTENCY_KEY_REUSED", message),
            RefundError::Refused { code, message } => ApiError::new(
                502,
                "PAYMENT_PROVIDER_ERROR",
                format!("WeChat Pay refused the refund: {code}: {message}"),
            ),
            RefundError::Store(e) if e.retryable() => ApiError::new(
                503,
                "STORE_UNAVAILABLE",
                "the order store is busy or unavailable; retry with the same Idempotency-Key",
            ),
            RefundError::Store(_) => ApiError::new(500, "INTERNAL", "internal error"),
        }
    }
}

impl From<RedeliverError> for ApiError {
    fn from(e: RedeliverError) -> ApiError {
        let message = e.to_string();
        match e {
            RedeliverError::NotFound(_) => ApiError::new(404, "EVENT_NOT_FOUND", message),
            RedeliverError::Conflict(_) => ApiError::new(409, "CONFLICT", message),
            RedeliverError::Store(e) => store_error(e),
        }
    }
}

/// An outbox event as the merchant sees it (its body is what the webhook receives).
#[derive(Serialize)]
struct EventView<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_trade_no: Option<&'a str>,
    status: &'static str,
    attempts: u32,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    amount: i64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    restock: Vec<RestockBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockBody {
    sku_id: String,
    quantity: i64,
}

/// A refund as the merchant sees it.
#[derive(Serialize)]
struct RefundView<'a> {
    out_refund_no: &'a str,
    out_trade_no: &'a str,
    refund_id: Option<&'a str>,
    amount: i64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    restock: Vec<RestockView<'a>>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    submitted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    success_time: Option<String>,
}

#[derive(Serialize)]
struct RestockView<'a> {
    sku_id: &'a str,
    quantity: u32,
}

impl<'a> From<&'a Refund> for RefundView<'a> {
    fn from(r: &'a Refund) -> Self {
        RefundView {
            out_refund_no: r.out_refund_no.as_str(),
            out_trade_no: r.out_trade_no.as_str(),
            refund_id: r.refund_id.as_deref(),
            amount: r.amount.fen(),
            status: r.status.as_str(),
            reason: r.reason.as_deref(),
            restock: r
                .restock
                .iter()
                .map(|l| RestockView {
                    sku_id: l.sku_id.as_str(),
                    quantity: l.quantity.get(),
                })
                .collect(),
            created_at: to_wechat(r.created_at),
            submitted_at: r.submitted_at.map(to_wechat),
            success_time: r.success_time.map(to_wechat),
        }
    }
}

/// The whole order, for the merchant: the owner's view and what only the merchant sees.
#[derive(Serialize)]
struct MerchantOrderView<'a> {
    #[serde(flatten)]
    order: OrderBody<'a>,
    openid: &'a str,
    refund_pending_total: i64,
    history: Vec<HistoryView<'a>>,
    payment: Option<PaymentView<'a>>,
    refunds: Vec<RefundView<'a>>,
    anomalies: Vec<AnomalyView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shipping: Option<crate::outbox::ShippingData<'a>>,
}

#[derive(Serialize)]
struct HistoryView<'a> {
    from: Option<&'static str>,
    to: &'static str,
    at: String,
    cause: &'a str,
}

#[derive(Serialize)]
struct PaymentView<'a> {
    transaction_id: &'a str,
    amount: i64,
    payer_total: i64,
    currency: &'a str,
    success_time: String,
}

#[derive(Serialize)]
struct AnomalyView<'a> {
    kind: &'static str,
    cause: &'a str,
    at: String,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
}

fn order_view<'a>(
    order: &'a Order,
    payment: Option<&'a Payment>,
    refunds: &'a [Refund],
    anomalies: &'a [Anomaly],
) -> MerchantOrderView<'a> {
    MerchantOrderView {
        order: OrderBody::from(order),
        openid: order.openid.as_str(),
        refund_pending_total: order.refund_pending_total.fen(),
        history: order
            .history
            .iter()
            .map(|h| HistoryView {
                from: h.from.map(|s| s.as_str()),
                to: h.to.as_str(),
                at: to_wechat(h.at),
                cause: &h.cause,
            })
            .collect(),
        payment: payment.map(|p| PaymentView {
            transaction_id: &p.transaction_id,
            amount: p.amount.fen(),
            payer_total: p.payer_total.fen(),
            currency: &p.currency,
            success_time: to_wechat(p.success_time),
        }),
        refunds: refunds.iter().map(RefundView::from).collect(),
        anomalies: anomalies.iter().map(anomaly_view).collect(),
        shipping: order.shipping.as_ref().map(crate::outbox::shipping_data),
    }
}

fn anomaly_view(a: &Anomaly) -> AnomalyView<'_> {
    AnomalyView {
        kind: a.kind.as_str(),
        cause: &a.cause,
        at: to_wechat(a.at),
        detail: &a.detail,
        transaction_id: a.transaction_id.as_deref(),
    }
}

fn store_error(e: StoreError) -> ApiError {
    RefundError::Store(e).into()
}

/// Who the merchant is, or 401: the caller IAM authorized (AWS), or the bearer token.
fn authorize(auth: &MerchantAuth, request: &Request) -> Result<String, ApiError> {
    let refused = || ApiError::new(401, "UNAUTHENTICATED", "merchant credentials required");
    match auth {
        MerchantAuth::Iam => request
            .extensions()
            .get::<AuthorizerClaims>()
            .and_then(|c| c.0.get(IAM_CALLER_CLAIM))
            .filter(|arn| !arn.is_empty())
            .cloned()
            .ok_or_else(refused),
        MerchantAuth::Token(token) => {
            let presented = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(refused)?;
            if crate::secrets::constant_time_eq(presented.as_bytes(), token.expose().as_bytes()) {
                Ok("merchant-token".to_owned())
            } else {
                Err(refused())
            }
        }
    }
}

impl MerchantApiHandler {
    async fn refund(&self, request: &Request, no: &str) -> Result<Response, ApiError> {
        let out_trade_no = order_no(no)?;
        let key = super::idempotency_key(request)?;
        let body: RefundBody = serde_json::from_slice(request.body())
            .map_err(|e| ApiError::new(400, "INVALID_REQUEST", format!("request body: {e}")))?;
        let input = RefundInput {
            amount: body.amount,
            reason: body.reason,
            restock: body
                .restock
                .into_iter()
                .map(|l| (l.sku_id, l.quantity))
                .collect(),
        };
        let reply = request_refund(&self.deps, &out_trade_no, &key, input).await?;
        let status = match reply {
            RefundReply::Submitted(_) => 201,
            RefundReply::Reserved(_) => 202,
        };
        Ok(json(status, &RefundView::from(reply.refund())))
    }

    /// `POST /merchant/orders/{out_trade_no}/shipments`: `201` recorded (uploaded, refused
    /// by WeChat for good, or nothing to upload: `shipping.upload_state` says which), `202`
    /// recorded and still uploading.
    async fn ship(&self, request: &Request, no: &str) -> Result<Response, ApiError> {
        let out_trade_no = order_no(no)?;
        let key = super::idempotency_key(request)?;
        let body: ShipmentBody = serde_json::from_slice(request.body())
            .map_err(|e| ApiError::new(400, "INVALID_REQUEST", format!("request body: {e}")))?;
        let input = ShipmentInput {
            logistics_type: body.logistics_type,
            packages: body.packages,
            is_all_delivered: body.is_all_delivered,
        };
        let reply = record_shipment(&self.deps, &self.shipping, &out_trade_no, &key, input).await?;
        let status = match reply {
            ShipmentReply::Recorded(_) => 201,
            ShipmentReply::Uploading(_) => 202,
        };
        let order = reply.order();
        Ok(json(
            status,
            &ShipmentView {
                out_trade_no: order.out_trade_no.as_str(),
                status: order.status.as_str(),
                transaction_id: order.transaction_id.as_deref(),
                shipping: order.shipping.as_ref().map(crate::outbox::shipping_data),
            },
        ))
    }

    async fn refund_view(&self, no: &str) -> Result<Response, ApiError> {
        let out_refund_no = OutRefundNo::parse(no)
            .map_err(|_| ApiError::new(404, "REFUND_NOT_FOUND", "no such refund"))?;
        let refund = get_refund(&self.deps, &out_refund_no).await?;
        Ok(json(200, &RefundView::from(&refund)))
    }

    async fn order(&self, no: &str) -> Result<Response, ApiError> {
        let out_trade_no = order_no(no)?;
        let store = &self.deps.store;
        let order = store
            .get_order(&out_trade_no)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(404, "ORDER_NOT_FOUND", "no such order"))?;
        let payment = match &order.transaction_id {
            Some(id) => store.get_payment(id).await.map_err(store_error)?,
            None => None,
        };
        let mut refunds = Vec::with_capacity(order.refunds.len());
        for no in &order.refunds {
            refunds.extend(store.get_refund(no).await.map_err(store_error)?);
        }
        refunds.sort_by_key(|r| r.created_at);
        let anomalies = store
            .list_anomalies(&order.out_trade_no)
            .await
            .map_err(store_error)?;
        Ok(json(
            200,
            &order_view(&order, payment.as_ref(), &refunds, &anomalies),
        ))
    }

    async fn by_transaction(&self, request: &Request) -> Result<Response, ApiError> {
        let transaction_id = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("transaction_id="))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    "INVALID_REQUEST",
                    "the transaction_id parameter is required",
                )
            })?;
        let payment = self
            .deps
            .store
            .get_payment(transaction_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::new(404, "ORDER_NOT_FOUND", "no order of that transaction"))?;
        self.order(payment.out_trade_no.as_str()).await
    }

    async fn abnormal_refund(&self, request: &Request, no: &str) -> Result<Response, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(rename = "type")]
            kind: String,
        }
        let out_refund_no = OutRefundNo::parse(no)
            .map_err(|_| ApiError::new(404, "REFUND_NOT_FOUND", "no such refund"))?;
        let body: Body = serde_json::from_slice(request.body())
            .map_err(|e| ApiError::new(400, "INVALID_REQUEST", format!("request body: {e}")))?;
        if body.kind != "MERCHANT_BANK_CARD" {
            return Err(ApiError::new(
                422,
                "INVALID_REQUEST",
                "type must be MERCHANT_BANK_CARD: USER_BANK_CARD needs the user's bank account encrypted with WeChat Pay's key, which this service does not handle (use the merchant platform)",
            ));
        }
        let refund = resolve_abnormal(&self.deps, &out_refund_no).await?;
        Ok(json(200, &RefundView::from(&refund)))
    }

    async fn anomalies(&self, request: &Request) -> Result<Response, ApiError> {
        let (limit, cursor) = crate::http::query_order::list_params(request.uri().query())?;
        let page = self
            .deps
            .store
            .recent_anomalies(limit, cursor.as_ref())
            .await
            .map_err(|e| match e {
                StoreError::BadCursor(m) => ApiError::new(400, "INVALID_REQUEST", m),
                other => store_error(other),
            })?;
        #[derive(Serialize)]
        struct AnomalyListView<'a> {
            anomalies: Vec<ListedAnomaly<'a>>,
            next_cursor: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct ListedAnomaly<'a> {
            out_trade_no: Option<&'a str>,
            #[serde(flatten)]
            anomaly: AnomalyView<'a>,
        }
        Ok(json(
            200,
            &AnomalyListView {
                anomalies: page
                    .items
                    .iter()
                    .map(|a| ListedAnomaly {
                        out_trade_no: a.out_trade_no.as_ref().map(OutTradeNo::as_str),
                        anomaly: anomaly_view(a),
                    })
                    .collect(),
                next_cursor: page.next.as_ref().map(crate::store::Cursor::as_str),
            },
        ))
    }

    /// Schedules an event's redelivery (`202`): the dispatcher sends it, with the same
    /// `webhook-id`.
    async fn redeliver(&self, id: &str) -> Result<Response, ApiError> {
        // Ids are ours ("evt_..."): anything else names no event, and never reaches a key.
        if id.len() > 128 || id.contains('.') || !id.starts_with("evt_") {
            return Err(ApiError::new(404, "EVENT_NOT_FOUND", "no such event"));
        }
        let event = redeliver_event(self.deps.store.as_ref(), id, self.deps.now()).await?;
        Ok(json(
            202,
            &EventView {
                id: &event.id,
                event_type: &event.event_type,
                out_trade_no: event.out_trade_no.as_deref(),
                status: event.status.as_str(),
                attempts: event.attempts,
                created_at: to_wechat(event.created_at),
                next_attempt_at: event.next_attempt_at.map(to_wechat),
            },
        ))
    }

    async fn close(&self, no: &str) -> Result<Response, ApiError> {
        let out_trade_no = order_no(no)?;
        let order = close_order_as_merchant(&self.deps, &out_trade_no)
            .await
            .map_err(ApiError::from)?;
        Ok(json(200, &OrderBody::from(&order)))
    }

    /// `POST /merchant/bills/{date}/reconcile`: the run's report (`200`; `complete: false` if
    /// the invocation's deadline came first), `409 BILL_NOT_READY` with `Retry-After` when
    /// WeChat Pay has not generated the bill yet.
    async fn reconcile(&self, request: &Request, date: &str) -> Result<Response, ApiError> {
        let date = parse_bill_date(date)?;
        let deadline = request
            .extensions()
            .get::<super::InvocationDeadline>()
            .map(|d| d.0);
        match reconcile_bill(&self.deps, date, deadline).await? {
            ReconcileOutcome::Reconciled(report) | ReconcileOutcome::Incomplete(report) => {
                Ok(json(200, &BillReportView::from(report.as_ref())))
            }
            ReconcileOutcome::NotReady => Err(not_ready(date)),
        }
    }

    /// `GET /merchant/bills/{date}`: the stored report, `404 BILL_NOT_FOUND` if none.
    async fn bill(&self, date: &str) -> Result<Response, ApiError> {
        let date = parse_bill_date(date)?;
        let report = bill_report(&self.deps, date).await?.ok_or_else(|| {
            ApiError::new(
                404,
                "BILL_NOT_FOUND",
                "that date has not been reconciled (POST .../reconcile runs it)",
            )
        })?;
        Ok(json(200, &BillReportView::from(&report)))
    }

    async fn route(&self, request: &Request, merchant: &str) -> Result<Response, ApiError> {
        let path = request.uri().path().trim_end_matches('/');
        let Some(rest) = path.strip_prefix("/merchant/") else {
            return Err(ApiError::not_found());
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let method = request.method();
        tracing::info!(merchant, method = method.as_str(), path, "merchant call");
        match segments.as_slice() {
            ["orders"] if method == http::Method::GET => self.by_transaction(request).await,
            ["orders", no] if !no.is_empty() && method == http::Method::GET => self.order(no).await,
            ["orders", no, "refunds"] if !no.is_empty() && method == http::Method::POST => {
                self.refund(request, no).await
            }
            ["orders", no, "close"] if !no.is_empty() && method == http::Method::POST => {
                self.close(no).await
            }
            ["orders", no, "shipments"] if !no.is_empty() && method == http::Method::POST => {
                self.ship(request, no).await
            }
            ["anomalies"] if method == http::Method::GET => self.anomalies(request).await,
            ["refunds", no, "abnormal-refund"]
                if !no.is_empty() && method == http::Method::POST =>
            {
                self.abnormal_refund(request, no).await
            }
            ["refunds", no] if !no.is_empty() && method == http::Method::GET => {
                self.refund_view(no).await
            }
            ["events", id, "redeliver"] if method == http::Method::POST => self.redeliver(id).await,
            ["bills", date, "reconcile"] if method == http::Method::POST => {
                self.reconcile(request, date).await
            }
            ["bills", date] if method == http::Method::GET => self.bill(date).await,
            ["orders"]
            | ["orders", _]
            | ["orders", _, "refunds" | "close" | "shipments"]
            | ["refunds", _]
            | ["events", _, "redeliver"]
            | ["bills", _]
            | ["bills", _, "reconcile"]
            | ["anomalies"] => Err(ApiError::method_not_allowed()),
            _ => Err(ApiError::not_found()),
        }
    }
}

/// A malformed order number names no order.
fn order_no(no: &str) -> Result<OutTradeNo, ApiError> {
    OutTradeNo::parse(no).map_err(|_| ApiError::new(404, "ORDER_NOT_FOUND", "no such order"))
}

#[async_trait]
impl Handler for MerchantApiHandler {
    async fn handle(&self, request: Request) -> Response {
        let result = match authorize(&self.auth, &request) {
            Ok(merchant) => self.route(&request, &merchant).await,
            Err(e) => Err(e),
        };
        result.unwrap_or_else(|e| e.logged("merchant-api"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>, iam: Option<&str>) -> Request {
        let mut r = http::Request::new(super::super::Bytes::new());
        if let Some(a) = authorization {
            r.headers_mut()
                .insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        if let Some(arn) = iam {
            r.extensions_mut().insert(AuthorizerClaims(
                [(IAM_CALLER_CLAIM.to_owned(), arn.to_owned())].into(),
            ));
        }
        r
    }

    #[test]
    fn merchant_auth_admits_only_its_own_credential() {
        let token = "t".repeat(40);
        let by_token = MerchantAuth::Token(crate::config::Secret::new(token.clone()));
        let bearer = format!("Bearer {token}");
        assert!(authorize(&by_token, &request(Some(&bearer), None)).is_ok());
        for refused in [
            request(None, None),
            request(Some(&token), None),
            request(Some(&format!("Bearer {token}x")), None),
            request(Some("Bearer "), None),
            request(None, Some("arn:aws:iam::1:user/x")),
        ] {
            let e = authorize(&by_token, &refused).unwrap_err();
            assert_eq!((e.status, e.code), (401, "UNAUTHENTICATED"));
            assert!(!e.message.contains(&token));
        }
        let by_iam = MerchantAuth::Iam;
        assert_eq!(
            authorize(&by_iam, &request(None, Some("arn:aws:iam::1:user/x"))).unwrap(),
            "arn:aws:iam::1:user/x"
        );
        for refused in [
            request(Some(&bearer), None),
            request(None, Some("")),
            request(None, None),
        ] {
            assert_eq!(authorize(&by_iam, &refused).unwrap_err().status, 401);
        }
    }
}
