//! The README's five-minute walkthrough, run as written: the shell block after the
//! `<!-- walkthrough -->` marker, against a real server, with the `hendelse` under test on `PATH`.

use std::path::Path;
use std::process::Command;

use crate::common::{BIN, Server, client, free_port};

/// The walkthrough's shell block, from the README at the root of the workspace.
fn walkthrough() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let after = text
        .split_once("<!-- walkthrough -->")
        .expect("the README marks its walkthrough")
        .1;
    let block = after
        .split_once("```sh\n")
        .expect("a shell block follows the marker")
        .1;
    block
        .split_once("\n```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// The ids of the CloudEvents printed one per line (other output, such as the pretty-printed
/// subscription, is passed over).
fn ids(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["specversion"] == "1.0")
        .map(|event| event["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let server = Server::start_delivering(&[]);
    let receiver_port = free_port();
    let address = server.url.trim_start_matches("http://");
    let script = walkthrough()
        .replace("127.0.0.1:8080", address)
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{receiver_port}"));
    let bin_dir = Path::new(BIN).parent().expect("binary directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = tempfile::tempdir().expect("work dir");
    let out = Command::new("bash")
        .args(["-eu", "-o", "pipefail", "-c", &script])
        .current_dir(work.path())
        .env("PATH", path)
        .env("HENDELSE_DATA_DIR", server.data_dir())
        .env_remove("HENDELSE_TOKEN")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough failed: {stderr}\n{stdout}\nserver log: {}",
        server.log()
    );

    let all = ["walk-1", "walk-2", "walk-3", "walk-4"];
    let updated = ["walk-2", "walk-3", "walk-4"];
    // stdout: the subscription (pretty JSON), both queries, then the stream's and the webhook's.
    let printed = ids(&stdout);
    let owner_query = &printed[..4];
    assert_eq!(owner_query, all, "{stdout}");
    assert_eq!(&printed[4..7], updated, "the person's query: {stdout}");
    let stream = std::fs::read_to_string(work.path().join("stream.jsonl")).expect("stream.jsonl");
    assert_eq!(ids(&stream), all, "the live stream");
    let received =
        std::fs::read_to_string(work.path().join("received.jsonl")).expect("received.jsonl");
    let mut webhook = ids(&received);
    webhook.sort();
    webhook.dedup();
    assert_eq!(webhook, all, "the webhook receiver");
    assert!(
        stdout.contains("\"validated\""),
        "the subscription was printed: {stdout}"
    );
}

/// `hendelse receive --secret` prints what is signed with the secret and refuses the rest.
#[tokio::test]
async fn receive_checks_signatures() {
    let port = free_port();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut child = std::process::Command::new(BIN)
        .args([
            "receive",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--secret",
            secret,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start receive");
    let url = format!("http://127.0.0.1:{port}/hook");
    let body = r#"{"specversion":"1.0","id":"signed","source":"s","type":"t"}"#;
    let webhook = standardwebhooks::Webhook::new(secret).expect("secret");
    let timestamp = chrono::Utc::now().timestamp();
    let signature = webhook
        .sign("msg_1", timestamp, body.as_bytes())
        .expect("sign");
    let post = |signature: String, body: &'static str| {
        let url = url.clone();
        async move {
            for _ in 0..50 {
                let sent = client()
                    .post(&url)
                    .header("webhook-id", "msg_1")
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", signature.clone())
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) => return r.status().as_u16(),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
            panic!("hendelse receive did not start");
        }
    };
    assert_eq!(post(signature.clone(), body).await, 200);
    let forged = r#"{"specversion":"1.0","id":"forged","source":"s","type":"t"}"#;
    assert_eq!(post(signature, forged).await, 401);
    assert_eq!(post("v1,AAAA".to_owned(), body).await, 401);
    // A batch prints as its events, a line each.
    let batch = r#"[{"specversion":"1.0","id":"b1","source":"s","type":"t"},{"specversion":"1.0","id":"b2","source":"s","type":"t"}]"#;
    let batch_signature = webhook
        .sign("msg_1", timestamp, batch.as_bytes())
        .expect("sign");
    assert_eq!(post(batch_signature, batch).await, 200);
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ids(&printed), ["signed", "b1", "b2"], "{printed}");
}
