//! The WeChat Pay notify endpoint's use case: verify, decrypt, check it is ours, apply the
//! payment (or settle the refund) exactly once, and tell the edge how to answer so WeChat Pay's retries do the
//! right thing (2xx: stop; anything else: retry on its schedule).

use time::OffsetDateTime;

use super::payment::{UnreadOutcome, apply_unread, payment_of};
use super::refund::{RefundError, apply_result_with as apply_refund_result};
use super::{ApplyError, Deps, PaymentOutcome};
use crate::{
    domain::{OutRefundNo, OutTradeNo},
    store::{Anomaly, AnomalyKind, NotificationRecord, Payment, StoreError},
    telemetry::Metric,
    wechatpay::{
        WechatpayHeaders,
        notification::{NotificationError, TradeState, Transaction, VerifiedNotification},
        refund::{RefundNotice, RefundResult, RefundState},
    },
};

/// Every outcome here is acknowledged with 204: retrying cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationOutcome {
    Payment(UnreadOutcome),
    /// A `REFUND.*` notification: the refund as it now stands (`applied` when this delivery
    /// moved it), or kept as a `REFUND_MISMATCH` anomaly.
    Refund {
        out_refund_no: String,
        outcome: &'static str,
    },
    /// Verified, but an event or trade state we do not act on (refunds, for now).
    Ignored {
        event_type: String,
    },
}

impl NotificationOutcome {
    pub fn label(&self) -> String {
        match self {
            NotificationOutcome::Payment(p) => p.label(),
            NotificationOutcome::Refund { outcome, .. } => (*outcome).to_owned(),
            NotificationOutcome::Ignored { .. } => "ignored".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Signature, timestamp window, decryption or envelope failed: nothing was stored, and
    /// the answer is 401 so a genuine notification is retried.
    #[error("notification rejected: {0}")]
    Rejected(#[from] NotificationError),
    /// Verified and decrypted, but for another appid or mchid: not ours to apply (kept as
    /// an anomaly; answered 400).
    #[error("notification refused: {0}")]
    NotOurs(String),
    /// Verified and decrypted, but not a transaction a payment can be made of (kept as an
    /// anomaly; answered 400).
    #[error("notification refused: {0}")]
    Malformed(String),
    /// The store failed; nothing was half-applied. Answer 500 so WeChat Pay retries.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl NotifyError {
    /// `rejected:<reason>` for log lines.
    pub fn label(&self) -> String {
        match self {
            NotifyError::Rejected(NotificationError::Verify(e)) => {
                format!("rejected:{}", verify_reason(e))
            }
            NotifyError::Rejected(NotificationError::Decrypt(_)) => "rejected:decrypt".into(),
            NotifyError::Rejected(_) => "rejected:envelope".into(),
            NotifyError::Malformed(_) => "rejected:malformed".into(),
            NotifyError::NotOurs(_) => "rejected:not_ours".into(),
            NotifyError::Store(_) => "error:store".into(),
        }
    }
}

fn verify_reason(e: &crate::wechatpay::VerifyError) -> &'static str {
    use crate::wechatpay::VerifyError as V;
    match e {
        V::MissingHeader(_) => "missing_header",
        V::MalformedTimestamp | V::Expired { .. } => "timestamp",
        V::SignatureProbe => "probe",
        V::UnknownSerial(_) => "unknown_serial",
        V::MalformedSignature | V::BadSignature | V::MalformedAuthorization(_) => "signature",
        V::UnsupportedSignatureType(_) => "signature_type",
    }
}

/// Handles one delivery of a notification: its `Wechatpay-*` headers, and `raw_body` exactly
/// as received.
///
/// The rule for what answers what: 401 only when the signature, timestamp window, envelope
/// or decryption fails (nothing is stored: it may not be WeChat Pay's). Once verified and
/// decrypted, a notification is WeChat Pay's word and is never dropped: applied, a
/// duplicate, a payment anomaly (204), or, when its content cannot be applied at all (not a
/// transaction, a field missing or out of range, another merchant's appid/mchid), kept as a
/// `MALFORMED_NOTIFICATION` anomaly with its plaintext and answered 400, so WeChat Pay keeps
/// it visible and retries it (a corrected deployment then applies it; each retry lands on
/// the same anomaly item).
pub async fn handle_notification(
    deps: &Deps,
    headers: &WechatpayHeaders,
    raw_body: &[u8],
) -> Result<NotificationOutcome, NotifyError> {
    let now = deps.now();
    let verified = deps
        .gateway
        .verify_notification(headers, raw_body, now.unix_timestamp())
        .await?;
    let notification_id = verified.notification.id.clone();
    let event_type = verified.notification.event_type.clone();
    // Every verified notification is kept (issue 12.9): in the transaction its payment
    // makes, or on its own.
    let mut record = NotificationRecord {
        id: notification_id.clone(),
        event_type: event_type.clone(),
        received_at: now,
        body: String::from_utf8_lossy(raw_body).into_owned(),
        // The headers WeChat Pay signs with, as received (kept so a notification can be
        // verified again later).
        headers: headers.text_pairs(),
        out_trade_no: None,
        outcome: "ignored".into(),
    };
    if event_type.starts_with("REFUND.") {
        return handle_refund(deps, &verified, record, now).await;
    }
    if event_type != "TRANSACTION.SUCCESS" {
        deps.store.record_notification(&record).await?;
        tracing::info!(
            notification_id = %notification_id,
            event_type = %event_type,
            outcome = "ignored",
            "notification acknowledged"
        );
        return Ok(NotificationOutcome::Ignored { event_type });
    }
    let payment = match applicable(deps, &verified, now) {
        Ok(Applicable::Payment(payment)) => payment,
        Ok(Applicable::NotPaid(txn)) => {
            record.out_trade_no = OutTradeNo::parse(&txn.out_trade_no).ok();
            deps.store.record_notification(&record).await?;
            tracing::info!(
                notification_id = %notification_id,
                out_trade_no = %txn.out_trade_no,
                trade_state = %txn.trade_state,
                outcome = "ignored",
                "notification acknowledged"
            );
            return Ok(NotificationOutcome::Ignored { event_type });
        }
        Err(refusal) => {
            let refusal = keep_malformed(deps, &verified, refusal, now).await;
            if !matches!(refusal, NotifyError::Store(_)) {
                record.outcome = refusal.label();
                record.out_trade_no = named_order(&verified);
                deps.store.record_notification(&record).await?;
            }
            return Err(refusal);
        }
    };
    record.out_trade_no = Some(payment.out_trade_no.clone());
    record.outcome = "applied".into();
    let payment = Payment {
        notification: Some(Box::new(record.clone())),
        ..payment
    };
    let outcome = apply_unread(deps, payment).await?;
    if let UnreadOutcome::Settled(settled) = &outcome
        && !kept_with_its_order(settled, &notification_id)
    {
        record.outcome = outcome.label();
        deps.store.record_notification(&record).await?;
    }
    Ok(NotificationOutcome::Payment(outcome))
}

/// Whether the order's transaction kept this notification already: it moved the order now,
/// or it did so on an earlier delivery (a re-delivery carries the same id).
fn kept_with_its_order(outcome: &PaymentOutcome, notification_id: &str) -> bool {
    let order = match outcome {
        PaymentOutcome::Applied(_) => return true,
        PaymentOutcome::Duplicate(o) => Some(o),
        PaymentOutcome::Anomaly { order, .. } => order.as_ref(),
    };
    order.is_some_and(|o| o.notification_id.as_deref() == Some(notification_id))
}

/// The order a decrypted notification names, if it names one that could be ours.
fn named_order(verified: &VerifiedNotification) -> Option<OutTradeNo> {
    let plaintext = serde_json::from_slice::<serde_json::Value>(&verified.plaintext).ok()?;
    OutTradeNo::parse(plaintext.get("out_trade_no")?.as_str()?).ok()
}

enum Applicable {
    /// A SUCCESS transaction of this merchant: the payment it confirms.
    Payment(Payment),
    /// This merchant's, but not (yet) paid: nothing to apply.
    NotPaid(Box<Transaction>),
}

/// Whether a verified notification can be applied, checked before anything is read.
fn applicable(
    deps: &Deps,
    verified: &VerifiedNotification,
    now: OffsetDateTime,
) -> Result<Applicable, NotifyError> {
    let txn = verified.transaction()?;
    if txn.appid != deps.settings.appid || txn.mchid != deps.settings.mchid {
        return Err(NotifyError::NotOurs(format!(
            "appid {} / mchid {} are not this merchant's",
            txn.appid, txn.mchid
        )));
    }
    if txn.trade_state != TradeState::Success {
        return Ok(Applicable::NotPaid(Box::new(txn)));
    }
    match payment_of(&txn, Some(&verified.notification.id), now) {
        Ok(payment) => Ok(Applicable::Payment(payment)),
        Err(ApplyError::Malformed(m)) => Err(NotifyError::Malformed(m)),
        Err(ApplyError::Store(e)) => Err(NotifyError::Store(e)),
    }
}

/// A verified `REFUND.*` notification: checked against the refund it names, then applied by
/// the same transition as a refund query (`service::refund::apply_result`), so a duplicate,
/// a query and the sweeper racing it apply it once. A notice for a refund we do not have,
/// or that disagrees with ours, is kept as a `REFUND_MISMATCH` anomaly and acknowledged.
async fn handle_refund(
    deps: &Deps,
    verified: &VerifiedNotification,
    mut record: NotificationRecord,
    now: OffsetDateTime,
) -> Result<NotificationOutcome, NotifyError> {
    let notice = match refund_notice(deps, verified) {
        Ok(notice) => notice,
        Err(refusal) => {
            let refusal = keep_malformed(deps, verified, refusal, now).await;
            if !matches!(refusal, NotifyError::Store(_)) {
                record.outcome = refusal.label();
                record.out_trade_no = named_order(verified);
                deps.store.record_notification(&record).await?;
            }
            return Err(refusal);
        }
    };
    record.out_trade_no = OutTradeNo::parse(&notice.out_trade_no).ok();
    // One read: the refund and the order the notice names, together.
    let (kept, order) = match (
        OutRefundNo::parse(&notice.out_refund_no),
        OutTradeNo::parse(&notice.out_trade_no),
    ) {
        (Ok(no), Ok(out_trade_no)) => {
            match deps.store.get_refund_and_order(&no, &out_trade_no).await {
                Ok(read) => read,
                // A transactional read is cancelled by a write in flight on either item (a
                // concurrent delivery settling it): read them one by one rather than fail.
                Err(e) if e.retryable() => (
                    deps.store.get_refund(&no).await?,
                    deps.store.get_order(&out_trade_no).await?,
                ),
                Err(e) => return Err(e.into()),
            }
        }
        (Ok(no), Err(_)) => (deps.store.get_refund(&no).await?, None),
        (Err(_), _) => (None, None),
    };
    let mismatch = match (&kept, &order) {
        (None, _) => Some("no refund of this out_refund_no here".to_owned()),
        (Some(refund), _) if refund.out_trade_no.as_str() != notice.out_trade_no => Some(format!(
            "the refund is of order {}, the notice names {}",
            refund.out_trade_no, notice.out_trade_no
        )),
        (Some(_), None) => Some("the refund's order is missing".to_owned()),
        (Some(refund), Some(_)) if refund.amount.fen() != notice.amount.refund => Some(format!(
            "the refund is {} fen, the notice says {}",
            refund.amount.fen(),
            notice.amount.refund
        )),
        _ => None,
    };
    let (Some(refund), Some(order), None) = (kept, order, &mismatch) else {
        let detail = mismatch.unwrap_or_default();
        let anomaly = Anomaly {
            out_trade_no: record.out_trade_no.clone(),
            kind: AnomalyKind::RefundMismatch,
            cause: notice.out_refund_no.clone(),
            at: now,
            transaction_id: Some(notice.transaction_id.clone()),
            notification_id: Some(record.id.clone()),
            detail: detail.clone(),
            plaintext: Some(String::from_utf8_lossy(&verified.plaintext).into_owned()),
        };
        deps.store.record_anomaly(&anomaly, now).await?;
        crate::telemetry::emit_metrics(&[(Metric::PaymentAnomaly, 1)], now);
        tracing::error!(notification_id = %record.id, out_refund_no = %notice.out_refund_no, error = %detail, outcome = "anomaly:refund_mismatch", "refund notification kept as an anomaly");
        record.outcome = "anomaly:refund_mismatch".into();
        deps.store.record_notification(&record).await?;
        return Ok(NotificationOutcome::Refund {
            out_refund_no: notice.out_refund_no,
            outcome: "anomaly:refund_mismatch",
        });
    };
    // A re-delivery of what is already applied: recognised from the read alone, like a
    // payment's, so a duplicate costs that one call.
    let notified = match notice.refund_status {
        RefundState::Success => Some(crate::domain::RefundStatus::Success),
        RefundState::Closed => Some(crate::domain::RefundStatus::Closed),
        RefundState::Abnormal => Some(crate::domain::RefundStatus::Abnormal),
        _ => None,
    };
    if notified == Some(refund.status) {
        tracing::info!(notification_id = %record.id, out_trade_no = %order.out_trade_no, out_refund_no = %refund.out_refund_no, refund_status = %refund.status, outcome = "duplicate", "refund notification");
        return Ok(NotificationOutcome::Refund {
            out_refund_no: notice.out_refund_no,
            outcome: "duplicate",
        });
    }
    let answer = RefundResult {
        refund_id: notice.refund_id.clone(),
        out_refund_no: notice.out_refund_no.clone(),
        transaction_id: Some(notice.transaction_id.clone()),
        out_trade_no: Some(notice.out_trade_no.clone()),
        status: notice.refund_status.clone(),
        success_time: notice.success_time.clone(),
        create_time: None,
        user_received_account: notice.user_received_account.clone(),
        amount: notice.amount.clone(),
        request_id: None,
    };
    // Kept in the transaction that moves the refund (SUCCESS, CLOSED, ABNORMAL): the first
    // delivery's record costs no write of its own, and a later duplicate (recognised from
    // its read, writing nothing) never finds the move without its record.
    let settles = matches!(
        answer.status,
        RefundState::Success | RefundState::Closed | RefundState::Abnormal
    );
    let mut kept_with = record.clone();
    kept_with.outcome = "applied".into();
    let (after, moved) = apply_refund_result(
        deps,
        &order,
        refund,
        &answer,
        settles.then_some(&kept_with),
        now,
    )
    .await
    .map_err(|e| match e {
        RefundError::Store(e) => NotifyError::Store(e),
        other => NotifyError::Store(StoreError::Inconsistent(other.to_string())),
    })?;
    let outcome = if moved { "applied" } else { "duplicate" };
    tracing::info!(notification_id = %record.id, out_trade_no = %order.out_trade_no, out_refund_no = %after.out_refund_no, refund_status = %after.status, outcome, "refund notification");
    if !(moved && settles) {
        record.outcome = outcome.into();
        deps.store.record_notification(&record).await?;
    }
    Ok(NotificationOutcome::Refund {
        out_refund_no: notice.out_refund_no,
        outcome,
    })
}

/// The refund notice of this merchant, or why it cannot be applied.
fn refund_notice(
    deps: &Deps,
    verified: &VerifiedNotification,
) -> Result<RefundNotice, NotifyError> {
    let notice = verified.refund_notice()?;
    if notice.mchid != deps.settings.mchid {
        return Err(NotifyError::NotOurs(format!(
            "mchid {} is not this merchant's",
            notice.mchid
        )));
    }
    if notice.amount.refund < 1 || notice.amount.refund > notice.amount.total {
        return Err(NotifyError::Malformed(format!(
            "refund amount {} outside 1..={}",
            notice.amount.refund, notice.amount.total
        )));
    }
    Ok(notice)
}

/// Keeps a verified notification that cannot be applied, with its plaintext, and returns the
/// refusal to answer with (or the store's failure, so WeChat Pay retries).
async fn keep_malformed(
    deps: &Deps,
    verified: &VerifiedNotification,
    refusal: NotifyError,
    now: OffsetDateTime,
) -> NotifyError {
    let refusal = match refusal {
        NotifyError::Rejected(NotificationError::MalformedResource(m)) => NotifyError::Malformed(m),
        other => other,
    };
    let plaintext = String::from_utf8_lossy(&verified.plaintext).into_owned();
    let out_trade_no = named_order(verified);
    let transaction_id = serde_json::from_slice::<serde_json::Value>(&verified.plaintext)
        .ok()
        .and_then(|v| v.get("transaction_id")?.as_str().map(str::to_owned));
    let id = &verified.notification.id;
    let anomaly = Anomaly {
        out_trade_no: out_trade_no.clone(),
        kind: AnomalyKind::MalformedNotification,
        cause: id.clone(),
        at: now,
        transaction_id,
        notification_id: Some(id.clone()),
        detail: refusal.to_string(),
        plaintext: Some(plaintext),
    };
    if let Err(e) = deps.store.record_anomaly(&anomaly, now).await {
        return NotifyError::Store(e);
    }
    crate::telemetry::emit_metrics(&[(Metric::PaymentAnomaly, 1)], now);
    tracing::error!(
        notification_id = %id,
        out_trade_no = out_trade_no.as_ref().map(OutTradeNo::as_str).unwrap_or(""),
        error = %refusal,
        outcome = %refusal.label(),
        "verified notification cannot be applied; kept as an anomaly with its plaintext"
    );
    refusal
}
