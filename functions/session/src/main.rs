//! session: `POST /sessions` (mini-program login -> session token) and the JWKS / OpenID
//! discovery documents. All logic lives in `shared`; this is the process entry point.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::run(shared::app::Function::Session).await
}
