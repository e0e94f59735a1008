//! Who is calling: one place decides, for every function and every platform (DESIGN.md
//! section 3, Identity). The result is an `Openid` or a 401 `UNAUTHENTICATED`.
//!
//! - `AUTH_MODE=token`: `Authorization: Bearer <session token>`, verified here
//!   ([`TokenVerifier`]: ES256 by a `SESSION_PUBLIC_KEYS` key, `iss`, `aud`, `exp`).
//! - `AUTH_MODE=authorizer`: the API Gateway authorizer's `AUTH_OPENID_CLAIM` claim.
//! - `ALLOW_DEBUG_IDENTITY=1` (local only): `X-Debug-Openid`, which wins when present.

use std::sync::Arc;

use super::{ApiError, AuthorizerClaims, Request};
use crate::{
    config::{AuthConfig, AuthMode},
    domain::Openid,
    session::TokenVerifier,
};

pub const DEBUG_OPENID_HEADER: &str = "x-debug-openid";

#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub mode: AuthMode,
    /// The authorizer claim that carries the openid (`AUTH_OPENID_CLAIM`).
    pub openid_claim: String,
    /// `ALLOW_DEBUG_IDENTITY=1`: `X-Debug-Openid` sets the caller. Local runs only.
    pub allow_debug_identity: bool,
    /// Token mode's verifier; `None` only in a local run with debug identity and no keys,
    /// where every bearer token is refused.
    pub verifier: Option<Arc<TokenVerifier>>,
}

impl IdentitySettings {
    /// Infallible: `AuthConfig::from_env` already parsed and checked the keys, issuer and
    /// audience, naming the variable when one was wrong.
    pub fn from_config(c: &AuthConfig) -> Self {
        let verifier = match (&c.session_issuer, &c.session_audience) {
            (Some(issuer), Some(audience))
                if c.mode == AuthMode::Token && !c.session_public_keys.is_empty() =>
            {
                Some(Arc::new(TokenVerifier::new(
                    c.session_public_keys.iter().cloned(),
                    issuer.clone(),
                    audience.clone(),
                )))
            }
            _ => None,
        };
        IdentitySettings {
            mode: c.mode,
            openid_claim: c.openid_claim.clone(),
            allow_debug_identity: c.allow_debug_identity,
            verifier,
        }
    }
}

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(401, "UNAUTHENTICATED", message)
}

/// The caller's openid, or why there is none.
pub fn caller(request: &Request, settings: &IdentitySettings) -> Result<Openid, ApiError> {
    if settings.allow_debug_identity
        && let Some(v) = request.headers().get(DEBUG_OPENID_HEADER)
    {
        let s = v
            .to_str()
            .map_err(|_| unauthenticated("X-Debug-Openid is not text"))?;
        return Openid::parse(s).map_err(|e| unauthenticated(format!("X-Debug-Openid: {e}")));
    }
    match settings.mode {
        AuthMode::Authorizer => {
            let claims = request.extensions().get::<AuthorizerClaims>();
            let value = claims
                .and_then(|c| c.0.get(&settings.openid_claim))
                .ok_or_else(|| {
                    unauthenticated(format!(
                        "no `{}` claim from the API Gateway authorizer",
                        settings.openid_claim
                    ))
                })?;
            Openid::parse(value).map_err(|e| unauthenticated(format!("authorizer claim: {e}")))
        }
        AuthMode::Token => {
            let token = bearer_token(request)?;
            let verifier = settings.verifier.as_ref().ok_or_else(|| {
                unauthenticated(
                    "session tokens are not accepted here: no SESSION_PUBLIC_KEYS configured \
                     (use X-Debug-Openid locally)",
                )
            })?;
            verifier
                .verify(token)
                .map_err(|e| unauthenticated(format!("{e}")))
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
fn bearer_token(request: &Request) -> Result<&str, ApiError> {
    let missing = || {
        unauthenticated(
            "Authorization: Bearer <session token> is required; log in with POST /sessions",
        )
    };
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not text"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn settings(mode: AuthMode, debug: bool) -> IdentitySettings {
        IdentitySettings {
            mode,
            openid_claim: "openid".into(),
            allow_debug_identity: debug,
            verifier: None,
        }
    }

    fn request(debug: Option<&str>, claims: &[(&str, &str)]) -> Request {
        let mut r = http::Request::builder().uri("/orders");
        if let Some(d) = debug {
            r = r.header("X-Debug-Openid", d);
        }
        let mut r = r.body(Bytes::new()).unwrap();
        if !claims.is_empty() {
            r.extensions_mut().insert(AuthorizerClaims(
                claims
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ));
        }
        r
    }

    #[test]
    fn debug_header_only_when_allowed() {
        let r = request(Some("o_alice"), &[]);
        assert_eq!(
            caller(&r, &settings(AuthMode::Authorizer, true))
                .unwrap()
                .as_str(),
            "o_alice"
        );
        let e = caller(&r, &settings(AuthMode::Authorizer, false)).unwrap_err();
        assert_eq!((e.status, e.code), (401, "UNAUTHENTICATED"));
        let e = caller(
            &request(Some("bad id!"), &[]),
            &settings(AuthMode::Token, true),
        )
        .unwrap_err();
        assert_eq!(e.status, 401);
    }

    #[test]
    fn authorizer_claim_names_the_caller() {
        let s = settings(AuthMode::Authorizer, false);
        let r = request(
            None,
            &[("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"), ("sub", "x")],
        );
        assert_eq!(
            caller(&r, &s).unwrap().as_str(),
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
        );
        let r = request(None, &[("sub", "x")]);
        assert!(caller(&r, &s).unwrap_err().message.contains("openid"));
        let custom = IdentitySettings {
            openid_claim: "custom:openid".into(),
            ..s
        };
        let r = request(None, &[("custom:openid", "o_1")]);
        assert_eq!(caller(&r, &custom).unwrap().as_str(), "o_1");
    }

    #[test]
    fn no_identity_is_401() {
        let e = caller(&request(None, &[]), &settings(AuthMode::Token, false)).unwrap_err();
        assert_eq!((e.status, e.code), (401, "UNAUTHENTICATED"));
    }

    fn with_authorization(value: &str) -> Request {
        let mut r = request(None, &[]);
        r.headers_mut()
            .insert("authorization", http::HeaderValue::from_str(value).unwrap());
        r
    }

    #[test]
    fn token_mode_verifies_the_bearer_token() {
        use crate::session::{SigningKey, TokenSigner};
        let key = SigningKey::generate();
        let config = AuthConfig {
            mode: AuthMode::Token,
            openid_claim: "openid".into(),
            session_issuer: Some("https://api.example.com".into()),
            session_public_keys: vec![key.public_key().clone()],
            session_audience: Some("wxapp".into()),
            session_ttl: std::time::Duration::from_secs(7200),
            allow_debug_identity: false,
        };
        let s = IdentitySettings::from_config(&config);
        let signer = TokenSigner::new(
            key,
            "https://api.example.com",
            "wxapp",
            std::time::Duration::from_secs(60),
        );
        let token = signer
            .issue(
                &Openid::parse("o_tok").unwrap(),
                time::OffsetDateTime::now_utc(),
            )
            .token;
        for header in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("  BEARER   {token} "),
        ] {
            let openid = caller(&with_authorization(&header), &s).unwrap();
            assert_eq!(openid.as_str(), "o_tok", "{header}");
        }
        for header in [
            token.clone(),
            format!("Basic {token}"),
            "Bearer ".to_owned(),
            "Bearer garbage".to_owned(),
        ] {
            let e = caller(&with_authorization(&header), &s).unwrap_err();
            assert_eq!((e.status, e.code), (401, "UNAUTHENTICATED"), "{header}");
            assert!(!e.message.contains(&token), "{}", e.message);
        }
        // Authorizer claims mean nothing in token mode.
        let e = caller(&request(None, &[("openid", "o_claim")]), &s).unwrap_err();
        assert!(e.message.contains("Bearer"), "{}", e.message);
        // Debug identity without keys: the header works, tokens are refused.
        let debug_only = IdentitySettings::from_config(&AuthConfig {
            session_public_keys: vec![],
            allow_debug_identity: true,
            ..config
        });
        assert!(debug_only.verifier.is_none());
        let e = caller(&with_authorization(&format!("Bearer {token}")), &debug_only).unwrap_err();
        assert!(e.message.contains("SESSION_PUBLIC_KEYS"), "{}", e.message);
    }
}
