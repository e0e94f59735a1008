//! Structured logs: JSON on Lambda and SCF (their consoles index the fields), readable text
//! on a terminal. Level from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config), then
//! `RUST_LOG`, else `info`.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests) are harmless no-ops.
pub fn init(format: LogFormat) {
    let filter = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .map(|l| l.to_ascii_lowercase())
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
}

/// CloudWatch metric namespace of every EMF line (the template's alarms use it).
pub const METRICS_NAMESPACE: &str = "WxpayOrders";

static FUNCTION_NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the function in the `Function` dimension of metrics; set once at start-up.
pub fn set_function_name(name: &'static str) {
    let _ = FUNCTION_NAME.set(name);
}

/// One CloudWatch Embedded Metric Format line: counts with the `Function` dimension. EMF is
/// a plain JSON line on stdout that CloudWatch Logs turns into metrics, so no SDK call and no
/// latency; elsewhere (SCF, local) it is just a structured log line.
pub fn emf_line(counts: &[(&str, u64)], at: time::OffsetDateTime) -> String {
    let function = FUNCTION_NAME.get().copied().unwrap_or("unknown");
    let mut root = serde_json::Map::new();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": (at.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": counts.iter().map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("Function".into(), function.into());
    for (name, value) in counts {
        root.insert((*name).into(), (*value).into());
    }
    serde_json::Value::Object(root).to_string()
}

/// Writes [`emf_line`] to stdout, beside the log lines, where Lambda's log agent reads it.
pub fn emit_metrics(counts: &[(&str, u64)], at: time::OffsetDateTime) {
    use std::io::Write;
    let line = emf_line(counts, at);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_each_count_under_the_namespace() {
        set_function_name("timeout-sweeper");
        let at = time::macros::datetime!(2026-11-24 04:00:00 UTC);
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&[("SweepFailed", 2), ("SweepPaid", 0)], at)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_795_492_800_000_i64);
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "WxpayOrders");
        assert_eq!(m["Dimensions"], serde_json::json!([["Function"]]));
        assert_eq!(
            m["Metrics"][0],
            serde_json::json!({"Name": "SweepFailed", "Unit": "Count"})
        );
        assert_eq!(m["Metrics"][1]["Name"], "SweepPaid");
        assert_eq!(v["Function"], "timeout-sweeper");
        assert_eq!(v["SweepFailed"], 2);
        assert_eq!(v["SweepPaid"], 0);
    }
}
