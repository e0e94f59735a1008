//! `shared::secrets` against a real Secrets Manager API: moto's server at `MOTO_ENDPOINT` (the
//! test command starts it). A secret is created with the SDK, then resolved the way a function
//! does at start-up; failures name `SECRETS_ID` and never the secret's contents.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use shared::config::{Env, WechatPayConfig};
use shared::secrets::resolve;
use wxpay_tests::moto_endpoint;

const APIV3_KEY: &str = "0123456789abcdefSECRETvalue98765";
const APP_SECRET: &str = "appsecret-VALUE-must-not-leak";

fn merchant_key_pem() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/keys/test_merchant_key.pem"
    ))
    .expect("testdata merchant key")
}

fn client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "static"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// A secret of its own per test (moto keeps them for the server's life); returns its ARN.
async fn create_secret(endpoint: &str, test: &str, value: &str) -> (String, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "wxpay-orders-test/{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let out = client(endpoint)
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create secret on moto at {endpoint}: {e:?}"));
    (name, out.arn().expect("arn").to_owned())
}

/// What a function's environment holds: no secret values, only where to find them.
fn function_env(endpoint: &str, secrets_id: &str) -> Vec<(String, String)> {
    [
        ("SECRETS_ID", secrets_id),
        ("SECRETS_ENDPOINT", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("WXPAY_APPID", "wxd678efh567hg6787"),
        ("WXPAY_MCHID", "1230000109"),
        (
            "WXPAY_MCH_SERIAL_NO",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        ),
        ("WXPAY_APIV3_KEY", "this-one-is-replaced-by-the-secret"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn env_of(pairs: Vec<(String, String)>) -> Env {
    Env::from_map(pairs.into_iter().collect())
}

#[tokio::test]
async fn a_secret_fills_the_secret_variables_by_name_and_by_arn() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let json = serde_json::json!({
        "WXPAY_MCH_PRIVATE_KEY": merchant_key_pem(),
        "WXPAY_APIV3_KEY": APIV3_KEY,
    })
    .to_string();
    let (name, arn) = create_secret(&endpoint, "fills", &json).await;
    for id in [&name, &arn] {
        let env = resolve(env_of(function_env(&endpoint, id)))
            .await
            .unwrap_or_else(|e| panic!("resolve {id}: {e}"));
        // The secret's values, the secret winning over the process environment...
        assert_eq!(env.get("WXPAY_APIV3_KEY").as_deref(), Some(APIV3_KEY));
        assert_eq!(
            env.get("WXPAY_MCH_PRIVATE_KEY").as_deref(),
            Some(merchant_key_pem().as_str())
        );
        // ...every other variable as it was, and nothing invented.
        assert_eq!(env.get("WXPAY_MCHID").as_deref(), Some("1230000109"));
        assert_eq!(env.get("WX_APP_SECRET"), None);
        // The multi-line PEM survived JSON: the configuration accepts it.
        let config = WechatPayConfig::from_env(&env, false).expect("config from the secret");
        assert_eq!(config.mchid, "1230000109");
        assert!(!format!("{config:?}").contains(APIV3_KEY));
    }
}

#[tokio::test]
async fn an_unknown_key_is_refused_by_name_without_its_value() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let json = serde_json::json!({ "WX_APP_SECRET": APP_SECRET, "DB_PASSWORD": APP_SECRET });
    let (name, _) = create_secret(&endpoint, "unknown-key", &json.to_string()).await;
    let e = match resolve(env_of(function_env(&endpoint, &name))).await {
        Ok(_) => panic!("a secret with an unknown key was accepted"),
        Err(e) => e,
    };
    assert_eq!(e.variable, "SECRETS_ID");
    let (text, debug) = (e.to_string(), format!("{e:?}"));
    assert!(text.contains("\"DB_PASSWORD\""), "{text}");
    assert!(text.contains(&name), "{text}");
    for shown in [&text, &debug] {
        assert!(!shown.contains(APP_SECRET), "{shown}");
    }
}

#[tokio::test]
async fn failures_name_secrets_id_and_never_the_contents() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    // Not JSON at all: the whole value is the secret.
    let (not_json, _) = create_secret(&endpoint, "not-json", APP_SECRET).await;
    // A non-string value.
    let nested = serde_json::json!({ "WX_APP_SECRET": { "v": APP_SECRET } }).to_string();
    let (nested, _) = create_secret(&endpoint, "nested", &nested).await;
    let missing = "wxpay-orders-test/does-not-exist".to_owned();
    for id in [not_json, nested, missing] {
        let e = match resolve(env_of(function_env(&endpoint, &id))).await {
            Ok(_) => panic!("secret {id} was accepted"),
            Err(e) => e,
        };
        assert_eq!(e.variable, "SECRETS_ID", "{e}");
        let (text, debug) = (e.to_string(), format!("{e:?}"));
        assert!(
            text.starts_with("configuration error: SECRETS_ID: "),
            "{text}"
        );
        assert!(text.contains(&id), "{text}");
        for shown in [&text, &debug] {
            assert!(!shown.contains(APP_SECRET), "{id}: {shown}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_start_up_in_time() {
    // Nothing listens on port 9: the call fails within the client's time budget (3 s).
    let mut pairs = function_env("http://127.0.0.1:9", "wxpay-orders/merchant");
    pairs.retain(|(k, _)| k != "WXPAY_APIV3_KEY");
    let started = std::time::Instant::now();
    let e = match resolve(env_of(pairs)).await {
        Ok(_) => panic!("resolved without Secrets Manager"),
        Err(e) => e,
    };
    assert_eq!(e.variable, "SECRETS_ID");
    assert!(e.to_string().contains("wxpay-orders/merchant"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
