//! Session tokens: compact JWS (JWT) signed `ES256`, issued by the session function and
//! verified by every other function in `AUTH_MODE=token`.
//!
//! Verification trusts nothing in the token before its signature checks out with a key
//! named by its `kid`: the algorithm must be exactly `ES256` (so `none`, `HS256` made with
//! our public key as the secret, RS256 and the rest are refused before any key is touched),
//! and the key comes from our configured list, never from the token.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::keys::{PublicKey, SigningKey};
use crate::domain::{IdError, Openid};
use crate::wechatpay::crypto;

/// Clock skew tolerated on `exp`, `nbf` and `iat` (DESIGN.md section 3: "small leeway").
pub const LEEWAY_SECONDS: i64 = 60;
/// Our tokens are about 400 bytes; anything much longer is not one of them.
pub const MAX_TOKEN_LEN: usize = 4096;
/// The only algorithm issued and accepted.
pub const ALGORITHM: &str = "ES256";

/// Why a token was refused. Messages never include the token or any part of it beyond a
/// sanitised algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token algorithm {0:?} is not accepted (ES256 only)")]
    Algorithm(String),
    #[error("token header has no kid")]
    MissingKid,
    #[error("token is signed by an unknown key (its kid is not a configured session key)")]
    UnknownKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token issuer (iss) is not the configured SESSION_ISSUER")]
    WrongIssuer,
    #[error("token audience (aud) is not this mini-program's AppID")]
    WrongAudience,
    #[error("token expired; log in again")]
    Expired,
    #[error("token is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("token has no exp")]
    MissingExpiry,
    #[error("token subject (sub) is not an openid: {0}")]
    InvalidSubject(IdError),
}

/// The claims we issue (RFC 7519 registered names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    /// The caller's openid.
    pub sub: String,
    /// The mini-program's AppID.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

/// A freshly issued token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// Signs session tokens with one key (the first of `SESSION_SIGNING_KEY`).
#[derive(Debug, Clone)]
pub struct TokenSigner {
    key: SigningKey,
    issuer: String,
    audience: String,
    ttl: time::Duration,
}

impl TokenSigner {
    pub fn new(
        key: SigningKey,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        ttl: std::time::Duration,
    ) -> Self {
        TokenSigner {
            key,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl: time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        }
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// A token for `openid`, valid from `now` for the configured lifetime.
    pub fn issue(&self, openid: &Openid, now: OffsetDateTime) -> IssuedToken {
        let iat = now.unix_timestamp();
        let expires_at = now.replace_nanosecond(0).unwrap_or(now) + self.ttl;
        let token = self.sign_claims(&Claims {
            iss: self.issuer.clone(),
            sub: openid.to_string(),
            aud: self.audience.clone(),
            iat,
            exp: expires_at.unix_timestamp(),
            nbf: None,
        });
        IssuedToken { token, expires_at }
    }

    /// Any claims set, signed `ES256` under this key's `kid` (tests use it to build tokens
    /// that are correctly signed but wrong in one claim).
    pub fn sign_claims(&self, claims: &impl Serialize) -> String {
        let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.key.kid()});
        let signing_input = format!(
            "{}.{}",
            b64_json(&header),
            b64_json(&serde_json::to_value(claims).unwrap_or(Value::Null))
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What a verified token's payload may hold; unknown claims are ignored.
#[derive(Deserialize)]
struct ReceivedClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
}

/// Verifies session tokens: `ES256` by a configured key (by `kid`), `iss` and `aud` exact,
/// `exp` / `nbf` / `iat` within [`LEEWAY_SECONDS`], `sub` an openid.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, PublicKey>,
    issuer: String,
    audience: String,
}

impl TokenVerifier {
    pub fn new(
        keys: impl IntoIterator<Item = PublicKey>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        TokenVerifier {
            keys: keys.into_iter().map(|k| (k.kid().to_owned(), k)).collect(),
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// The `kid`s this verifier trusts, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// The caller's openid, now.
    pub fn verify(&self, token: &str) -> Result<Openid, TokenError> {
        self.verify_at(token, OffsetDateTime::now_utc().unix_timestamp())
    }

    /// The caller's openid at `now` (Unix seconds).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Openid, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not three dot-separated parts (a compact JWS)",
            ));
        };
        let header: Header = json_object(&decode(header_b64, "header")?).ok_or(
            TokenError::Malformed("header is not a JSON object with alg"),
        )?;
        if header.alg != ALGORITHM {
            return Err(TokenError::Algorithm(sanitise(&header.alg)));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed("critical header extensions (crit)"));
        }
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(TokenError::Malformed("typ is not JWT"));
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let signature = decode(signature_b64, "signature")?;
        if signature.len() != crypto::ES256_SIGNATURE_LEN {
            return Err(TokenError::BadSignature);
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        if !crypto::es256_verify(key.point(), signing_input.as_bytes(), &signature) {
            return Err(TokenError::BadSignature);
        }

        // Signed by us: now the claims.
        let claims: ReceivedClaims = json_object(&decode(payload_b64, "payload")?).ok_or(
            TokenError::Malformed("payload is not a JSON object of claims"),
        )?;
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let audience_ok = match &claims.aud {
            Some(Audience::One(a)) => *a == self.audience,
            Some(Audience::Many(list)) => list.contains(&self.audience),
            None => false,
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        // Compared in f64: a NumericDate may be fractional, and huge values must not wrap.
        let now = now as f64;
        let leeway = LEEWAY_SECONDS as f64;
        if now > exp + leeway {
            return Err(TokenError::Expired);
        }
        let in_future = |t: Option<f64>| t.is_some_and(|t| t > now + leeway);
        if in_future(claims.nbf) || in_future(claims.iat) {
            return Err(TokenError::NotYetValid);
        }
        Openid::parse(claims.sub.as_deref().unwrap_or_default()).map_err(TokenError::InvalidSubject)
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &self.kids())
            .finish()
    }
}

/// A JSON object (not an array, which serde would map onto a struct by position) as `T`.
fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let object: serde_json::Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    T::deserialize(Value::Object(object)).ok()
}

/// Base64url without padding, as JWS requires (padding, `+`, `/` are refused).
fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        TokenError::Malformed(match what {
            "header" => "header is not base64url",
            "payload" => "payload is not base64url",
            _ => "signature is not base64url",
        })
    })
}

/// An attacker-chosen algorithm name, safe to log: at most 16 characters of `[A-Za-z0-9]`.
fn sanitise(alg: &str) -> String {
    alg.chars()
        .take(16)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '?' })
        .collect()
}

/// The OpenID Provider metadata an API Gateway JWT authorizer (or any OIDC client) reads at
/// `{issuer}/.well-known/openid-configuration`.
pub fn openid_configuration(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{}", super::JWKS_PATH),
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["iss", "sub", "aud", "iat", "exp"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://api.example.com";
    const AUD: &str = "wxd678efh567hg6787";
    const NOW: i64 = 1_800_000_000;

    fn openid() -> Openid {
        Openid::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap()
    }

    fn signer(key: &SigningKey) -> TokenSigner {
        TokenSigner::new(key.clone(), ISS, AUD, std::time::Duration::from_secs(7200))
    }

    fn verifier(keys: &[&SigningKey]) -> TokenVerifier {
        TokenVerifier::new(keys.iter().map(|k| k.public_key().clone()), ISS, AUD)
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            iss: ISS.into(),
            sub: openid().to_string(),
            aud: AUD.into(),
            iat,
            exp,
            nbf: None,
        }
    }

    fn b64(value: &Value) -> String {
        b64_json(value)
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn issued_tokens_verify_and_carry_the_documented_header_and_claims() {
        let key = SigningKey::generate();
        let issued = signer(&key).issue(&openid(), at(NOW));
        assert_eq!(issued.expires_at, at(NOW + 7200));
        assert_eq!(
            verifier(&[&key]).verify_at(&issued.token, NOW).unwrap(),
            openid()
        );
        let p = parts(&issued.token);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()})
        );
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&p[1]).unwrap()).unwrap();
        assert_eq!(
            payload,
            json!({"iss": ISS, "sub": openid().as_str(), "aud": AUD, "iat": NOW, "exp": NOW + 7200})
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&p[2]).unwrap().len(), 64);
    }

    #[test]
    fn expiry_has_sixty_seconds_of_leeway_and_no_more() {
        let key = SigningKey::generate();
        let token = signer(&key).sign_claims(&claims(NOW - 7200, NOW));
        let v = verifier(&[&key]);
        assert!(v.verify_at(&token, NOW + 30).is_ok(), "within leeway");
        assert!(v.verify_at(&token, NOW + 60).is_ok(), "at the edge");
        assert_eq!(v.verify_at(&token, NOW + 61), Err(TokenError::Expired));
        assert_eq!(v.verify_at(&token, NOW + 86_400), Err(TokenError::Expired));
        let mut no_exp = serde_json::to_value(claims(NOW, NOW)).unwrap();
        no_exp.as_object_mut().unwrap().remove("exp");
        let token = signer(&key).sign_claims(&no_exp);
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::MissingExpiry));
    }

    #[test]
    fn not_before_and_issued_in_the_future_are_refused_beyond_leeway() {
        let key = SigningKey::generate();
        let v = verifier(&[&key]);
        let s = signer(&key);
        let nbf = |nbf| {
            s.sign_claims(&Claims {
                nbf: Some(nbf),
                ..claims(NOW, NOW + 3600)
            })
        };
        assert!(v.verify_at(&nbf(NOW + 30), NOW).is_ok());
        assert_eq!(
            v.verify_at(&nbf(NOW + 120), NOW),
            Err(TokenError::NotYetValid)
        );
        let iat_future = s.sign_claims(&claims(NOW + 600, NOW + 3600));
        assert_eq!(v.verify_at(&iat_future, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn another_key_an_unknown_kid_and_a_tampered_token_are_refused() {
        let ours = SigningKey::generate();
        let theirs = SigningKey::generate();
        let v = verifier(&[&ours]);
        // Their key under their kid: unknown.
        let token = signer(&theirs).issue(&openid(), at(NOW)).token;
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::UnknownKey));
        // Their signature under our kid: does not verify.
        let p = parts(&token);
        let header = b64(&json!({"alg": "ES256", "typ": "JWT", "kid": ours.kid()}));
        let forged_input = format!("{header}.{}", p[1]);
        let forged = format!(
            "{forged_input}.{}",
            URL_SAFE_NO_PAD.encode(theirs.sign(forged_input.as_bytes()))
        );
        assert_eq!(v.verify_at(&forged, NOW), Err(TokenError::BadSignature));
        // Our token with the payload swapped for another user's.
        let good = parts(&signer(&ours).issue(&openid(), at(NOW)).token);
        let other =
            b64(&json!({"iss": ISS, "sub": "o_mallory", "aud": AUD, "iat": NOW, "exp": NOW + 60}));
        let tampered = format!("{}.{other}.{}", good[0], good[2]);
        assert_eq!(v.verify_at(&tampered, NOW), Err(TokenError::BadSignature));
        // No kid at all.
        let no_kid = b64(&json!({"alg": "ES256", "typ": "JWT"}));
        let token = format!("{no_kid}.{}.{}", good[1], good[2]);
        assert_eq!(v.verify_at(&token, NOW), Err(TokenError::MissingKid));
    }

    #[test]
    fn alg_none_hs256_with_the_public_key_and_other_algorithms_are_refused() {
        let key = SigningKey::generate();
        let v = verifier(&[&key]);
        let payload = b64(&serde_json::to_value(claims(NOW, NOW + 3600)).unwrap());
        for alg in [
            "none", "None", "HS256", "RS256", "ES384", "PS256", "es256", "",
        ] {
            let header = b64(&json!({"alg": alg, "typ": "JWT", "kid": key.kid()}));
            let token = format!("{header}.{payload}.");
            assert!(
                matches!(v.verify_at(&token, NOW), Err(TokenError::Algorithm(_))),
                "{alg}"
            );
        }
        // The classic confusion attack: HS256 keyed with bytes the attacker can fetch.
        let public = key.public_key();
        let secrets = [
            public.to_spki_pem().into_bytes(),
            public.to_spki_der(),
            public.jwk().to_string().into_bytes(),
            public.point().to_vec(),
        ];
        for secret in secrets {
            let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": key.kid()}));
            let input = format!("{header}.{payload}");
            let mac = crypto::hmac_sha256(&secret, input.as_bytes());
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac));
            assert_eq!(
                v.verify_at(&token, NOW),
                Err(TokenError::Algorithm("HS256".into()))
            );
        }
        // A non-string alg or no alg at all.
        for header in [json!({"alg": 256}), json!({"typ": "JWT"})] {
            let token = format!("{}.{payload}.AAAA", b64(&header));
            assert!(matches!(
                v.verify_at(&token, NOW),
                Err(TokenError::Malformed(_))
            ));
        }
    }

    #[test]
    fn wrong_issuer_audience_and_subject_are_refused() {
        let key = SigningKey::generate();
        let v = verifier(&[&key]);
        let s = signer(&key);
        let wrong_iss = s.sign_claims(&Claims {
            iss: "https://evil.example.com".into(),
            ..claims(NOW, NOW + 60)
        });
        assert_eq!(v.verify_at(&wrong_iss, NOW), Err(TokenError::WrongIssuer));
        let trailing_slash = s.sign_claims(&Claims {
            iss: format!("{ISS}/"),
            ..claims(NOW, NOW + 60)
        });
        assert_eq!(
            v.verify_at(&trailing_slash, NOW),
            Err(TokenError::WrongIssuer),
            "exact match"
        );
        let wrong_aud = s.sign_claims(&Claims {
            aud: "wxotherapp000000001".into(),
            ..claims(NOW, NOW + 60)
        });
        assert_eq!(v.verify_at(&wrong_aud, NOW), Err(TokenError::WrongAudience));
        let aud_list =
            s.sign_claims(&json!({"iss": ISS, "sub": "o_1", "aud": ["x", AUD], "exp": NOW + 60}));
        assert_eq!(v.verify_at(&aud_list, NOW).unwrap().as_str(), "o_1");
        let bad_sub = s.sign_claims(&Claims {
            sub: "not an openid!".into(),
            ..claims(NOW, NOW + 60)
        });
        assert!(matches!(
            v.verify_at(&bad_sub, NOW),
            Err(TokenError::InvalidSubject(_))
        ));
    }

    #[test]
    fn garbage_is_malformed_and_never_echoed() {
        let key = SigningKey::generate();
        let v = verifier(&[&key]);
        let good = parts(&signer(&key).issue(&openid(), at(NOW)).token);
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let padded = format!("{}=.{}.{}", good[0], good[1], good[2]);
        let std_alphabet = format!("{}.{}.{}+/", good[0], good[1], good[2]);
        let cases = [
            "",
            "garbage",
            "a.b",
            "a.b.c.d",
            "....",
            "!!!.???.***",
            long.as_str(),
            padded.as_str(),
            std_alphabet.as_str(),
        ];
        for token in cases {
            let e = v.verify_at(token, NOW).unwrap_err();
            assert!(
                matches!(e, TokenError::Malformed(_) | TokenError::BadSignature),
                "{token:.40}: {e:?}"
            );
            if token.len() > 3 {
                assert!(!e.to_string().contains(token), "{e}");
            }
        }
        // Five parts (a JWE) and a JSON array header.
        let jwe = format!("{}.a.b.c.d", good[0]);
        assert!(matches!(
            v.verify_at(&jwe, NOW),
            Err(TokenError::Malformed(_))
        ));
        let array = format!("{}.{}.{}", b64(&json!(["ES256"])), good[1], good[2]);
        assert!(matches!(
            v.verify_at(&array, NOW),
            Err(TokenError::Malformed(_))
        ));
        // A signed payload that is not claims.
        let weird = signer(&key).sign_claims(&json!("just a string"));
        assert!(matches!(
            v.verify_at(&weird, NOW),
            Err(TokenError::Malformed(_))
        ));
        // Attacker-chosen algorithm names are cut and cleaned before they reach a message.
        let header = b64(&json!({"alg": "<script>alert(1)</script>", "kid": key.kid()}));
        let e = v
            .verify_at(&format!("{header}.{}.x", good[1]), NOW)
            .unwrap_err();
        assert_eq!(e, TokenError::Algorithm("?script?alert?1?".into()));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_while_their_key_is_listed() {
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        let old_token = signer(&old).issue(&openid(), at(NOW)).token;
        let new_token = signer(&new).issue(&openid(), at(NOW)).token;
        // During rotation both keys are listed: both tokens verify.
        let both = verifier(&[&new, &old]);
        assert!(both.verify_at(&old_token, NOW + 10).is_ok());
        assert!(both.verify_at(&new_token, NOW + 10).is_ok());
        // Once the old key is removed, its tokens are refused; new ones still verify.
        let new_only = verifier(&[&new]);
        assert_eq!(
            new_only.verify_at(&old_token, NOW + 10),
            Err(TokenError::UnknownKey)
        );
        assert!(new_only.verify_at(&new_token, NOW + 10).is_ok());
        assert_eq!(both.kids().len(), 2);
    }

    #[test]
    fn openid_configuration_points_at_the_jwks() {
        let doc = openid_configuration(ISS);
        assert_eq!(doc["issuer"], ISS);
        assert_eq!(doc["jwks_uri"], format!("{ISS}/.well-known/jwks.json"));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(doc["response_types_supported"], json!(["id_token"]));
    }
}
