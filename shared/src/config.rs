//! Configuration from the environment (DESIGN.md section 2), parsed once at start-up.
//!
//! A missing or malformed variable stops start-up with one line naming it; values are parsed
//! into the types the rest of the crate uses, so a bad key fails here and not on the first
//! payment. Secrets are kept in `Secret`, whose `Debug` and `Display` never show them.

use std::{collections::HashMap, fmt, time::Duration};

use crate::session::{PublicKey, SigningKey};
use crate::webhook::WebhookSecrets;
use crate::wechatpay::{
    aead::ApiV3Key,
    keys::{RsaPrivateKey, RsaPublicKey},
};

/// One line naming the variable and what is wrong with it; never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn bad(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// WeChat's server API (`jscode2session`), `WX_API_BASE`'s default.
pub const DEFAULT_WX_API_BASE: &str = "https://api.weixin.qq.com";

/// A value that must never reach a log, an error or a response.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where variables come from: the process environment, or a map in tests (setting process
/// environment variables from tests is racy, and `unsafe` in edition 2024).
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Env {
    lookup: Lookup,
}

impl Env {
    pub fn process() -> Self {
        Env {
            lookup: Box::new(|k| std::env::var(k).ok()),
        }
    }

    pub fn from_map(map: HashMap<String, String>) -> Self {
        Env {
            lookup: Box::new(move |k| map.get(k).cloned()),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::from_map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// `values` in front of this environment: a variable they name is theirs, any other is
    /// looked up here (secrets fetched at start-up, `shared::secrets`).
    pub fn overlay(self, values: HashMap<String, String>) -> Self {
        let base = self.lookup;
        Env {
            lookup: Box::new(move |k| values.get(k).cloned().or_else(|| base(k))),
        }
    }

    /// The value, with an empty string treated as unset (a common template mistake).
    pub fn get(&self, key: &str) -> Option<String> {
        (self.lookup)(key).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, key: &'static str) -> Result<String, ConfigError> {
        self.get(key)
            .ok_or_else(|| bad(key, "is required but not set"))
    }

    /// `NAME` inline, or `NAME_FILE` as a path to read it from; `name_file` is the second.
    fn inline_or_file(
        &self,
        name: &'static str,
        name_file: &'static str,
    ) -> Result<Option<(String, &'static str)>, ConfigError> {
        match (self.get(name), self.get(name_file)) {
            (Some(_), Some(_)) => Err(bad(
                name,
                format!("set either {name} or {name_file}, not both"),
            )),
            (Some(v), None) => Ok(Some((v, name))),
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map(|v| Some((v, name_file)))
                .map_err(|e| bad(name_file, format!("cannot read {path}: {e}"))),
            (None, None) => Ok(None),
        }
    }

    fn parse_or<T: std::str::FromStr>(
        &self,
        key: &'static str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| bad(key, format!("must be {what} (got {v:?})"))),
        }
    }
}

/// The merchant's WeChat Pay settings and keys.
#[derive(Debug, Clone)]
pub struct WechatPayConfig {
    pub appid: String,
    pub mchid: String,
    pub mch_serial_no: String,
    /// `None` only where nothing is signed: payment-callback with a WeChat Pay public key
    /// ([`WechatPayConfig::for_notifications`]).
    pub mch_private_key: Option<Secret<RsaPrivateKey>>,
    pub apiv3_key: Secret<ApiV3Key>,
    /// `(PUB_KEY_ID_..., key)`; absent means platform-certificate mode.
    pub public_key: Option<(String, RsaPublicKey)>,
    pub notify_url: Option<String>,
    pub api_base: String,
}

impl WechatPayConfig {
    /// `need_notify_url`: place-order sends it with every prepay, so it must be set there.
    pub fn from_env(env: &Env, need_notify_url: bool) -> Result<Self, ConfigError> {
        Self::load(env, need_notify_url, true)
    }

    /// payment-callback's: it signs nothing when notifications verify with the WeChat Pay
    /// public key, so the merchant private key is then neither required nor read (a
    /// platform-certificate merchant needs it to download the certificates).
    pub fn for_notifications(env: &Env) -> Result<Self, ConfigError> {
        Self::load(env, false, false)
    }

    fn load(
        env: &Env,
        need_notify_url: bool,
        always_merchant_key: bool,
    ) -> Result<Self, ConfigError> {
        let appid = appid(env)?;
        let mchid = env.required("WXPAY_MCHID")?;
        if mchid.len() > 32 || !mchid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("WXPAY_MCHID", "must be the merchant id: digits only"));
        }
        let mch_serial_no = env.required("WXPAY_MCH_SERIAL_NO")?.trim().to_uppercase();
        if mch_serial_no.len() > 64 || !mch_serial_no.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                "WXPAY_MCH_SERIAL_NO",
                "must be the merchant certificate serial in hex",
            ));
        }
        let apiv3_key = ApiV3Key::new(&env.required("WXPAY_APIV3_KEY")?)
            .map_err(|e| bad("WXPAY_APIV3_KEY", e.to_string()))?;
        let public_key = match (
            env.inline_or_file("WXPAY_PUBLIC_KEY", "WXPAY_PUBLIC_KEY_FILE")?,
            env.get("WXPAY_PUBLIC_KEY_ID"),
        ) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "WXPAY_PUBLIC_KEY_ID",
                    "is required when WXPAY_PUBLIC_KEY is set",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "WXPAY_PUBLIC_KEY",
                    "is required when WXPAY_PUBLIC_KEY_ID is set (or WXPAY_PUBLIC_KEY_FILE)",
                ));
            }
            (Some((pem, from)), Some(id)) => {
                if !id.starts_with("PUB_KEY_ID_") {
                    return Err(bad("WXPAY_PUBLIC_KEY_ID", "must start with PUB_KEY_ID_"));
                }
                let key = RsaPublicKey::from_spki_pem(&pem)
                    .map_err(|e| bad(from, format!("not a PEM public key (pub_key.pem): {e}")))?;
                Some((id, key))
            }
        };
        let mch_private_key = if always_merchant_key || public_key.is_none() {
            let (pem, from) = env
                .inline_or_file("WXPAY_MCH_PRIVATE_KEY", "WXPAY_MCH_PRIVATE_KEY_FILE")?
                .ok_or_else(|| {
                    bad(
                        "WXPAY_MCH_PRIVATE_KEY",
                        "is required (or WXPAY_MCH_PRIVATE_KEY_FILE)",
                    )
                })?;
            let mch_private_key = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| {
                bad(
                    from,
                    format!("not a PKCS#8 RSA private key (apiclient_key.pem): {e}"),
                )
            })?;
            Some(Secret::new(mch_private_key))
        } else {
            None
        };
        let notify_url = env.get("WXPAY_NOTIFY_URL");
        match &notify_url {
            Some(u) => check_notify_url(u)?,
            None if need_notify_url => return Err(bad("WXPAY_NOTIFY_URL", "is required")),
            None => {}
        }
        let api_base = env
            .get("WXPAY_API_BASE")
            .unwrap_or_else(|| "https://api.mch.weixin.qq.com".to_owned());
        check_base_url("WXPAY_API_BASE", &api_base)?;
        Ok(WechatPayConfig {
            appid,
            mchid,
            mch_serial_no,
            mch_private_key,
            apiv3_key: Secret::new(apiv3_key),
            public_key,
            notify_url,
            api_base: api_base.trim_end_matches('/').to_owned(),
        })
    }
}

/// `WXPAY_APPID`: the mini-program's AppID (also the `aud` of session tokens).
fn appid(env: &Env) -> Result<String, ConfigError> {
    let appid = env.required("WXPAY_APPID")?;
    if appid.len() > 32 || !appid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(
            "WXPAY_APPID",
            "must be up to 32 letters and digits (wx...)",
        ));
    }
    Ok(appid)
}

fn is_loopback(url: &reqwest::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// WeChat Pay calls only public https URLs without a query string; plain http is allowed
/// for loopback so the sandbox's simulator can deliver.
fn check_notify_url(u: &str) -> Result<(), ConfigError> {
    let url =
        reqwest::Url::parse(u).map_err(|e| bad("WXPAY_NOTIFY_URL", format!("not a URL: {e}")))?;
    if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)) {
        return Err(bad("WXPAY_NOTIFY_URL", "must be an https URL"));
    }
    if url.query().is_some() {
        return Err(bad(
            "WXPAY_NOTIFY_URL",
            "must not have a query string (WeChat Pay drops it)",
        ));
    }
    if u.len() > 255 {
        return Err(bad("WXPAY_NOTIFY_URL", "must be at most 255 characters"));
    }
    Ok(())
}

fn check_base_url(variable: &'static str, u: &str) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(u).map_err(|e| bad(variable, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(bad(variable, "must be an http(s) URL with a host"));
    }
    Ok(())
}

/// The DynamoDB table and how orders use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub table: String,
    pub endpoint: Option<String>,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`): Lambda sets it; elsewhere it names the region
    /// of `DYNAMODB_ENDPOINT`'s tables.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`): SCF and local
    /// runs; on Lambda these are the role's, as the SDK would read them anyway.
    pub credentials: Option<(String, Secret<String>, Option<Secret<String>>)>,
    pub sweeper_shards: u32,
    pub order_ttl: Duration,
}

impl StoreConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let table = env.required("ORDERS_TABLE")?;
        if table.len() < 3
            || table.len() > 255
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(bad(
                "ORDERS_TABLE",
                "must be a DynamoDB table name: 3-255 of [A-Za-z0-9_.-]",
            ));
        }
        let endpoint = env.get("DYNAMODB_ENDPOINT");
        if let Some(e) = &endpoint {
            check_base_url("DYNAMODB_ENDPOINT", e)?;
        }
        let sweeper_shards: u32 = env.parse_or(
            "SWEEPER_SHARDS",
            DEFAULT_SWEEPER_SHARDS,
            "a whole number from 1 to 128",
        )?;
        if !(1..=MAX_SWEEPER_SHARDS).contains(&sweeper_shards) {
            return Err(bad(
                "SWEEPER_SHARDS",
                "must be a whole number from 1 to 128",
            ));
        }
        let ttl: u64 = env.parse_or("ORDER_TTL_SECONDS", 1800, "a number of seconds")?;
        // WeChat Pay keeps a prepay_id for 2 h; the sandbox may go lower than WeChat's 60 s.
        if !(1..=7200).contains(&ttl) {
            return Err(bad("ORDER_TTL_SECONDS", "must be from 1 to 7200 seconds"));
        }
        Ok(StoreConfig {
            table,
            endpoint,
            region: aws_region(env),
            credentials: aws_credentials(env),
            sweeper_shards,
            order_ttl: Duration::from_secs(ttl),
        })
    }
}

/// The timeout-sweeper's pace (beyond DESIGN.md section 2, which fixes only the shards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperConfig {
    /// `SWEEP_GRACE_SECONDS` (default 30): how long past `expire_at` an order is left alone,
    /// so a payment made at the last moment is notified first.
    pub grace: Duration,
    /// `SWEEP_CONCURRENCY` (default 8): orders settled at once.
    pub concurrency: usize,
}

impl SweeperConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let grace: u64 = env.parse_or("SWEEP_GRACE_SECONDS", 30, "a number of seconds")?;
        if grace > 3600 {
            return Err(bad("SWEEP_GRACE_SECONDS", "must be at most 3600"));
        }
        let concurrency: usize = env.parse_or("SWEEP_CONCURRENCY", 8, "a number")?;
        if !(1..=64).contains(&concurrency) {
            return Err(bad("SWEEP_CONCURRENCY", "must be from 1 to 64"));
        }
        Ok(SweeperConfig {
            grace: Duration::from_secs(grace),
            concurrency,
        })
    }
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`: the region of every AWS client (DynamoDB,
/// Secrets Manager); unset leaves it to the SDK.
pub fn aws_region(env: &Env) -> Option<String> {
    env.get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
}

/// `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), when both are set.
pub fn aws_credentials(env: &Env) -> Option<(String, Secret<String>, Option<Secret<String>>)> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Some((
            id,
            Secret::new(secret),
            env.get("AWS_SESSION_TOKEN").map(Secret::new),
        )),
        _ => None,
    }
}

/// How merchant-api knows the merchant (`MERCHANT_AUTH`, DESIGN.md section 3).
#[derive(Debug, Clone)]
pub enum MerchantAuth {
    /// API Gateway authorized the route with IAM (SigV4): the caller's ARN is in the request
    /// context (AWS).
    Iam,
    /// `Authorization: Bearer <MERCHANT_API_TOKEN>` (SCF, local).
    Token(Secret<String>),
}

impl MerchantAuth {
    /// Shortest `MERCHANT_API_TOKEN` accepted.
    pub const MIN_TOKEN_LEN: usize = 32;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.get("MERCHANT_AUTH").as_deref().map(str::trim) {
            None | Some("iam") => Ok(MerchantAuth::Iam),
            Some("token") => {
                let (token, name) = env
                    .inline_or_file("MERCHANT_API_TOKEN", "MERCHANT_API_TOKEN_FILE")?
                    .ok_or_else(|| {
                        bad("MERCHANT_API_TOKEN", "is required when MERCHANT_AUTH=token")
                    })?;
                let token = token.trim().to_owned();
                if token.len() < Self::MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(bad(
                        name,
                        format!(
                            "must be at least {} printable characters without spaces",
                            Self::MIN_TOKEN_LEN
                        ),
                    ));
                }
                Ok(MerchantAuth::Token(Secret::new(token)))
            }
            Some(other) => Err(bad(
                "MERCHANT_AUTH",
                format!("must be iam or token (got {other:?})"),
            )),
        }
    }
}

/// How place-order and query-order learn who is calling (DESIGN.md section 3, Identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Verify our own session token in the function (works on both clouds).
    Token,
    /// Trust the API Gateway authorizer's claims.
    Authorizer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub openid_claim: String,
    pub session_issuer: Option<String>,
    /// The keys that verify session tokens (`SESSION_PUBLIC_KEYS`), in the order listed.
    pub session_public_keys: Vec<PublicKey>,
    /// `aud` of session tokens: the AppID (`WXPAY_APPID`).
    pub session_audience: Option<String>,
    pub session_ttl: Duration,
    pub allow_debug_identity: bool,
}

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.get("AUTH_MODE").as_deref() {
            None | Some("token") => AuthMode::Token,
            Some("authorizer") => AuthMode::Authorizer,
            Some(other) => {
                return Err(bad(
                    "AUTH_MODE",
                    format!("must be `token` or `authorizer` (got {other:?})"),
                ));
            }
        };
        let allow_debug_identity = match env.get("ALLOW_DEBUG_IDENTITY").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(bad(
                    "ALLOW_DEBUG_IDENTITY",
                    format!("must be 1 or unset (got {other:?})"),
                ));
            }
        };
        if allow_debug_identity && let Some(platform) = cloud_platform(env) {
            // It lets any caller name any user: never where real users are.
            return Err(bad(
                "ALLOW_DEBUG_IDENTITY",
                format!("is refused on {platform} (it lets any caller act as any user); unset it"),
            ));
        }
        let session_public_keys = public_keys(env)?;
        let session_issuer = session_issuer(env)?;
        let mut session_audience = None;
        // Token mode verifies tokens, so it needs keys, issuer and audience; only a local run
        // with debug identity and no keys at all may do without (then only X-Debug-Openid
        // identifies a caller).
        if mode == AuthMode::Token && (!allow_debug_identity || !session_public_keys.is_empty()) {
            if session_public_keys.is_empty() {
                return Err(bad(
                    "SESSION_PUBLIC_KEYS",
                    "is required with AUTH_MODE=token (or SESSION_PUBLIC_KEYS_FILE)",
                ));
            }
            if session_issuer.is_none() {
                return Err(bad("SESSION_ISSUER", "is required with AUTH_MODE=token"));
            }
            session_audience = Some(appid(env)?);
        }
        Ok(AuthConfig {
            mode,
            openid_claim: env
                .get("AUTH_OPENID_CLAIM")
                .unwrap_or_else(|| "openid".to_owned()),
            session_issuer,
            session_public_keys,
            session_audience,
            session_ttl: session_ttl(env)?,
            allow_debug_identity,
        })
    }
}

/// `SWEEPER_SHARDS` never exceeds this, so the sweeper, which reads every shard up to it
/// whatever `SWEEPER_SHARDS` says now, finds every pending order however the setting was
/// changed (lowering it strands nothing).
pub const MAX_SWEEPER_SHARDS: u32 = 128;

/// `SWEEPER_SHARDS` unset: sized for a flash sale's peak (issue 17). `gsi2` projects ALL, so
/// an index write costs the order item's ~2 WU: a PENDING order writes its `PENDING#<shard>`
/// key when placed, again when its prepay_id is recorded, and once more when PAID (70 %)
/// removes it, ~5.4 WU an order. At 10,000 orders/s that is ~420 WU/s a key with 128 shards,
/// under half the 1,000 WU/s one key allows (64 shards: ~840). `OUTBOX#<shard>` keys share
/// the count and take less. Costs little at rest: the sweeper and the dispatcher read every
/// possible shard anyway (one small Query each).
pub const DEFAULT_SWEEPER_SHARDS: u32 = MAX_SWEEPER_SHARDS;

/// The cloud this process runs on, from the variables the platform itself sets (Lambda's
/// runtime API or function name; SCF's runtime API or function name, web functions included).
fn cloud_platform(env: &Env) -> Option<&'static str> {
    let set = |name: &str| env.get(name).is_some_and(|v| !v.is_empty());
    if set("AWS_LAMBDA_RUNTIME_API") || set("AWS_LAMBDA_FUNCTION_NAME") {
        Some("AWS Lambda")
    } else if set("SCF_RUNTIME_API") || set("SCF_FUNCTIONNAME") {
        Some("Tencent SCF")
    } else {
        None
    }
}

/// `SESSION_PUBLIC_KEYS` (or `_FILE`): one or more EC P-256 `BEGIN PUBLIC KEY` blocks.
fn public_keys(env: &Env) -> Result<Vec<PublicKey>, ConfigError> {
    match env.inline_or_file("SESSION_PUBLIC_KEYS", "SESSION_PUBLIC_KEYS_FILE")? {
        None => Ok(Vec::new()),
        Some((pem, from)) => PublicKey::parse_all(&pem).map_err(|e| {
            bad(
                from,
                format!("{e} (expected EC P-256 `BEGIN PUBLIC KEY` PEM blocks)"),
            )
        }),
    }
}

/// `SESSION_ISSUER`: the `iss` of session tokens and the base of their discovery documents.
/// An https URL (plain http only on loopback, for the sandbox), no query or fragment; a
/// trailing `/` is dropped so `iss` and `jwks_uri` are spelt one way everywhere.
fn session_issuer(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(issuer) = env.get("SESSION_ISSUER") else {
        return Ok(None);
    };
    let issuer = issuer.trim().trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&issuer)
        .map_err(|e| bad("SESSION_ISSUER", format!("not a URL: {e}")))?;
    if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)) {
        return Err(bad(
            "SESSION_ISSUER",
            "must be an https URL (http only for 127.0.0.1/localhost)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "SESSION_ISSUER",
            "must not have a query string or fragment",
        ));
    }
    Ok(Some(issuer))
}

fn session_ttl(env: &Env) -> Result<Duration, ConfigError> {
    let ttl: u64 = env.parse_or("SESSION_TTL_SECONDS", 7200, "a number of seconds")?;
    if !(60..=30 * 86400).contains(&ttl) {
        return Err(bad(
            "SESSION_TTL_SECONDS",
            "must be from 60 seconds to 30 days",
        ));
    }
    Ok(Duration::from_secs(ttl))
}

/// The session function: WeChat login (`jscode2session`) and token signing. Needs no
/// merchant key and no table.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `WXPAY_APPID`: sent to WeChat and the `aud` of every token.
    pub appid: String,
    /// `WX_APP_SECRET`: the mini-program's AppSecret.
    pub app_secret: Secret<String>,
    /// `WX_API_BASE`, without a trailing `/`.
    pub wx_api_base: String,
    /// `SESSION_SIGNING_KEY` (or `_FILE`): the first signs; all are published.
    pub signing_keys: Secret<Vec<SigningKey>>,
    /// `SESSION_PUBLIC_KEYS` (or `_FILE`), optional here: also published in the JWKS (keys
    /// retired from signing whose tokens are still valid).
    pub extra_public_keys: Vec<PublicKey>,
    pub issuer: String,
    pub ttl: Duration,
}

impl SessionConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let appid = appid(env)?;
        let app_secret =
            app_secret(env)?.ok_or_else(|| bad("WX_APP_SECRET", "is required but not set"))?;
        let wx_api_base = wx_api_base(env)?;
        let (pem, from) = env
            .inline_or_file("SESSION_SIGNING_KEY", "SESSION_SIGNING_KEY_FILE")?
            .ok_or_else(|| {
                bad(
                    "SESSION_SIGNING_KEY",
                    "is required by the session function (or SESSION_SIGNING_KEY_FILE)",
                )
            })?;
        let signing_keys = SigningKey::parse_all(&pem).map_err(|e| {
            bad(
                from,
                format!("{e} (expected EC P-256 PKCS#8 `BEGIN PRIVATE KEY` PEM blocks)"),
            )
        })?;
        let issuer = session_issuer(env)?.ok_or_else(|| {
            bad(
                "SESSION_ISSUER",
                "is required by the session function (the tokens' iss)",
            )
        })?;
        Ok(SessionConfig {
            appid,
            app_secret,
            wx_api_base,
            signing_keys: Secret::new(signing_keys),
            extra_public_keys: public_keys(env)?,
            issuer,
            ttl: session_ttl(env)?,
        })
    }
}

/// `WX_APP_SECRET` when set: the mini-program's AppSecret (letters and digits).
fn app_secret(env: &Env) -> Result<Option<Secret<String>>, ConfigError> {
    match env.get("WX_APP_SECRET") {
        Some(s) if s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) => Err(bad(
            "WX_APP_SECRET",
            "must be the mini-program's AppSecret: letters and digits",
        )),
        other => Ok(other.map(Secret::new)),
    }
}

/// `WX_API_BASE` (WeChat's by default), checked, without a trailing `/`.
fn wx_api_base(env: &Env) -> Result<String, ConfigError> {
    let base = env
        .get("WX_API_BASE")
        .unwrap_or_else(|| DEFAULT_WX_API_BASE.to_owned());
    check_base_url("WX_API_BASE", &base)?;
    Ok(base.trim_end_matches('/').to_owned())
}

/// `TRADE_MANAGED`: whether shipments are uploaded to WeChat's trade management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeManaged {
    On,
    Off,
    /// Ask WeChat's `is_trade_managed` (once a day per instance).
    Auto,
}

/// Shipping (DESIGN.md section 12), for merchant-api and the sweeper: `TRADE_MANAGED`, and
/// the AppSecret and base URL of WeChat's server API when set. Without `WX_APP_SECRET`
/// nothing can be uploaded: the functions start, and shipments answer that they need it.
#[derive(Debug, Clone)]
pub struct ShippingConfig {
    pub trade_managed: TradeManaged,
    pub appid: String,
    pub app_secret: Option<Secret<String>>,
    pub wx_api_base: String,
}

impl ShippingConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let trade_managed = match env.get("TRADE_MANAGED").as_deref() {
            None | Some("auto") => TradeManaged::Auto,
            Some("on") => TradeManaged::On,
            Some("off") => TradeManaged::Off,
            Some(_) => return Err(bad("TRADE_MANAGED", "must be auto, on or off")),
        };
        Ok(ShippingConfig {
            trade_managed,
            appid: appid(env)?,
            app_secret: app_secret(env)?,
            wx_api_base: wx_api_base(env)?,
        })
    }
}

/// The merchant's webhook (DESIGN.md sections 2 and 10): where order events go and the
/// secrets that sign them.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `WEBHOOK_URL`: https (plain http only on loopback, for the sandbox's receiver).
    pub url: reqwest::Url,
    /// `WEBHOOK_SECRET` (or `_FILE`): one `whsec_` secret, two during a rotation.
    pub secrets: WebhookSecrets,
    /// Whole request, connection to last byte (`WEBHOOK_TIMEOUT_SECONDS`, 1-30): an answer
    /// later than this is a failed attempt, even a 2xx.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl WebhookConfig {
    /// Standard Webhooks recommends 15 to 30 s; the short end keeps a dispatcher batch short.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// `None` when `WEBHOOK_URL` is unset: events are stored and not delivered (the caller
    /// says so in a warning).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(url) = env.get("WEBHOOK_URL") else {
            return Ok(None);
        };
        let url = webhook_url(url.trim())?;
        let (text, from) = env
            .inline_or_file("WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE")?
            .ok_or_else(|| {
                bad(
                    "WEBHOOK_SECRET",
                    "is required with WEBHOOK_URL (or WEBHOOK_SECRET_FILE)",
                )
            })?;
        // The error names the position and the problem, never the text.
        let secrets = WebhookSecrets::parse(&text).map_err(|e| bad(from, e.to_string()))?;
        let timeout: u64 = env.parse_or(
            "WEBHOOK_TIMEOUT_SECONDS",
            Self::DEFAULT_TIMEOUT.as_secs(),
            "a number of seconds",
        )?;
        if !(1..=30).contains(&timeout) {
            return Err(bad(
                "WEBHOOK_TIMEOUT_SECONDS",
                "must be from 1 to 30 seconds (Standard Webhooks: 15-30)",
            ));
        }
        let timeout = Duration::from_secs(timeout);
        Ok(Some(WebhookConfig {
            url,
            secrets,
            timeout,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT.min(timeout),
        }))
    }
}

/// Events carry order data, so they travel encrypted; plain http is left to loopback, as for
/// the other URLs the sandbox points at itself. (Also the sandbox's `--webhook-url` rule.)
pub fn webhook_url(u: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(u).map_err(|e| bad("WEBHOOK_URL", format!("not a URL: {e}")))?;
    if url.host_str().is_none()
        || (url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)))
    {
        return Err(bad(
            "WEBHOOK_URL",
            "must be an https URL (http only for 127.0.0.1/localhost)",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad(
            "WEBHOOK_URL",
            "must not have a fragment (it is never sent)",
        ));
    }
    Ok(url)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// JSON on Lambda and SCF (their consoles index it), text on a developer's terminal.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.get("LOG_FORMAT").as_deref() {
            Some("json") => Ok(LogFormat::Json),
            Some("text") => Ok(LogFormat::Text),
            Some(other) => Err(bad(
                "LOG_FORMAT",
                format!("must be `json` or `text` (got {other:?})"),
            )),
            None if env.get("AWS_LAMBDA_RUNTIME_API").is_some()
                || env.get("SCF_RUNTIME_API").is_some() =>
            {
                Ok(LogFormat::Json)
            }
            None => Ok(LogFormat::Text),
        }
    }
}
