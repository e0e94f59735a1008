//! Negative cases (reference section 9, V14): every way a response, notification, resource,
//! key or Authorization header can be wrong, each asserting the specific error.

use std::path::PathBuf;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use shared::wechatpay::aead::{self, AEAD_AES_256_GCM, AeadError, ApiV3Key};
use shared::wechatpay::certificates::{CertificateError, decrypt_certificates};
use shared::wechatpay::keys::{KeyError, PlatformCertificate, RsaPrivateKey, RsaPublicKey};
use shared::wechatpay::notification::{
    NotificationDraft, NotificationError, build_notification, verify_and_decrypt,
};
use shared::wechatpay::sign::{MerchantSigner, parse_authorization};
use shared::wechatpay::verify::{Verifier, VerifyError, WechatpayHeaders, sign_response_headers};

fn testdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(relative)
}

fn vectors() -> Value {
    let path = testdata("wechatpay-v3-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn derived() -> Value {
    let path = testdata("wechatpay-v3-derived.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn key_file(name: &str) -> String {
    std::fs::read_to_string(testdata("keys").join(name)).unwrap()
}

fn private_key(name: &str) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(&key_file(&format!("test_{name}_key.pem"))).unwrap()
}

fn s<'v>(v: &'v Value, field: &str) -> &'v str {
    v[field].as_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Response / notification signature (official public-key vector V12 as the baseline)
// ---------------------------------------------------------------------------------------

struct Signed {
    verifier: Verifier,
    headers: HeaderMap,
    body: Vec<u8>,
    timestamp: i64,
}

fn v12() -> Signed {
    let v = &vectors()["response_verification_public_key"];
    let mut verifier = Verifier::new();
    verifier.add_public_key(
        s(v, "public_key_id"),
        RsaPublicKey::from_spki_pem(s(v, "public_key_pem")).unwrap(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "Wechatpay-Timestamp",
        HeaderValue::from_str(s(v, "timestamp")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Nonce",
        HeaderValue::from_str(s(v, "nonce")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Signature",
        HeaderValue::from_str(s(v, "signature_base64")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Serial",
        HeaderValue::from_str(s(v, "public_key_id")).unwrap(),
    );
    let signed = Signed {
        verifier,
        headers,
        body: s(v, "body").as_bytes().to_vec(),
        timestamp: s(v, "timestamp").parse().unwrap(),
    };
    // The baseline itself verifies, so each case below fails for its own reason only.
    assert!(signed.verify().is_ok());
    signed
}

impl Signed {
    fn verify(&self) -> Result<shared::wechatpay::SignatureInfo, VerifyError> {
        self.verifier.verify(
            &WechatpayHeaders::from(&self.headers),
            &self.body,
            self.timestamp,
        )
    }

    fn set(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }
}

#[test]
fn body_changed_by_one_byte_fails() {
    let mut signed = v12();
    let last = signed.body.len() - 3;
    signed.body[last] ^= 0x01;
    assert_eq!(signed.verify(), Err(VerifyError::BadSignature));
}

#[test]
fn trailing_newline_added_to_body_fails() {
    let mut signed = v12();
    signed.body.push(b'\n');
    assert_eq!(signed.verify(), Err(VerifyError::BadSignature));
}

#[test]
fn reserialized_notification_body_fails() {
    // V13 verifies as received; the same JSON re-serialized (serde_json sorts keys) does not.
    let v = &derived()["v13_notification"];
    let v8 = &derived()["v8_wechatpay_platform"];
    let mut verifier = Verifier::new();
    verifier.add_certificate(PlatformCertificate::from_pem(s(v8, "certificate_pem")).unwrap());
    let mut headers = HeaderMap::new();
    headers.insert(
        "Wechatpay-Timestamp",
        HeaderValue::from_str(s(v, "timestamp")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Nonce",
        HeaderValue::from_str(s(v, "nonce")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Signature",
        HeaderValue::from_str(s(v, "signature")).unwrap(),
    );
    headers.insert(
        "Wechatpay-Serial",
        HeaderValue::from_str(s(v, "serial")).unwrap(),
    );
    let raw = s(v, "body").as_bytes();
    assert!(
        verifier
            .verify(&WechatpayHeaders::from(&headers), raw, 1_700_000_000)
            .is_ok()
    );

    let reserialized = serde_json::to_vec(&serde_json::from_slice::<Value>(raw).unwrap()).unwrap();
    assert_ne!(reserialized, raw);
    assert_eq!(
        verifier.verify(
            &WechatpayHeaders::from(&headers),
            &reserialized,
            1_700_000_000
        ),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn timestamp_301_seconds_old_fails() {
    let signed = v12();
    let now = signed.timestamp + 301;
    assert_eq!(
        signed
            .verifier
            .verify(&WechatpayHeaders::from(&signed.headers), &signed.body, now),
        Err(VerifyError::Expired { skew_secs: 301 })
    );
}

#[test]
fn timestamp_301_seconds_ahead_fails() {
    let signed = v12();
    let now = signed.timestamp - 301;
    assert_eq!(
        signed
            .verifier
            .verify(&WechatpayHeaders::from(&signed.headers), &signed.body, now),
        Err(VerifyError::Expired { skew_secs: -301 })
    );
}

#[test]
fn timestamp_exactly_300_seconds_away_fails_as_in_the_go_and_java_sdks() {
    let signed = v12();
    for (now, skew) in [
        (signed.timestamp + 300, 300),
        (signed.timestamp - 300, -300),
    ] {
        assert_eq!(
            signed
                .verifier
                .verify(&WechatpayHeaders::from(&signed.headers), &signed.body, now),
            Err(VerifyError::Expired { skew_secs: skew })
        );
    }
}

#[test]
fn non_numeric_timestamp_fails() {
    for bad in [
        "17228504x1",
        "-1722850421",
        "+1722850421",
        "1722850421.0",
        "0x66B0",
        "99999999999999999999",
    ] {
        let mut signed = v12();
        signed.set("Wechatpay-Timestamp", bad);
        assert_eq!(
            signed.verify(),
            Err(VerifyError::MalformedTimestamp),
            "{bad}"
        );
    }
}

#[test]
fn millisecond_timestamp_is_far_outside_the_window() {
    let mut signed = v12();
    signed.set("Wechatpay-Timestamp", "1722850421000");
    assert!(matches!(signed.verify(), Err(VerifyError::Expired { .. })));
}

#[test]
fn each_missing_wechatpay_header_is_named() {
    for name in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
    ] {
        let mut signed = v12();
        signed.headers.remove(name);
        assert_eq!(
            signed.verify(),
            Err(VerifyError::MissingHeader(name)),
            "{name} removed"
        );

        let mut signed = v12();
        signed.set(name, "");
        assert_eq!(
            signed.verify(),
            Err(VerifyError::MissingHeader(name)),
            "{name} empty"
        );
    }
}

#[test]
fn header_names_are_case_insensitive() {
    let v = &vectors()["response_verification_public_key"];
    let mut signed = v12();
    signed.headers.clear();
    signed.headers.insert(
        "wechatpay-timestamp",
        HeaderValue::from_str(s(v, "timestamp")).unwrap(),
    );
    signed.headers.insert(
        "WECHATPAY-NONCE",
        HeaderValue::from_str(s(v, "nonce")).unwrap(),
    );
    signed.headers.insert(
        "wechatpay-signature",
        HeaderValue::from_str(s(v, "signature_base64")).unwrap(),
    );
    signed.headers.insert(
        "WeChatPay-Serial",
        HeaderValue::from_str(s(v, "public_key_id")).unwrap(),
    );
    assert!(signed.verify().is_ok());
}

#[test]
fn unknown_serial_fails() {
    let mut signed = v12();
    signed.set("Wechatpay-Serial", "PUB_KEY_ID_999");
    assert_eq!(
        signed.verify(),
        Err(VerifyError::UnknownSerial("PUB_KEY_ID_999".into()))
    );
}

#[test]
fn signature_probe_fails() {
    let mut signed = v12();
    signed.set(
        "Wechatpay-Signature",
        "WECHATPAY/SIGNTEST/mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7==",
    );
    assert_eq!(signed.verify(), Err(VerifyError::SignatureProbe));
}

#[test]
fn non_base64_signature_fails() {
    for bad in [
        "invalid base64 signature",
        "mfI1CPqv!!",
        "mfI1CPqvBrgcXfgXMFjdNIhBf27ACE2YyeWsWV9ZI7T7RU0v=",
    ] {
        let mut signed = v12();
        signed.set("Wechatpay-Signature", bad);
        assert_eq!(
            signed.verify(),
            Err(VerifyError::MalformedSignature),
            "{bad}"
        );
    }
}

#[test]
fn valid_base64_that_is_not_the_signature_fails() {
    let mut signed = v12();
    signed.set("Wechatpay-Signature", "AAAA");
    assert_eq!(signed.verify(), Err(VerifyError::BadSignature));
}

#[test]
fn signature_made_with_the_wrong_key_fails() {
    let platform = private_key("platform");
    let mut verifier = Verifier::new();
    verifier.add_public_key("PUB_KEY_ID_TEST", platform.public_key());
    let now = 1_795_000_000;
    let body = br#"{"prepay_id":"wx1"}"#;
    assert!(
        verifier
            .verify(
                &WechatpayHeaders::from(&sign_response_headers(
                    &platform,
                    "PUB_KEY_ID_TEST",
                    now,
                    "n",
                    body
                )),
                body,
                now
            )
            .is_ok()
    );

    // An unrelated key, and the merchant's own key (V14-8), both under the platform's id.
    for wrong in [private_key("other"), private_key("merchant")] {
        let headers = sign_response_headers(&wrong, "PUB_KEY_ID_TEST", now, "n", body);
        assert_eq!(
            verifier.verify(&WechatpayHeaders::from(&headers), body, now),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn java_merchant_signature_does_not_verify_with_the_wechatpay_key() {
    // java RSAVerifierTest: the merchant's signature of "message" is false under the V8 key.
    let v7 = &derived()["v7_merchant"];
    let v8 = &derived()["v8_wechatpay_platform"];
    let wechat = RsaPublicKey::from_spki_pem(s(v8, "public_key_pem")).unwrap();
    use base64::Engine as _;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(s(v7, "signature_base64"))
        .unwrap();
    assert!(!wechat.verify(s(v7, "message").as_bytes(), &signature));
}

#[test]
fn unsupported_signature_type_fails() {
    let mut signed = v12();
    signed.set("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3");
    assert_eq!(
        signed.verify(),
        Err(VerifyError::UnsupportedSignatureType(
            "WECHATPAY2-SM2-WITH-SM3".into()
        ))
    );
}

// ---------------------------------------------------------------------------------------
// AEAD_AES_256_GCM
// ---------------------------------------------------------------------------------------

struct Aead {
    key: ApiV3Key,
    nonce: String,
    ad: String,
    ciphertext: String,
}

fn v6() -> Aead {
    let v = &vectors()["aead_aes_256_gcm"];
    let aead = Aead {
        key: ApiV3Key::new(s(v, "key")).unwrap(),
        nonce: s(v, "nonce").into(),
        ad: s(v, "associated_data").into(),
        ciphertext: s(v, "ciphertext_base64").into(),
    };
    assert!(
        aead::open(
            &aead.key,
            AEAD_AES_256_GCM,
            &aead.nonce,
            &aead.ad,
            &aead.ciphertext
        )
        .is_ok()
    );
    aead
}

#[test]
fn aead_algorithm_other_than_aes_256_gcm_fails() {
    let a = v6();
    for alg in ["AEAD_SM4_GCM", "aead_aes_256_gcm", "AEAD_AES_128_GCM", ""] {
        assert_eq!(
            aead::open(&a.key, alg, &a.nonce, &a.ad, &a.ciphertext),
            Err(AeadError::UnsupportedAlgorithm(alg.into()))
        );
    }
}

#[test]
fn wrong_apiv3_key_fails() {
    let a = v6();
    let wrong = ApiV3Key::new("A7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
    assert_eq!(
        aead::open(&wrong, AEAD_AES_256_GCM, &a.nonce, &a.ad, &a.ciphertext),
        Err(AeadError::BadTag)
    );
}

#[test]
fn wrong_associated_data_fails() {
    let a = v6();
    for ad in ["bad-associatedData", "", "associatedData "] {
        assert_eq!(
            aead::open(&a.key, AEAD_AES_256_GCM, &a.nonce, ad, &a.ciphertext),
            Err(AeadError::BadTag),
            "{ad:?}"
        );
    }
}

#[test]
fn wrong_nonce_fails() {
    let a = v6();
    assert_eq!(
        aead::open(
            &a.key,
            AEAD_AES_256_GCM,
            "bad-4a9R25RW",
            &a.ad,
            &a.ciphertext
        ),
        Err(AeadError::BadTag)
    );
    assert_eq!(
        aead::open(
            &a.key,
            AEAD_AES_256_GCM,
            "uluk4a9R25R",
            &a.ad,
            &a.ciphertext
        ),
        Err(AeadError::NonceLength(11))
    );
    assert_eq!(
        aead::seal(&a.key, "uluk4a9R25RWx", &a.ad, b"m"),
        Err(AeadError::NonceLength(13))
    );
}

#[test]
fn ciphertext_shorter_than_the_tag_fails() {
    use base64::Engine as _;
    let a = v6();
    let b64 = base64::engine::general_purpose::STANDARD;
    for len in [0usize, 1, 15] {
        let short = b64.encode(vec![7u8; len]);
        assert_eq!(
            aead::open(&a.key, AEAD_AES_256_GCM, &a.nonce, &a.ad, &short),
            Err(AeadError::CiphertextTooShort),
            "{len} bytes"
        );
    }
    // Exactly a tag's worth (empty plaintext) reaches the tag check; so do 128 zero bytes.
    for len in [16usize, 128] {
        assert_eq!(
            aead::open(
                &a.key,
                AEAD_AES_256_GCM,
                &a.nonce,
                &a.ad,
                &b64.encode(vec![0u8; len])
            ),
            Err(AeadError::BadTag)
        );
    }
}

#[test]
fn tampered_or_truncated_ciphertext_fails() {
    use base64::Engine as _;
    let a = v6();
    let b64 = base64::engine::general_purpose::STANDARD;
    let blob = b64.decode(&a.ciphertext).unwrap();
    for i in 0..blob.len() {
        let mut tampered = blob.clone();
        tampered[i] ^= 0x80;
        assert_eq!(
            aead::open(
                &a.key,
                AEAD_AES_256_GCM,
                &a.nonce,
                &a.ad,
                &b64.encode(&tampered)
            ),
            Err(AeadError::BadTag),
            "byte {i}"
        );
    }
    let truncated = b64.encode(&blob[..blob.len() - 1]);
    assert_eq!(
        aead::open(&a.key, AEAD_AES_256_GCM, &a.nonce, &a.ad, &truncated),
        Err(AeadError::BadTag)
    );
}

#[test]
fn non_base64_ciphertext_fails() {
    let a = v6();
    for bad in [
        "invalid cipher",
        "ulwSiIajGClcvcOYvOQ7+l+0PAbzzwI",
        "ulwSiIajGClc\nvcOYvOQ7+l+0PAbzzwI=",
    ] {
        assert_eq!(
            aead::open(&a.key, AEAD_AES_256_GCM, &a.nonce, &a.ad, bad),
            Err(AeadError::MalformedBase64),
            "{bad:?}"
        );
    }
}

#[test]
fn apiv3_key_of_wrong_length_fails() {
    assert_eq!(ApiV3Key::new(""), Err(AeadError::KeyLength(0)));
    assert_eq!(
        ApiV3Key::new("testAPIv3Key0000"),
        Err(AeadError::KeyLength(16))
    );
    assert_eq!(
        ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8G"),
        Err(AeadError::KeyLength(31))
    );
    assert_eq!(
        ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gbx"),
        Err(AeadError::KeyLength(33))
    );
    // Bytes, not characters: 11 CJK characters are 33 bytes.
    assert_eq!(
        ApiV3Key::new("密钥密钥密钥密钥密钥密"),
        Err(AeadError::KeyLength(33))
    );
    // The message names the length, never the key.
    let message = ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8G")
        .unwrap_err()
        .to_string();
    assert!(!message.contains("a7cde1"), "{message}");
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

const EC_P256_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2w9HGBz2Rvzi+Q80
RmFsK1ETpON7eJF2CrjDOPqj4/OhRANCAASumdBkNTWZhPuRA4TQ7FgULGRMQpBb
jC43OtGfzKqi2osJcTLYxvsfWHzw9FZYcULQ77q9/yezLsvwZlep/PmZ
-----END PRIVATE KEY-----
";

const EC_P256_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAErpnQZDU1mYT7kQOE0OxYFCxkTEKQ
W4wuNzrRn8yqotqLCXEy2Mb7H1h88PRWWHFC0O+6vf8nsy7L8GZXqfz5mQ==
-----END PUBLIC KEY-----
";

const RSA_1024_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDZULaHdB7PFvWDajfAmiWUmpmO
96id1A/6PU092gw7Gf6ax+QF87ysxABANbhBpc5rPYNv/ZPTkZGHBQX7Sxl78wCo
tsA0dKoD3E6TEzmY7GJIPqgFRnJX8rskbzp1KJenRrhbRklPKQ4dSZBoqgAjFda5
VsDO4B8mGD6F1MJtCwIDAQAB
-----END PUBLIC KEY-----
";

#[test]
fn private_key_pem_of_the_wrong_type_fails() {
    let pkcs1 =
        RsaPrivateKey::from_pkcs8_pem(&key_file("test_merchant_key_pkcs1.pem")).unwrap_err();
    assert!(
        matches!(&pkcs1, KeyError::WrongPemType { expected: "PRIVATE KEY", found, .. } if found == "RSA PRIVATE KEY"),
        "{pkcs1:?}"
    );
    assert!(pkcs1.to_string().contains("openssl pkey"), "{pkcs1}");

    let public = RsaPrivateKey::from_pkcs8_pem(&key_file("test_merchant_public.pem")).unwrap_err();
    assert!(
        matches!(&public, KeyError::WrongPemType { found, .. } if found == "PUBLIC KEY"),
        "{public:?}"
    );

    let cert = RsaPrivateKey::from_pkcs8_pem(&key_file("test_platform_cert.pem")).unwrap_err();
    assert!(
        matches!(&cert, KeyError::WrongPemType { found, .. } if found == "CERTIFICATE"),
        "{cert:?}"
    );
}

#[test]
fn private_key_errors_never_echo_key_material() {
    let pem = key_file("test_merchant_key_pkcs1.pem");
    let body_line = pem.lines().nth(1).unwrap();
    let message = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap_err().to_string();
    assert!(!message.contains(&body_line[..16]), "{message}");

    // A corrupted body: base64 error without the offending bytes.
    let corrupted = key_file("test_merchant_key.pem").replacen('M', "!", 2);
    let err = RsaPrivateKey::from_pkcs8_pem(&corrupted).unwrap_err();
    assert_eq!(err, KeyError::MalformedPem("PEM body is not valid base64"));
}

#[test]
fn non_rsa_or_garbage_pkcs8_fails() {
    assert_eq!(
        RsaPrivateKey::from_pkcs8_pem(EC_P256_PKCS8).unwrap_err(),
        KeyError::InvalidPrivateKey("WrongAlgorithm".into())
    );
    let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert!(matches!(
        RsaPrivateKey::from_pkcs8_pem(garbage),
        Err(KeyError::InvalidPrivateKey(_))
    ));
    assert!(matches!(
        RsaPrivateKey::from_pkcs8_pem("not a pem"),
        Err(KeyError::MalformedPem(_))
    ));
    assert!(matches!(
        RsaPrivateKey::from_pkcs8_pem(""),
        Err(KeyError::MalformedPem(_))
    ));
}

#[test]
fn public_key_errors() {
    assert_eq!(
        RsaPublicKey::from_spki_pem(EC_P256_SPKI).unwrap_err(),
        KeyError::UnsupportedAlgorithm("1.2.840.10045.2.1".into())
    );
    assert_eq!(
        RsaPublicKey::from_spki_pem(RSA_1024_SPKI).unwrap_err(),
        KeyError::UnsupportedKeySize(1024)
    );
    let cert = RsaPublicKey::from_spki_pem(&key_file("test_platform_cert.pem")).unwrap_err();
    assert!(
        matches!(&cert, KeyError::WrongPemType { found, .. } if found == "CERTIFICATE"),
        "{cert:?}"
    );
    let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        RsaPublicKey::from_spki_pem(garbage),
        Err(KeyError::InvalidPublicKey(_))
    ));
    assert!(matches!(
        RsaPublicKey::from_pkcs1_der(&[0x30, 0x00]),
        Err(KeyError::InvalidPublicKey(_))
    ));
}

#[test]
fn certificate_errors() {
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        PlatformCertificate::from_pem(garbage),
        Err(KeyError::InvalidCertificate(_))
    ));
    let public = PlatformCertificate::from_pem(&key_file("test_platform_public.pem")).unwrap_err();
    assert!(
        matches!(&public, KeyError::WrongPemType { found, .. } if found == "PUBLIC KEY"),
        "{public:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Notifications end to end
// ---------------------------------------------------------------------------------------

const API_V3_KEY: &str = "0123456789abcdefghijABCDEFGHIJ01";
const NOW: i64 = 1_795_000_000;

fn notification_setup() -> (RsaPrivateKey, Verifier, ApiV3Key) {
    let platform = private_key("platform");
    let mut verifier = Verifier::new();
    verifier.add_public_key("PUB_KEY_ID_TEST", platform.public_key());
    (platform, verifier, ApiV3Key::new(API_V3_KEY).unwrap())
}

fn draft(plaintext: &[u8]) -> NotificationDraft<'_> {
    NotificationDraft::transaction_success("EV-1", "2026-11-24T12:00:00+08:00", plaintext)
}

#[test]
fn notification_with_a_bad_signature_is_rejected_before_decryption() {
    let (platform, verifier, key) = notification_setup();
    let (headers, mut body) =
        build_notification(&platform, "PUB_KEY_ID_TEST", &key, &draft(b"{}"), NOW);
    body.push(b' ');
    assert!(matches!(
        verify_and_decrypt(
            &verifier,
            &key,
            &WechatpayHeaders::from(&headers),
            &body,
            NOW
        ),
        Err(NotificationError::Verify(VerifyError::BadSignature))
    ));
    let (headers, body) =
        build_notification(&platform, "PUB_KEY_ID_TEST", &key, &draft(b"{}"), NOW);
    assert!(matches!(
        verify_and_decrypt(
            &verifier,
            &key,
            &WechatpayHeaders::from(&headers),
            &body,
            NOW + 301
        ),
        Err(NotificationError::Verify(VerifyError::Expired {
            skew_secs: 301
        }))
    ));
}

#[test]
fn notification_decrypted_with_the_wrong_apiv3_key_fails_on_the_tag() {
    let (platform, verifier, key) = notification_setup();
    let (headers, body) =
        build_notification(&platform, "PUB_KEY_ID_TEST", &key, &draft(b"{}"), NOW);
    let wrong = ApiV3Key::new("1123456789abcdefghijABCDEFGHIJ01").unwrap();
    assert!(matches!(
        verify_and_decrypt(
            &verifier,
            &wrong,
            &WechatpayHeaders::from(&headers),
            &body,
            NOW
        ),
        Err(NotificationError::Decrypt(AeadError::BadTag))
    ));
}

/// A correctly signed envelope whose contents are wrong in some way.
fn signed_envelope(platform: &RsaPrivateKey, body: &str) -> HeaderMap {
    sign_response_headers(platform, "PUB_KEY_ID_TEST", NOW, "nonce-1", body.as_bytes())
}

#[test]
fn signed_notification_with_another_algorithm_fails() {
    let (platform, verifier, key) = notification_setup();
    let ciphertext = aead::seal(&key, "abcdefghijkl", "transaction", b"{}").unwrap();
    let body = format!(
        r#"{{"id":"EV-1","create_time":"2026-11-24T12:00:00+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"x","resource":{{"original_type":"transaction","algorithm":"AEAD_SM4_GCM","ciphertext":"{ciphertext}","associated_data":"transaction","nonce":"abcdefghijkl"}}}}"#
    );
    let headers = signed_envelope(&platform, &body);
    assert!(matches!(
        verify_and_decrypt(&verifier, &key, &WechatpayHeaders::from(&headers), body.as_bytes(), NOW),
        Err(NotificationError::Decrypt(AeadError::UnsupportedAlgorithm(alg))) if alg == "AEAD_SM4_GCM"
    ));
}

#[test]
fn signed_notification_with_a_malformed_envelope_fails() {
    let (platform, verifier, key) = notification_setup();
    for body in ["not json", "{}", r#"{"id":"EV-1","resource":{}}"#, ""] {
        let headers = signed_envelope(&platform, body);
        assert!(
            matches!(
                verify_and_decrypt(
                    &verifier,
                    &key,
                    &WechatpayHeaders::from(&headers),
                    body.as_bytes(),
                    NOW
                ),
                Err(NotificationError::MalformedEnvelope(_))
            ),
            "{body:?}"
        );
    }
}

#[test]
fn notification_whose_plaintext_is_not_a_transaction_fails_on_parse() {
    let (platform, verifier, key) = notification_setup();
    for plaintext in [
        &b"not json"[..],
        br#"{"appid":"wx1"}"#,
        br#"{"appid":1,"mchid":"m","out_trade_no":"o","trade_state":"SUCCESS"}"#,
    ] {
        let (headers, body) =
            build_notification(&platform, "PUB_KEY_ID_TEST", &key, &draft(plaintext), NOW);
        let verified = verify_and_decrypt(
            &verifier,
            &key,
            &WechatpayHeaders::from(&headers),
            &body,
            NOW,
        )
        .unwrap();
        assert!(matches!(
            verified.transaction(),
            Err(NotificationError::MalformedResource(_))
        ));
    }
}

// ---------------------------------------------------------------------------------------
// /v3/certificates
// ---------------------------------------------------------------------------------------

fn certificates_body(
    listed_serial: &str,
    nonce: &str,
    ciphertext: &str,
    algorithm: &str,
) -> String {
    format!(
        r#"{{"data":[{{"serial_no":"{listed_serial}","effective_time":"2026-11-24T00:00:00+08:00","expire_time":"2046-11-19T00:00:00+08:00","encrypt_certificate":{{"algorithm":"{algorithm}","associated_data":"certificate","nonce":"{nonce}","ciphertext":"{ciphertext}"}}}}]}}"#
    )
}

#[test]
fn certificates_listing_errors() {
    let key = ApiV3Key::new(API_V3_KEY).unwrap();
    let pem = key_file("test_platform_cert.pem");
    let sealed = aead::seal(&key, "0123456789ab", "certificate", pem.as_bytes()).unwrap();

    // The good case, including a listed serial with a different case and leading zeros.
    let ok = certificates_body(
        "009f3c5a2e7b1d40086c11",
        "0123456789ab",
        &sealed,
        AEAD_AES_256_GCM,
    );
    let certs = decrypt_certificates(ok.as_bytes(), &key).unwrap();
    assert_eq!(certs[0].serial_no, "9F3C5A2E7B1D40086C11");

    let mismatch = certificates_body("ABCDEF", "0123456789ab", &sealed, AEAD_AES_256_GCM);
    assert_eq!(
        decrypt_certificates(mismatch.as_bytes(), &key),
        Err(CertificateError::SerialMismatch {
            listed: "ABCDEF".into(),
            actual: "9F3C5A2E7B1D40086C11".into(),
        })
    );

    let wrong_alg = certificates_body("ABCDEF", "0123456789ab", &sealed, "AEAD_SM4_GCM");
    assert_eq!(
        decrypt_certificates(wrong_alg.as_bytes(), &key),
        Err(CertificateError::Decrypt {
            serial_no: "ABCDEF".into(),
            source: AeadError::UnsupportedAlgorithm("AEAD_SM4_GCM".into()),
        })
    );

    let not_a_cert = aead::seal(&key, "0123456789ab", "certificate", b"hello").unwrap();
    let body = certificates_body("ABCDEF", "0123456789ab", &not_a_cert, AEAD_AES_256_GCM);
    assert!(matches!(
        decrypt_certificates(body.as_bytes(), &key),
        Err(CertificateError::Certificate {
            source: KeyError::MalformedPem(_),
            ..
        })
    ));

    for bad in [
        "",
        "{}",
        r#"{"data":{}}"#,
        r#"{"data":[{"serial_no":"A"}]}"#,
    ] {
        assert!(
            matches!(
                decrypt_certificates(bad.as_bytes(), &key),
                Err(CertificateError::MalformedBody(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(decrypt_certificates(br#"{"data":[]}"#, &key), Ok(vec![]));
}

// ---------------------------------------------------------------------------------------
// Authorization header (the simulator's check of merchant requests)
// ---------------------------------------------------------------------------------------

fn merchant_header(body: &[u8]) -> (MerchantSigner, String) {
    let signer = MerchantSigner::new("1900000001", "MERCHANTSERIAL01", private_key("merchant"));
    let header = signer.authorization(
        "POST",
        "/v3/pay/transactions/jsapi",
        body,
        NOW,
        "NONCE0123456789",
    );
    (signer, header)
}

#[test]
fn authorization_header_verification_failures() {
    let body = br#"{"mchid":"1900000001"}"#;
    let (signer, header) = merchant_header(body);
    let parsed = parse_authorization(&header).unwrap();
    let public = signer.private_key().public_key();
    let path = "/v3/pay/transactions/jsapi";
    assert_eq!(parsed.verify(&public, "POST", path, body, NOW), Ok(NOW));

    assert_eq!(
        parsed.verify(&public, "POST", path, b"{\"mchid\":\"1900000002\"}", NOW),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        parsed.verify(&public, "GET", path, body, NOW),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        parsed.verify(&public, "POST", "/v3/pay/transactions/jsapi?x=1", body, NOW),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        parsed.verify(&private_key("other").public_key(), "POST", path, body, NOW),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        parsed.verify(&public, "POST", path, body, NOW + 301),
        Err(VerifyError::Expired { skew_secs: 301 })
    );
    let mut probe = parsed.clone();
    probe.signature = "WECHATPAY/SIGNTEST/AAAA".into();
    assert_eq!(
        probe.verify(&public, "POST", path, body, NOW),
        Err(VerifyError::SignatureProbe)
    );
    let mut not_b64 = parsed.clone();
    not_b64.signature = "not base64!".into();
    assert_eq!(
        not_b64.verify(&public, "POST", path, body, NOW),
        Err(VerifyError::MalformedSignature)
    );
    let mut bad_ts = parsed;
    bad_ts.timestamp = "17x".into();
    assert_eq!(
        bad_ts.verify(&public, "POST", path, body, NOW),
        Err(VerifyError::MalformedTimestamp)
    );
}

#[test]
fn authorization_header_parse_failures() {
    let (_, good) = merchant_header(b"");
    let params = good.split_once(' ').unwrap().1;
    // Pair order is free, whitespace around pairs tolerated, scheme case-insensitive.
    let reordered = format!(
        "wechatpay2-sha256-rsa2048  {}",
        params.split(',').rev().collect::<Vec<_>>().join(" , ")
    );
    assert_eq!(
        parse_authorization(&reordered).unwrap(),
        parse_authorization(&good).unwrap()
    );

    let cases: Vec<(String, &str)> = vec![
        (String::new(), "expected the scheme"),
        (format!("Bearer {params}"), "expected the scheme"),
        ("WECHATPAY2-SHA256-RSA2048".into(), "expected the scheme"),
        (
            good.replace(",signature=", ",sig="),
            "unknown parameter `sig`",
        ),
        (
            good.replace("mchid=\"1900000001\",", ""),
            "missing parameter `mchid`",
        ),
        (
            good.replace("mchid=\"1900000001\"", "mchid=\"\""),
            "empty parameter `mchid`",
        ),
        (
            good.replace("mchid=\"1900000001\"", "mchid=1900000001"),
            "not quoted",
        ),
        (format!("{good},mchid=\"1\""), "duplicate parameter `mchid`"),
        (good.replace("\",", "\" "), "separated by commas"),
        (format!("{good},garbage"), "name=\"value\""),
    ];
    for (header, expected) in &cases {
        match parse_authorization(header) {
            Err(VerifyError::MalformedAuthorization(message)) => {
                assert!(message.contains(expected), "{header:?}: {message}")
            }
            other => panic!("{header:?}: expected MalformedAuthorization, got {other:?}"),
        }
    }
}
