//! `infra/tencent/*/serverless.yml` (Serverless Framework, component `scf`) against the
//! project: one custom-runtime event function per `functions/<name>` package, deploying what
//! scripts/build-scf.sh builds, with DESIGN.md section 3's routes behind API Gateway, every
//! scheduled job (timeout-sweeper, event-dispatcher) on a one-minute timer, and no secret value
//! or debug identity in the configuration.

use std::collections::{BTreeMap, BTreeSet};

use crate::deploy_support::{
    DAILY_FUNCTIONS, at, design_routes, function_names, path, repo, scheduled_functions,
    secret_variables,
};
use serde_norway::Value;

/// Every function directory's serverless.yml, by directory name.
fn configs() -> BTreeMap<String, (String, Value)> {
    let dir = repo().join("infra/tencent");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("infra/tencent") {
        let entry = entry.unwrap();
        let file = entry.path().join("serverless.yml");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let yaml =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (text, yaml),
        );
    }
    out
}

#[test]
fn one_custom_runtime_event_function_per_package_deploying_the_built_bootstrap() {
    let configs = configs();
    let packages: BTreeSet<String> = std::fs::read_dir(repo().join("functions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        configs.keys().cloned().collect::<BTreeSet<_>>(),
        packages,
        "one SCF function per functions/*"
    );
    assert_eq!(
        configs.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        function_names(),
        "one SCF function per shared::app::Function"
    );
    let build_script = std::fs::read_to_string(repo().join("scripts/build-scf.sh")).unwrap();
    for (name, (_, c)) in &configs {
        assert_eq!(at(c, "component").as_str(), Some("scf"), "{name}");
        let inputs = at(c, "inputs");
        assert_eq!(
            at(inputs, "runtime").as_str(),
            Some("CustomRuntime"),
            "{name}: runtime"
        );
        assert_eq!(
            at(inputs, "handler").as_str(),
            Some("bootstrap"),
            "{name}: handler"
        );
        assert_eq!(
            at(inputs, "type").as_str(),
            Some("event"),
            "{name}: an event function"
        );
        // The directory build-scf.sh fills (target/scf/<name>/bootstrap), relative to the file.
        assert_eq!(
            path(inputs, &["src", "src"]).as_str(),
            Some(format!("../../../target/scf/{name}").as_str()),
            "{name}: src"
        );
        assert!(build_script.contains("\"$out_abs/$f\"") && build_script.contains("target/scf"));
        assert!(
            build_script.contains(&format!(" {name}")),
            "build-scf.sh does not build {name}"
        );
        assert_eq!(
            path(inputs, &["environment", "variables", "LOG_FORMAT"]).as_str(),
            Some("json"),
            "{name}: JSON logs"
        );
    }
}

#[test]
fn routes_are_design_section_3_and_every_scheduled_job_runs_every_minute() {
    let mut routes = BTreeMap::new();
    let mut timers = BTreeMap::new();
    for (name, (_, c)) in configs() {
        for event in path(&c, &["inputs", "events"])
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if !at(event, "timer").is_null() {
                let p = path(event, &["timer", "parameters"]);
                assert_eq!(at(p, "enable"), &Value::Bool(true), "{name}: timer enabled");
                timers.insert(
                    name.clone(),
                    at(p, "cronExpression").as_str().unwrap_or("").to_owned(),
                );
            }
            let apigw = path(event, &["apigw", "parameters"]);
            if apigw.is_null() {
                continue;
            }
            assert_eq!(
                at(apigw, "protocols")
                    .as_sequence()
                    .map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>()),
                Some(vec!["https"]),
                "{name}: https only (WeChat Pay notifies https URLs)"
            );
            for e in at(apigw, "endpoints").as_sequence().into_iter().flatten() {
                let key = format!(
                    "{} {}",
                    at(e, "method").as_str().unwrap_or("?"),
                    at(e, "path").as_str().unwrap_or("?")
                );
                assert_eq!(
                    path(e, &["function", "isIntegratedResponse"]),
                    &Value::Bool(true),
                    "{key}: integrated response (shared::runtime::scf answers in that shape)"
                );
                assert!(
                    at(e, "auth").is_null() && at(e, "usagePlan").is_null(),
                    "{key}: gateway auth"
                );
                assert!(routes.insert(key, name.clone()).is_none());
            }
        }
    }
    let want = design_routes();
    assert_eq!(routes, want);
    // Every function no route reaches is a scheduled job (SCF has no DynamoDB stream, so the
    // event-dispatcher's timer is its only trigger there); no HTTP function has a timer.
    // SCF cron: second minute hour day month weekday year; at second 0 of every minute.
    let scheduled = scheduled_functions();
    assert!(scheduled.contains("timeout-sweeper") && scheduled.contains("event-dispatcher"));
    assert_eq!(
        timers.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        scheduled,
        "timers"
    );
    for (name, cron) in &timers {
        if DAILY_FUNCTIONS.contains(&name.as_str()) {
            // SCF timers run on Beijing time: 10:15 to 11:45, every half hour.
            assert_eq!(
                cron, "0 15,45 10-11 * * * *",
                "{name}: the morning's schedule"
            );
        } else {
            assert_eq!(cron, "0 */1 * * * * *", "{name}: every minute");
        }
    }
}

#[test]
fn no_secret_value_or_debug_identity_in_the_configuration() {
    let secret_variables = secret_variables();
    for (name, (text, c)) in configs() {
        assert!(!text.contains("ALLOW_DEBUG_IDENTITY"), "{name}");
        let vars = path(&c, &["inputs", "environment", "variables"])
            .as_mapping()
            .expect("variables");
        for (k, v) in vars {
            let k = k.as_str().unwrap_or_default();
            assert!(
                !secret_variables.contains(k),
                "{name} sets {k}: secrets come from SECRETS_ID"
            );
            // Every value is a literal or a ${env:...} from the operator's .env, never a key.
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{v:?}"));
            assert!(
                !v.contains("BEGIN") && !v.contains("PRIVATE"),
                "{name}: {k} holds key material"
            );
        }
        let inputs = at(&c, "inputs");
        let needs_table = name != "session";
        for required in [
            "SECRETS_ID",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(
                !path(inputs, &["environment", "variables", required]).is_null(),
                "{name}: {required}"
            );
        }
        for required in ["ORDERS_TABLE", "DYNAMODB_ENDPOINT"] {
            assert_eq!(
                !path(inputs, &["environment", "variables", required]).is_null(),
                needs_table,
                "{name}: {required}"
            );
        }
    }
}

/// SCF's event-dispatcher (timer only: SCF has no DynamoDB stream) reads a secret no other
/// function names, and each run has time for at least one whole attempt: a run starts none
/// in its last attempt-length, so a timeout shorter than that delivers nothing, silently.
#[test]
fn the_event_dispatcher_has_its_own_secret_and_time_for_an_attempt() {
    let configs = configs();
    let (_, dispatcher) = &configs["event-dispatcher"];
    let vars = |c: &Value| path(c, &["inputs", "environment", "variables"]).clone();
    let secret_of = |c: &Value| at(&vars(c), "SECRETS_ID").as_str().map(str::to_owned);
    let own = secret_of(dispatcher).expect("event-dispatcher: SECRETS_ID");
    for (name, (_, c)) in configs.iter().filter(|(n, _)| *n != "event-dispatcher") {
        assert_ne!(
            secret_of(c).as_deref(),
            Some(own.as_str()),
            "{name} reads the webhook secret"
        );
    }
    let v = vars(dispatcher);
    assert!(
        at(&v, "WEBHOOK_URL").as_str().is_some(),
        "event-dispatcher: WEBHOOK_URL from the operator's .env"
    );
    let webhook = at(&v, "WEBHOOK_TIMEOUT_SECONDS").as_str().map_or(
        shared::config::WebhookConfig::DEFAULT_TIMEOUT.as_secs(),
        |s| s.parse().expect("WEBHOOK_TIMEOUT_SECONDS: seconds"),
    );
    assert!(
        (1..=30).contains(&webhook),
        "WEBHOOK_TIMEOUT_SECONDS {webhook}"
    );
    let store_call = shared::store::ClientSettings::default().operation_timeout;
    let attempt = std::time::Duration::from_secs(webhook) + store_call * 2;
    let timeout = path(dispatcher, &["inputs", "timeout"])
        .as_u64()
        .expect("event-dispatcher: timeout");
    assert!(
        std::time::Duration::from_secs(timeout) > attempt,
        "timeout {timeout} s leaves no time for one {attempt:?} attempt"
    );
    assert!(timeout <= 900, "SCF event functions run at most 900 s");
}
