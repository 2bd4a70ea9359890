//! One Hendelse node per fuzzing process, started on first use and kept for the whole run: the
//! real server (`hendelse::serve_on`) on a loopback port, with a fresh SQLite store and push off.

use std::sync::OnceLock;
use std::time::Duration;

use clap::Parser;
use hendelse::cli::{Cli, Command};
use hendelse_auth::{DevKey, SCOPE_PUBLISH, SCOPE_SUBSCRIBE, TokenRequest};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

pub struct Node {
    pub base: String,
    pub org_token: String,
    pub person_token: String,
    /// `HENDELSE_FUZZ_TRACE` set: each request's status is printed (for checking the seeds).
    pub trace: bool,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

static NODE: OnceLock<Node> = OnceLock::new();

pub fn node() -> &'static Node {
    NODE.get_or_init(start)
}

fn start() -> Node {
    // libFuzzer's C++ `main` runs instead of Rust's, which would have ignored SIGPIPE as the
    // `hendelse` binary does: without this, a peer closing a socket mid-write kills the process.
    // SAFETY: sets a signal disposition before any thread of ours exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The directory lives as long as the process; libFuzzer exits without running destructors.
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    let cli = Cli::parse_from([
        "hendelse".into(),
        "serve".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--no-push".into(),
        "--allow-private-webhooks".into(),
        "--allow-http-webhooks".into(),
        // The integration tests' registry: ttd owns the resource the seeds publish for, and the
        // person of the end-user token may read for an organisation.
        "--registry".into(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/server/tests/data/registry.json"
        )
        .into(),
    ]);
    let Command::Serve(args) = cli.command else {
        unreachable!("parsed as serve");
    };
    runtime.spawn(async move {
        if let Err(e) = hendelse::serve_on(args, listener).await {
            eprintln!("fuzz: the server stopped: {e:#}");
            std::process::abort();
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let ready = format!("{base}/health/ready");
    runtime.block_on(async {
        for _ in 0..200 {
            if let Ok(answer) = client.get(&ready).send().await
                && answer.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    });
    let key = DevKey::load_or_create(&dir).expect("the development key");
    let mint = |request: TokenRequest| key.mint(&request).expect("a token");
    let org_token = mint(TokenRequest {
        org: Some("ttd".into()),
        scope: Some(format!("{SCOPE_PUBLISH} {SCOPE_SUBSCRIBE}")),
        ..request()
    });
    let person_token = mint(TokenRequest {
        pid: Some("07124912037".into()),
        party_id: Some(50002598),
        scope: Some(SCOPE_SUBSCRIBE.into()),
        ..request()
    });
    Node {
        base,
        org_token,
        person_token,
        trace: std::env::var_os("HENDELSE_FUZZ_TRACE").is_some(),
        runtime,
        client,
    }
}

fn request() -> TokenRequest {
    TokenRequest {
        org: None,
        org_number: None,
        pid: None,
        user_id: None,
        party_id: None,
        scope: None,
        ttl_seconds: 24 * 3600,
        audience: None,
        not_before_seconds: None,
        system_user: None,
        auth_level: None,
    }
}

impl Node {
    /// The status and media type of the answer (without parameters); `None` when the request
    /// could not be sent as given (reqwest refuses it), which is not the server's fault.
    pub fn send(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Option<(u16, Option<String>)> {
        let mut request = self.client.request(method, url.clone()).headers(headers);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        self.runtime.block_on(async {
            match request.send().await {
                Ok(answer) => {
                    let media_type = answer
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
                    let status = answer.status().as_u16();
                    // Streams answer their head at once; their body is not read.
                    if self.trace && status >= 400 {
                        eprintln!("{}", answer.text().await.unwrap_or_default());
                    }
                    Some((status, media_type))
                }
                Err(e) if e.is_builder() => None,
                Err(e) => panic!("{url}: no answer: {e}"),
            }
        })
    }
}
