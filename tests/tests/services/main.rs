//! The use cases and handlers on a real store (embedded Dynoxide) with the edges scripted
//! where the simulator cannot be made to answer on cue: the notify endpoint's refusals and
//! costs, reconciliation, idempotency recovery, and the TLS roots the clients trust.

mod bill_reconcile;
mod callback_edges;
mod events_dispatch;
mod flash_sale;
mod reconcile_service;
mod refund_service;
mod shipping_service;
mod tls_roots;
