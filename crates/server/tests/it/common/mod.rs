//! A real `hendelse serve` process on a loopback port, driven through HTTP and the CLI, and what
//! the tests share to talk to it: tokens, publishing, reading the log, answers, a webhook
//! receiver and concurrent publishers.
#![allow(dead_code)] // not every fixture is used by every run of a filtered test

mod answer;
mod own_postgres;
mod receiver;
mod stream;
mod subscriptions;
mod swarm;

pub use answer::{Answer, assert_problem, send};
pub use own_postgres::{OwnPostgres, give_to_postgres, postgres_bin};
pub use receiver::{Gate, Hit, Receiver, Reply};
pub use stream::Stream;
pub use subscriptions::{
    SUBSCRIPTIONS, create_subscription, deliveries, get_subscription, id_of, subscribe,
    subscribe_to, subscribe_validated, wait_validated,
};
pub use swarm::{Refusal, Swarm, acknowledged, assert_cursor_never_skips};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hendelse");
pub const PUBLISH: &str = "altinn:events.publish";
pub const SUBSCRIBE: &str = "altinn:events.subscribe";
pub const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
pub const SKD_RESOURCE: &str = "urn:altinn:resource:skd-service";
/// The organisation the generic events are about.
pub const ORG_SUBJECT: &str = "urn:altinn:organization:identifier-no:991825827";
pub const PERSON: &str = "07124912037";
pub const PERSON_PARTY: i64 = 50002598;
/// A person who may read none of the organisation's events.
pub const OTHER_PERSON: &str = "01017012345";
pub const OTHER_PERSON_PARTY: i64 = 50003333;
/// The route events are published to and queried on.
pub const EVENTS: &str = "/events/api/v1/events";
/// The content type of one structured CloudEvent.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The content type of a batch of CloudEvents.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The flags that let a server deliver webhooks to the tests' receivers: plain http, on loopback.
pub const TO_LOOPBACK: [&str; 2] = ["--allow-http-webhooks", "--allow-private-webhooks"];
/// How long to wait for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// Pages a walk of the log may take before it counts as stuck.
pub const MAX_PAGES: usize = 10_000;

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
    /// More environment for the server process (libfaketime's, say).
    extra_env: Vec<(String, String)>,
    /// A command the server runs under (`ip netns exec NS`), and the address it listens on.
    wrapper: Vec<String>,
    listen: String,
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

    /// A server that may deliver webhooks to receivers on loopback.
    pub fn start_delivering(extra_args: &[&str]) -> Server {
        Self::start_with(&[&TO_LOOPBACK[..], extra_args].concat())
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
        Self::launch_with_env(dir, data, extra_args, &[])
    }

    /// A server with more environment variables.
    pub fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        Self::launch_with_env(dir, data, extra_args, env)
    }

    fn launch_with_env(
        dir: tempfile::TempDir,
        data: PathBuf,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut server = Server {
            child: None,
            url: String::new(),
            dir,
            data,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            wrapper: Vec::new(),
            listen: "127.0.0.1:0".into(),
        };
        server.spawn();
        server
    }

    /// A server in the network namespace `netns`, listening on `ip` there (tests of the network
    /// between a node and its database).
    pub fn start_in_netns(netns: &str, ip: &str, extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Server {
            child: None,
            url: String::new(),
            data: dir.path().join("data"),
            dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: Vec::new(),
            wrapper: ["ip", "netns", "exec", netns].map(str::to_owned).to_vec(),
            listen: format!("{ip}:0"),
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
        // The tests' registry unless the test gives one of its own.
        let registry: Vec<std::ffi::OsString> = if self.extra_args.iter().any(|a| a == "--registry")
        {
            Vec::new()
        } else {
            vec![
                "--registry".into(),
                data_path("registry.json").into_os_string(),
            ]
        };
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data-dir")
            .arg(&self.data)
            .args(&registry)
            .args(&self.extra_args)
            .envs(secret_key_env(&self.extra_args))
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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

    /// Starts the server again on the same data directory with other arguments.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.kill9();
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Runs `hendelse token` against this server's data directory.
    pub fn token(&self, args: &[&str]) -> String {
        token_for(&self.data, args)
    }

    /// An org token for `ttd` that may publish and subscribe.
    pub fn ttd(&self) -> String {
        self.org("ttd")
    }

    /// An org token for `skd` (which owns `SKD_RESOURCE`) that may publish and subscribe.
    pub fn skd(&self) -> String {
        self.org("skd")
    }

    fn org(&self, org: &str) -> String {
        self.token(&["--org", org, "--scope", &format!("{PUBLISH} {SUBSCRIBE}")])
    }

    /// The end user 07124912037 (party 50002598).
    pub fn person(&self) -> String {
        self.person_token(PERSON, PERSON_PARTY)
    }

    /// The end user 01017012345 (party 50003333), who may read none of the organisation's events.
    pub fn other_person(&self) -> String {
        self.person_token(OTHER_PERSON, OTHER_PERSON_PARTY)
    }

    /// An end user who may subscribe.
    pub fn person_token(&self, pid: &str, party: i64) -> String {
        self.token(&[
            "--pid",
            pid,
            "--party-id",
            &party.to_string(),
            "--scope",
            SUBSCRIBE,
        ])
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The URL of `RESOURCE`'s events from the start of the log, with `more` (`&name=value`...)
    /// appended to the query.
    pub fn log_url(&self, more: &str) -> String {
        self.at(&format!("{EVENTS}?resource={RESOURCE}&after=0{more}"))
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) {
        eventually(&format!("{needle:?} in the log"), limit, async || {
            let log = self.log();
            if log.contains(needle) {
                Ok(())
            } else {
                Err(log)
            }
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `hendelse ARGS`, which must succeed; its stdout.
pub fn hendelse_ok(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("run hendelse");
    assert!(
        out.status.success(),
        "hendelse {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// The P-256 public key of a data directory's development key, as a JWKS.
pub fn jwks_of(data_dir: &Path) -> Value {
    let der = std::fs::read(data_dir.join("dev-signing-key.p8")).expect("dev key");
    // PKCS#8 of P-256 with the public key: the DER ends with BIT STRING (03 42 00) 04 || X || Y.
    let point = &der[der.len() - 65..];
    assert_eq!(
        &der[der.len() - 68..der.len() - 65],
        [0x03, 0x42, 0x00],
        "public key"
    );
    assert_eq!(point[0], 0x04, "uncompressed point");
    serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]})
}

/// The key of [`jwks_of`] with the `kid` its tokens carry.
pub fn jwk_with_kid(data_dir: &Path) -> Value {
    let token = token_for(data_dir, &["--org", "ttd"]);
    let header = token.split('.').next().unwrap_or_default();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url"))
        .expect("JSON header");
    let mut key = jwks_of(data_dir)["keys"][0].clone();
    key["kid"] = header["kid"].clone();
    key
}

/// Runs `hendelse token` against a data directory (its development signing key, made if missing).
pub fn token_for(data_dir: &Path, args: &[&str]) -> String {
    let data_dir = data_dir.to_str().expect("a UTF-8 data directory");
    hendelse_ok(&[&["token", "--data-dir", data_dir], args].concat())
        .trim()
        .to_owned()
}

/// A loopback port that nothing listens on (free when asked; a test that binds it later races
/// only with other processes).
/// The key that servers on PostgreSQL seal webhook secrets with in these tests (every node of a
/// test needs the same; the base64 of 32 bytes).
pub const TEST_SECRET_KEY: &str = "aGVuZGVsc2UtdGVzdHMta2V5LTMyLWJ5dGVzLWxvbiE=";

/// `HENDELSE_SECRET_KEY` for a server on PostgreSQL that is not given its keys otherwise.
pub fn secret_key_env(args: &[String]) -> Vec<(&'static str, &'static str)> {
    let on_postgres = args.iter().any(|a| a == "--database-url");
    let has_keys = args.iter().any(|a| a == "--secret-key-file");
    if on_postgres && !has_keys {
        vec![("HENDELSE_SECRET_KEY", TEST_SECRET_KEY)]
    } else {
        Vec::new()
    }
}

/// `n` random bytes (for keys and secrets).
pub fn random_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| uuid::Uuid::new_v4().as_bytes()[i % 16])
        .collect()
}

/// A Standard Webhooks secret of `bytes` random bytes (`whsec_` + base64).
pub fn secret_of(bytes: usize) -> String {
    use base64::Engine;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(random_bytes(bytes))
    )
}

/// Whether the delivery's `webhook-signature` verifies with `secret` (the independent
/// `standardwebhooks` crate).
pub fn verifies(secret: &str, hit: &Hit) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .verify(&hit.body, &hit.headers)
        .is_ok()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs one structured CloudEvent to the server at `base_url` with this client (the connection
/// reuse of a real publisher); the error when the server is not there to answer.
pub async fn post_event(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    event: &Value,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base_url}{EVENTS}"))
        .bearer_auth(token)
        .header("content-type", STRUCTURED)
        .body(event.to_string())
        .send()
        .await
}

/// POSTs `body` as `content_type` to `path`.
pub async fn post(
    server: &Server,
    token: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    client()
        .post(server.at(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// POSTs one structured CloudEvent.
pub async fn publish(server: &Server, token: &str, event: &Value) -> reqwest::Response {
    post(server, token, EVENTS, STRUCTURED, event.to_string()).await
}

/// Publishes one event, which must be accepted.
pub async fn publish_ok(server: &Server, token: &str, event: &Value) {
    let response = publish(server, token, event).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "publish {event}: {text}");
}

/// POSTs a batch (`application/cloudevents-batch+json`).
pub async fn publish_batch(server: &Server, token: &str, events: &[Value]) -> reqwest::Response {
    let batch = Value::Array(events.to_vec()).to_string();
    post(server, token, EVENTS, BATCH, batch).await
}

/// Publishes a batch, which must be accepted.
pub async fn publish_batch_ok(server: &Server, token: &str, events: &[Value]) {
    let response = publish_batch(server, token, events).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "publish batch of {}: {text}", events.len());
}

/// POSTs an app event (`/events/api/v1/app`: the server sets id, time and resource).
pub async fn publish_app(server: &Server, token: &str, event: &Value) -> reqwest::Response {
    let path = "/events/api/v1/app";
    post(server, token, path, "application/json", event.to_string()).await
}

/// A generic event of `RESOURCE` about the organisation 991825827.
pub fn generic_event(id: &str) -> Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://example.com/generic",
        "type": "no.example.test",
        "resource": RESOURCE,
        "subject": ORG_SUBJECT,
        "data": {"n": id}
    })
}

/// [`generic_event`] about another subject.
pub fn event_about(id: &str, subject: &str) -> Value {
    let mut event = generic_event(id);
    event["subject"] = serde_json::json!(subject);
    event
}

/// The `id` of each event, in order.
pub fn event_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The `id` of each event of a page (a JSON array), in order.
pub fn page_ids(body: &Value) -> Vec<String> {
    event_ids(
        body.as_array()
            .unwrap_or_else(|| panic!("not an array: {body}")),
    )
}

/// The value of a response header, `""` when absent or not text.
pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// GETs a URL and returns status, `next` header and body (JSON, or the text as a JSON string).
pub async fn get(url: &str, token: &str) -> (u16, Option<String>, Value) {
    get_with(url, token, &[]).await
}

/// A GET of a URL with a token and these headers, to send.
pub fn get_request(url: &str, token: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut request = client().get(url).bearer_auth(token);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request
}

/// GETs a route that needs no token.
pub async fn get_public(server: &Server, path: &str) -> Answer {
    send(client().get(server.at(path))).await
}

pub async fn get_with(
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let response = get_request(url, token, headers).send().await.expect("get");
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("next")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, next, body)
}

/// Follows `next` from `first_url` until an empty page (at most `max_pages` pages); returns the
/// events of every page and the last `next`.
pub async fn follow_pages(
    first_url: &str,
    token: &str,
    headers: &[(&str, &str)],
    max_pages: usize,
) -> (Vec<Vec<Value>>, String) {
    let mut url = first_url.to_owned();
    let mut pages = Vec::new();
    for _ in 0..max_pages {
        let (status, next, body) = get_with(&url, token, headers).await;
        assert_eq!(status, 200, "{url}: {body}");
        let next = next.unwrap_or_else(|| panic!("no next header on {url}"));
        let page = body.as_array().expect("array").clone();
        if page.is_empty() {
            return (pages, next);
        }
        pages.push(page);
        url = next;
    }
    panic!("following next from {first_url} did not reach an empty page in {max_pages} pages");
}

/// Follows `next` from `first_url` until an empty page; returns every event seen and the last
/// `next`.
pub async fn follow(first_url: &str, token: &str) -> (Vec<Value>, String) {
    let (pages, next) = follow_pages(first_url, token, &[], MAX_PAGES).await;
    (pages.concat(), next)
}

/// Every event of `RESOURCE` that `token` may read, from the start of the log.
pub async fn resource_log(server: &Server, token: &str) -> Vec<Value> {
    follow(&server.log_url("&size=1000"), token).await.0
}

/// Polls `check` until it answers `Ok`; panics with its last `Err` after `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("gave up after {limit:?} waiting for {what}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
