//! WeChat's mini-program login, simulated: `GET /sns/jscode2session` (not WeChat Pay's API,
//! so not signed like it). It checks the AppID and AppSecret as WeChat does and answers 200
//! with `text/plain` JSON, errors included. Any code `c` logs in as [`openid_for`]`(c)`;
//! a few reserved codes answer WeChat's errors so the session function's paths can be tried.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http::{StatusCode, header};
use serde_json::json;

use super::{Endpoint, Shared};

/// Reserved codes and WeChat's answer to each: `(code, errcode, errmsg)`.
pub const RESERVED_CODES: [(&str, i64, &str); 5] = [
    ("invalid-code", 40029, "invalid code"),
    ("used-code", 40163, "code been used"),
    ("rate-limited", 45011, "api minute-quota reach limit"),
    ("risky", 40226, "high risk user"),
    ("busy", -1, "system error"),
];

/// The openid a code logs in as: `o_` + the first 16 hex digits of SHA-256 of the code, so
/// the same code is the same user across runs (`alice` is always the same openid).
pub fn openid_for(code: &str) -> String {
    format!(
        "o_{}",
        &shared::wechatpay::sha256_hex(code.as_bytes())[..16]
    )
}

/// The `session_key` the simulator answers for a code: distinctive, so tests can prove it
/// never leaves the session function.
pub fn session_key_for(code: &str) -> String {
    let digest = shared::wechatpay::sha256_hex(format!("session_key/{code}").as_bytes());
    format!("SANDBOXSK{}", &digest[..22])
}

pub(super) const ROUTES: &[Endpoint] = &[Endpoint {
    method: "GET",
    path: "/sns/jscode2session",
    what: "WeChat login (any js_code)",
    handler: |m| on(m, jscode2session),
}];

pub(super) fn routes() -> Router<Arc<Shared>> {
    Endpoint::register(Router::new(), ROUTES)
}

/// WeChat labels these answers `text/plain`, whatever they hold.
pub(super) fn answer(body: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn error(errcode: i64, errmsg: &str) -> Response {
    answer(json!({"errcode": errcode, "errmsg": format!("{errmsg}, rid: sandbox")}))
}

async fn jscode2session(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    if param("appid") != s.config.appid {
        return error(40013, "invalid appid");
    }
    if param("secret") != s.config.app_secret {
        return error(40125, "invalid appsecret");
    }
    if param("grant_type") != "authorization_code" {
        return error(40002, "invalid grant_type");
    }
    let code = param("js_code");
    if code.is_empty() {
        return error(41008, "missing code");
    }
    if let Some((_, errcode, errmsg)) = RESERVED_CODES.iter().find(|(c, ..)| *c == code) {
        tracing::info!(errcode, "jscode2session: reserved code answered its error");
        return error(*errcode, errmsg);
    }
    answer(json!({"session_key": session_key_for(code), "openid": openid_for(code)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_always_the_same_user() {
        // sha256("alice") = 2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
        assert_eq!(openid_for("alice"), "o_2bd806c97f0e00af");
        assert_ne!(openid_for("bob"), openid_for("alice"));
        assert!(shared::domain::Openid::parse(&openid_for("any code at all")).is_ok());
        assert_ne!(session_key_for("alice"), session_key_for("bob"));
        assert!(!session_key_for("alice").contains("alice"));
    }
}
