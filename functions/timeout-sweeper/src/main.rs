//! timeout-sweeper: scheduled: closes expired unpaid orders, recovers lost payments. All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::TimeoutSweeper)
}
