//! The DynamoDB client and its time budget: every call must fit the notify endpoint's
//! (DESIGN 8: WeChat Pay waits 5 s, so ~3 s for the store), on AWS or any compatible endpoint.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

/// Timeouts and retries of the DynamoDB client. The defaults fit the notify endpoint's budget:
/// a call gives up after `operation_timeout` in all, retries included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The whole call, all attempts and backoff included.
    pub operation_timeout: Duration,
    /// One HTTP attempt.
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per call, the first included (SDK standard retry: throttling, 5xx, I/O).
    pub max_attempts: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            operation_timeout: Duration::from_millis(3_000),
            attempt_timeout: Duration::from_millis(1_200),
            connect_timeout: Duration::from_millis(1_000),
            max_attempts: 3,
        }
    }
}

impl ClientSettings {
    /// For an engine on the same machine under heavy test load, where a slow answer is not a
    /// failure: long timeouts, same retries.
    pub fn local() -> Self {
        ClientSettings {
            operation_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
        }
    }

    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_timeout(self.operation_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .connect_timeout(self.connect_timeout)
            .build()
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts.max(1))
    }
}

/// Region and credentials named by configuration rather than found by the SDK's default
/// chain. Fields left `None` fall back to the chain (on Lambda: the function's role).
#[derive(Clone, Default)]
pub struct AwsAccess {
    pub region: Option<String>,
    /// `(access key id, secret access key, session token)`.
    pub credentials: Option<(String, String, Option<String>)>,
}

impl std::fmt::Debug for AwsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsAccess")
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// A client with `settings` applied, `endpoint` overriding AWS's (`DYNAMODB_ENDPOINT`) and
/// `access` overriding the default provider chain. A region given here also spares the
/// start-up the SDK's region lookup (which may ask IMDS, a network call).
pub async fn connect(
    endpoint: Option<&str>,
    access: &AwsAccess,
    settings: &ClientSettings,
) -> Client {
    Client::new(&sdk_config(endpoint, access, settings).await)
}

/// The AWS configuration [`connect`] builds its client from, for other AWS clients that
/// follow the same rules (Secrets Manager at start-up, `crate::secrets`).
pub async fn sdk_config(
    endpoint: Option<&str>,
    access: &AwsAccess,
    settings: &ClientSettings,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::tls::roots().aws_http_client())
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &access.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((id, secret, token)) = &access.credentials {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.clone(),
            token.clone(),
            None,
            "configuration",
        ));
    }
    loader.load().await
}

/// A client for a local engine (Dynoxide, moto): fixed region and dummy static credentials,
/// nothing read from the environment.
pub fn connect_static(endpoint: &str, region: &str, settings: &ClientSettings) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("local", "local", None, None, "static"))
        .endpoint_url(endpoint)
        .timeout_config(settings.timeout_config())
        .retry_config(settings.retry_config())
        .build();
    Client::from_conf(config)
}
