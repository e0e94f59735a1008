//! The merchant side of signing: `Authorization` headers for API requests and the
//! mini-program `paySign`, plus parsing an `Authorization` header back (the sandbox's
//! simulator checks merchant requests with it). Byte formats: reference section 1 and 4.2.

use serde::{Deserialize, Serialize};

use super::crypto;
use super::keys::{RsaPrivateKey, RsaPublicKey};
pub use super::message::AUTH_SCHEME;
use super::message::join_lines;
use super::verify::{self, VerifyError};

/// Length of the nonces this module generates, as the official SDKs do.
pub const NONCE_LEN: usize = 32;

const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Signs requests and pay parameters for one merchant. Cheap to clone; Debug does not show
/// the key.
#[derive(Debug, Clone)]
pub struct MerchantSigner {
    mchid: String,
    serial_no: String,
    key: RsaPrivateKey,
}

impl MerchantSigner {
    /// `serial_no` is the serial of the merchant API certificate, not a platform serial.
    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: RsaPrivateKey) -> Self {
        Self {
            mchid: mchid.into(),
            serial_no: serial_no.into(),
            key,
        }
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    pub fn serial_no(&self) -> &str {
        &self.serial_no
    }

    pub fn private_key(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// The `Authorization` header value for a request.
    ///
    /// `method` is the upper-case verb, `path_and_query` the URL without scheme and host,
    /// exactly as sent (already percent-encoded, `?query` included), and `body` the exact
    /// bytes sent (empty for GET).
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> String {
        let timestamp = timestamp.to_string();
        let message = request_message(method, path_and_query, &timestamp, nonce, body);
        let signature = self.key.sign_base64(&message);
        format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.mchid, self.serial_no
        )
    }

    /// [`authorization`](Self::authorization) with a fresh nonce.
    pub fn authorization_at(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        timestamp: i64,
    ) -> String {
        self.authorization(method, path_and_query, body, timestamp, &nonce())
    }

    /// The parameters for `wx.requestPayment`, signed with the merchant key.
    /// `appid` must be the AppID the order was placed with.
    pub fn pay_params(
        &self,
        appid: &str,
        prepay_id: &str,
        timestamp: i64,
        nonce: &str,
    ) -> PayParams {
        let time_stamp = timestamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self
            .key
            .sign_base64(&pay_sign_message(appid, &time_stamp, nonce, &package));
        PayParams {
            app_id: appid.to_owned(),
            time_stamp,
            nonce_str: nonce.to_owned(),
            package,
            sign_type: "RSA".to_owned(),
            pay_sign,
        }
    }

    /// [`pay_params`](Self::pay_params) with a fresh nonce.
    pub fn pay_params_at(&self, appid: &str, prepay_id: &str, timestamp: i64) -> PayParams {
        self.pay_params(appid, prepay_id, timestamp, &nonce())
    }
}

/// What the mini-program passes to `wx.requestPayment` (names are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayParams {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

impl PayParams {
    /// Whether `pay_sign` is a valid signature of these parameters by `merchant_key`
    /// (what WeChat checks when the mini-program calls `wx.requestPayment`).
    pub fn verify(&self, merchant_key: &RsaPublicKey) -> bool {
        let message = pay_sign_message(
            &self.app_id,
            &self.time_stamp,
            &self.nonce_str,
            &self.package,
        );
        verify::decode_signature(&self.pay_sign)
            .is_ok_and(|signature| merchant_key.verify(&message, &signature))
    }
}

/// `appId\ntimeStamp\nnonceStr\npackage\n`: `signType` is not signed.
pub fn pay_sign_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> Vec<u8> {
    join_lines(&[
        app_id.as_bytes(),
        time_stamp.as_bytes(),
        nonce_str.as_bytes(),
        package.as_bytes(),
    ])
}

/// `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`: five lines, the last one always
/// terminated, so a GET ends with `\n\n`.
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    join_lines(&[
        method.as_bytes(),
        path_and_query.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body,
    ])
}

/// A fresh 32-character `[0-9A-Za-z]` nonce from the OS CSPRNG.
pub fn nonce() -> String {
    random_alphanumeric(NONCE_LEN)
}

/// `len` characters of `[0-9A-Za-z]`, uniformly distributed.
pub(crate) fn random_alphanumeric(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        crypto::fill_random(&mut buf);
        // Rejection sampling: 248 = 4 * 62, so `b % 62` stays unbiased.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == len {
                break;
            }
            out.push(char::from(
                ALPHANUMERIC[usize::from(*b) % ALPHANUMERIC.len()],
            ));
        }
    }
    out
}

/// A parsed `Authorization: WECHATPAY2-SHA256-RSA2048 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    pub mchid: String,
    pub nonce_str: String,
    pub timestamp: String,
    pub serial_no: String,
    pub signature: String,
}

impl AuthorizationHeader {
    /// The message the merchant signed for this request.
    pub fn message(&self, method: &str, path_and_query: &str, body: &[u8]) -> Vec<u8> {
        request_message(
            method,
            path_and_query,
            &self.timestamp,
            &self.nonce_str,
            body,
        )
    }

    /// Checks the timestamp against `now` (same 300 s window as responses), then the
    /// signature with the merchant's public key (the one registered under `serial_no`).
    pub fn verify(
        &self,
        merchant_key: &RsaPublicKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64, VerifyError> {
        let timestamp = verify::check_timestamp(&self.timestamp, now)?;
        let signature = verify::decode_signature(&self.signature)?;
        if merchant_key.verify(&self.message(method, path_and_query, body), &signature) {
            Ok(timestamp)
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// Parses an `Authorization` header value. The five pairs may come in any order, values
/// must be quoted, and each must appear exactly once and be non-empty.
pub fn parse_authorization(header: &str) -> Result<AuthorizationHeader, VerifyError> {
    let malformed = |what: String| VerifyError::MalformedAuthorization(what);
    let header = header.trim();
    let params = header
        .split_once(|c: char| c.is_ascii_whitespace())
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(AUTH_SCHEME))
        .map(|(_, params)| params)
        .ok_or_else(|| {
            malformed(format!(
                "expected the scheme {AUTH_SCHEME} followed by parameters"
            ))
        })?;

    let mut fields: [(&str, Option<&str>); 5] = [
        ("mchid", None),
        ("nonce_str", None),
        ("timestamp", None),
        ("serial_no", None),
        ("signature", None),
    ];
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| malformed("expected name=\"value\" pairs".into()))?;
        let name = name.trim();
        let (value, after) = after
            .trim_start()
            .strip_prefix('"')
            .and_then(|quoted| quoted.split_once('"'))
            .ok_or_else(|| malformed(format!("the value of `{}` is not quoted", bounded(name))))?;
        let slot = fields
            .iter_mut()
            .find(|(known, _)| *known == name)
            .ok_or_else(|| malformed(format!("unknown parameter `{}`", bounded(name))))?;
        if slot.1.replace(value).is_some() {
            return Err(malformed(format!("duplicate parameter `{name}`")));
        }
        rest = after.trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return Err(malformed("parameters must be separated by commas".into()));
        }
    }

    let [mchid, nonce_str, timestamp, serial_no, signature] =
        fields.map(|(name, value)| match value {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            Some(_) => Err(malformed(format!("empty parameter `{name}`"))),
            None => Err(malformed(format!("missing parameter `{name}`"))),
        });
    Ok(AuthorizationHeader {
        mchid: mchid?,
        nonce_str: nonce_str?,
        timestamp: timestamp?,
        serial_no: serial_no?,
        signature: signature?,
    })
}

/// Network-supplied names end up in error messages and logs: keep them short.
fn bounded(s: &str) -> String {
    s.chars().take(32).collect()
}
