//! A real `hendelse serve` process on a loopback port, driven through HTTP and the CLI.
#![allow(dead_code)] // not every fixture is used by every run of a filtered test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_hendelse");
pub const PUBLISH: &str = "altinn:events.publish";
pub const SUBSCRIBE: &str = "altinn:events.subscribe";
pub const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
pub const PERSON: &str = "07124912037";
pub const PERSON_PARTY: i64 = 50002598;

pub fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub struct Server {
    child: Option<Child>,
    pub url: String,
    /// Holds the log (and, unless shared, the data directory).
    dir: tempfile::TempDir,
    /// The data directory: the SQLite store and the development signing key.
    data: PathBuf,
    extra_args: Vec<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        Self::launch(dir, data, extra_args)
    }

    /// A server whose data directory and log both live in a new folder under `parent` (for tests
    /// that need them on a filesystem of their own).
    pub fn start_in(parent: &Path, extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        let data = dir.path().join("data");
        Self::launch(dir, data, extra_args)
    }

    /// Another node beside `other`: the same data directory (so the same development key) and
    /// these arguments (typically the same `--database-url`).
    pub fn start_beside(other: &Server, extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch(dir, other.data.clone(), extra_args)
    }

    fn launch(dir: tempfile::TempDir, data: PathBuf, extra_args: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            url: String::new(),
            dir,
            data,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--registry")
            .arg(data_path("registry.json"))
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start hendelse serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("server did not start: {line:?}; log: {}", self.log()));
        self.url = url.to_owned();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `kill -9`: no chance to flush or shut down.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to 30 s, else `kill -9` and a panic) for the graceful shutdown.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        for _ in 0..300 {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the server did not stop within 30 s of SIGTERM; log: {}",
            self.log()
        );
    }

    /// Starts the server again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs `hendelse token` against this server's data directory.
    pub fn token(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("token")
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run hendelse token");
        assert!(
            out.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    }

    /// An org token for `ttd` that may publish and subscribe.
    pub fn ttd(&self) -> String {
        self.token(&["--org", "ttd", "--scope", &format!("{PUBLISH} {SUBSCRIBE}")])
    }

    /// The end user 07124912037 (party 50002598).
    pub fn person(&self) -> String {
        self.token(&[
            "--pid",
            PERSON,
            "--party-id",
            &PERSON_PARTY.to_string(),
            "--scope",
            SUBSCRIBE,
        ])
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs one structured CloudEvent.
pub async fn publish(server: &Server, token: &str, event: &serde_json::Value) -> reqwest::Response {
    client()
        .post(server.at("/events/api/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .expect("publish")
}

/// A generic event of `RESOURCE` about the organisation 991825827.
pub fn generic_event(id: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://example.com/generic",
        "type": "no.example.test",
        "resource": RESOURCE,
        "subject": "urn:altinn:organization:identifier-no:991825827",
        "data": {"n": id}
    })
}

/// GETs a path (or absolute URL) and returns status, `next` header and JSON body.
/// The `id` of each event, in order.
pub fn event_ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The `id` of each event of a page (a JSON array), in order.
pub fn page_ids(body: &serde_json::Value) -> Vec<String> {
    event_ids(
        body.as_array()
            .unwrap_or_else(|| panic!("not an array: {body}")),
    )
}

pub async fn get(url: &str, token: &str) -> (u16, Option<String>, serde_json::Value) {
    get_with(url, token, &[]).await
}

pub async fn get_with(
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = client().get(url).bearer_auth(token);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("get");
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("next")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, next, body)
}

/// Follows `next` from `first_url` until an empty page; returns every event seen.
pub async fn follow(first_url: &str, token: &str) -> (Vec<serde_json::Value>, String) {
    let mut url = first_url.to_owned();
    let mut all = Vec::new();
    loop {
        let (status, next, body) = get(&url, token).await;
        assert_eq!(status, 200, "{url}: {body}");
        let page = body.as_array().expect("array").clone();
        let next = next.expect("next header");
        if page.is_empty() {
            return (all, next);
        }
        all.extend(page);
        url = next;
    }
}
