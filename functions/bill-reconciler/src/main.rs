//! bill-reconciler: scheduled daily: holds WeChat Pay's trade bill of the previous Beijing date (or the event's `bill_date`) to the table. All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::BillReconciler)
}
