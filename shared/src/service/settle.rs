//! Settling a PENDING order with WeChat Pay's word: the one code path of the sweeper, of a
//! query of an expired order and of a close on demand. Paid there: applied (the callback's
//! own path); unpaid: closed there first, then locally with its stock returned.

use super::{ApplyError, Deps, PaymentOutcome, apply_payment};
use crate::{
    domain::Order,
    store::{CloseOutcome, StoreError},
    wechatpay::{
        gateway::PayError,
        notification::{TradeState, Transaction},
    },
};

/// What settling an unpaid order with WeChat Pay's word came to: the one code path of the
/// sweeper, a query of an expired order, and a close on demand.
#[derive(Debug)]
pub(crate) enum Settled {
    /// WeChat Pay had it paid: applied now.
    Paid(Box<Order>),
    /// WeChat Pay had it paid, and so did we.
    AlreadyPaid(Box<Order>),
    /// Closed at WeChat Pay (or unknown there) and locally, stock returned.
    Closed(Box<Order>),
    /// Paid at WeChat Pay but recorded as an anomaly (the order, when there is one).
    Anomaly(Option<Box<Order>>),
    /// The user is paying right now: left for later.
    UserPaying,
    /// Someone else settled it first (the order as it is, when there is one).
    Elsewhere(Option<Box<Order>>),
    Failed(SettleFailure),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SettleFailure {
    #[error("WeChat Pay: {0}")]
    WeChat(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Settles a PENDING order that must not stay open (expired, or given up by its owner) with
/// WeChat Pay's word: paid -> applied; unpaid -> closed there, then locally.
/// `why` begins the history entry's cause ("expired", "closed by its owner").
pub(crate) async fn settle_unpaid(deps: &Deps, order: Order, why: &str) -> Settled {
    let txn = match query_transaction(deps, &order).await {
        Ok(Some(txn)) => txn,
        // WeChat Pay never saw the order (its prepay failed): nobody can pay it.
        Ok(None) => return close_locally(deps, &order, why, "unknown to WeChat Pay").await,
        Err(e) => return Settled::Failed(SettleFailure::WeChat(format!("query: {e}"))),
    };
    match &txn.trade_state {
        // The money arrived (REFUND: a refund was started, so it had).
        TradeState::Success | TradeState::Refund => apply(deps, order, &txn).await,
        TradeState::Closed => {
            let how = answered("closed at WeChat Pay", txn.request_id.as_deref());
            close_locally(deps, &order, why, &how).await
        }
        TradeState::UserPaying => Settled::UserPaying,
        // Unpaid, or a state this code does not know: closing at WeChat Pay decides (it
        // refuses to close a paid order, and the query after a refusal says what it is).
        TradeState::NotPay | TradeState::PayError | TradeState::Revoked | TradeState::Other(_) => {
            close(deps, order, why).await
        }
    }
}

/// Closes at WeChat Pay first (so nobody can pay any more), then locally. A refused or
/// ambiguous close is followed by a query, and that answer decides.
async fn close(deps: &Deps, order: Order, why: &str) -> Settled {
    let close_error = match deps.gateway.close(order.out_trade_no.as_str()).await {
        Ok(request_id) => {
            let how = answered("closed at WeChat Pay", request_id.as_deref());
            return close_locally(deps, &order, why, &how).await;
        }
        Err(e) => e,
    };
    tracing::info!(out_trade_no = %order.out_trade_no, error = %close_error, "close refused or ambiguous; querying again");
    match query_transaction(deps, &order).await {
        Ok(None) => close_locally(deps, &order, why, "unknown to WeChat Pay").await,
        Ok(Some(txn)) if txn.trade_state.is_paid() => apply(deps, order, &txn).await,
        Ok(Some(txn)) if txn.trade_state == TradeState::Closed => {
            let how = answered("closed at WeChat Pay", txn.request_id.as_deref());
            close_locally(deps, &order, why, &how).await
        }
        Ok(Some(txn)) if txn.trade_state == TradeState::UserPaying => Settled::UserPaying,
        Ok(Some(txn)) => Settled::Failed(SettleFailure::WeChat(format!(
            "close failed ({close_error}) and the order is still {}",
            txn.trade_state
        ))),
        Err(e) => Settled::Failed(SettleFailure::WeChat(format!(
            "close failed ({close_error}), then query: {e}"
        ))),
    }
}

async fn apply(deps: &Deps, order: Order, txn: &Transaction) -> Settled {
    // Query answers carry no notification id.
    match apply_payment(deps, Some(order), txn, None).await {
        Ok(PaymentOutcome::Applied(o)) => Settled::Paid(o),
        Ok(PaymentOutcome::Duplicate(o)) => Settled::AlreadyPaid(o),
        Ok(PaymentOutcome::Anomaly { order, .. }) => Settled::Anomaly(order),
        Err(ApplyError::Store(e)) => Settled::Failed(SettleFailure::Store(e)),
        Err(ApplyError::Malformed(m)) => Settled::Failed(SettleFailure::WeChat(format!(
            "WeChat Pay's transaction: {m}"
        ))),
    }
}

/// What WeChat Pay said, with the `Request-ID` of its answer kept in the order's history.
fn answered(how: &str, request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!("{how} (WeChat Pay Request-ID {id})"),
        None => how.to_owned(),
    }
}

async fn close_locally(deps: &Deps, order: &Order, why: &str, how: &str) -> Settled {
    match deps
        .store
        .close(order, &format!("{why}; {how}"), deps.now())
        .await
    {
        Ok(CloseOutcome::Closed(o)) => Settled::Closed(o),
        Ok(CloseOutcome::NotPending(o)) => Settled::Elsewhere(Some(o)),
        Ok(CloseOutcome::NotFound) => Settled::Elsewhere(None),
        Err(e) => Settled::Failed(SettleFailure::Store(e)),
    }
}

/// WeChat Pay's transaction for `order` (query by out_trade_no); `None` when WeChat Pay has
/// no such order (`ORDER_NOT_EXIST`: its prepay never happened).
pub(crate) async fn query_transaction(
    deps: &Deps,
    order: &Order,
) -> Result<Option<Transaction>, PayError> {
    match deps
        .gateway
        .query_by_out_trade_no(order.out_trade_no.as_str())
        .await
    {
        Ok(txn) => Ok(Some(txn)),
        Err(e) if e.code() == Some("ORDER_NOT_EXIST") => Ok(None),
        Err(e) => Err(e),
    }
}
