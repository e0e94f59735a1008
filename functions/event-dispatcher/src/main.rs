//! event-dispatcher: delivers order events to the merchant's webhook (stream fast path, timer retries). All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::EventDispatcher)
}
