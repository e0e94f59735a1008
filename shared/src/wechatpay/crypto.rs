//! The crypto backends: the only file that names `ring` (RSA, SHA-256, SHA-1 for the trade
//! bill's `hash_value`, the OS random generator, and ECDSA P-256 for the session tokens, `crate::session`) and `aes-gcm`
//! (RustCrypto's AES-256-GCM, for WeChat Pay's AEAD_AES_256_GCM).
//!
//! Everything above this module speaks in DER bytes and plain slices, so switching either
//! backend (aws-lc-rs, whose API mirrors ring's, DESIGN.md section 8) means editing this file
//! and `Cargo.toml`, nothing else. Keep the surface small and free of backend types.

use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};

/// Length of the AES-GCM authentication tag appended to every ciphertext.
pub(crate) const GCM_TAG_LEN: usize = 16;
/// Length of the AES-GCM nonce (the standard 96-bit IV).
pub(crate) const GCM_NONCE_LEN: usize = 12;

/// An RSA private key that signs with PKCS#1 v1.5 / SHA-256.
pub(crate) struct RsaSigningKey(RsaKeyPair);

impl RsaSigningKey {
    /// Parses an unencrypted PKCS#8 `PrivateKeyInfo` holding an RSA key (2048 to 4096 bits).
    /// The error is the backend's fixed description (e.g. `InvalidEncoding`), never key bytes.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        RsaKeyPair::from_pkcs8(der)
            .map(Self)
            .map_err(|rejected| rejected.to_string())
    }

    /// Signs `message`; the signature is as long as the modulus.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails (ring uses it for blinding).
    /// Nothing a caller passes in can trigger that.
    pub(crate) fn sign_pkcs1_sha256(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            // The buffer is sized from the key itself, so the only failure left is the OS RNG.
            .expect("RSA signing failed: the system random number generator is unavailable");
        signature
    }

    /// The matching public key as a PKCS#1 `RSAPublicKey` DER.
    pub(crate) fn public_key_pkcs1_der(&self) -> Vec<u8> {
        self.0.public().as_ref().to_vec()
    }
}

/// Verifies an RSA PKCS#1 v1.5 / SHA-256 signature with a PKCS#1 `RSAPublicKey` DER.
/// Any malformed input (key or signature) is simply "does not verify".
pub(crate) fn rsa_pkcs1_sha256_verify(
    public_key_pkcs1_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_pkcs1_der)
        .verify(message, signature)
        .is_ok()
}

/// Fills `buf` from the operating system's CSPRNG.
///
/// # Panics
/// Only if the operating system's random generator fails; there is no sensible fallback
/// for nonces and a silent one would be worse.
pub(crate) fn fill_random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the system random number generator is unavailable");
}

/// AES-256-GCM seal; returns `ciphertext || tag`, or `None` when the plaintext exceeds
/// GCM's per-message limit (about 64 GiB).
pub(crate) fn aes256gcm_seal(
    key: &[u8; 32],
    nonce: [u8; GCM_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let mut in_out = Vec::with_capacity(plaintext.len() + GCM_TAG_LEN);
    in_out.extend_from_slice(plaintext);
    Aes256Gcm::new(key.into())
        .encrypt_in_place(&Nonce::from(nonce), aad, &mut in_out)
        .ok()?;
    Some(in_out)
}

/// AES-256-GCM open of `ciphertext || tag`; `None` when the tag does not authenticate
/// (wrong key, nonce or associated data, or tampered or truncated data).
pub(crate) fn aes256gcm_open(
    key: &[u8; 32],
    nonce: [u8; GCM_NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Option<Vec<u8>> {
    // aes-gcm checks the tag before it decrypts anything, so a forged ciphertext leaves no
    // partial plaintext behind; on success it truncates the tag off the buffer.
    let mut in_out = ciphertext_and_tag.to_vec();
    Aes256Gcm::new(key.into())
        .decrypt_in_place(&Nonce::from(nonce), aad, &mut in_out)
        .ok()?;
    Some(in_out)
}

/// SHA-256 of `data`, lower-case hex: request fingerprints for idempotency records.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of `data`: JWK thumbprints (RFC 7638).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// Incremental SHA-1: the trade bill's `hash_value` (WeChat Pay's only `hash_type`), fed as
/// the bill streams through so the file is never held whole. An integrity check against
/// transport damage, not a signature: the `hash_value` itself comes in a signed answer.
pub(crate) struct Sha1(ring::digest::Context);

impl Sha1 {
    pub(crate) fn new() -> Self {
        Sha1(ring::digest::Context::new(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        ))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Lower-case hex, as WeChat Pay writes `hash_value`.
    pub(crate) fn finish_hex(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

// ---- ECDSA P-256 / SHA-256 (JWS `ES256`): session tokens ----------------------------------

/// An uncompressed P-256 point: `04 || x || y`.
pub(crate) const P256_POINT_LEN: usize = 65;
/// An `ES256` signature: `r || s`, 32 bytes each (JWS's fixed-width form, not DER).
pub(crate) const ES256_SIGNATURE_LEN: usize = 64;

/// A P-256 private key that signs `ES256`.
pub(crate) struct P256SigningKey(EcdsaKeyPair);

impl P256SigningKey {
    /// Parses an unencrypted PKCS#8 `PrivateKeyInfo` holding a P-256 key whose
    /// `ECPrivateKey` includes the public key (as `openssl genpkey` writes it). The error is
    /// the backend's fixed description, never key bytes.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map(Self)
        .map_err(|rejected| rejected.to_string())
    }

    /// The public key as an uncompressed point (`04 || x || y`).
    pub(crate) fn public_point(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    /// Signs `message` (`r || s`, [`ES256_SIGNATURE_LEN`] bytes).
    ///
    /// # Panics
    /// Only if the operating system's random generator fails (ECDSA needs a nonce).
    pub(crate) fn sign_es256(&self, message: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), message)
            .expect("ECDSA signing failed: the system random number generator is unavailable")
            .as_ref()
            .to_vec()
    }
}

/// A new P-256 key as PKCS#8 DER (the sandbox's and the tests' session keys).
///
/// # Panics
/// Only if the operating system's random generator fails.
pub(crate) fn generate_p256_pkcs8() -> Vec<u8> {
    EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .expect("P-256 key generation failed: the system random number generator is unavailable")
    .as_ref()
    .to_vec()
}

/// Verifies an `ES256` signature (`r || s`) with an uncompressed P-256 point. Any malformed
/// input (point or signature) is simply "does not verify".
pub(crate) fn es256_verify(public_point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_point)
        .verify(message, signature)
        .is_ok()
}

/// HMAC-SHA256, only for tests that forge `HS256` tokens to prove they are refused.
#[cfg(test)]
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, message).as_ref().to_vec()
}
