//! Applying a payment WeChat Pay confirmed, whoever learned of it first: the notification,
//! an order query, or the sweeper. One code path, so duplicates and anomalies are handled the
//! same way everywhere (DESIGN.md section 6, invariants 1 and 5).

use time::OffsetDateTime;

use super::Deps;
use crate::{
    domain::{Money, Openid, Order, OrderStatus, OutTradeNo, PaidUnread},
    store::{Anomaly, AnomalyKind, MarkPaidOutcome, PaidUnreadOutcome, Payment, StoreError},
    telemetry::Metric,
    timefmt::parse_rfc3339,
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

/// Turns a SUCCESS transaction into our `Payment`, refusing what WeChat Pay cannot have
/// meant (a payer_total above the total, a currency that is not a code).
pub(crate) fn payment_of(
    txn: &Transaction,
    notification_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<Payment, ApplyError> {
    let transaction_id = txn
        .transaction_id
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApplyError::Malformed("no transaction_id".into()))?;
    // WeChat Pay's ids are short and plain; anything else would end up in keys and logs.
    if transaction_id.len() > 64
        || !transaction_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
    {
        return Err(ApplyError::Malformed(format!(
            "transaction_id {:?} is not a WeChat Pay transaction id",
            transaction_id.chars().take(64).collect::<String>()
        )));
    }
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
    // Coupons make the payer pay less than the order's total, never more.
    if payer_total > total {
        return Err(ApplyError::Malformed(format!(
            "amount.payer_total {} fen is above amount.total {} fen",
            payer_total.fen(),
            total.fen()
        )));
    }
    let currency = match amount.currency.as_deref() {
        None => "CNY".to_owned(),
        Some(c) if !c.is_empty() && c.len() <= 8 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            c.to_owned()
        }
        Some(c) => {
            return Err(ApplyError::Malformed(format!(
                "amount.currency {:?} is not a currency code",
                c.chars().take(16).collect::<String>()
            )));
        }
    };
    let payer = match txn.payer.as_ref().map(|p| p.openid.as_str()) {
        None | Some("") => None,
        Some(openid) => Some(
            Openid::parse(openid)
                .map_err(|e| ApplyError::Malformed(format!("payer.openid: {e}")))?,
        ),
    };
    let success_time = match txn.success_time.as_deref() {
        Some(t) => parse_rfc3339(t).map_err(|e| ApplyError::Malformed(e.to_string()))?,
        None => now,
    };
    Ok(Payment {
        transaction_id,
        out_trade_no,
        amount: total,
        payer_total,
        currency,
        request_id: txn.request_id.clone(),
        payer,
        success_time,
        notification_id: notification_id.map(str::to_owned),
        notification: None,
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
    let payment = payment_of(txn, notification_id, deps.now())?;
    Ok(apply_confirmed(deps, order, payment).await?)
}

/// Applies a notification's payment without reading its order first (DESIGN 5): one
/// transaction that holds only if the order is PENDING with the payment's amount and
/// currency. Its refusal carries the order as it is, and the path that reads decides from
/// there (a duplicate, an anomaly): one DynamoDB call for a first delivery or a duplicate.
pub(crate) async fn apply_unread(
    deps: &Deps,
    payment: Payment,
) -> Result<UnreadOutcome, StoreError> {
    let now = deps.now();
    let plan = PaidUnread::plan(&payment, now)
        .map_err(|e| StoreError::Invalid(format!("PAID of {}: {e}", payment.out_trade_no)))?;
    let order = match deps.store.mark_paid_unread(&plan).await? {
        PaidUnreadOutcome::Applied => {
            tracing::info!(
                out_trade_no = %payment.out_trade_no,
                transaction_id = %payment.transaction_id,
                notification_id = payment.notification_id.as_deref(),
                amount = payment.amount.fen(),
                outcome = "applied",
                "payment settled"
            );
            return Ok(UnreadOutcome::Applied);
        }
        PaidUnreadOutcome::OrderRefused(order) => order.map(|o| *o),
        // The order was payable but the transaction is recorded: only a read can say more.
        PaidUnreadOutcome::PaymentExists { .. } => {
            deps.store.get_order(&payment.out_trade_no).await?
        }
    };
    Ok(UnreadOutcome::Settled(
        apply_confirmed(deps, order, payment).await?,
    ))
}

/// What became of a payment applied without a read ([`apply_unread`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnreadOutcome {
    /// PENDING -> PAID now; no order was read, so there is none to show.
    Applied,
    /// Refused, then settled on the order as it is (a duplicate, an anomaly).
    Settled(PaymentOutcome),
}

impl UnreadOutcome {
    pub fn label(&self) -> String {
        match self {
            UnreadOutcome::Applied => "applied".to_owned(),
            UnreadOutcome::Settled(outcome) => outcome.label(),
        }
    }
}

/// Applies a payment already read from WeChat Pay's answer to `order` (the caller's read of
/// it; `None`: no such order).
pub(crate) async fn apply_confirmed(
    deps: &Deps,
    order: Option<Order>,
    payment: Payment,
) -> Result<PaymentOutcome, StoreError> {
    let now = deps.now();
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
        Some(order) => {
            if let Some(payer) = &payment.payer {
                notice_payer(&order, &payment.transaction_id, payer.as_str(), now);
            }
            settle(deps, order, &payment, now).await?
        }
    };
    log_outcome(&payment, &outcome, now);
    Ok(outcome)
}

/// Someone else may pay for a user (a friend's 代付): the money is the order's, but it is
/// worth a line and a count. Said when the payment meets its order: as it is applied on a
/// read, or when the dispatcher completes an `order.paid` written without one.
pub(crate) fn notice_payer(order: &Order, transaction_id: &str, payer: &str, now: OffsetDateTime) {
    if payer == order.openid.as_str() {
        return;
    }
    crate::telemetry::emit_metrics(&[(Metric::PayerNotOwner, 1)], now);
    tracing::warn!(out_trade_no = %order.out_trade_no, %transaction_id, %payer, owner = %order.openid, outcome = "payer_not_owner", "paid by someone other than the order's owner");
}

/// The payment's log line (and the anomaly metric), with the order as it stands.
fn log_outcome(payment: &Payment, outcome: &PaymentOutcome, now: OffsetDateTime) {
    let notification_id = payment.notification_id.as_deref();
    let order = match outcome {
        PaymentOutcome::Applied(o) | PaymentOutcome::Duplicate(o) => Some(o.as_ref()),
        PaymentOutcome::Anomaly { order, .. } => order.as_deref(),
    };
    let status = order.map(|o| o.status.as_str());
    let amount_total = order.map(|o| o.amount_total.fen());
    let label = outcome.label();
    if matches!(outcome, PaymentOutcome::Anomaly { .. }) {
        crate::telemetry::emit_metrics(&[(Metric::PaymentAnomaly, 1)], now);
        tracing::error!(
            out_trade_no = %payment.out_trade_no,
            transaction_id = %payment.transaction_id,
            notification_id = notification_id,
            amount = payment.amount.fen(),
            currency = %payment.currency,
            order_amount = amount_total,
            order_status = status,
            outcome = %label,
            "payment recorded as anomaly"
        );
    } else {
        tracing::info!(
            out_trade_no = %payment.out_trade_no,
            transaction_id = %payment.transaction_id,
            notification_id = notification_id,
            amount = payment.amount.fen(),
            outcome = %label,
            "payment settled"
        );
    }
}

async fn settle(
    deps: &Deps,
    order: Order,
    payment: &Payment,
    now: OffsetDateTime,
) -> Result<PaymentOutcome, StoreError> {
    // The read already tells most losers what they lost to; the conditional writes below
    // settle the races the read could not see, each answering with the order that won.
    let mut current = order;
    let mut verdict = judge(&current, payment);
    let mut writes = 0;
    loop {
        let result = match verdict {
            // Refused twice, yet the order still looks payable: only a different
            // transaction_id already holding the payment item can explain it (`finish` records
            // a still-payable verdict as a double payment).
            Verdict::Apply | Verdict::Hold if writes == 2 => {
                return finish(deps, verdict, current, payment).await;
            }
            Verdict::Apply => deps.store.mark_paid(&current, payment, now).await?,
            Verdict::Hold => {
                let anomaly = Anomaly::of_payment(
                    payment,
                    AnomalyKind::AmountMismatch,
                    anomaly_detail(AnomalyKind::AmountMismatch, &current, payment),
                );
                deps.store
                    .hold_amount_mismatch(&current, payment, &anomaly, now)
                    .await?
            }
            Verdict::Duplicate | Verdict::Anomaly(_) => {
                return finish(deps, verdict, current, payment).await;
            }
        };
        writes += 1;
        match result {
            MarkPaidOutcome::Applied(o) if verdict == Verdict::Hold => {
                return Ok(PaymentOutcome::Anomaly {
                    kind: AnomalyKind::AmountMismatch,
                    order: Some(o),
                });
            }
            MarkPaidOutcome::Applied(o) => return Ok(PaymentOutcome::Applied(o)),
            MarkPaidOutcome::AlreadyPaid(o)
            | MarkPaidOutcome::Closed(o)
            | MarkPaidOutcome::AmountMismatch(o) => {
                current = *o;
                verdict = judge(&current, payment);
            }
            MarkPaidOutcome::PaymentExists { out_trade_no }
                if out_trade_no == payment.out_trade_no =>
            {
                return finish(deps, Verdict::Duplicate, current, payment).await;
            }
            MarkPaidOutcome::PaymentExists { .. } => {
                return finish(
                    deps,
                    Verdict::Anomaly(AnomalyKind::DoublePayment),
                    current,
                    payment,
                )
                .await;
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// PENDING, the order's amount and currency: PENDING -> PAID.
    Apply,
    /// PENDING, but another amount or currency: PENDING -> AMOUNT_MISMATCH.
    Hold,
    Duplicate,
    Anomaly(AnomalyKind),
}

/// What the order as it stands says about this payment.
fn judge(order: &Order, payment: &Payment) -> Verdict {
    match order.status {
        s if s.is_paid() && order.transaction_id.as_deref() == Some(&payment.transaction_id) => {
            Verdict::Duplicate
        }
        OrderStatus::Closed => Verdict::Anomaly(AnomalyKind::PaidAfterClose),
        OrderStatus::Pending
            if order.amount_total != payment.amount || order.currency != payment.currency =>
        {
            Verdict::Hold
        }
        OrderStatus::Pending => Verdict::Apply,
        // Every other state was paid by another transaction.
        _ => Verdict::Anomaly(AnomalyKind::DoublePayment),
    }
}

fn anomaly_detail(kind: AnomalyKind, order: &Order, payment: &Payment) -> String {
    match kind {
        AnomalyKind::AmountMismatch => format!(
            "paid {} fen {}, order amount_total {} fen {}",
            payment.amount.fen(),
            payment.currency,
            order.amount_total.fen(),
            order.currency
        ),
        AnomalyKind::DoublePayment => format!(
            "order already paid by transaction {}",
            order.transaction_id.as_deref().unwrap_or("?")
        ),
        AnomalyKind::PaidAfterClose => "order was closed before the payment".to_owned(),
        AnomalyKind::UnknownOrder => "no such order".to_owned(),
        AnomalyKind::MalformedNotification => "malformed".to_owned(),
        // Not a payment's anomalies.
        AnomalyKind::RefundAbnormal
        | AnomalyKind::RefundMismatch
        | AnomalyKind::BillMismatch
        | AnomalyKind::ShippingUploadFailed
        | AnomalyKind::ShippingStateMismatch => kind.as_str().to_owned(),
    }
}

async fn finish(
    deps: &Deps,
    verdict: Verdict,
    order: Order,
    payment: &Payment,
) -> Result<PaymentOutcome, StoreError> {
    let kind = match verdict {
        Verdict::Duplicate => return Ok(PaymentOutcome::Duplicate(Box::new(order))),
        Verdict::Anomaly(kind) => kind,
        // A write refused while the order looked payable (see `settle`).
        Verdict::Apply | Verdict::Hold => AnomalyKind::DoublePayment,
    };
    let detail = anomaly_detail(kind, &order, payment);
    anomaly(deps, payment, kind, Some(order), &detail).await
}

async fn anomaly(
    deps: &Deps,
    payment: &Payment,
    kind: AnomalyKind,
    order: Option<Order>,
    detail: &str,
) -> Result<PaymentOutcome, StoreError> {
    // Keyed by transaction and kind: a re-delivery lands on the same item, and a distinct
    // payment never does, whatever its success_time.
    deps.store
        .record_anomaly(&Anomaly::of_payment(payment, kind, detail), deps.now())
        .await?;
    Ok(PaymentOutcome::Anomaly {
        kind,
        order: order.map(Box::new),
    })
}
