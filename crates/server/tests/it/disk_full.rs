//! A full disk: the SQLite store and the server's log on a small ext4 filesystem of the test's own
//! (a loop-mounted image, so root is needed: CI runs as root). Sixteen publishers write until the
//! disk is full, space is freed while they go on, then the server is stopped and started again.
//! Every acknowledged event must be in the store exactly once, nothing may be answered 500, and
//! publishing must resume before the restart.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    ORG_SUBJECT, OwnPostgres, RESOURCE, Server, client, event_ids, eventually, get_public,
    give_to_postgres, header, post_event, resource_log, token_for,
};
use hendelse_store::testing::skip_outside_ci;
use serde_json::json;
use tokio::sync::Mutex;

const PUBLISHERS: usize = 16;
const IMAGE_MIB: u64 = 96;

/// A loop-mounted ext4 image, unmounted and removed on drop.
struct SmallDisk {
    _image_dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    /// `None` when this machine does not let the test mount one (not root, no loop devices).
    fn create() -> Option<SmallDisk> {
        let image_dir = tempfile::tempdir().ok()?;
        let image = image_dir.path().join("disk.img");
        let mount = image_dir.path().join("mnt");
        std::fs::create_dir(&mount).ok()?;
        let ok = |cmd: &mut Command| cmd.status().map(|s| s.success()).unwrap_or(false);
        let made = ok(Command::new("truncate")
            .arg("-s")
            .arg(format!("{IMAGE_MIB}M"))
            .arg(&image))
            // -m 0: no blocks reserved for root, so that root (which the server runs as in CI)
            // meets the full disk too.
            && ok(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0"])
                .arg(&image))
            && ok(Command::new("mount").arg("-o").arg("loop").arg(&image).arg(&mount));
        made.then_some(SmallDisk {
            _image_dir: image_dir,
            mount,
        })
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }

    /// Fills the disk until about `free` bytes are left; returns the filler's path.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        let filler = self.mount.join("filler");
        let size = self.available().saturating_sub(free);
        let status = Command::new("fallocate")
            .arg("-l")
            .arg(size.to_string())
            .arg(&filler)
            .status()
            .expect("fallocate");
        assert!(status.success(), "fallocate failed");
        filler
    }

    /// Fills the disk to the last block.
    fn fill_completely(&self) {
        self.fill_leaving(1 << 20);
        // dd stops with an error at the full disk; that is the point.
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.mount.join("top-up").display()))
            .arg("bs=4096")
            .output();
        assert!(self.available() < 4096, "the disk is not full");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount)
            .output()
            .is_ok_and(|o| o.status.success());
        if !unmounted {
            // A process that still holds a file open makes a plain umount fail.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        }
    }
}

fn small_disk_or_skip() -> Option<SmallDisk> {
    let disk = SmallDisk::create();
    if disk.is_none() {
        skip_outside_ci(
            "disk_full",
            "no loop-mounted filesystem could be made (root, mkfs.ext4 and losetup needed)",
        );
    }
    disk
}

/// A generic event with about 2 KiB of data.
fn event(id: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "https://example.com/disk-full",
        "type": "no.example.disk",
        "resource": RESOURCE,
        "subject": ORG_SUBJECT,
        "data": {"n": id, "padding": "x".repeat(2000)}
    })
}

#[derive(Default)]
struct Outcomes {
    acknowledged: HashSet<String>,
    statuses: HashMap<u16, usize>,
    dropped: usize,
    /// Acknowledgements that came after the filler was deleted.
    acknowledged_after_free: usize,
    /// Bodies of refused publishes, to check they name the cause.
    refusal_details: Vec<String>,
}

/// Sixteen publishers, each sending its own events one at a time until `stop`, recording what
/// each publish was answered.
fn start_publishers(
    url: &str,
    token: &Arc<String>,
    outcomes: &Arc<Mutex<Outcomes>>,
    refused: &Arc<AtomicUsize>,
    freed: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (token, outcomes, refused, freed, stop, url) = (
            token.clone(),
            outcomes.clone(),
            refused.clone(),
            freed.clone(),
            stop.clone(),
            url.to_owned(),
        );
        publishers.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{p}-{i:06}");
                i += 1;
                let was_freed = freed.load(Ordering::Relaxed);
                let sent = post_event(&http, &url, &token, &event(&id)).await;
                let mut o = outcomes.lock().await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        *o.statuses.entry(status).or_default() += 1;
                        if status == 200 {
                            o.acknowledged.insert(id);
                            if was_freed {
                                o.acknowledged_after_free += 1;
                            }
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                            drop(o);
                            let content_type = header(&response, "content-type").to_owned();
                            let body = response.text().await.unwrap_or_default();
                            let mut o = outcomes.lock().await;
                            if o.refusal_details.len() < 50 {
                                o.refusal_details
                                    .push(format!("{status} {content_type} {body}"));
                            }
                            drop(o);
                            // A refused publisher backs off a little, as a real one would.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Err(_) => o.dropped += 1,
                }
            }
        }));
    }
    publishers
}

async fn run(free_bytes: u64) {
    let Some(disk) = small_disk_or_skip() else {
        return;
    };
    let filler = disk.fill_leaving(free_bytes);
    let mut server = Server::start_in(&disk.mount, &[]);
    let token = Arc::new(server.ttd());
    let server_url = server.url.clone();
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let refused = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let publishers = start_publishers(&server_url, &token, &outcomes, &refused, &freed, &stop);

    // Phase 1: publish until the disk is full and publishes have been refused for a while.
    eventually("the disk to fill", Duration::from_secs(120), async || {
        if refused.load(Ordering::Relaxed) >= 1000 {
            Ok(())
        } else {
            Err(format!(
                "{:?}; log: {}",
                outcomes.lock().await.statuses,
                server.log()
            ))
        }
    })
    .await;

    // While the disk is full: readiness says so, reads and the metric keep working.
    let ready = get_public(&server, "/health/ready").await;
    let (ready_status, ready_body) = (ready.status, ready.text);
    let metrics = get_public(&server, "/metrics").await.text;
    let (query_status, _, _) = common::get(&server.log_url("&size=5"), &token).await;

    let dialog_while_full = create_dialog(&server, &token).await;

    // Phase 2: free the space while the publishers go on; publishing must resume by itself.
    std::fs::remove_file(&filler).expect("remove the filler");
    freed.store(true, Ordering::Relaxed);
    let freed_at = Instant::now();
    resumed(&outcomes, &server, Duration::from_secs(60)).await;
    let ready_after = get_public(&server, "/health/ready").await.status;
    let dialog_after = create_dialog(&server, &token).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher");
    }
    // The dialog acknowledged after the space came back has its `created` event forwarded.
    let dialog_id = dialog_after.1.as_str().unwrap_or_default().to_owned();
    let forwarded_at = Instant::now();
    while !dialog_events(&server, &token, &dialog_id).await
        && forwarded_at.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = server.terminate();
    assert!(
        status.success(),
        "the server did not stop cleanly: {status:?}; log tail: {}",
        tail(&server.log())
    );
    let integrity = integrity_check(&server.data_dir().join("events.db")).await;
    server.restart();
    let events = resource_log(&server, &server.ttd()).await;
    // A dialog's rows are small: the WAL may still have room for them when a batch of events
    // has none. Either it was refused as 507, or it was stored and its event is there.
    assert!(
        [201, 507].contains(&dialog_while_full.0),
        "a dialog created on the full disk: {} {}",
        dialog_while_full.0,
        dialog_while_full.1
    );
    assert_eq!(dialog_after.0, 201, "a dialog after: {}", dialog_after.1);
    let mut acknowledged_dialogs = vec![dialog_id];
    if dialog_while_full.0 == 201 {
        acknowledged_dialogs.push(dialog_while_full.1.as_str().unwrap_or_default().to_owned());
    }
    for id in &acknowledged_dialogs {
        assert!(
            events.iter().any(|e| e["resourceinstance"] == id.as_str()),
            "the acknowledged dialog {id} has no event after the restart"
        );
    }
    let o = outcomes.lock().await;
    check_outcomes(
        &o,
        &event_ids(&events),
        &format!(
            "SQLite, {} KiB free, acknowledged after the space came back within {:.1} s, \
             ready while full {ready_status}, after {ready_after}; integrity {integrity}",
            free_bytes / 1024,
            freed_at.elapsed().as_secs_f64()
        ),
    );
    assert_eq!(integrity, "ok");
    assert!(
        o.statuses.get(&507).copied().unwrap_or(0) > 0,
        "no publish was answered 507: {:?}",
        o.statuses
    );
    assert_eq!(
        query_status, 200,
        "queries must work while the disk is full"
    );
    assert_eq!(ready_status, 503, "readiness while full: {ready_body}");
    assert!(ready_body.contains("cannot write"), "{ready_body}");
    assert!(
        metrics.contains("hendelse_store_writable 0"),
        "the metric must say the store cannot write"
    );
    assert_eq!(ready_after, 200, "readiness after the space came back");
    assert!(
        !server.log().contains("panicked"),
        "something panicked: {}",
        tail(&server.log())
    );
}

/// Waits until publishing has resumed by itself after space came back: 500 acknowledgements.
async fn resumed(outcomes: &Mutex<Outcomes>, server: &Server, limit: Duration) {
    eventually(
        "publishing to resume after space came back",
        limit,
        async || {
            let o = outcomes.lock().await;
            if o.acknowledged_after_free >= 500 {
                Ok(())
            } else {
                Err(format!(
                    "{:?}; log tail: {}",
                    o.statuses,
                    tail(&server.log())
                ))
            }
        },
    )
    .await;
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Creates a dialog as `ttd`; its status and body.
async fn create_dialog(server: &Server, token: &str) -> (u16, serde_json::Value) {
    let response = client()
        .post(server.at("/dialogporten/api/v1/serviceowner/dialogs"))
        .bearer_auth(token)
        .json(&json!({
            "serviceResource": RESOURCE,
            "party": ORG_SUBJECT,
            "process": "urn:some:process:id",
        }))
        .send()
        .await
        .expect("create a dialog");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Whether the dialog's events are in the store yet.
async fn dialog_events(server: &Server, token: &str, id: &str) -> bool {
    let (_, _, body) = common::get(
        &server.log_url("&size=1000&type=dialogporten.dialog.created.v1"),
        token,
    )
    .await;
    body.as_array()
        .is_some_and(|page| page.iter().any(|e| e["resourceinstance"] == id))
}

/// What every disk-full run must show: every acknowledged event stored, once; no 500; no dropped
/// connection; every refusal problem details with 503 or 507, and a 507 that names the cause.
fn check_outcomes(o: &Outcomes, stored: &[String], label: &str) {
    let distinct: HashSet<&String> = stored.iter().collect();
    let lost: Vec<&String> = o
        .acknowledged
        .iter()
        .filter(|id| !distinct.contains(id))
        .collect();
    eprintln!(
        "disk full ({label}): statuses {:?}, dropped connections {}, acknowledged {}, stored {}, \
         lost {}, duplicated {}, acknowledged after the space came back {}",
        o.statuses,
        o.dropped,
        o.acknowledged.len(),
        stored.len(),
        lost.len(),
        stored.len() - distinct.len(),
        o.acknowledged_after_free,
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(stored.len(), distinct.len(), "an event is stored twice");
    assert!(
        !o.statuses.contains_key(&500),
        "a publish was answered 500: {:?}",
        o.statuses
    );
    assert_eq!(o.dropped, 0, "publish connections were dropped");
    for refusal in &o.refusal_details {
        assert!(
            refusal.starts_with("507 application/problem+json")
                || refusal.starts_with("503 application/problem+json"),
            "unexpected refusal: {refusal}"
        );
        if refusal.starts_with("507") {
            assert!(refusal.contains("disk is full"), "{refusal}");
        }
    }
}

async fn integrity_check(db: &Path) -> String {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open the store file");
    let result: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .expect("integrity_check");
    result
}

/// The disk fills while a commit writes its WAL frames (little room from the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_during_a_commit() {
    run(2 << 20).await;
}

/// The disk fills after the WAL has grown past a checkpoint, so the checkpoint's writes into the
/// database file meet it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_during_a_checkpoint() {
    run(9 << 20).await;
}

/// More room: the database file itself has grown when the disk fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_after_growth() {
    run(24 << 20).await;
}

/// A start on a full disk (the development signing key and the store's file still to be made)
/// fails with a one-line reason, and leaves nothing half-written behind: once space is freed the
/// same data directory works.
#[test]
fn a_start_on_a_full_disk() {
    let Some(disk) = small_disk_or_skip() else {
        return;
    };
    let data = disk.mount.join("fresh");
    std::fs::create_dir(&data).expect("data dir");
    disk.fill_completely();
    let out = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run hendelse serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("a start on a full disk: {last}");
    assert!(
        !out.status.success(),
        "serve started on a full disk: {stderr}"
    );
    assert!(
        last.starts_with("hendelse: ") && (last.contains("full") || last.contains("No space left")),
        "the reason: {stderr}"
    );
    let temporary: Vec<_> = std::fs::read_dir(&data)
        .expect("read data dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");

    std::fs::remove_file(disk.mount.join("filler")).expect("free space");
    std::fs::remove_file(disk.mount.join("top-up")).expect("free space");
    // The key left behind is usable.
    token_for(&data, &["--org", "ttd"]);
    let mut server = Server::start_in(&disk.mount, &[]);
    let (status, _, _) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::get(&server.log_url(""), &server.ttd()));
    assert_eq!(status, 200);
    assert!(server.terminate().success());
}

/// A PostgreSQL server of the test's own, its data directory on the small disk.
fn small_postgres(disk: &SmallDisk, log_dir: &Path) -> Option<OwnPostgres> {
    if !give_to_postgres(&disk.mount) || !give_to_postgres(log_dir) {
        return None;
    }
    OwnPostgres::create(
        &disk.mount.join("pg"),
        log_dir,
        &["max_wal_size=32MB", "min_wal_size=32MB"],
    )
}

/// PostgreSQL's own disk fills (its data and WAL on a small filesystem): publishes are refused
/// with 503/507 and problem details, never 500 and never acknowledged unstored; when space comes
/// back (and PostgreSQL runs again: it stops itself when it cannot write its WAL), the same
/// Hendelse process publishes again, and after a restart every acknowledged event is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_full_disk() {
    let Some(disk) = small_disk_or_skip() else {
        return;
    };
    let logs = tempfile::tempdir().expect("log dir");
    let Some(pg) = small_postgres(&disk, logs.path()) else {
        skip_outside_ci(
            "postgres_full_disk",
            "no PostgreSQL server of the test's own could be started (initdb and pg_ctl as postgres)",
        );
        return;
    };
    let filler = disk.fill_leaving(6 << 20);
    let url = pg.url();
    let mut server = Server::start_with(&["--database-url", &url]);
    let token = Arc::new(server.ttd());
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let refused = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let publishers = start_publishers(&server.url, &token, &outcomes, &refused, &freed, &stop);
    eventually(
        "PostgreSQL's disk to fill",
        Duration::from_secs(180),
        async || {
            if refused.load(Ordering::Relaxed) >= 1000 {
                Ok(())
            } else {
                Err(format!("{:?}", outcomes.lock().await.statuses))
            }
        },
    )
    .await;
    let (ready_status, _, _) = common::get(&server.at("/health/ready"), "").await;
    std::fs::remove_file(&filler).expect("remove the filler");
    freed.store(true, Ordering::Relaxed);
    let restarted_postgres = if pg.is_running() { false } else { pg.start() };
    resumed(&outcomes, &server, Duration::from_secs(90)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher");
    }
    assert!(
        server.terminate().success(),
        "the server did not stop cleanly"
    );
    server.restart();
    let events = resource_log(&server, &server.ttd()).await;
    let o = outcomes.lock().await;
    check_outcomes(
        &o,
        &event_ids(&events),
        &format!(
            "PostgreSQL, postgres restarted by the test: {restarted_postgres}, ready while full {ready_status}"
        ),
    );
    assert!(
        o.statuses.keys().all(|s| [200, 503, 507].contains(s)),
        "{:?}",
        o.statuses
    );
}
