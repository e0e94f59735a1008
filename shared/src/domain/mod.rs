//! Domain types of wxpay-orders: orders, their states and lifecycle, payments, refunds,
//! events, money and identifiers.
//!
//! Nothing here knows about HTTP, Lambda, DynamoDB or WeChat Pay's wire format. Values are
//! parsed once at the edge into these newtypes, so code that holds one never re-validates.

mod anomaly;
mod event;
mod ids;
mod lifecycle;
mod money;
mod order;
mod payment;
mod reconciliation;
mod refund;
mod shipping;
mod status;
mod stock;

pub use anomaly::{Anomaly, AnomalyKind};
pub use event::{
    DELIVERED_EVENT_RETENTION, DeliveryStatus, EventData, EventType, OrderEvent, OrderToRead,
    OutboxEvent,
};
pub use ids::{IdError, IdempotencyKey, Openid, OutRefundNo, OutTradeNo, SkuId};
pub use lifecycle::{
    Guard, LifecycleError, OrderChange, PaidUnread, Plan, Record, StockChange, StockMove,
};
pub use money::{Money, MoneyError};
pub use order::{HistoryEntry, Order, OrderLine, Product, Quantity, QuantityError};
pub use payment::{NOTIFICATION_RETENTION, NotificationRecord, Payment};
pub use reconciliation::{
    BillMismatch, BillMismatchKind, BillReport, BillSums, DAY_SHARDS, MAX_REPORTED_MISMATCHES,
    day_shard,
};
pub use refund::{REFUND_TRANSITIONS, Refund, RefundStatus, RefundTransitionError, RestockLine};
pub use shipping::{
    DeliveryMode, LogisticsType, MAX_ITEM_DESC_CHARS, MAX_PACKAGES, Package,
    SETTLE_CHECK_AFTER_ESTIMATE, SETTLE_CHECK_INTERVAL, Shipment, ShipmentError, Shipping,
    UPLOAD_RETRY_WINDOW, Upload, UploadResult, UploadState, default_settlement_delay,
    upload_backoff,
};
pub use status::{OrderStatus, TRANSITIONS, TransitionError};
pub use stock::{
    MAX_STOCK_SHARDS, StockShard, StockTransfer, available_total, first_shard, rebalance,
};
