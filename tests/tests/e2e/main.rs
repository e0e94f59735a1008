//! End to end: the BUILT function binaries driven as the platforms drive them (plain HTTP,
//! the Lambda and SCF runtime APIs) against the WeChat Pay simulator and embedded Dynoxide.

mod e2e_support;
mod runtime_support;

mod e2e_bills;
mod e2e_events;
mod e2e_merchant;
mod e2e_payment;
mod e2e_reconcile;
mod e2e_session;
mod e2e_shipping;
mod runtime_http;
mod runtime_lambda;
mod runtime_scf;
