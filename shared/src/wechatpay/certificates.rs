//! The body of `GET /v3/certificates`: each entry's certificate is AEAD-encrypted with the
//! APIv3 key (reference section 2.4). This module only decrypts and parses; fetching, and
//! verifying the response's own signature, belong to the client.

use serde::Deserialize;

use super::aead::{self, AeadError, ApiV3Key};
use super::keys::{KeyError, PlatformCertificate};
use super::verify::normalize_serial;

/// Why a `/v3/certificates` body could not be turned into certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("malformed /v3/certificates body: {0}")]
    MalformedBody(String),
    #[error("certificate {serial_no}: cannot decrypt: {source}")]
    Decrypt {
        serial_no: String,
        #[source]
        source: AeadError,
    },
    #[error("certificate {serial_no}: {source}")]
    Certificate {
        serial_no: String,
        #[source]
        source: KeyError,
    },
    #[error("certificate listed as {listed} has serial {actual}")]
    SerialMismatch { listed: String, actual: String },
}

#[derive(Deserialize)]
struct CertificatesBody {
    data: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    serial_no: String,
    encrypt_certificate: EncryptedCertificate,
}

#[derive(Deserialize)]
struct EncryptedCertificate {
    algorithm: String,
    nonce: String,
    #[serde(default)]
    associated_data: Option<String>,
    ciphertext: String,
}

/// Decrypts and parses every certificate of a `/v3/certificates` answer, and checks each
/// decrypted certificate carries the serial it is listed under; any bad entry fails it all.
pub fn decrypt_certificates(
    body: &[u8],
    key: &ApiV3Key,
) -> Result<Vec<PlatformCertificate>, CertificateError> {
    decrypt_each_certificate(body, key)?.into_iter().collect()
}

/// [`decrypt_certificates`] entry by entry, so one bad entry does not discard the good ones.
/// Each good one decrypted under this merchant's APIv3 key (the AEAD tag authenticates it as
/// issued to this merchant); only a body that is not a certificate list fails as a whole.
pub fn decrypt_each_certificate(
    body: &[u8],
    key: &ApiV3Key,
) -> Result<Vec<Result<PlatformCertificate, CertificateError>>, CertificateError> {
    let body: CertificatesBody =
        serde_json::from_slice(body).map_err(|e| CertificateError::MalformedBody(e.to_string()))?;
    Ok(body
        .data
        .into_iter()
        .map(|entry| {
            let serial_no: String = entry.serial_no.chars().take(64).collect();
            let encrypted = &entry.encrypt_certificate;
            let plaintext = aead::open(
                key,
                &encrypted.algorithm,
                &encrypted.nonce,
                encrypted.associated_data.as_deref().unwrap_or(""),
                &encrypted.ciphertext,
            )
            .map_err(|source| CertificateError::Decrypt {
                serial_no: serial_no.clone(),
                source,
            })?;
            let pem =
                std::str::from_utf8(&plaintext).map_err(|_| CertificateError::Certificate {
                    serial_no: serial_no.clone(),
                    source: KeyError::MalformedPem("PEM is not UTF-8"),
                })?;
            let cert = PlatformCertificate::from_pem(pem).map_err(|source| {
                CertificateError::Certificate {
                    serial_no: serial_no.clone(),
                    source,
                }
            })?;
            if normalize_serial(&cert.serial_no) != normalize_serial(&serial_no) {
                return Err(CertificateError::SerialMismatch {
                    listed: serial_no,
                    actual: cert.serial_no,
                });
            }
            Ok(cert)
        })
        .collect())
}
