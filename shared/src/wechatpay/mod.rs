//! WeChat Pay API v3: request signing, response and notification verification,
//! AEAD_AES_256_GCM, `paySign`, and the keys behind them (public-key mode and platform
//! certificates, one key map for both).
//!
//! Every cryptographic primitive goes through the private `crypto` module, the only place
//! that names the backends (ring, and aes-gcm for AES-256-GCM), so either can be swapped on
//! measurement (DESIGN.md section 8). Byte formats and test vectors:
//! `reference/wechatpay-v3.md` sections 1 to 3 and 9, `testdata/wechatpay-v3-vectors.json`.
//!
//! - [`keys`]: PEM/DER loading (merchant PKCS#8 key, WeChat Pay SPKI key, X.509 certificates).
//! - `message`: the byte strings signed in both directions (below `sign` and `verify`).
//! - [`sign`]: the merchant's `Authorization` header and `paySign`.
//! - [`verify`]: `Wechatpay-*` header verification against the key map.
//! - [`aead`]: AEAD_AES_256_GCM with the APIv3 key.
//! - [`notification`]: verify-then-decrypt of payment and refund notifications, and `Transaction`.
//! - [`refund`]: the refund API's request, refund object and `REFUND.*` notification.
//! - [`certificates`]: decrypting a `/v3/certificates` answer.
//! - [`bill`]: the trade bill (CSV, gzip, SHA-1) as rows and a summary, read as a stream.
//! - [`gateway`]: the `PayGateway` port; [`client`]: its signed, verified HTTP implementation.

pub mod aead;
pub mod bill;
pub mod certificates;
pub mod client;
/// Also the session tokens' backend (`crate::session`): one file names ring and aes-gcm.
pub(crate) mod crypto;
pub mod gateway;
pub mod keys;
mod message;
pub mod notification;
pub mod refund;
pub mod sign;
pub mod verify;

pub use aead::{AEAD_AES_256_GCM, AeadError, ApiV3Key};
pub use bill::{
    BillError, BillLocation, BillRow, BillSummary, BillTradeState, TradeBillReader, check_download,
    verify_sha1,
};
pub use certificates::{CertificateError, decrypt_certificates};
pub use client::{GatewaySettings, HttpPayGateway, RetryPolicy};
pub use gateway::{PayError, PayGateway, PrepayRequest, PrepayResponse};
pub use keys::{KeyError, PlatformCertificate, RsaPrivateKey, RsaPublicKey};
pub use notification::{
    EncryptedResource, Notification, NotificationDraft, NotificationError, Payer, TradeState,
    Transaction, TransactionAmount, VerifiedNotification, build_notification, open_verified,
    verify_and_decrypt,
};
pub use refund::{RefundAmount, RefundNotice, RefundRequest, RefundResult, RefundState};
pub use sign::{
    AuthorizationHeader, MerchantSigner, PayParams, nonce, parse_authorization, request_message,
};
/// SHA-256 hex fingerprint (idempotency request hashes); here so every digest call stays in `crypto`.
pub fn sha256_hex(data: &[u8]) -> String {
    crypto::sha256_hex(data)
}

pub use verify::{SignatureInfo, Verifier, VerifyError, WechatpayHeaders, sign_response_headers};
