//! The `sandbox` binary: `cargo run -p sandbox [-- serve|demo|reconcile ...]` (DESIGN.md section 9).
//! Parses the command line, prepares the process environment, starts a tokio runtime and
//! hands over to `serve` or `demo`; every failure ends in one line on stderr and a non-zero
//! exit (2 for a bad command line, 1 for anything else).

use std::process::ExitCode;

use sandbox::cli::{self, Command};

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
            Command::Demo(options) => sandbox::demo::run(options).await.map_err(|e| e.to_string()),
            Command::Reconcile(options, date) => sandbox::reconcile::run(&options, date).await,
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

/// The demo quiets the logs to warnings, so its story stays readable. Without `RUST_LOG`, the
/// embedded engine's own warning for every error answer it sends (a conditional write that
/// lost, which the functions expect and log themselves) is left out. The functions' AWS
/// region and dummy credentials come from the same variables as `sandbox.env` (passed to
/// `shared::app::build`), never from this process's environment, so real credentials here
/// are never used.
fn prepare_environment(demo: bool) {
    let log_filter = std::env::var_os("RUST_LOG").is_none().then_some(if demo {
        "warn,dynoxide::server=error"
    } else {
        "info,dynoxide::server=error"
    });
    // SAFETY: called at the top of `main`, before the tokio runtime or any other thread
    // exists, so nothing can read the environment concurrently.
    if let Some(filter) = log_filter {
        unsafe {
            std::env::set_var("RUST_LOG", filter);
        }
    }
}
