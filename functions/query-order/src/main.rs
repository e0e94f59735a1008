//! query-order: GET /orders, GET /orders/{out_trade_no}. All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::QueryOrder)
}
