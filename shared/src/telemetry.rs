//! Structured logs: JSON on Lambda and SCF (their consoles index the fields), readable text
//! on a terminal. Level from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config), then
//! `RUST_LOG`, else `info`.

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
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
            .fmt_fields(escaped_fields())
            .try_init(),
    };
}

/// The text format's fields with control characters escaped (`\n`, `\u{1b}`, ...): values
/// decrypted from a notification or sent by a client must not forge log lines or drive a
/// terminal. (The JSON format escapes them already.)
fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{}", escape_controls(&text))
        } else {
            write!(w, "{}={}", field.name(), escape_controls(&text))
        }
    })
    .delimited(" ")
}

fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// CloudWatch metric namespace of every EMF line (the template's alarms use it).
pub const METRICS_NAMESPACE: &str = "WxpayOrders";

static FUNCTION_NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the function in the `Function` dimension of metrics; set once at start-up.
pub fn set_function_name(name: &'static str) {
    let _ = FUNCTION_NAME.set(name);
}

/// Every count the functions emit, by its CloudWatch metric name (in [`METRICS_NAMESPACE`]);
/// the template's alarms watch some of them by these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// A payment that could not be applied as is (kept as an anomaly).
    PaymentAnomaly,
    /// An order paid by someone other than its owner.
    PayerNotOwner,
    /// An order line whose product is missing from the catalog.
    ProductMissing,
    /// payment-callback: a notification refused with 401 (signature, timestamp, decryption).
    NotifyRejected,
    /// payment-callback: a verified notification refused with 400 (kept, needs a fix).
    NotifyRefused,
    /// payment-callback: answered 5xx, so WeChat Pay retries.
    NotifyFailed,
    /// payment-callback: not answered within its deadline.
    NotifyDeadlineExceeded,
    /// timeout-sweeper's summary of one run.
    SweepScanned,
    SweepPaid,
    SweepClosed,
    SweepSkipped,
    SweepFailed,
    SweepAnomalies,
    /// A refund reserved on its order (merchant-api).
    RefundRequested,
    /// A refund WeChat Pay paid back, applied to its order.
    RefundSucceeded,
    /// A refund closed or refused by WeChat Pay; its reservation released.
    RefundClosed,
    /// A refund WeChat Pay could not pay back: the merchant must act.
    RefundAbnormal,
    /// timeout-sweeper: refunds WeChat Pay still holds an hour after accepting them.
    RefundStale,
    /// Fen reserved by refund requests.
    RefundRequestedFen,
    /// Fen WeChat Pay paid back (refunds applied as SUCCESS).
    RefundedFen,
    /// event-dispatcher: events the merchant's webhook acknowledged (2xx).
    EventDelivered,
    /// event-dispatcher: attempts that failed (non-2xx, timeout, network); retried.
    EventAttemptFailed,
    /// event-dispatcher: events whose retry window (3 days) ran out undelivered.
    EventDead,
    /// event-dispatcher: age in seconds of the oldest due, undelivered event a run saw.
    EventOldestUndeliveredAge,
    /// bill-reconciler: detail rows of the day's trade bill.
    BillRows,
    /// bill-reconciler: rows the table already agreed with.
    BillMatched,
    /// bill-reconciler: rows applied by the run (a lost payment or refund recovered).
    BillRecovered,
    /// bill-reconciler: differences between the bill and the table (each an anomaly).
    BillMismatches,
    /// bill-reconciler: the previous Beijing date is still unreconciled at the day's last
    /// scheduled run (11:45 Beijing; alarmed: nobody has checked yesterday's money by noon).
    BillOverdue,
    /// merchant-api: shipments recorded (orders SHIPPED).
    OrderShipped,
    /// Shipping uploads WeChat took.
    ShippingUploaded,
    /// Shipping upload attempts WeChat could not take yet (resent by the sweeper).
    ShippingUploadRetried,
    /// Shipping uploads WeChat refused for good (each an anomaly; alarmed).
    ShippingUploadFailed,
    /// Orders WeChat settled (COMPLETED), by push or by the sweeper's query.
    OrderCompleted,
    /// mp-push: pushes refused (signature, plaintext, another appid, malformed; alarmed).
    PushRejected,
    /// mp-push: WeChat's reminders (access, unshipped orders) to the merchant.
    ShippingReminder,
    /// Shipped orders WeChat and the table disagree on (each an anomaly; alarmed).
    ShippingStateMismatch,
    /// timeout-sweeper: a settlement check found an order shipped over
    /// `UNSETTLED_ALARM_AFTER` ago still not settled at WeChat (alarmed: a dispute, a buyer
    /// who never confirms, an upload WeChat never took).
    ShippedNotSettled,
}

impl Metric {
    pub const ALL: [Metric; 38] = [
        Metric::PaymentAnomaly,
        Metric::PayerNotOwner,
        Metric::ProductMissing,
        Metric::NotifyRejected,
        Metric::NotifyRefused,
        Metric::NotifyFailed,
        Metric::NotifyDeadlineExceeded,
        Metric::SweepScanned,
        Metric::SweepPaid,
        Metric::SweepClosed,
        Metric::SweepSkipped,
        Metric::SweepFailed,
        Metric::SweepAnomalies,
        Metric::RefundRequested,
        Metric::RefundSucceeded,
        Metric::RefundClosed,
        Metric::RefundAbnormal,
        Metric::RefundStale,
        Metric::RefundRequestedFen,
        Metric::RefundedFen,
        Metric::EventDelivered,
        Metric::EventAttemptFailed,
        Metric::EventDead,
        Metric::EventOldestUndeliveredAge,
        Metric::BillRows,
        Metric::BillMatched,
        Metric::BillRecovered,
        Metric::BillMismatches,
        Metric::BillOverdue,
        Metric::OrderShipped,
        Metric::ShippingUploaded,
        Metric::ShippingUploadRetried,
        Metric::ShippingUploadFailed,
        Metric::OrderCompleted,
        Metric::PushRejected,
        Metric::ShippingReminder,
        Metric::ShippingStateMismatch,
        Metric::ShippedNotSettled,
    ];

    /// The metric's name in CloudWatch (and the key of its count in the EMF line).
    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::PaymentAnomaly => "PaymentAnomaly",
            Metric::PayerNotOwner => "PayerNotOwner",
            Metric::ProductMissing => "ProductMissing",
            Metric::NotifyRejected => "NotifyRejected",
            Metric::NotifyRefused => "NotifyRefused",
            Metric::NotifyFailed => "NotifyFailed",
            Metric::NotifyDeadlineExceeded => "NotifyDeadlineExceeded",
            Metric::SweepScanned => "SweepScanned",
            Metric::SweepPaid => "SweepPaid",
            Metric::SweepClosed => "SweepClosed",
            Metric::SweepSkipped => "SweepSkipped",
            Metric::SweepFailed => "SweepFailed",
            Metric::SweepAnomalies => "SweepAnomalies",
            Metric::RefundRequested => "RefundRequested",
            Metric::RefundSucceeded => "RefundSucceeded",
            Metric::RefundClosed => "RefundClosed",
            Metric::RefundAbnormal => "RefundAbnormal",
            Metric::RefundStale => "RefundStale",
            Metric::RefundRequestedFen => "RefundRequestedFen",
            Metric::RefundedFen => "RefundedFen",
            Metric::EventDelivered => "EventDelivered",
            Metric::EventAttemptFailed => "EventAttemptFailed",
            Metric::EventDead => "EventDead",
            Metric::EventOldestUndeliveredAge => "EventOldestUndeliveredAge",
            Metric::BillRows => "BillRows",
            Metric::BillMatched => "BillMatched",
            Metric::BillRecovered => "BillRecovered",
            Metric::BillMismatches => "BillMismatches",
            Metric::BillOverdue => "BillOverdue",
            Metric::OrderShipped => "OrderShipped",
            Metric::ShippingUploaded => "ShippingUploaded",
            Metric::ShippingUploadRetried => "ShippingUploadRetried",
            Metric::ShippingUploadFailed => "ShippingUploadFailed",
            Metric::OrderCompleted => "OrderCompleted",
            Metric::PushRejected => "PushRejected",
            Metric::ShippingReminder => "ShippingReminder",
            Metric::ShippingStateMismatch => "ShippingStateMismatch",
            Metric::ShippedNotSettled => "ShippedNotSettled",
        }
    }

    /// Its CloudWatch unit: every metric is a count but the one age.
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::EventOldestUndeliveredAge => "Seconds",
            _ => "Count",
        }
    }
}

/// One CloudWatch Embedded Metric Format line: counts with the `Function` dimension. EMF is
/// a plain JSON line on stdout that CloudWatch Logs turns into metrics, so no SDK call and no
/// latency; elsewhere (SCF, local) it is just a structured log line.
pub fn emf_line(counts: &[(Metric, u64)], at: time::OffsetDateTime) -> String {
    let function = FUNCTION_NAME.get().copied().unwrap_or("unknown");
    let mut root = serde_json::Map::new();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": (at.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": counts.iter().map(|(name, _)| serde_json::json!({"Name": name.as_str(), "Unit": name.unit()})).collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("Function".into(), function.into());
    // Also an ordinary structured log line, so log search and log-based alarms (SCF's CLS)
    // see it like every other line.
    root.insert("level".into(), "INFO".into());
    root.insert("message".into(), "metrics".into());
    for (name, value) in counts {
        root.insert(name.as_str().into(), (*value).into());
    }
    serde_json::Value::Object(root).to_string()
}

/// Writes [`emf_line`] to stdout, beside the log lines, where Lambda's log agent reads it.
pub fn emit_metrics(counts: &[(Metric, u64)], at: time::OffsetDateTime) {
    use std::io::Write;
    let line = emf_line(counts, at);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20.5: control bytes from a decrypted field reach a text log escaped.
    #[test]
    fn text_logs_escape_control_characters() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = fmt()
            .with_target(false)
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let appid = "wx\n2026-11-24T00:00:00Z  INFO forged line\u{1b}[31m\u{1}";
            tracing::info!(appid = %appid, trade_state = "SUCCESS\r", "verified {}", "x\ny");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(
            !out.trim_end_matches('\n').chars().any(char::is_control),
            "{out:?}"
        );
        assert!(out.contains(r"verified x\ny"), "{out:?}");
        assert!(
            out.contains(r"appid=wx\n2026-11-24T00:00:00Z  INFO forged line\u{1b}[31m\u{1}"),
            "{out:?}"
        );
        assert!(out.contains(r#"trade_state="SUCCESS\r""#), "{out:?}");
    }

    #[test]
    fn emf_line_declares_each_count_under_the_namespace() {
        set_function_name("timeout-sweeper");
        let at = time::macros::datetime!(2026-11-24 04:00:00 UTC);
        let v: serde_json::Value = serde_json::from_str(&emf_line(
            &[(Metric::SweepFailed, 2), (Metric::SweepPaid, 0)],
            at,
        ))
        .unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_795_492_800_000_i64);
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "WxpayOrders");
        assert_eq!(
            (v["level"].as_str(), v["message"].as_str()),
            (Some("INFO"), Some("metrics"))
        );
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

    /// Every metric an alarm of template.yaml watches in our namespace is one we emit.
    #[test]
    fn every_metric_the_template_alarms_on_is_a_variant() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
        let template = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = template.lines().collect();
        let indent = |line: &str| line.len() - line.trim_start().len();
        let value = |line: &str, key: &str| {
            line.trim()
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches(['"', '\'']).to_owned())
        };
        let mut alarmed = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = value(line, "MetricName:") else {
                continue;
            };
            // The `Namespace:` of the same mapping: same indentation, nothing shallower between.
            let depth = indent(line);
            let same_mapping = |l: &&&str| l.trim().is_empty() || indent(l) >= depth;
            let before = lines[..i].iter().rev().take_while(same_mapping);
            let after = lines[i + 1..].iter().take_while(same_mapping);
            let namespace = before
                .chain(after)
                .filter(|l| indent(l) == depth)
                .find_map(|l| value(l, "Namespace:"));
            if namespace.as_deref() == Some(METRICS_NAMESPACE) {
                alarmed.push(name);
            }
        }
        assert!(
            alarmed.iter().any(|n| n == "SweepFailed"),
            "no alarmed metric found in {path}: {alarmed:?}"
        );
        for name in &alarmed {
            assert!(
                Metric::ALL.iter().any(|m| m.as_str() == name),
                "template.yaml alarms on {name}, which is no Metric"
            );
        }
    }

    #[test]
    fn metric_names_are_distinct_and_all_listed() {
        let names: std::collections::HashSet<&str> =
            Metric::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
