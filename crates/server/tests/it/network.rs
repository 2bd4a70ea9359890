//! A bad network between a node and PostgreSQL (issue 17, case 2): the node runs in a network
//! namespace of the test's own, with one veth link for its HTTP clients and another to its
//! database, and only the database link is degraded: a slow link, a lossy one, then a 30 s
//! partition. Requests are answered (200, or 503 with problem details) within a bounded time all
//! along, the pool recovers by itself, nothing acknowledged is lost, no event is stored twice, and
//! no delivery is sent twice at once.
//!
//! This kernel has no `netem` qdisc and no tc classifiers or actions, so the faults are made with
//! what it has: `tbf` (a rate limit: every packet waits its turn, latency grows with the queue; a
//! small queue limit drops what does not fit, real tail-drop loss) and the link set down (a
//! partition: packets vanish, no reset is sent).

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    OwnPostgres, RESOURCE, Receiver, Server, TO_LOOPBACK, client, generic_event, give_to_postgres,
    header, post_event, postgres_bin, resource_log, subscribe_validated,
};
use hendelse_store::testing::skip_outside_ci;
use serde_json::json;
use tokio::sync::Mutex;

const TEST: &str = "network::a_slow_lossy_then_partitioned_database_link";

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A namespace with two links to this one: `http` (10.251.N.0/30) and `db` (10.252.N.0/30).
struct Namespace {
    name: String,
    db_host_link: String,
    db_inner_link: String,
    n: u32,
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        // Names of this process's own (interface names have at most 15 characters); the subnets
        // can only meet another run's if both run at once with pids equal modulo 250.
        let pid = std::process::id();
        let (n, tag) = (pid % 250 + 1, pid % 100_000);
        let ns = Namespace {
            name: format!("hendelse-net-{pid}"),
            db_host_link: format!("hdb{tag}"),
            db_inner_link: format!("hdb{tag}i"),
            n,
        };
        run(&["ip", "netns", "add", &ns.name])?;
        for (kind, host, inner, subnet) in [
            ("http", format!("hht{tag}"), format!("hht{tag}i"), 251),
            ("db", ns.db_host_link.clone(), ns.db_inner_link.clone(), 252),
        ] {
            let _ = run(&["ip", "link", "del", &host]);
            run(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &inner,
            ])
            .map_err(|e| format!("{kind} link: {e}"))?;
            run(&["ip", "link", "set", &inner, "netns", &ns.name])?;
            run(&[
                "ip",
                "addr",
                "add",
                &format!("10.{subnet}.{n}.1/30"),
                "dev",
                &host,
            ])?;
            run(&["ip", "link", "set", &host, "up"])?;
            ns.inside(&[
                "ip",
                "addr",
                "add",
                &format!("10.{subnet}.{n}.2/30"),
                "dev",
                &inner,
            ])?;
            ns.inside(&["ip", "link", "set", &inner, "up"])?;
        }
        ns.inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn inside(&self, args: &[&str]) -> Result<(), String> {
        run(&[&["ip", "netns", "exec", &self.name][..], args].concat())
    }

    fn http_ip(&self) -> String {
        format!("10.251.{}.2", self.n)
    }

    fn db_host_ip(&self) -> String {
        format!("10.252.{}.1", self.n)
    }

    /// The same token-bucket filter on both ends of the database link (`None`: none).
    fn shape_db_link(&self, tbf: Option<&[&str]>) {
        for (inside, link) in [(false, &self.db_host_link), (true, &self.db_inner_link)] {
            let command = match tbf {
                Some(tbf) => [
                    &["tc", "qdisc", "replace", "dev", link, "root", "tbf"][..],
                    tbf,
                ]
                .concat(),
                None => vec!["tc", "qdisc", "del", "dev", link, "root"],
            };
            let done = if inside {
                self.inside(&command)
            } else {
                run(&command)
            };
            if tbf.is_some() {
                done.expect("tc");
            }
        }
    }

    /// Packets the queues of the database link have dropped, both ends together.
    fn dropped_on_db_link(&self) -> u64 {
        let mut dropped = 0;
        for (inside, link) in [(false, &self.db_host_link), (true, &self.db_inner_link)] {
            let mut command = vec!["tc", "-s", "qdisc", "show", "dev", link.as_str()];
            if inside {
                command = [&["ip", "netns", "exec", &self.name][..], &command].concat();
            }
            let output = Command::new(command[0])
                .args(&command[1..])
                .output()
                .expect("tc -s");
            let text = String::from_utf8_lossy(&output.stdout);
            // "Sent 1234 bytes 56 pkt (dropped 7, overlimits 8 requeues 0)"
            dropped += text
                .split("dropped ")
                .skip(1)
                .filter_map(|rest| rest.split(',').next()?.trim().parse::<u64>().ok())
                .sum::<u64>();
        }
        dropped
    }

    fn db_link(&self, up: bool) {
        run(&[
            "ip",
            "link",
            "set",
            &self.db_host_link,
            if up { "up" } else { "down" },
        ])
        .expect("ip link set");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the links inside it, and with them their peers here.
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

#[derive(Default)]
struct Tally {
    acknowledged: Vec<String>,
    unavailable: usize,
    /// Anything but 200 or 503 with problem details and `Retry-After`.
    wrong: Vec<String>,
    /// No answer within the client's 30 s.
    unanswered: usize,
    /// The longest wait for an answer, and during which phase.
    slowest: (Duration, &'static str),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_lossy_then_partitioned_database_link() {
    if postgres_bin().is_none() {
        skip_outside_ci(TEST, "PostgreSQL's server programs not found");
        return;
    }
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(e) => {
            skip_outside_ci(TEST, &format!("no network namespace (needs root): {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().expect("dir");
    assert!(give_to_postgres(dir.path()), "chown to postgres");
    let listen = format!("listen_addresses='127.0.0.1,{}'", ns.db_host_ip());
    let pg = OwnPostgres::create(&dir.path().join("pg"), dir.path(), &[&listen])
        .expect("a PostgreSQL server of the test's own");
    pg.allow(&format!("10.252.{}.0/30", ns.n));
    let url = format!(
        "postgres://postgres@{}:{}/postgres",
        ns.db_host_ip(),
        pg.port
    );
    let server = Arc::new(Server::start_in_netns(
        &ns.name,
        &ns.http_ip(),
        &[&TO_LOOPBACK[..], &["--database-url", &url]].concat(),
    ));
    let token = Arc::new(server.ttd());
    // The receiver listens on this end of the node's HTTP link.
    let receiver = Receiver::start_on(&format!("10.251.{}.1", ns.n)).await;
    let hook = receiver.url("/all");
    subscribe_validated(
        &server,
        &token,
        &json!({"endPoint": hook, "resourceFilter": RESOURCE}),
    )
    .await;

    let phase = Arc::new(std::sync::Mutex::new("healthy"));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..8 {
        let (server, token, tally, stop, phase) = (
            server.clone(),
            token.clone(),
            tally.clone(),
            stop.clone(),
            phase.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let http = client();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("n{p}-{i:06}");
                let started = Instant::now();
                let sent = post_event(&http, &server.url, &token, &generic_event(&id)).await;
                let waited = started.elapsed();
                let mut t = tally.lock().await;
                if waited > t.slowest.0 {
                    t.slowest = (waited, *phase.lock().expect("phase"));
                }
                match sent {
                    Ok(r) if r.status() == 200 => t.acknowledged.push(id),
                    Ok(r) if r.status() == 503 => {
                        t.unavailable += 1;
                        let problem = header(&r, "content-type") == "application/problem+json";
                        if !problem || r.headers().get("retry-after").is_none() {
                            t.wrong
                                .push(format!("503 without problem details: {:?}", r.headers()));
                        }
                        drop(t);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(r) => {
                        let status = r.status();
                        drop(t);
                        let body = r.text().await.unwrap_or_default();
                        tally.lock().await.wrong.push(format!("{status}: {body}"));
                    }
                    Err(_) => t.unanswered += 1,
                }
            }
        }));
    }

    let set_phase = |name: &'static str| *phase.lock().expect("phase") = name;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healthy = tally.lock().await.acknowledged.len();

    // A slow link: 256 kbit/s each way, every packet queued behind the ones before it.
    set_phase("slow");
    ns.shape_db_link(Some(&[
        "rate", "256kbit", "burst", "1600", "latency", "10s",
    ]));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let slow = tally.lock().await.acknowledged.len() - healthy;

    // A lossy link: room for two packets in the queue, so bursts lose packets.
    set_phase("lossy");
    ns.shape_db_link(Some(&["rate", "1mbit", "burst", "1600", "limit", "3000"]));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let lossy = tally.lock().await.acknowledged.len() - healthy - slow;
    let dropped = ns.dropped_on_db_link();
    assert!(dropped > 0, "the lossy link dropped no packet");
    ns.shape_db_link(None);

    // A partition of 30 s: the link down, packets vanish without a reset.
    set_phase("partitioned");
    let before_partition = tally.lock().await.acknowledged.len();
    ns.db_link(false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during_partition = tally.lock().await.acknowledged.len() - before_partition;
    let refused_by_now = tally.lock().await.unavailable;
    ns.db_link(true);
    set_phase("recovering");

    // The pool recovers by itself: publishes are acknowledged again.
    let healed = Instant::now();
    let at_heal = tally.lock().await.acknowledged.len();
    while tally.lock().await.acknowledged.len() < at_heal + 200 {
        assert!(
            healed.elapsed() < Duration::from_secs(120),
            "publishes were not acknowledged again after the partition; the log's end: {}",
            {
                let log = server.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(25)..].join("\n")
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = healed.elapsed();
    stop.store(true, Ordering::SeqCst);
    for publisher in publishers {
        publisher.await.expect("a publisher");
    }

    let t = tally.lock().await;
    assert!(
        t.wrong.is_empty(),
        "answers other than 200/503: {:?}",
        &t.wrong[..t.wrong.len().min(3)]
    );
    assert_eq!(
        t.unanswered, 0,
        "requests the node did not answer within 30 s"
    );
    assert!(
        refused_by_now > 0,
        "nothing was refused while the database was unreachable"
    );
    let stored = resource_log(&server, &token).await;
    let ids: Vec<&str> = stored.iter().filter_map(|e| e["id"].as_str()).collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an event is stored twice");
    let lost: Vec<&String> = t
        .acknowledged
        .iter()
        .filter(|id| !distinct.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered = receiver.ids_on("/all");
        let undelivered = ids.iter().filter(|id| !delivered.contains(**id)).count();
        if undelivered == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{undelivered} events never delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        receiver.overlaps().is_empty(),
        "deliveries sent twice at once: {:?}",
        receiver.overlaps()
    );
    eprintln!(
        "network: acknowledged {healthy} in 3 s healthy, {slow} in 6 s slow, {lossy} in 6 s lossy, \
         {during_partition} in the 30 s partition; {dropped} packets dropped by the lossy link; {} \
         answered 503 ({refused_by_now} by the end of \
         the partition); the slowest answer took {:.1?} ({}); recovered {recovered_in:.1?} after \
         the link came back; {} stored, {} acknowledged, all delivered, no overlap",
        t.unavailable,
        t.slowest.0,
        t.slowest.1,
        ids.len(),
        t.acknowledged.len(),
    );
}
