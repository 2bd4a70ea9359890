//! Store behaviour on SQLite that is not visible through HTTP: index use and group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::Utc;
use hendelse_model::visibility::ResourceScope;
use hendelse_model::{Grant, Pattern, Visibility};
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::testing::HookedStore;
use hendelse_store::{EventQuery, EventStore, Ingest, IngestConfig, NewEvent};

fn event(i: usize) -> NewEvent {
    NewEvent {
        id: format!("e{i}"),
        source: "https://example.com/s".into(),
        event_type: "t".into(),
        subject_key: Some(format!("/party/{}", i % 10)),
        alternative_subject: Some(format!("/person/{:011}", i % 7)),
        resource: Some(format!("urn:altinn:resource:app_ttd_app{}", i % 3)),
        body: format!(r#"{{"id":"e{i}"}}"#),
        traceparent: None,
    }
}

/// Every query shape the API issues is answered from an index that ends in `seq`, so a page costs
/// the same whatever the size of the store.
#[tokio::test]
async fn every_query_shape_reads_an_index_in_seq_order() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).await.expect("open");
    store
        .append(&(0..200).map(event).collect::<Vec<_>>())
        .await
        .expect("append");
    let grants = Visibility::Grants(vec![Grant {
        subjects: Some(vec!["/party/1".into()]),
        resources: ResourceScope::Some {
            exact: vec![],
            prefixes: vec!["urn:altinn:resource:app_".into()],
        },
    }]);
    let shapes = [
        (
            "party",
            EventQuery {
                subject_key: Some("/party/1".into()),
                visibility: grants.clone(),
                ..Default::default()
            },
        ),
        (
            "unit/person",
            EventQuery {
                alternative_subject: Some("/person/00000000001".into()),
                ..Default::default()
            },
        ),
        (
            "app resource with wildcards",
            EventQuery {
                resource: Some("urn:altinn:resource:app_ttd_app1".into()),
                sources: vec![Pattern::new("https://%")],
                types: vec![Pattern::new("t"), Pattern::new("u%")],
                from: Some(Utc::now() - chrono::Duration::hours(1)),
                to: Some(Utc::now()),
                after: 50,
                ..Default::default()
            },
        ),
        (
            "generic resource and subject",
            EventQuery {
                resource: Some("urn:altinn:resource:app_ttd_app2".into()),
                subject_key: Some("/party/2".into()),
                ..Default::default()
            },
        ),
    ];
    for (name, query) in shapes {
        let plan = store.explain(&query).await.expect("explain").join(" | ");
        let main = plan
            .split(" | ")
            .find(|step| step.contains("events"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            main.contains("USING INDEX") || main.contains("USING COVERING INDEX"),
            "{name}: {plan}"
        );
        assert!(
            !plan.contains("TEMP B-TREE"),
            "{name} sorts instead of reading in order: {plan}"
        );
    }
}

/// A SQLite store that counts the transactions the writer opens, and panics in the next append
/// when `panic_next` is set.
async fn counting(dir: &std::path::Path, panic_next: bool) -> (Arc<HookedStore>, Arc<AtomicUsize>) {
    let appends = Arc::new(AtomicUsize::new(0));
    let panic_next = AtomicBool::new(panic_next);
    let counted = appends.clone();
    let store = HookedStore::new(
        Arc::new(SqliteStore::open(dir).await.expect("open")),
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
            if panic_next.swap(false, Ordering::SeqCst) {
                panic!("injected panic in the writer");
            }
            Ok(())
        },
    );
    (Arc::new(store), appends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_transactions() {
    let dir = tempfile::tempdir().expect("dir");
    let (counting, appends) = counting(dir.path(), false).await;
    let (ingest, _writer) = Ingest::start(counting.clone(), IngestConfig::default(), 0);
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let ingest = ingest.clone();
            tokio::spawn(async move { ingest.publish(vec![event(i)]).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("published");
    }
    let transactions = appends.load(Ordering::SeqCst);
    assert!(
        transactions < 400,
        "400 publishes took {transactions} transactions"
    );
    let all = counting
        .query(&EventQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(all.len(), 400);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// A panic in a commit does not leave publishes without a writer: the publisher in hand is told
/// the outcome is unknown, and the next publish is stored.
#[tokio::test]
async fn the_writer_survives_a_panic_in_a_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let (counting, _) = counting(dir.path(), true).await;
    let (ingest, writer) = Ingest::start(counting, IngestConfig::default(), 0);
    let first = ingest.publish(vec![event(1)]).await;
    assert!(
        matches!(first, Err(hendelse_store::IngestError::Interrupted)),
        "{first:?}"
    );
    let second = ingest
        .publish(vec![event(2)])
        .await
        .expect("publish after the panic");
    assert_eq!(second.inserted, 1);
    assert!(ingest.health().fault().is_none());
    assert!(!writer.is_finished(), "the writer must still run");
}
