//! The WeChat Pay notify endpoint's use case: verify, decrypt, check it is ours, apply the
//! payment exactly once, and tell the edge how to answer so WeChat Pay's retries do the
//! right thing (2xx: stop; anything else: retry on its schedule).

use http::HeaderMap;

use super::{ApplyError, Deps, PaymentOutcome, apply_payment};
use crate::{
    domain::OutTradeNo,
    store::StoreError,
    wechatpay::notification::{NotificationError, TradeState},
};

/// Every outcome here is acknowledged with 204: retrying cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationOutcome {
    Payment(PaymentOutcome),
    /// Verified, but an event or trade state we do not act on (refunds, for now).
    Ignored {
        event_type: String,
    },
}

impl NotificationOutcome {
    pub fn label(&self) -> String {
        match self {
            NotificationOutcome::Payment(p) => p.label(),
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
    /// Verified and decrypted, but for another appid or mchid: not ours to apply.
    #[error("notification rejected: {0}")]
    NotOurs(String),
    /// Verified, but WeChat Pay's transaction lacks what a payment needs.
    #[error("notification rejected: {0}")]
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
            NotifyError::Rejected(_) | NotifyError::Malformed(_) => "rejected:malformed".into(),
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

/// Handles one delivery of a notification: `raw_body` exactly as received.
pub async fn handle_notification(
    deps: &Deps,
    headers: &HeaderMap,
    raw_body: &[u8],
) -> Result<NotificationOutcome, NotifyError> {
    let now = deps.now().unix_timestamp();
    let verified = deps
        .gateway
        .verify_notification(headers, raw_body, now)
        .await?;
    let notification_id = verified.notification.id.clone();
    let event_type = verified.notification.event_type.clone();
    if event_type != "TRANSACTION.SUCCESS" {
        tracing::info!(
            notification_id,
            event_type,
            outcome = "ignored",
            "notification acknowledged"
        );
        return Ok(NotificationOutcome::Ignored { event_type });
    }
    let txn = verified.transaction()?;
    if txn.appid != deps.settings.appid || txn.mchid != deps.settings.mchid {
        return Err(NotifyError::NotOurs(format!(
            "appid {} / mchid {} are not this merchant's",
            txn.appid, txn.mchid
        )));
    }
    if txn.trade_state != TradeState::Success {
        tracing::info!(
            notification_id,
            out_trade_no = %txn.out_trade_no,
            trade_state = %txn.trade_state,
            outcome = "ignored",
            "notification acknowledged"
        );
        return Ok(NotificationOutcome::Ignored { event_type });
    }
    let out_trade_no = OutTradeNo::parse(&txn.out_trade_no)
        .map_err(|e| NotifyError::Malformed(format!("out_trade_no: {e}")))?;
    let order = deps.store.get_order(&out_trade_no).await?;
    match apply_payment(deps, order, &txn, Some(&notification_id)).await {
        Ok(p) => Ok(NotificationOutcome::Payment(p)),
        Err(ApplyError::Store(e)) => Err(NotifyError::Store(e)),
        Err(ApplyError::Malformed(m)) => Err(NotifyError::Malformed(m)),
    }
}
