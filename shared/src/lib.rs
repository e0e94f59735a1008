//! wxpay-orders core: everything except process wiring.
//!
//! Dependencies point one way: `domain` imports nothing else; `wechatpay` and `store` are
//! the ports (`PayGateway`, `Store`) with their one implementation each; the function
//! binaries only wire configuration to these.

pub mod app;
pub mod config;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod session;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod timefmt;
pub mod tls;
pub mod wechatpay;
