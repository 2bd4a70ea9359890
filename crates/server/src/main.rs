//! `hendelse`: the event platform's one binary.

use std::process::ExitCode;

use clap::Parser;

mod app;
mod caller;
mod cli;
mod params;
mod problem;
mod routes;
mod serve;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hendelse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the reason, with its causes.
            eprintln!("hendelse: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
