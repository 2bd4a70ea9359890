//! The TOML config file (`--config`): any text, for each subcommand, becomes flags or a one-line
//! reason, never a panic; the flags it gives are then parsed by the real command line, which may
//! refuse them but never panics either.
#![no_main]

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;
use libfuzzer_sys::fuzz_target;

const SUBCOMMANDS: [&str; 4] = ["serve", "migrate", "publish", "subscriptions"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let subcommand = SUBCOMMANDS[usize::from(first) % SUBCOMMANDS.len()];
    let Ok(flags) = hendelse::config::flags_from_toml(text, Path::new("fuzz.toml"), subcommand)
    else {
        return;
    };
    let mut args: Vec<OsString> = vec!["hendelse".into(), subcommand.into()];
    args.extend(flags);
    if let Ok(hendelse::cli::Cli {
        command: hendelse::cli::Command::Serve(serve),
        ..
    }) = hendelse::cli::Cli::try_parse_from(&args)
    {
        let _ = serve.validate();
    }
});
