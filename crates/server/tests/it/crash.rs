//! Crash consistency on both backends: `kill -9` at a random moment under a publish load from 16
//! clients, ten times; after every restart each acknowledged event is there exactly once (by
//! `source` + `id`) and a reader following `next` from the start sees a gap-free sequence.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::common::{RESOURCE, Refusal, Server, Swarm, follow, generic_event, resource_log};
use hendelse_store::testing::TestDatabase;

const CYCLES: usize = 10;
const CLIENTS: usize = 16;

/// A small xorshift generator: the delays need no cryptographic quality, only variety, and the
/// seed is printed so that a failing run can be replayed with `HENDELSE_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("HENDELSE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15)
                    ^ u64::from(std::process::id())
            })
            | 1;
        eprintln!("crash seed: {seed} (set HENDELSE_CRASH_SEED to replay)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// What one walk of the log from `after=0` found, checked against the acknowledged events.
struct Audit {
    acknowledged: usize,
    found: usize,
    lost: usize,
    duplicated: usize,
    /// Every event's `source` + `id`, in the order of the walk.
    order: Vec<(String, String)>,
}

async fn audit(server: &Server, token: &str, acknowledged: &HashMap<String, usize>) -> Audit {
    let events = resource_log(server, token).await;
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for event in &events {
        let key = (
            event["source"].as_str().expect("source").to_owned(),
            event["id"].as_str().expect("id").to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let source = generic_event("x")["source"]
        .as_str()
        .expect("source")
        .to_owned();
    let lost = acknowledged
        .keys()
        .filter(|id| !seen.contains_key(&(source.clone(), (*id).clone())))
        .count();
    let duplicated = seen.values().filter(|n| **n > 1).count();

    // Each client waited for every acknowledgement before sending its next event, so the reader
    // must see one client's acknowledged events in the order they were acknowledged.
    let mut last: HashMap<String, usize> = HashMap::new();
    for event in &events {
        let id = event["id"].as_str().expect("id");
        let Some(&n) = acknowledged.get(id) else {
            continue;
        };
        let writer = id.rsplit_once('-').expect("id shape").0.to_owned();
        if let Some(previous) = last.insert(writer.clone(), n) {
            assert!(previous < n, "{writer}: #{n} read after #{previous}");
        }
    }
    Audit {
        acknowledged: acknowledged.len(),
        found: events.len(),
        order: events
            .iter()
            .map(|e| {
                (
                    e["source"].as_str().expect("source").to_owned(),
                    e["id"].as_str().expect("id").to_owned(),
                )
            })
            .collect(),
        lost,
        duplicated,
    }
}

/// Runs the ten cycles against a server started with `args` and reports the totals.
async fn crash_cycles(backend: &str, args: &[&str]) {
    let mut rng = Rng::seeded();
    let mut server = Server::start_with(args);
    let token = server.ttd();
    // id → its position in its client's acknowledged sequence.
    let mut acknowledged: HashMap<String, usize> = HashMap::new();
    let mut unacknowledged_tries = 0usize;
    // A reader that keeps its cursor across the crashes (small pages, so that page boundaries
    // fall everywhere): what it reads in total must be the log exactly, with nothing appearing
    // behind its cursor after a restart.
    let mut cursor = format!("/events/api/v1/events?resource={RESOURCE}&after=0&size=37");
    let mut incremental: Vec<(String, String)> = Vec::new();

    for cycle in 0..CYCLES {
        // Bounded: the server is killed well before this many publishes.
        let clients = Swarm::start(
            &[&server],
            &token,
            CLIENTS,
            100_000,
            &format!("k{cycle}-"),
            |id, refused| match refused.status().as_u16() {
                // Back-pressure is allowed; the event was not acknowledged.
                503 => Refusal::BackOff,
                other => panic!("publish {id}: unexpected {other}"),
            },
        );
        // The random moment falls in a running load, not in its start-up.
        clients
            .wait_for_acknowledged(CLIENTS, Duration::from_secs(60))
            .await;
        let delay = rng.between(100, 800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        let mut this_cycle = 0;
        for published in clients.join().await {
            this_cycle += published.acknowledged.len();
            // The event sent when the server died under a client was not acknowledged either.
            unacknowledged_tries += published.refused + usize::from(published.cut_off);
            for (n, id) in published.acknowledged.into_iter().enumerate() {
                acknowledged.insert(id, n);
            }
        }
        server.restart();

        let audit = audit(&server, &token, &acknowledged).await;
        eprintln!(
            "{backend} cycle {cycle}: kill -9 after {delay} ms, {this_cycle} acknowledged this \
             cycle; total acknowledged {}, found {}, lost {}, duplicated {}",
            audit.acknowledged, audit.found, audit.lost, audit.duplicated
        );
        assert_eq!(audit.lost, 0, "cycle {cycle}: acknowledged events lost");
        assert_eq!(audit.duplicated, 0, "cycle {cycle}: events stored twice");
        let (more, next) = follow(&server.at(&cursor), &token).await;
        incremental.extend(more.iter().map(|e| {
            (
                e["source"].as_str().expect("source").to_owned(),
                e["id"].as_str().expect("id").to_owned(),
            )
        }));
        let at = next.find("/events/api").expect("next is a URL of this API");
        cursor = next[at..].to_owned();
        assert_eq!(
            incremental.len(),
            audit.order.len(),
            "cycle {cycle}: the reader that kept its cursor saw {} events, a walk from the start {}",
            incremental.len(),
            audit.order.len()
        );
        assert!(
            incremental == audit.order,
            "cycle {cycle}: the reader that kept its cursor saw another sequence than a walk \
             from the start"
        );
        // Found may exceed acknowledged only by the events in flight at the kill (at most one
        // per client per cycle), whose acknowledgement never arrived.
        assert!(
            audit.found <= audit.acknowledged + CLIENTS * (cycle + 1),
            "cycle {cycle}: {} events found but only {} acknowledged",
            audit.found,
            audit.acknowledged
        );
    }
    assert!(
        acknowledged.len() >= CYCLES * CLIENTS,
        "the load was too small to mean anything: {}",
        acknowledged.len()
    );
    eprintln!(
        "{backend}: {CYCLES} kill -9 cycles, {} events acknowledged, {} publishes unacknowledged \
         (connection cut or 503), 0 lost, 0 duplicated; a reader keeping its cursor across the \
         crashes read {} events, the same sequence as a walk from the start",
        acknowledged.len(),
        unacknowledged_tries,
        incremental.len()
    );
    // The ids never seen twice across cycles, by construction; check the set is what we think.
    let distinct: HashSet<&String> = acknowledged.keys().collect();
    assert_eq!(distinct.len(), acknowledged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_kill_9_at_random_moments_loses_and_duplicates_nothing() {
    crash_cycles("sqlite", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    crash_cycles("postgres", &["--database-url", &db.url]).await;
    db.drop_database().await;
}
