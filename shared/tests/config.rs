//! Start-up configuration: every variable of DESIGN.md section 2 parsed, a bad one named in
//! a single line, and secrets never shown by Debug, Display or an error.

use std::collections::HashMap;

use shared::config::{
    AuthConfig, AuthMode, Env, LogFormat, SessionConfig, StoreConfig, WechatPayConfig,
};
use shared::session::SigningKey;

const APIV3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";

fn key(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn base() -> HashMap<String, String> {
    [
        ("WXPAY_APPID", "wx2421b1c4370ec43b".to_owned()),
        ("WXPAY_MCHID", "1900007291".to_owned()),
        (
            "WXPAY_MCH_SERIAL_NO",
            "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".to_owned(),
        ),
        ("WXPAY_MCH_PRIVATE_KEY", key("test_merchant_key.pem")),
        ("WXPAY_APIV3_KEY", APIV3_KEY.to_owned()),
        (
            "WXPAY_NOTIFY_URL",
            "https://pay.example.com/notify/wechatpay".to_owned(),
        ),
        ("ORDERS_TABLE", "wxpay-orders".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn with(changes: &[(&str, Option<&str>)]) -> Env {
    let mut m = base();
    for (k, v) in changes {
        match v {
            Some(v) => m.insert((*k).to_owned(), (*v).to_owned()),
            None => m.remove(*k),
        };
    }
    Env::from_map(m)
}

fn wechat_err(changes: &[(&str, Option<&str>)]) -> String {
    let e = WechatPayConfig::from_env(&with(changes), true).expect_err("should be refused");
    let line = e.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[test]
fn a_complete_environment_parses() {
    let c = WechatPayConfig::from_env(&with(&[]), true).unwrap();
    assert_eq!(c.appid, "wx2421b1c4370ec43b");
    assert_eq!(c.mchid, "1900007291");
    assert_eq!(c.api_base, "https://api.mch.weixin.qq.com");
    assert!(c.public_key.is_none(), "no public key: certificate mode");
    let s = StoreConfig::from_env(&with(&[])).unwrap();
    assert_eq!(s.table, "wxpay-orders");
    assert_eq!(s.sweeper_shards, 128, "sized for a flash sale's peak");
    assert_eq!(s.order_ttl.as_secs(), 1800);
    assert_eq!(s.endpoint, None);
}

#[test]
fn each_required_variable_is_named_when_missing() {
    for var in [
        "WXPAY_APPID",
        "WXPAY_MCHID",
        "WXPAY_MCH_SERIAL_NO",
        "WXPAY_MCH_PRIVATE_KEY",
        "WXPAY_APIV3_KEY",
        "WXPAY_NOTIFY_URL",
    ] {
        let line = wechat_err(&[(var, None)]);
        assert!(line.contains(var), "{var}: {line}");
    }
    // notify_url is only required where orders are created
    assert!(WechatPayConfig::from_env(&with(&[("WXPAY_NOTIFY_URL", None)]), false).is_ok());
    let e = StoreConfig::from_env(&with(&[("ORDERS_TABLE", None)])).unwrap_err();
    assert_eq!(e.variable, "ORDERS_TABLE");
    // blank counts as missing
    assert!(wechat_err(&[("WXPAY_APPID", Some("  "))]).contains("WXPAY_APPID"));
}

#[test]
fn malformed_values_are_named_and_secrets_are_not_echoed() {
    let line = wechat_err(&[("WXPAY_APIV3_KEY", Some("short-secret-value"))]);
    assert!(line.contains("WXPAY_APIV3_KEY"), "{line}");
    assert!(
        !line.contains("short-secret-value"),
        "secret echoed: {line}"
    );

    let pkcs1 = key("test_merchant_key_pkcs1.pem");
    let line = wechat_err(&[("WXPAY_MCH_PRIVATE_KEY", Some(&pkcs1))]);
    assert!(
        line.contains("WXPAY_MCH_PRIVATE_KEY") && line.contains("PKCS#8"),
        "{line}"
    );
    assert!(!line.contains("MII"), "key material echoed: {line}");

    assert!(wechat_err(&[("WXPAY_MCHID", Some("19000abc"))]).contains("WXPAY_MCHID"));
    assert!(
        wechat_err(&[("WXPAY_MCH_SERIAL_NO", Some("not-hex!"))]).contains("WXPAY_MCH_SERIAL_NO")
    );
    assert!(wechat_err(&[("WXPAY_API_BASE", Some("ftp://x"))]).contains("WXPAY_API_BASE"));
    for url in [
        "http://pay.example.com/notify",
        "https://pay.example.com/notify?x=1",
        "not a url",
    ] {
        assert!(
            wechat_err(&[("WXPAY_NOTIFY_URL", Some(url))]).contains("WXPAY_NOTIFY_URL"),
            "{url}"
        );
    }
    // the sandbox delivers over plain http on loopback
    assert!(
        WechatPayConfig::from_env(
            &with(&[(
                "WXPAY_NOTIFY_URL",
                Some("http://127.0.0.1:3000/notify/wechatpay")
            )]),
            true
        )
        .is_ok()
    );
}

#[test]
fn public_key_mode_needs_both_key_and_id() {
    let pem = key("test_platform_public.pem");
    let c = WechatPayConfig::from_env(
        &with(&[
            ("WXPAY_PUBLIC_KEY", Some(&pem)),
            (
                "WXPAY_PUBLIC_KEY_ID",
                Some("PUB_KEY_ID_0000000000000024101100397200000006"),
            ),
        ]),
        true,
    )
    .unwrap();
    assert_eq!(
        c.public_key.as_ref().map(|(id, _)| id.as_str()),
        Some("PUB_KEY_ID_0000000000000024101100397200000006")
    );
    assert!(wechat_err(&[("WXPAY_PUBLIC_KEY", Some(&pem))]).contains("WXPAY_PUBLIC_KEY_ID"));
    assert!(
        wechat_err(&[("WXPAY_PUBLIC_KEY_ID", Some("PUB_KEY_ID_1"))]).contains("WXPAY_PUBLIC_KEY")
    );
    assert!(
        wechat_err(&[
            ("WXPAY_PUBLIC_KEY", Some(&pem)),
            ("WXPAY_PUBLIC_KEY_ID", Some("SERIAL123"))
        ])
        .contains("PUB_KEY_ID_")
    );
    assert!(
        wechat_err(&[
            (
                "WXPAY_PUBLIC_KEY",
                Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            ),
            ("WXPAY_PUBLIC_KEY_ID", Some("PUB_KEY_ID_1"))
        ])
        .contains("WXPAY_PUBLIC_KEY")
    );
}

#[test]
fn keys_can_come_from_files_but_not_both_ways() {
    let path = format!(
        "{}/../testdata/keys/test_merchant_key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let c = WechatPayConfig::from_env(
        &with(&[
            ("WXPAY_MCH_PRIVATE_KEY", None),
            ("WXPAY_MCH_PRIVATE_KEY_FILE", Some(&path)),
        ]),
        true,
    );
    assert!(c.is_ok(), "{:?}", c.err());
    let line = wechat_err(&[("WXPAY_MCH_PRIVATE_KEY_FILE", Some(&path))]);
    assert!(line.contains("not both"), "{line}");
    let line = wechat_err(&[
        ("WXPAY_MCH_PRIVATE_KEY", None),
        ("WXPAY_MCH_PRIVATE_KEY_FILE", Some("/nonexistent/key.pem")),
    ]);
    assert!(line.contains("WXPAY_MCH_PRIVATE_KEY_FILE") && line.contains("/nonexistent/key.pem"));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = WechatPayConfig::from_env(&with(&[]), true).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(APIV3_KEY), "APIv3 key in Debug");
    let pem = key("test_merchant_key.pem");
    let body_line = pem.lines().nth(1).unwrap();
    assert!(!debug.contains(body_line), "private key in Debug");
    assert!(debug.contains("redacted"));
    assert_eq!(c.apiv3_key.to_string(), "[redacted]");
}

#[test]
fn store_settings_are_bounded() {
    let s = StoreConfig::from_env(&with(&[
        ("SWEEPER_SHARDS", Some("8")),
        ("ORDER_TTL_SECONDS", Some("60")),
        ("DYNAMODB_ENDPOINT", Some("http://127.0.0.1:8000")),
    ]))
    .unwrap();
    assert_eq!((s.sweeper_shards, s.order_ttl.as_secs()), (8, 60));
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:8000"));
    for (var, value) in [
        ("SWEEPER_SHARDS", "0"),
        ("SWEEPER_SHARDS", "four"),
        ("SWEEPER_SHARDS", "129"),
        ("ORDER_TTL_SECONDS", "-1"),
        ("ORDER_TTL_SECONDS", "0"),
        ("ORDERS_TABLE", "x"),
        ("DYNAMODB_ENDPOINT", "localhost"),
    ] {
        let e = StoreConfig::from_env(&with(&[(var, Some(value))])).unwrap_err();
        assert_eq!(e.variable, var, "{var}={value}: {e}");
    }
}

#[test]
fn auth_mode_defaults_to_token_and_needs_its_keys() {
    let public = SigningKey::generate().public_key().to_spki_pem();
    let e = AuthConfig::from_env(&with(&[])).unwrap_err();
    assert_eq!(e.variable, "SESSION_PUBLIC_KEYS");
    let e = AuthConfig::from_env(&with(&[("SESSION_PUBLIC_KEYS", Some("pem"))])).unwrap_err();
    assert_eq!(e.variable, "SESSION_PUBLIC_KEYS", "not a key: {e}");
    let rsa = key("test_platform_public.pem");
    let e = AuthConfig::from_env(&with(&[("SESSION_PUBLIC_KEYS", Some(&rsa))])).unwrap_err();
    assert!(e.problem.contains("not EC"), "{e}");
    let e = AuthConfig::from_env(&with(&[("SESSION_PUBLIC_KEYS", Some(&public))])).unwrap_err();
    assert_eq!(e.variable, "SESSION_ISSUER");
    let issuer = ("SESSION_ISSUER", Some("https://api.example.com/"));
    let a = AuthConfig::from_env(&with(&[("SESSION_PUBLIC_KEYS", Some(&public)), issuer])).unwrap();
    assert_eq!(a.mode, AuthMode::Token);
    assert!(!a.allow_debug_identity);
    assert_eq!(a.session_public_keys.len(), 1);
    assert_eq!(
        a.session_issuer.as_deref(),
        Some("https://api.example.com"),
        "one spelling: no trailing slash"
    );
    assert_eq!(a.session_audience.as_deref(), Some("wx2421b1c4370ec43b"));
    let e = AuthConfig::from_env(&with(&[
        ("SESSION_PUBLIC_KEYS", Some(&public)),
        issuer,
        ("WXPAY_APPID", None),
    ]))
    .unwrap_err();
    assert_eq!(e.variable, "WXPAY_APPID", "the audience");
    for bad in [
        "http://api.example.com",
        "https://api.example.com/?x=1",
        "nope",
    ] {
        let e = AuthConfig::from_env(&with(&[
            ("SESSION_PUBLIC_KEYS", Some(&public)),
            ("SESSION_ISSUER", Some(bad)),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "SESSION_ISSUER", "{bad}");
    }
    // Loopback http is the sandbox's issuer.
    assert!(
        AuthConfig::from_env(&with(&[
            ("SESSION_PUBLIC_KEYS", Some(&public)),
            ("SESSION_ISSUER", Some("http://127.0.0.1:3000")),
        ]))
        .is_ok()
    );
    // Local debug identity may run without keys (then no bearer token is accepted).
    let a = AuthConfig::from_env(&with(&[("ALLOW_DEBUG_IDENTITY", Some("1"))])).unwrap();
    assert!(a.session_public_keys.is_empty() && a.allow_debug_identity);
    let a = AuthConfig::from_env(&with(&[("AUTH_MODE", Some("authorizer"))])).unwrap();
    assert_eq!(
        (a.mode, a.openid_claim.as_str()),
        (AuthMode::Authorizer, "openid")
    );
    let e = AuthConfig::from_env(&with(&[("AUTH_MODE", Some("cognito"))])).unwrap_err();
    assert_eq!(e.variable, "AUTH_MODE");
    let e = AuthConfig::from_env(&with(&[("ALLOW_DEBUG_IDENTITY", Some("yes"))])).unwrap_err();
    assert_eq!(e.variable, "ALLOW_DEBUG_IDENTITY");
    // Issue 12.8: never on a cloud, whichever way the platform shows itself.
    for (platform, name, value) in [
        ("AWS Lambda", "AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        (
            "AWS Lambda",
            "AWS_LAMBDA_FUNCTION_NAME",
            "wxpay-query-order",
        ),
        ("Tencent SCF", "SCF_RUNTIME_API", "9.0.0.1"),
        (
            "Tencent SCF",
            "SCF_FUNCTIONNAME",
            "wxpay-orders-prod-query-order",
        ),
    ] {
        let e = AuthConfig::from_env(&with(&[
            ("ALLOW_DEBUG_IDENTITY", Some("1")),
            (name, Some(value)),
        ]))
        .unwrap_err();
        assert_eq!(e.variable, "ALLOW_DEBUG_IDENTITY", "{name}");
        assert!(e.to_string().contains(platform), "{e}");
        // Unset, the same platform starts (given its keys).
        let e = AuthConfig::from_env(&with(&[(name, Some(value))])).unwrap_err();
        assert_ne!(e.variable, "ALLOW_DEBUG_IDENTITY", "{name}");
    }
}

#[test]
fn log_format_follows_the_platform() {
    assert_eq!(LogFormat::from_env(&with(&[])).unwrap(), LogFormat::Text);
    assert_eq!(
        LogFormat::from_env(&with(&[("AWS_LAMBDA_RUNTIME_API", Some("127.0.0.1:9001"))])).unwrap(),
        LogFormat::Json
    );
    assert_eq!(
        LogFormat::from_env(&with(&[("SCF_RUNTIME_API", Some("127.0.0.1"))])).unwrap(),
        LogFormat::Json
    );
    assert_eq!(
        LogFormat::from_env(&with(&[("LOG_FORMAT", Some("json"))])).unwrap(),
        LogFormat::Json
    );
    assert!(LogFormat::from_env(&with(&[("LOG_FORMAT", Some("xml"))])).is_err());
}

#[test]
fn aws_region_and_credentials_come_from_configuration_and_stay_redacted() {
    let s = StoreConfig::from_env(&with(&[
        ("AWS_DEFAULT_REGION", Some("ap-guangzhou")),
        ("AWS_ACCESS_KEY_ID", Some("AKIDEXAMPLE")),
        ("AWS_SECRET_ACCESS_KEY", Some("very-secret-access-key")),
    ]))
    .unwrap();
    assert_eq!(s.region.as_deref(), Some("ap-guangzhou"));
    let (id, secret, token) = s.credentials.clone().unwrap();
    assert_eq!(
        (id.as_str(), secret.expose().as_str()),
        ("AKIDEXAMPLE", "very-secret-access-key")
    );
    assert!(token.is_none());
    assert!(!format!("{s:?}").contains("very-secret-access-key"));
    // AWS_REGION wins over AWS_DEFAULT_REGION; a key id without its secret is no credential
    let s = StoreConfig::from_env(&with(&[
        ("AWS_REGION", Some("us-east-1")),
        ("AWS_DEFAULT_REGION", Some("ap-guangzhou")),
        ("AWS_ACCESS_KEY_ID", Some("AKIDEXAMPLE")),
    ]))
    .unwrap();
    assert_eq!(s.region.as_deref(), Some("us-east-1"));
    assert!(s.credentials.is_none());
}

#[test]
fn session_config_names_each_bad_variable() {
    let (first, second) = (SigningKey::generate(), SigningKey::generate());
    let keys = format!(
        "{}{}",
        SigningKey::generate_pkcs8_pem(),
        SigningKey::generate_pkcs8_pem()
    );
    let retired = format!(
        "{}{}",
        first.public_key().to_spki_pem(),
        second.public_key().to_spki_pem()
    );
    let session = |changes: &[(&str, Option<&str>)]| {
        let mut all = vec![
            ("WX_APP_SECRET", Some("0123456789abcdef0123456789abcdef")),
            ("SESSION_SIGNING_KEY", Some(keys.as_str())),
            ("SESSION_ISSUER", Some("https://api.example.com")),
        ];
        all.extend_from_slice(changes);
        SessionConfig::from_env(&with(&all))
    };
    let c = session(&[("SESSION_PUBLIC_KEYS", Some(&retired))]).unwrap();
    assert_eq!(c.signing_keys.expose().len(), 2, "both blocks");
    assert_eq!(c.extra_public_keys.len(), 2);
    assert_eq!(c.wx_api_base, "https://api.weixin.qq.com");
    assert_eq!(c.ttl.as_secs(), 7200);
    assert_eq!(c.appid, "wx2421b1c4370ec43b");
    let shown = format!("{c:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    for (changes, variable) in [
        (vec![("WX_APP_SECRET", None)], "WX_APP_SECRET"),
        (vec![("WX_APP_SECRET", Some("has space"))], "WX_APP_SECRET"),
        (vec![("SESSION_SIGNING_KEY", None)], "SESSION_SIGNING_KEY"),
        (
            vec![("SESSION_SIGNING_KEY", Some("x"))],
            "SESSION_SIGNING_KEY",
        ),
        (
            vec![("SESSION_SIGNING_KEY", Some(retired.as_str()))],
            "SESSION_SIGNING_KEY",
        ),
        (vec![("SESSION_ISSUER", None)], "SESSION_ISSUER"),
        (vec![("WX_API_BASE", Some("ftp://x"))], "WX_API_BASE"),
        (
            vec![("SESSION_TTL_SECONDS", Some("5"))],
            "SESSION_TTL_SECONDS",
        ),
        (
            vec![("SESSION_PUBLIC_KEYS", Some("junk"))],
            "SESSION_PUBLIC_KEYS",
        ),
        (vec![("WXPAY_APPID", None)], "WXPAY_APPID"),
    ] {
        let e = session(&changes).unwrap_err();
        assert_eq!(e.variable, variable, "{changes:?}: {e}");
        let body_line = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
        for secret in [body_line(&keys), body_line(&retired)] {
            assert!(!e.to_string().contains(&secret), "no key text: {e}");
        }
    }
    // The merchant's variables are not needed.
    let mut only_session = HashMap::new();
    for (k, v) in [
        ("WXPAY_APPID", "wx2421b1c4370ec43b"),
        ("WX_APP_SECRET", "secret1"),
        ("SESSION_ISSUER", "https://api.example.com"),
    ] {
        only_session.insert(k.to_owned(), v.to_owned());
    }
    only_session.insert("SESSION_SIGNING_KEY".to_owned(), keys.clone());
    assert!(SessionConfig::from_env(&Env::from_map(only_session)).is_ok());
}

/// Issue 12.8: payment-callback does not read the merchant private key when notifications
/// verify with the public key (a broken one does not even matter); with platform
/// certificates it needs the key to download them, so it is required and checked.
#[test]
fn notifications_need_the_merchant_key_only_for_platform_certificates() {
    let public = key("test_platform_public.pem");
    let public_key = [
        ("WXPAY_PUBLIC_KEY", Some(public.as_str())),
        (
            "WXPAY_PUBLIC_KEY_ID",
            Some("PUB_KEY_ID_0000000000000024101100397200000006"),
        ),
    ];
    let no_key = [&public_key[..], &[("WXPAY_MCH_PRIVATE_KEY", None)]].concat();
    let c = WechatPayConfig::for_notifications(&with(&no_key)).unwrap();
    assert!(c.mch_private_key.is_none());
    let junk = [
        &public_key[..],
        &[("WXPAY_MCH_PRIVATE_KEY", Some("not a key"))],
    ]
    .concat();
    let c = WechatPayConfig::for_notifications(&with(&junk)).unwrap();
    assert!(c.mch_private_key.is_none(), "not read at all");
    // Every other function still needs it.
    let e = WechatPayConfig::from_env(&with(&no_key), false).unwrap_err();
    assert_eq!(e.variable, "WXPAY_MCH_PRIVATE_KEY");
    // Platform certificates: required.
    let e =
        WechatPayConfig::for_notifications(&with(&[("WXPAY_MCH_PRIVATE_KEY", None)])).unwrap_err();
    assert_eq!(e.variable, "WXPAY_MCH_PRIVATE_KEY");
    let c = WechatPayConfig::for_notifications(&with(&[])).unwrap();
    assert!(c.mch_private_key.is_some());
}
