//! A PostgreSQL failover under load (issue 17, case 1): a primary with a synchronous streaming
//! standby (`pg_basebackup`), PgBouncer in front as operators run it (sqlx has no multi-host
//! connection strings with `target_session_attrs`), two Hendelse nodes through PgBouncer, 16
//! publishers, a reader following `next`, and a webhook subscription. The primary is stopped hard
//! (`pg_ctl stop -m immediate`), the standby promoted and PgBouncer re-pointed at it: publishes
//! and reads answer only 200 or 503 meanwhile, both nodes recover by themselves, every
//! acknowledged event is readable exactly once, the reader's cursor skips nothing across the
//! switch, and every event is delivered at least once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    OwnPostgres, RESOURCE, Receiver, Refusal, Server, Swarm, TO_LOOPBACK, acknowledged, eventually,
    free_port, get, give_to_postgres, page_ids, postgres_bin, resource_log, subscribe_validated,
};
use hendelse_store::testing::skip_outside_ci;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

const TEST: &str = "failover::a_promoted_standby_takes_over";

/// PgBouncer (Debian's package), run as `postgres`, in session mode: the settings an operator
/// would give it so that a client waiting for a server that is gone is told so within seconds.
struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl PgBouncer {
    fn start(dir: &Path, server_port: u16) -> Option<PgBouncer> {
        let port = free_port();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").ok()?;
        write_config(dir, port, server_port).ok()?;
        give_to_postgres(dir);
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer"])
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("pgbouncer could not run: {e}"))
            .ok()?;
        let bouncer = PgBouncer {
            dir: dir.to_owned(),
            port,
            child,
        };
        let listening = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        listening.then_some(bouncer)
    }

    /// Sends the pool to another server: the configuration rewritten, then `SIGHUP` (reload).
    fn point_at(&self, server_port: u16) {
        write_config(&self.dir, self.port, server_port).expect("rewrite pgbouncer.ini");
        let pid = std::fs::read_to_string(self.dir.join("pgbouncer.pid")).expect("pgbouncer.pid");
        let reloaded = Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill -HUP");
        assert!(reloaded.success(), "pgbouncer did not take SIGHUP");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, port: u16, server_port: u16) -> std::io::Result<()> {
    let d = dir.display();
    std::fs::write(
        dir.join("pgbouncer.ini"),
        format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {d}/users.txt\n\
             logfile = {d}/pgbouncer.log\n\
             pidfile = {d}/pgbouncer.pid\n\
             pool_mode = session\n\
             max_client_conn = 1000\n\
             default_pool_size = 200\n\
             server_connect_timeout = 2\n\
             server_login_retry = 1\n\
             query_wait_timeout = 5\n\
             ignore_startup_parameters = extra_float_digits,options,search_path\n"
        ),
    )
}

fn only_503(id: &str, response: &reqwest::Response) -> Refusal {
    assert_eq!(response.status(), 503, "publish {id} during the failover");
    Refusal::BackOff
}

#[derive(Default)]
struct Reading {
    ids: Vec<String>,
    unavailable: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promoted_standby_takes_over_and_nothing_acknowledged_is_lost() {
    let missing = if postgres_bin().is_none() {
        Some("PostgreSQL's server programs (initdb, pg_basebackup)")
    } else if !Command::new("pgbouncer")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("pgbouncer (Debian's package; .ci/run installs it)")
    } else {
        None
    };
    if let Some(missing) = missing {
        skip_outside_ci(TEST, &format!("{missing} not found"));
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    assert!(
        give_to_postgres(dir.path()),
        "chown to postgres (needs root)"
    );
    let Some(primary) = OwnPostgres::create(
        &dir.path().join("primary"),
        dir.path(),
        &["synchronous_standby_names='*'", "synchronous_commit=on"],
    ) else {
        skip_outside_ci(
            TEST,
            "no PostgreSQL server of the test's own could be started",
        );
        return;
    };
    let standby = OwnPostgres::standby_of(&primary, &dir.path().join("standby"), dir.path(), &[])
        .expect("a standby from pg_basebackup");
    // Commits wait for the standby from here on: what a client is told is stored, is on both.
    let mut admin = PgConnection::connect(&primary.url())
        .await
        .expect("primary");
    eventually(
        "the standby to be synchronous",
        Duration::from_secs(30),
        async || {
            let sync: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            )
            .fetch_one(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            if sync == 1 {
                Ok(())
            } else {
                Err(format!("{sync} synchronous standbys"))
            }
        },
    )
    .await;
    drop(admin);
    let bouncer_dir = dir.path().join("pgbouncer");
    std::fs::create_dir_all(&bouncer_dir).expect("pgbouncer dir");
    let bouncer = PgBouncer::start(&bouncer_dir, primary.port).expect("pgbouncer starts");
    let url = bouncer.url();
    let a = Server::start_with(&[&TO_LOOPBACK[..], &["--database-url", &url]].concat());
    let b = Server::start_beside(&a, &[&TO_LOOPBACK[..], &["--database-url", &url]].concat());
    let token = a.ttd();
    let receiver = Receiver::start().await;
    subscribe_validated(
        &a,
        &token,
        &json!({"endPoint": receiver.url("/all"), "resourceFilter": RESOURCE}),
    )
    .await;

    let swarm = Swarm::start(&[&a, &b], &token, 16, 700, "f", only_503);
    let reading = Arc::new(Mutex::new(Reading::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (urls, token, reading, stop) = (
            [a.url.clone(), b.url.clone()],
            token.clone(),
            reading.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut path = format!("/events/api/v1/events?resource={RESOURCE}&after=0&size=97");
            for round in 0usize.. {
                let stopping = stop.load(Ordering::SeqCst);
                let (status, next, body) = get(&format!("{}{path}", urls[round % 2]), &token).await;
                if status == 503 {
                    reading.lock().await.unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                assert_eq!(status, 200, "a read during the failover: {body}");
                let page = page_ids(&body);
                let next = next.expect("next");
                path = next[next.find("/events/api").expect("an API URL")..].to_owned();
                if page.is_empty() && stopping {
                    return;
                }
                reading.lock().await.ids.extend(page);
            }
        })
    };

    swarm
        .wait_for_acknowledged(1_500, Duration::from_secs(120))
        .await;
    let before_switch = swarm.acknowledged_so_far();
    primary.stop_immediately();
    let switch = Instant::now();
    assert!(standby.promote(), "promote: {}", standby.log());
    bouncer.point_at(standby.port);
    let switched_in = switch.elapsed();
    let after_switch = Instant::now();
    let published = swarm.join().await;
    let recovered_in = after_switch.elapsed();
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("the reader");

    let acked = acknowledged(&published);
    let refused: usize = published.iter().map(|p| p.refused).sum();
    assert!(
        published.iter().all(|p| !p.cut_off),
        "a node dropped a publisher's connection; pgbouncer: {}",
        bouncer.log()
    );
    assert!(
        acked.len() > before_switch + 1_000,
        "too few publishes after the switch ({} of {} before it)",
        acked.len(),
        before_switch
    );
    // Both nodes publish again: each publisher's last ten events (sent alternately to both
    // nodes) were acknowledged.
    for p in &published {
        let last = p.acknowledged.last().expect("something acknowledged");
        assert!(last.ends_with("-000699"), "a publisher ended on {last}");
    }

    let stored = resource_log(&b, &token).await;
    let stored_ids: Vec<String> = stored
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let distinct: HashSet<&String> = stored_ids.iter().collect();
    assert_eq!(distinct.len(), stored_ids.len(), "an event is stored twice");
    let lost: Vec<&String> = acked.iter().filter(|id| !distinct.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    let reading = reading.lock().await;
    let read: HashSet<&String> = reading.ids.iter().collect();
    assert_eq!(
        read.len(),
        reading.ids.len(),
        "the reader saw an event twice"
    );
    assert_eq!(reading.ids, stored_ids, "the reader's walk is not the log");

    let deadline = Instant::now() + Duration::from_secs(180);
    let mut progress = Vec::new();
    loop {
        let delivered = receiver.ids_on("/all");
        progress.push(delivered.len());
        let undelivered = stored_ids
            .iter()
            .filter(|id| !delivered.contains(*id))
            .count();
        if undelivered == 0 {
            break;
        }
        if Instant::now() > deadline {
            let metrics = reqwest::get(a.at("/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            let deliveries: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("hendelse_deliver") || l.starts_with("hendelse_dispatch"))
                .collect();
            eprintln!(
                "delivered, every 10 s: {:?}\n{}",
                progress.iter().step_by(50).collect::<Vec<_>>(),
                deliveries.join("\n")
            );
            let mut db = PgConnection::connect(&standby.url())
                .await
                .expect("the new primary");
            let tip: i64 = sqlx::query_scalar("SELECT seq FROM event_tip")
                .fetch_one(&mut db)
                .await
                .expect("tip");
            let dispatched: i64 = sqlx::query_scalar("SELECT seq FROM dispatch_position")
                .fetch_one(&mut db)
                .await
                .unwrap_or(-1);
            eprintln!("the new primary: tip {tip}, dispatch position {dispatched}");
            let subs: Vec<String> = sqlx::query_scalar(
                "SELECT row_to_json(s)::text FROM (SELECT id, enabled, validated, \
                 disabled_reason, deleted, start_seq FROM subscriptions) s",
            )
            .fetch_all(&mut db)
            .await
            .unwrap_or_default();
            let states: Vec<String> = sqlx::query_scalar(
                "SELECT state || ' ' || coalesce(last_error, '-') || ' ' || attempts || ' × ' \
                 || count(*) FROM deliveries GROUP BY state, last_error, attempts",
            )
            .fetch_all(&mut db)
            .await
            .unwrap_or_default();
            eprintln!("subscriptions {subs:?}; deliveries {states:?}");
            let warnings: Vec<String> = a
                .log()
                .lines()
                .filter(|l| l.contains("dispatch") || l.contains("panick") || l.contains("ERROR"))
                .map(str::to_owned)
                .collect();
            panic!(
                "{undelivered} of {} events never delivered; the delivering node's warnings \
                 ({} in all, the last ten):\n{}",
                stored_ids.len(),
                warnings.len(),
                warnings[warnings.len().saturating_sub(10)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "failover: {} acknowledged ({before_switch} before the switch), {} stored ({} in flight \
         at the switch, not acknowledged), {refused} publishes answered 503, {} reads 503; \
         promote and re-point took {switched_in:.1?}, the load finished {recovered_in:.1?} later; \
         {} events delivered",
        acked.len(),
        stored_ids.len(),
        stored_ids.len() - acked.len(),
        reading.unavailable,
        receiver.ids_on("/all").len(),
    );
}
