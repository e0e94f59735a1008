//! Known-answer tests: the official SDK and doc vectors of `testdata/wechatpay-v3-vectors.json`,
//! the derived ones of `testdata/wechatpay-v3-derived.json` (reference section 9), and
//! end-to-end round trips with the committed test keys of `testdata/keys/`.

use std::path::PathBuf;

use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use shared::wechatpay::aead::{self, ApiV3Key};
use shared::wechatpay::notification::{NotificationDraft, TradeState, Transaction};
use shared::wechatpay::sign::{self, MerchantSigner, PayParams};
use shared::wechatpay::verify::{SignatureInfo, Verifier, WechatpayHeaders, sign_response_headers};
use shared::wechatpay::{
    AeadError, KeyError, NotificationError, PlatformCertificate, RsaPrivateKey, RsaPublicKey,
    build_notification, decrypt_certificates, parse_authorization, verify_and_decrypt,
};

fn testdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(relative)
}

fn load_json(relative: &str) -> Value {
    let path = testdata(relative);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn vectors() -> Value {
    load_json("wechatpay-v3-vectors.json")
}

fn derived() -> Value {
    load_json("wechatpay-v3-derived.json")
}

fn key_file(name: &str) -> String {
    let path = testdata("keys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn s<'v>(v: &'v Value, field: &str) -> &'v str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("vector field `{field}` missing or not a string"))
}

fn signed_headers(timestamp: &str, nonce: &str, signature: &str, serial: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("Wechatpay-Timestamp", timestamp),
        ("Wechatpay-Nonce", nonce),
        ("Wechatpay-Signature", signature),
        ("Wechatpay-Serial", serial),
        ("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048"),
    ] {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

// ---------------------------------------------------------------------------------------
// Official vectors
// ---------------------------------------------------------------------------------------

#[test]
fn rsa_sha256_sign_reproduces_the_go_signature_and_verifies_with_key_and_certificate() {
    let v = &vectors()["rsa_sha256_sign"];
    let private = RsaPrivateKey::from_pkcs8_pem(s(v, "private_key_pem")).unwrap();
    let message = s(v, "message").as_bytes();
    let expected = s(v, "signature_base64");

    assert_eq!(private.sign_base64(message), expected);

    let signature = base64_decode(expected);
    let public = RsaPublicKey::from_spki_pem(s(v, "public_key_pem")).unwrap();
    assert!(public.verify(message, &signature));
    assert_eq!(public.modulus_bits(), 2048);
    assert_eq!(private.public_key(), public);

    let cert = PlatformCertificate::from_pem(s(v, "certificate_pem")).unwrap();
    assert_eq!(cert.serial_no, s(v, "certificate_serial"));
    assert_eq!(cert.serial_no, "D7CE59D1F522D701");
    assert!(cert.key.verify(message, &signature));
    assert_eq!(cert.key, public);
    // 2021-04-27T08:55:23Z .. 2031-04-25T08:55:23Z
    assert_eq!(
        (cert.not_before, cert.not_after),
        (1_619_513_723, 1_934_873_723)
    );
    assert!(cert.is_valid_at(1_700_000_000));
    assert!(!cert.is_valid_at(1_619_513_722));

    assert!(!public.verify(b"wrong source", &signature));
}

#[test]
fn spki_pem_round_trips_through_der() {
    let v = &vectors()["rsa_sha256_sign"];
    let public = RsaPublicKey::from_spki_pem(s(v, "public_key_pem")).unwrap();
    let pem = public.to_spki_pem();
    assert_eq!(pem.trim(), s(v, "public_key_pem").trim());
    assert_eq!(RsaPublicKey::from_spki_pem(&pem).unwrap(), public);
    assert_eq!(
        RsaPublicKey::from_pkcs1_der(public.as_pkcs1_der()).unwrap(),
        public
    );
}

#[test]
fn every_request_signature_case_matches_the_official_doc() {
    let v = &vectors()["request_signature"];
    let key = RsaPrivateKey::from_pkcs8_pem(s(v, "private_key_pem")).unwrap();
    let public = key.public_key();
    let signer = MerchantSigner::new(s(v, "mchid"), s(v, "serial_no"), key);
    let timestamp: i64 = s(v, "timestamp").parse().unwrap();
    let nonce = s(v, "nonce");

    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let (method, url, body) = (
            s(case, "method"),
            s(case, "url"),
            s(case, "body").as_bytes(),
        );
        let expected_signature = s(case, "signature_base64");
        let header = signer.authorization(method, url, body, timestamp, nonce);
        assert_eq!(
            header,
            format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900007291\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",\
                 timestamp=\"1554208460\",serial_no=\"408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB\",\
                 signature=\"{expected_signature}\""
            ),
            "{method} {url}"
        );

        // The sandbox's direction: parse it back and verify with the merchant public key.
        let parsed = parse_authorization(&header).unwrap();
        assert_eq!(parsed.mchid, "1900007291");
        assert_eq!(parsed.serial_no, "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB");
        assert_eq!(parsed.signature, expected_signature);
        assert_eq!(
            parsed.verify(&public, method, url, body, timestamp),
            Ok(timestamp)
        );
    }
}

#[test]
fn request_message_has_five_terminated_lines_and_get_ends_with_two_newlines() {
    let message = sign::request_message("GET", "/v3/certificates", "1554208460", "N", b"");
    assert_eq!(message, b"GET\n/v3/certificates\n1554208460\nN\n\n");
    let message = sign::request_message("POST", "/p?q=1", "1", "N", b"{}\n");
    assert_eq!(message, b"POST\n/p?q=1\n1\nN\n{}\n\n");
}

#[test]
fn pay_sign_matches_the_official_doc() {
    let rs = &vectors()["request_signature"];
    let v = &vectors()["pay_sign"];
    let key = RsaPrivateKey::from_pkcs8_pem(s(rs, "private_key_pem")).unwrap();
    let public = key.public_key();
    let signer = MerchantSigner::new(s(rs, "mchid"), s(rs, "serial_no"), key);
    let prepay_id = s(v, "package").strip_prefix("prepay_id=").unwrap();
    let timestamp: i64 = s(v, "timeStamp").parse().unwrap();

    let params = signer.pay_params(s(v, "appId"), prepay_id, timestamp, s(v, "nonceStr"));
    assert_eq!(
        params,
        PayParams {
            app_id: s(v, "appId").to_owned(),
            time_stamp: s(v, "timeStamp").to_owned(),
            nonce_str: s(v, "nonceStr").to_owned(),
            package: s(v, "package").to_owned(),
            sign_type: s(v, "signType").to_owned(),
            pay_sign: s(v, "paySign").to_owned(),
        }
    );
    assert!(params.verify(&public));

    // wx.requestPayment's exact field names.
    let json = serde_json::to_value(&params).unwrap();
    for field in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        assert_eq!(json[field], v[field], "{field}");
    }
}

#[test]
fn response_signed_with_the_wechatpay_public_key_verifies_by_its_id() {
    let v = &vectors()["response_verification_public_key"];
    let mut verifier = Verifier::new();
    let id = s(v, "public_key_id");
    verifier.add_public_key(
        id,
        RsaPublicKey::from_spki_pem(s(v, "public_key_pem")).unwrap(),
    );
    assert!(verifier.knows(id));
    assert_eq!(verifier.serials(), vec![id.to_owned()]);

    let headers = signed_headers(
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "signature_base64"),
        id,
    );
    let timestamp: i64 = s(v, "timestamp").parse().unwrap();
    let expected = SignatureInfo {
        serial: id.to_owned(),
        timestamp,
        nonce: s(v, "nonce").to_owned(),
    };
    let body = s(v, "body").as_bytes();
    assert_eq!(
        verifier.verify(&WechatpayHeaders::from(&headers), body, timestamp),
        Ok(expected.clone())
    );
    // Inside the window on both sides.
    assert_eq!(
        verifier.verify(&WechatpayHeaders::from(&headers), body, timestamp + 299),
        Ok(expected.clone())
    );
    assert_eq!(
        verifier.verify(&WechatpayHeaders::from(&headers), body, timestamp - 299),
        Ok(expected)
    );
}

#[test]
fn aes_256_gcm_opens_and_seals_the_java_vector() {
    let v = &vectors()["aead_aes_256_gcm"];
    let key = ApiV3Key::new(s(v, "key")).unwrap();
    let (nonce, ad) = (s(v, "nonce"), s(v, "associated_data"));
    let plaintext = aead::open(
        &key,
        aead::AEAD_AES_256_GCM,
        nonce,
        ad,
        s(v, "ciphertext_base64"),
    )
    .unwrap();
    assert_eq!(plaintext, s(v, "plaintext").as_bytes());
    assert_eq!(
        aead::seal(&key, nonce, ad, s(v, "plaintext").as_bytes()).unwrap(),
        s(v, "ciphertext_base64")
    );
}

#[test]
fn certificate_download_decrypts_to_the_expected_certificate() {
    let v = &vectors()["certificate_download"];
    let key = ApiV3Key::new(s(v, "apiv3_key")).unwrap();
    let certs = decrypt_certificates(s(v, "response_body").as_bytes(), &key).unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].serial_no, s(v, "expected_serial_no"));
    assert_eq!(
        certs[0].serial_no,
        "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC"
    );
    assert_eq!(certs[0].key.modulus_bits(), 2048);
    // 2023-09-19T15:15:58Z .. 2028-09-17T15:15:58Z, as effective_time/expire_time say.
    assert_eq!(
        (certs[0].not_before, certs[0].not_after),
        (1_695_136_558, 1_852_816_558)
    );

    let mut verifier = Verifier::new();
    verifier.add_certificate(certs[0].clone());
    assert!(verifier.knows("5dea10ef55877e3cf6c33255c2e7defff7e427ec"));
}

#[test]
fn certificate_download_with_a_wrong_key_fails_on_the_tag() {
    let v = &vectors()["certificate_download"];
    let key = ApiV3Key::new("b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
    let err = decrypt_certificates(s(v, "response_body").as_bytes(), &key).unwrap_err();
    assert_eq!(
        err,
        shared::wechatpay::CertificateError::Decrypt {
            serial_no: "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC".into(),
            source: AeadError::BadTag,
        }
    );
}

// ---------------------------------------------------------------------------------------
// Derived and extra SDK vectors (reference section 9: V3, V7, V8, V13)
// ---------------------------------------------------------------------------------------

fn v8_verifier() -> Verifier {
    let v8 = &derived()["v8_wechatpay_platform"];
    let cert = PlatformCertificate::from_pem(s(v8, "certificate_pem")).unwrap();
    assert_eq!(cert.serial_no, s(v8, "certificate_serial"));
    assert_eq!(
        cert.key,
        RsaPublicKey::from_spki_pem(s(v8, "public_key_pem")).unwrap()
    );
    let mut verifier = Verifier::new();
    verifier.add_certificate(cert);
    verifier
}

#[test]
fn derived_v13_notification_verifies_decrypts_and_parses() {
    let v = &derived()["v13_notification"];
    let verifier = v8_verifier();
    let key = ApiV3Key::new(s(v, "api_v3_key")).unwrap();
    let headers = signed_headers(
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "signature"),
        s(v, "serial"),
    );
    let body = s(v, "body").as_bytes();
    assert_eq!(body.len(), 1017);

    let verified = verify_and_decrypt(
        &verifier,
        &key,
        &WechatpayHeaders::from(&headers),
        body,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(verified.plaintext, s(v, "expected_plaintext").as_bytes());
    assert_eq!(verified.signature.serial, s(v, "serial"));
    assert_eq!(verified.signature.timestamp, 1_700_000_000);
    let n = &verified.notification;
    assert_eq!(n.id, "EV-2018022511223320873");
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(n.resource_type, "encrypt-resource");
    assert_eq!(n.summary, "支付成功");
    assert_eq!(n.resource.nonce, s(v, "resource_nonce"));
    assert_eq!(n.resource.associated_data.as_deref(), Some("transaction"));
    assert_eq!(n.resource.original_type, "transaction");

    let tx = verified.transaction().unwrap();
    assert_eq!(tx.appid, "wxd678efh567hg6787");
    assert_eq!(tx.mchid, "1230000109");
    assert_eq!(tx.out_trade_no, "1217752501201407033233368018");
    assert_eq!(
        tx.transaction_id.as_deref(),
        Some("4200000000000000000000000001")
    );
    assert_eq!(tx.trade_state, TradeState::Success);
    assert_eq!(tx.trade_type.as_deref(), Some("JSAPI"));
    assert_eq!(tx.trade_state_desc.as_deref(), Some("支付成功"));
    assert_eq!(tx.bank_type.as_deref(), Some("CMC"));
    assert_eq!(tx.attach.as_deref(), Some("自定义数据"));
    assert_eq!(
        tx.success_time.as_deref(),
        Some("2018-06-08T10:34:56+08:00")
    );
    assert_eq!(
        tx.payer.as_ref().map(|p| p.openid.as_str()),
        Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    );
    let amount = tx.amount.unwrap();
    assert_eq!((amount.total, amount.payer_total), (100, Some(100)));
    assert_eq!(amount.currency.as_deref(), Some("CNY"));
    assert_eq!(
        tx.scene_info.and_then(|s| s.device_id).as_deref(),
        Some("013467007045764")
    );
    assert_eq!(tx.promotion_detail, Some(vec![]));
}

#[test]
fn derived_v13_empty_204_response_verifies() {
    let v = &derived()["v13_empty_response"];
    let headers = signed_headers(
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "signature"),
        s(v, "serial"),
    );
    let info = v8_verifier()
        .verify(&WechatpayHeaders::from(&headers), b"", 1_700_000_000)
        .unwrap();
    assert_eq!(info.nonce, s(v, "nonce"));
}

#[test]
fn go_v3_notification_signature_verifies_but_its_16_byte_apiv3_key_is_refused() {
    let v = &derived()["v3_go_notification_aes128"];
    let cert =
        PlatformCertificate::from_pem(s(&vectors()["rsa_sha256_sign"], "certificate_pem")).unwrap();
    let mut verifier = Verifier::new();
    verifier.add_certificate(cert);
    let headers = signed_headers(
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "signature"),
        s(v, "serial"),
    );
    let body = s(v, "body").as_bytes();
    assert_eq!(body.len(), 568);
    let info = verifier
        .verify(&WechatpayHeaders::from(&headers), body, 1_624_523_846)
        .unwrap();
    assert_eq!(info.serial, "D7CE59D1F522D701");
    assert_eq!(
        ApiV3Key::new(s(v, "api_v3_key")),
        Err(AeadError::KeyLength(16))
    );
}

#[test]
fn java_merchant_key_reproduces_its_signature() {
    let v = &derived()["v7_merchant"];
    let key = RsaPrivateKey::from_pkcs8_pem(s(v, "private_key_pem")).unwrap();
    assert_eq!(
        key.sign_base64(s(v, "message").as_bytes()),
        s(v, "signature_base64")
    );
}

// ---------------------------------------------------------------------------------------
// Committed test keys and end-to-end round trips
// ---------------------------------------------------------------------------------------

#[test]
fn committed_test_keys_load_and_pair_up() {
    for name in ["merchant", "platform", "other"] {
        let private =
            RsaPrivateKey::from_pkcs8_pem(&key_file(&format!("test_{name}_key.pem"))).unwrap();
        let public =
            RsaPublicKey::from_spki_pem(&key_file(&format!("test_{name}_public.pem"))).unwrap();
        assert_eq!(private.public_key(), public, "{name}");
        assert_eq!(public.modulus_bits(), 2048);
        let signature = private.sign(b"pair");
        assert!(public.verify(b"pair", &signature));
    }
    let cert = PlatformCertificate::from_pem(&key_file("test_platform_cert.pem")).unwrap();
    // The DER serial is 00 9F 3C ...: the sign byte must not show.
    assert_eq!(cert.serial_no, "9F3C5A2E7B1D40086C11");
    assert_eq!(
        cert.key,
        RsaPublicKey::from_spki_pem(&key_file("test_platform_public.pem")).unwrap()
    );
    assert_eq!(
        RsaPrivateKey::from_pkcs8_pem(&key_file("test_merchant_key_pkcs1.pem")).unwrap_err(),
        KeyError::WrongPemType {
            expected: "PRIVATE KEY",
            found: "RSA PRIVATE KEY".into(),
            hint: " (PKCS#1; convert it to PKCS#8 with `openssl pkey -in key.pem -out apiclient_key.pem`)",
        }
    );
}

fn sample_transaction() -> Transaction {
    serde_json::from_value(serde_json::json!({
        "appid": "wx0000000000000001",
        "mchid": "1900000001",
        "out_trade_no": "ORD01JABCDEFGHJKMNPQRSTVW",
        "transaction_id": "4200000000000000000000000042",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "attach": "cart=7",
        "success_time": "2026-11-24T12:00:00+08:00",
        "payer": {"openid": "o_test_openid"},
        "amount": {"total": 1980, "payer_total": 1980, "currency": "CNY", "payer_currency": "CNY"}
    }))
    .unwrap()
}

#[test]
fn built_notification_round_trips_in_public_key_and_certificate_mode() {
    let platform = RsaPrivateKey::from_pkcs8_pem(&key_file("test_platform_key.pem")).unwrap();
    let key = ApiV3Key::new("0123456789abcdefghijABCDEFGHIJ01").unwrap();
    let tx = sample_transaction();
    let plaintext = serde_json::to_vec(&tx).unwrap();
    let draft = NotificationDraft::transaction_success(
        "EV-TEST-1",
        "2026-11-24T12:00:01+08:00",
        &plaintext,
    );
    let now = 1_795_000_000;

    let public_id = "PUB_KEY_ID_0000000000000000000000000000000001";
    let mut by_id = Verifier::new();
    by_id.add_public_key(public_id, platform.public_key());
    let (headers, body) = build_notification(&platform, public_id, &key, &draft, now);
    let verified = verify_and_decrypt(
        &by_id,
        &key,
        &WechatpayHeaders::from(&headers),
        &body,
        now + 5,
    )
    .unwrap();
    assert_eq!(verified.transaction().unwrap(), tx);
    assert_eq!(verified.notification.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(verified.notification.id, "EV-TEST-1");
    assert_eq!(verified.signature.serial, public_id);
    assert_eq!(verified.signature.nonce.len(), 32);

    let cert = PlatformCertificate::from_pem(&key_file("test_platform_cert.pem")).unwrap();
    let mut by_cert = Verifier::new();
    by_cert.add_certificate(cert.clone());
    let (headers, body) = build_notification(&platform, &cert.serial_no, &key, &draft, now);
    let verified = verify_and_decrypt(
        &by_cert,
        &key,
        &WechatpayHeaders::from(&headers),
        &body,
        now,
    )
    .unwrap();
    assert_eq!(verified.transaction().unwrap(), tx);
    // Key order as WeChat Pay emits it.
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with(r#"{"id":"EV-TEST-1","create_time":"#),
        "{text}"
    );
}

#[test]
fn one_verifier_serves_a_migrating_merchant() {
    let platform = RsaPrivateKey::from_pkcs8_pem(&key_file("test_platform_key.pem")).unwrap();
    let other = RsaPrivateKey::from_pkcs8_pem(&key_file("test_other_key.pem")).unwrap();
    let mut verifier = Verifier::new();
    let cert = PlatformCertificate::from_pem(&key_file("test_platform_cert.pem")).unwrap();
    verifier.add_certificate(cert);
    verifier.add_public_key("PUB_KEY_ID_NEW", other.public_key());

    let now = 1_795_000_000;
    let old = sign_response_headers(&platform, "9F3C5A2E7B1D40086C11", now, "n1", b"{}");
    let new = sign_response_headers(&other, "PUB_KEY_ID_NEW", now, "n2", b"{}");
    assert!(
        verifier
            .verify(&WechatpayHeaders::from(&old), b"{}", now)
            .is_ok()
    );
    assert!(
        verifier
            .verify(&WechatpayHeaders::from(&new), b"{}", now)
            .is_ok()
    );
    // Serials compare case-insensitively and without leading zeros.
    let padded = sign_response_headers(&platform, "009f3c5a2e7b1d40086c11", now, "n3", b"");
    assert_eq!(
        verifier
            .verify(&WechatpayHeaders::from(&padded), b"", now)
            .unwrap()
            .serial,
        "009f3c5a2e7b1d40086c11"
    );
}

#[test]
fn query_order_answer_while_notpay_parses() {
    // Shape of WeChat Pay's query-order answer for an unpaid order: no payer, no
    // transaction_id, no success_time, amount without payer_total.
    let body = r#"{"amount":{"payer_currency":"CNY","total":100},"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018","promotion_detail":[],"scene_info":{"device_id":"013467007045764"},"trade_state":"NOTPAY","trade_state_desc":"订单未支付","some_future_field":{"x":1}}"#;
    let tx: Transaction = serde_json::from_str(body).unwrap();
    assert_eq!(tx.trade_state, TradeState::NotPay);
    assert_eq!(tx.transaction_id, None);
    assert_eq!(tx.payer, None);
    assert_eq!(
        tx.amount.as_ref().map(|a| (a.total, a.payer_total)),
        Some((100, None))
    );

    let accept: Transaction = serde_json::from_str(
        r#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"ACCEPT"}"#,
    )
    .unwrap();
    assert_eq!(accept.trade_state, TradeState::Other("ACCEPT".into()));
    assert!(!accept.trade_state.is_paid());
    // Serializes back to the WeChat spelling, without nulls.
    let json = serde_json::to_string(&accept).unwrap();
    assert_eq!(
        json,
        r#"{"appid":"a","mchid":"m","out_trade_no":"o","trade_state":"ACCEPT"}"#
    );
}

#[test]
fn refund_event_decrypts_but_is_not_a_transaction() {
    let platform = RsaPrivateKey::from_pkcs8_pem(&key_file("test_platform_key.pem")).unwrap();
    let key = ApiV3Key::new("0123456789abcdefghijABCDEFGHIJ01").unwrap();
    let mut verifier = Verifier::new();
    verifier.add_public_key("PUB_KEY_ID_1", platform.public_key());
    let draft = NotificationDraft {
        id: "EV-R",
        create_time: "2026-11-24T12:00:00+08:00",
        event_type: "REFUND.SUCCESS",
        summary: "退款成功",
        original_type: "refund",
        associated_data: "refund",
        plaintext: br#"{"refund_status":"SUCCESS"}"#,
    };
    let (headers, body) =
        build_notification(&platform, "PUB_KEY_ID_1", &key, &draft, 1_795_000_000);
    let verified = verify_and_decrypt(
        &verifier,
        &key,
        &WechatpayHeaders::from(&headers),
        &body,
        1_795_000_000,
    )
    .unwrap();
    assert_eq!(verified.plaintext, br#"{"refund_status":"SUCCESS"}"#);
    assert!(matches!(
        verified.transaction(),
        Err(NotificationError::MalformedResource(_))
    ));
}

#[test]
fn nonces_are_32_alphanumerics_and_differ() {
    let a = sign::nonce();
    let b = sign::nonce();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(a, b);
    assert_eq!(aead::resource_nonce().len(), 12);
}

#[test]
fn secrets_are_redacted_in_debug_and_display() {
    let private = RsaPrivateKey::from_pkcs8_pem(&key_file("test_merchant_key.pem")).unwrap();
    assert_eq!(format!("{private:?}"), "RsaPrivateKey(..)");
    let signer = MerchantSigner::new("1900000001", "SERIAL", private);
    let debug = format!("{signer:?}");
    assert!(
        debug.contains("RsaPrivateKey(..)") && debug.contains("1900000001"),
        "{debug}"
    );

    let secret = "0123456789abcdefghijABCDEFGHIJ01";
    let key = ApiV3Key::new(secret).unwrap();
    assert!(!format!("{key:?}").contains("0123"));
    assert!(!format!("{key}").contains("0123"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
