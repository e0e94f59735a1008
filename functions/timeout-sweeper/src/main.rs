//! timeout-sweeper: scheduled: closes expired unpaid orders, recovers lost payments. All logic lives in `shared`; this is the process entry point.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::run(shared::app::Function::TimeoutSweeper).await
}
