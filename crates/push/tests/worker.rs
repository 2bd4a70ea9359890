//! The delivery workers against a real SQLite store and a real HTTP receiver on loopback: a
//! subscription at its concurrency cap gets its next delivery as soon as one of its attempts
//! finishes (not at the next poll), never has more in flight than its cap, and once deleted gets
//! nothing more of what the worker had leased ahead for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use hendelse_auth::{Registry, RegistryAuthorizer};
use hendelse_push::{EndpointPolicy, Push, PushConfig};
use hendelse_store::push::NewDelivery;
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::testing::org_subscription;
use hendelse_store::{EventStore, PushStore};
use tokio::sync::watch;

const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
const QUEUED: usize = 30;
const CAP: usize = 2;

/// Counts requests and the most that were ever in flight at once; each takes `delay_ms`.
#[derive(Default)]
struct Receiver {
    received: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    delay_ms: AtomicU64,
}

async fn receive(receiver: Arc<Receiver>) -> &'static str {
    let now = receiver.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    receiver.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = receiver.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    receiver.in_flight.fetch_sub(1, Ordering::SeqCst);
    receiver.received.fetch_add(1, Ordering::SeqCst);
    "ok"
}

fn delivery(subscription_id: i64, seq: i64) -> NewDelivery {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": seq.to_string(),
        "source": "https://ttd.apps.example/app/1",
        "type": "app.instance.created",
        "resource": RESOURCE,
        "subject": "/party/50001337",
    });
    NewDelivery {
        subscription_id,
        event_seq: Some(seq),
        webhook_id: format!("msg_{seq}"),
        event_id: seq.to_string(),
        body: Some(body.to_string()),
        batch: None,
    }
}

/// A receiver, a store with one subscription to it and `queued` deliveries for it, and the workers
/// running with `per_subscription` and a poll interval far beyond any test's patience (only a
/// finished attempt or a wake can start the next one).
async fn running(
    receiver: &Arc<Receiver>,
    queued: usize,
    per_subscription: usize,
) -> (tempfile::TempDir, Arc<SqliteStore>, i64, Push) {
    let app = {
        let receiver = receiver.clone();
        Router::new().route("/hook", post(move || receive(receiver.clone())))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("open"));
    let push: Arc<dyn PushStore> = store.clone();
    let events: Arc<dyn EventStore> = store.clone();
    let created = push
        .create_subscription(
            &org_subscription(&format!("http://{address}/hook"), RESOURCE),
            &|id| delivery(id, 0),
        )
        .await
        .expect("subscription");
    let deliveries: Vec<NewDelivery> = (1..=queued as i64)
        .map(|seq| delivery(created.id, seq))
        .collect();
    assert!(push.enqueue(0, 0, &deliveries).await.expect("enqueue"));

    let registry: Registry = serde_json::from_str(&format!(
        r#"{{"resources": [{{"id": "{RESOURCE}", "owner": "ttd"}}]}}"#
    ))
    .expect("registry");
    let (_tip, committed) = watch::channel(0);
    let config = PushConfig {
        concurrency: 8,
        per_subscription,
        policy: EndpointPolicy {
            allow_http: true,
            allow_private: true,
        },
        poll_interval: Duration::from_secs(3600),
        ..PushConfig::default()
    };
    let workers = Push::start(
        events,
        push,
        Arc::new(RegistryAuthorizer::new(registry)),
        committed,
        config,
        Arc::new(
            hendelse_push::secrets::SecretKeys::parse(
                &hendelse_push::secrets::SecretKeys::generate().expect("key"),
            )
            .expect("keys"),
        ),
    )
    .expect("start");
    workers.wake.notify_one();
    (dir, store, created.id, workers)
}

/// Waits (up to a minute) until the receiver has had `count` requests.
async fn received(receiver: &Receiver, count: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.received.load(Ordering::SeqCst) < count && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.received.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_attempt_makes_room_at_once_and_the_cap_holds() {
    let receiver = Arc::new(Receiver::default());
    // Long enough for the worker to try to start more of this subscription meanwhile.
    receiver.delay_ms.store(20, Ordering::SeqCst);
    let (_dir, _store, _id, workers) = running(&receiver, QUEUED, CAP).await;
    let everything = QUEUED + 1; // and the handshake
    assert_eq!(
        received(&receiver, everything).await,
        everything,
        "the worker waited for a poll instead of leasing when an attempt finished"
    );
    assert_eq!(
        receiver.most_in_flight.load(Ordering::SeqCst),
        CAP,
        "the subscription's cap is used and never exceeded"
    );
    workers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_deleted_meanwhile_gets_nothing_it_was_leased_ahead() {
    let receiver = Arc::new(Receiver::default());
    // Slow enough that what the worker leased ahead waits in its queue for longer than it may
    // trust what it read of the subscription.
    receiver.delay_ms.store(1500, Ordering::SeqCst);
    let (_dir, store, id, workers) = running(&receiver, 5, 1).await;
    // The handshake, then the first event while the rest wait their turn under the cap of 1.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.in_flight.load(Ordering::SeqCst) == 0
        || receiver.received.load(Ordering::SeqCst) < 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first event never went out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.delete_subscription(id).await.expect("delete"));
    assert_eq!(received(&receiver, 2).await, 2, "the first event arrives");
    // Two more of its attempts' time: none of the events it had queued goes out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.received.load(Ordering::SeqCst),
        2,
        "events of a deleted subscription were sent"
    );
    workers.stop().await;
}
