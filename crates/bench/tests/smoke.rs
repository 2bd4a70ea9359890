//! Every scenario at a tiny size, checking the report's shape (fields present, numbers above zero)
//! and never its timings.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_hendelse-bench");

/// The `hendelse` binary of the same profile, built if it is not there yet (`cargo test
/// --workspace` builds it anyway, for the server's own tests).
fn server_bin() -> PathBuf {
    let dir = Path::new(BENCH).parent().expect("target directory");
    let bin = dir.join("hendelse");
    if !bin.is_file() {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "hendelse", "--bin", "hendelse"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|d| d == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build -p hendelse");
        assert!(status.success(), "building the hendelse binary failed");
    }
    bin
}

const TINY: &[&str] = &[
    "--json",
    "--events",
    "200",
    "--concurrency",
    "8",
    "--query-events",
    "2000",
    "--queries",
    "20",
    "--push-events",
    "100",
    "--subscriptions",
    "2",
    "--paced-events",
    "10",
    "--paced-rate",
    "50",
    "--size",
    "256",
];

/// Runs `hendelse-bench SCENARIO ARGS` against the `hendelse` binary, which must succeed; its
/// stdout.
fn run_bench(scenario: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(BENCH)
        .arg(scenario)
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .output()
        .expect("running hendelse-bench");
    assert!(
        out.status.success(),
        "hendelse-bench failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every scenario at the tiny size; the JSON report.
fn bench(extra: &[&str]) -> Value {
    let stdout = run_bench("all", &[TINY, extra].concat());
    serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&stdout)
        )
    })
}

/// The value at a dotted `path` of keys.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |at, key| &at[key])
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = at(v, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"));
    assert!(x > 0.0, "{path} is {x}, expected a positive number");
    x
}

fn zero(v: &Value, path: &str) {
    assert_eq!(at(v, path).as_u64(), Some(0), "{path} in {v:#}");
}

fn check_report(report: &Value, backend: &str, analyzed: bool) {
    let c = &report["conditions"];
    assert_eq!(c["backend"], backend);
    assert_eq!(c["payload_bytes"], 256);
    assert_eq!(c["concurrency"], 8);
    positive(c, "cores");
    assert!(c["build_profile"].is_string() && c["cpu_model"].is_string());
    assert!(
        c["server"]
            .as_str()
            .is_some_and(|s| s.ends_with("hendelse"))
    );

    for name in ["ceiling", "publish"] {
        let load = &report[name];
        assert_eq!(load["requests"], 200, "{name}");
        positive(load, "per_second");
        positive(load, "duration_s");
        positive(load, "request_bytes");
        positive(load, "latency.p50_ms");
        positive(load, "latency.p99_ms");
        positive(load, "latency.p99_9_ms");
        positive(load, "server_peak_rss_mib");
        // CPU time is counted in 10 ms ticks: a tiny run may not reach one.
        for who in ["server_cores", "bench_cores", "other_cores"] {
            assert!(load["cpu"][who].is_number(), "{name}.cpu.{who}");
        }
        zero(load, "errors");
    }
    positive(&report["publish"], "fraction_of_ceiling");

    let query = &report["query"];
    assert_eq!(query["page_size"], 50);
    positive(&report["query"], "server_peak_rss_mib");
    let stages = query["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["events"], 200);
    assert_eq!(stages[1]["events"], 2000);
    for stage in stages {
        positive(stage, "prefill_events_per_s");
        assert_eq!(stage["analyzed"], analyzed);
        let shapes = stage["shapes"].as_array().expect("shapes");
        let names: Vec<&str> = shapes.iter().filter_map(|s| s["shape"].as_str()).collect();
        assert_eq!(
            names,
            [
                "party",
                "unit",
                "person",
                "source wildcard",
                "type",
                "from/to",
                "after (deep)"
            ]
        );
        for shape in shapes {
            zero(shape, "errors");
            assert_eq!(shape["latency"]["samples"], 20);
            positive(shape, "latency.p50_ms");
            positive(shape, "latency.p99_ms");
            assert!(
                shape["example"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("GET /events/api/v1/app/"))
            );
        }
    }
    // Parties are many and the store tiny: only the app-wide shapes are sure to find events.
    for shape in &stages[1]["shapes"].as_array().expect("shapes")[3..] {
        positive(shape, "rows_per_page");
    }

    let push = &report["push"];
    assert_eq!(push["subscriptions"], 2);
    assert_eq!(push["deliveries_expected"], 200);
    assert_eq!(push["deliveries"], 200, "every delivery arrived: {push:#}");
    assert_eq!(push["paced_deliveries"], 20);
    positive(push, "deliveries_per_s");
    positive(push, "duration_s");
    positive(push, "latency_under_load.p50_ms");
    positive(push, "latency.p50_ms");
    positive(push, "latency.p99_ms");
    positive(push, "server_peak_rss_mib");
}

#[test]
fn every_scenario_reports_on_sqlite() {
    check_report(&bench(&["--analyze"]), "sqlite", true);
}

#[test]
fn every_scenario_reports_on_postgres() {
    // The same server the store's PostgreSQL tests use (HENDELSE_TEST_PG overrides it).
    let admin = std::env::var("HENDELSE_TEST_PG").ok();
    if admin.is_none() && std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but PostgreSQL is not reachable on 127.0.0.1:5432");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPING the PostgreSQL bench smoke test: nothing on 127.0.0.1:5432.\n"
        );
        return;
    }
    let mut extra = vec!["--backend", "postgres"];
    if let Some(url) = admin.as_deref() {
        extra.extend(["--pg-admin-url", url]);
    }
    check_report(&bench(&extra), "postgres", false);
}

#[test]
fn the_table_names_its_conditions() {
    let stdout = run_bench("ceiling", &["--events", "50", "--concurrency", "4"]);
    let table = String::from_utf8_lossy(&stdout);
    for words in [
        "backend sqlite",
        "payload 1024 B",
        "concurrency 4",
        "cores",
        "build",
    ] {
        assert!(table.contains(words), "{words:?} missing from:\n{table}");
    }
    assert!(table.contains("ceiling   events/s"), "{table}");
}
