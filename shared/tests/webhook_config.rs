//! `WEBHOOK_URL` and `WEBHOOK_SECRET` (DESIGN.md section 2): optional as a pair, an https URL,
//! `whsec_` secrets inline or from a file, a bad value named in one line, and the secret
//! never in an error or in `Debug`.

use std::time::Duration;

use shared::config::{Env, WebhookConfig};
use shared::webhook::{WebhookSecrets, sign};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn load(pairs: &[(&str, &str)]) -> Result<Option<WebhookConfig>, String> {
    WebhookConfig::from_env(&Env::from_pairs(pairs.iter().copied())).map_err(|e| {
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        line
    })
}

fn refused(pairs: &[(&str, &str)]) -> String {
    match load(pairs) {
        Err(line) => line,
        Ok(c) => panic!("accepted {pairs:?}: {c:?}"),
    }
}

#[test]
fn unset_url_means_no_delivery() {
    assert!(load(&[]).unwrap().is_none());
    assert!(load(&[("WEBHOOK_URL", "  ")]).unwrap().is_none());
    // A secret alone configures nothing (the caller warns that events are not delivered).
    assert!(load(&[("WEBHOOK_SECRET", SECRET)]).unwrap().is_none());
}

#[test]
fn a_complete_configuration_parses_with_the_default_timeouts() {
    let c = load(&[
        (
            "WEBHOOK_URL",
            "https://merchant.example.com/hooks/orders?src=wx",
        ),
        ("WEBHOOK_SECRET", SECRET),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        c.url.as_str(),
        "https://merchant.example.com/hooks/orders?src=wx"
    );
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.timeout, Duration::from_secs(15));
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
}

#[test]
fn two_secrets_during_a_rotation() {
    let c = load(&[
        ("WEBHOOK_URL", "https://merchant.example.com/hooks"),
        ("WEBHOOK_SECRET", &format!("{SECRET} {OLD}")),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(c.secrets.len(), 2);
    let both = sign(&c.secrets, "evt_1", 1, b"{}");
    let new_only = sign(&WebhookSecrets::parse(SECRET).unwrap(), "evt_1", 1, b"{}");
    assert!(both.starts_with(&new_only), "the first listed signs first");
}

#[test]
fn http_only_on_loopback() {
    for url in [
        "http://127.0.0.1:3000/sandbox/webhooks",
        "http://localhost:3000/sandbox/webhooks",
        "http://[::1]:3000/sandbox/webhooks",
    ] {
        assert!(
            load(&[("WEBHOOK_URL", url), ("WEBHOOK_SECRET", SECRET)]).is_ok(),
            "{url}"
        );
    }
    for url in [
        "http://merchant.example.com/hooks",
        "ftp://merchant.example.com/hooks",
        "not a url",
        "mailto:merchant@example.com",
        "https://merchant.example.com/hooks#frag",
    ] {
        let line = refused(&[("WEBHOOK_URL", url), ("WEBHOOK_SECRET", SECRET)]);
        assert!(line.contains("WEBHOOK_URL"), "{url}: {line}");
    }
}

#[test]
fn the_secret_is_required_and_checked_without_being_echoed() {
    let url = ("WEBHOOK_URL", "https://merchant.example.com/hooks");
    let line = refused(&[url]);
    assert!(
        line.contains("WEBHOOK_SECRET") && line.contains("required"),
        "{line}"
    );
    for (bad, what) in [
        (SECRET_B64, "whsec_"),
        ("whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw", "base64"),
        ("whsec_c2hvcnQtc2VjcmV0", "12 bytes"),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "secret 2",
        ),
    ] {
        let line = refused(&[url, ("WEBHOOK_SECRET", bad)]);
        assert!(line.contains("WEBHOOK_SECRET"), "{line}");
        assert!(line.contains(what), "{line}");
        assert!(!line.contains(SECRET_B64), "secret echoed: {line}");
        assert!(!line.contains("c2hvcnQtc2VjcmV0"), "secret echoed: {line}");
    }
}

#[test]
fn the_secret_can_come_from_a_file_but_not_both_ways() {
    let dir = std::env::temp_dir().join(format!("webhook-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("webhook_secret");
    std::fs::write(&path, format!("{SECRET}\n{OLD}\n")).unwrap();
    let path = path.display().to_string();
    let url = ("WEBHOOK_URL", "https://merchant.example.com/hooks");

    let c = load(&[url, ("WEBHOOK_SECRET_FILE", &path)])
        .unwrap()
        .unwrap();
    assert_eq!(c.secrets.len(), 2, "one secret a line works too");

    let line = refused(&[
        url,
        ("WEBHOOK_SECRET_FILE", &path),
        ("WEBHOOK_SECRET", SECRET),
    ]);
    assert!(line.contains("not both"), "{line}");

    std::fs::write(&path, "whsec_tooshort=\n").unwrap();
    let line = refused(&[url, ("WEBHOOK_SECRET_FILE", &path)]);
    assert!(line.contains("WEBHOOK_SECRET_FILE"), "{line}");
    assert!(!line.contains("tooshort"), "{line}");

    let line = refused(&[url, ("WEBHOOK_SECRET_FILE", "/nonexistent/webhook_secret")]);
    assert!(line.contains("WEBHOOK_SECRET_FILE"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_shows_no_secret() {
    let c = load(&[
        ("WEBHOOK_URL", "https://merchant.example.com/hooks"),
        ("WEBHOOK_SECRET", &format!("{SECRET} {OLD}")),
    ])
    .unwrap()
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET_B64), "{debug}");
    assert!(!debug.contains("C2FVsBQIhrscChlQIMV"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}
