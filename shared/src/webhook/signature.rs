//! Standard Webhooks 1.0 symmetric signatures (`v1`, HMAC-SHA256): the `whsec_` secrets, the
//! `webhook-signature` header we send, and the check a receiver runs (the sandbox's, and the
//! one our merchant docs describe), so sender and receiver share one implementation.
//!
//! ring is named here rather than behind `wechatpay::crypto` because that module belongs to
//! the WeChat Pay layer; HMAC is the only primitive used, and `ring::hmac::verify` compares in
//! constant time and refuses a tag of the wrong length (the `v1,` hole of `standardwebhooks`
//! 1.3.0, reference/events-and-capacity.md A2).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// How a secret is written: `whsec_` + standard base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";
/// The spec's key size bounds for HMAC-SHA256 secrets: 192 to 512 bits.
pub const MIN_SECRET_BYTES: usize = 24;
pub const MAX_SECRET_BYTES: usize = 64;
/// Secrets in force at once: the new one and the old one during a rotation. Every listed
/// secret signs every delivery, so a third is far more likely a forgotten one than intended.
pub const MAX_SECRETS: usize = 2;
/// How far `webhook-timestamp` may be from the receiver's clock, either way (the reference
/// libraries' 5 minutes): bounds how long a captured request can be replayed.
pub const TOLERANCE_SECS: i64 = 300;
/// `v1` entries a receiver checks at most: each costs one HMAC over the whole body per
/// secret, so an attacker's header of thousands of entries must not buy that much work.
pub const MAX_SIGNATURES: usize = 16;

const VERSION_PREFIX: &str = "v1,";
/// An HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Everything the webhook layer refuses: a secret, a received signature, or the HTTP client.
/// No variant carries secret material (a base64 error would name an offending character).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no secret given (expected whsec_ followed by base64)")]
    NoSecret,
    #[error("at most {MAX_SECRETS} space-separated secrets (the new and the old one)")]
    TooManySecrets,
    #[error("secret {position} does not start with whsec_")]
    SecretPrefix { position: usize },
    #[error("secret {position} is not standard base64 (with padding) after whsec_")]
    SecretBase64 { position: usize },
    #[error(
        "secret {position} decodes to {len} bytes; it must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES}"
    )]
    SecretLength { position: usize, len: usize },
    #[error("webhook-id is empty or contains '.'")]
    InvalidMessageId,
    #[error("webhook-timestamp is not a unix time in whole seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is more than {TOLERANCE_SECS} s in the past")]
    TimestampTooOld,
    #[error("webhook-timestamp is more than {TOLERANCE_SECS} s in the future")]
    TimestampTooNew,
    #[error("webhook-signature has no v1 signature")]
    NoSignature,
    #[error("webhook-signature has more than {MAX_SIGNATURES} v1 signatures")]
    TooManySignatures,
    #[error("no v1 signature in webhook-signature matches")]
    SignatureMismatch,
    #[error("HTTP client: {0}")]
    Client(String),
}

/// What [`verify`] refuses (the same enum: one error type for the webhook layer).
pub type VerifyError = WebhookError;

/// One `whsec_` secret, decoded. `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret {
    raw: Vec<u8>,
    key: hmac::Key,
}

impl WebhookSecret {
    /// `whsec_` + standard padded base64 of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        Self::parse_at(text.trim(), 1)
    }

    fn parse_at(text: &str, position: usize) -> Result<Self, WebhookError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix { position })?;
        let raw = STANDARD
            .decode(encoded)
            .map_err(|_| WebhookError::SecretBase64 { position })?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&raw.len()) {
            return Err(WebhookError::SecretLength {
                position,
                len: raw.len(),
            });
        }
        Ok(Self::from_raw(raw))
    }

    fn from_raw(raw: Vec<u8>) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
        WebhookSecret { raw, key }
    }

    /// A new 32-byte secret from the operating system's CSPRNG (the sandbox's, a merchant
    /// setting one up).
    ///
    /// # Panics
    /// Only if the operating system's random generator fails: there is no safe fallback for
    /// a key.
    pub fn generate() -> Self {
        use ring::rand::SecureRandom as _;
        let mut raw = vec![0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .expect("the system random number generator is unavailable");
        Self::from_raw(raw)
    }

    /// The secret as configured (`whsec_...`), for a private configuration file. Secret: never
    /// log or print it.
    pub fn expose_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.raw))
    }

    fn tag(&self, signed: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, signed)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// The secrets in force, in the order configured (1 or 2). `Debug` shows only how many.
#[derive(Clone)]
pub struct WebhookSecrets(Vec<WebhookSecret>);

impl WebhookSecrets {
    /// `WEBHOOK_SECRET`'s form: one `whsec_` secret, or two separated by whitespace during a
    /// rotation. An error names the position of a bad one, never its text.
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        if parts.len() > MAX_SECRETS {
            return Err(WebhookError::TooManySecrets);
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| WebhookSecret::parse_at(part, i + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(WebhookSecrets)
    }

    pub fn one(secret: WebhookSecret) -> Self {
        WebhookSecrets(vec![secret])
    }

    pub fn as_slice(&self) -> &[WebhookSecret] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: parsing refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets({} [redacted])", self.0.len())
    }
}

/// The signed content `{msg_id}.{timestamp}.{body}`, built once however many secrets.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let prefix = format!("{msg_id}.{timestamp}.");
    let mut signed = Vec::with_capacity(prefix.len() + body.len());
    signed.extend_from_slice(prefix.as_bytes());
    signed.extend_from_slice(body);
    signed
}

/// The `webhook-signature` header value: `v1,<base64>` per secret, space-separated, in the
/// configured order. The caller keeps `msg_id` free of '.' (receivers refuse it).
pub fn sign(secrets: &WebhookSecrets, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = signed_content(msg_id, timestamp, body);
    secrets
        .0
        .iter()
        .map(|s| {
            format!(
                "{VERSION_PREFIX}{}",
                STANDARD.encode(s.tag(&signed).as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A receiver's check of one delivery, on the raw body as received: the id is usable, the
/// timestamp is whole seconds within [`TOLERANCE_SECS`] of `now_unix`, and some `v1` entry
/// of the header is the HMAC of one of `secrets`. Entries of other versions (`v1a`, ...) are
/// skipped, as the spec asks of a receiver that does not know them.
pub fn verify(
    secrets: &WebhookSecrets,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    if msg_id.is_empty() || msg_id.contains('.') {
        return Err(WebhookError::InvalidMessageId);
    }
    // Digits only: `+5` or ` 5` would parse, but the sender signed the canonical number, and
    // a receiver that signs what it parsed must see what the sender formatted.
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::InvalidTimestamp);
    }
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| WebhookError::InvalidTimestamp)?;
    let age = now_unix.saturating_sub(ts);
    if age > TOLERANCE_SECS {
        return Err(WebhookError::TimestampTooOld);
    }
    if age < -TOLERANCE_SECS {
        return Err(WebhookError::TimestampTooNew);
    }

    let candidates: Vec<&str> = signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix(VERSION_PREFIX))
        .collect();
    if candidates.is_empty() {
        return Err(WebhookError::NoSignature);
    }
    if candidates.len() > MAX_SIGNATURES {
        return Err(WebhookError::TooManySignatures);
    }
    let signed = signed_content(msg_id, ts, body);
    let matches = candidates
        .iter()
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        // ring refuses a short tag too; checking here keeps that guarantee visible.
        .filter(|tag| tag.len() == TAG_LEN)
        .any(|tag| {
            secrets
                .0
                .iter()
                .any(|s| hmac::verify(&s.key, &signed, &tag).is_ok())
        });
    if matches {
        Ok(())
    } else {
        Err(WebhookError::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks reference libraries' known answer: standard-webhooks/standard-webhooks
    // `libraries/php/tests/WebhookTest.php` testSignFunctionWorks (commit 10f531428d74) and
    // `libraries/python/tests/test_webhooks.py` test_sign_function (commit 33d368b20c55).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secrets(text: &str) -> WebhookSecrets {
        WebhookSecrets::parse(text).expect("valid secrets")
    }

    fn vector() -> WebhookSecrets {
        secrets(VECTOR_SECRET)
    }

    fn check(header: &str, body: &[u8]) -> Result<(), VerifyError> {
        verify(
            &vector(),
            VECTOR_ID,
            &VECTOR_TS.to_string(),
            header,
            body,
            VECTOR_TS,
        )
    }

    #[test]
    fn the_published_vector_signs_and_verifies() {
        assert_eq!(
            sign(&vector(), VECTOR_ID, VECTOR_TS, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        check(VECTOR_SIGNATURE, VECTOR_BODY).expect("the vector verifies");
    }

    /// A second vector, from standard-webhooks/standard-webhooks `libraries/rust/src/lib.rs`
    /// test_sign (commit 1e88c9ce08bb, the standardwebhooks crate 1.3.0).
    #[test]
    fn the_rust_library_vector_signs() {
        let s = secrets("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
        assert_eq!(
            sign(
                &s,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_signs_with_both_and_either_verifies() {
        let new = WebhookSecret::generate();
        let old = vector().as_slice()[0].clone();
        let both = secrets(&format!("{} {}", new.expose_whsec(), VECTOR_SECRET));
        assert_eq!(both.len(), 2);
        let header = sign(&both, VECTOR_ID, VECTOR_TS, VECTOR_BODY);
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1], VECTOR_SIGNATURE,
            "the old secret's signature second"
        );
        let ts = VECTOR_TS.to_string();
        for receiver in [WebhookSecrets::one(new), WebhookSecrets::one(old)] {
            verify(&receiver, VECTOR_ID, &ts, &header, VECTOR_BODY, VECTOR_TS)
                .expect("a receiver holding either secret accepts");
        }
        // A receiver holding both accepts a sender still on the old one alone.
        verify(
            &both,
            VECTOR_ID,
            &ts,
            VECTOR_SIGNATURE,
            VECTOR_BODY,
            VECTOR_TS,
        )
        .expect("old signature, both secrets");
    }

    #[test]
    fn tampering_is_refused() {
        let ts = VECTOR_TS.to_string();
        assert_eq!(
            check(VECTOR_SIGNATURE, br#"{"test": 2432232315}"#),
            Err(WebhookError::SignatureMismatch)
        );
        assert_eq!(
            verify(
                &vector(),
                "msg_p5jXN8AQM9LWM0D4loKWxJeK",
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                VECTOR_TS
            ),
            Err(WebhookError::SignatureMismatch)
        );
        let other_ts = (VECTOR_TS + 1).to_string();
        assert_eq!(
            verify(
                &vector(),
                VECTOR_ID,
                &other_ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                VECTOR_TS
            ),
            Err(WebhookError::SignatureMismatch)
        );
        let other = WebhookSecrets::one(WebhookSecret::generate());
        assert_eq!(
            verify(
                &other,
                VECTOR_ID,
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                VECTOR_TS
            ),
            Err(WebhookError::SignatureMismatch)
        );
    }

    /// `standardwebhooks` 1.3.0 zipped the two strings without a length check, so `v1,`
    /// matched any payload.
    #[test]
    fn empty_and_truncated_signatures_are_refused() {
        let full = VECTOR_SIGNATURE.trim_start_matches("v1,");
        let raw = STANDARD.decode(full).unwrap();
        let truncated = format!("v1,{}", STANDARD.encode(&raw[..16]));
        let prefix_of_text = format!("v1,{}", &full[..8]);
        for header in [
            "v1,",
            "v1, ",
            "v1,=",
            truncated.as_str(),
            prefix_of_text.as_str(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        ] {
            assert!(check(header, VECTOR_BODY).is_err(), "{header:?} accepted");
        }
        let mut longer = raw.clone();
        longer.push(0);
        let extended = format!("v1,{}", STANDARD.encode(&longer));
        assert!(check(&extended, VECTOR_BODY).is_err());
    }

    #[test]
    fn other_versions_are_skipped_and_any_v1_match_passes() {
        assert_eq!(
            check("v1a,AAAA v2,BBBB", VECTOR_BODY),
            Err(WebhookError::NoSignature)
        );
        assert_eq!(check("", VECTOR_BODY), Err(WebhookError::NoSignature));
        let header = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,{0}  v1a,x {VECTOR_SIGNATURE}",
            VECTOR_SIGNATURE.trim_start_matches("v1,")
        );
        check(&header, VECTOR_BODY).expect("the matching entry among others");
        assert_eq!(
            check(&format!("v2,{}", &VECTOR_SIGNATURE[3..]), VECTOR_BODY),
            Err(WebhookError::NoSignature),
            "the right tag under another version does not count"
        );
        let many = vec!["v1,AAAA"; MAX_SIGNATURES + 1].join(" ");
        assert_eq!(
            check(&format!("{many} {VECTOR_SIGNATURE}"), VECTOR_BODY),
            Err(WebhookError::TooManySignatures)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let at = |now: i64| {
            verify(
                &vector(),
                VECTOR_ID,
                &VECTOR_TS.to_string(),
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                now,
            )
        };
        at(VECTOR_TS + TOLERANCE_SECS).expect("5 min late is still fine");
        at(VECTOR_TS - TOLERANCE_SECS).expect("5 min early is still fine");
        assert_eq!(
            at(VECTOR_TS + TOLERANCE_SECS + 1),
            Err(WebhookError::TimestampTooOld)
        );
        assert_eq!(
            at(VECTOR_TS - TOLERANCE_SECS - 1),
            Err(WebhookError::TimestampTooNew)
        );
        assert_eq!(at(i64::MIN), Err(WebhookError::TimestampTooNew));
        assert_eq!(at(i64::MAX), Err(WebhookError::TimestampTooOld));
    }

    #[test]
    fn malformed_ids_and_timestamps_are_refused() {
        let ts = VECTOR_TS.to_string();
        for id in ["", "msg.1", "."] {
            assert_eq!(
                verify(&vector(), id, &ts, VECTOR_SIGNATURE, VECTOR_BODY, VECTOR_TS),
                Err(WebhookError::InvalidMessageId)
            );
        }
        for ts in [
            "",
            "+1614265330",
            " 1614265330",
            "1614265330.0",
            "-1",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(
                    &vector(),
                    VECTOR_ID,
                    ts,
                    VECTOR_SIGNATURE,
                    VECTOR_BODY,
                    VECTOR_TS
                ),
                Err(WebhookError::InvalidTimestamp),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let cases: &[(&str, WebhookError)] = &[
            ("", WebhookError::NoSecret),
            ("   ", WebhookError::NoSecret),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                WebhookError::SecretPrefix { position: 1 },
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw",
                WebhookError::SecretBase64 { position: 1 },
            ),
            (
                // URL-safe alphabet and missing padding are not the standard encoding.
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
                WebhookError::SecretBase64 { position: 1 },
            ),
            (
                "whsec_c2hvcnQtc2VjcmV0",
                WebhookError::SecretLength {
                    position: 1,
                    len: 12,
                },
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_secretpart",
                WebhookError::SecretBase64 { position: 2 },
            ),
            (
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
                 whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                WebhookError::TooManySecrets,
            ),
        ];
        for (text, expected) in cases {
            let Err(e) = WebhookSecrets::parse(text) else {
                panic!("{text:?} accepted");
            };
            assert_eq!(&e, expected, "{text:?}");
            let message = e.to_string();
            for part in text.split_whitespace() {
                let secret_part = part.trim_start_matches(SECRET_PREFIX);
                assert!(
                    !message.contains(secret_part),
                    "{message:?} echoes {secret_part:?}"
                );
            }
        }
        let long = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 65]));
        assert_eq!(
            WebhookSecret::parse(&long).unwrap_err(),
            WebhookError::SecretLength {
                position: 1,
                len: 65
            }
        );
        for len in [MIN_SECRET_BYTES, MAX_SECRET_BYTES] {
            let ok = format!("{SECRET_PREFIX}{}", STANDARD.encode(vec![7u8; len]));
            WebhookSecret::parse(&ok).expect("bounds are inclusive");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let s = vector();
        let key_b64 = VECTOR_SECRET.trim_start_matches(SECRET_PREFIX);
        for shown in [format!("{s:?}"), format!("{:?}", s.as_slice()[0])] {
            assert!(!shown.contains(key_b64), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        let generated = WebhookSecret::generate();
        let text = generated.expose_whsec();
        assert!(!format!("{generated:?}").contains(&text[SECRET_PREFIX.len()..]));
        // The exposed form parses back to the same key.
        let again = WebhookSecrets::parse(&text).unwrap();
        assert_eq!(
            sign(&again, "m", 1, b"x"),
            sign(&WebhookSecrets::one(generated), "m", 1, b"x")
        );
    }
}
