//! mp-push: WeChat's mini-program message push, `GET|POST /notify/wechat-mp` (settlements of
//! shipped orders). All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::MpPush)
}
