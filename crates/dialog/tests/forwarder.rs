//! The forwarder against an event store that fails: outbox rows stay until their events are
//! stored, retries go on with backoff, and every event arrives once with the id it was given when
//! the change was stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hendelse_auth::{Principal, Registry, RegistryAuthorizer};
use hendelse_dialog::forwarder::{ForwarderConfig, Sink, forward_once, start};
use hendelse_dialog::{DialogService, ForwardError};
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::testing::HookedStore;
use hendelse_store::{DialogStore, EventQuery, EventStore, Ingest, IngestConfig, StoreError};
use serde_json::json;
use tokio::sync::Notify;

fn ttd() -> Principal {
    Principal::Org {
        org: Some("ttd".into()),
        org_number: None,
        scopes: Vec::new(),
        auth_level: None,
    }
}

async fn setup(failures: u32) -> (tempfile::TempDir, Arc<SqliteStore>, Ingest, DialogService) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path()).await.expect("open"));
    let registry: Registry = serde_json::from_value(json!({
        "parties": [], "access": [],
        "resources": [{"id": "urn:altinn:resource:super-simple-service", "owner": "ttd"}]
    }))
    .expect("registry");
    let service = DialogService::new(
        store.clone(),
        Arc::new(RegistryAuthorizer::new(registry)),
        Arc::new(Notify::new()),
    );
    // An event store whose first `failures` appends fail.
    let failures = AtomicU32::new(failures);
    let flaky = HookedStore::new(store.clone(), move || {
        let left = failures.load(Ordering::SeqCst);
        if left > 0 {
            failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Open("injected failure".into()));
        }
        Ok(())
    });
    let (ingest, _writer) = Ingest::start(Arc::new(flaky), IngestConfig::default(), 0);
    (dir, store, ingest, service)
}

async fn create(service: &DialogService) {
    service
        .create(
            &ttd(),
            json!({
                "serviceResource": "urn:altinn:resource:super-simple-service",
                "party": "urn:altinn:organization:identifier-no:991825827",
                "activities": [{"type": "Information"}],
                "transmissions": [{"type": "Information"}]
            }),
            false,
        )
        .await
        .expect("create");
}

async fn stored_ids(store: &SqliteStore) -> Vec<String> {
    store
        .query(&EventQuery {
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .expect("query")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test]
async fn a_failed_publish_leaves_the_outbox_as_it_was() {
    let (_dir, store, ingest, service) = setup(1).await;
    create(&service).await;
    let outbox = store.outbox(100).await.expect("outbox");
    assert_eq!(outbox.len(), 3);
    let sink = Sink::InProcess(ingest);
    let config = ForwarderConfig::default();

    let failed = forward_once(store.as_ref(), &sink, &config).await;
    assert!(matches!(failed, Err(ForwardError::Ingest(_))), "{failed:?}");
    assert_eq!(store.outbox(100).await.expect("outbox"), outbox);
    assert!(stored_ids(&store).await.is_empty());

    assert_eq!(
        forward_once(store.as_ref(), &sink, &config)
            .await
            .expect("forward"),
        3
    );
    assert!(store.outbox(100).await.expect("outbox").is_empty());
    let ids: Vec<String> = outbox.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(
        stored_ids(&store).await,
        ids,
        "the ids fixed with the change"
    );
    assert_eq!(
        forward_once(store.as_ref(), &sink, &config)
            .await
            .expect("idle"),
        0
    );
}

#[tokio::test]
async fn the_forwarder_retries_until_the_store_takes_the_events() {
    let (_dir, store, ingest, service) = setup(3).await;
    let wake = Arc::new(Notify::new());
    let config = ForwarderConfig {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        poll_interval: Duration::from_millis(50),
        ..ForwarderConfig::default()
    };
    create(&service).await;
    let expected: Vec<String> = store
        .outbox(100)
        .await
        .expect("outbox")
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    let forwarder = start(store.clone(), Sink::InProcess(ingest), config, wake.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.outbox_depth().await.expect("depth").0 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored_ids(&store).await, expected);
    // A later change is forwarded too (woken, or at the next poll).
    create(&service).await;
    wake.notify_one();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_ids(&store).await.len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored_ids(&store).await.len(), 6);
    forwarder.abort();
}
