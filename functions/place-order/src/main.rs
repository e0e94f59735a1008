//! place-order: `POST /orders`. All logic lives in `shared`; this is the process entry point.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::run(shared::app::Function::PlaceOrder).await
}
