//! What the deployment-config suites (`template.rs`, `tencent_config.rs`) share: the repo root,
//! YAML lookups, and DESIGN.md section 3's routes with the function serving each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `key` of a mapping (`Value::Null` when absent or not a mapping).
pub fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    v.as_mapping().and_then(|m| m.get(key)).unwrap_or(&NULL)
}

pub fn path<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(v, |v, k| at(v, k))
}

/// Every function of the project, by binary name (`shared::app::Function::ALL`).
pub fn function_names() -> BTreeSet<&'static str> {
    shared::app::Function::ALL
        .iter()
        .map(|f| f.name())
        .collect()
}

/// The functions no route reaches: scheduled jobs, which both clouds run every minute (the
/// bill-reconciler: on the mornings' schedule, [`DAILY_FUNCTIONS`]).
pub fn scheduled_functions() -> BTreeSet<&'static str> {
    let routed: BTreeSet<String> = design_routes().into_values().collect();
    function_names()
        .into_iter()
        .filter(|f| !routed.contains(*f))
        .collect()
}

/// Scheduled jobs that run daily, not every minute: the bill-reconciler (DESIGN 11).
pub const DAILY_FUNCTIONS: [&str; 1] = ["bill-reconciler"];

/// Variables whose values are secrets: shared::secrets's, and the webhook's signing secret
/// (DESIGN.md section 2), which no template or config may set either.
pub fn secret_variables() -> BTreeSet<String> {
    shared::secrets::SECRET_VARIABLES
        .iter()
        .copied()
        .chain(["WEBHOOK_SECRET"])
        .flat_map(|v| [v.to_owned(), format!("{v}_FILE")])
        .collect()
}

/// Route key (`METHOD /path`) -> the function (`functions/<name>`) that serves it.
pub fn design_routes() -> BTreeMap<String, String> {
    [
        ("POST /sessions", "session"),
        ("GET /.well-known/openid-configuration", "session"),
        ("GET /.well-known/jwks.json", "session"),
        ("POST /orders", "place-order"),
        ("GET /orders", "query-order"),
        ("GET /orders/{out_trade_no}", "query-order"),
        ("POST /orders/{out_trade_no}/close", "query-order"),
        ("POST /notify/wechatpay", "payment-callback"),
        ("GET /merchant/orders", "merchant-api"),
        ("GET /merchant/orders/{out_trade_no}", "merchant-api"),
        (
            "POST /merchant/orders/{out_trade_no}/refunds",
            "merchant-api",
        ),
        ("POST /merchant/orders/{out_trade_no}/close", "merchant-api"),
        (
            "POST /merchant/orders/{out_trade_no}/shipments",
            "merchant-api",
        ),
        ("GET /notify/wechat-mp", "mp-push"),
        ("POST /notify/wechat-mp", "mp-push"),
        ("GET /merchant/refunds/{out_refund_no}", "merchant-api"),
        ("GET /merchant/anomalies", "merchant-api"),
        (
            "POST /merchant/refunds/{out_refund_no}/abnormal-refund",
            "merchant-api",
        ),
        ("POST /merchant/events/{event_id}/redeliver", "merchant-api"),
        ("POST /merchant/bills/{date}/reconcile", "merchant-api"),
        ("GET /merchant/bills/{date}", "merchant-api"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
