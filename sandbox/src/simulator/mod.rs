//! The WeChat Pay v3 simulator: a local HTTP server that answers the JSAPI, refund and bill
//! calls the backend makes exactly as WeChat Pay does (paths, merchant-signature checks, signed
//! responses, `{code, message}` errors), and plays the user's side through `/sandbox/*`.
//!
//! - `wechat`: the WeChat Pay API surface, request authentication and response signing.
//! - `control`: the `/sandbox/*` endpoints (pay, user paying, settle a refund, fault
//!   injection, inspection).
//! - `notify`: delivering `TRANSACTION.SUCCESS` and `REFUND.*` notifications on WeChat Pay's
//!   retry schedule.
//! - `state`: the simulated transactions and refunds and what happened to them.
//! - `login`: WeChat's mini-program login, `GET /sns/jscode2session` (not WeChat Pay's).
//! - `bill`: the day's trade bill of the simulated transactions and refunds, in WeChat Pay's
//!   ALL format, and its download tokens.
//!
//! `wechat`, `control` and `login` each build their router from a list of [`Endpoint`]s,
//! the lists `sandbox --help` prints.

mod bill;
/// WeChat Pay's trade bill format as the simulator writes it.
pub mod bills {
    pub use super::bill::{BillEntry, EntryKind, gzip, render};
}
mod control;
pub mod login;
mod notify;
mod shipping;
mod state;
mod wechat;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodFilter, MethodRouter};
use serde::{Deserialize, Serialize};
use shared::wechatpay::{ApiV3Key, RsaPrivateKey, RsaPublicKey, Transaction};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::keys::SandboxKeys;

use shared::wechatpay::RefundState;
pub use state::{DeliveryAttempt, NotificationStatus, SimRefund, SimRefundAmount, SimTransaction};

/// WeChat Pay's retry intervals after a failed notification: 15s/15s/30s/3m/10m/20m/30m/
/// 30m/30m/60m/3h/3h/3h/6h/6h, 24 h 4 min in all (reference section 3.6).
pub const RETRY_SCHEDULE: [Duration; 15] = [
    Duration::from_secs(15),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(3 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(20 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(3 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(6 * 3600),
];

/// WeChat Pay's minimum distance between the order and its `time_expire`.
pub const WECHAT_MIN_TIME_EXPIRE_AHEAD: Duration = Duration::from_secs(60);

/// How long after accepting a refund the simulator settles it SUCCESS (`--refund-delay`).
pub const DEFAULT_REFUND_DELAY: Duration = Duration::from_secs(2);

/// WeChat Pay's least distance between two refunds of one order ("同一笔订单多次退款的请求需
/// 相隔1分钟", `--refund-spacing`).
pub const WECHAT_REFUND_SPACING: Duration = Duration::from_secs(60);

/// How long WeChat Pay waits for the merchant to answer a notification.
pub const WECHAT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the simulator needs: who the merchant is, the key that verifies its requests,
/// and the WeChat Pay side's signing key, public-key id and the APIv3 key.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Where to listen: `127.0.0.1:3001` in the sandbox, `127.0.0.1:0` in tests.
    pub addr: SocketAddr,
    pub appid: String,
    pub mchid: String,
    /// The merchant API certificate serial requests must name in `serial_no`.
    pub merchant_serial_no: String,
    pub merchant_public_key: RsaPublicKey,
    /// Signs every response and notification (the simulated WeChat Pay public key's pair).
    pub platform_private_key: RsaPrivateKey,
    /// `PUB_KEY_ID_...`, sent as `Wechatpay-Serial`.
    pub public_key_id: String,
    pub apiv3_key: ApiV3Key,
    /// The mini-program's AppSecret `/sns/jscode2session` insists on.
    pub app_secret: String,
    /// Multiplies [`RETRY_SCHEDULE`]: 1.0 is WeChat Pay's pace, 0.001 turns 15 s into 15 ms.
    pub retry_scale: f64,
    /// Least distance between now and a new order's `time_expire`: WeChat Pay's 60 s, or
    /// less in a sandbox started with a short `--order-ttl` (the one rule it relaxes).
    pub min_time_expire_ahead: Duration,
    /// How long a notification delivery may take before it counts as failed (WeChat: 5 s).
    pub delivery_timeout: Duration,
    /// A refund stays PROCESSING this long, then settles SUCCESS and is notified.
    pub refund_delay: Duration,
    /// A refund of an order sooner than this after its previous accepted refund answers
    /// `429 FREQUENCY_LIMITED` (WeChat Pay: 1 minute).
    pub refund_spacing: Duration,
    /// Platform-certificate mode: `(serial, PEM)` of certificates of `platform_private_key`
    /// that `/v3/certificates` serves, the first one signing. Empty: a public-key merchant
    /// (signed under `public_key_id`; `/v3/certificates` answers 404).
    pub certificates: Vec<(String, String)>,
    /// How long after a payment WeChat's trade management still answers `10060001` (not
    /// indexed yet) to its shipping upload (`--index-lag`).
    pub shipping_index_lag: Duration,
    /// Where the simulated mini-program console sends its message pushes (settlements),
    /// signed and encrypted in safe mode; `None`: pushes are not sent.
    pub push: Option<PushTarget>,
}

/// The console's message push settings (`--push-url`, `WX_PUSH_TOKEN`, `WX_PUSH_AES_KEY`).
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub url: String,
    pub token: String,
    pub encoding_aes_key: String,
}

/// WeChat indexes a payment for trade management within seconds (staff: "try after 10 s").
pub const DEFAULT_SHIPPING_INDEX_LAG: Duration = Duration::from_secs(5);

impl SimulatorConfig {
    /// WeChat Pay's rules and pace, with the sandbox's keys.
    pub fn new(
        addr: SocketAddr,
        appid: impl Into<String>,
        mchid: impl Into<String>,
        keys: &SandboxKeys,
    ) -> Self {
        SimulatorConfig {
            addr,
            appid: appid.into(),
            mchid: mchid.into(),
            merchant_serial_no: keys.merchant_serial_no().to_owned(),
            merchant_public_key: keys.merchant_public_key(),
            platform_private_key: keys.wechatpay_key().clone(),
            public_key_id: keys.wechatpay_public_key_id().to_owned(),
            apiv3_key: keys.apiv3_key().clone(),
            app_secret: keys.app_secret().to_owned(),
            retry_scale: 1.0,
            min_time_expire_ahead: WECHAT_MIN_TIME_EXPIRE_AHEAD,
            delivery_timeout: WECHAT_NOTIFY_TIMEOUT,
            refund_delay: DEFAULT_REFUND_DELAY,
            refund_spacing: WECHAT_REFUND_SPACING,
            certificates: Vec::new(),
            shipping_index_lag: DEFAULT_SHIPPING_INDEX_LAG,
            push: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// A WeChat-Pay-style error: `{code, message, detail?}` with its HTTP status. The simulator's
/// control endpoints answer their refusals in the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The next matching WeChat Pay API requests answer this error instead (`POST /sandbox/fail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Matches requests whose path starts with this, e.g. `/v3/pay/transactions/jsapi`.
    pub path_prefix: String,
    /// Only requests with this verb (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The error status to answer; a 2xx status answers the real response instead, after
    /// `delay_ms` (a slow but working WeChat Pay).
    #[serde(default = "Fault::default_status")]
    pub status: u16,
    #[serde(default = "Fault::default_code")]
    pub code: String,
    #[serde(default = "Fault::default_message")]
    pub message: String,
    /// How many requests it hits before it is used up.
    #[serde(default = "Fault::default_times")]
    pub times: u32,
    /// Wait this long before answering (a slow WeChat Pay, to exercise client timeouts).
    #[serde(default)]
    pub delay_ms: u64,
    /// Carry the request out before answering the error: the ambiguous outcome where
    /// WeChat Pay did the work but the merchant never learnt it.
    #[serde(default)]
    pub process: bool,
    /// With a 2xx `status` on `/v3/billdownload/file`: the bill downloads with one figure
    /// altered after its `hash_value` was given (damage or tampering on the way), so only
    /// the SHA-1 check can tell.
    #[serde(default)]
    pub tamper: bool,
}

impl Fault {
    /// `times` answers of `status` / `code` for requests under `path_prefix`.
    pub fn new(
        path_prefix: impl Into<String>,
        status: u16,
        code: impl Into<String>,
        times: u32,
    ) -> Self {
        Fault {
            path_prefix: path_prefix.into(),
            method: None,
            status,
            code: code.into(),
            message: Self::default_message(),
            times,
            delay_ms: 0,
            process: false,
            tamper: false,
        }
    }

    /// The next `times` trade-bill requests answer `400 STATEMENT_CREATING`: the bill is not
    /// generated yet (WeChat Pay's state before about 10:00 Beijing time the next day).
    pub fn bill_not_ready(times: u32) -> Self {
        Fault {
            message: "账单生成中，请于次日上午10点后再获取".to_owned(),
            ..Fault::new("/v3/bill/tradebill", 400, "STATEMENT_CREATING", times)
        }
    }

    /// The next `times` bill downloads are altered after their hash (see [`Fault::tamper`]).
    pub fn tampered_bill(times: u32) -> Self {
        Fault {
            tamper: true,
            message: "tampered".to_owned(),
            ..Fault::new("/v3/billdownload/file", 200, "TAMPERED", times)
        }
    }

    fn default_status() -> u16 {
        500
    }

    fn default_code() -> String {
        "SYSTEM_ERROR".to_owned()
    }

    fn default_message() -> String {
        "系统错误".to_owned()
    }

    fn default_times() -> u32 {
        1
    }
}

/// The user pays (`POST /sandbox/pay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRequest {
    pub out_trade_no: String,
    /// How many copies of the notification go out at once (0: none, a lost notification).
    #[serde(default = "PayRequest::default_deliveries")]
    pub deliveries: u32,
    /// Charge this amount instead of the order's, to simulate a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_total: Option<i64>,
    /// Accept the payment even though the order is CLOSED, past `time_expire` or already
    /// paid (then as a second transaction): the races the backend must record as anomalies.
    #[serde(default)]
    pub force: bool,
}

impl PayRequest {
    pub fn new(out_trade_no: impl Into<String>) -> Self {
        PayRequest {
            out_trade_no: out_trade_no.into(),
            deliveries: 1,
            amount_total: None,
            force: false,
        }
    }

    fn default_deliveries() -> u32 {
        1
    }
}

/// What `POST /sandbox/pay` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayOutcome {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub trade_state: String,
    /// The amount charged (the override when one was given).
    pub amount_total: i64,
    pub notification_id: String,
    pub deliveries: u32,
}

/// What `POST /sandbox/refunds/{out_refund_no}` answers: the refund as it now stands and
/// its notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundSettled {
    pub refund: SimRefund,
    pub notification_id: String,
    pub deliveries: u32,
}

/// Namespace for [`Simulator::start`].
pub struct Simulator;

impl Simulator {
    /// Binds `config.addr` and serves until [`SimulatorHandle::shutdown`] (or until the
    /// handle is dropped).
    pub async fn start(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
        if !config.retry_scale.is_finite() || config.retry_scale < 0.0 {
            return Err(SimulatorError::Config(
                "retry_scale must be a finite number >= 0".into(),
            ));
        }
        if config.appid.is_empty() || config.mchid.is_empty() || config.public_key_id.is_empty() {
            return Err(SimulatorError::Config(
                "appid, mchid and public_key_id must not be empty".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Notifications go straight to notify_url, as WeChat Pay's do, never via a proxy
            // picked up from the environment.
            .no_proxy()
            .user_agent("Mozilla/4.0")
            .build()
            .map_err(|e| SimulatorError::Config(format!("HTTP client: {e}")))?;

        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| SimulatorError::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimulatorError::Bind {
                addr: config.addr,
                source,
            })?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let signing = Mutex::new(Signing {
            serial: config.certificates.first().map_or_else(
                || config.public_key_id.clone(),
                |(serial, _)| serial.clone(),
            ),
            certificates: config.certificates.clone(),
        });
        let push = Mutex::new(config.push.clone());
        let shared = Arc::new(Shared {
            signing,
            config,
            http,
            store: Mutex::new(state::Store::default()),
            shipping: Mutex::new(shipping::ShippingState::default()),
            push,
            shutdown: shutdown_rx.clone(),
            tasks: Mutex::new(JoinSet::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        let app = router(shared.clone());
        let mut signal = shutdown_rx;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = signal.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, "WeChat Pay simulator listening");
        Ok(SimulatorHandle {
            addr,
            shared,
            shutdown_tx,
            server: Some(server),
        })
    }
}

/// One route of the simulator. Each submodule builds its router from its list of these
/// (`Endpoint::register`) and `sandbox --help` and `serve` print the same lists, so what
/// they say is what is served.
pub struct Endpoint {
    pub method: &'static str,
    /// axum's syntax: `{name}` is one segment.
    pub path: &'static str,
    pub what: &'static str,
    /// The handler, for the method it is given (`|m| on(m, handler)`).
    handler: fn(MethodFilter) -> MethodRouter<Arc<Shared>>,
}

impl Endpoint {
    /// `router` with every endpoint of `list` added (one path may take several methods).
    fn register(router: Router<Arc<Shared>>, list: &[Endpoint]) -> Router<Arc<Shared>> {
        list.iter().fold(router, |router, e| {
            // Only a typo in a list above can fail here, and every simulator test builds this
            // router, so it fails there rather than at a user's start.
            let filter = http::Method::from_bytes(e.method.as_bytes())
                .ok()
                .and_then(|m| MethodFilter::try_from(m).ok())
                .unwrap_or_else(|| panic!("simulator route {} {}: bad method", e.method, e.path));
            router.route(e.path, (e.handler)(filter))
        })
    }
}

/// What the simulator serves as WeChat: the WeChat Pay API (merchant-signed requests, signed
/// answers) and the mini-program login.
pub fn wechat_endpoints() -> impl Iterator<Item = &'static Endpoint> {
    wechat::ROUTES
        .iter()
        .chain(login::ROUTES)
        .chain(shipping::ROUTES)
}

/// The simulator's own `/sandbox/*` controls: the user's side of a payment, fault injection
/// and inspection.
pub fn control_endpoints() -> impl Iterator<Item = &'static Endpoint> {
    control::ROUTES.iter().chain(shipping::CONTROL_ROUTES)
}

fn router(shared: Arc<Shared>) -> Router {
    wechat::routes(shared.clone())
        .merge(control::routes())
        .fallback(wechat::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            wechat::sign_responses,
        ))
        // After the layer: WeChat's login API does not sign like WeChat Pay.
        .merge(login::routes())
        .merge(shipping::routes())
        .with_state(shared)
}

/// What the server's handlers and the delivery tasks share.
/// What WeChat Pay signs with now, and the certificates it publishes (a rotation changes
/// both while it runs).
pub(crate) struct Signing {
    pub(crate) serial: String,
    pub(crate) certificates: Vec<(String, String)>,
}

pub(crate) struct Shared {
    pub(crate) config: SimulatorConfig,
    pub(crate) signing: Mutex<Signing>,
    pub(crate) http: reqwest::Client,
    pub(crate) store: Mutex<state::Store>,
    /// WeChat's trade management: access tokens and shipments.
    pub(crate) shipping: Mutex<shipping::ShippingState>,
    /// Where message pushes go now (the configured target, or one set later).
    pub(crate) push: Mutex<Option<PushTarget>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Notification deliveries in progress; aborted on shutdown.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    /// Deliveries run here even when a payment is triggered from outside the runtime.
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Shared {
    /// The serial responses and notifications are signed under now.
    pub(crate) fn signing_serial(&self) -> String {
        match self.signing.lock() {
            Ok(s) => s.serial.clone(),
            Err(p) => p.into_inner().serial.clone(),
        }
    }

    pub(crate) fn published_certificates(&self) -> Vec<(String, String)> {
        match self.signing.lock() {
            Ok(s) => s.certificates.clone(),
            Err(p) => p.into_inner().certificates.clone(),
        }
    }

    /// The store, even if a panicking thread poisoned its lock: every update is applied
    /// whole under the lock, so the data stays consistent.
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, state::Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished deliveries so the set does not grow with every payment.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
    }
}

/// A running simulator. Dropping it stops the server; [`shutdown`](Self::shutdown) also
/// waits for it to finish.
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimulatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A certificate rotation (platform-certificate mode): `/v3/certificates` publishes this
    /// one too, and responses and notifications are signed under its serial from now on.
    pub fn rotate_certificate(&self, serial: &str, pem: &str) {
        let mut signing = match self.shared.signing.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        signing
            .certificates
            .push((serial.to_owned(), pem.to_owned()));
        signing.serial = serial.to_owned();
    }

    /// `http://127.0.0.1:<port>`: the `WXPAY_API_BASE` of a backend using this simulator.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &SimulatorConfig {
        &self.shared.config
    }

    /// The simulated transaction as the simulator keeps it.
    pub fn transaction(&self, out_trade_no: &str) -> Option<SimTransaction> {
        self.shared.store().transaction(out_trade_no)
    }

    /// Every simulated transaction, oldest first.
    pub fn transactions(&self) -> Vec<SimTransaction> {
        self.shared.store().transactions()
    }

    /// What query-order by out_trade_no would answer now.
    pub fn wechat_transaction(&self, out_trade_no: &str) -> Option<Transaction> {
        self.shared.store().wechat_view(out_trade_no)
    }

    /// Every notification delivery attempt for the order, in attempt order.
    pub fn deliveries(&self, out_trade_no: &str) -> Vec<DeliveryAttempt> {
        self.shared.store().deliveries(out_trade_no)
    }

    /// The order's notifications: acknowledged yet, and whether retrying has ended.
    pub fn notifications(&self, out_trade_no: &str) -> Vec<NotificationStatus> {
        self.shared.store().notifications(out_trade_no)
    }

    /// The user pays; same as `POST /sandbox/pay`.
    pub fn pay(&self, request: &PayRequest) -> Result<PayOutcome, ApiError> {
        control::pay(&self.shared, request)
    }

    /// The user is entering the password: NOTPAY -> USERPAYING (`POST /sandbox/userpaying`).
    pub fn set_user_paying(&self, out_trade_no: &str) -> Result<SimTransaction, ApiError> {
        self.shared.store().set_user_paying(out_trade_no)
    }

    /// Sends a paid order's notification again, `deliveries` copies at once, with retries
    /// (`POST /sandbox/notify`).
    pub fn redeliver(&self, out_trade_no: &str, deliveries: u32) -> Result<String, ApiError> {
        control::redeliver(&self.shared, out_trade_no, deliveries)
    }

    /// The refund as query-refund would answer it now.
    pub fn refund(&self, out_refund_no: &str) -> Option<SimRefund> {
        self.shared.store().refund(out_refund_no)
    }

    /// Settles a refund now, `deliveries` copies of its notification at once (0: none), with
    /// retries (`POST /sandbox/refunds/{out_refund_no}`).
    pub fn settle_refund(
        &self,
        out_refund_no: &str,
        status: RefundState,
        deliveries: u32,
    ) -> Result<RefundSettled, ApiError> {
        control::settle_refund(&self.shared, out_refund_no, status, deliveries)
    }

    /// The Beijing day's trade bill as `GET /v3/bill/tradebill` would serve it now (the
    /// uncompressed ALL file); `None` for a day without trades (`NO_STATEMENT_EXIST`).
    pub fn trade_bill(&self, bill_date: time::Date) -> Option<String> {
        bill::render(self.shared.store().bill_entries(bill_date))
    }

    /// Queues a fault (`POST /sandbox/fail`).
    /// Sends message pushes to `target` from now on (`None`: not at all): for a receiver
    /// that starts after the simulator and must be told its URL.
    pub fn set_push_target(&self, target: Option<PushTarget>) {
        *self.shared.push.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    pub fn inject_fault(&self, fault: Fault) -> Result<(), ApiError> {
        control::inject_fault(&self.shared, fault)
    }

    /// Faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.store().faults.clone()
    }

    pub fn clear_faults(&self) {
        self.shared.store().faults.clear();
    }

    /// Stops accepting requests, aborts notification deliveries and waits for the server.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "WeChat Pay simulator stopped with an error")
                }
                Err(e) => tracing::warn!(error = %e, "WeChat Pay simulator task failed"),
            }
        }
        let mut tasks =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.shutdown().await;
        tracing::info!(addr = %self.addr, "WeChat Pay simulator stopped");
    }

    fn stop(&self) {
        let _ = self.shutdown_tx.send(true);
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
    }
}

impl std::fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
