//! The delivery workers against a real SQLite store and a real HTTP receiver on loopback: a
//! subscription at its concurrency cap gets its next delivery as soon as one of its attempts
//! finishes (not at the next poll), and never has more in flight than its cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use hendelse_auth::{Registry, RegistryAuthorizer};
use hendelse_push::{EndpointPolicy, Push, PushConfig};
use hendelse_store::push::{NewDelivery, NewSubscription};
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::{EventStore, PushStore};
use tokio::sync::watch;

const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
const QUEUED: usize = 30;
const CAP: usize = 2;

/// Counts requests and the most that were ever in flight at once.
#[derive(Default)]
struct Receiver {
    received: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

async fn receive(receiver: Arc<Receiver>) -> &'static str {
    let now = receiver.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    receiver.most_in_flight.fetch_max(now, Ordering::SeqCst);
    // Long enough for the worker to try to start more of this subscription meanwhile.
    tokio::time::sleep(Duration::from_millis(20)).await;
    receiver.in_flight.fetch_sub(1, Ordering::SeqCst);
    receiver.received.fetch_add(1, Ordering::SeqCst);
    "ok"
}

fn subscription(end_point: String) -> NewSubscription {
    NewSubscription {
        end_point,
        resource_filter: RESOURCE.into(),
        source_filter: None,
        subject_filter: None,
        alternative_subject_filter: None,
        type_filter: None,
        include_subunits: false,
        consumer: "/org/ttd".into(),
        created_by: "/org/ttd".into(),
        principal: r#"{"kind":"org","org":"ttd","orgNumber":null,"scopes":[]}"#.into(),
        secret: None,
    }
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
        body: body.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_attempt_makes_room_at_once_and_the_cap_holds() {
    let receiver = Arc::new(Receiver::default());
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
        .create_subscription(&subscription(format!("http://{address}/hook")), &|id| {
            delivery(id, 0)
        })
        .await
        .expect("subscription");
    let queued: Vec<NewDelivery> = (1..=QUEUED as i64)
        .map(|seq| delivery(created.id, seq))
        .collect();
    assert!(push.enqueue(0, 0, &queued).await.expect("enqueue"));

    let registry: Registry = serde_json::from_str(&format!(
        r#"{{"resources": [{{"id": "{RESOURCE}", "owner": "ttd"}}]}}"#
    ))
    .expect("registry");
    let (_tip, committed) = watch::channel(0);
    let config = PushConfig {
        concurrency: 8,
        per_subscription: CAP,
        policy: EndpointPolicy {
            allow_http: true,
            allow_private: true,
        },
        // Far beyond the test's patience: only a finished attempt can start the next one.
        poll_interval: Duration::from_secs(3600),
        ..PushConfig::default()
    };
    let running = Push::start(
        events,
        push.clone(),
        Arc::new(RegistryAuthorizer::new(registry)),
        committed,
        config,
    )
    .expect("start");
    running.wake.notify_one();

    let everything = QUEUED + 1; // and the handshake
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while receiver.received.load(Ordering::SeqCst) < everything
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        receiver.received.load(Ordering::SeqCst),
        everything,
        "the worker waited for a poll instead of leasing when an attempt finished"
    );
    assert_eq!(
        receiver.most_in_flight.load(Ordering::SeqCst),
        CAP,
        "the subscription's cap is used and never exceeded"
    );
    running.stop().await;
}
