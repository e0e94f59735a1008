//! `sandbox reconcile [DATE]`: asks a running sandbox to reconcile WeChat Pay's (the
//! simulator's) trade bill of a Beijing date through merchant-api, with the merchant token
//! of its `sandbox.env`, and prints the report.

use crate::cli::Options;
use shared::timefmt::{CHINA, date_string};

/// Runs one reconciliation against the sandbox at `--port` (its `--data-dir/sandbox.env`).
pub async fn run(options: &Options, date: Option<time::Date>) -> Result<(), String> {
    let date = date.unwrap_or_else(|| time::OffsetDateTime::now_utc().to_offset(CHINA).date());
    let env_path = options.data_dir.join("sandbox.env");
    let env = std::fs::read_to_string(&env_path).map_err(|e| {
        format!(
            "reconcile: cannot read {} ({e}): start the sandbox first (`cargo run -p sandbox`)",
            env_path.display()
        )
    })?;
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("MERCHANT_API_TOKEN="))
        .map(|v| v.trim_matches('\'').to_owned())
        .ok_or_else(|| {
            format!(
                "reconcile: {} has no MERCHANT_API_TOKEN",
                env_path.display()
            )
        })?;
    let url = format!(
        "http://127.0.0.1:{}/merchant/bills/{}/reconcile",
        options.port,
        date_string(date)
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("reconcile: {e}"))?;
    let response = client
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reconcile: {url}: {e} (is the sandbox running on --port {}?)",
                options.port
            )
        })?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("reconcile: {url}: {e}"))?;
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("reconcile: {url}: the answer is not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "reconcile: {} {}: {}",
            status.as_u16(),
            body["code"].as_str().unwrap_or("?"),
            body["message"].as_str().unwrap_or("")
        ));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_else(|_| body.to_string())
    );
    Ok(())
}
