//! query-order's use cases: the owner's view of one order, synced with WeChat Pay while it is
//! PENDING so a lost notification never leaves a paid order unpaid (and an expired one is
//! closed before answering), the owner's listing, and the owner's close. A payment found here
//! goes through `apply_payment`, the callback's own code path; a close through the sweeper's.

use time::Duration;

use super::settle::{SettleFailure, Settled, query_transaction, settle_unpaid};
use super::{ApplyError, Deps, PaymentOutcome, apply_payment};
use crate::{
    domain::{Openid, Order, OrderStatus, OutTradeNo},
    store::{Cursor, Page, StoreError, SyncClaim},
    wechatpay::sign::PayParams,
};

/// Concurrent callers ask WeChat Pay about one order at most once per this interval.
pub const SYNC_INTERVAL: Duration = Duration::seconds(5);

/// Listing page sizes: `limit` defaults to 20 and may be 1..=100.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
pub const MAX_LIST_LIMIT: u32 = 100;

/// An order as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order: Order,
    /// Whether the status is known to match WeChat Pay: true for PAID and CLOSED (final), and
    /// for a PENDING order this request checked; false when WeChat Pay could not be asked
    /// (unreachable, or another caller asked it moments ago).
    pub synced: bool,
    /// Fresh `wx.requestPayment` parameters, while the order is PENDING, unexpired and has a
    /// prepay_id.
    pub pay_params: Option<PayParams>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No such order, or not the caller's: the same answer, so nobody learns another user's
    /// out_trade_no exists.
    #[error("no such order")]
    NotFound,
    #[error("bad cursor: {0}")]
    BadCursor(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor(why) => QueryError::BadCursor(why),
            e => QueryError::Store(e),
        }
    }
}

/// `GET /orders/{out_trade_no}`: one conditional write claims the sync (and checks the
/// owner); only the claimant asks WeChat Pay.
pub async fn query_order(
    deps: &Deps,
    caller: &Openid,
    out_trade_no: &OutTradeNo,
) -> Result<OrderView, QueryError> {
    let now = deps.now();
    let (order, synced) = match deps
        .store
        .claim_sync(out_trade_no, Some(caller), now, SYNC_INTERVAL)
        .await?
    {
        SyncClaim::NotFound => return Err(QueryError::NotFound),
        SyncClaim::Refused(order) if order.openid != *caller => return Err(QueryError::NotFound),
        SyncClaim::Refused(order) => {
            let synced = order.status != OrderStatus::Pending;
            (*order, synced)
        }
        // An expired order is closed (or found paid) before answering: a user who keeps
        // polling must never keep it open (DESIGN.md section 3, invariant 10).
        SyncClaim::Claimed(order) if order.is_expired(now) => expire(deps, *order).await?,
        SyncClaim::Claimed(order) => sync(deps, *order).await?,
    };
    let pay_params = match (&order.status, &order.prepay_id) {
        (OrderStatus::Pending, Some(prepay_id)) if !order.is_expired(now) => deps
            .gateway
            .pay_params(prepay_id, now.unix_timestamp())
            .ok(),
        _ => None,
    };
    Ok(OrderView {
        order,
        synced,
        pay_params,
    })
}

/// Asks WeChat Pay about a PENDING order and applies a payment it reports. Returns the order
/// as it now stands and whether WeChat Pay answered.
async fn sync(deps: &Deps, order: Order) -> Result<(Order, bool), QueryError> {
    let out_trade_no = order.out_trade_no.clone();
    let txn = match query_transaction(deps, &order).await {
        Ok(Some(txn)) => txn,
        // WeChat Pay never saw the order (its prepay failed): nothing can have been paid.
        Ok(None) => return Ok((order, true)),
        Err(e) => {
            tracing::warn!(%out_trade_no, error = %e, outcome = "unsynced", "order query failed; answering the local state");
            return Ok((order, false));
        }
    };
    if !txn.trade_state.is_paid() {
        tracing::debug!(%out_trade_no, trade_state = %txn.trade_state, "order still unpaid at WeChat Pay");
        return Ok((order, true));
    }
    // Query answers carry no notification id.
    match apply_payment(deps, Some(order.clone()), &txn, None).await {
        Ok(outcome) => Ok((settled_order(outcome, order), true)),
        Err(ApplyError::Store(e)) => Err(QueryError::Store(e)),
        Err(ApplyError::Malformed(m)) => {
            tracing::error!(%out_trade_no, error = %m, outcome = "rejected:malformed", "WeChat Pay's transaction could not be applied");
            Ok((order, false))
        }
    }
}

/// Settles an expired PENDING order by the sweeper's own code path; returns the order as it
/// now stands and whether WeChat Pay answered.
async fn expire(deps: &Deps, order: Order) -> Result<(Order, bool), QueryError> {
    let out_trade_no = order.out_trade_no.clone();
    let settled = settle_unpaid(deps, order.clone(), "expired").await;
    tracing::info!(%out_trade_no, outcome = settled_label(&settled), "expired order settled on query");
    Ok(match settled {
        Settled::Paid(o) | Settled::AlreadyPaid(o) | Settled::Closed(o) => (*o, true),
        Settled::Anomaly(o) | Settled::Elsewhere(o) => (o.map_or(order, |o| *o), true),
        Settled::UserPaying => (order, true),
        Settled::Failed(SettleFailure::Store(e)) => return Err(QueryError::Store(e)),
        Settled::Failed(SettleFailure::WeChat(e)) => {
            tracing::warn!(%out_trade_no, error = %e, outcome = "unsynced", "expired order not settled; answering the local state");
            (order, false)
        }
    })
}

fn settled_label(settled: &Settled) -> &'static str {
    match settled {
        Settled::Paid(_) => "paid",
        Settled::AlreadyPaid(_) => "already_paid",
        Settled::Closed(_) => "closed",
        Settled::Anomaly(_) => "anomaly",
        Settled::UserPaying => "userpaying",
        Settled::Elsewhere(_) => "already_settled",
        Settled::Failed(_) => "failed",
    }
}

/// Why an owner's close was refused.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// No such order, or not the caller's.
    #[error("no such order")]
    NotFound,
    /// WeChat Pay collected money for it (PAID or later, or found paid while closing).
    #[error("the order is paid")]
    Paid(Box<Order>),
    /// The user is paying right now at WeChat Pay: it can be neither closed nor applied yet.
    #[error("the user is paying this order now")]
    UserPaying,
    #[error("WeChat Pay could not close the order: {0}")]
    PaymentProvider(String),
    #[error(transparent)]
    Store(StoreError),
}

/// `POST /orders/{out_trade_no}/close`: the owner gives up an unpaid order. Closed at WeChat
/// Pay first (a payment found there is applied instead), then locally with its stock
/// returned; an order already CLOSED answers as it is.
pub async fn close_order(
    deps: &Deps,
    caller: &Openid,
    out_trade_no: &OutTradeNo,
) -> Result<Order, CloseError> {
    close(deps, Some(caller), out_trade_no, "closed by its owner").await
}

/// `POST /merchant/orders/{out_trade_no}/close`: the merchant closes an unpaid order, as
/// its owner would.
pub async fn close_order_as_merchant(
    deps: &Deps,
    out_trade_no: &OutTradeNo,
) -> Result<Order, CloseError> {
    close(deps, None, out_trade_no, "closed by the merchant").await
}

async fn close(
    deps: &Deps,
    caller: Option<&Openid>,
    out_trade_no: &OutTradeNo,
    cause: &str,
) -> Result<Order, CloseError> {
    let order = match deps.store.get_order(out_trade_no).await {
        Ok(Some(order)) if caller.is_none_or(|c| order.openid == *c) => order,
        Ok(_) => return Err(CloseError::NotFound),
        Err(e) => return Err(CloseError::Store(e)),
    };
    match order.status {
        OrderStatus::Closed => return Ok(order),
        OrderStatus::Pending => {}
        _ => return Err(CloseError::Paid(Box::new(order))),
    }
    let settled = settle_unpaid(deps, order, cause).await;
    tracing::info!(%out_trade_no, outcome = settled_label(&settled), "close on demand");
    match settled {
        Settled::Closed(o) => Ok(*o),
        Settled::Elsewhere(Some(o)) if o.status == OrderStatus::Closed => Ok(*o),
        Settled::Paid(o) | Settled::AlreadyPaid(o) | Settled::Elsewhere(Some(o)) => {
            Err(CloseError::Paid(o))
        }
        Settled::Anomaly(Some(o)) => Err(CloseError::Paid(o)),
        Settled::Anomaly(None) | Settled::Elsewhere(None) => Err(CloseError::NotFound),
        Settled::UserPaying => Err(CloseError::UserPaying),
        Settled::Failed(SettleFailure::WeChat(m)) => Err(CloseError::PaymentProvider(m)),
        Settled::Failed(SettleFailure::Store(e)) => Err(CloseError::Store(e)),
    }
}

/// The order after a payment outcome: the store's version when it returned one.
fn settled_order(outcome: PaymentOutcome, before: Order) -> Order {
    match outcome {
        PaymentOutcome::Applied(o) | PaymentOutcome::Duplicate(o) => *o,
        PaymentOutcome::Anomaly { order, .. } => order.map(|o| *o).unwrap_or(before),
    }
}

/// `GET /orders?limit=&cursor=`: the caller's orders, newest first. Never syncs: a listing
/// is a summary; opening one order syncs it.
pub async fn list_orders(
    deps: &Deps,
    caller: &Openid,
    limit: u32,
    cursor: Option<&Cursor>,
) -> Result<Page<Order>, QueryError> {
    Ok(deps
        .store
        .list_orders(caller, limit.clamp(1, MAX_LIST_LIMIT), cursor)
        .await?)
}
