//! `--config FILE`: settings from a TOML file, below environment variables and flags. The file's
//! keys are the long flags of the subcommand (`listen = "0.0.0.0:8080"`, `retention-days = 30`,
//! `allow-http-webhooks = true`; `_` may stand for `-`). They become flags placed before the ones
//! given on the command line (the later occurrence of a flag wins), and a key whose environment
//! variable is set is left out, so the order of precedence is flags, environment, file, defaults.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::CommandFactory;

use crate::cli::Cli;

const FLAG: &str = "--config";
const ENV: &str = "HENDELSE_CONFIG";

/// The command line with the config file's settings spliced in after the subcommand.
pub fn apply(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let Some(position) = subcommand_position(&args) else {
        return Ok(args);
    };
    let subcommand = args[position].to_string_lossy().into_owned();
    let flags = flags_from_file(Path::new(&path), &subcommand)?;
    let mut spliced = args[..=position].to_vec();
    spliced.extend(flags);
    spliced.extend_from_slice(&args[position + 1..]);
    Ok(spliced)
}

fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == FLAG {
            return iter.next().cloned();
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(value.into());
        }
    }
    std::env::var_os(ENV).filter(|v| !v.is_empty())
}

/// Where the subcommand's name stands: the first argument that is not a flag.
fn subcommand_position(args: &[OsString]) -> Option<usize> {
    let mut skip_value = false;
    for (i, arg) in args.iter().enumerate().skip(1) {
        let text = arg.to_string_lossy();
        if skip_value {
            skip_value = false;
        } else if text == FLAG {
            skip_value = true;
        } else if !text.starts_with('-') {
            return Some(i);
        }
    }
    None
}

fn flags_from_file(path: &Path, subcommand: &str) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    flags_from_toml(&text, path, subcommand)
}

/// The flags a config file's text stands for, for `subcommand`; `path` only names the file in
/// errors. Public for the fuzz target that feeds it arbitrary text.
pub fn flags_from_toml(text: &str, path: &Path, subcommand: &str) -> anyhow::Result<Vec<OsString>> {
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(subcommand) else {
        return Ok(Vec::new());
    };
    let mut flags = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            let known: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
            bail!(
                "{}: '{key}' is not a setting of `{subcommand}` (known: {})",
                path.display(),
                known.join(", ")
            );
        };
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let flag = format!("--{long}");
        match value {
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => flags.extend([flag.into(), s.into()]),
            toml::Value::Integer(n) => flags.extend([flag.into(), n.to_string().into()]),
            toml::Value::Float(x) => flags.extend([flag.into(), x.to_string().into()]),
            other => bail!(
                "{}: '{key}' must be a string, number or boolean (got {})",
                path.display(),
                other.type_str()
            ),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_settings_go_before_the_command_line() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("hendelse.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nretention_days = 7\nallow-http-webhooks = true\nno-push = false\n",
        )
        .expect("write");
        let path = file.to_string_lossy().into_owned();
        let got = apply(args(&[
            "hendelse",
            "--config",
            &path,
            "serve",
            "--listen",
            "127.0.0.1:1",
        ]))
        .expect("apply");
        let got: Vec<String> = got
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "hendelse",
                "--config",
                &path,
                "serve",
                "--allow-http-webhooks",
                "--listen",
                "127.0.0.1:9999",
                "--retention-days",
                "7",
                "--listen",
                "127.0.0.1:1"
            ]
        );
        let cli = <Cli as clap::Parser>::try_parse_from(&got).expect("parses");
        let crate::cli::Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        assert_eq!(serve.listen.to_string(), "127.0.0.1:1", "the flag wins");
        assert_eq!(serve.retention_days, 7.0);
        assert!(serve.push.allow_http_webhooks);
    }

    #[test]
    fn unknown_keys_and_unreadable_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = \"x\"\n").expect("write");
        let path = file.to_string_lossy().into_owned();
        let err = apply(args(&["hendelse", "serve", "--config", &path]))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("'lisen' is not a setting of `serve`"), "{err}");
        let missing = apply(args(&["hendelse", "serve", "--config=/nonexistent.toml"]))
            .expect_err("missing file");
        assert!(format!("{missing:#}").contains("cannot read the config file"));
    }
}
