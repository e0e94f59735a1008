//! Settlement of shipped orders (DESIGN.md section 12): WeChat's message push
//! `trade_manage_order_settlement` moves SHIPPED to COMPLETED exactly once (its ship-time
//! twin keeps WeChat's estimate), and since pushes can be lost the sweeper asks `get_order`
//! about shipped orders past that estimate and completes them the same way.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::Deps;
use crate::{
    domain::{Anomaly, AnomalyKind, LifecycleError, Order, OrderStatus},
    miniprogram::MiniProgramApi,
    store::{StoreError, TransitionOutcome},
    telemetry::Metric,
};

/// WeChat settles an unconfirmed express shipment after 10 days: one still not settled 15
/// days after it shipped is counted (and alarmed) on every daily check.
pub const UNSETTLED_ALARM_AFTER: time::Duration = time::Duration::days(15);

/// What one push came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// SHIPPED -> COMPLETED.
    Completed,
    /// Completed before (a replayed push, or the sweeper got there first).
    AlreadyCompleted,
    /// The ship-time push: WeChat's estimate kept.
    ShippedAtWechat,
    /// For a transaction or an order state that does not fit: kept as an anomaly.
    Mismatch,
    /// A reminder to the merchant (logged and counted).
    Reminder,
    /// An event this backend does not act on: acknowledged.
    Ignored,
}

impl PushOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            PushOutcome::Completed => "completed",
            PushOutcome::AlreadyCompleted => "duplicate",
            PushOutcome::ShippedAtWechat => "shipped_at_wechat",
            PushOutcome::Mismatch => "anomaly",
            PushOutcome::Reminder => "reminder",
            PushOutcome::Ignored => "ignored",
        }
    }
}

/// A unix-seconds field of a push: absent, empty or `0` mean none (the ship-time push
/// carries an empty `settlement_time`).
fn unix_field(message: &BTreeMap<String, String>, name: &str) -> Option<OffsetDateTime> {
    message
        .get(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&s| s > 0)
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
}

/// A decrypted, verified push message (its top-level fields), applied.
pub async fn handle_push(
    deps: &Deps,
    message: &BTreeMap<String, String>,
) -> Result<PushOutcome, StoreError> {
    let event = message.get("Event").map(String::as_str).unwrap_or("");
    let now = deps.now();
    match event {
        "trade_manage_order_settlement" => {}
        "trade_manage_remind_access_api" | "trade_manage_remind_shipping" => {
            tracing::warn!(
                event,
                transaction_id = message
                    .get("transaction_id")
                    .map(String::as_str)
                    .unwrap_or(""),
                out_trade_no = message
                    .get("merchant_trade_no")
                    .map(String::as_str)
                    .unwrap_or(""),
                msg = message.get("msg").map(String::as_str).unwrap_or(""),
                outcome = "reminder",
                "WeChat trade management reminder"
            );
            crate::telemetry::emit_metrics(&[(Metric::ShippingReminder, 1)], now);
            return Ok(PushOutcome::Reminder);
        }
        other => {
            tracing::info!(
                event = other,
                outcome = "ignored",
                "message push not acted on"
            );
            return Ok(PushOutcome::Ignored);
        }
    }
    let transaction_id = message.get("transaction_id").cloned().unwrap_or_default();
    let settlement_time = unix_field(message, "settlement_time");
    let Some(order) = order_of(deps, &transaction_id).await? else {
        mismatch(
            deps,
            None,
            &transaction_id,
            "settlement",
            "a trade-management settlement push for a transaction not in the table".into(),
        )
        .await?;
        return Ok(PushOutcome::Mismatch);
    };
    let Some(settled_at) = settlement_time else {
        let estimate = unix_field(message, "estimated_settlement_time");
        let plan = |o: &Order| o.plan_shipped_at_wechat(estimate, now);
        let outcome = deps.store.transition(&order, &plan, now).await?;
        tracing::info!(out_trade_no = %order.out_trade_no, %transaction_id, applied = matches!(outcome, TransitionOutcome::Applied(_)), outcome = "shipped_at_wechat", "ship-time push");
        return Ok(PushOutcome::ShippedAtWechat);
    };
    complete(deps, order, &transaction_id, settled_at, "push").await
}

async fn order_of(deps: &Deps, transaction_id: &str) -> Result<Option<Order>, StoreError> {
    if transaction_id.is_empty() {
        return Ok(None);
    }
    let Some(payment) = deps.store.get_payment(transaction_id).await? else {
        return Ok(None);
    };
    deps.store.get_order(&payment.out_trade_no).await
}

/// SHIPPED -> COMPLETED once, whoever learnt it (a push, the sweeper's query).
async fn complete(
    deps: &Deps,
    order: Order,
    transaction_id: &str,
    settled_at: OffsetDateTime,
    by: &str,
) -> Result<PushOutcome, StoreError> {
    let now = deps.now();
    let cause = format!("settled at WeChat ({by})");
    let plan = |o: &Order| o.plan_completed(settled_at, &cause, now);
    let outcome = match deps.store.transition(&order, &plan, now).await? {
        TransitionOutcome::Applied(_) => {
            crate::telemetry::emit_metrics(&[(Metric::OrderCompleted, 1)], now);
            PushOutcome::Completed
        }
        TransitionOutcome::Refused { order: now_is, .. }
            if now_is.status == OrderStatus::Completed =>
        {
            PushOutcome::AlreadyCompleted
        }
        // Settled at WeChat, not SHIPPED here (shipped in the console, refunded, held):
        // the merchant decides.
        TransitionOutcome::Refused { order: now_is, .. } => {
            mismatch(
                deps,
                Some(&now_is),
                transaction_id,
                "settled",
                format!(
                    "WeChat settled the order ({by}) while it is {} here",
                    now_is.status
                ),
            )
            .await?;
            PushOutcome::Mismatch
        }
        TransitionOutcome::NotFound => PushOutcome::Mismatch,
    };
    tracing::info!(out_trade_no = %order.out_trade_no, %transaction_id, by, outcome = outcome.as_str(), "settlement");
    Ok(outcome)
}

async fn mismatch(
    deps: &Deps,
    order: Option<&Order>,
    transaction_id: &str,
    what: &str,
    detail: String,
) -> Result<(), StoreError> {
    let now = deps.now();
    let anomaly = Anomaly {
        out_trade_no: order.map(|o| o.out_trade_no.clone()),
        kind: AnomalyKind::ShippingStateMismatch,
        cause: format!("{transaction_id}#{what}"),
        at: now,
        transaction_id: Some(transaction_id.to_owned()).filter(|t| !t.is_empty()),
        notification_id: None,
        detail,
        plaintext: None,
    };
    deps.store.record_anomaly(&anomaly, now).await?;
    crate::telemetry::emit_metrics(&[(Metric::ShippingStateMismatch, 1)], now);
    tracing::warn!(%transaction_id, what, outcome = "anomaly", "shipping state mismatch");
    Ok(())
}

/// The sweeper's settlement check of a shipped order past its `settle_check_at`:
/// WeChat's `get_order` state 4 completes it, 5 (refunded there, not here) is an anomaly,
/// anything else is asked again in a day. Returns whether it completed.
pub async fn check_settlement(
    deps: &Deps,
    wx: &dyn MiniProgramApi,
    order: Order,
) -> Result<bool, StoreError> {
    let transaction_id = order.transaction_id.clone().unwrap_or_default();
    let wechat = match wx.get_order(&transaction_id).await {
        Ok(o) => o,
        Err(e) => {
            // Asked again with the next daily check, not every minute (a payment WeChat never
            // indexes answers 10060001 for good).
            tracing::warn!(out_trade_no = %order.out_trade_no, %transaction_id, error = %e, outcome = "retry", "get_order failed; asked again tomorrow");
            let now = deps.now();
            let plan = |o: &Order| o.plan_settle_check_later(now);
            deps.store.transition(&order, &plan, now).await?;
            return Ok(false);
        }
    };
    let now = deps.now();
    if wechat.order_state == 4 {
        let done = complete(deps, order, &transaction_id, now, "get_order").await?;
        return Ok(done == PushOutcome::Completed);
    }
    if wechat.order_state == 5 && order.status != OrderStatus::Refunded {
        mismatch(
            deps,
            Some(&order),
            &transaction_id,
            "refunded",
            "WeChat shows the order refunded (state 5); it is not refunded here".into(),
        )
        .await?;
    }
    let shipped_at = order.shipping.as_ref().map_or(now, |s| s.shipped_at);
    if now - shipped_at >= UNSETTLED_ALARM_AFTER {
        tracing::warn!(out_trade_no = %order.out_trade_no, %transaction_id, order_state = wechat.order_state, days = (now - shipped_at).whole_days(), outcome = "not_settled_late", "shipped order still not settled at WeChat");
        crate::telemetry::emit_metrics(&[(Metric::ShippedNotSettled, 1)], now);
    }
    let plan = |o: &Order| o.plan_settle_check_later(now);
    match deps.store.transition(&order, &plan, now).await? {
        TransitionOutcome::Applied(_)
        | TransitionOutcome::Refused {
            reason: Some(LifecycleError::NotShipped(_)),
            ..
        } => {}
        other => {
            tracing::warn!(out_trade_no = %order.out_trade_no, outcome = "not_rescheduled", "settlement check not rescheduled: {other:?}")
        }
    }
    tracing::info!(out_trade_no = %order.out_trade_no, %transaction_id, order_state = wechat.order_state, outcome = "not_settled", "settlement check");
    Ok(false)
}
