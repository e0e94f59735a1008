//! AEAD_AES_256_GCM, the cipher of notification resources and downloaded certificates.
//!
//! The key is the 32 ASCII bytes of the APIv3 key, the nonce the 12 bytes of the `nonce`
//! string, the associated data the bytes of `associated_data`, and the base64 ciphertext
//! ends with the 16-byte tag, which is always checked (reference section 3.3).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::crypto::{self, GCM_NONCE_LEN, GCM_TAG_LEN};

/// The only algorithm name WeChat Pay uses with an RSA merchant.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// Length of the APIv3 key in bytes.
pub const API_V3_KEY_LEN: usize = 32;

/// Why a resource could not be decrypted (or encrypted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("unsupported resource algorithm `{0}` (expected AEAD_AES_256_GCM)")]
    UnsupportedAlgorithm(String),
    #[error("the APIv3 key must be exactly 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("the AES-GCM nonce must be exactly 12 bytes, got {0}")]
    NonceLength(usize),
    #[error("ciphertext is not valid base64")]
    MalformedBase64,
    #[error("ciphertext is shorter than the 16-byte authentication tag")]
    CiphertextTooShort,
    #[error(
        "authentication failed: wrong APIv3 key, nonce or associated data, or tampered ciphertext"
    )]
    BadTag,
    #[error("plaintext exceeds the AES-GCM message size limit")]
    PlaintextTooLong,
}

/// The merchant's APIv3 key. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiV3Key([u8; API_V3_KEY_LEN]);

impl ApiV3Key {
    /// The key as configured in the merchant platform: a 32-character ASCII string used
    /// as raw key bytes. Any other length is an error (the APIv2 key is a classic mix-up).
    pub fn new(key: &str) -> Result<Self, AeadError> {
        Self::from_bytes(key.as_bytes())
    }

    /// Raw key bytes; exactly 32.
    pub fn from_bytes(key: &[u8]) -> Result<Self, AeadError> {
        <[u8; API_V3_KEY_LEN]>::try_from(key)
            .map(Self)
            .map_err(|_| AeadError::KeyLength(key.len()))
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(..)")
    }
}

impl fmt::Display for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted APIv3 key]")
    }
}

/// Decrypts a resource: checks `algorithm`, then the nonce length, the base64, the length
/// and finally the tag. Returns the plaintext bytes (UTF-8 JSON for WeChat Pay resources,
/// but not checked here).
pub fn open(
    key: &ApiV3Key,
    algorithm: &str,
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, AeadError> {
    if algorithm != AEAD_AES_256_GCM {
        // Bounded: the value comes from the network and ends up in logs.
        return Err(AeadError::UnsupportedAlgorithm(
            algorithm.chars().take(64).collect(),
        ));
    }
    let nonce = nonce_bytes(nonce)?;
    let blob = STANDARD
        .decode(ciphertext_b64)
        .map_err(|_| AeadError::MalformedBase64)?;
    if blob.len() < GCM_TAG_LEN {
        return Err(AeadError::CiphertextTooShort);
    }
    crypto::aes256gcm_open(&key.0, nonce, associated_data.as_bytes(), &blob)
        .ok_or(AeadError::BadTag)
}

/// Encrypts `plaintext` the way WeChat Pay does; returns base64(ciphertext || tag).
/// The caller picks the nonce (12 bytes) and must never reuse one with the same key.
pub fn seal(
    key: &ApiV3Key,
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    let nonce = nonce_bytes(nonce)?;
    seal_with(key, nonce, associated_data, plaintext)
}

/// A fresh 12-character `[0-9A-Za-z]` nonce, the shape WeChat Pay uses for resources.
pub fn resource_nonce() -> String {
    super::sign::random_alphanumeric(GCM_NONCE_LEN)
}

pub(crate) fn seal_with(
    key: &ApiV3Key,
    nonce: [u8; GCM_NONCE_LEN],
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, AeadError> {
    crypto::aes256gcm_seal(&key.0, nonce, associated_data.as_bytes(), plaintext)
        .map(|blob| STANDARD.encode(blob))
        .ok_or(AeadError::PlaintextTooLong)
}

fn nonce_bytes(nonce: &str) -> Result<[u8; GCM_NONCE_LEN], AeadError> {
    <[u8; GCM_NONCE_LEN]>::try_from(nonce.as_bytes())
        .map_err(|_| AeadError::NonceLength(nonce.len()))
}
