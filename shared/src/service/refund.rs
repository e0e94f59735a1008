//! Refunds as the merchant asks for them and as WeChat Pay settles them (DESIGN.md sections
//! 3 and 5, invariant 8): the amount is reserved on the order before WeChat Pay is called,
//! and each outcome is one transition whoever learns it first (a notification, the
//! merchant's lookup, the sweeper), so a refund is never lost, doubled or over the paid sum.

use time::OffsetDateTime;

use super::Deps;
use crate::{
    domain::{
        Anomaly, AnomalyKind, IdempotencyKey, LifecycleError, Money, NotificationRecord, Order,
        OrderStatus, OutRefundNo, OutTradeNo, Quantity, Refund, RefundStatus, RestockLine, SkuId,
    },
    store::{RefundMoveOutcome, RefundReserveOutcome, RefundSettleOutcome, StoreError},
    telemetry::Metric,
    timefmt::parse_rfc3339,
    wechatpay::{
        crypto::sha256_hex,
        gateway::PayError,
        refund::{RefundRequest, RefundResult, RefundState},
    },
};

/// The merchant's refund request as parsed at the edge (amounts in fen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundInput {
    pub amount: i64,
    pub reason: Option<String>,
    pub restock: Vec<(String, i64)>,
}

/// What the merchant learns: the refund, and whether WeChat Pay has it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundReply {
    /// WeChat Pay accepted it (PROCESSING) or already settled it.
    Submitted(Box<Refund>),
    /// Reserved here, REQUESTED: WeChat Pay could not take it yet (its one-minute spacing,
    /// or no certain answer); the sweeper submits it with the same out_refund_no.
    Reserved(Box<Refund>),
}

impl RefundReply {
    pub fn refund(&self) -> &Refund {
        match self {
            RefundReply::Submitted(r) | RefundReply::Reserved(r) => r,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no such order")]
    OrderNotFound,
    #[error("the order is {0}: only a paid order can be refunded")]
    OrderNotPaid(OrderStatus),
    #[error("the refund exceeds what is left to refund ({} fen)", refundable.fen())]
    ExceedsPaid { refundable: Money },
    #[error("Idempotency-Key was used with a different refund")]
    KeyReused,
    /// WeChat Pay refused the refund for certain; nothing is reserved any more.
    #[error("WeChat Pay refused the refund: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("no such refund")]
    RefundNotFound,
    /// Only an ABNORMAL refund can be resolved with WeChat Pay's abnormal-refund API.
    #[error("the refund is {0}, not ABNORMAL")]
    NotAbnormal(RefundStatus),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The out_refund_no of a merchant's Idempotency-Key: derived, so a retry after any crash
/// lands on the same refund item (the item is the idempotency record) and WeChat Pay, which
/// refunds one out_refund_no at most once, never refunds twice.
pub fn out_refund_no_for(key: &IdempotencyKey) -> OutRefundNo {
    let digest = sha256_hex(format!("merchant-refund\n{}", key.as_str()).as_bytes());
    // 32 chars of [0-9a-f] after the prefix: inside WeChat Pay's 64 and its charset.
    OutRefundNo::parse(&format!("R{}", &digest[..31]))
        .unwrap_or_else(|_| OutRefundNo::generate(OffsetDateTime::UNIX_EPOCH))
}

/// `POST /merchant/orders/{out_trade_no}/refunds`.
pub async fn request_refund(
    deps: &Deps,
    out_trade_no: &OutTradeNo,
    key: &IdempotencyKey,
    input: RefundInput,
) -> Result<RefundReply, RefundError> {
    let now = deps.now();
    let order = deps
        .store
        .get_order(out_trade_no)
        .await?
        .ok_or(RefundError::OrderNotFound)?;
    let refund = Refund::requested(
        out_refund_no_for(key),
        out_trade_no.clone(),
        parse_amount(input.amount)?,
        parse_reason(input.reason)?,
        parse_restock(&order, &input.restock)?,
        now,
    );
    let refund = match deps.store.reserve_refund(&order, &refund).await? {
        RefundReserveOutcome::Reserved(_) => {
            tracing::info!(out_trade_no = %out_trade_no, out_refund_no = %refund.out_refund_no, amount = refund.amount.fen(), outcome = "reserved", "refund reserved");
            crate::telemetry::emit_metrics(
                &[
                    (Metric::RefundRequested, 1),
                    (
                        Metric::RefundRequestedFen,
                        refund.amount.fen().unsigned_abs(),
                    ),
                ],
                now,
            );
            refund
        }
        RefundReserveOutcome::Exists(kept) => {
            if !same_request(&kept, &refund) {
                return Err(RefundError::KeyReused);
            }
            tracing::info!(out_trade_no = %out_trade_no, out_refund_no = %kept.out_refund_no, status = %kept.status, outcome = "resumed", "refund request retried");
            *kept
        }
        RefundReserveOutcome::Refused { reason, .. } => return Err(refused(reason)),
        RefundReserveOutcome::NotFound => return Err(RefundError::OrderNotFound),
    };
    match refund.status {
        RefundStatus::Requested => submit(deps, &order, refund).await,
        RefundStatus::Failed => Err(RefundError::Refused {
            code: "REFUND_FAILED".into(),
            message: "WeChat Pay refused this refund; ask again with a new Idempotency-Key".into(),
        }),
        _ => Ok(RefundReply::Submitted(Box::new(refund))),
    }
}

/// Sends a REQUESTED refund to WeChat Pay with its own out_refund_no and records what
/// became of it. Also the sweeper's way to submit a refund WeChat Pay was not ready for.
pub async fn submit(
    deps: &Deps,
    order: &Order,
    refund: Refund,
) -> Result<RefundReply, RefundError> {
    let request = RefundRequest {
        out_trade_no: order.out_trade_no.to_string(),
        out_refund_no: refund.out_refund_no.to_string(),
        reason: refund.reason.clone(),
        refund: refund.amount.fen(),
        total: order.amount_total.fen(),
    };
    let answer = match deps.gateway.create_refund(&request).await {
        Ok(result) => result,
        Err(e) if e.code() == Some("FREQUENCY_LIMITED") => {
            tracing::info!(out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, outcome = "deferred", "WeChat Pay wants refunds of one order a minute apart; kept REQUESTED");
            return Ok(RefundReply::Reserved(Box::new(refund)));
        }
        Err(e) => {
            // Accepted or not? Only WeChat Pay knows: ask it before releasing anything.
            match deps
                .gateway
                .query_refund(refund.out_refund_no.as_str())
                .await
            {
                Ok(result) => result,
                Err(q) if is_not_found(&q) && is_certain_refusal(&e) => {
                    let (now_is, moved) =
                        settle(deps, order, &refund, &RefundStatus::Failed, None, None).await?;
                    if !moved && now_is.status != RefundStatus::Failed {
                        // Another attempt with this out_refund_no got it accepted meanwhile.
                        return Ok(RefundReply::Submitted(Box::new(now_is)));
                    }
                    tracing::warn!(out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, code = e.code().unwrap_or(""), outcome = "refused", "WeChat Pay refused the refund; reservation released");
                    return Err(refusal_of(e));
                }
                Err(q) => {
                    tracing::warn!(out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, error = %e, query_error = %q, outcome = "uncertain", "refund not confirmed; kept REQUESTED for the sweeper");
                    return Ok(RefundReply::Reserved(Box::new(refund)));
                }
            }
        }
    };
    let now = deps.now();
    let (refund, _) = apply_result(deps, order, refund, &answer, now).await?;
    Ok(RefundReply::Submitted(Box::new(refund)))
}

/// WeChat Pay's word on a refund (a create or query answer, or a notification's refund
/// object), applied once: PROCESSING accepts it, SUCCESS/CLOSED settle it with its order,
/// ABNORMAL records the anomaly the merchant must act on. Returns the refund as it stands,
/// and whether this call made the move the answer asks for (false: another delivery, query
/// or sweep made it first: a duplicate).
pub async fn apply_result(
    deps: &Deps,
    order: &Order,
    refund: Refund,
    answer: &RefundResult,
    now: OffsetDateTime,
) -> Result<(Refund, bool), RefundError> {
    apply_result_with(deps, order, refund, answer, None, now).await
}

/// When WeChat Pay accepted the refund, as it says (`create_time`), else now: its bill lists
/// the refund on that Beijing day, whenever we learn of it (a lost answer recovered by a query
/// after midnight is still that day's). Never before the refund was asked, never after now.
fn accepted_at(refund: &Refund, answer: &RefundResult, now: OffsetDateTime) -> OffsetDateTime {
    answer
        .create_time
        .as_deref()
        .and_then(|t| crate::timefmt::parse_rfc3339(t).ok())
        .map_or(now, |t| t.max(refund.created_at).min(now))
}

/// [`apply_result`], keeping `notification` in the transaction that moves the refund when
/// this call settles it (SUCCESS, CLOSED) or marks it ABNORMAL: a refund notification's
/// first delivery then costs no separate write for its record.
pub async fn apply_result_with(
    deps: &Deps,
    order: &Order,
    refund: Refund,
    answer: &RefundResult,
    notification: Option<&NotificationRecord>,
    now: OffsetDateTime,
) -> Result<(Refund, bool), RefundError> {
    let mut refund = refund;
    let mut moved = false;
    let final_answer = matches!(answer.status, RefundState::Success | RefundState::Closed);
    if refund.status == RefundStatus::Requested && final_answer {
        // Settled straight from REQUESTED (its acceptance was never recorded): one
        // transaction, with WeChat Pay's refund_id and acceptance time.
        refund
            .refund_id
            .get_or_insert_with(|| answer.refund_id.clone());
        refund.submitted_at = Some(accepted_at(&refund, answer, now));
    } else if refund.status == RefundStatus::Requested {
        match deps
            .store
            .accept_refund(
                &refund,
                &answer.refund_id,
                accepted_at(&refund, answer, now),
            )
            .await?
        {
            RefundMoveOutcome::Moved(r) => {
                refund = *r;
                moved = true;
            }
            RefundMoveOutcome::NotMoved(r) => refund = *r,
        }
    }
    match &answer.status {
        RefundState::Processing | RefundState::Other(_) => Ok((refund, moved)),
        RefundState::Success => {
            let success_time = answer
                .success_time
                .as_deref()
                .and_then(|t| parse_rfc3339(t).ok());
            settle(
                deps,
                order,
                &refund,
                &RefundStatus::Success,
                success_time,
                notification,
            )
            .await
        }
        RefundState::Closed => {
            settle(
                deps,
                order,
                &refund,
                &RefundStatus::Closed,
                None,
                notification,
            )
            .await
        }
        RefundState::Abnormal => {
            let anomaly = Anomaly {
                out_trade_no: Some(order.out_trade_no.clone()),
                kind: AnomalyKind::RefundAbnormal,
                cause: refund.out_refund_no.to_string(),
                at: now,
                transaction_id: order.transaction_id.clone(),
                notification_id: None,
                detail: format!(
                    "WeChat Pay could not pay back refund {} ({} fen): resolve it with the abnormal-refund API or the merchant platform",
                    refund.out_refund_no,
                    refund.amount.fen()
                ),
                plaintext: None,
            };
            Ok(
                match deps
                    .store
                    .refund_abnormal(&refund, &anomaly, notification, now)
                    .await?
                {
                    RefundMoveOutcome::Moved(r) => {
                        tracing::warn!(out_trade_no = %order.out_trade_no, out_refund_no = %r.out_refund_no, outcome = "abnormal", "refund abnormal: the merchant must act");
                        crate::telemetry::emit_metrics(&[(Metric::RefundAbnormal, 1)], now);
                        (*r, true)
                    }
                    RefundMoveOutcome::NotMoved(r) => (*r, false),
                },
            )
        }
    }
}

/// The refund's final transition with its order (and the notification that brought it, kept
/// in the same transaction); a duplicate answers the refund as it is.
async fn settle(
    deps: &Deps,
    order: &Order,
    refund: &Refund,
    outcome: &RefundStatus,
    success_time: Option<OffsetDateTime>,
    notification: Option<&NotificationRecord>,
) -> Result<(Refund, bool), RefundError> {
    // Already final (another delivery, a query or the sweeper got there first): its final
    // status stands, whatever this answer says.
    if !refund.status.holds_reservation() {
        if refund.status != *outcome {
            // Never silent: a refund recorded FAILED that WeChat Pay then paid out is money
            // that left without being counted; the merchant must see it.
            let now = deps.now();
            let anomaly = Anomaly {
                out_trade_no: Some(order.out_trade_no.clone()),
                kind: AnomalyKind::RefundMismatch,
                cause: format!("{}#{}", refund.out_refund_no, outcome),
                at: now,
                transaction_id: order.transaction_id.clone(),
                notification_id: None,
                detail: format!(
                    "refund {} is {} here but WeChat Pay reports {outcome}",
                    refund.out_refund_no, refund.status
                ),
                plaintext: None,
            };
            deps.store.record_anomaly(&anomaly, now).await?;
            crate::telemetry::emit_metrics(&[(Metric::PaymentAnomaly, 1)], now);
            tracing::error!(out_refund_no = %refund.out_refund_no, status = %refund.status, asked = %outcome, outcome = "anomaly:refund_mismatch", "a final refund was reported otherwise; kept as it is, and as an anomaly");
        }
        return Ok((refund.clone(), false));
    }
    let now = deps.now();
    match deps
        .store
        .settle_refund(order, refund, *outcome, success_time, notification, now)
        .await?
    {
        RefundSettleOutcome::Applied { order, refund } => {
            let metrics = match refund.status {
                RefundStatus::Success => vec![
                    (Metric::RefundSucceeded, 1),
                    (Metric::RefundedFen, refund.amount.fen().unsigned_abs()),
                ],
                _ => vec![(Metric::RefundClosed, 1)],
            };
            tracing::info!(out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, status = %refund.status, order_status = %order.status, refunded_total = order.refunded_total.fen(), outcome = "applied", "refund settled");
            crate::telemetry::emit_metrics(&metrics, now);
            Ok((*refund, true))
        }
        RefundSettleOutcome::AlreadyMoved(refund) => Ok((*refund, false)),
        RefundSettleOutcome::Refused { reason, .. } => Err(RefundError::Store(
            StoreError::Inconsistent(format!("refund {} refused: {reason}", refund.out_refund_no)),
        )),
        RefundSettleOutcome::NotFound => Err(RefundError::OrderNotFound),
    }
}

/// `GET /merchant/refunds/{out_refund_no}`: the refund, synced with WeChat Pay first while
/// WeChat Pay holds it (PROCESSING, ABNORMAL).
pub async fn get_refund(deps: &Deps, out_refund_no: &OutRefundNo) -> Result<Refund, RefundError> {
    let refund = deps
        .store
        .get_refund(out_refund_no)
        .await?
        .ok_or(RefundError::RefundNotFound)?;
    if !matches!(
        refund.status,
        RefundStatus::Processing | RefundStatus::Abnormal
    ) {
        return Ok(refund);
    }
    let Some(order) = deps.store.get_order(&refund.out_trade_no).await? else {
        return Ok(refund);
    };
    match deps.gateway.query_refund(out_refund_no.as_str()).await {
        Ok(answer) => Ok(apply_result(deps, &order, refund, &answer, deps.now())
            .await?
            .0),
        Err(e) => {
            tracing::warn!(out_refund_no = %out_refund_no, error = %e, outcome = "sync_failed", "refund not synced; answered as stored");
            Ok(refund)
        }
    }
}

/// `POST /merchant/refunds/{out_refund_no}/abnormal-refund`: an ABNORMAL refund paid to the
/// merchant's settlement account instead (WeChat Pay's abnormal-refund API, type
/// `MERCHANT_BANK_CARD`). Its SUCCESS arrives like any refund's: notified, queried, swept.
pub async fn resolve_abnormal(
    deps: &Deps,
    out_refund_no: &OutRefundNo,
) -> Result<Refund, RefundError> {
    let refund = deps
        .store
        .get_refund(out_refund_no)
        .await?
        .ok_or(RefundError::RefundNotFound)?;
    let (RefundStatus::Abnormal, Some(refund_id)) = (refund.status, refund.refund_id.clone())
    else {
        return Err(RefundError::NotAbnormal(refund.status));
    };
    let order = deps
        .store
        .get_order(&refund.out_trade_no)
        .await?
        .ok_or(RefundError::OrderNotFound)?;
    let answer = deps
        .gateway
        .apply_abnormal_refund(&refund_id, out_refund_no.as_str())
        .await
        .map_err(refusal_of)?;
    tracing::info!(out_trade_no = %order.out_trade_no, out_refund_no = %out_refund_no, status = %answer.status, outcome = "abnormal_refund_applied", "abnormal refund sent to the merchant's bank account");
    Ok(apply_result(deps, &order, refund, &answer, deps.now())
        .await?
        .0)
}

fn same_request(kept: &Refund, asked: &Refund) -> bool {
    kept.out_trade_no == asked.out_trade_no
        && kept.amount == asked.amount
        && kept.reason == asked.reason
        && kept.restock == asked.restock
}

fn refused(reason: LifecycleError) -> RefundError {
    match &reason {
        LifecycleError::NotRefundable(OrderStatus::Refunded) => RefundError::ExceedsPaid {
            refundable: Money::ZERO,
        },
        LifecycleError::NotRefundable(status) => RefundError::OrderNotPaid(*status),
        LifecycleError::RefundExceedsPaid { refundable, .. } => RefundError::ExceedsPaid {
            refundable: *refundable,
        },
        LifecycleError::RestockExceedsBought { .. } => {
            RefundError::InvalidRequest(reason.to_string())
        }
        other => RefundError::InvalidRequest(other.to_string()),
    }
}

/// WeChat Pay answered, and its answer says no: a 4xx error body (429 excepted). Anything
/// else (no answer, a 5xx, a misconfigured client, a 2xx we could not read) may still hide
/// an accepted refund.
fn is_certain_refusal(e: &PayError) -> bool {
    matches!(e, PayError::Api { status, .. } if (400..500).contains(status) && *status != 429)
}

fn is_not_found(e: &PayError) -> bool {
    matches!(e, PayError::Api { status: 404, code, .. } if code == "RESOURCE_NOT_EXISTS")
}

fn refusal_of(e: PayError) -> RefundError {
    match e {
        PayError::Api { code, message, .. } => RefundError::Refused { code, message },
        other => RefundError::Refused {
            code: "PAYMENT_PROVIDER_ERROR".into(),
            message: other.to_string(),
        },
    }
}

fn parse_amount(fen: i64) -> Result<Money, RefundError> {
    if fen < 1 {
        return Err(RefundError::InvalidRequest(format!(
            "amount must be at least 1 fen (got {fen})"
        )));
    }
    Money::from_fen(fen).map_err(|e| RefundError::InvalidRequest(e.to_string()))
}

/// WeChat Pay takes 80 characters of reason.
fn parse_reason(reason: Option<String>) -> Result<Option<String>, RefundError> {
    match reason {
        Some(r) if r.chars().count() > 80 => Err(RefundError::InvalidRequest(
            "reason must be at most 80 characters".into(),
        )),
        Some(r) if r.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Only lines of the order, never more than was bought, each sku once.
fn parse_restock(
    order: &Order,
    restock: &[(String, i64)],
) -> Result<Vec<RestockLine>, RefundError> {
    let mut lines: Vec<RestockLine> = Vec::with_capacity(restock.len());
    for (sku, quantity) in restock {
        let sku_id = SkuId::parse(sku).map_err(|e| RefundError::InvalidRequest(e.to_string()))?;
        let quantity =
            Quantity::new(*quantity).map_err(|e| RefundError::InvalidRequest(e.to_string()))?;
        let Some(line) = order.lines.iter().find(|l| l.sku_id == sku_id) else {
            return Err(RefundError::InvalidRequest(format!(
                "restock of sku {sku_id}, which is not in the order"
            )));
        };
        if quantity.get() > line.quantity.get() {
            return Err(RefundError::InvalidRequest(format!(
                "restock of {} x {sku_id}, but the order has {}",
                quantity.get(),
                line.quantity.get()
            )));
        }
        if lines.iter().any(|l| l.sku_id == sku_id) {
            return Err(RefundError::InvalidRequest(format!(
                "sku {sku_id} listed twice in restock"
            )));
        }
        lines.push(RestockLine { sku_id, quantity });
    }
    Ok(lines)
}

/// What one sweep of due refunds did (the timeout-sweeper runs it after the orders).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefundSweepSummary {
    /// Due refunds taken up (claimed by this sweep).
    pub checked: u64,
    /// REQUESTED ones WeChat Pay accepted now.
    pub submitted: u64,
    /// Ones that reached a final status now (SUCCESS, CLOSED, FAILED) or became ABNORMAL.
    pub settled: u64,
    /// Could not be checked (WeChat Pay or the store failed); due again at their next check.
    pub failed: u64,
    /// Still PROCESSING (or ABNORMAL) more than an hour after WeChat Pay accepted it: worth a
    /// look (`RefundStaleAlarm`).
    pub stale: u64,
}

/// A refund WeChat Pay has held longer than this is reported stale.
pub const REFUND_STALE_AFTER: time::Duration = time::Duration::hours(1);

/// Refunds whose notification never came, or that WeChat Pay was not ready for: REQUESTED
/// ones are submitted (same out_refund_no), PROCESSING and ABNORMAL ones queried, each
/// through the same transitions as a notification. One at a time (refunds are few), leased
/// by `claim_refund_check` so two sweeps never check one refund; stops at `deadline`.
pub async fn sweep_refunds(deps: &Deps, deadline: Option<OffsetDateTime>) -> RefundSweepSummary {
    let mut summary = RefundSweepSummary::default();
    let mut cursor = None;
    loop {
        let now = deps.now();
        let page = match deps.store.due_refunds(now, 50, cursor.as_ref()).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, outcome = "failed", "due refunds not read");
                summary.failed += 1;
                return summary;
            }
        };
        for refund in page.items {
            if deadline.is_some_and(|d| deps.now() >= d) {
                return summary;
            }
            let now = deps.now();
            let Some(next) = refund.recheck_at(now) else {
                continue;
            };
            let refund = match deps.store.claim_refund_check(&refund, now, next).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(out_refund_no = %refund.out_refund_no, error = %e, outcome = "failed", "refund not claimed");
                    summary.failed += 1;
                    continue;
                }
            };
            summary.checked += 1;
            let accepted = refund.submitted_at.unwrap_or(refund.created_at);
            match check(deps, refund).await {
                Ok((_, after))
                    if after.holds_reservation()
                        && after != RefundStatus::Requested
                        && deps.now() - accepted > REFUND_STALE_AFTER =>
                {
                    summary.stale += 1;
                }
                Ok((before, after)) if before != after => {
                    if after == RefundStatus::Processing {
                        summary.submitted += 1;
                    } else if after != RefundStatus::Requested {
                        summary.settled += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, outcome = "failed", "refund check failed; due again later");
                    summary.failed += 1;
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return summary,
        }
    }
}

/// One due refund checked with WeChat Pay: (status before, status after).
async fn check(deps: &Deps, refund: Refund) -> Result<(RefundStatus, RefundStatus), RefundError> {
    let before = refund.status;
    let order = deps
        .store
        .get_order(&refund.out_trade_no)
        .await?
        .ok_or(RefundError::OrderNotFound)?;
    let after = match refund.status {
        RefundStatus::Requested => match submit(deps, &order, refund).await {
            Ok(reply) => reply.refund().status,
            Err(RefundError::Refused { .. }) => RefundStatus::Failed,
            Err(e) => return Err(e),
        },
        _ => {
            let answer = deps
                .gateway
                .query_refund(refund.out_refund_no.as_str())
                .await
                .map_err(|e| RefundError::Refused {
                    code: e.code().unwrap_or("PAYMENT_PROVIDER_ERROR").to_owned(),
                    message: e.to_string(),
                })?;
            apply_result(deps, &order, refund, &answer, deps.now())
                .await?
                .0
                .status
        }
    };
    tracing::info!(out_trade_no = %order.out_trade_no, from = %before, to = %after, outcome = "checked", "due refund checked with WeChat Pay");
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::{Money, OutRefundNo, OutTradeNo};

    fn answer(create_time: Option<&str>) -> RefundResult {
        let mut v = serde_json::json!({
            "refund_id": "50300000000000000001",
            "out_refund_no": "R-1",
            "status": "PROCESSING",
            "amount": {"refund": 100, "total": 1000, "currency": "CNY"},
        });
        if let Some(t) = create_time {
            v["create_time"] = serde_json::json!(t);
        }
        serde_json::from_value(v).unwrap()
    }

    /// Issue 16 review: the day a refund is billed on is the day WeChat Pay accepted it, so
    /// an answer learnt after midnight (a lost answer recovered by a query) keeps its day.
    #[test]
    fn a_refund_is_accepted_when_wechat_pay_says_within_what_can_be() {
        let refund = Refund::requested(
            OutRefundNo::parse("R-1").unwrap(),
            OutTradeNo::parse("ORDER-0001").unwrap(),
            Money::from_fen(100).unwrap(),
            None,
            Vec::new(),
            datetime!(2026-12-06 15:50:00 UTC),
        );
        let learnt = datetime!(2026-12-06 16:10:00 UTC); // 00:10 the next day in Beijing
        assert_eq!(
            accepted_at(&refund, &answer(Some("2026-12-06T23:59:50+08:00")), learnt),
            datetime!(2026-12-06 15:59:50 UTC)
        );
        // Nothing readable: now. Before the refund was asked or after now: clamped.
        assert_eq!(accepted_at(&refund, &answer(None), learnt), learnt);
        assert_eq!(
            accepted_at(&refund, &answer(Some("yesterday")), learnt),
            learnt
        );
        assert_eq!(
            accepted_at(&refund, &answer(Some("2026-11-01T00:00:00+08:00")), learnt),
            refund.created_at
        );
        assert_eq!(
            accepted_at(&refund, &answer(Some("2027-01-01T00:00:00+08:00")), learnt),
            learnt
        );
    }
}
