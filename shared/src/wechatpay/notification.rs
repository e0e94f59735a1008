//! Payment notifications: the envelope WeChat Pay POSTs to `notify_url`, the decrypted
//! `Transaction` (also the body of the query-order answer), and the one function that turns
//! (headers, raw body) into a verified, decrypted notification. Fields: reference section 3.
//!
//! The signature is checked over the raw bytes before any JSON parsing: a re-serialized
//! body never verifies (the most common SDK-user bug, reference section 11).

use std::fmt;

use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::aead::{self, AEAD_AES_256_GCM, AeadError, ApiV3Key};
use super::keys::RsaPrivateKey;
use super::sign;
use super::verify::{
    SignatureInfo, Verifier, VerifyError, WechatpayHeaders, sign_response_headers,
};

/// Notification envelope, field names exactly WeChat Pay's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    /// `TRANSACTION.SUCCESS` for payments; `REFUND.*` for refunds.
    pub event_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

/// The encrypted `resource` of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// `transaction` for payments, `refund` for refunds.
    #[serde(default)]
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    /// May be absent or empty; both mean empty associated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    pub nonce: String,
}

/// A payment as WeChat Pay describes it: the plaintext of `TRANSACTION.*` notifications and
/// the answer of query-order. Fields absent in some states (e.g. everything about the payer
/// while `NOTPAY`) are optional; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: TradeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// RFC 3339, e.g. `2018-06-08T10:34:56+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    /// Coupons; kept as raw JSON because nothing here acts on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<serde_json::Value>>,
    /// WeChat Pay's `Request-ID` of the query answer this came in (not part of its JSON;
    /// absent for a notification), kept with what it decides.
    #[serde(skip)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    #[serde(default)]
    pub openid: String,
}

/// Amounts in fen (1/100 CNY).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// `trade_state`. Unknown values (java knows an `ACCEPT`) are kept, not rejected: treat
/// them as not final.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TradeState {
    Success,
    Refund,
    NotPay,
    Closed,
    Revoked,
    UserPaying,
    PayError,
    Other(String),
}

impl TradeState {
    /// The WeChat Pay spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Success => "SUCCESS",
            Self::Refund => "REFUND",
            Self::NotPay => "NOTPAY",
            Self::Closed => "CLOSED",
            Self::Revoked => "REVOKED",
            Self::UserPaying => "USERPAYING",
            Self::PayError => "PAYERROR",
            Self::Other(other) => other,
        }
    }

    /// Whether the money arrived (`SUCCESS`, or `REFUND`: a refund was started, so it had).
    pub fn is_paid(&self) -> bool {
        matches!(self, Self::Success | Self::Refund)
    }
}

impl From<&str> for TradeState {
    fn from(s: &str) -> Self {
        match s {
            "SUCCESS" => Self::Success,
            "REFUND" => Self::Refund,
            "NOTPAY" => Self::NotPay,
            "CLOSED" => Self::Closed,
            "REVOKED" => Self::Revoked,
            "USERPAYING" => Self::UserPaying,
            "PAYERROR" => Self::PayError,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for TradeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TradeState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TradeState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from(s.as_ref()))
    }
}

/// A notification whose signature verified and whose resource decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotification {
    pub notification: Notification,
    pub signature: SignatureInfo,
    /// The decrypted resource (UTF-8 JSON).
    pub plaintext: Vec<u8>,
}

impl VerifiedNotification {
    /// The decrypted payment of a `TRANSACTION.*` event.
    pub fn transaction(&self) -> Result<Transaction, NotificationError> {
        let event = &self.notification.event_type;
        if !event.starts_with("TRANSACTION.") {
            return Err(NotificationError::MalformedResource(format!(
                "event `{}` does not carry a transaction",
                event.chars().take(64).collect::<String>()
            )));
        }
        serde_json::from_slice(&self.plaintext).map_err(|e| {
            NotificationError::MalformedResource(format!("decrypted transaction: {e}"))
        })
    }
}

/// Why a notification was rejected. All of them answer WeChat Pay with a non-2xx status.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("notification signature: {0}")]
    Verify(#[from] VerifyError),
    #[error("notification resource: {0}")]
    Decrypt(#[from] AeadError),
    #[error("malformed notification envelope: {0}")]
    MalformedEnvelope(String),
    #[error("malformed notification resource: {0}")]
    MalformedResource(String),
}

/// Verifies the signature over the raw bytes, then parses the envelope from those same
/// bytes, then decrypts the resource with the APIv3 key.
pub fn verify_and_decrypt(
    verifier: &Verifier,
    key: &ApiV3Key,
    headers: &WechatpayHeaders,
    raw_body: &[u8],
    now: i64,
) -> Result<VerifiedNotification, NotificationError> {
    let signature = verifier.verify(headers, raw_body, now)?;
    open_verified(signature, key, raw_body)
}

/// The second half of [`verify_and_decrypt`], for callers whose verification step is their
/// own (e.g. refreshing platform certificates on an unknown serial first). `signature` must
/// come from verifying exactly these `raw_body` bytes.
pub fn open_verified(
    signature: SignatureInfo,
    key: &ApiV3Key,
    raw_body: &[u8],
) -> Result<VerifiedNotification, NotificationError> {
    let notification: Notification = serde_json::from_slice(raw_body)
        .map_err(|e| NotificationError::MalformedEnvelope(e.to_string()))?;
    let resource = &notification.resource;
    let plaintext = aead::open(
        key,
        &resource.algorithm,
        &resource.nonce,
        resource.associated_data.as_deref().unwrap_or(""),
        &resource.ciphertext,
    )?;
    Ok(VerifiedNotification {
        notification,
        signature,
        plaintext,
    })
}

/// What the simulator wants to notify; see [`build_notification`].
#[derive(Debug, Clone, Copy)]
pub struct NotificationDraft<'a> {
    pub id: &'a str,
    /// RFC 3339.
    pub create_time: &'a str,
    pub event_type: &'a str,
    pub summary: &'a str,
    pub original_type: &'a str,
    pub associated_data: &'a str,
    /// The resource to encrypt (a serialized [`Transaction`] for payments).
    pub plaintext: &'a [u8],
}

impl<'a> NotificationDraft<'a> {
    /// A `TRANSACTION.SUCCESS` notification as WeChat Pay sends it.
    pub fn transaction_success(
        id: &'a str,
        create_time: &'a str,
        transaction_json: &'a [u8],
    ) -> Self {
        Self {
            id,
            create_time,
            event_type: "TRANSACTION.SUCCESS",
            summary: "支付成功",
            original_type: "transaction",
            associated_data: "transaction",
            plaintext: transaction_json,
        }
    }
}

/// The simulator's direction: the (headers, body) of a notification signed by
/// `platform_key` under `serial` at `timestamp`, its resource sealed with `key` under a
/// fresh nonce. The body is compact JSON in WeChat Pay's key order.
///
/// # Panics
/// Only if the plaintext exceeds AES-GCM's 64 GiB message limit.
pub fn build_notification(
    platform_key: &RsaPrivateKey,
    serial: &str,
    key: &ApiV3Key,
    draft: &NotificationDraft<'_>,
    timestamp: i64,
) -> (HeaderMap, Vec<u8>) {
    let nonce = aead::resource_nonce();
    let ciphertext = match aead::seal(key, &nonce, draft.associated_data, draft.plaintext) {
        Ok(ciphertext) => ciphertext,
        Err(e) => panic!("cannot seal the notification resource: {e}"),
    };
    let notification = Notification {
        id: draft.id.to_owned(),
        create_time: draft.create_time.to_owned(),
        resource_type: "encrypt-resource".to_owned(),
        event_type: draft.event_type.to_owned(),
        summary: draft.summary.to_owned(),
        resource: EncryptedResource {
            original_type: draft.original_type.to_owned(),
            algorithm: AEAD_AES_256_GCM.to_owned(),
            ciphertext,
            associated_data: Some(draft.associated_data.to_owned()),
            nonce,
        },
    };
    // A struct of strings always serializes.
    let body = serde_json::to_vec(&notification).unwrap_or_default();
    let headers = sign_response_headers(platform_key, serial, timestamp, &sign::nonce(), &body);
    (headers, body)
}
