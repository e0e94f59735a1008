//! The all-in-one sandbox as a value: keys, the embedded DynamoDB-compatible engine on a
//! SQLite file, the seeded catalog, the WeChat Pay simulator, `sandbox.env`, and the
//! functions, built by `shared::app::build` exactly as the binaries build them and served on
//! one port. `serve` runs one until Ctrl-C; `demo` runs one against a fresh data dir.
//!
//! The functions' DynamoDB region and dummy credentials come from the same variables as
//! `sandbox.env` ([`crate::envfile`]), so the process environment is never consulted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shared::app::{self, Function};
use shared::config::{ConfigError, Env};
use shared::dispatcher::DispatcherJob;
use shared::runtime::{RuntimeError, serve_http_until};
use shared::service::dispatch_due;
use shared::service::{SweepSummary, sweep_expired};
use shared::store::embedded::{Embedded, Storage};
use shared::store::{ClientSettings, DynamoStore, StoreError, StoreSupport};
use shared::sweeper::SweeperJob;
use shared::webhook::WebhookSecrets;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, CatalogError, SeedReport};
use crate::envfile::{self, EnvInputs};
use crate::keys::{KeysError, SandboxKeys};
use crate::router::SandboxRouter;
use crate::simulator::{Simulator, SimulatorConfig, SimulatorError, SimulatorHandle};
use crate::webhooks::WebhookReceiver;

/// The sandbox's table (`ORDERS_TABLE`).
pub const TABLE_NAME: &str = "wxpay-orders-local";
/// The SQLite file under the data dir that holds the table.
pub const DATABASE_FILE: &str = "orders.sqlite";
/// The variables file under the data dir.
pub const ENV_FILE: &str = "sandbox.env";
/// The simulated mini-program and merchant.
pub const APPID: &str = "wx5a4db0c0de000001";
pub const MCHID: &str = "1900000109";

/// WeChat Pay's own minimum distance between a prepay and its `time_expire`.
const WECHAT_MIN_AHEAD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keys: {0}")]
    Keys(#[from] KeysError),
    #[error("embedded DynamoDB: {0}")]
    Store(#[from] StoreError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error(
        "cannot listen on {addr} for the functions: {source} (another sandbox running? pick another --port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("WeChat Pay simulator: {0} (another sandbox running? pick another --wechat-port)")]
    SimulatorBind(SimulatorError),
    #[error("WeChat Pay simulator: {0}")]
    Simulator(SimulatorError),
    #[error("cannot write {path}: {source}")]
    EnvFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the functions: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Internal(String),
}

/// How to start a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub functions_addr: SocketAddr,
    pub wechat_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub order_ttl: Duration,
    /// How often the in-process timeout-sweeper runs (`--sweep-every`).
    pub sweep_every: Duration,
    pub retry_scale: f64,
    /// The simulator's `--refund-delay` and `--refund-spacing`.
    pub refund_delay: Duration,
    pub refund_spacing: Duration,
    /// `--webhook-fail`: the receiver answers 500 to this many good deliveries first.
    pub webhook_fail: u32,
    /// `--webhook-url`: where events go instead of the sandbox's own receiver.
    pub webhook_url: Option<String>,
    /// `--push-url`: where the simulated console pushes; the sandbox's mp-push when `None`.
    pub push_url: Option<String>,
    pub catalog: Catalog,
}

/// The least time between now and a new order's `time_expire` the simulator accepts:
/// WeChat Pay's 60 s for ordinary TTLs; for a TTL under two minutes, half of it, so an order
/// with a short `--order-ttl` can still be prepaid a moment after it was created (WeChat Pay
/// compares whole seconds, and the prepay comes after the order's write).
/// The simulated console's message push: the sandbox's own mp-push route, with the Token and
/// EncodingAESKey `sandbox.env` gives mp-push.
pub fn sandbox_push_target(
    functions_url: &str,
    keys: &crate::keys::SandboxKeys,
) -> crate::simulator::PushTarget {
    crate::simulator::PushTarget {
        url: format!("{functions_url}/notify/wechat-mp"),
        token: keys.push_token(),
        encoding_aes_key: keys.push_aes_key(),
    }
}

pub fn min_time_expire_ahead(order_ttl: Duration) -> Duration {
    WECHAT_MIN_AHEAD.min(Duration::from_secs(order_ttl.as_secs() / 2))
}

/// A running sandbox. [`shutdown`](Self::shutdown) stops it in order; dropping it stops the
/// servers without waiting.
pub struct Sandbox {
    data_dir: PathBuf,
    keys: SandboxKeys,
    catalog: Catalog,
    seed: SeedReport,
    functions_url: String,
    env_file: PathBuf,
    order_ttl: Duration,
    sweep_every: Duration,
    refund_spacing: Duration,
    retry_scale: f64,
    store: Arc<dyn StoreSupport>,
    webhooks: Arc<WebhookReceiver>,
    /// `--webhook-url`, when events go elsewhere.
    events_url: Option<String>,
    simulator: Option<SimulatorHandle>,
    engine: Option<Embedded>,
    server: Option<JoinHandle<Result<(), RuntimeError>>>,
    stop: Option<oneshot::Sender<()>>,
    sweep_task: Option<JoinHandle<()>>,
    dispatch_task: Option<JoinHandle<()>>,
    /// Stops both timers (the sweeper's and the dispatcher's).
    sweep_stop: Option<watch::Sender<bool>>,
}

impl Sandbox {
    pub async fn start(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let data_dir = prepare_data_dir(&settings.data_dir)?;

        // RSA key generation takes a moment on first start: off the async workers.
        let keys_dir = data_dir.clone();
        let keys = tokio::task::spawn_blocking(move || SandboxKeys::load_or_generate(&keys_dir))
            .await
            .map_err(|e| SandboxError::Internal(format!("key generation task: {e}")))??;

        let database = data_dir.join(DATABASE_FILE);
        let engine = Embedded::start(
            Storage::File(&database),
            TABLE_NAME,
            &ClientSettings::local(),
        )
        .await?;
        let store: Arc<dyn StoreSupport> =
            Arc::new(DynamoStore::new(engine.client().clone(), TABLE_NAME));
        let seed = settings.catalog.seed(store.as_ref()).await?;

        let listener = tokio::net::TcpListener::bind(settings.functions_addr)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: settings.functions_addr,
                source,
            })?;
        let functions_addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: settings.functions_addr,
            source,
        })?;
        let functions_url = format!("http://{functions_addr}");

        let mut sim_config = SimulatorConfig::new(settings.wechat_addr, APPID, MCHID, &keys);
        sim_config.retry_scale = settings.retry_scale;
        sim_config.refund_delay = settings.refund_delay;
        sim_config.refund_spacing = settings.refund_spacing;
        sim_config.min_time_expire_ahead = min_time_expire_ahead(settings.order_ttl);
        // The simulated console pushes settlements to the sandbox's own mp-push route.
        let mut push = sandbox_push_target(&functions_url, &keys);
        if let Some(url) = &settings.push_url {
            push.url = url.clone();
        }
        sim_config.push = Some(push);
        let simulator = Simulator::start(sim_config).await.map_err(|e| match e {
            SimulatorError::Bind { .. } => SandboxError::SimulatorBind(e),
            SimulatorError::Config(_) => SandboxError::Simulator(e),
        })?;

        let vars = envfile::variables(&EnvInputs {
            keys: &keys,
            appid: APPID,
            mchid: MCHID,
            functions_url: &functions_url,
            wechat_url: &simulator.base_url(),
            table: TABLE_NAME,
            dynamodb_endpoint: engine.endpoint(),
            order_ttl_secs: settings.order_ttl.as_secs(),
            webhook_url: settings.webhook_url.as_deref(),
        });
        let env_file = data_dir.join(ENV_FILE);
        envfile::write_private(&env_file, &envfile::render(&vars, &env_file)).map_err(
            |source| SandboxError::EnvFile {
                path: env_file.clone(),
                source,
            },
        )?;

        // The same path as the function binaries: configuration from these variables, then
        // `shared::app::build`.
        let env_map = || {
            Env::from_map(
                vars.iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let place_order = app::build(Function::PlaceOrder, &env_map()).await?;
        let payment_callback = app::build(Function::PaymentCallback, &env_map()).await?;
        let session = app::build(Function::Session, &env_map()).await?;
        let query_order = app::build(Function::QueryOrder, &env_map()).await?;
        let merchant_api = app::build(Function::MerchantApi, &env_map()).await?;
        let mp_push = app::build(Function::MpPush, &env_map()).await?;
        // The timeout-sweeper as its binary builds it, run here on an interval instead of a
        // schedule event.
        let sweeper = Arc::new(app::build_sweeper(&env_map()).await?);
        // The event-dispatcher likewise: the timer path (as on SCF) every second, delivering
        // to the receiver below.
        let dispatcher = Arc::new(app::build_dispatcher(&env_map()).await?);

        let webhooks = Arc::new(WebhookReceiver::new(
            WebhookSecrets::one(keys.webhook_secret().clone()),
            settings.webhook_fail,
        ));
        let router = Arc::new(SandboxRouter {
            place_order,
            payment_callback,
            query_order,
            session,
            merchant_api,
            mp_push,
            store: store.clone(),
            catalog: settings.catalog.clone(),
            webhooks: webhooks.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_http_until(router, listener, async move {
            let _ = stopped.await;
        }));
        let (sweep_stop, sweep_stopped) = watch::channel(false);
        let dispatch_task = spawn_dispatcher(dispatcher, DISPATCH_EVERY, sweep_stopped.clone());
        let sweep_task = spawn_sweeper(sweeper, settings.sweep_every, sweep_stopped);

        Ok(Sandbox {
            data_dir,
            keys,
            catalog: settings.catalog,
            seed,
            functions_url,
            env_file,
            order_ttl: settings.order_ttl,
            sweep_every: settings.sweep_every,
            refund_spacing: settings.refund_spacing,
            retry_scale: settings.retry_scale,
            store,
            webhooks,
            events_url: settings.webhook_url,
            simulator: Some(simulator),
            engine: Some(engine),
            server: Some(server),
            stop: Some(stop),
            sweep_task: Some(sweep_task),
            dispatch_task: Some(dispatch_task),
            sweep_stop: Some(sweep_stop),
        })
    }

    /// The absolute data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn keys(&self) -> &SandboxKeys {
        &self.keys
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn seed_report(&self) -> SeedReport {
        self.seed
    }

    /// `http://127.0.0.1:<port>` of the functions.
    pub fn functions_url(&self) -> &str {
        &self.functions_url
    }

    /// `http://127.0.0.1:<port>` of the WeChat Pay simulator.
    pub fn wechat_url(&self) -> String {
        self.simulator
            .as_ref()
            .map(SimulatorHandle::base_url)
            .unwrap_or_default()
    }

    pub fn dynamodb_endpoint(&self) -> &str {
        self.engine.as_ref().map_or("", Embedded::endpoint)
    }

    pub fn database_file(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }

    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    pub fn order_ttl(&self) -> Duration {
        self.order_ttl
    }

    pub fn sweep_every(&self) -> Duration {
        self.sweep_every
    }

    /// Least time the simulator wants between two refunds of one order.
    pub fn refund_spacing(&self) -> Duration {
        self.refund_spacing
    }

    pub fn retry_scale(&self) -> f64 {
        self.retry_scale
    }

    pub fn store(&self) -> &Arc<dyn StoreSupport> {
        &self.store
    }

    /// The merchant's webhook receiver (`/sandbox/webhooks`).
    pub fn webhooks(&self) -> &Arc<WebhookReceiver> {
        &self.webhooks
    }

    /// The sandbox's own receiver on the functions port (`WEBHOOK_URL` of `sandbox.env`
    /// unless `--webhook-url` named another).
    pub fn webhook_url(&self) -> String {
        format!("{}{}", self.functions_url, envfile::WEBHOOK_PATH)
    }

    /// Where the dispatcher sends events: `--webhook-url`, else the sandbox's receiver.
    pub fn events_url(&self) -> String {
        self.events_url
            .clone()
            .unwrap_or_else(|| self.webhook_url())
    }

    pub fn simulator(&self) -> Option<&SimulatorHandle> {
        self.simulator.as_ref()
    }

    /// Resolves when the functions' server stopped on its own (it should not).
    pub async fn server_stopped(&mut self) -> String {
        match self.server.as_mut() {
            Some(server) => {
                let outcome = server.await;
                self.server = None;
                match outcome {
                    Ok(Ok(())) => "the functions' server stopped".to_owned(),
                    Ok(Err(e)) => format!("the functions' server failed: {e}"),
                    Err(e) => format!("the functions' server task failed: {e}"),
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the timeout-sweeper (letting a sweep in progress finish, for a while), the
    /// functions (letting requests in flight finish), then the simulator, then the engine.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        if let Some(stop) = self.sweep_stop.take() {
            let _ = stop.send(true);
        }
        for (task, name) in [
            (self.sweep_task.take(), "timeout-sweeper"),
            (self.dispatch_task.take(), "event-dispatcher"),
        ] {
            if let Some(mut task) = task
                && tokio::time::timeout(SWEEP_STOP_WAIT, &mut task)
                    .await
                    .is_err()
            {
                tracing::warn!("{name} still busy at shutdown; abandoning its run");
                task.abort();
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "functions' server stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "functions' server task failed"),
            }
        }
        if let Some(simulator) = self.simulator.take() {
            simulator.shutdown().await;
        }
        if let Some(engine) = self.engine.take() {
            engine.stop().await?;
        }
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in [self.sweep_task.take(), self.dispatch_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// How often the in-process event-dispatcher looks for due events.
pub const DISPATCH_EVERY: Duration = Duration::from_secs(1);

/// Runs the event-dispatcher's timer path every `every` until `stop`, as the sweeper runs;
/// a run that delivered or failed something prints one line.
fn spawn_dispatcher(
    job: Arc<DispatcherJob>,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(every, stop, move || {
        let job = Arc::clone(&job);
        async move {
            let window = time::Duration::try_from(every).unwrap_or(time::Duration::SECOND);
            let deadline = (job.deps.clock)() + window + job.deps.settings.deadline_margin;
            let s = dispatch_due(&job.deps, Some(deadline)).await;
            (s.scanned > 0 || s.failed > 0).then(|| {
                format!(
                    "sandbox: event-dispatcher: {} due: {} delivered, {} retrying, {} dead, {} skipped, {} failed",
                    s.scanned, s.delivered, s.retrying, s.dead, s.skipped, s.failed
                )
            })
        }
    })
}

/// Runs `run` every `every` (the first at once, catching up after a restart) until `stop`
/// says so or its sender is gone; a run that outlasts the interval delays the next one, so
/// runs never overlap. A run's line, if it has one, is printed.
fn spawn_every<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, run: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = ticks.tick() => {}
            }
            if let Some(line) = run().await {
                println!("{line}");
            }
        }
    })
}

/// How long shutdown waits for a sweep in progress.
const SWEEP_STOP_WAIT: Duration = Duration::from_secs(10);

/// Sweeps every `every` ([`spawn_every`]): sweeps of this sandbox never overlap, and each
/// one that did something prints its summary line.
fn spawn_sweeper(
    job: Arc<SweeperJob>,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(every, stop, move || {
        let job = Arc::clone(&job);
        async move { sweep_line(&sweep_once(&job, every).await) }
    })
}

/// One sweep, as the deployed function runs it, with one interval to take up work (the
/// deadline leaves the job's margin on top, so it still starts work with a short interval).
async fn sweep_once(job: &SweeperJob, every: Duration) -> SweepSummary {
    let window = time::Duration::try_from(every).unwrap_or(time::Duration::DAY);
    let deadline = job.deps.now() + window + job.settings.deadline_margin;
    let summary = sweep_expired(&job.deps, &job.settings, job.shards, Some(deadline)).await;
    // Then the flash-sale skus' stock shards, as the deployed sweeper does.
    shared::service::rebalance_stock(&job.deps, Some(deadline)).await;
    summary
}

/// The summary line of a sweep that did something (None for an idle one).
pub fn sweep_line(s: &SweepSummary) -> Option<String> {
    if s.scanned == 0 && s.failed == 0 && !s.stopped_early {
        return None;
    }
    Some(format!(
        "sandbox: timeout-sweeper: {} due: {} closed, {} paid, {} skipped, {} failed, {} anomalies{}",
        s.scanned,
        s.closed,
        s.paid,
        s.skipped,
        s.failed,
        s.anomalies,
        if s.stopped_early {
            " (stopped at its deadline; the next sweep continues)"
        } else {
            ""
        }
    ))
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, SandboxError> {
    let io_err = |source| SandboxError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    std::fs::canonicalize(dir).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ttls_relax_the_minute_rule_only_as_far_as_needed() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(min_time_expire_ahead(secs(1800)), secs(60));
        assert_eq!(min_time_expire_ahead(secs(120)), secs(60));
        assert_eq!(min_time_expire_ahead(secs(60)), secs(30));
        assert_eq!(min_time_expire_ahead(secs(4)), secs(2));
        assert_eq!(min_time_expire_ahead(secs(1)), secs(0));
    }
}
