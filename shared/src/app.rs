//! Building a function from its environment, once per process: configuration, clients,
//! handler, then the runtime. Each `functions/*/src/main.rs` is a call to [`main`].
//!
//! Clients are created here and reused by every invocation; nothing here calls the network
//! (credentials and WeChat Pay certificates are fetched on first use).

use std::{process::ExitCode, sync::Arc};

use crate::{
    config::{
        AuthConfig, ConfigError, Env, LogFormat, MerchantAuth, SessionConfig, StoreConfig,
        SweeperConfig, WebhookConfig, WechatPayConfig,
    },
    dispatcher::DispatcherJob,
    http::{
        Handler, identity::IdentitySettings, merchant::MerchantApiHandler,
        payment_callback::PaymentCallbackHandler, place_order::PlaceOrderHandler,
        query_order::QueryOrderHandler, session::SessionHandler,
    },
    reconciler::ReconcilerJob,
    runtime::ScheduledJob,
    service::{
        Deps, DispatchSettings, EventDeps, ServiceSettings, SweepSettings, WebhookPort,
        system_clock,
    },
    session::{HttpWxLogin, LoginSettings, PublicKey, TokenSigner},
    store::{self, AwsAccess, ClientSettings, DynamoStore},
    sweeper::SweeperJob,
    webhook::Webhook,
    wechatpay::client::{GatewaySettings, HttpPayGateway, RetryPolicy},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    PlaceOrder,
    PaymentCallback,
    QueryOrder,
    TimeoutSweeper,
    Session,
    MerchantApi,
    EventDispatcher,
    BillReconciler,
    MpPush,
}

impl Function {
    pub const ALL: &[Function] = &[
        Function::PlaceOrder,
        Function::PaymentCallback,
        Function::QueryOrder,
        Function::TimeoutSweeper,
        Function::Session,
        Function::MerchantApi,
        Function::EventDispatcher,
        Function::BillReconciler,
        Function::MpPush,
    ];

    /// Its binary's (and package's) name.
    pub fn name(self) -> &'static str {
        match self {
            Function::PlaceOrder => "place-order",
            Function::PaymentCallback => "payment-callback",
            Function::QueryOrder => "query-order",
            Function::TimeoutSweeper => "timeout-sweeper",
            Function::Session => "session",
            Function::MerchantApi => "merchant-api",
            Function::EventDispatcher => "event-dispatcher",
            Function::BillReconciler => "bill-reconciler",
            Function::MpPush => "mp-push",
        }
    }
}

/// The whole process of a function binary: a tokio runtime fitted to the platform, then
/// [`run`]. On Lambda and SCF, which hand an instance one event at a time, one thread does
/// everything: a multi-threaded runtime only added wake-ups across threads to each invocation
/// (BENCHMARKS.md, "Lambda mode"). Plain HTTP serves concurrent connections on a thread per core.
pub fn main(function: Function) -> ExitCode {
    // A malformed platform variable is reported by `run` (through `serve`), with logging set up.
    let one_at_a_time =
        crate::runtime::Platform::from_env().is_ok_and(|p| p.is_one_event_at_a_time());
    let mut builder = if one_at_a_time {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(function)),
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            ExitCode::FAILURE
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
    crate::telemetry::set_function_name(function.name());
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!(function = function.name(), "{e}");
        ExitCode::FAILURE
    };
    // Before the first HTTPS client: the secrets call below is one.
    match crate::tls::TrustRoots::from_env(&env) {
        Ok(roots) => {
            crate::tls::install(roots);
        }
        Err(e) => return fail(&e),
    }
    // The secret variables from Secrets Manager when SECRETS_ID is set (one call, at start-up).
    let env = match crate::secrets::resolve(env).await {
        Ok(env) => env,
        Err(e) => return fail(&e),
    };
    enum Built {
        Job(Arc<dyn ScheduledJob>),
        Handler(Arc<dyn Handler>),
    }
    let built = match function {
        Function::TimeoutSweeper => build_sweeper(&env)
            .await
            .map(|job| Built::Job(Arc::new(job))),
        Function::EventDispatcher => build_dispatcher(&env)
            .await
            .map(|job| Built::Job(Arc::new(job))),
        Function::BillReconciler => build_reconciler(&env)
            .await
            .map(|job| Built::Job(Arc::new(job))),
        _ => build(function, &env).await.map(Built::Handler),
    };
    // The environment (secret values included) is not kept once the clients are built:
    // only what the configuration parsed lives on.
    drop(env);
    let served = match built {
        Ok(Built::Job(job)) => crate::runtime::serve_schedule(job).await,
        Ok(Built::Handler(handler)) => crate::runtime::serve(handler).await,
        Err(e) => return fail(&e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The handler of an HTTP `function`, wired to DynamoDB and WeChat Pay from `env`.
pub async fn build(function: Function, env: &Env) -> Result<Arc<dyn Handler>, ConfigError> {
    if function == Function::Session {
        // No merchant keys and no table: the session function only talks to WeChat's login.
        return build_session(env);
    }
    let (deps, _) = deps(function, env).await?;
    let identity = || -> Result<IdentitySettings, ConfigError> {
        Ok(IdentitySettings::from_config(&AuthConfig::from_env(env)?))
    };
    Ok(match function {
        Function::PlaceOrder => Arc::new(PlaceOrderHandler {
            deps,
            identity: identity()?,
        }),
        Function::PaymentCallback => Arc::new(PaymentCallbackHandler::new(deps)),
        Function::QueryOrder => Arc::new(QueryOrderHandler {
            deps,
            identity: identity()?,
        }),
        Function::MerchantApi => Arc::new(MerchantApiHandler {
            shipping: Arc::new(shipping_ports(env, &deps)?),
            deps,
            auth: MerchantAuth::from_env(env)?,
        }),
        Function::MpPush => Arc::new(crate::http::mp_push::MpPushHandler {
            keys: push_keys(env)?,
            deps,
        }),
        Function::Session => return build_session(env),
        Function::TimeoutSweeper | Function::EventDispatcher | Function::BillReconciler => {
            return Err(ConfigError {
                variable: "function",
                problem: format!(
                    "{} is a scheduled job, not an HTTP handler",
                    function.name()
                ),
            });
        }
    })
}

/// The session function: `jscode2session` client and token signer from `env`.
fn build_session(env: &Env) -> Result<Arc<dyn Handler>, ConfigError> {
    let config = SessionConfig::from_env(env)?;
    let keys = config.signing_keys.expose();
    let first = keys.first().ok_or_else(|| ConfigError {
        variable: "SESSION_SIGNING_KEY",
        problem: "holds no key".into(),
    })?;
    let signer = TokenSigner::new(
        first.clone(),
        config.issuer.clone(),
        config.appid.clone(),
        config.ttl,
    );
    let published: Vec<PublicKey> = keys
        .iter()
        .map(|k| k.public_key().clone())
        .chain(config.extra_public_keys.iter().cloned())
        .collect();
    let login = HttpWxLogin::new(LoginSettings {
        api_base: config.wx_api_base.clone(),
        appid: config.appid.clone(),
        app_secret: config.app_secret.clone(),
        retry: LoginSettings::default_retry(),
    })
    .map_err(|problem| ConfigError {
        variable: "WX_API_BASE",
        problem,
    })?;
    Ok(Arc::new(SessionHandler::new(
        Arc::new(login),
        signer,
        &published,
        &config.issuer,
    )))
}

/// WeChat's mini-program API (when `WX_APP_SECRET` is set) and `TRADE_MANAGED`, for
/// shipments: its access token is shared through the table.
pub fn shipping_ports(
    env: &Env,
    deps: &Deps,
) -> Result<crate::service::ShippingPorts, ConfigError> {
    let config = crate::config::ShippingConfig::from_env(env)?;
    let wx = match config.app_secret {
        Some(app_secret) => {
            let api = crate::miniprogram::HttpMiniProgram::new(
                crate::miniprogram::MiniProgramSettings {
                    api_base: config.wx_api_base,
                    appid: config.appid,
                    app_secret,
                    retry: RetryPolicy {
                        total_budget: std::time::Duration::from_secs(4),
                        ..RetryPolicy::default()
                    },
                },
                deps.store.clone(),
            )
            .map_err(|problem| ConfigError {
                variable: "WX_API_BASE",
                problem,
            })?;
            Some(Arc::new(api) as Arc<dyn crate::miniprogram::MiniProgramApi>)
        }
        None => {
            if config.trade_managed != crate::config::TradeManaged::Off {
                tracing::warn!(
                    "WX_APP_SECRET is not set: shipments cannot be uploaded to WeChat (set it, or TRADE_MANAGED=off)"
                );
            }
            None
        }
    };
    Ok(crate::service::ShippingPorts::new(wx, config.trade_managed))
}

/// mp-push's keys (DESIGN.md section 12): the console's message-push Token and
/// EncodingAESKey (safe mode), checked at start-up by building them.
fn push_keys(env: &Env) -> Result<crate::miniprogram::push::PushKeys, ConfigError> {
    use crate::miniprogram::push::{PushError, PushKeys};
    let appid = env.required("WXPAY_APPID")?;
    let token = env.required("WX_PUSH_TOKEN")?;
    let (aes_key, from) = match (env.get("WX_PUSH_AES_KEY"), env.get("WX_PUSH_AES_KEY_FILE")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError {
                variable: "WX_PUSH_AES_KEY",
                problem: "set either WX_PUSH_AES_KEY or WX_PUSH_AES_KEY_FILE, not both".into(),
            });
        }
        (Some(v), None) => (v, "WX_PUSH_AES_KEY"),
        (None, Some(path)) => (
            std::fs::read_to_string(&path).map_err(|e| ConfigError {
                variable: "WX_PUSH_AES_KEY_FILE",
                problem: format!("cannot read {path}: {e}"),
            })?,
            "WX_PUSH_AES_KEY_FILE",
        ),
        (None, None) => {
            return Err(ConfigError {
                variable: "WX_PUSH_AES_KEY",
                problem: "is required by mp-push (or WX_PUSH_AES_KEY_FILE)".into(),
            });
        }
    };
    PushKeys::new(&token, aes_key.trim(), &appid).map_err(|e| ConfigError {
        variable: if e == PushError::BadToken {
            "WX_PUSH_TOKEN"
        } else {
            from
        },
        problem: e.to_string(),
    })
}

/// The timeout-sweeper's scheduled job, wired like [`build`]'s handlers.
pub async fn build_sweeper(env: &Env) -> Result<SweeperJob, ConfigError> {
    let (deps, _) = deps(Function::TimeoutSweeper, env).await?;
    let pace = SweeperConfig::from_env(env)?;
    Ok(SweeperJob {
        shipping: shipping_ports(env, &deps)?,
        deps,
        settings: sweep_settings(&pace),
        // Every shard an order may ever have been given, not just today's SWEEPER_SHARDS:
        // a lowered setting must not strand the orders of the shards it dropped. An empty
        // shard costs one small Query.
        shards: crate::config::MAX_SWEEPER_SHARDS,
    })
}

/// The bill-reconciler's job: the store and WeChat Pay (its bill, query and refund query).
pub async fn build_reconciler(env: &Env) -> Result<ReconcilerJob, ConfigError> {
    let (deps, _) = deps(Function::BillReconciler, env).await?;
    Ok(ReconcilerJob { deps })
}

/// The event-dispatcher's job: the store and the merchant's webhook, no WeChat Pay. Without
/// `WEBHOOK_URL` events are kept and nothing is sent (a warning says so).
pub async fn build_dispatcher(env: &Env) -> Result<DispatcherJob, ConfigError> {
    let (store, store_config) = store_from(env).await?;
    let config = WebhookConfig::from_env(env)?;
    // An attempt is the webhook's timeout and its store calls (claim, completion, record);
    // its lease outlives that, so a live dispatcher is never overtaken, a dead one only
    // briefly.
    let lease = config
        .as_ref()
        .map_or(WebhookConfig::DEFAULT_TIMEOUT, |c| c.timeout)
        + ClientSettings::default().operation_timeout * crate::service::STORE_CALLS_PER_ATTEMPT;
    let webhook = match config {
        Some(config) => {
            let webhook = Webhook::new(&config).map_err(|e| ConfigError {
                variable: "WEBHOOK_URL",
                problem: e.to_string(),
            })?;
            Some(Arc::new(webhook) as Arc<dyn WebhookPort>)
        }
        None => {
            tracing::warn!(
                outcome = "no_webhook",
                "WEBHOOK_URL is unset: events are stored and not delivered"
            );
            None
        }
    };
    Ok(DispatcherJob {
        deps: EventDeps {
            store: Arc::new(store),
            webhook,
            clock: system_clock(),
            settings: DispatchSettings {
                // Every shard an event may have been given (see `build_sweeper`).
                shards: crate::config::MAX_SWEEPER_SHARDS.max(store_config.sweeper_shards),
                lease: time::Duration::try_from(lease).unwrap_or(time::Duration::minutes(1)),
                deadline_margin: time::Duration::try_from(lease)
                    .unwrap_or(time::Duration::minutes(1)),
                ..DispatchSettings::default()
            },
        },
    })
}

/// The store of `env`'s table, built without a network call.
async fn store_from(env: &Env) -> Result<(DynamoStore, StoreConfig), ConfigError> {
    let store_config = StoreConfig::from_env(env)?;
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
    // WeChat Pay waits 5 s for a notification's answer: keep DynamoDB calls well inside it
    // and answer 500 rather than late (DESIGN.md section 8).
    let client = store::connect(
        store_config.endpoint.as_deref(),
        &access,
        &ClientSettings::default(),
    )
    .await;
    let store = DynamoStore::new(client, store_config.table.clone())
        .with_shards(store_config.sweeper_shards);
    Ok((store, store_config))
}

/// The sweeper stops taking work early enough that an order it starts, at its clients'
/// worst case, still ends before the invocation's deadline.
fn sweep_settings(pace: &SweeperConfig) -> SweepSettings {
    SweepSettings {
        grace: time::Duration::seconds(pace.grace.as_secs() as i64),
        concurrency: pace.concurrency,
        deadline_margin: SweepSettings::worst_case_per_order(
            ClientSettings::default().operation_timeout,
            retry_policy(Function::TimeoutSweeper).total_budget,
        ),
        ..SweepSettings::default()
    }
}

/// WeChat Pay's retry budget per call: WeChat Pay waits 5 s for a notification's answer and
/// a user waits on query-order, so those two keep calls short (answer 500, or the local
/// state, rather than late); the sweeper's per-call budget bounds its deadline margin.
fn retry_policy(function: Function) -> RetryPolicy {
    let total_budget = match function {
        Function::PaymentCallback | Function::QueryOrder => std::time::Duration::from_secs(3),
        Function::TimeoutSweeper => std::time::Duration::from_secs(4),
        _ => RetryPolicy::default().total_budget,
    };
    RetryPolicy {
        total_budget,
        ..RetryPolicy::default()
    }
}

/// The ports and settings of `function`: DynamoDB and WeChat Pay clients, built without a
/// network call.
async fn deps(function: Function, env: &Env) -> Result<(Deps, StoreConfig), ConfigError> {
    let wechatpay = match function {
        // mp-push reads the store only; it needs no merchant private key either.
        Function::PaymentCallback | Function::MpPush => WechatPayConfig::for_notifications(env)?,
        // place-order sends notify_url with each prepay, merchant-api with each refund. The
        // sweeper's (for refunds WeChat Pay was not ready for) is optional: without it those
        // stay REQUESTED, never refused (the deploy files set it).
        _ => WechatPayConfig::from_env(
            env,
            matches!(function, Function::PlaceOrder | Function::MerchantApi),
        )?,
    };
    let (store, store_config) = store_from(env).await?;
    let retry = retry_policy(function);
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
        catalog: Default::default(),
    };
    Ok((deps, store_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12.5: the sweeper starts no order it could not finish before the deadline at its
    /// clients' worst case (4 DynamoDB calls of 3 s, 3 WeChat Pay calls of 4 s), and that
    /// margin leaves most of the deployed 50 s invocation for work.
    #[test]
    fn the_sweeper_stops_taking_work_a_worst_case_order_before_its_deadline() {
        let settings = sweep_settings(&SweeperConfig {
            grace: std::time::Duration::from_secs(30),
            concurrency: 8,
        });
        let store = ClientSettings::default().operation_timeout;
        let wechat = retry_policy(Function::TimeoutSweeper).total_budget;
        let worst = store * 4 + wechat * 3;
        assert_eq!(
            settings.deadline_margin,
            time::Duration::try_from(worst).unwrap()
        );
        assert_eq!(settings.deadline_margin, time::Duration::seconds(24));
        assert!(settings.deadline_margin < time::Duration::seconds(50) / 2);
        assert_eq!(settings.concurrency, 8);
    }
}
