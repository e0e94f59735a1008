//! merchant-api: the merchant's back office under `/merchant/`. All logic lives in `shared`;
//! this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::MerchantApi)
}
