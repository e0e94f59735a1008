//! query-order: GET /orders, GET /orders/{out_trade_no}. All logic lives in `shared`; this is the process entry point.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::run(shared::app::Function::QueryOrder).await
}
