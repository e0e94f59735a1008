//! Verifying what WeChat Pay sends: signed API responses (204s included) and notifications.
//!
//! One key map serves both key kinds, keyed by what arrives in `Wechatpay-Serial`: public-key
//! ids (`PUB_KEY_ID_...`) and platform-certificate serials, so a merchant migrating between
//! them (reference section 2.6) needs no special mode. Checks follow reference section 2.2.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::keys::{PlatformCertificate, RsaPrivateKey, RsaPublicKey};
use super::message::{AUTH_SCHEME, join_lines};

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";

/// WeChat Pay deliberately sends badly signed traffic with this prefix to see whether
/// merchants verify. It must fail like any other bad signature (reference section 2.3).
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// Allowed distance between `Wechatpay-Timestamp` and now. A timestamp is accepted iff
/// `|now - timestamp| < 300`, as in the go and java SDKs (`>= 5 minutes` rejects); php's
/// `> 300` differs only at exactly 300 s.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why a response, notification or merchant request failed verification. Every variant
/// means "do not trust this message".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or empty header {0}")]
    MissingHeader(&'static str),
    #[error("the timestamp is not a unix time in seconds")]
    MalformedTimestamp,
    #[error("the timestamp is {skew_secs} s from now (must be within 300 s)")]
    Expired {
        /// `now - timestamp`: positive when the message is old, negative when ahead.
        skew_secs: i64,
    },
    #[error("signature probe (WECHATPAY/SIGNTEST/...): rejected like any bad signature")]
    SignatureProbe,
    #[error("unknown Wechatpay-Serial `{0}`: no public key or platform certificate with that id")]
    UnknownSerial(String),
    #[error("the signature is not valid base64")]
    MalformedSignature,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("unsupported Wechatpay-Signature-Type `{0}` (expected WECHATPAY2-SHA256-RSA2048)")]
    UnsupportedSignatureType(String),
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(String),
}

/// The `Wechatpay-*` headers of a signed response or notification, as received: what
/// verification reads and what a notification record keeps, in plain types so the use cases
/// never see HTTP. The edge builds it once from the request's headers (`From<&HeaderMap>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WechatpayHeaders {
    /// Every `wechatpay-*` header in the order received: lowercase name, value bytes as sent
    /// (the signature covers the timestamp and nonce bytes exactly).
    received: Vec<(String, Vec<u8>)>,
}

impl WechatpayHeaders {
    /// The first value received under `name` (any case), as `HeaderMap::get` answers.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.received
            .iter()
            .find(|(received, _)| received.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The headers whose values are text, sorted by name and value: what a notification
    /// record keeps so the notification can be verified again later.
    pub fn text_pairs(&self) -> Vec<(String, String)> {
        let mut kept: Vec<(String, String)> = self
            .received
            .iter()
            .filter_map(|(name, value)| {
                // Text as `HeaderValue::to_str` reads it: visible ASCII and tabs only.
                let visible = value.iter().all(|&b| b == b'\t' || (32..127).contains(&b));
                let text = std::str::from_utf8(value).ok().filter(|_| visible)?;
                Some((name.clone(), text.to_owned()))
            })
            .collect();
        kept.sort();
        kept
    }
}

impl From<&HeaderMap> for WechatpayHeaders {
    fn from(headers: &HeaderMap) -> Self {
        let received = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("wechatpay-"))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        WechatpayHeaders { received }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    /// `Wechatpay-Serial` as sent.
    pub serial: String,
    pub timestamp: i64,
    pub nonce: String,
}

/// The WeChat Pay verification keys, by public-key id or certificate serial.
/// Lookups ignore case and, for hex serials, leading zeros.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, (String, RsaPublicKey)>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a WeChat Pay public key under its id (`PUB_KEY_ID_...`).
    pub fn add_public_key(&mut self, public_key_id: impl Into<String>, key: RsaPublicKey) {
        let id = public_key_id.into();
        self.keys.insert(normalize_serial(&id), (id, key));
    }

    /// Adds (or replaces) a platform certificate under its serial. Validity dates are not
    /// enforced here: WeChat Pay phases certificates in and out by choosing which one signs.
    pub fn add_certificate(&mut self, cert: PlatformCertificate) {
        self.add_public_key(cert.serial_no, cert.key);
    }

    /// Removes a key; returns whether it was known.
    pub fn remove(&mut self, serial: &str) -> bool {
        self.keys.remove(&normalize_serial(serial)).is_some()
    }

    pub fn knows(&self, serial: &str) -> bool {
        self.keys.contains_key(&normalize_serial(serial))
    }

    /// The key registered under `serial`, if any.
    pub fn key(&self, serial: &str) -> Option<&RsaPublicKey> {
        self.keys.get(&normalize_serial(serial)).map(|(_, key)| key)
    }

    /// Known ids and serials as added, sorted.
    pub fn serials(&self) -> Vec<String> {
        let mut serials: Vec<String> = self
            .keys
            .values()
            .map(|(serial, _)| serial.clone())
            .collect();
        serials.sort();
        serials
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a signed response or notification against its RAW body bytes.
    ///
    /// Order: the four `Wechatpay-*` headers (present, non-empty), the signature type, the
    /// timestamp and its 300 s window around `now` (unix seconds), the probe prefix, the
    /// serial, base64, and last the RSA signature over `timestamp\nnonce\nbody\n`.
    pub fn verify(
        &self,
        headers: &WechatpayHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<SignatureInfo, VerifyError> {
        let timestamp = required(headers, HEADER_TIMESTAMP)?;
        let nonce = required(headers, HEADER_NONCE)?;
        let signature = required(headers, HEADER_SIGNATURE)?;
        let serial = required(headers, HEADER_SERIAL)?;
        if let Some(kind) = headers.get(HEADER_SIGNATURE_TYPE)
            && kind != AUTH_SCHEME.as_bytes()
        {
            return Err(VerifyError::UnsupportedSignatureType(bounded_lossy(kind)));
        }

        let timestamp_str =
            std::str::from_utf8(timestamp).map_err(|_| VerifyError::MalformedTimestamp)?;
        let parsed_timestamp = check_timestamp(timestamp_str, now)?;
        if signature.starts_with(PROBE_PREFIX.as_bytes()) {
            return Err(VerifyError::SignatureProbe);
        }
        let serial = String::from_utf8_lossy(serial);
        let key = self
            .key(&serial)
            .ok_or_else(|| VerifyError::UnknownSerial(serial.chars().take(64).collect()))?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| VerifyError::MalformedSignature)?;

        let message = join_lines(&[timestamp, nonce, body]);
        if !key.verify(&message, &signature) {
            return Err(VerifyError::BadSignature);
        }
        Ok(SignatureInfo {
            serial: serial.into_owned(),
            timestamp: parsed_timestamp,
            nonce: String::from_utf8_lossy(nonce).into_owned(),
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("serials", &self.serials())
            .finish()
    }
}

/// `timestamp\nnonce\nbody\n`: what WeChat Pay signs in responses and notifications.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    join_lines(&[timestamp.as_bytes(), nonce.as_bytes(), body])
}

/// The `Wechatpay-*` headers of a response or notification signed with `key` (the
/// simulator's side). A `serial` or `nonce` that is not a valid header value is left out,
/// so the result fails verification with `MissingHeader` instead of panicking.
pub fn sign_response_headers(
    key: &RsaPrivateKey,
    serial: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> HeaderMap {
    let timestamp = timestamp.to_string();
    let signature = key.sign_base64(&response_message(&timestamp, nonce, body));
    let mut headers = HeaderMap::with_capacity(5);
    for (name, value) in [
        ("wechatpay-timestamp", timestamp.as_str()),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", signature.as_str()),
        ("wechatpay-serial", serial),
        ("wechatpay-signature-type", AUTH_SCHEME),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// Parses a decimal unix timestamp and checks it lies within [`MAX_CLOCK_SKEW_SECS`] of
/// `now`. Only ASCII digits are accepted (no sign, no spaces, no milliseconds overflow).
pub(crate) fn check_timestamp(raw: &str, now: i64) -> Result<i64, VerifyError> {
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp);
    }
    let timestamp: i64 = raw.parse().map_err(|_| VerifyError::MalformedTimestamp)?;
    let skew_secs = now.saturating_sub(timestamp);
    if skew_secs.unsigned_abs() >= MAX_CLOCK_SKEW_SECS.unsigned_abs() {
        return Err(VerifyError::Expired { skew_secs });
    }
    Ok(timestamp)
}

/// Standard base64 (with padding) to signature bytes; probes are reported as such.
pub(crate) fn decode_signature(signature: &str) -> Result<Vec<u8>, VerifyError> {
    if signature.starts_with(PROBE_PREFIX) {
        return Err(VerifyError::SignatureProbe);
    }
    STANDARD
        .decode(signature)
        .map_err(|_| VerifyError::MalformedSignature)
}

/// Case-insensitive, and hex serials compare as numbers: go, java and the `/v3/certificates`
/// listing do not agree on leading zeros (reference section 2.6).
pub(crate) fn normalize_serial(serial: &str) -> String {
    let upper = serial.trim().to_ascii_uppercase();
    if !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_hexdigit()) {
        let trimmed = upper.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }
    } else {
        upper
    }
}

fn required<'h>(
    headers: &'h WechatpayHeaders,
    name: &'static str,
) -> Result<&'h [u8], VerifyError> {
    headers
        .get(name)
        .filter(|value| !value.iter().all(u8::is_ascii_whitespace))
        .ok_or(VerifyError::MissingHeader(name))
}

fn bounded_lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechatpay_headers_keep_what_the_header_map_held() {
        let mut map = HeaderMap::new();
        map.insert("Wechatpay-Serial", HeaderValue::from_static("PUB_KEY_ID_1"));
        map.append("Wechatpay-Serial", HeaderValue::from_static("PUB_KEY_ID_2"));
        map.insert(
            "Wechatpay-Nonce",
            HeaderValue::from_bytes(b"n\xff").unwrap(),
        );
        map.insert("Content-Type", HeaderValue::from_static("application/json"));
        let headers = WechatpayHeaders::from(&map);

        assert_eq!(headers.get(HEADER_SERIAL), Some(&b"PUB_KEY_ID_1"[..]));
        assert_eq!(headers.get("wechatpay-nonce"), Some(&b"n\xff"[..]));
        assert_eq!(headers.get("content-type"), None);
        assert_eq!(headers.get(HEADER_TIMESTAMP), None);
        // What the notification record keeps: text values only, sorted.
        assert_eq!(
            headers.text_pairs(),
            [
                ("wechatpay-serial".to_owned(), "PUB_KEY_ID_1".to_owned()),
                ("wechatpay-serial".to_owned(), "PUB_KEY_ID_2".to_owned()),
            ]
        );
    }
}
