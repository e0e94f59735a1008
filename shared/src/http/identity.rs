//! Who is calling: one place decides, for every function and every platform (DESIGN.md
//! section 3, Identity). The result is an `Openid` or a 401 `UNAUTHENTICATED`.

use super::{ApiError, AuthorizerClaims, Request};
use crate::{
    config::{AuthConfig, AuthMode},
    domain::Openid,
};

pub const DEBUG_OPENID_HEADER: &str = "x-debug-openid";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    pub mode: AuthMode,
    /// The authorizer claim that carries the openid (`AUTH_OPENID_CLAIM`).
    pub openid_claim: String,
    /// `ALLOW_DEBUG_IDENTITY=1`: `X-Debug-Openid` sets the caller. Local runs only.
    pub allow_debug_identity: bool,
}

impl IdentitySettings {
    pub fn from_config(c: &AuthConfig) -> Self {
        IdentitySettings {
            mode: c.mode,
            openid_claim: c.openid_claim.clone(),
            allow_debug_identity: c.allow_debug_identity,
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
        // Session tokens (POST /sessions) are verified here once the session function exists.
        AuthMode::Token => Err(unauthenticated(
            "a session token is required; this build verifies only authorizer claims \
             (AUTH_MODE=authorizer) or, locally, X-Debug-Openid",
        )),
    }
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
}
