//! Property tests: sign/verify and seal/open round-trip for arbitrary inputs, the 300 s
//! window holds for arbitrary clocks, and nothing that parses network input panics on
//! arbitrary bytes. Case counts stay modest because RSA signing is slow-ish in debug builds.

use std::path::PathBuf;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use shared::wechatpay::aead::{self, AEAD_AES_256_GCM, AeadError, ApiV3Key};
use shared::wechatpay::certificates::decrypt_certificates;
use shared::wechatpay::keys::{RsaPrivateKey, RsaPublicKey};
use shared::wechatpay::notification::{TradeState, Transaction, verify_and_decrypt};
use shared::wechatpay::sign::{MerchantSigner, parse_authorization};
use shared::wechatpay::verify::{Verifier, VerifyError, WechatpayHeaders, sign_response_headers};

fn key_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/keys")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

static MERCHANT: LazyLock<RsaPrivateKey> =
    LazyLock::new(|| RsaPrivateKey::from_pkcs8_pem(&key_file("test_merchant_key.pem")).unwrap());
static PLATFORM: LazyLock<RsaPrivateKey> =
    LazyLock::new(|| RsaPrivateKey::from_pkcs8_pem(&key_file("test_platform_key.pem")).unwrap());
static PLATFORM_PUBLIC: LazyLock<RsaPublicKey> = LazyLock::new(|| PLATFORM.public_key());

const SERIAL: &str = "PUB_KEY_ID_PROPTEST";
const API_V3_KEY: &str = "0123456789abcdefghijABCDEFGHIJ01";

fn verifier() -> Verifier {
    let mut verifier = Verifier::new();
    verifier.add_public_key(SERIAL, PLATFORM_PUBLIC.clone());
    verifier
}

/// Header values as the network could send them: often plausible, sometimes arbitrary bytes.
fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[0-9]{0,20}".prop_map(String::into_bytes),
            "[A-Za-z0-9+/=]{0,400}".prop_map(String::into_bytes),
            Just(SERIAL.as_bytes().to_vec()),
            Just(b"WECHATPAY/SIGNTEST/AAAA".to_vec()),
            Just(b"WECHATPAY2-SHA256-RSA2048".to_vec()),
        ],
    )
}

fn headers_from(values: [Option<Vec<u8>>; 5]) -> HeaderMap {
    let names = [
        "wechatpay-timestamp",
        "wechatpay-nonce",
        "wechatpay-signature",
        "wechatpay-serial",
        "wechatpay-signature-type",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in names.into_iter().zip(values) {
        if let Some(Ok(value)) = value.as_deref().map(HeaderValue::from_bytes) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_then_verify_round_trips(message in prop::collection::vec(any::<u8>(), 0..2048)) {
        let signature = MERCHANT.sign(&message);
        let public = MERCHANT.public_key();
        prop_assert!(public.verify(&message, &signature));
        let base64 = MERCHANT.sign_base64(&message);
        prop_assert_eq!(STANDARD.decode(base64).unwrap(), signature.clone());

        let mut altered = message.clone();
        altered.push(0);
        prop_assert!(!public.verify(&altered, &signature));
        prop_assert!(!PLATFORM_PUBLIC.verify(&message, &signature));
    }

    #[test]
    fn signed_responses_verify_exactly_within_the_window(
        body in prop::collection::vec(any::<u8>(), 0..512),
        nonce in "[0-9A-Za-z]{1,32}",
        timestamp in 0i64..4_000_000_000,
        skew in -400i64..400,
    ) {
        let headers = sign_response_headers(&PLATFORM, SERIAL, timestamp, &nonce, &body);
        let result = verifier().verify(&WechatpayHeaders::from(&headers), &body, timestamp + skew);
        if skew.abs() < 300 {
            let info = result.unwrap();
            prop_assert_eq!(info.timestamp, timestamp);
            prop_assert_eq!(info.nonce, nonce);
        } else {
            prop_assert_eq!(result, Err(VerifyError::Expired { skew_secs: skew }));
        }
    }

    #[test]
    fn authorization_round_trips_through_parse_and_verify(
        method in "(GET|POST|PUT|PATCH|DELETE)",
        path in "/v3/[a-z0-9/_-]{0,40}(\\?[a-z]{1,5}=[A-Za-z0-9]{1,10})?",
        body in prop::collection::vec(any::<u8>(), 0..256),
        timestamp in 1_000_000_000i64..4_000_000_000,
        nonce in "[0-9A-Za-z]{32}",
        mchid in "[0-9]{8,10}",
    ) {
        let signer = MerchantSigner::new(mchid.clone(), "SERIAL0123", MERCHANT.clone());
        let header = signer.authorization(&method, &path, &body, timestamp, &nonce);
        let parsed = parse_authorization(&header).unwrap();
        prop_assert_eq!(&parsed.mchid, &mchid);
        prop_assert_eq!(&parsed.nonce_str, &nonce);
        prop_assert_eq!(parsed.timestamp.clone(), timestamp.to_string());
        prop_assert_eq!(parsed.verify(&MERCHANT.public_key(), &method, &path, &body, timestamp), Ok(timestamp));
    }

    #[test]
    fn seal_then_open_round_trips(
        key in any::<[u8; 32]>(),
        nonce in "[0-9A-Za-z]{12}",
        associated_data in ".{0,64}",
        plaintext in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let key = ApiV3Key::from_bytes(&key).unwrap();
        let sealed = aead::seal(&key, &nonce, &associated_data, &plaintext).unwrap();
        prop_assert_eq!(STANDARD.decode(&sealed).unwrap().len(), plaintext.len() + 16);
        let opened = aead::open(&key, AEAD_AES_256_GCM, &nonce, &associated_data, &sealed).unwrap();
        prop_assert_eq!(opened, plaintext);

        let other_ad = format!("{associated_data}x");
        prop_assert_eq!(
            aead::open(&key, AEAD_AES_256_GCM, &nonce, &other_ad, &sealed),
            Err(AeadError::BadTag)
        );
    }

    #[test]
    fn verifier_never_panics(
        values in [header_value(), header_value(), header_value(), header_value(), header_value()],
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        let _ = verifier().verify(&WechatpayHeaders::from(&headers_from(values)), &body, now);
    }

    #[test]
    fn aead_open_never_panics(
        algorithm in prop_oneof![Just(AEAD_AES_256_GCM.to_owned()), ".{0,20}"],
        nonce in prop_oneof!["[0-9A-Za-z]{12}", ".{0,20}"],
        associated_data in ".{0,20}",
        ciphertext in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| STANDARD.encode(b)),
            ".{0,64}",
        ],
    ) {
        let key = ApiV3Key::new(API_V3_KEY).unwrap();
        let _ = aead::open(&key, &algorithm, &nonce, &associated_data, &ciphertext);
    }

    #[test]
    fn verify_and_decrypt_never_panics_on_signed_arbitrary_bodies(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // Envelope-shaped bodies reach decryption.
            (".{0,16}", ".{0,16}", ".{0,24}", prop::option::of(".{0,12}"), ".{0,14}").prop_map(
                |(event, algorithm, ciphertext, ad, nonce)| {
                    serde_json::json!({
                        "id": "EV", "create_time": "t", "resource_type": "encrypt-resource",
                        "event_type": event, "summary": "s",
                        "resource": {"original_type": "transaction", "algorithm": algorithm,
                                     "ciphertext": ciphertext, "associated_data": ad, "nonce": nonce}
                    })
                    .to_string()
                    .into_bytes()
                }
            ),
        ],
        timestamp in 1_000_000_000i64..2_000_000_000,
    ) {
        let key = ApiV3Key::new(API_V3_KEY).unwrap();
        let headers = sign_response_headers(&PLATFORM, SERIAL, timestamp, "nonce", &body);
        match verify_and_decrypt(&verifier(), &key, &WechatpayHeaders::from(&headers), &body, timestamp) {
            Ok(verified) => { let _ = verified.transaction(); }
            Err(e) => { let _ = e.to_string(); }
        }
    }

    #[test]
    fn parse_authorization_never_panics(
        header in prop_oneof![
            ".{0,200}",
            prop::collection::vec(
                ("[a-z_]{0,10}", "[ =\",]{0,3}", ".{0,12}", "[ \",]{0,3}"),
                0..8,
            )
            .prop_map(|parts| {
                let params: String = parts.into_iter().map(|(k, a, v, b)| format!("{k}{a}{v}{b}")).collect();
                format!("WECHATPAY2-SHA256-RSA2048 {params}")
            }),
        ],
    ) {
        if let Ok(parsed) = parse_authorization(&header) {
            let _ = parsed.verify(&MERCHANT.public_key(), "GET", "/", b"", 0);
        }
    }

    #[test]
    fn parsers_of_decrypted_data_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<Transaction>(&bytes);
        let key = ApiV3Key::new(API_V3_KEY).unwrap();
        let _ = decrypt_certificates(&bytes, &key);
        let text = String::from_utf8_lossy(&bytes);
        let _ = RsaPublicKey::from_spki_pem(&text);
        let _ = RsaPublicKey::from_spki_der(&bytes);
        let _ = RsaPublicKey::from_pkcs1_der(&bytes);
        let _ = shared::wechatpay::PlatformCertificate::from_der(&bytes);
        let _ = RsaPrivateKey::from_pkcs8_der(&bytes);
    }

    #[test]
    fn trade_state_round_trips_any_string(s in ".{0,16}") {
        let state = TradeState::from(s.as_str());
        prop_assert_eq!(state.as_str(), s.as_str());
        let json = serde_json::to_string(&state).unwrap();
        prop_assert_eq!(serde_json::from_str::<TradeState>(&json).unwrap(), state);
    }
}
