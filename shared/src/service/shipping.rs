//! Shipments (DESIGN.md section 12): the merchant records one, the order becomes SHIPPED
//! with the exact upload body and `order.shipped` in one transaction, then the body goes to
//! WeChat's `upload_shipping_info`; what WeChat cannot take yet the sweeper resends, byte for
//! byte, asking `get_order` first after an answer it never got.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use super::Deps;
pub use crate::config::TradeManaged;
use crate::{
    domain::{
        IdempotencyKey, LifecycleError, Order, OrderStatus, OutTradeNo, Package, Shipment,
        Shipping, Upload, UploadResult, UploadState, default_settlement_delay,
    },
    miniprogram::{MiniProgramApi, upload_body, upload_result},
    store::{StoreError, TransitionOutcome},
    telemetry::Metric,
    wechatpay::crypto::sha256_hex,
};

/// How long the merchant's request has to make the first upload before the sweeper may.
const FIRST_ATTEMPT_LEASE: time::Duration = time::Duration::seconds(30);

/// How long an `is_trade_managed` answer is trusted.
const MANAGED_ANSWER_TTL: time::Duration = time::Duration::hours(24);

/// The shipping side's ports: WeChat's mini-program API (absent when no AppSecret is
/// configured) and the `TRADE_MANAGED` setting.
pub struct ShippingPorts {
    pub wx: Option<Arc<dyn MiniProgramApi>>,
    pub trade_managed: TradeManaged,
    managed: Mutex<Option<(bool, OffsetDateTime)>>,
}

impl ShippingPorts {
    pub fn new(wx: Option<Arc<dyn MiniProgramApi>>, trade_managed: TradeManaged) -> Self {
        ShippingPorts {
            wx,
            trade_managed,
            managed: Mutex::new(None),
        }
    }

    /// Whether shipments are uploaded. `auto` asks WeChat; when WeChat cannot say, the
    /// shipment is uploaded (a merchant not under trade management gets WeChat's refusal as
    /// an anomaly, while one under it never has money frozen by a guess).
    async fn uploads(&self, now: OffsetDateTime) -> Result<bool, ShipmentError> {
        let wx = match (self.trade_managed, &self.wx) {
            (TradeManaged::Off, _) => return Ok(false),
            (_, None) => {
                return Err(ShipmentError::NotConfigured(
                    "shipments are uploaded to WeChat (TRADE_MANAGED is not off) but WX_APP_SECRET is not set".into(),
                ));
            }
            (TradeManaged::On, Some(_)) => return Ok(true),
            (TradeManaged::Auto, Some(wx)) => wx,
        };
        if let Some((managed, at)) = self.managed.lock().ok().and_then(|m| *m)
            && now - at < MANAGED_ANSWER_TTL
        {
            return Ok(managed);
        }
        match wx.is_trade_managed().await {
            Ok(managed) => {
                if let Ok(mut m) = self.managed.lock() {
                    *m = Some((managed, now));
                }
                tracing::info!(
                    is_trade_managed = managed,
                    outcome = "asked",
                    "WeChat trade management"
                );
                Ok(managed)
            }
            Err(e) => {
                tracing::warn!(error = %e, outcome = "assumed_managed", "is_trade_managed failed; uploading");
                Ok(true)
            }
        }
    }
}

/// The merchant's shipment as parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentInput {
    pub logistics_type: String,
    pub packages: Vec<Package>,
    pub is_all_delivered: bool,
}

/// What the merchant learns: the order as it stands, and whether WeChat has the shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentReply {
    /// Recorded, and uploaded (or refused by WeChat for good, or nothing to upload).
    Recorded(Box<Order>),
    /// Recorded; WeChat could not take it yet: the sweeper resends it.
    Uploading(Box<Order>),
}

impl ShipmentReply {
    pub fn order(&self) -> &Order {
        match self {
            ShipmentReply::Recorded(o) | ShipmentReply::Uploading(o) => o,
        }
    }

    fn of(order: Order) -> ShipmentReply {
        let pending = order
            .shipping
            .as_ref()
            .and_then(|s| s.upload.as_ref())
            .is_some_and(|u| u.state == UploadState::Pending);
        if pending {
            ShipmentReply::Uploading(Box::new(order))
        } else {
            ShipmentReply::Recorded(Box::new(order))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipmentError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no such order")]
    OrderNotFound,
    #[error("the order is {0}: only a paid order ships")]
    OrderNotPaid(OrderStatus),
    #[error("everything paid for this order is refunded or being refunded")]
    OrderRefunded,
    #[error("the order is shipped already (under another Idempotency-Key)")]
    AlreadyShipped,
    #[error("Idempotency-Key was used with a different shipment")]
    KeyReused,
    #[error("{0}")]
    NotConfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `POST /merchant/orders/{out_trade_no}/shipments`.
pub async fn record_shipment(
    deps: &Deps,
    ports: &ShippingPorts,
    out_trade_no: &OutTradeNo,
    key: &IdempotencyKey,
    input: ShipmentInput,
) -> Result<ShipmentReply, ShipmentError> {
    let shipment = Shipment::parse(
        &input.logistics_type,
        input.packages,
        input.is_all_delivered,
    )
    .map_err(|e| ShipmentError::InvalidRequest(e.0))?;
    let request_hash = sha256_hex(
        serde_json::to_string(&shipment)
            .unwrap_or_default()
            .as_bytes(),
    );
    let now = deps.now();
    let order = deps
        .store
        .get_order(out_trade_no)
        .await?
        .ok_or(ShipmentError::OrderNotFound)?;
    if order.shipping.is_some() {
        return replay(order, key, &request_hash);
    }
    check_shippable(&order)?;
    let uploads = ports.uploads(now).await?;
    let upload = if uploads {
        let body =
            upload_body(&order, &shipment, now).ok_or(ShipmentError::OrderNotPaid(order.status))?;
        Some(Upload {
            body,
            state: UploadState::Pending,
            attempts: 0,
            last_errcode: None,
            last_error: None,
            ambiguous: false,
            // The merchant's request makes the first attempt; the sweeper only after this
            // lease, and then asks get_order first.
            next_attempt_at: Some(now + FIRST_ATTEMPT_LEASE),
            uploaded_at: None,
        })
    } else {
        None
    };
    let settle_check_at = now + default_settlement_delay(shipment.logistics_type);
    let shipping = Shipping {
        shipment,
        shipped_at: now,
        estimated_settlement_at: None,
        settle_check_at: Some(settle_check_at),
        request_key: key.as_str().to_owned(),
        request_hash: request_hash.clone(),
        upload,
        settled_at: None,
    };
    let plan_for = |o: &Order| o.plan_shipped(&shipping, now);
    let shipped = match deps.store.transition(&order, &plan_for, now).await? {
        TransitionOutcome::Applied(order) => *order,
        TransitionOutcome::Refused { order, reason } => {
            if order.shipping.is_some() {
                return replay(*order, key, &request_hash);
            }
            check_shippable(&order)?;
            return Err(ShipmentError::Store(StoreError::Inconsistent(format!(
                "order {out_trade_no} refused its shipment: {reason:?}"
            ))));
        }
        TransitionOutcome::NotFound => return Err(ShipmentError::OrderNotFound),
    };
    tracing::info!(out_trade_no = %out_trade_no, transaction_id = shipped.transaction_id.as_deref().unwrap_or(""), upload = uploads, outcome = "shipped", "shipment recorded");
    crate::telemetry::emit_metrics(&[(Metric::OrderShipped, 1)], now);
    let Some(wx) = ports.wx.as_ref().filter(|_| uploads) else {
        return Ok(ShipmentReply::of(shipped));
    };
    match attempt_upload(deps, wx.as_ref(), shipped.clone(), true).await {
        Ok(order) => Ok(ShipmentReply::of(order)),
        // Recorded and waiting for its upload: the sweeper sends it.
        Err(e) => {
            tracing::warn!(out_trade_no = %out_trade_no, error = %e, outcome = "upload_deferred", "upload result not recorded; the sweeper sends it");
            Ok(ShipmentReply::Uploading(Box::new(shipped)))
        }
    }
}

fn check_shippable(order: &Order) -> Result<(), ShipmentError> {
    match order.status {
        OrderStatus::Refunded => Err(ShipmentError::OrderRefunded),
        s if !s.can_transition(OrderStatus::Shipped) => Err(ShipmentError::OrderNotPaid(s)),
        _ if order
            .refundable()
            .is_ok_and(|r| r == crate::domain::Money::ZERO) =>
        {
            Err(ShipmentError::OrderRefunded)
        }
        _ => Ok(()),
    }
}

/// A shipment asked again: the same request under its key is answered from the order.
fn replay(
    order: Order,
    key: &IdempotencyKey,
    request_hash: &str,
) -> Result<ShipmentReply, ShipmentError> {
    let Some(shipping) = &order.shipping else {
        return Err(ShipmentError::OrderNotPaid(order.status));
    };
    if shipping.request_key != key.as_str() {
        return Err(ShipmentError::AlreadyShipped);
    }
    if shipping.request_hash != request_hash {
        return Err(ShipmentError::KeyReused);
    }
    Ok(ShipmentReply::of(order))
}

/// One upload attempt of a shipped order's pending upload and its result recorded: the
/// order as it then stands. Only the merchant's own request (`first`) sends without asking:
/// every later attempt asks WeChat's `get_order` first (an earlier one may have been taken
/// with its answer lost, or cut off before its result was recorded), so a shipment WeChat
/// already shows is never sent again (a resend could spend the order's one re-ship).
pub async fn attempt_upload(
    deps: &Deps,
    wx: &dyn MiniProgramApi,
    order: Order,
    first: bool,
) -> Result<Order, StoreError> {
    let Some(upload) = order
        .shipping
        .as_ref()
        .and_then(|s| s.upload.as_ref())
        .filter(|u| u.state == UploadState::Pending)
    else {
        return Ok(order);
    };
    let transaction_id = order.transaction_id.clone().unwrap_or_default();
    let mut result = None;
    if !first || upload.ambiguous {
        match wx.get_order(&transaction_id).await {
            Ok(o) if o.order_state >= 2 && o.order_state != 5 => {
                result = Some(UploadResult::Uploaded);
            }
            Ok(_) => {}
            Err(e) => {
                result = Some(UploadResult::Retry {
                    errcode: None,
                    error: format!("get_order: {e}"),
                    ambiguous: true,
                });
            }
        }
    }
    let result = match result {
        Some(r) => r,
        None => upload_result(wx.upload_shipping_info(&upload.body).await),
    };
    let now = deps.now();
    let plan_for = |o: &Order| o.plan_upload_result(&result, now);
    let outcome = deps.store.transition(&order, &plan_for, now).await?;
    let (errcode, outcome_name) = match &result {
        UploadResult::Uploaded => (None, "uploaded"),
        UploadResult::Retry { errcode, .. } => (*errcode, "retrying"),
        UploadResult::Refused { errcode, .. } => (Some(*errcode), "refused"),
    };
    let metric = match &result {
        UploadResult::Uploaded => Metric::ShippingUploaded,
        UploadResult::Retry { .. } => Metric::ShippingUploadRetried,
        UploadResult::Refused { .. } => Metric::ShippingUploadFailed,
    };
    crate::telemetry::emit_metrics(&[(metric, 1)], now);
    match outcome {
        TransitionOutcome::Applied(order) => {
            let state = order
                .shipping
                .as_ref()
                .and_then(|s| s.upload.as_ref())
                .map_or("", |u| u.state.as_str());
            tracing::info!(out_trade_no = %order.out_trade_no, %transaction_id, errcode, upload_state = state, outcome = outcome_name, "shipping upload attempt");
            Ok(*order)
        }
        // Another attempt recorded its result first (a concurrent sweep): it stands.
        TransitionOutcome::Refused {
            order,
            reason: Some(LifecycleError::NotShipped(_)),
        } => Ok(*order),
        TransitionOutcome::Refused { order, reason } => Err(StoreError::Inconsistent(format!(
            "order {}: upload result refused: {reason:?}",
            order.out_trade_no
        ))),
        TransitionOutcome::NotFound => Err(StoreError::Inconsistent(format!(
            "order {} vanished during its upload",
            order.out_trade_no
        ))),
    }
}

/// What one sweep of due uploads did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShippingSweepSummary {
    pub checked: u64,
    pub uploaded: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Shipped orders WeChat settled whose push never came (completed by `get_order`).
    pub completed: u64,
    pub errors: u64,
}

/// The sweeper's part: every shipped order whose upload is due is sent again, and every one
/// past its settlement check is asked about, until the deadline.
pub async fn sweep_uploads(
    deps: &Deps,
    ports: &ShippingPorts,
    deadline: Option<OffsetDateTime>,
) -> ShippingSweepSummary {
    let mut summary = ShippingSweepSummary::default();
    let Some(wx) = ports.wx.as_ref() else {
        return summary;
    };
    let now = deps.now();
    let mut cursor = None;
    loop {
        let page = match deps.store.due_shipments(now, 50, cursor.as_ref()).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, outcome = "failed", "due shipments not read");
                summary.errors += 1;
                return summary;
            }
        };
        for order in page.items {
            if deadline.is_some_and(|d| deps.now() >= d) {
                return summary;
            }
            summary.checked += 1;
            let upload_due = order
                .shipping
                .as_ref()
                .and_then(|s| s.upload.as_ref())
                .filter(|u| u.state == UploadState::Pending)
                .and_then(|u| u.next_attempt_at)
                .is_some_and(|at| at <= now);
            let order = if upload_due {
                match attempt_upload(deps, wx.as_ref(), order, false).await {
                    Ok(order) => {
                        match order
                            .shipping
                            .as_ref()
                            .and_then(|s| s.upload.as_ref())
                            .map(|u| u.state)
                        {
                            Some(UploadState::Uploaded) => summary.uploaded += 1,
                            Some(UploadState::Failed) => summary.failed += 1,
                            _ => summary.retrying += 1,
                        }
                        order
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, outcome = "failed", "shipping upload not recorded");
                        summary.errors += 1;
                        continue;
                    }
                }
            } else {
                order
            };
            let settle_due = order.status == OrderStatus::Shipped
                && order.shipping.as_ref().is_some_and(|s| {
                    s.settled_at.is_none() && s.settle_check_at.is_some_and(|at| at <= now)
                });
            if settle_due {
                match super::settlement::check_settlement(deps, wx.as_ref(), order).await {
                    Ok(true) => summary.completed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, outcome = "failed", "settlement check not recorded");
                        summary.errors += 1;
                    }
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return summary,
        }
    }
}
