//! The store suites: conformance of every `Store` operation on two DynamoDB
//! implementations (Dynoxide and moto), concurrency storms on Dynoxide, and the secrets read
//! through Secrets Manager on moto. One binary, so the AWS SDK is linked once.

mod secrets_moto;
mod store_bills;
mod store_concurrency;
mod store_conformance;
mod store_outbox;
mod store_refunds;
mod store_shipping;
mod store_stock_shards;
