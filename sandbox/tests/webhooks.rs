//! The sandbox's webhook receiver end to end: a sandbox started in-process, `WEBHOOK_URL` and
//! `WEBHOOK_SECRET` read back from its `sandbox.env` as a function binary would, deliveries
//! made by `shared::webhook::Webhook` (the sender the dispatcher uses), `--webhook-fail`
//! refusals, and the listing over HTTP.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox::catalog::Catalog;
use sandbox::server::{Sandbox, SandboxSettings};
use serde_json::Value;
use shared::config::{Env, WebhookConfig};
use shared::webhook::{AttemptOutcome, Webhook};
use time::OffsetDateTime;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "sandbox-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `NAME=value` lines of sandbox.env (values are plain in a temporary dir without spaces).
fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

async fn start(dir: &Path, webhook_fail: u32) -> Sandbox {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    Sandbox::start(SandboxSettings {
        functions_addr: any,
        wechat_addr: any,
        data_dir: dir.to_owned(),
        order_ttl: Duration::from_secs(1800),
        sweep_every: Duration::from_secs(3600),
        retry_scale: 1.0,
        refund_delay: Duration::from_secs(2),
        refund_spacing: Duration::from_secs(60),
        webhook_fail,
        webhook_url: None,
        push_url: None,
        catalog: Catalog::load(None).unwrap(),
    })
    .await
    .unwrap()
}

const PAID: &str = r#"{"id":"evt_A1_paid","type":"order.paid","created_at":"2026-11-24T12:31:05+08:00","data":{"out_trade_no":"A1","amount_total":1980}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_sandbox_env_s_webhook_url_verify_and_are_listed() {
    let dir = TempDir::new("webhooks");
    let sandbox = start(&dir.0, 2).await;

    let vars = env_file(sandbox.env_file());
    assert_eq!(vars["WEBHOOK_URL"], sandbox.webhook_url());
    assert_eq!(
        vars["WEBHOOK_URL"],
        format!("{}/sandbox/webhooks", sandbox.functions_url())
    );
    let secret = vars["WEBHOOK_SECRET"].clone();
    assert!(secret.starts_with("whsec_"));
    let keys_file = std::fs::read_to_string(dir.0.join("keys/webhook_secret.txt")).unwrap();
    assert_eq!(keys_file.trim(), secret, "stored with the other keys");

    let config = WebhookConfig::from_env(&Env::from_pairs([
        ("WEBHOOK_URL", vars["WEBHOOK_URL"].as_str()),
        ("WEBHOOK_SECRET", secret.as_str()),
    ]))
    .unwrap()
    .expect("configured");
    let hook = Webhook::new(&config).unwrap();

    // --webhook-fail 2: two refusals, then the same event is accepted.
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let attempt = hook
            .deliver("evt_A1_paid", PAID.as_bytes(), OffsetDateTime::now_utc())
            .await;
        outcomes.push((attempt.outcome, attempt.status));
    }
    assert_eq!(
        outcomes,
        [
            (AttemptOutcome::Failed, Some(500)),
            (AttemptOutcome::Failed, Some(500)),
            (AttemptOutcome::Delivered, Some(200)),
        ]
    );

    // A delivery signed with another secret is rejected.
    let other = WebhookConfig::from_env(&Env::from_pairs([
        ("WEBHOOK_URL", vars["WEBHOOK_URL"].as_str()),
        ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ]))
    .unwrap()
    .expect("configured");
    let forged = Webhook::new(&other)
        .unwrap()
        .deliver("evt_A1_paid", PAID.as_bytes(), OffsetDateTime::now_utc())
        .await;
    assert_eq!(forged.status, Some(401));

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let list = |query: &'static str| {
        let http = http.clone();
        let url = format!("{}{query}", sandbox.webhook_url());
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let all = list("").await;
    let verdicts: Vec<&str> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["verdict"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(verdicts, ["refused", "refused", "accepted", "rejected"]);
    let accepted = list("?type=order.paid&out_trade_no=A1&accepted=true").await;
    let accepted = accepted["deliveries"].as_array().unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["id"], "evt_A1_paid");
    assert_eq!(accepted[0]["duplicate"], false);
    assert_eq!(accepted[0]["body"]["data"]["amount_total"], 1980);
    assert!(
        list("?out_trade_no=B2").await["deliveries"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    sandbox.shutdown().await.unwrap();

    // A restart on the same data dir keeps the secret.
    let again = start(&dir.0, 0).await;
    assert_eq!(env_file(again.env_file())["WEBHOOK_SECRET"], secret);
    again.shutdown().await.unwrap();
}
