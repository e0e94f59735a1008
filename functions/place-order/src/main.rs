//! place-order: `POST /orders`. All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::PlaceOrder)
}
