//! Payment and refund notifications: the envelope WeChat Pay POSTs to `notify_url`, the
//! decrypted `Transaction` (also the body of the query-order answer) or `RefundNotice`, and
//! the one function that turns (headers, raw body) into a verified, decrypted notification.
//! Fields: reference section 3 (refunds: `wechatpay-refunds-bills.md` section 4).
//!
//! The signature is checked over the raw bytes before any JSON parsing: a re-serialized
//! body never verifies (the most common SDK-user bug, reference section 11).

use std::fmt;

use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::aead::{self, AEAD_AES_256_GCM, AeadError, ApiV3Key};
use super::keys::RsaPrivateKey;
use super::refund::{RefundNotice, RefundState};
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
        self.expect_event("TRANSACTION.", "transaction")?;
        self.parse_plaintext("transaction")
    }

    /// The decrypted refund of a `REFUND.*` event (resource `original_type` `refund`,
    /// plaintext with `refund_status`; reference `wechatpay-refunds-bills.md` section 4).
    pub fn refund_notice(&self) -> Result<RefundNotice, NotificationError> {
        self.expect_event("REFUND.", "refund")?;
        let original_type = &self.notification.resource.original_type;
        if original_type != REFUND_ORIGINAL_TYPE {
            return Err(NotificationError::MalformedResource(format!(
                "resource of original_type `{}` is not a refund",
                original_type.chars().take(64).collect::<String>()
            )));
        }
        self.parse_plaintext("refund notice")
    }

    fn expect_event(&self, prefix: &str, what: &str) -> Result<(), NotificationError> {
        let event = &self.notification.event_type;
        if event.starts_with(prefix) {
            return Ok(());
        }
        Err(NotificationError::MalformedResource(format!(
            "event `{}` does not carry a {what}",
            event.chars().take(64).collect::<String>()
        )))
    }

    fn parse_plaintext<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
    ) -> Result<T, NotificationError> {
        serde_json::from_slice(&self.plaintext)
            .map_err(|e| NotificationError::MalformedResource(format!("decrypted {what}: {e}")))
    }
}

/// `resource.original_type` (and the associated data WeChat Pay seals it under) of refunds.
const REFUND_ORIGINAL_TYPE: &str = "refund";

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
    /// The resource to encrypt (a serialized [`Transaction`] for payments, a serialized
    /// [`RefundNotice`] for refunds).
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

    /// The `REFUND.SUCCESS` / `REFUND.CLOSED` / `REFUND.ABNORMAL` notification of a refund
    /// that reached `refund_status` (the plaintext: a serialized [`RefundNotice`]). `None`
    /// for a status WeChat Pay does not notify (PROCESSING, or one it does not know).
    pub fn refund(
        id: &'a str,
        create_time: &'a str,
        refund_status: &RefundState,
        notice_json: &'a [u8],
    ) -> Option<Self> {
        let (event_type, summary) = match refund_status {
            RefundState::Success => ("REFUND.SUCCESS", "退款成功"),
            RefundState::Closed => ("REFUND.CLOSED", "退款关闭"),
            RefundState::Abnormal => ("REFUND.ABNORMAL", "退款异常"),
            RefundState::Processing | RefundState::Other(_) => return None,
        };
        Some(Self {
            id,
            create_time,
            event_type,
            summary,
            original_type: REFUND_ORIGINAL_TYPE,
            associated_data: REFUND_ORIGINAL_TYPE,
            plaintext: notice_json,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechatpay::keys::RsaPublicKey;
    use crate::wechatpay::refund::RefundAmount;

    const SERIAL: &str = "PUB_KEY_ID_0114232134912410000000000012345678";
    const APIV3: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
    const NOW: i64 = 1_780_000_000;

    fn pem(name: &str) -> String {
        let path = format!("{}/../testdata/keys/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    fn platform_key() -> RsaPrivateKey {
        RsaPrivateKey::from_pkcs8_pem(&pem("test_platform_key.pem")).unwrap()
    }

    fn key() -> ApiV3Key {
        ApiV3Key::new(APIV3).unwrap()
    }

    /// Signs and seals `draft` as the simulator does, then verifies and opens it as the
    /// payment-callback does.
    fn round_trip(draft: &NotificationDraft<'_>) -> VerifiedNotification {
        let (headers, body) = build_notification(&platform_key(), SERIAL, &key(), draft, NOW);
        let mut verifier = Verifier::new();
        verifier.add_public_key(
            SERIAL,
            RsaPublicKey::from_spki_pem(&pem("test_platform_public.pem")).unwrap(),
        );
        verify_and_decrypt(
            &verifier,
            &key(),
            &WechatpayHeaders::from(&headers),
            &body,
            NOW,
        )
        .unwrap()
    }

    fn notice(status: RefundState) -> RefundNotice {
        RefundNotice {
            mchid: "1230000109".into(),
            out_trade_no: "ORDER0000000000000000000001".into(),
            transaction_id: "4200000000202606010000000001".into(),
            out_refund_no: "R-1|a*b@c_d".into(),
            refund_id: "50000000012026060100000000001".into(),
            success_time: (status == RefundState::Success)
                .then(|| "2026-06-01T12:00:03+08:00".to_owned()),
            refund_status: status,
            user_received_account: Some("支付用户零钱".into()),
            amount: RefundAmount {
                refund: 300,
                total: 1980,
                payer_total: Some(1980),
                payer_refund: Some(300),
                currency: None,
            },
        }
    }

    fn transaction() -> Transaction {
        serde_json::from_str(
            r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109",
            "out_trade_no":"ORDER0000000000000000000001","transaction_id":"4200000000202606010000000001",
            "trade_state":"SUCCESS","amount":{"total":1980}}"#,
        )
        .unwrap()
    }

    #[test]
    fn each_refund_status_notified_round_trips_as_its_refund_notice() {
        for (status, event) in [
            (RefundState::Success, "REFUND.SUCCESS"),
            (RefundState::Closed, "REFUND.CLOSED"),
            (RefundState::Abnormal, "REFUND.ABNORMAL"),
        ] {
            let sent = notice(status.clone());
            let json = serde_json::to_vec(&sent).unwrap();
            let draft =
                NotificationDraft::refund("EV-1", "2026-06-01T12:00:03+08:00", &status, &json)
                    .unwrap();
            let verified = round_trip(&draft);
            let envelope = &verified.notification;
            assert_eq!(envelope.event_type, event);
            assert_eq!(envelope.resource.original_type, "refund");
            assert_eq!(envelope.resource.associated_data.as_deref(), Some("refund"));
            // WeChat Pay's field name in the plaintext is `refund_status`, not `status`.
            let plaintext: serde_json::Value = serde_json::from_slice(&verified.plaintext).unwrap();
            assert_eq!(plaintext["refund_status"], status.as_str());
            assert!(plaintext.get("status").is_none());
            assert_eq!(verified.refund_notice().unwrap(), sent);
            // A refund notification carries no payment.
            assert!(matches!(
                verified.transaction(),
                Err(NotificationError::MalformedResource(_))
            ));
        }
    }

    #[test]
    fn statuses_wechat_pay_does_not_notify_build_no_refund_notification() {
        for status in [RefundState::Processing, RefundState::Other("NEW".into())] {
            assert!(NotificationDraft::refund("EV-1", "t", &status, b"{}").is_none());
        }
    }

    #[test]
    fn a_payment_notification_is_not_a_refund_notice() {
        let json = serde_json::to_vec(&transaction()).unwrap();
        let draft =
            NotificationDraft::transaction_success("EV-2", "2026-06-01T12:00:00+08:00", &json);
        let verified = round_trip(&draft);
        assert_eq!(verified.transaction().unwrap(), transaction());
        let refused = verified.refund_notice().unwrap_err();
        assert!(
            refused.to_string().contains("TRANSACTION.SUCCESS"),
            "{refused}"
        );
    }

    #[test]
    fn a_refund_event_whose_resource_is_not_a_refund_is_refused() {
        // REFUND.* but sealed as a transaction resource.
        let notice_json = serde_json::to_vec(&notice(RefundState::Success)).unwrap();
        let wrong_type = NotificationDraft {
            original_type: "transaction",
            ..NotificationDraft::refund("EV-3", "t", &RefundState::Success, &notice_json).unwrap()
        };
        let refused = round_trip(&wrong_type).refund_notice().unwrap_err();
        assert!(refused.to_string().contains("original_type"), "{refused}");

        // REFUND.* and original_type refund, but the plaintext is a payment.
        let transaction_json = serde_json::to_vec(&transaction()).unwrap();
        let payment_inside =
            NotificationDraft::refund("EV-4", "t", &RefundState::Success, &transaction_json)
                .unwrap();
        let refused = round_trip(&payment_inside).refund_notice().unwrap_err();
        assert!(
            matches!(&refused, NotificationError::MalformedResource(m) if m.contains("refund notice")),
            "{refused}"
        );
    }
}
