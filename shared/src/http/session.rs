//! The session function at the edge (DESIGN.md section 3, session): `POST /sessions`
//! exchanges a `wx.login()` code for a session token, and the two discovery documents let
//! anyone (an API Gateway JWT authorizer included) verify those tokens.
//!
//! | route | answer |
//! |---|---|
//! | `POST /sessions` `{"code": "..."}` | `200 {"token", "expires_at", "openid"}`, `cache-control: no-store` |
//! | `GET /.well-known/openid-configuration` | `200` OpenID Provider metadata |
//! | `GET /.well-known/jwks.json` | `200` every published key |
//!
//! Errors: 400 `INVALID_REQUEST` (body), 401 `INVALID_CODE` (40029/40163), 429
//! `RATE_LIMITED` (45011), 403 `RISKY_USER` (40226), 502 `WECHAT_UNAVAILABLE` (any other
//! errcode, or WeChat unreachable). Logs carry `outcome`; never the code or `session_key`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Handler, Request, Response, json, response};
use crate::session::{
    JWKS_PATH, LoginCode, LoginError, OPENID_CONFIGURATION_PATH, PublicKey, TokenSigner, WxLogin,
    jwks, openid_configuration,
};
use crate::timefmt::to_wechat;

const FUNCTION: &str = "session";
/// The discovery documents change only with a deployment; API Gateway caches keys for up to
/// two hours anyway.
const DISCOVERY_CACHE_CONTROL: &str = "public, max-age=300";

pub struct SessionHandler {
    login: Arc<dyn WxLogin>,
    signer: TokenSigner,
    jwks: Bytes,
    openid_configuration: Bytes,
}

impl SessionHandler {
    /// `published`: every key of the JWKS (the signer's first, then retired ones).
    pub fn new(
        login: Arc<dyn WxLogin>,
        signer: TokenSigner,
        published: &[PublicKey],
        issuer: &str,
    ) -> Self {
        SessionHandler {
            login,
            signer,
            jwks: Bytes::from(jwks(published).to_string()),
            openid_configuration: Bytes::from(openid_configuration(issuer).to_string()),
        }
    }

    async fn create(&self, request: &Request) -> Result<Response, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            code: String,
        }
        // serde's messages may quote the body: say what is expected instead.
        let body: Body = serde_json::from_slice(request.body()).map_err(|_| {
            ApiError::new(
                400,
                "INVALID_REQUEST",
                r#"the body must be JSON {"code": "<the code from wx.login()>"}"#,
            )
        })?;
        let code = LoginCode::parse(&body.code)
            .map_err(|problem| ApiError::new(400, "INVALID_REQUEST", problem))?;
        let openid = self.login.jscode2session(&code).await?;
        let issued = self.signer.issue(&openid, time::OffsetDateTime::now_utc());
        let expires_at = to_wechat(issued.expires_at);
        tracing::info!(
            function = FUNCTION,
            outcome = "issued",
            openid = %openid,
            kid = self.signer.kid(),
            expires_at = %expires_at,
            "session token issued"
        );
        let mut r = json(
            200,
            &json!({"token": issued.token, "expires_at": expires_at, "openid": openid}),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        Ok(r)
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> ApiError {
        let message = e.to_string();
        match e {
            LoginError::InvalidCode { .. } => ApiError::new(
                401,
                "INVALID_CODE",
                format!("{message}; call wx.login() for a new code"),
            ),
            LoginError::RateLimited => {
                ApiError::new(429, "RATE_LIMITED", message).with_header("retry-after", "60")
            }
            LoginError::RiskyUser => ApiError::new(403, "RISKY_USER", message),
            LoginError::Refused { .. } | LoginError::Unavailable(_) => {
                ApiError::new(502, "WECHAT_UNAVAILABLE", message)
            }
        }
    }
}

fn document(body: &Bytes) -> Response {
    let mut r = response(200, body.clone(), Some("application/json"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(DISCOVERY_CACHE_CONTROL),
    );
    r
}

#[async_trait]
impl Handler for SessionHandler {
    async fn handle(&self, request: Request) -> Response {
        let path = request.uri().path().trim_end_matches('/');
        let method = request.method();
        let get = method == http::Method::GET || method == http::Method::HEAD;
        match path {
            "/sessions" if method == http::Method::POST => match self.create(&request).await {
                Ok(r) => r,
                Err(e) => e.logged(FUNCTION),
            },
            JWKS_PATH if get => document(&self.jwks),
            OPENID_CONFIGURATION_PATH if get => document(&self.openid_configuration),
            "/sessions" | JWKS_PATH | OPENID_CONFIGURATION_PATH => {
                ApiError::method_not_allowed().into_response()
            }
            _ => ApiError::not_found().into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Openid;
    use crate::session::{SigningKey, TokenVerifier};

    const ISS: &str = "https://api.example.com";
    const AUD: &str = "wxapp";

    /// Answers by code, like the sandbox's simulator.
    struct FakeLogin;

    #[async_trait]
    impl WxLogin for FakeLogin {
        async fn jscode2session(&self, code: &LoginCode) -> Result<Openid, LoginError> {
            match code.as_str() {
                "bad" => Err(LoginError::InvalidCode { errcode: 40029 }),
                "busy" => Err(LoginError::RateLimited),
                "risky" => Err(LoginError::RiskyUser),
                "other" => Err(LoginError::Refused {
                    errcode: 40013,
                    errmsg: "invalid appid".into(),
                }),
                "down" => Err(LoginError::Unavailable("timed out".into())),
                c => Ok(Openid::parse(&format!("o_{c}")).unwrap()),
            }
        }
    }

    fn handler(old: Option<&SigningKey>) -> (SessionHandler, SigningKey) {
        let key = SigningKey::generate();
        let mut published = vec![key.public_key().clone()];
        published.extend(old.map(|k| k.public_key().clone()));
        let signer = TokenSigner::new(key.clone(), ISS, AUD, std::time::Duration::from_secs(7200));
        (
            SessionHandler::new(Arc::new(FakeLogin), signer, &published, ISS),
            key,
        )
    }

    fn request(method: &str, path: &str, body: &str) -> Request {
        http::Request::builder()
            .method(method)
            .uri(path)
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    fn body(r: &Response) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap()
    }

    #[tokio::test]
    async fn a_code_gets_a_token_that_verifies() {
        let (h, key) = handler(None);
        let r = h
            .handle(request("POST", "/sessions", r#"{"code":"alice"}"#))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let b = body(&r);
        assert_eq!(b["openid"], "o_alice");
        assert_eq!(b.as_object().unwrap().len(), 3, "{b}");
        let expires_at = crate::timefmt::parse_rfc3339(b["expires_at"].as_str().unwrap()).unwrap();
        let left = expires_at - time::OffsetDateTime::now_utc();
        assert!(left > time::Duration::seconds(7100) && left <= time::Duration::seconds(7200));
        let v = TokenVerifier::new([key.public_key().clone()], ISS, AUD);
        assert_eq!(
            v.verify(b["token"].as_str().unwrap()).unwrap().as_str(),
            "o_alice"
        );
    }

    #[tokio::test]
    async fn login_errors_and_bad_bodies_have_their_codes() {
        let (h, _) = handler(None);
        for (code, status, api_code) in [
            ("bad", 401, "INVALID_CODE"),
            ("busy", 429, "RATE_LIMITED"),
            ("risky", 403, "RISKY_USER"),
            ("other", 502, "WECHAT_UNAVAILABLE"),
            ("down", 502, "WECHAT_UNAVAILABLE"),
        ] {
            let r = h
                .handle(request(
                    "POST",
                    "/sessions",
                    &json!({ "code": code }).to_string(),
                ))
                .await;
            assert_eq!(r.status(), status, "{code}");
            assert_eq!(body(&r)["code"], api_code, "{code}");
        }
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"code":5}"#,
            r#"{"code":""}"#,
            r#"{"code":"a b"}"#,
        ] {
            let r = h.handle(request("POST", "/sessions", bad)).await;
            assert_eq!(r.status(), 400, "{bad}");
            assert_eq!(body(&r)["code"], "INVALID_REQUEST", "{bad}");
        }
    }

    #[tokio::test]
    async fn discovery_documents_publish_every_key() {
        let old = SigningKey::generate();
        let (h, key) = handler(Some(&old));
        let r = h.handle(request("GET", "/.well-known/jwks.json", "")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], DISCOVERY_CACHE_CONTROL);
        let kids: Vec<_> = body(&r)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, [key.kid(), old.kid()]);
        let r = h
            .handle(request("GET", "/.well-known/openid-configuration", ""))
            .await;
        assert_eq!(body(&r)["jwks_uri"], format!("{ISS}/.well-known/jwks.json"));
        assert_eq!(
            h.handle(request("GET", "/sessions", "")).await.status(),
            405
        );
        assert_eq!(
            h.handle(request("POST", "/.well-known/jwks.json", ""))
                .await
                .status(),
            405
        );
        assert_eq!(h.handle(request("GET", "/nope", "")).await.status(), 404);
    }
}
