//! payment-callback: WeChat Pay's `POST /notify/wechatpay`. All logic lives in `shared`.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::PaymentCallback)
}
