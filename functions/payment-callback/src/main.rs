//! payment-callback: WeChat Pay's `POST /notify/wechatpay`. All logic lives in `shared`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::run(shared::app::Function::PaymentCallback).await
}
