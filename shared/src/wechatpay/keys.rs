//! Key material: PEM and DER in, typed keys out.
//!
//! The merchant signs with a PKCS#8 RSA key (`apiclient_key.pem`); WeChat Pay is verified
//! with either its public key (SPKI PEM, `PUB_KEY_ID_...`) or a platform certificate. ring
//! wants a PKCS#1 `RSAPublicKey`, so both are unwrapped to that here, once, at load time.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use x509_cert::Certificate;
use x509_cert::der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use x509_cert::der::{Decode, Encode, Reader, SliceReader};
use x509_cert::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::crypto;

/// `rsaEncryption`: the only key algorithm WeChat Pay uses for signatures.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// ring verifies RSA signatures with moduli of 2048 to 8192 bits; refusing anything else at
/// load time turns "nothing ever verifies" into a clear start-up error.
const MIN_MODULUS_BITS: usize = 2048;
const MAX_MODULUS_BITS: usize = 8192;

/// Why a key, public key or certificate could not be loaded. Messages name the problem,
/// never the key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed PEM: {0}")]
    MalformedPem(&'static str),
    #[error("expected a PEM `{expected}` block, found `{found}`{hint}")]
    WrongPemType {
        expected: &'static str,
        found: String,
        hint: &'static str,
    },
    #[error("invalid RSA private key (PKCS#8): {0}")]
    InvalidPrivateKey(String),
    #[error("invalid RSA public key: {0}")]
    InvalidPublicKey(String),
    #[error("unsupported key algorithm {0}: only RSA (1.2.840.113549.1.1.1) is supported")]
    UnsupportedAlgorithm(String),
    #[error("RSA modulus of {0} bits is not supported (2048 to 8192 bits)")]
    UnsupportedKeySize(usize),
    #[error("invalid X.509 certificate: {0}")]
    InvalidCertificate(String),
}

// ---------------------------------------------------------------------------------------
// Public keys
// ---------------------------------------------------------------------------------------

/// An RSA public key, held as the PKCS#1 `RSAPublicKey` DER that the backend verifies with.
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    pkcs1: Arc<[u8]>,
    modulus_bits: usize,
}

impl RsaPublicKey {
    /// Loads a `-----BEGIN PUBLIC KEY-----` (SPKI) PEM, e.g. WeChat Pay's `pub_key.pem`.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let block = parse_pem(pem, "PUBLIC KEY")?;
        Self::from_spki_der(block.contents())
    }

    /// Loads a DER `SubjectPublicKeyInfo` holding an RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::InvalidPublicKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
        Self::from_spki_parts(&spki.algorithm.oid, spki.subject_public_key.as_bytes())
    }

    /// Loads a PKCS#1 `RSAPublicKey` DER (`SEQUENCE { modulus, publicExponent }`).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let modulus_bits = check_rsa_public_key(der)?;
        Ok(Self {
            pkcs1: Arc::from(der),
            modulus_bits,
        })
    }

    fn from_spki_parts(
        algorithm: &ObjectIdentifier,
        subject_public_key: Option<&[u8]>,
    ) -> Result<Self, KeyError> {
        if *algorithm != RSA_ENCRYPTION {
            return Err(KeyError::UnsupportedAlgorithm(algorithm.to_string()));
        }
        let pkcs1 = subject_public_key.ok_or_else(|| {
            KeyError::InvalidPublicKey("subjectPublicKey is not a whole number of bytes".into())
        })?;
        Self::from_pkcs1_der(pkcs1)
    }

    /// Verifies an RSASSA-PKCS1-v1_5 / SHA-256 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        crypto::rsa_pkcs1_sha256_verify(&self.pkcs1, message, signature)
    }

    /// The PKCS#1 `RSAPublicKey` DER.
    pub fn as_pkcs1_der(&self) -> &[u8] {
        &self.pkcs1
    }

    /// Size of the modulus in bits (2048 for every WeChat Pay key).
    pub fn modulus_bits(&self) -> usize {
        self.modulus_bits
    }

    /// The key as a DER `SubjectPublicKeyInfo`.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let spki = SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION,
                parameters: Some(AnyRef::NULL),
            },
            subject_public_key: match BitStringRef::from_bytes(&self.pkcs1) {
                Ok(bits) => bits,
                // Only fails for inputs over 256 MiB; the key was length-checked at load.
                Err(_) => unreachable!("an RSA public key of at most 8192 bits fits a BIT STRING"),
            },
        };
        spki.to_der().unwrap_or_else(|_| {
            unreachable!("encoding a validated SPKI of a few hundred bytes cannot fail")
        })
    }

    /// The key as a `-----BEGIN PUBLIC KEY-----` PEM (LF line endings), the format WeChat
    /// Pay hands out as `pub_key.pem`.
    pub fn to_spki_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.to_spki_der()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublicKey({} bits)", self.modulus_bits)
    }
}

/// Checks the shape of a PKCS#1 `RSAPublicKey` and returns its modulus size in bits.
fn check_rsa_public_key(der: &[u8]) -> Result<usize, KeyError> {
    let invalid = |e: x509_cert::der::Error| {
        KeyError::InvalidPublicKey(format!("not a PKCS#1 RSAPublicKey: {e}"))
    };
    let mut reader = SliceReader::new(der).map_err(invalid)?;
    let (modulus, exponent) = reader
        .sequence(|seq| {
            let n = UintRef::decode(seq)?;
            let e = UintRef::decode(seq)?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .map_err(invalid)?;
    reader.finish(()).map_err(invalid)?;

    let modulus_bits = bit_length(&modulus);
    if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&modulus_bits) {
        return Err(KeyError::UnsupportedKeySize(modulus_bits));
    }
    // Same bounds ring enforces at verification time: odd, 3 <= e < 2^33.
    let e = if exponent.len() <= 8 {
        exponent
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    } else {
        u64::MAX
    };
    if e % 2 == 0 || !(3..(1u64 << 33)).contains(&e) {
        return Err(KeyError::InvalidPublicKey(
            "unsupported public exponent".into(),
        ));
    }
    Ok(modulus_bits)
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        None => 0,
        Some(first) => {
            let significant = &be[first..];
            let lead = significant.first().copied().unwrap_or(0);
            significant.len() * 8 - lead.leading_zeros() as usize
        }
    }
}

// ---------------------------------------------------------------------------------------
// Platform certificates
// ---------------------------------------------------------------------------------------

/// A WeChat Pay platform certificate, reduced to what verification needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCertificate {
    /// Upper-case hex of the serial number without leading zeros, the form WeChat Pay
    /// sends in `Wechatpay-Serial` (e.g. `5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC`).
    pub serial_no: String,
    pub key: RsaPublicKey,
    /// Validity period, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl PlatformCertificate {
    /// Loads the first `-----BEGIN CERTIFICATE-----` block of `pem`.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let block = parse_pem(pem, "CERTIFICATE")?;
        Self::from_der(block.contents())
    }

    /// Loads a DER X.509 certificate. The signature chain is not checked: certificates
    /// come from an authenticated, decrypted `/v3/certificates` answer or from config.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        let cert =
            Certificate::from_der(der).map_err(|e| KeyError::InvalidCertificate(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        let key =
            RsaPublicKey::from_spki_parts(&spki.algorithm.oid, spki.subject_public_key.as_bytes())?;
        Ok(Self {
            serial_no: format_serial(tbs.serial_number.as_bytes()),
            key,
            not_before: unix_seconds(tbs.validity.not_before),
            not_after: unix_seconds(tbs.validity.not_after),
        })
    }

    /// Whether `now` (unix seconds) lies within the validity period.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn unix_seconds(t: x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// Upper-case hex without leading zeros: what go (`%X` of the big integer) and java
/// (`BigInteger.toString(16)`) print, so the DER sign byte never leaks into the serial.
pub(crate) fn format_serial(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

// ---------------------------------------------------------------------------------------
// Private keys
// ---------------------------------------------------------------------------------------

/// The merchant API private key (RSA, PKCS#8). Cheap to clone; Debug never shows it.
#[derive(Clone)]
pub struct RsaPrivateKey(Arc<PrivateInner>);

struct PrivateInner {
    signing: crypto::RsaSigningKey,
    public: RsaPublicKey,
}

impl RsaPrivateKey {
    /// Loads `-----BEGIN PRIVATE KEY-----` (unencrypted PKCS#8), the format of
    /// `apiclient_key.pem`. Other PEM types are refused with a conversion hint.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let block = parse_pem(pem, "PRIVATE KEY")?;
        Self::from_pkcs8_der(block.contents())
    }

    /// Loads an unencrypted PKCS#8 `PrivateKeyInfo` DER holding an RSA key of 2048 to 4096 bits.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let signing =
            crypto::RsaSigningKey::from_pkcs8_der(der).map_err(KeyError::InvalidPrivateKey)?;
        let public = RsaPublicKey::from_pkcs1_der(&signing.public_key_pkcs1_der())?;
        Ok(Self(Arc::new(PrivateInner { signing, public })))
    }

    /// RSASSA-PKCS1-v1_5 / SHA-256 signature over `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.signing.sign_pkcs1_sha256(message)
    }

    /// [`sign`](Self::sign), as standard base64 with padding: the form every WeChat Pay
    /// header and `paySign` carries.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        STANDARD.encode(self.sign(message))
    }

    /// The matching public key.
    pub fn public_key(&self) -> RsaPublicKey {
        self.0.public.clone()
    }
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPrivateKey(..)")
    }
}

// ---------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------

/// Parses the first PEM block of `input` and insists on the `expected` label.
///
/// Environment variables often carry a PEM with its newlines written as `\n`; PEM bodies
/// never contain a backslash, so those are turned back into newlines first.
fn parse_pem(input: &str, expected: &'static str) -> Result<pem::Pem, KeyError> {
    let input = unescape_newlines(input);
    let block = pem::parse(input.trim()).map_err(|e| {
        KeyError::MalformedPem(match e {
            pem::PemError::MismatchedTags(..) => "BEGIN and END labels differ",
            pem::PemError::MalformedFraming => "malformed BEGIN/END framing",
            pem::PemError::MissingBeginTag => "no -----BEGIN ...----- line",
            pem::PemError::MissingEndTag => "no -----END ...----- line",
            pem::PemError::MissingData => "empty PEM body",
            pem::PemError::InvalidData(_) => "PEM body is not valid base64",
            pem::PemError::InvalidHeader(_) => "invalid PEM header line",
            pem::PemError::NotUtf8(_) => "PEM is not UTF-8",
        })
    })?;
    if block.tag() != expected {
        let found: String = block.tag().chars().take(40).collect();
        return Err(KeyError::WrongPemType {
            expected,
            hint: pem_hint(expected, &found),
            found,
        });
    }
    Ok(block)
}

/// A PEM squeezed into one environment variable, its newlines written as `\n`, with real
/// newlines again (PEM bodies never contain a backslash). Also used for session keys.
pub(crate) fn unescape_newlines(input: &str) -> std::borrow::Cow<'_, str> {
    if !input.contains('\n') && input.contains("\\n") {
        std::borrow::Cow::Owned(input.replace("\\n", "\n"))
    } else {
        std::borrow::Cow::Borrowed(input)
    }
}

fn pem_hint(expected: &str, found: &str) -> &'static str {
    match (expected, found) {
        ("PRIVATE KEY", "RSA PRIVATE KEY") => {
            " (PKCS#1; convert it to PKCS#8 with `openssl pkey -in key.pem -out apiclient_key.pem`)"
        }
        ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") => {
            " (encrypted keys are not supported; decrypt with `openssl pkey -in key.pem -out apiclient_key.pem`)"
        }
        ("PRIVATE KEY", "CERTIFICATE") => {
            " (that is the merchant certificate apiclient_cert.pem; the key is apiclient_key.pem)"
        }
        ("PUBLIC KEY", "CERTIFICATE") => " (a certificate: load it as a platform certificate)",
        ("PUBLIC KEY", "RSA PUBLIC KEY") => {
            " (PKCS#1; convert it with `openssl rsa -RSAPublicKey_in -in key.pem -pubout`)"
        }
        ("CERTIFICATE", "PUBLIC KEY") => {
            " (a bare public key: load it with its PUB_KEY_ID_ as a public key)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_drops_sign_byte_and_leading_zero_nibbles() {
        assert_eq!(format_serial(&[0x00, 0xD7, 0xCE]), "D7CE");
        assert_eq!(format_serial(&[0x0A, 0x01]), "A01");
        assert_eq!(format_serial(&[0x00]), "0");
        assert_eq!(format_serial(&[]), "0");
    }

    #[test]
    fn bit_length_counts_from_the_first_set_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0, 1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0x00, 0x01]), 17);
    }

    #[test]
    fn escaped_newlines_are_accepted() {
        let err =
            parse_pem("-----BEGIN FOO-----\\nAAAA\\n-----END FOO-----\\n", "BAR").unwrap_err();
        assert!(matches!(err, KeyError::WrongPemType { ref found, .. } if found == "FOO"));
    }
}
