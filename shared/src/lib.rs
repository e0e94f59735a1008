//! wxpay-orders core: everything except process wiring.
//!
//! Dependencies point one way: `domain` imports nothing else and owns the order's lifecycle
//! (each transition a pure plan); `wechatpay` and `store` are the ports (`PayGateway`,
//! `Store`) with their one implementation each, the store applying the domain's plans;
//! `service` holds the use cases over the ports and never sees HTTP; `http` and `runtime`
//! are the edge; the function binaries only wire configuration to these.
//! `webhook` signs, schedules and sends the merchant's event deliveries (Standard Webhooks).

pub mod app;
pub mod config;
pub mod dispatcher;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod miniprogram;
pub mod outbox;
pub mod reconciler;
pub mod runtime;
pub mod secrets;
pub mod service;
pub mod session;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod timefmt;
pub mod tls;
pub mod webhook;
pub mod wechatpay;
