//! The dispatcher against a real SQLite store: pages without a match do not cost a durable write
//! each, the position they reach is persisted soon after, and two dispatchers sharing a position
//! never queue an event twice.

use std::time::Duration;

use hendelse_auth::{Registry, RegistryAuthorizer};
use std::sync::Arc;

use hendelse_push::dispatcher::{self, Position, step};
use hendelse_store::push::NewSubscription;
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::testing::handshake;
use hendelse_store::{EventStore, NewEvent, PushStore};

const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
const SOURCE: &str = "https://ttd.apps.example/app/1";

fn authorizer() -> RegistryAuthorizer {
    let registry: Registry = serde_json::from_str(&format!(
        r#"{{"resources": [{{"id": "{RESOURCE}", "owner": "ttd"}}]}}"#
    ))
    .expect("registry");
    RegistryAuthorizer::new(registry)
}

fn event(id: u32, event_type: &str) -> NewEvent {
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "source": SOURCE,
        "type": event_type,
        "resource": RESOURCE,
        "subject": "/party/50001337",
    });
    NewEvent {
        id: id.to_string(),
        source: SOURCE.into(),
        event_type: event_type.into(),
        subject_key: Some("/party/50001337".into()),
        alternative_subject: None,
        resource: Some(RESOURCE.into()),
        body: body.to_string(),
        traceparent: None,
    }
}

fn subscription(type_filter: &str) -> NewSubscription {
    NewSubscription {
        type_filter: Some(type_filter.into()),
        ..hendelse_store::testing::org_subscription("https://receiver.example/hook", RESOURCE)
    }
}

/// A SQLite store with one subscription, to the events of type `wanted`; its id.
async fn open() -> (tempfile::TempDir, SqliteStore, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    let subscribed = store
        .create_subscription(&subscription("wanted"), &handshake)
        .await
        .expect("subscribe");
    (dir, store, subscribed.id)
}

async fn run(position: &mut Position, store: &SqliteStore) -> Option<usize> {
    step(position, store, store, &authorizer(), false)
        .await
        .expect("dispatcher step")
}

#[tokio::test]
async fn pages_without_a_match_move_the_stored_position_only_now_and_then() {
    let (_dir, store, _) = open().await;
    let unwanted: Vec<NewEvent> = (1..=5).map(|i| event(i, "unwanted")).collect();
    store.append(&unwanted).await.expect("append");

    let mut position = Position::default();
    assert_eq!(run(&mut position, &store).await, Some(0));
    assert_eq!(run(&mut position, &store).await, None);
    assert_eq!(
        store.dispatch_position().await.expect("position"),
        0,
        "a page without matches is not written at once"
    );

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(run(&mut position, &store).await, None);
    assert_eq!(
        store.dispatch_position().await.expect("position"),
        5,
        "the position reached is persisted after a while"
    );

    // A match is written at once, together with the position.
    store
        .append(&[event(6, "wanted"), event(7, "unwanted")])
        .await
        .expect("append");
    assert_eq!(run(&mut position, &store).await, Some(1));
    assert_eq!(store.dispatch_position().await.expect("position"), 7);
}

#[tokio::test]
async fn under_steady_publishing_the_position_is_still_stored_every_second() {
    let (_dir, store, _) = open().await;
    store.append(&[event(1, "unwanted")]).await.expect("append");
    let mut position = Position::default();
    assert_eq!(run(&mut position, &store).await, Some(0));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // A new page arrives before the dispatcher ever sees an empty one.
    store.append(&[event(2, "unwanted")]).await.expect("append");
    assert_eq!(run(&mut position, &store).await, Some(0));
    assert_eq!(store.dispatch_position().await.expect("position"), 2);
}

#[tokio::test]
async fn a_stopping_dispatcher_stores_the_position_of_what_was_committed() {
    let (_dir, store, _) = open().await;
    let store = Arc::new(store);
    let (committed_tx, committed) = tokio::sync::watch::channel(0);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(dispatcher::run(
        store.clone(),
        store.clone(),
        Arc::new(authorizer()),
        committed,
        Arc::new(tokio::sync::Notify::new()),
        dispatcher::DispatchSettings {
            poll: Duration::from_millis(20),
            traced: false,
        },
        stopping,
    ));
    let receipt = store
        .append(&(1..=3).map(|i| event(i, "unwanted")).collect::<Vec<_>>())
        .await
        .expect("append");
    committed_tx.send_replace(receipt.last_seq);
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the dispatcher stops")
        .expect("and does not panic");
    assert_eq!(store.dispatch_position().await.expect("position"), 3);
}

#[tokio::test]
async fn two_dispatchers_never_queue_an_event_twice() {
    let (_dir, store, subscribed) = open().await;
    store
        .append(&[event(1, "unwanted"), event(2, "unwanted")])
        .await
        .expect("append");

    // `a` matches the first page in memory only. `b` starts from the stored position, matches
    // the same page and the next, and queues a match. `a` then matches that match too, finds
    // that the position moved under it, and must not queue it a second time.
    let mut a = Position::default();
    assert_eq!(run(&mut a, &store).await, Some(0));
    store.append(&[event(3, "wanted")]).await.expect("append");
    let mut b = Position::default();
    assert_eq!(run(&mut b, &store).await, Some(1));
    assert_eq!(run(&mut a, &store).await, Some(0), "the position moved");
    assert_eq!(run(&mut a, &store).await, None, "read again: nothing new");

    let queued = store
        .deliveries(subscribed, None, 100)
        .await
        .expect("deliveries")
        .into_iter()
        .filter(|d| d.event_id == "3")
        .count();
    assert_eq!(queued, 1, "event 3 is queued exactly once");
}

/// The dispatcher keeps an index of the subscriptions between pages; a subscription created or
/// deleted meanwhile (here through the store, as another node would) counts from the next page.
#[tokio::test]
async fn the_index_follows_new_and_deleted_subscriptions() {
    let (_dir, store, _wanted) = open().await;
    let mut position = Position::default();
    store.append(&[event(1, "wanted")]).await.expect("append");
    assert_eq!(
        run(&mut position, &store).await,
        Some(1),
        "the index is built"
    );

    let b = store
        .create_subscription(&subscription("b"), &handshake)
        .await
        .expect("subscribe");
    store.append(&[event(2, "b")]).await.expect("append");
    assert_eq!(
        run(&mut position, &store).await,
        Some(1),
        "a new subscription is matched on the next page"
    );

    assert!(store.delete_subscription(b.id).await.expect("delete"));
    store.append(&[event(3, "b")]).await.expect("append");
    assert_eq!(
        run(&mut position, &store).await,
        Some(0),
        "a deleted subscription is not"
    );
}
