//! Applying a payment WeChat Pay confirmed, whoever learned of it first: the notification,
//! an order query, or the sweeper. One code path, so duplicates and anomalies are handled the
//! same way everywhere (DESIGN.md section 6, invariants 1 and 5).

use time::OffsetDateTime;

use super::Deps;
use crate::{
    domain::{Money, Order, OrderStatus, OutTradeNo, time::parse_rfc3339},
    store::{Anomaly, AnomalyKind, MarkPaidOutcome, Payment, StoreError},
    wechatpay::notification::Transaction,
};

/// What became of a confirmed payment. Every variant is final: nothing is left to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// PENDING -> PAID now.
    Applied(Box<Order>),
    /// Already PAID with this transaction_id.
    Duplicate(Box<Order>),
    /// Could not be applied; an anomaly item records it for a human.
    Anomaly {
        kind: AnomalyKind,
        order: Option<Box<Order>>,
    },
}

impl PaymentOutcome {
    /// The `outcome` field of log lines: `applied`, `duplicate`, `anomaly:<kind>`.
    pub fn label(&self) -> String {
        match self {
            PaymentOutcome::Applied(_) => "applied".to_owned(),
            PaymentOutcome::Duplicate(_) => "duplicate".to_owned(),
            PaymentOutcome::Anomaly { kind, .. } => {
                format!("anomaly:{}", kind.as_str().to_ascii_lowercase())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("WeChat Pay's transaction is incomplete: {0}")]
    Malformed(String),
}

/// Turns a SUCCESS transaction into our `Payment`.
fn payment_of(
    txn: &Transaction,
    notification_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Payment, ApplyError> {
    let transaction_id = txn
        .transaction_id
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApplyError::Malformed("no transaction_id".into()))?;
    let out_trade_no = OutTradeNo::parse(&txn.out_trade_no)
        .map_err(|e| ApplyError::Malformed(format!("out_trade_no: {e}")))?;
    let amount = txn
        .amount
        .as_ref()
        .ok_or_else(|| ApplyError::Malformed("no amount".into()))?;
    let total = Money::from_fen(amount.total)
        .map_err(|e| ApplyError::Malformed(format!("amount.total: {e}")))?;
    let payer_total = Money::from_fen(amount.payer_total.unwrap_or(amount.total))
        .map_err(|e| ApplyError::Malformed(format!("amount.payer_total: {e}")))?;
    let success_time = match txn.success_time.as_deref() {
        Some(t) => parse_rfc3339(t).map_err(|e| ApplyError::Malformed(e.to_string()))?,
        None => now,
    };
    Ok(Payment {
        transaction_id,
        out_trade_no,
        amount: total,
        payer_total,
        success_time,
        notification_id: notification_id.map(str::to_owned),
    })
}

/// Applies `txn` (trade_state SUCCESS) to `order`, the caller's read of it (`None`: no such
/// order). Losing races are settled by the store's conditional writes, not by this read.
pub async fn apply_payment(
    deps: &Deps,
    order: Option<Order>,
    txn: &Transaction,
    notification_id: Option<&str>,
) -> Result<PaymentOutcome, ApplyError> {
    let now = deps.now();
    let payment = payment_of(txn, notification_id, now)?;
    let outcome = match order {
        None => {
            anomaly(
                deps,
                &payment,
                AnomalyKind::UnknownOrder,
                None,
                "no such order",
            )
            .await?
        }
        Some(order) => settle(deps, order, &payment, now).await?,
    };
    let (status, amount_total) = match &outcome {
        PaymentOutcome::Applied(o) | PaymentOutcome::Duplicate(o) => {
            (Some(o.status.as_str()), Some(o.amount_total.fen()))
        }
        PaymentOutcome::Anomaly { order, .. } => (
            order.as_ref().map(|o| o.status.as_str()),
            order.as_ref().map(|o| o.amount_total.fen()),
        ),
    };
    let label = outcome.label();
    if matches!(outcome, PaymentOutcome::Anomaly { .. }) {
        crate::telemetry::emit_metrics(&[("PaymentAnomaly", 1)], now);
        tracing::error!(
            out_trade_no = %payment.out_trade_no,
            transaction_id = %payment.transaction_id,
            notification_id = notification_id.unwrap_or(""),
            amount = payment.amount.fen(),
            order_amount = amount_total,
            order_status = status,
            outcome = %label,
            "payment recorded as anomaly"
        );
    } else {
        tracing::info!(
            out_trade_no = %payment.out_trade_no,
            transaction_id = %payment.transaction_id,
            notification_id = notification_id.unwrap_or(""),
            amount = payment.amount.fen(),
            outcome = %label,
            "payment settled"
        );
    }
    Ok(outcome)
}

async fn settle(
    deps: &Deps,
    order: Order,
    payment: &Payment,
    now: OffsetDateTime,
) -> Result<PaymentOutcome, ApplyError> {
    // The read already tells most losers what they lost to; the conditional write below
    // settles the races the read could not see.
    if let Some(known) = judge(&order, payment) {
        return finish(deps, known, order, payment).await;
    }
    let result = deps.store.mark_paid(&order, payment, now).await?;
    let (verdict, current) = match result {
        MarkPaidOutcome::Applied(o) => return Ok(PaymentOutcome::Applied(o)),
        MarkPaidOutcome::AlreadyPaid(o)
        | MarkPaidOutcome::Closed(o)
        | MarkPaidOutcome::AmountMismatch(o) => match judge(&o, payment) {
            Some(v) => (v, *o),
            // The store said no, yet the current item looks payable: only a different
            // transaction_id already holding the payment item can explain it.
            None => (Verdict::Anomaly(AnomalyKind::DoublePayment), *o),
        },
        MarkPaidOutcome::PaymentExists { out_trade_no } if out_trade_no == payment.out_trade_no => {
            (Verdict::Duplicate, order)
        }
        MarkPaidOutcome::PaymentExists { .. } => {
            (Verdict::Anomaly(AnomalyKind::DoublePayment), order)
        }
        MarkPaidOutcome::NotFound => {
            return anomaly(
                deps,
                payment,
                AnomalyKind::UnknownOrder,
                None,
                "no such order",
            )
            .await;
        }
    };
    finish(deps, verdict, current, payment).await
}

enum Verdict {
    Duplicate,
    Anomaly(AnomalyKind),
}

/// What the order as it stands says about this payment; `None` when it can be applied.
fn judge(order: &Order, payment: &Payment) -> Option<Verdict> {
    match order.status {
        OrderStatus::Paid if order.transaction_id.as_deref() == Some(&payment.transaction_id) => {
            Some(Verdict::Duplicate)
        }
        OrderStatus::Paid => Some(Verdict::Anomaly(AnomalyKind::DoublePayment)),
        OrderStatus::Closed => Some(Verdict::Anomaly(AnomalyKind::PaidAfterClose)),
        OrderStatus::Pending if order.amount_total != payment.amount => {
            Some(Verdict::Anomaly(AnomalyKind::AmountMismatch))
        }
        OrderStatus::Pending => None,
    }
}

async fn finish(
    deps: &Deps,
    verdict: Verdict,
    order: Order,
    payment: &Payment,
) -> Result<PaymentOutcome, ApplyError> {
    match verdict {
        Verdict::Duplicate => Ok(PaymentOutcome::Duplicate(Box::new(order))),
        Verdict::Anomaly(kind) => {
            let detail = match kind {
                AnomalyKind::AmountMismatch => format!(
                    "paid {} fen, order amount_total {} fen",
                    payment.amount.fen(),
                    order.amount_total.fen()
                ),
                AnomalyKind::DoublePayment => format!(
                    "order already paid by transaction {}",
                    order.transaction_id.as_deref().unwrap_or("?")
                ),
                AnomalyKind::PaidAfterClose => "order was closed before the payment".to_owned(),
                AnomalyKind::UnknownOrder => "no such order".to_owned(),
            };
            anomaly(deps, payment, kind, Some(order), &detail).await
        }
    }
}

async fn anomaly(
    deps: &Deps,
    payment: &Payment,
    kind: AnomalyKind,
    order: Option<Order>,
    detail: &str,
) -> Result<PaymentOutcome, ApplyError> {
    deps.store
        .record_anomaly(&Anomaly {
            out_trade_no: payment.out_trade_no.clone(),
            kind,
            // A re-delivery repeats success_time, so it lands on the same anomaly item.
            at: payment.success_time,
            transaction_id: Some(payment.transaction_id.clone()),
            notification_id: payment.notification_id.clone(),
            detail: detail.to_owned(),
        })
        .await?;
    Ok(PaymentOutcome::Anomaly {
        kind,
        order: order.map(Box::new),
    })
}
