//! Session-token keys: EC P-256 signing keys (PKCS#8 PEM) and public keys (SPKI PEM), each
//! named by its RFC 7638 JWK thumbprint (`kid`), and the JWKS document that publishes them.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use x509_cert::der::Decode as _;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use crate::wechatpay::crypto;

/// `id-ecPublicKey`.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `prime256v1` (P-256, secp256r1).
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// The DER of a P-256 SPKI up to the point: SEQUENCE { SEQUENCE { id-ecPublicKey,
/// prime256v1 }, BIT STRING (66 bytes: no unused bits, then the point) }. DER is canonical,
/// so every uncompressed P-256 SPKI is this prefix and the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a session key could not be loaded. Never includes key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionKeyError {
    #[error("no PEM block found")]
    Empty,
    #[error("malformed PEM (block {block}): {problem}")]
    MalformedPem { block: usize, problem: String },
    #[error("block {block}: expected `-----BEGIN {expected}-----`, found `{found}`")]
    WrongPemType {
        block: usize,
        expected: &'static str,
        found: String,
    },
    #[error("block {block}: {problem}")]
    InvalidKey { block: usize, problem: String },
}

fn invalid(block: usize, problem: impl Into<String>) -> SessionKeyError {
    SessionKeyError::InvalidKey {
        block,
        problem: problem.into(),
    }
}

/// Every PEM block of `input` with the `expected` label (1-based block numbers in errors).
/// Newlines written as `\n` (a PEM squeezed into one environment variable) are accepted.
fn pem_blocks(input: &str, expected: &'static str) -> Result<Vec<Vec<u8>>, SessionKeyError> {
    let input = crate::wechatpay::keys::unescape_newlines(input);
    let blocks = pem::parse_many(input.as_ref()).map_err(|e| SessionKeyError::MalformedPem {
        block: 0,
        problem: e.to_string(),
    })?;
    if blocks.is_empty() {
        return Err(SessionKeyError::Empty);
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            if b.tag() == expected {
                Ok(b.into_contents())
            } else {
                Err(SessionKeyError::WrongPemType {
                    block: i + 1,
                    expected,
                    found: b.tag().chars().take(40).collect(),
                })
            }
        })
        .collect()
}

/// A P-256 public key that verifies session tokens, with its `kid`. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    point: Arc<[u8]>,
    kid: String,
}

impl PublicKey {
    /// From an uncompressed point `04 || x || y`.
    pub fn from_point(point: &[u8]) -> Result<Self, SessionKeyError> {
        if point.len() != crypto::P256_POINT_LEN || point[0] != 0x04 {
            return Err(invalid(
                1,
                "not an uncompressed P-256 point (65 bytes starting 0x04)",
            ));
        }
        let kid = thumbprint(&point[1..33], &point[33..]);
        Ok(PublicKey {
            point: Arc::from(point),
            kid,
        })
    }

    /// From a DER `SubjectPublicKeyInfo` (`id-ecPublicKey`, `prime256v1`).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SessionKeyError> {
        Self::from_spki_der_block(der, 1)
    }

    fn from_spki_der_block(der: &[u8], block: usize) -> Result<Self, SessionKeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| invalid(block, format!("not a SubjectPublicKeyInfo: {e}")))?;
        if spki.algorithm.oid != EC_PUBLIC_KEY {
            return Err(invalid(
                block,
                format!(
                    "key algorithm {} is not EC: session keys are EC P-256 (ES256)",
                    spki.algorithm.oid
                ),
            ));
        }
        let curve = spki
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve != Some(PRIME256V1) {
            return Err(invalid(
                block,
                "the EC curve is not P-256 (prime256v1): ES256 needs P-256",
            ));
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| invalid(block, "malformed public key bits"))?;
        Self::from_point(point).map_err(|_| {
            invalid(
                block,
                "the public key is not an uncompressed P-256 point (65 bytes starting 0x04)",
            )
        })
    }

    /// Every `-----BEGIN PUBLIC KEY-----` block of `pem` (`SESSION_PUBLIC_KEYS`): at least one.
    pub fn parse_all(pem: &str) -> Result<Vec<Self>, SessionKeyError> {
        pem_blocks(pem, "PUBLIC KEY")?
            .iter()
            .enumerate()
            .map(|(i, der)| Self::from_spki_der_block(der, i + 1))
            .collect()
    }

    /// The RFC 7638 JWK SHA-256 thumbprint, base64url: the token header's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn point(&self) -> &[u8] {
        &self.point
    }

    /// The SPKI DER (the inverse of [`Self::from_spki_der`]).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        der
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM, LF line endings.
    pub fn to_spki_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.to_spki_der()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// The key as a JWK (RFC 7518 section 6.2), with `kid`, `alg` and `use`.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&self.point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&self.point[33..]),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(kid={})", self.kid)
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace
/// (`{"crv":"P-256","kty":"EC","x":"..","y":".."}`), base64url without padding.
fn thumbprint(x: &[u8], y: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    URL_SAFE_NO_PAD.encode(crypto::sha256(canonical.as_bytes()))
}

/// A P-256 private key that signs session tokens. `Debug` shows only the `kid`.
#[derive(Clone)]
pub struct SigningKey {
    key: Arc<crypto::P256SigningKey>,
    public: PublicKey,
}

impl SigningKey {
    /// From an unencrypted PKCS#8 `PrivateKeyInfo` DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SessionKeyError> {
        Self::from_pkcs8_der_block(der, 1)
    }

    fn from_pkcs8_der_block(der: &[u8], block: usize) -> Result<Self, SessionKeyError> {
        let key = crypto::P256SigningKey::from_pkcs8_der(der).map_err(|e| {
            invalid(
                block,
                format!(
                    "not a PKCS#8 EC P-256 private key including its public key ({e}); create \
                     one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
                ),
            )
        })?;
        let public =
            PublicKey::from_point(key.public_point()).map_err(|e| invalid(block, e.to_string()))?;
        Ok(SigningKey {
            key: Arc::new(key),
            public,
        })
    }

    /// Every `-----BEGIN PRIVATE KEY-----` block of `pem` (`SESSION_SIGNING_KEY`): the first
    /// signs, the others are still published (rotation).
    pub fn parse_all(pem: &str) -> Result<Vec<Self>, SessionKeyError> {
        pem_blocks(pem, "PRIVATE KEY")?
            .iter()
            .enumerate()
            .map(|(i, der)| Self::from_pkcs8_der_block(der, i + 1))
            .collect()
    }

    /// A new random key (sandbox first start, tests).
    pub fn generate() -> Self {
        Self::from_pkcs8_der(&crypto::generate_p256_pkcs8())
            .expect("ring parses the PKCS#8 it generated")
    }

    /// A new random key as PKCS#8 PEM (what `SESSION_SIGNING_KEY` holds).
    pub fn generate_pkcs8_pem() -> String {
        pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", crypto::generate_p256_pkcs8()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// `ES256` over `message`: `r || s`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign_es256(message)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(kid={})", self.public.kid)
    }
}

/// The JWKS document (`GET /.well-known/jwks.json`): every key, each once.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Value {
    let mut seen = std::collections::HashSet::new();
    let keys: Vec<Value> = keys
        .into_iter()
        .filter(|k| seen.insert(k.kid.clone()))
        .map(PublicKey::jwk)
        .collect();
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9449 (DPoP) figures 5 and 9: an example P-256 JWK and its published RFC 7638
    /// thumbprint (`jkt`), computed by the RFC's authors, not by this code.
    const RFC9449_X: &str = "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs";
    const RFC9449_Y: &str = "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA";
    const RFC9449_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

    /// A P-256 key as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    /// writes it (OpenSSL 3.0.19), with its public half from `openssl pkey -pubout`. A throwaway
    /// test key: it proves nothing.
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHk/J8Ne5rMLneAjX
7WYz+qcsTtBafkE9htPzoBAOqzahRANCAAREsCwTCYkNfITiPXM9IM1r+dH8J698
mwdjDSmclWs1cQ9/aT756+u97riVoHmguDshF125PXJh79dufGNQ1MF5
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERLAsEwmJDXyE4j1zPSDNa/nR/Cev
fJsHYw0pnJVrNXEPf2k++evrve64laB5oLg7IRdduT1yYe/XbnxjUNTBeQ==
-----END PUBLIC KEY-----
";

    fn point(x: &str, y: &str) -> Vec<u8> {
        let mut p = vec![0x04];
        p.extend(URL_SAFE_NO_PAD.decode(x).unwrap());
        p.extend(URL_SAFE_NO_PAD.decode(y).unwrap());
        p
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_published_in_rfc9449() {
        let key = PublicKey::from_point(&point(RFC9449_X, RFC9449_Y)).unwrap();
        assert_eq!(key.kid(), RFC9449_JKT);
    }

    #[test]
    fn kid_is_sha256_of_the_canonical_jwk_members() {
        // Recomputed from the JWK this code publishes: the required members picked out of
        // it, sorted, serialised without whitespace, hashed.
        let key = SigningKey::generate();
        let jwk = key.public_key().jwk();
        let mut required = serde_json::Map::new();
        for member in ["crv", "kty", "x", "y"] {
            required.insert(member.to_owned(), jwk[member].clone());
        }
        let canonical = serde_json::to_string(&Value::Object(required)).unwrap();
        assert!(canonical.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
        let expected = URL_SAFE_NO_PAD.encode(crypto::sha256(canonical.as_bytes()));
        assert_eq!(jwk["kid"], expected.as_str());
        assert_eq!(key.kid(), expected);
    }

    #[test]
    fn openssl_keys_load_and_pair_up() {
        let signing = SigningKey::parse_all(OPENSSL_KEY).unwrap();
        let public = PublicKey::parse_all(OPENSSL_PUBLIC).unwrap();
        assert_eq!((signing.len(), public.len()), (1, 1));
        assert_eq!(signing[0].public_key(), &public[0]);
        assert_eq!(public[0].to_spki_pem(), OPENSSL_PUBLIC);
        // The body as one long line, as template.yaml builds SESSION_PUBLIC_KEYS from the
        // base64 of the DER.
        let der_b64: String = OPENSSL_PUBLIC
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let one_line = format!("-----BEGIN PUBLIC KEY-----\n{der_b64}\n-----END PUBLIC KEY-----\n");
        assert_eq!(PublicKey::parse_all(&one_line).unwrap(), public);
        // The same PEM squeezed into one line with literal `\n`s.
        let escaped = OPENSSL_PUBLIC.replace('\n', "\\n");
        assert_eq!(PublicKey::parse_all(&escaped).unwrap(), public);
    }

    #[test]
    fn several_blocks_keep_their_order_and_bad_ones_are_named() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let text = format!(
            "{}{}",
            a.public_key().to_spki_pem(),
            b.public_key().to_spki_pem()
        );
        let keys = PublicKey::parse_all(&text).unwrap();
        assert_eq!(
            keys.iter().map(PublicKey::kid).collect::<Vec<_>>(),
            [a.kid(), b.kid()]
        );
        let two = format!("{}{}", SigningKey::generate_pkcs8_pem(), OPENSSL_KEY);
        assert_eq!(SigningKey::parse_all(&two).unwrap().len(), 2);

        assert_eq!(
            PublicKey::parse_all("nothing here"),
            Err(SessionKeyError::Empty)
        );
        let mixed = format!("{}{}", a.public_key().to_spki_pem(), OPENSSL_KEY);
        assert!(matches!(
            PublicKey::parse_all(&mixed),
            Err(SessionKeyError::WrongPemType { block: 2, .. })
        ));
        // An RSA public key is refused with a reason, not silently ignored.
        let rsa = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/keys/test_platform_public.pem"
        ))
        .unwrap();
        let e = PublicKey::parse_all(&rsa).unwrap_err();
        assert!(e.to_string().contains("not EC"), "{e}");
        let e = SigningKey::parse_all(OPENSSL_PUBLIC).unwrap_err();
        assert!(matches!(e, SessionKeyError::WrongPemType { .. }), "{e}");
    }

    #[test]
    fn jwks_lists_each_key_once_with_its_members() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let doc = jwks([a.public_key(), b.public_key(), a.public_key()]);
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for (jwk, key) in keys.iter().zip([&a, &b]) {
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(
                (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
                (
                    &json!("EC"),
                    &json!("P-256"),
                    &json!("ES256"),
                    &json!("sig")
                )
            );
            let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
            assert_eq!(x, key.public_key().point()[1..33]);
        }
    }

    #[test]
    fn debug_shows_only_the_kid() {
        let key = SigningKey::generate();
        assert_eq!(format!("{key:?}"), format!("SigningKey(kid={})", key.kid()));
    }
}
