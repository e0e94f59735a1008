//! The crypto on the hot paths: the payment callback (verify + decrypt + parse a ~1 KB
//! notification), every outgoing API call (the `Authorization` header) and place-order's
//! `paySign`. These are the numbers to compare when weighing ring against aws-lc-rs
//! (DESIGN.md section 8).
//!
//! Run: `cargo bench -p shared --bench wechatpay -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use shared::wechatpay::aead::{self, ApiV3Key};
use shared::wechatpay::keys::{PlatformCertificate, RsaPrivateKey};
use shared::wechatpay::sign::MerchantSigner;
use shared::wechatpay::verify::{Verifier, WechatpayHeaders};
use shared::wechatpay::{Notification, verify_and_decrypt};

fn testdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(relative)
}

fn json(relative: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata(relative)).expect("read vectors"))
        .expect("parse vectors")
}

fn field<'v>(v: &'v Value, name: &str) -> &'v str {
    v[name].as_str().expect("vector field")
}

/// The derived V13 notification (1017 bytes), signed by the java test platform key.
fn notification(c: &mut Criterion) {
    let derived = json("wechatpay-v3-derived.json");
    let v = &derived["v13_notification"];
    let cert =
        PlatformCertificate::from_pem(field(&derived["v8_wechatpay_platform"], "certificate_pem"))
            .expect("cert");
    let mut verifier = Verifier::new();
    verifier.add_certificate(cert);
    let key = ApiV3Key::new(field(v, "api_v3_key")).expect("key");
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("Wechatpay-Timestamp", field(v, "timestamp")),
        ("Wechatpay-Nonce", field(v, "nonce")),
        ("Wechatpay-Signature", field(v, "signature")),
        ("Wechatpay-Serial", field(v, "serial")),
        ("Wechatpay-Signature-Type", field(v, "signature_type")),
    ] {
        headers.insert(name, HeaderValue::from_str(value).expect("header"));
    }
    let headers = WechatpayHeaders::from(&headers);
    let body = field(v, "body").as_bytes().to_vec();
    let now = 1_700_000_000;

    let mut group = c.benchmark_group("notification_1k");
    group.bench_function("verify_decrypt_parse", |b| {
        b.iter(|| {
            let verified =
                verify_and_decrypt(&verifier, &key, black_box(&headers), black_box(&body), now)
                    .expect("ok");
            verified.transaction().expect("transaction")
        })
    });
    group.bench_function("verify_signature_only", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&headers), black_box(&body), now)
                .expect("ok")
        })
    });
    let envelope: Notification = serde_json::from_slice(&body).expect("envelope");
    let r = envelope.resource;
    let ad = r.associated_data.unwrap_or_default();
    group.bench_function("aead_open_only", |b| {
        b.iter(|| {
            aead::open(&key, &r.algorithm, &r.nonce, &ad, black_box(&r.ciphertext)).expect("ok")
        })
    });
    group.finish();
}

/// The official JSAPI order example (295-byte body) with the doc's test key.
fn request_signing(c: &mut Criterion) {
    let vectors = json("wechatpay-v3-vectors.json");
    let v = &vectors["request_signature"];
    let key = RsaPrivateKey::from_pkcs8_pem(field(v, "private_key_pem")).expect("key");
    let signer = MerchantSigner::new(field(v, "mchid"), field(v, "serial_no"), key);
    let case = &v["cases"][0];
    let (method, url, body) = (
        field(case, "method"),
        field(case, "url"),
        field(case, "body").as_bytes(),
    );
    let nonce = field(v, "nonce");

    let mut group = c.benchmark_group("request_signing");
    group.bench_function("authorization", |b| {
        b.iter(|| signer.authorization(method, url, black_box(body), 1_554_208_460, nonce))
    });
    group.bench_function("authorization_at_fresh_nonce", |b| {
        b.iter(|| signer.authorization_at(method, url, black_box(body), 1_554_208_460))
    });
    group.finish();
}

fn pay_params(c: &mut Criterion) {
    let vectors = json("wechatpay-v3-vectors.json");
    let rs = &vectors["request_signature"];
    let v = &vectors["pay_sign"];
    let key = RsaPrivateKey::from_pkcs8_pem(field(rs, "private_key_pem")).expect("key");
    let signer = MerchantSigner::new(field(rs, "mchid"), field(rs, "serial_no"), key);
    let prepay_id = field(v, "package").trim_start_matches("prepay_id=");
    let (app_id, nonce) = (field(v, "appId"), field(v, "nonceStr"));

    c.bench_function("pay_params", |b| {
        b.iter(|| signer.pay_params(app_id, black_box(prepay_id), 1_554_208_460, nonce))
    });
}

criterion_group!(benches, notification, request_signing, pay_params);
criterion_main!(benches);
