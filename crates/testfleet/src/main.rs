//! `testfleet`: the coordinator, the agent and the client in one binary.
//!
//! `main` parses arguments, resolves configuration and calls into the
//! library crates; errors map to the exit codes documented in the README.

#[macro_use]
mod out;

mod auth_settings;
mod blob_settings;
mod bot_settings;
mod cli;
mod cmd;
mod prep_settings;
mod scale_settings;
mod settings;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (documented in the README).
pub mod exit {
    /// The command worked; for `watch`/`submit --wait`, the job passed.
    pub const OK: u8 = 0;
    /// The job failed or was cancelled.
    pub const JOB_FAILED: u8 = 1;
    /// Bad input: arguments, job file, configuration.
    pub const USAGE: u8 = 2;
    /// The coordinator could not be reached or answered with an error.
    pub const SERVER: u8 = 3;
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_tracing(cli.verbose, cli.command.is_service());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        // `testfleet … | head`: the reader has all it wanted.
        Err(e) if out::is_closed(&e) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cmd::exit_code_for(&e))
        }
    }
}

fn init_tracing(verbose: u8, service: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = match (verbose, service) {
        (0, false) => "warn",
        (0, true) => "info,sqlx=warn,socketioxide=warn,engineioxide=warn",
        (1, _) => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("TESTFLEET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // tungstenite prints every websocket message at trace (through `log`),
    // socket.io handshakes with their agent secrets included: never that.
    let no_frame_dumps = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("tungstenite"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .finish()
        .with(no_frame_dumps)
        .try_init();
}
