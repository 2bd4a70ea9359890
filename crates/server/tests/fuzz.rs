//! The fuzz targets (`fuzz/`), built with libFuzzer's instrumentation on the stable toolchain and
//! run for a bounded time each by `fuzz/run`: the server's routes through HTTP, its config file,
//! the CloudEvent validator, batches, binary-mode headers, `%` patterns and query strings.
//! `HENDELSE_FUZZ_SECONDS` sets the time per target (20 s by default here).

use std::path::Path;
use std::process::Command;

const TARGETS: [&str; 7] = [
    "cloudevent",
    "batch",
    "binary_headers",
    "pattern",
    "query_string",
    "routes",
    "config",
];

#[test]
fn every_fuzz_target_runs_without_a_finding() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/run");
    let seconds = std::env::var("HENDELSE_FUZZ_SECONDS").unwrap_or_else(|_| "20".into());
    let output = Command::new("bash")
        .arg(&script)
        .env("HENDELSE_FUZZ_SECONDS", &seconds)
        .output()
        .expect("fuzz/run starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "fuzz/run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Each target must have run for real: its own count of executed inputs, above the seeds.
    let mut counts = Vec::new();
    let mut current = None;
    for line in stdout.lines() {
        if let Some(target) = line
            .strip_prefix("fuzz: ")
            .and_then(|rest| rest.split_once(" for "))
        {
            current = Some(target.0.to_owned());
        }
        if let (Some(target), Some(count)) = (
            &current,
            line.strip_prefix("stat::number_of_executed_units:"),
        ) {
            let count: u64 = count.trim().parse().expect("a count");
            counts.push((target.clone(), count));
        }
    }
    for target in TARGETS {
        let ran = counts
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, count)| *count);
        assert!(
            ran.is_some_and(|count| count > 100),
            "{target} executed {ran:?} inputs in {seconds}s:\n{stdout}"
        );
    }
}
