//! Hendelse's server and command line as a library: the `hendelse` binary is [`main`], and tests
//! or an embedding program can start the API on a listener of their own with [`serve_on`].

use std::process::ExitCode;

use clap::Parser;

mod app;
mod body;
mod caller;
pub mod cli;
pub mod config;
mod dialog_settings;
mod events;
mod history;
mod listen;
mod live;
mod logging;
mod metrics;
mod openapi;
mod params;
mod problem;
mod receive;
mod registry_reload;
mod routes;
mod secret_keys;
mod serve;
mod telemetry;

pub use serve::{serve, serve_on};

/// The `hendelse` command: settings from the arguments, the environment and `--config`, then the
/// verb; a failure is one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let args = match config::apply(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            say(&format!("hendelse: {}", one_line(&e)));
            return ExitCode::FAILURE;
        }
    };
    let cli = cli::Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("hendelse: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("hendelse: {}", one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The one-line reason of a failed run, on stderr; a stderr that cannot be written (a full disk)
/// must not turn the exit into a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The reason and its causes on one line, leaving out a cause whose text the line already holds
/// (many error types repeat their source in their own message).
fn one_line(error: &anyhow::Error) -> String {
    let error: &(dyn std::error::Error + 'static) = error.as_ref();
    problem::error_chain(error)
}
