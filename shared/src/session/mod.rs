//! Identity for the mini-program (DESIGN.md section 3, session and Identity): WeChat's login
//! (`jscode2session`: a `wx.login()` code -> openid) and our own session tokens, ES256 JWTs
//! that every function verifies itself, the same way on AWS and Tencent Cloud.
//!
//! Owns the token format, its keys (`kid` = RFC 7638 thumbprint) and the JWKS / OpenID
//! documents; the ECDSA calls themselves go through `crate::wechatpay::crypto`, the one file
//! that names the crypto backend.
//!
//! - [`keys`]: P-256 signing keys (PKCS#8 PEM) and public keys (SPKI PEM), JWKS.
//! - [`token`]: issuing ([`TokenSigner`]) and verifying ([`TokenVerifier`]) tokens.
//! - [`login`]: the [`WxLogin`] port and its HTTP implementation.

pub mod keys;
pub mod login;
pub mod token;

pub use keys::{PublicKey, SessionKeyError, SigningKey, jwks};
pub use login::{HttpWxLogin, LoginCode, LoginError, LoginSettings, WxLogin};
pub use token::{
    Claims, IssuedToken, LEEWAY_SECONDS, TokenError, TokenSigner, TokenVerifier,
    openid_configuration,
};

/// Where the key set is served, below the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Where the OpenID Provider metadata is served, below the issuer URL.
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
