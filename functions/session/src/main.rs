//! session: `POST /sessions` (mini-program login -> session token) and the JWKS / OpenID
//! discovery documents. All logic lives in `shared`; this is the process entry point.

fn main() -> std::process::ExitCode {
    shared::app::main(shared::app::Function::Session)
}
