//! `GET /openapi.json` as a contract, checked with the tools a new user reaches for: Schemathesis
//! generates requests from the document against a live server and checks every answer against
//! it, and a TypeScript client generated from the document is type-checked and used. A test
//! binary of its own: cargo runs test binaries one at a time, so the fuzzer's load never shares
//! the machine with the timing of the other binaries' tests.
//!
//! The run by hand is in the README ("The OpenAPI contract"); the tool is pinned in `.ci/run`.

// The black-box fixtures of `tests/it`; this binary uses only some of what they re-export.
#[allow(unused_imports)]
#[path = "it/common/mod.rs"]
mod common;

use std::process::Command;

use common::{Server, TO_LOOPBACK};
use hendelse_store::testing::skip_outside_ci;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/contract/schemathesis.toml"
);

/// The generated client's project: pinned packages (with their lock), the TypeScript settings and
/// the program that uses the client.
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/client");

/// Seconds of generated requests; `HENDELSE_SCHEMATHESIS_SECONDS` sets another budget.
const DEFAULT_SECONDS: u32 = 120;

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The last `lines` lines of a tool's output, for a failure message.
fn tail(text: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_in_the_document() {
    if !installed("schemathesis") {
        skip_outside_ci(
            "schemathesis_finds_no_failure_in_the_document",
            "schemathesis is not installed (pip install schemathesis==4.32.5)",
        );
        return;
    }
    // No generated endpoint is ever resolved or contacted: nothing is pushed, and the endpoint
    // checks that would resolve a host are off.
    let server = Server::start_with(&[&["--no-push"], &TO_LOOPBACK[..]].concat());
    let seconds = std::env::var("HENDELSE_SCHEMATHESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(DEFAULT_SECONDS);
    // Schemathesis keeps a cache in its working directory; not in the checkout.
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut run = Command::new("schemathesis");
    run.current_dir(scratch.path())
        .args(["--config-file", CONFIG, "run"])
        .arg(server.at("/openapi.json"))
        .args(["--checks", "all", "--seed", "1", "--max-time"])
        .arg(seconds.to_string())
        .env("HENDELSE_ORG_TOKEN", server.ttd())
        .env("HENDELSE_PERSON_TOKEN", server.person())
        .env("NO_COLOR", "1");
    let out = tokio::task::spawn_blocking(move || run.output())
        .await
        .expect("the run's thread")
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed 1, {seconds} s):\n{}\n{}",
        tail(&out.stdout, 200),
        tail(&out.stderr, 20)
    );
    // Every operation was exercised, not only some: "Selected: 33/33" and "Tested: 33".
    let summary = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key).map(str::trim))
            .unwrap_or_else(|| panic!("no {key} in:\n{}", tail(&out.stdout, 40)))
    };
    let selected = summary("Selected: ");
    let tested = summary("Tested: ");
    let all = selected.split('/').nth(1).unwrap_or_default();
    assert!(
        all.parse::<usize>().is_ok_and(|n| n > 30),
        "the document's operations: {selected}"
    );
    assert_eq!(
        selected,
        format!("{all}/{all}"),
        "every operation is selected"
    );
    assert_eq!(tested, all, "every operation is tested");
}

/// Runs `program` in `dir`, failing the test with its output unless it succeeds.
fn run_ok(dir: &std::path::Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}\n{}",
        tail(&out.stdout, 60),
        tail(&out.stderr, 60)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_generated_typescript_client_publishes_reads_subscribes_and_creates_a_dialog() {
    if !installed("npm") || !installed("node") {
        skip_outside_ci(
            "a_generated_typescript_client_publishes_reads_subscribes_and_creates_a_dialog",
            "node and npm are not installed",
        );
        return;
    }
    let server = Server::start_with(&[&["--no-push"], &TO_LOOPBACK[..]].concat());
    let project = tempfile::tempdir().expect("project dir");
    for file in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "client.ts",
    ] {
        std::fs::copy(format!("{CLIENT}/{file}"), project.path().join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let document = common::get_public(&server, "/openapi.json").await;
    std::fs::write(project.path().join("openapi.json"), &document.text).expect("the document");
    let dir = project.path().to_owned();
    let url = server.url.clone();
    let token = server.ttd();
    let summary = tokio::task::spawn_blocking(move || {
        run_ok(&dir, "npm", &["ci", "--no-audit", "--no-fund"], &[]);
        // TypeScript cannot say "every other key holds a scalar" beside typed keys, so the
        // extension attributes' rule is left to the server: other keys are `unknown`.
        run_ok(
            &dir,
            "node_modules/.bin/openapi-typescript",
            &[
                "openapi.json",
                "--additional-properties",
                "-o",
                "schema.d.ts",
            ],
            &[],
        );
        run_ok(&dir, "node_modules/.bin/tsc", &["-p", "."], &[]);
        run_ok(
            &dir,
            "node",
            &["out/client.js"],
            &[("HENDELSE_URL", &url), ("HENDELSE_ORG_TOKEN", &token)],
        )
    })
    .await
    .expect("the client's thread");
    let summary: serde_json::Value =
        serde_json::from_str(summary.trim()).unwrap_or_else(|e| panic!("{e}: {summary}"));
    assert_eq!(summary["published"], 5, "{summary}");
    assert_eq!(summary["read"], 5, "{summary}");
    // What the client made is there when read without it.
    let ttd = server.ttd();
    let (status, _, _) = common::get(
        &server.at(&format!(
            "/events/api/v1/subscriptions/{}",
            summary["subscription"]
        )),
        &ttd,
    )
    .await;
    assert_eq!(status, 200, "the subscription {summary}");
    let dialog_id = summary["dialog"].as_str().expect("a dialog id");
    let (status, _, dialog) = common::get(
        &server.at(&format!(
            "/dialogporten/api/v1/serviceowner/dialogs/{dialog_id}"
        )),
        &ttd,
    )
    .await;
    assert_eq!(status, 200, "the dialog {summary}");
    assert_eq!(dialog["progress"], 40, "{dialog}");
    assert_eq!(dialog["status"], "InProgress", "{dialog}");
}
