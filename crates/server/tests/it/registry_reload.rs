//! The registry reloads while the server runs: a changed file is validated and swapped whole, a
//! broken one keeps the registry in force, `SIGHUP` reads it again, and a revoked grant stops
//! the next query, the next event of an open stream and the next delivery, while requests keep
//! being answered throughout.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    ORG_SUBJECT, PATIENCE, RESOURCE, Receiver, Server, Stream, TO_LOOPBACK, data_path, eventually,
    generic_event, get, publish_ok, subscribe_validated,
};

/// The tests' registry, with or without the person's access to the organisation's events.
fn registry(with_access: bool) -> Value {
    let text = std::fs::read_to_string(data_path("registry.json")).expect("registry");
    let mut registry: Value = serde_json::from_str(&text).expect("JSON");
    if !with_access {
        registry["access"] = json!([]);
    }
    registry
}

/// Writes `registry` in place of the file as a deployment would: whole, renamed into place.
fn install(path: &Path, registry: &Value) {
    let next = path.with_extension("next");
    std::fs::write(&next, registry.to_string()).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

fn reloads(server: &Server) -> usize {
    server.log().matches("registry reloaded").count()
}

async fn wait_reloads(server: &Server, at_least: usize) {
    eventually("the registry to reload", PATIENCE, async || {
        let n = reloads(server);
        if n >= at_least {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
}

fn ids(page: &Value) -> Vec<String> {
    page.as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_stops_queries_streams_and_deliveries_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registry.json");
    install(&path, &registry(true));
    let path_arg = path.display().to_string();
    let server = Server::start_with(&[&TO_LOOPBACK[..], &["--registry", &path_arg]].concat());
    let ttd = server.ttd();
    let person = server.person();
    let receiver = Receiver::start().await;
    subscribe_validated(
        &server,
        &person,
        &json!({"endPoint": receiver.url("/person"), "resourceFilter": RESOURCE, "subjectFilter": ORG_SUBJECT}),
    )
    .await;
    let query = server.log_url("&size=100");
    let stream_url = server.at(&format!(
        "/events/api/v1/events/stream?resource={RESOURCE}&subject={ORG_SUBJECT}"
    ));
    let mut stream = Stream::open(&stream_url, &person, None).await;

    publish_ok(&server, &ttd, &generic_event("while-granted")).await;
    assert_eq!(stream.next().await.id.as_deref(), Some("while-granted"));
    receiver.delivered("/person", "while-granted").await;
    let (status, _, page) = get(&query, &person).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["while-granted"]);

    // Queries all through the changes below: each is answered, by one registry or the other.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let (query, person) = (query.clone(), person.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !*stopped.borrow() {
                let (status, _, page) = get(&query, &person).await;
                answers.push((status, ids(&page)));
            }
            answers
        })
    };

    // A broken file (a half-written one looks the same) is refused: the grant stays.
    let before = reloads(&server);
    std::fs::write(&path, "{\"parties\": [").expect("write");
    server
        .wait_for_log("the changed registry is not used", PATIENCE)
        .await;
    assert_eq!(reloads(&server), before);
    let (_, _, page) = get(&query, &person).await;
    assert_eq!(ids(&page), ["while-granted"], "the registry in force stays");

    // Revoked: the next query, stream event and delivery see it, with answers all along.
    install(&path, &registry(false));
    wait_reloads(&server, before + 1).await;
    let (status, _, page) = get(&query, &person).await;
    assert_eq!(status, 200, "{page}");
    assert!(ids(&page).is_empty(), "{page}");
    stop.send_replace(true);
    let answers = load.await.expect("the load");
    assert!(answers.len() > 10, "{} queries", answers.len());
    for (status, seen) in &answers {
        assert_eq!(*status, 200);
        assert!(
            seen.is_empty() || seen == &["while-granted"],
            "a page neither registry gives: {seen:?}"
        );
    }
    publish_ok(&server, &ttd, &generic_event("after-revoke")).await;
    publish_ok(&server, &ttd, &generic_event("after-revoke-2")).await;
    let silent = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;
    assert!(
        silent.is_err(),
        "the stream went on: {:?}",
        silent.map(|m| m.id)
    );
    assert!(
        !receiver.ids_on("/person").contains("after-revoke"),
        "delivered after the grant was revoked"
    );

    // SIGHUP reads the file again, changed or not.
    let before = reloads(&server);
    let pid = server.pid().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    wait_reloads(&server, before + 1).await;
    // Granted again: new events reach the person again.
    install(&path, &registry(true));
    wait_reloads(&server, before + 2).await;
    publish_ok(&server, &ttd, &generic_event("granted-again")).await;
    receiver.delivered("/person", "granted-again").await;
    assert!(!receiver.ids_on("/person").contains("after-revoke"));
}

/// Two writes within one tick of the filesystem's clock can leave the file's length, inode and
/// modification time alike; while that time is recent (here: ahead of the clock) the content is
/// compared, so the second write is not missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_keeps_length_inode_and_time_is_seen() {
    use std::io::Write;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("registry.json");
    let with = registry(true);
    std::fs::write(&path, with.to_string()).expect("write");
    let server = Server::start_with(&["--registry", path.to_str().expect("path")]);
    let mut other = with.clone();
    other["access"][0]["person"] = json!("01017012345");
    assert_eq!(
        other.to_string().len(),
        with.to_string().len(),
        "the same length"
    );
    let at = std::time::SystemTime::now() + Duration::from_secs(3600);
    let write_in_place = |value: &Value| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        file.write_all(value.to_string().as_bytes()).expect("write");
        file.set_modified(at).expect("set the modification time");
    };
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).expect("meta"));
    let before = inode();
    write_in_place(&other);
    wait_reloads(&server, 1).await;
    write_in_place(&with);
    assert_eq!(inode(), before, "written in place");
    wait_reloads(&server, 2).await;
}
