//! Trusted issuers by URL: the keys come from an OpenID configuration or a `jwks_uri` served by
//! a real HTTP server in the test, which rotates them mid-test. A token signed with a newly
//! published key verifies without a restart, a removed key stops verifying (also for a token
//! verified before; all of them withdrawn, nothing verifies), a flood of tokens with an unknown
//! `kid` costs at most one fetch per refresh interval, and a start without the issuer uses the
//! copy cached at an earlier start, or fails with a one-line reason when there is none.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::common::{
    BIN, PATIENCE, Server, client, eventually, free_port, jwk_with_kid, send, token_for,
};

/// The identity provider of the test: its OpenID configuration and its JWKS, which the test
/// changes; it counts the fetches of the JWKS.
#[derive(Clone)]
struct Idp {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

async fn configuration(State(idp): State<Idp>) -> impl IntoResponse {
    axum::Json(json!({"issuer": "hendelse-dev", "jwks_uri": format!("{}/jwks", idp.url)}))
}

async fn jwks(State(idp): State<Idp>) -> impl IntoResponse {
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = idp.keys.lock().expect("keys").clone();
    (
        [("cache-control", "public, max-age=2")],
        axum::Json(json!({ "keys": keys })),
    )
}

impl Idp {
    async fn start(keys: Vec<Value>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let idp = Idp {
            url: format!("http://{}", listener.local_addr().expect("address")),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(configuration))
            .route("/jwks", get(jwks))
            .with_state(idp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().expect("keys") = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A `--trusted-issuers` file naming the development issuer's keys by URL, refreshed at most
/// every 2 s.
fn issuers_file(dir: &Path, openid: &str) -> String {
    let path = dir.join(format!("issuers-{}.json", uuid::Uuid::new_v4()));
    let issuers = json!([{
        "issuer": "hendelse-dev",
        "openidConfiguration": openid,
        "algorithms": ["ES256"],
        "minRefreshSeconds": 2,
        "maxRefreshSeconds": 10
    }]);
    std::fs::write(&path, issuers.to_string()).expect("write issuers");
    path.display().to_string()
}

/// The status of a query with `token`.
async fn status_with(server: &Server, token: &str) -> u16 {
    send(client().get(server.log_url("")).bearer_auth(token))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_url_rotate_without_a_restart() {
    let old_key = tempfile::tempdir().expect("temp dir");
    let new_key = tempfile::tempdir().expect("temp dir");
    let org = ["--org", "ttd", "--scope", "altinn:events.subscribe"];
    let old_token = token_for(old_key.path(), &org);
    let new_token = token_for(new_key.path(), &org);
    let old_jwk = jwk_with_kid(old_key.path());
    let new_jwk = jwk_with_kid(new_key.path());
    let idp = Idp::start(vec![old_jwk.clone()]).await;
    let config = tempfile::tempdir().expect("temp dir");
    let openid = format!("{}/.well-known/openid-configuration", idp.url);
    let issuers = issuers_file(config.path(), &openid);
    let server = Server::start_with(&["--trusted-issuers", &issuers, "--no-dev-tokens"]);
    assert_eq!(idp.fetches(), 1, "fetched at start");

    assert_eq!(status_with(&server, &old_token).await, 200);
    // Not published yet: refused, and asking again and again fetches at most once per 2 s.
    let flood_started = Instant::now();
    let before = idp.fetches();
    for _ in 0..40 {
        assert_eq!(status_with(&server, &new_token).await, 401);
    }
    let windows = flood_started.elapsed().as_secs() / 2 + 1;
    let fetched = idp.fetches() - before;
    assert!(
        fetched <= usize::try_from(windows).unwrap_or(usize::MAX) + 1,
        "{fetched} fetches for 40 tokens with an unknown kid in {:?}",
        flood_started.elapsed()
    );

    // Published: the new key verifies within the refresh interval, without a restart.
    idp.publish(vec![old_jwk.clone(), new_jwk.clone()]);
    eventually(
        "the new key to verify",
        PATIENCE,
        async || match status_with(&server, &new_token).await {
            200 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
    // Removed: the old key stops verifying, also for the token verified with it before.
    idp.publish(vec![new_jwk.clone()]);
    eventually(
        "the removed key to stop verifying",
        PATIENCE,
        async || match status_with(&server, &old_token).await {
            401 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
    assert_eq!(status_with(&server, &new_token).await, 200);
    // Every key withdrawn: none of the issuer's tokens verifies until one is published again.
    idp.publish(Vec::new());
    eventually(
        "no key to verify with",
        PATIENCE,
        async || match status_with(&server, &new_token).await {
            401 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
    idp.publish(vec![new_jwk.clone()]);
    eventually("the key back", PATIENCE, async || {
        match status_with(&server, &new_token).await {
            200 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;

    // Another node starting while the issuer is down uses the keys the first one cached.
    let dead = format!("http://127.0.0.1:{}/jwks", free_port());
    let down = config.path().join("issuers-down.json");
    std::fs::write(
        &down,
        json!([{"issuer": "hendelse-dev", "jwksUri": dead, "algorithms": ["ES256"]}]).to_string(),
    )
    .expect("write");
    let down = down.display().to_string();
    let beside = Server::start_beside(&server, &["--trusted-issuers", &down, "--no-dev-tokens"]);
    assert_eq!(status_with(&beside, &new_token).await, 200);
    assert!(
        beside
            .log()
            .contains("using the copy cached at an earlier start"),
        "{}",
        beside.log()
    );

    // Without a cached copy the start fails, saying why on one line.
    let fresh = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-dev-tokens"])
        .args(["--trusted-issuers", &down])
        .arg("--data-dir")
        .arg(fresh.path())
        .output()
        .expect("run hendelse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.lines().last().unwrap_or_default();
    assert!(
        reason.contains("hendelse-dev") && reason.contains("no usable cached copy"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_issuer_with_two_key_sources_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("issuers.json");
    std::fs::write(
        &path,
        json!([{"issuer": "x", "jwks": "jwks.json", "jwksUri": "https://idp.example/jwks"}])
            .to_string(),
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--trusted-issuers"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run hendelse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exactly one of jwks"), "{stderr}");
}

/// A discovery document must name the issuer it was fetched for (OpenID Connect Discovery 1.0,
/// 4.3): keys published for another issuer are not taken, so without a cached copy the start
/// fails, saying why on one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_of_another_issuer_is_refused() {
    let key = tempfile::tempdir().expect("temp dir");
    let idp = Idp::start(vec![jwk_with_kid(key.path())]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("issuers.json");
    std::fs::write(
        &path,
        json!([{
            "issuer": "someone-else",
            "openidConfiguration": format!("{}/.well-known/openid-configuration", idp.url),
            "algorithms": ["ES256"]
        }])
        .to_string(),
    )
    .expect("write");
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-dev-tokens"])
        .arg("--trusted-issuers")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .await
        .expect("run hendelse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr.lines().last().unwrap_or_default();
    assert!(
        reason.contains("names the issuer hendelse-dev, not someone-else"),
        "{stderr}"
    );
    assert_eq!(idp.fetches(), 0, "no key is fetched for it");
}
