//! The `sandbox` binary: `cargo run -p sandbox [-- serve|demo ...]` (DESIGN.md section 9).
//! Parses the command line, prepares the process environment, starts a tokio runtime and
//! hands over to `serve` or `demo`; every failure ends in one line on stderr and a non-zero
//! exit (2 for a bad command line, 1 for anything else).

use std::process::ExitCode;

use sandbox::cli::{self, Command};
use sandbox::envfile;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox: {e}\nRun `sandbox --help` for usage.");
            return ExitCode::from(2);
        }
    };
    let demo = matches!(command, Command::Demo(_));
    if command == Command::Help {
        print!("{}", cli::usage());
        return ExitCode::SUCCESS;
    }
    prepare_environment(demo);
    shared::telemetry::init(shared::config::LogFormat::Text);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::Serve(options) => sandbox::serve::run(options).await,
            Command::Demo(options) => sandbox::demo::run(options).await,
            Command::Help => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let message = if message.starts_with("demo:") || message.starts_with("sandbox:") {
                message
            } else {
                format!("sandbox: {message}")
            };
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// The functions' DynamoDB clients take region and credentials from the process environment
/// (`shared::store::connect`, as on Lambda). The sandbox only ever talks to its embedded
/// engine, so it sets the same dummies `sandbox.env` carries, replacing any real credentials
/// (they must never be sent anywhere, not even to localhost). The demo also quiets the logs
/// to warnings unless `RUST_LOG` says otherwise, so its story stays readable.
fn prepare_environment(demo: bool) {
    let set = [
        ("AWS_REGION", envfile::AWS_REGION),
        ("AWS_ACCESS_KEY_ID", envfile::AWS_ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", envfile::AWS_SECRET_ACCESS_KEY),
    ];
    let remove = ["AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"];
    let quiet = demo && std::env::var_os("RUST_LOG").is_none();
    // SAFETY: called at the top of `main`, before the tokio runtime or any other thread
    // exists, so nothing can read the environment concurrently.
    unsafe {
        for (name, value) in set {
            std::env::set_var(name, value);
        }
        for name in remove {
            std::env::remove_var(name);
        }
        if quiet {
            std::env::set_var("RUST_LOG", "warn");
        }
    }
}
