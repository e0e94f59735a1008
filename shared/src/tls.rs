//! The roots every outbound HTTPS client trusts: WeChat Pay, WeChat's login, DynamoDB and
//! Secrets Manager. Mozilla's root certificates are compiled in (`webpki-root-certs`), so a
//! cold start reads no certificate files: loading the system store took about 11 of a 15 ms
//! start (294 files under /etc/ssl/certs), and where that store lives differs between Lambda's
//! Amazon Linux, SCF's CentOS and a static musl binary.
//!
//! `SSL_CERT_FILE` names a PEM file of further roots (a private CA, a TLS-inspecting proxy),
//! trusted in addition to the compiled-in ones; a file that does not parse stops the start.

use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::tls::{self as smithy_tls, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

use crate::config::{ConfigError, Env};

const SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// The trusted roots: the compiled-in set plus the operator's own, if any.
#[derive(Clone, Default)]
pub struct TrustRoots {
    extra: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots")
            .field("bundled", &webpki_root_certs::TLS_SERVER_ROOT_CERTS.len())
            .field("extra", &self.extra.len())
            .finish()
    }
}

static INSTALLED: OnceLock<TrustRoots> = OnceLock::new();

/// The roots [`install`]ed at start-up, or the compiled-in ones alone.
pub fn roots() -> &'static TrustRoots {
    INSTALLED.get_or_init(TrustRoots::bundled)
}

/// Makes `roots` what [`roots`] answers for the rest of the process. Call it before the first
/// client is built; a second call (or one after [`roots`] was first asked) changes nothing and
/// says so with `false`.
pub fn install(roots: TrustRoots) -> bool {
    INSTALLED.set(roots).is_ok()
}

impl TrustRoots {
    /// Mozilla's roots, as compiled in.
    pub fn bundled() -> Self {
        TrustRoots::default()
    }

    /// The compiled-in roots plus the certificates of the PEM file `SSL_CERT_FILE` names.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(path) = env.get(SSL_CERT_FILE) else {
            return Ok(TrustRoots::bundled());
        };
        let bad = |problem: String| ConfigError {
            variable: SSL_CERT_FILE,
            problem,
        };
        let pem = std::fs::read(&path).map_err(|e| bad(format!("cannot read {path}: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{path} is not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(bad(format!("{path} holds no CERTIFICATE block")));
        }
        let mut check = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            check
                .add(cert.clone())
                .map_err(|e| bad(format!("certificate {} of {path}: {e}", i + 1)))?;
        }
        Ok(TrustRoots { extra: certs })
    }

    /// How many roots are trusted in all.
    pub fn len(&self) -> usize {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() + self.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn all(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .chain(self.extra.iter())
    }

    /// A rustls client configuration trusting these roots (TLS 1.2 and 1.3, aws-lc-rs: the
    /// provider the AWS SDK links anyway).
    pub fn rustls_config(&self) -> ClientConfig {
        let mut store = RootCertStore::empty();
        // The compiled-in set parses (the crate's own tests check it); extras were checked
        // in `from_env`. A certificate that still fails is skipped rather than fatal.
        store.add_parsable_certificates(self.all().cloned());
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(store).with_no_client_auth())
            .unwrap_or_else(|e| unreachable!("aws-lc-rs supports TLS 1.2 and 1.3: {e}"))
    }

    /// A `reqwest` client builder whose TLS trusts these roots and nothing read from disk.
    pub fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_backend_preconfigured(self.rustls_config())
    }

    /// The AWS SDK's HTTP client (the SDK's own hyper + rustls connector) trusting these
    /// roots instead of the system store. The SDK builds its TLS configuration from them on
    /// the first request, once per set of timeouts.
    pub fn aws_http_client(&self) -> SharedHttpClient {
        let mut pem = String::new();
        for cert in self.all() {
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            pem.push_str(&base64::engine::general_purpose::STANDARD.encode(cert.as_ref()));
            pem.push_str("\n-----END CERTIFICATE-----\n");
        }
        let context = TlsContext::builder()
            .with_trust_store(
                TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(pem),
            )
            .build()
            .unwrap_or_else(|e| unreachable!("a TLS context without server names builds: {e}"));
        aws_smithy_http_client::Builder::new()
            .tls_provider(smithy_tls::Provider::Rustls(
                smithy_tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject_names(roots: &TrustRoots) -> Vec<String> {
        roots
            .all()
            .map(|c| String::from_utf8_lossy(c.as_ref()).into_owned())
            .collect()
    }

    #[test]
    fn bundled_roots_cover_wechat_pay_and_aws() {
        let roots = TrustRoots::bundled();
        assert!(roots.len() > 100, "{roots:?}");
        let names = subject_names(&roots);
        // api.mch.weixin.qq.com (since 2024-09-20) and api.weixin.qq.com (since 2024-10-22)
        // chain to DigiCert Global Root G2 (WeChat Pay's server certificate notice); the old
        // G1 root has left Mozilla's set. DynamoDB and Secrets Manager chain to Amazon's roots
        // (cross-signed by Starfield).
        for root in [
            "DigiCert Global Root G2",
            "Amazon Root CA 1",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(
                names.iter().any(|n| n.contains(root)),
                "{root} missing from the compiled-in roots"
            );
        }
        let config = roots.rustls_config();
        assert!(config.alpn_protocols.is_empty());
    }

    fn cert_file() -> String {
        format!(
            "{}/../testdata/tls/localhost_cert.pem",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn ssl_cert_file_adds_its_certificates() {
        let env = Env::from_pairs([(SSL_CERT_FILE, cert_file().as_str())]);
        let roots = TrustRoots::from_env(&env).expect("valid file");
        assert_eq!(roots.len(), TrustRoots::bundled().len() + 1);
        assert_eq!(
            TrustRoots::from_env(&Env::from_pairs([]))
                .map(|r| r.len())
                .ok(),
            Some(TrustRoots::bundled().len())
        );
    }

    #[test]
    fn a_bad_ssl_cert_file_is_a_config_error() {
        let dir = std::env::temp_dir().join(format!("tls-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key_only = dir.join("key.pem");
        std::fs::copy(
            format!(
                "{}/../testdata/tls/localhost_key.pem",
                env!("CARGO_MANIFEST_DIR")
            ),
            &key_only,
        )
        .expect("copy");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        for (path, says) in [
            (dir.join("missing.pem"), "cannot read"),
            (key_only, "no CERTIFICATE"),
            (garbage, "certificate 1 of"),
        ] {
            let env = Env::from_pairs([(SSL_CERT_FILE, path.to_str().expect("utf-8"))]);
            let err = TrustRoots::from_env(&env).expect_err("must fail");
            assert_eq!(err.variable, SSL_CERT_FILE);
            assert!(err.problem.contains(says), "{}", err.problem);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
