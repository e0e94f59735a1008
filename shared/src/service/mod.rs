//! The use cases, as plain async functions over the ports (`Store`, `PayGateway`) and a
//! clock. Nothing here knows about HTTP, Lambda or DynamoDB: the edge parses requests into
//! these inputs and maps these errors to responses, once, in `crate::http`.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::{store::Store, wechatpay::gateway::PayGateway};

mod catalog;
mod events;
mod notification;
mod payment;
mod place_order;
mod query_order;
mod rebalance;
mod reconcile;
mod refund;
mod settle;
mod settlement;
mod shipping;
mod sweep;

/// What the edge hands [`handle_notification`]: the notification's `Wechatpay-*` headers.
pub use crate::wechatpay::WechatpayHeaders;
pub use catalog::{CATALOG_TTL, CatalogCache};
pub use events::{
    DispatchSettings, DispatchSummary, Dispatched, EventDeps, RedeliverError,
    STORE_CALLS_PER_ATTEMPT, WebhookPort, dispatch_due, dispatch_event, dispatch_ids,
    redeliver_event,
};
pub use notification::{NotificationOutcome, NotifyError, handle_notification};
pub use payment::{ApplyError, PaymentOutcome, UnreadOutcome, apply_payment};
pub use place_order::{
    PlaceOrderError, PlaceOrderInput, PlaceOrderReply, PlaceOrderRequest, place_order,
};
pub use query_order::{
    CloseError, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, OrderView, QueryError, SYNC_INTERVAL,
    close_order, close_order_as_merchant, list_orders, query_order,
};
pub use rebalance::{MAX_TRANSFERS_PER_SKU, RebalanceSummary, rebalance_stock};
pub use reconcile::{
    RECOVERIES_AT_ONCE, REPORT_MARGIN, ReconcileError, ReconcileOutcome, bill_report,
    previous_beijing_date, reconcile_bill,
};
pub use refund::{
    RefundError, RefundInput, RefundReply, RefundSweepSummary, apply_result as apply_refund_result,
    get_refund, out_refund_no_for, request_refund, resolve_abnormal, submit as submit_refund,
    sweep_refunds,
};
pub use settlement::{PushOutcome, check_settlement, handle_push};
pub use shipping::{
    ShipmentError, ShipmentInput, ShipmentReply, ShippingPorts, ShippingSweepSummary, TradeManaged,
    attempt_upload, record_shipment, sweep_uploads,
};
pub use sweep::{SweepSettings, SweepSummary, sweep_expired};

/// Where "now" comes from; tests substitute a fixed or moving clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Settings the use cases need beyond the ports.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub appid: String,
    pub mchid: String,
    /// How long an order may stay unpaid (`ORDER_TTL_SECONDS`).
    pub order_ttl: time::Duration,
}

/// The ports and settings every use case runs over, built once per process.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub gateway: Arc<dyn PayGateway>,
    pub clock: Clock,
    pub settings: ServiceSettings,
    /// The process's catalog cache (a sharded sku's price and active state).
    pub catalog: CatalogCache,
}

impl Deps {
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }
}
