//! wxpay-orders' local sandbox (DESIGN.md section 9): a WeChat Pay v3 simulator (prepay,
//! query and close with WeChat Pay's paths, signatures and error bodies; notifications signed,
//! sealed and retried on its schedule), the sandbox's generated keys, and the all-in-one local
//! server and demo the `sandbox` binary runs.
//!
//! - [`keys`]: merchant and "WeChat Pay" RSA keys, the APIv3 key, the AppSecret, the
//!   session-token key and the webhook secret under `<data-dir>/keys/`.
//! - [`simulator`]: the simulator's HTTP server and its in-process handle for tests.
//! - [`server`]: a whole sandbox (engine, catalog, simulator, functions on one port).
//! - [`router`]: the one-port dispatcher and the sandbox-only inspection routes.
//! - [`webhooks`]: the merchant's webhook receiver (`POST`/`GET /sandbox/webhooks`).
//! - [`catalog`], [`envfile`]: the demo catalog and `sandbox.env`.
//! - [`cli`], [`serve`], [`demo`]: the binary's command line and its two commands.

pub mod catalog;
pub mod cli;
pub mod demo;
pub mod envfile;
pub mod keys;
pub mod reconcile;
pub mod router;
pub mod serve;
pub mod server;
pub mod simulator;
pub mod webhooks;

pub use keys::{KeysError, SandboxKeys};
pub use simulator::bills;
pub use simulator::{
    ApiError, DeliveryAttempt, Fault, NotificationStatus, PayOutcome, PayRequest, RefundSettled,
    SimRefund, SimRefundAmount, SimTransaction, Simulator, SimulatorConfig, SimulatorError,
    SimulatorHandle,
};
