//! Building a function from its environment, once per process: configuration, clients,
//! handler, then the runtime. Each `functions/*/src/main.rs` is a call to [`run`].
//!
//! Clients are created here and reused by every invocation; nothing here calls the network
//! (credentials and WeChat Pay certificates are fetched on first use).

use std::{process::ExitCode, sync::Arc};

use crate::{
    config::{AuthConfig, ConfigError, Env, LogFormat, StoreConfig, WechatPayConfig},
    http::{
        Handler, identity::IdentitySettings, payment_callback::PaymentCallbackHandler,
        place_order::PlaceOrderHandler,
    },
    service::{Deps, ServiceSettings, system_clock},
    store::{self, AwsAccess, ClientSettings, DynamoStore},
    wechatpay::client::{GatewaySettings, HttpPayGateway, RetryPolicy},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    PlaceOrder,
    PaymentCallback,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::PlaceOrder => "place-order",
            Function::PaymentCallback => "payment-callback",
        }
    }
}

/// Configures, builds and serves `function`; a bad variable ends the process with one line.
pub async fn run(function: Function) -> ExitCode {
    let env = Env::process();
    let format = match LogFormat::from_env(&env) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    crate::telemetry::init(format);
    let handler = match build(function, &env).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(function = function.name(), "{e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::runtime::serve(handler).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(function = function.name(), "{e}");
            ExitCode::FAILURE
        }
    }
}

/// The handler of `function`, wired to DynamoDB and WeChat Pay from `env`.
pub async fn build(function: Function, env: &Env) -> Result<Arc<dyn Handler>, ConfigError> {
    let wechatpay = WechatPayConfig::from_env(env, function == Function::PlaceOrder)?;
    let store_config = StoreConfig::from_env(env)?;
    // WeChat Pay waits 5 s for a notification's answer: keep DynamoDB and WeChat Pay calls
    // well inside it and answer 500 rather than late (DESIGN.md section 8).
    let store_settings = ClientSettings::default();
    let retry = match function {
        Function::PaymentCallback => RetryPolicy {
            total_budget: std::time::Duration::from_secs(3),
            ..RetryPolicy::default()
        },
        Function::PlaceOrder => RetryPolicy::default(),
    };
    let access = AwsAccess {
        region: store_config.region.clone(),
        credentials: store_config
            .credentials
            .as_ref()
            .map(|(id, secret, token)| {
                (
                    id.clone(),
                    secret.expose().clone(),
                    token.as_ref().map(|t| t.expose().clone()),
                )
            }),
    };
    let client = store::connect(store_config.endpoint.as_deref(), &access, &store_settings).await;
    let store = DynamoStore::new(client, store_config.table.clone())
        .with_shards(store_config.sweeper_shards);
    let mut gateway_settings = GatewaySettings::from_config(&wechatpay);
    gateway_settings.retry = retry;
    let gateway = HttpPayGateway::new(gateway_settings).map_err(|e| ConfigError {
        variable: "WXPAY_API_BASE",
        problem: e.to_string(),
    })?;
    let deps = Deps {
        store: Arc::new(store),
        gateway: Arc::new(gateway),
        clock: system_clock(),
        settings: ServiceSettings {
            appid: wechatpay.appid.clone(),
            mchid: wechatpay.mchid.clone(),
            order_ttl: time::Duration::seconds(store_config.order_ttl.as_secs() as i64),
        },
    };
    Ok(match function {
        Function::PlaceOrder => Arc::new(PlaceOrderHandler {
            deps,
            identity: IdentitySettings::from_config(&AuthConfig::from_env(env)?),
        }),
        Function::PaymentCallback => Arc::new(PaymentCallbackHandler { deps }),
    })
}
