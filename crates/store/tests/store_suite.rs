//! The behaviour both store backends share, as one suite run against SQLite and PostgreSQL.
//!
//! Every case is an `async fn(Arc<dyn EventStore>)`; `hendelse_store::both_backends!` turns it into a test per backend. The
//! PostgreSQL tests get a database of their own, and skip loudly when no server is reachable
//! outside CI (with `CI=true` they fail instead).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hendelse_model::visibility::ResourceScope;
use hendelse_model::{Grant, Pattern, Visibility};
use hendelse_store::postgres::PgStore;
use hendelse_store::push::{
    AttemptRecord, BatchOf, Batching, DeliveryState, Disable, EndpointReport, LeaseRequest,
    LeasedDelivery, NewDelivery, NewReplay, NewSubscription, Next, ReplayOutcome,
    SubscriptionStates,
};
use hendelse_store::sqlite::SqliteStore;
use hendelse_store::testing::{TestDatabase, handshake};
use hendelse_store::{
    EventQuery, EventStore, IndexedAttributes, Ingest, IngestConfig, NewEvent, Store, StoredEvent,
};

hendelse_store::both_backends!(
    stores_events_exactly_and_in_order,
    deduplicates_by_source_and_id,
    filters_by_subject_resource_and_alternative_subject,
    wildcards_match_like_altinn,
    applies_visibility_before_the_limit,
    bounds_by_registration_time,
    resolves_cursors_within_the_query,
    retention_deletes_old_events_and_never_reuses_positions,
    concurrent_group_commits_keep_every_event_once,
    subscriptions_start_at_the_end_of_the_log_and_validate,
    the_dispatch_position_moves_only_from_where_it_was,
    leases_are_exclusive_until_they_expire,
    retries_dead_letters_and_redrive,
    one_subscription_cannot_take_every_lease,
    attempts_recorded_together_count_one_by_one,
    the_subscription_generation_marks_every_change_of_the_live_set,
    deliveries_read_the_stored_event_and_retention_waits_for_them,
    a_batch_fills_until_full_and_is_due_then,
    a_replay_queues_events_again_once_per_key,
    a_failing_endpoint_rests_and_a_success_ends_its_streak,
    settled_deliveries_are_pruned_oldest_first_in_batches,
    decisions_made_on_an_old_reading_change_nothing,
    queries_in_memory_select_what_the_store_selects,
);

fn event(id: &str) -> NewEvent {
    NewEvent {
        id: id.to_owned(),
        source: "https://example.com/s".into(),
        event_type: "no.example.test".into(),
        subject_key: None,
        alternative_subject: None,
        resource: None,
        body: format!(r#"{{"id":"{id}","x":null}}"#),
        traceparent: None,
    }
}

fn all(limit: u32) -> EventQuery {
    EventQuery {
        limit,
        ..EventQuery::default()
    }
}

fn ids(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

async fn query(store: &Arc<dyn Store>, q: EventQuery) -> Vec<StoredEvent> {
    store.query(&q).await.expect("query")
}

async fn stores_events_exactly_and_in_order(store: Arc<dyn Store>) {
    assert_eq!(store.last_seq().await.expect("last_seq"), 0);
    store.ping().await.expect("ping");
    let mut odd = event("b");
    odd.body = "{\"id\":\"b\",\"data\":{\"æøå\":[1,2.50,\"\\u0000\"]}}".into();
    let receipt = store
        .append(&[event("a"), odd.clone(), event("c")])
        .await
        .expect("append");
    assert_eq!(receipt.inserted, 3);
    store.append(&[event("d")]).await.expect("append");
    let got = query(&store, all(10)).await;
    assert_eq!(ids(&got), ["a", "b", "c", "d"]);
    assert_eq!(got[1].body, odd.body, "bodies come back byte for byte");
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(got.windows(2).all(|w| w[0].registered <= w[1].registered));
    assert_eq!(store.last_seq().await.expect("last_seq"), got[3].seq);
    let page = query(
        &store,
        EventQuery {
            after: got[0].seq,
            limit: 2,
            ..EventQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&page), ["b", "c"]);
    assert!(query(&store, all(0)).await.is_empty());
}

async fn deduplicates_by_source_and_id(store: Arc<dyn Store>) {
    let first = store
        .append(&[event("a"), event("b")])
        .await
        .expect("append");
    assert_eq!(first.inserted, 2);
    let mut other_source = event("a");
    other_source.source = "https://example.com/other".into();
    let again = store
        .append(&[event("a"), other_source, event("c"), event("c")])
        .await
        .expect("append");
    assert_eq!(again.inserted, 2, "only the new source's a and one c");
    let got = query(&store, all(10)).await;
    assert_eq!(ids(&got), ["a", "b", "a", "c"]);
    // A batch that is wholly duplicate changes nothing.
    let none = store.append(&[event("b")]).await.expect("append");
    assert_eq!(none.inserted, 0);
    assert_eq!(query(&store, all(10)).await.len(), 4);
}

async fn filters_by_subject_resource_and_alternative_subject(store: Arc<dyn Store>) {
    let events: Vec<NewEvent> = (0..12)
        .map(|i| NewEvent {
            subject_key: Some(format!("/party/{}", i % 3)),
            alternative_subject: (i % 2 == 0).then(|| format!("/person/{:011}", i % 4)),
            resource: Some(if i % 4 == 0 {
                "urn:altinn:resource:app_ttd_a".to_owned()
            } else {
                "urn:altinn:resource:generic".to_owned()
            }),
            ..event(&format!("e{i}"))
        })
        .collect();
    store.append(&events).await.expect("append");
    let by_subject = query(
        &store,
        EventQuery {
            subject_key: Some("/party/1".into()),
            ..all(50)
        },
    )
    .await;
    assert_eq!(ids(&by_subject), ["e1", "e4", "e7", "e10"]);
    let by_alternative = query(
        &store,
        EventQuery {
            alternative_subject: Some("/person/00000000002".into()),
            ..all(50)
        },
    )
    .await;
    assert_eq!(ids(&by_alternative), ["e2", "e6", "e10"]);
    let by_resource = query(
        &store,
        EventQuery {
            resource: Some("urn:altinn:resource:app_ttd_a".into()),
            ..all(50)
        },
    )
    .await;
    assert_eq!(ids(&by_resource), ["e0", "e4", "e8"]);
    let by_prefix = query(
        &store,
        EventQuery {
            resource_prefix: Some("urn:altinn:resource:app_".into()),
            subject_key: Some("/party/2".into()),
            ..all(50)
        },
    )
    .await;
    assert_eq!(ids(&by_prefix), ["e8"]);
    // The prefix is case-sensitive and `_` in it is no wildcard.
    for prefix in ["URN:altinn:resource:app_", "urn:altinn:resource:appX"] {
        let none = query(
            &store,
            EventQuery {
                resource_prefix: Some(prefix.into()),
                ..all(50)
            },
        )
        .await;
        assert!(none.is_empty(), "{prefix} matched {:?}", ids(&none));
    }
}

async fn wildcards_match_like_altinn(store: Arc<dyn Store>) {
    let sources = [
        "https://ttd.apps.altinn.no/ttd/app_1/instances/1",
        "https://ttd.apps.altinn.no/ttd/appX1/instances/2",
        "https://TTD.apps.altinn.no/ttd/app_1/instances/3",
        r"urn:odd\path%literal",
    ];
    let events: Vec<NewEvent> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| NewEvent {
            source: (*s).to_owned(),
            event_type: if i % 2 == 0 {
                "app.instance.created"
            } else {
                "app.instance.Process.completed"
            }
            .into(),
            ..event(&format!("e{i}"))
        })
        .collect();
    store.append(&events).await.expect("append");
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (
            &["https://ttd.apps.altinn.no/ttd/app_1/%"],
            &[],
            &["e0", "e2"],
        ),
        (&["%/app_1/%"], &[], &["e0", "e2"]),
        (
            &["https://ttd.apps.altinn.no/ttd/app_1/instances/1"],
            &[],
            &["e0"],
        ),
        (&[r"urn:odd\path%"], &[], &["e3"]),
        (&[r"urn:odd\path\%literal"], &[], &[]),
        (&["%instances/1", "%instances/2"], &[], &["e0", "e1"]),
        (&[], &["app.instance.process.completed"], &["e1", "e3"]),
        (
            &[],
            &["app.instance.%", "nothing"],
            &["e0", "e1", "e2", "e3"],
        ),
        (&["%app_1%"], &["APP.INSTANCE.CREATED"], &["e0", "e2"]),
    ];
    for (sources, types, expected) in cases {
        let got = query(
            &store,
            EventQuery {
                sources: sources.iter().map(|s| Pattern::new(*s)).collect(),
                types: types.iter().map(|t| Pattern::new(*t)).collect(),
                ..all(50)
            },
        )
        .await;
        assert_eq!(ids(&got), *expected, "sources {sources:?} types {types:?}");
    }
}

async fn applies_visibility_before_the_limit(store: Arc<dyn Store>) {
    let events: Vec<NewEvent> = (0..60)
        .map(|i| NewEvent {
            subject_key: Some(format!("/party/{}", i % 3)),
            resource: Some(format!("urn:altinn:resource:r{}", i % 2)),
            ..event(&format!("e{i:02}"))
        })
        .collect();
    store.append(&events).await.expect("append");
    let party0 = Visibility::Grants(vec![Grant {
        subjects: Some(vec!["/party/0".into()]),
        resources: ResourceScope::Any,
    }]);
    let page = query(
        &store,
        EventQuery {
            visibility: party0,
            limit: 5,
            ..EventQuery::default()
        },
    )
    .await;
    assert_eq!(ids(&page), ["e00", "e03", "e06", "e09", "e12"]);

    // A union of grants: party 1 on resource r1, or anything under the prefix of r0.
    let union = Visibility::Grants(vec![
        Grant {
            subjects: Some(vec!["/party/1".into()]),
            resources: ResourceScope::Some {
                exact: vec!["urn:altinn:resource:r1".into()],
                prefixes: vec![],
            },
        },
        Grant {
            subjects: None,
            resources: ResourceScope::Some {
                exact: vec![],
                prefixes: vec!["urn:altinn:resource:r0".into()],
            },
        },
    ]);
    let got = query(
        &store,
        EventQuery {
            visibility: union.clone(),
            ..all(100)
        },
    )
    .await;
    assert_eq!(got.len(), 40, "30 of r0 and the 10 of party 1 on r1");
    for e in &got {
        let i: usize = e.id[1..].parse().expect("number");
        assert!(
            union.covers(
                Some(&format!("/party/{}", i % 3)),
                Some(&format!("urn:altinn:resource:r{}", i % 2))
            ),
            "{} is not visible",
            e.id
        );
    }
    let nothing = query(
        &store,
        EventQuery {
            visibility: Visibility::Grants(vec![]),
            ..all(100)
        },
    )
    .await;
    assert!(nothing.is_empty());
}

async fn bounds_by_registration_time(store: Arc<dyn Store>) {
    store
        .append(&[event("early1"), event("early2")])
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&[event("late1")]).await.expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&[event("later1")]).await.expect("append");
    let got = query(&store, all(10)).await;
    let at = |i: usize| got[i].registered;
    let ids_of = |q: EventQuery| {
        let store = store.clone();
        async move {
            store
                .query(&q)
                .await
                .expect("query")
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    let between = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| {
        ids_of(EventQuery {
            from,
            to,
            ..all(10)
        })
    };
    assert_eq!(
        between(Some(at(2)), None).await,
        ["late1", "later1"],
        "from is inclusive"
    );
    assert_eq!(
        between(None, Some(at(2))).await,
        ["early1", "early2", "late1"],
        "to is inclusive"
    );
    assert_eq!(between(Some(at(2)), Some(at(2))).await, ["late1"]);
    let after_all = at(3) + chrono::Duration::seconds(1);
    assert!(between(Some(after_all), None).await.is_empty());
    let before_all = at(0) - chrono::Duration::seconds(1);
    assert!(between(None, Some(before_all)).await.is_empty());
    assert_eq!(between(Some(before_all), Some(after_all)).await.len(), 4);

    // `after` and `from` together: whichever is later bounds the page.
    let after_and_from = |after: i64, from: DateTime<Utc>| {
        ids_of(EventQuery {
            after,
            from: Some(from),
            ..all(10)
        })
    };
    assert_eq!(
        after_and_from(got[0].seq, before_all).await,
        ["early2", "late1", "later1"]
    );
    assert_eq!(after_and_from(got[0].seq, at(2)).await, ["late1", "later1"]);
    assert_eq!(after_and_from(got[2].seq, at(0)).await, ["later1"]);
    assert!(after_and_from(0, after_all).await.is_empty());
}

async fn resolves_cursors_within_the_query(store: Arc<dyn Store>) {
    let mut twin = event("same");
    twin.source = "https://example.com/twin".into();
    twin.resource = Some("urn:altinn:resource:r2".into());
    let mut first = event("same");
    first.resource = Some("urn:altinn:resource:r1".into());
    store
        .append(&[first, event("x"), twin])
        .await
        .expect("append");
    let got = query(&store, all(10)).await;
    let anywhere = EventQuery::default();
    assert_eq!(
        store
            .position_of("same", &anywhere)
            .await
            .expect("position"),
        Some(got[0].seq),
        "the first of equal ids"
    );
    let in_r2 = EventQuery {
        resource: Some("urn:altinn:resource:r2".into()),
        ..EventQuery::default()
    };
    assert_eq!(
        store.position_of("same", &in_r2).await.expect("position"),
        Some(got[2].seq),
        "the one in the query's scope"
    );
    assert_eq!(
        store
            .position_of("missing", &anywhere)
            .await
            .expect("position"),
        None
    );
    let hidden = EventQuery {
        visibility: Visibility::Grants(vec![]),
        ..EventQuery::default()
    };
    assert_eq!(
        store.position_of("x", &hidden).await.expect("position"),
        None
    );
}

async fn retention_deletes_old_events_and_never_reuses_positions(store: Arc<dyn Store>) {
    store
        .append(&[event("old1"), event("old2")])
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&[event("new1")]).await.expect("append");
    let before = query(&store, all(10)).await;
    let tip = store.last_seq().await.expect("last_seq");
    assert_eq!(
        store
            .delete_registered_before(before[0].registered)
            .await
            .expect("sweep"),
        0
    );
    let deleted = store
        .delete_registered_before(before[2].registered)
        .await
        .expect("sweep");
    assert_eq!(deleted, 2);
    assert_eq!(ids(&query(&store, all(10)).await), ["new1"]);
    // Deleting the newest events must not let their positions be handed out again.
    let everything = before[2].registered + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .delete_registered_before(everything)
            .await
            .expect("sweep"),
        1
    );
    assert!(query(&store, all(10)).await.is_empty());
    store.append(&[event("after")]).await.expect("append");
    let after = query(&store, all(10)).await;
    assert_eq!(ids(&after), ["after"]);
    assert!(
        after[0].seq > tip,
        "seq {} reused (tip was {tip})",
        after[0].seq
    );
    // A deleted event may be published again: retention forgets it.
    assert_eq!(
        store
            .append(&[event("old1")])
            .await
            .expect("append")
            .inserted,
        1
    );
}

async fn concurrent_group_commits_keep_every_event_once(store: Arc<dyn Store>) {
    let events: Arc<dyn EventStore> = store.clone();
    let (ingest, _writer) = Ingest::start(events, IngestConfig::default(), 0);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                // Every task also re-sends its neighbour's event: duplicates across batches.
                ingest
                    .publish(vec![
                        event(&format!("e{i}")),
                        event(&format!("e{}", (i + 1) % 200)),
                    ])
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("published");
    }
    let got = query(&store, all(1000)).await;
    assert_eq!(got.len(), 200);
    let mut seen: Vec<&str> = ids(&got);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 200);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        *ingest.committed().borrow(),
        store.last_seq().await.expect("last_seq")
    );
}

/// Opening runs the migrations again (a no-op) and the log continues where it was.
#[tokio::test]
async fn sqlite_reopens_where_it_left_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tip = {
        let store = SqliteStore::open(dir.path()).await.expect("open");
        store
            .append(&[event("a"), event("b")])
            .await
            .expect("append");
        store.last_seq().await.expect("last_seq")
    };
    SqliteStore::migrate(dir.path())
        .await
        .expect("migrate again");
    let store = SqliteStore::open(dir.path()).await.expect("reopen");
    assert_eq!(store.last_seq().await.expect("last_seq"), tip);
    assert_eq!(
        store.append(&[event("a")]).await.expect("append").inserted,
        0
    );
    store.append(&[event("c")]).await.expect("append");
    let got = store.query(&all(10)).await.expect("query");
    assert_eq!(ids(&got), ["a", "b", "c"]);
    assert!(got[2].seq > tip);
}

/// Two nodes on one database: both migrate (concurrently, idempotently) and share one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_one_log() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let (a, b) = tokio::join!(PgStore::connect(&db.url), PgStore::connect(&db.url));
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    PgStore::migrate(&db.url).await.expect("migrate again");
    a.append(&[event("a1")]).await.expect("append");
    b.append(&[event("b1"), event("a1")]).await.expect("append");
    a.append(&[event("a2")]).await.expect("append");
    for node in [&a, &b] {
        let got = node.query(&all(10)).await.expect("query");
        assert_eq!(ids(&got), ["a1", "b1", "a2"]);
        assert_eq!(node.last_seq().await.expect("last_seq"), got[2].seq);
    }
    drop((a, b));
    db.drop_database().await;
}

fn subscription(end_point: &str) -> NewSubscription {
    NewSubscription {
        source_filter: Some("https://example.com/%".into()),
        secret: Some("whsec_x".into()),
        ..hendelse_store::testing::org_subscription(end_point, "urn:altinn:resource:r")
    }
}

fn delivery(subscription_id: i64, seq: i64) -> NewDelivery {
    NewDelivery {
        subscription_id,
        event_seq: Some(seq),
        event_id: format!("e{seq}"),
        webhook_id: format!("msg_{subscription_id}_{seq}"),
        body: Some(format!(r#"{{"id":"e{seq}"}}"#)),
        batch: None,
    }
}

fn attempt(id: i64, subscription_id: i64, owner: &str, next: Next) -> AttemptRecord {
    AttemptRecord {
        delivery_id: id,
        subscription_id,
        lease_owner: owner.to_owned(),
        at: Utc::now(),
        status: Some(500),
        error: Some("the endpoint answered 500".into()),
        next,
        validates: false,
        disable: None,
        endpoint: None,
        end_point: None,
    }
}

/// A disable whatever the endpoint's streak.
fn gone_for_good(reason: &str) -> Disable {
    Disable {
        reason: reason.to_owned(),
        streak_began: None,
    }
}

async fn lease(
    store: &Arc<dyn Store>,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<LeasedDelivery>, hendelse_store::StoreError> {
    store
        .lease(&LeaseRequest {
            owner,
            now,
            until,
            limit,
            per_subscription: 10_000,
            exclude: &[],
            room: &[],
            wide: true,
        })
        .await
}

fn soon(ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(ms)
}

async fn subscriptions_start_at_the_end_of_the_log_and_validate(store: Arc<dyn Store>) {
    store.append(&[event("before")]).await.expect("append");
    let tip = store.last_seq().await.expect("last_seq");
    let created = store
        .create_subscription(&subscription("https://a.example/hook"), &handshake)
        .await
        .expect("create");
    assert_eq!(created.start_seq, tip);
    assert!(!created.validated && created.enabled);
    assert_eq!(created.spec, subscription("https://a.example/hook"));
    let other = NewSubscription {
        consumer: "/org/skd".into(),
        ..subscription("https://b.example/hook")
    };
    let other = store
        .create_subscription(&other, &handshake)
        .await
        .expect("create");
    let both = store
        .subscriptions_with_ids(&[other.id, created.id, other.id + 1000])
        .await
        .expect("by ids");
    assert_eq!(
        both.iter().map(|s| s.id).collect::<Vec<_>>(),
        [created.id, other.id],
        "those that exist, in id order"
    );
    let mine = store.subscriptions_of("/org/ttd").await.expect("list");
    assert_eq!(mine.iter().map(|s| s.id).collect::<Vec<_>>(), [created.id]);
    assert_eq!(store.live_subscriptions().await.expect("live").len(), 2);

    // Before validation only the handshake goes out.
    assert!(
        store
            .enqueue(
                store.dispatch_position().await.expect("position"),
                tip + 1,
                &[delivery(created.id, tip + 1)]
            )
            .await
            .expect("enqueue")
    );
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 2, "the two handshakes");
    assert!(leased.iter().all(|d| d.event_seq.is_none()));
    let own = leased
        .iter()
        .find(|d| d.subscription_id == created.id)
        .expect("own handshake");
    let mut done = attempt(own.id, created.id, "w", Next::Delivered);
    done.validates = true;
    done.status = Some(200);
    assert!(store.record_attempt(&done).await.expect("record"));
    assert!(
        store
            .subscription(created.id)
            .await
            .expect("get")
            .expect("exists")
            .validated
    );
    let now_due = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(now_due.len(), 1);
    assert_eq!(now_due[0].event_seq, Some(tip + 1));

    // Deleting drops what is pending and hides the subscription.
    assert!(store.delete_subscription(created.id).await.expect("delete"));
    assert!(
        !store
            .delete_subscription(created.id)
            .await
            .expect("delete again")
    );
    assert!(store.subscription(created.id).await.expect("get").is_none());
    assert_eq!(
        store
            .subscriptions_with_ids(&[created.id, other.id])
            .await
            .expect("by ids")
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [other.id],
        "a deleted one is left out"
    );
    assert!(
        store
            .deliveries(created.id, Some(DeliveryState::Pending), 10)
            .await
            .expect("list")
            .is_empty()
    );
    let stale = attempt(now_due[0].id, created.id, "w", Next::Delivered);
    assert!(
        !store.record_attempt(&stale).await.expect("record"),
        "the delivery is gone"
    );
}

async fn the_dispatch_position_moves_only_from_where_it_was(store: Arc<dyn Store>) {
    store
        .append(&[event("a"), event("b")])
        .await
        .expect("append");
    let start = store.dispatch_position().await.expect("position");
    assert_eq!(start, 0, "a new store dispatches from the start");
    let s = store
        .create_subscription(&subscription("https://a.example/hook"), &handshake)
        .await
        .expect("create");
    assert!(
        !store
            .enqueue(start + 5, 9, &[delivery(s.id, 1)])
            .await
            .expect("enqueue")
    );
    assert_eq!(store.dispatch_position().await.expect("position"), start);
    assert!(
        store
            .enqueue(start, 2, &[delivery(s.id, 1), delivery(s.id, 2)])
            .await
            .expect("enqueue")
    );
    // The same event for the same subscription again is skipped, not an error.
    assert!(
        store
            .enqueue(2, 3, &[delivery(s.id, 2)])
            .await
            .expect("enqueue")
    );
    assert_eq!(store.dispatch_position().await.expect("position"), 3);
    let all = store.deliveries(s.id, None, 10).await.expect("deliveries");
    assert_eq!(all.len(), 3, "handshake and two events");
    assert_eq!(store.queue_depth().await.expect("depth").0, 3);
}

async fn leases_are_exclusive_until_they_expire(store: Arc<dyn Store>) {
    let s = store
        .create_subscription(&subscription("https://a.example/hook"), &handshake)
        .await
        .expect("create");
    let handshakes = lease(&store, "a", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let mut ok = attempt(handshakes[0].id, s.id, "a", Next::Delivered);
    ok.validates = true;
    store.record_attempt(&ok).await.expect("validate");
    let deliveries: Vec<NewDelivery> = (1..=200).map(|seq| delivery(s.id, seq)).collect();
    store.enqueue(0, 200, &deliveries).await.expect("enqueue");

    // Two workers leasing at once get disjoint halves.
    let until = soon(60_000);
    let (a, b) = tokio::join!(
        lease(&store, "a", Utc::now(), until, 100),
        lease(&store, "b", Utc::now(), until, 150)
    );
    let (a, b) = (a.expect("lease a"), b.expect("lease b"));
    let mut ids: Vec<i64> = a.iter().chain(&b).map(|d| d.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), a.len() + b.len(), "a delivery was leased twice");
    assert_eq!(ids.len(), 200);
    assert!(
        lease(&store, "c", Utc::now(), until, 10)
            .await
            .expect("lease")
            .is_empty()
    );

    // Expired leases are taken over; the old holder's record no longer counts.
    let c = lease(
        &store,
        "c",
        until + chrono::Duration::seconds(1),
        soon(120_000),
        500,
    )
    .await
    .expect("lease");
    assert_eq!(c.len(), 200);
    assert!(
        !store
            .record_attempt(&attempt(a[0].id, s.id, "a", Next::Delivered))
            .await
            .expect("record")
    );
    assert!(
        store
            .record_attempt(&attempt(a[0].id, s.id, "c", Next::Delivered))
            .await
            .expect("record")
    );
}

async fn attempts_recorded_together_count_one_by_one(store: Arc<dyn Store>) {
    let s = store
        .create_subscription(&subscription("https://a.example/hook"), &handshake)
        .await
        .expect("create");
    let h = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let deliveries: Vec<NewDelivery> = (1..=6).map(|seq| delivery(s.id, seq)).collect();
    store.enqueue(0, 6, &deliveries).await.expect("enqueue");
    assert!(
        store
            .record_attempts(&[])
            .await
            .expect("nothing")
            .is_empty(),
        "an empty batch records nothing"
    );

    // The handshake validates in the same batch as another worker's stale record is refused.
    let mut validated = attempt(h[0].id, s.id, "w", Next::Delivered);
    validated.validates = true;
    let stale = attempt(h[0].id, s.id, "somebody else", Next::Delivered);
    assert_eq!(
        store
            .record_attempts(&[stale, validated])
            .await
            .expect("record"),
        [false, true]
    );
    assert!(
        store
            .subscription(s.id)
            .await
            .expect("get")
            .expect("there")
            .validated
    );

    let mut leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 6);
    leased.sort_by_key(|d| d.id);

    // Refused and counted records side by side: each answer is its own record's.
    let mixed = [
        attempt(leased[3].id, s.id, "w", Next::Delivered),
        attempt(leased[4].id, s.id, "stale", Next::Delivered),
        attempt(leased[5].id, s.id, "w", Next::Delivered),
    ];
    assert_eq!(
        store.record_attempts(&mixed).await.expect("record"),
        [true, false, true]
    );
    let history = |id: i64| {
        let store = store.clone();
        async move {
            store
                .deliveries(s.id, None, 20)
                .await
                .expect("list")
                .into_iter()
                .find(|d| d.id == id)
                .map(|d| (d.state, d.attempts, d.history.len()))
                .expect("listed")
        }
    };
    assert_eq!(
        history(leased[3].id).await,
        (DeliveryState::Delivered, 1, 1)
    );
    assert_eq!(
        history(leased[4].id).await,
        (DeliveryState::Pending, 0, 0),
        "a refused record writes nothing"
    );
    assert_eq!(
        history(leased[5].id).await,
        (DeliveryState::Delivered, 1, 1)
    );
    assert_eq!(
        history(h[0].id).await,
        (DeliveryState::Delivered, 1, 1),
        "the handshake, once: its stale twin wrote nothing"
    );

    let later = soon(60_000);
    let records = [
        attempt(leased[0].id, s.id, "w", Next::Delivered),
        attempt(leased[1].id, s.id, "w", Next::RetryAt(later)),
        attempt(leased[2].id, s.id, "w", Next::Dead),
    ];
    assert_eq!(
        store.record_attempts(&records).await.expect("record"),
        [true, true, true]
    );
    let states = |state| {
        let store = store.clone();
        async move {
            store
                .deliveries(s.id, Some(state), 10)
                .await
                .expect("list")
                .iter()
                .map(|d| (d.id, d.attempts, d.history.len()))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        states(DeliveryState::Delivered).await.len(),
        4,
        "the handshake and three events"
    );
    assert_eq!(
        states(DeliveryState::Pending).await,
        [(leased[4].id, 0, 0), (leased[1].id, 1, 1)],
        "newest first"
    );
    assert_eq!(states(DeliveryState::Dead).await, [(leased[2].id, 1, 1)]);
    // Each record released its lease: recording the same attempts again changes nothing.
    assert_eq!(
        store.record_attempts(&records).await.expect("again"),
        [false, false, false]
    );
}

async fn retries_dead_letters_and_redrive(store: Arc<dyn Store>) {
    let s = store
        .create_subscription(&subscription("https://a.example/hook"), &handshake)
        .await
        .expect("create");
    let h = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let mut ok = attempt(h[0].id, s.id, "w", Next::Delivered);
    ok.validates = true;
    store.record_attempt(&ok).await.expect("validate");
    store
        .enqueue(0, 2, &[delivery(s.id, 1), delivery(s.id, 2)])
        .await
        .expect("enqueue");
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 2);
    let later = soon(60_000);
    assert!(
        store
            .record_attempt(&attempt(leased[0].id, s.id, "w", Next::RetryAt(later)))
            .await
            .expect("retry")
    );
    let mut gone = attempt(leased[1].id, s.id, "w", Next::Dead);
    gone.status = Some(410);
    gone.disable = Some(gone_for_good("gone"));
    assert!(store.record_attempt(&gone).await.expect("dead"));
    assert!(
        lease(&store, "w", Utc::now(), soon(60_000), 10)
            .await
            .expect("lease")
            .is_empty()
    );
    let disabled = store
        .subscription(s.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("gone"));
    assert!(store.live_subscriptions().await.expect("live").is_empty());

    let dead = store
        .deliveries(s.id, Some(DeliveryState::Dead), 10)
        .await
        .expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_status, Some(410));
    assert_eq!(dead[0].history.len(), 1);
    let pending = store
        .deliveries(s.id, Some(DeliveryState::Pending), 10)
        .await
        .expect("pending");
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].history[0].status, Some(500));
    assert!(
        pending[0]
            .next_attempt
            .is_some_and(|t| t >= later - chrono::Duration::milliseconds(1))
    );
    let due_time = later + chrono::Duration::seconds(1);
    assert!(
        lease(&store, "w", due_time, soon(120_000), 10)
            .await
            .expect("lease")
            .is_empty(),
        "a disabled subscription's deliveries wait, even when due"
    );
    assert_eq!(store.redrive(s.id, Utc::now()).await.expect("redrive"), 1);
    let redriven = store
        .deliveries(s.id, Some(DeliveryState::Pending), 10)
        .await
        .expect("pending");
    assert_eq!(redriven.len(), 2);
    assert!(
        store
            .subscription(s.id)
            .await
            .expect("get")
            .expect("exists")
            .enabled,
        "redrive enables"
    );
    assert_eq!(store.redrive(s.id, Utc::now()).await.expect("redrive"), 0);
    assert_eq!(
        lease(&store, "w", Utc::now(), soon(120_000), 10)
            .await
            .expect("lease")
            .len(),
        2,
        "the redriven one is due now, and the retry too: a redrive says the endpoint is fixed"
    );
}

async fn validated(store: &Arc<dyn Store>, end_point: &str) -> i64 {
    let s = store
        .create_subscription(&subscription(end_point), &handshake)
        .await
        .expect("create");
    let mut done = attempt(0, s.id, "setup", Next::Delivered);
    let leased = lease(store, "setup", Utc::now(), soon(60_000), 100)
        .await
        .expect("lease");
    let own = leased
        .iter()
        .find(|d| d.subscription_id == s.id)
        .expect("handshake");
    done.delivery_id = own.id;
    done.validates = true;
    assert!(store.record_attempt(&done).await.expect("validate"));
    s.id
}

async fn one_subscription_cannot_take_every_lease(store: Arc<dyn Store>) {
    let slow = validated(&store, "https://slow.example/hook").await;
    let fast = validated(&store, "https://fast.example/hook").await;
    let mut queued: Vec<NewDelivery> = (1..=50).map(|seq| delivery(slow, seq)).collect();
    queued.extend((1..=5).map(|seq| delivery(fast, seq)));
    store.enqueue(0, 50, &queued).await.expect("enqueue");
    let request = |exclude: &'static [i64]| LeaseRequest {
        owner: "w",
        now: Utc::now(),
        until: soon(60_000),
        limit: 20,
        per_subscription: 4,
        exclude,
        room: &[],
        wide: true,
    };
    let first = store.lease(&request(&[])).await.expect("lease");
    let of = |leased: &[LeasedDelivery], id: i64| {
        leased.iter().filter(|d| d.subscription_id == id).count()
    };
    assert_eq!(of(&first, slow), 4, "the cap holds");
    assert_eq!(of(&first, fast), 4);
    // The worker has enough of `slow` in flight: only `fast` is offered.
    let excluded: &'static [i64] = Box::leak(vec![slow].into_boxed_slice());
    let second = store.lease(&request(excluded)).await.expect("lease");
    assert_eq!(of(&second, slow), 0);
    assert_eq!(of(&second, fast), 1, "the last of fast");
    // Released leases are offered again at once.
    assert_eq!(store.release("w").await.expect("release"), 9);
    // With three of `slow` still in flight, a lease tops it up to its cap and no further.
    let room: &'static [(i64, u32)] = Box::leak(vec![(slow, 1)].into_boxed_slice());
    let topped = store
        .lease(&LeaseRequest {
            room,
            ..request(&[])
        })
        .await
        .expect("lease");
    assert_eq!((of(&topped, slow), of(&topped, fast)), (1, 4));
    assert_eq!(store.release("w").await.expect("release"), 5);
    // A lease that is not wide looks only at the subscriptions with room, earliest first.
    let narrow: &'static [(i64, u32)] = Box::leak(vec![(slow, 2)].into_boxed_slice());
    let only_slow = store
        .lease(&LeaseRequest {
            room: narrow,
            wide: false,
            ..request(&[])
        })
        .await
        .expect("lease");
    assert_eq!((of(&only_slow, slow), of(&only_slow, fast)), (2, 0));
    let mut seqs: Vec<Option<i64>> = only_slow.iter().map(|d| d.event_seq).collect();
    seqs.sort();
    assert_eq!(seqs, [Some(1), Some(2)], "the earliest of slow");
    assert!(
        store
            .lease(&LeaseRequest {
                room: &[],
                wide: false,
                ..request(&[])
            })
            .await
            .expect("lease")
            .is_empty(),
        "no room, nothing"
    );
    assert_eq!(store.release("w").await.expect("release"), 2);
    assert_eq!(store.lease(&request(&[])).await.expect("lease").len(), 8);
}

/// Every change to which subscriptions are live moves the generation (so a dispatcher rebuilds
/// its index), in the change's own transaction; validation, which does not change the set, does
/// not.
async fn the_subscription_generation_marks_every_change_of_the_live_set(store: Arc<dyn Store>) {
    let generation = async || store.subscription_generation().await.expect("generation");
    let start = generation().await;
    let id = validated(&store, "https://a.example/hook").await;
    let created = generation().await;
    assert_eq!(
        created,
        start + 1,
        "created (its validation does not count)"
    );
    store
        .enqueue(0, 0, &[delivery(id, 1)])
        .await
        .expect("enqueue");
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let mut gone = attempt(leased[0].id, id, "w", Next::Dead);
    gone.disable = Some(gone_for_good("gone"));
    assert!(store.record_attempt(&gone).await.expect("record"));
    let disabled = generation().await;
    assert!(disabled > created, "disabled");
    assert!(store.live_subscriptions().await.expect("live").is_empty());
    assert!(
        store
            .subscriptions_to_match()
            .await
            .expect("live")
            .is_empty()
    );
    store.redrive(id, Utc::now()).await.expect("redrive");
    let enabled = generation().await;
    assert!(enabled > disabled, "enabled again");
    // What the dispatcher matches is the live set, with the subscription's filters.
    let live = store.live_subscriptions().await.expect("live");
    let to_match = store.subscriptions_to_match().await.expect("to match");
    assert_eq!(to_match.len(), 1);
    assert_eq!(
        (to_match[0].id, to_match[0].start_seq),
        (id, live[0].start_seq)
    );
    assert_eq!(to_match[0].resource_filter, live[0].spec.resource_filter);
    assert_eq!(to_match[0].principal, live[0].spec.principal);
    assert_eq!(to_match[0].batching, live[0].spec.batching);
    // Disabled by failing too long and enabled again: both change the live set.
    let mut failing = attempt(0, id, "w", Next::Dead);
    store
        .enqueue(0, 0, &[delivery(id, 2)])
        .await
        .expect("enqueue");
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    failing.delivery_id = leased[0].id;
    failing.disable = Some(gone_for_good("failing for too long"));
    assert!(store.record_attempt(&failing).await.expect("record"));
    let disabled_again = generation().await;
    assert!(disabled_again > enabled);
    assert!(store.enable_subscription(id).await.expect("enable"));
    assert!(generation().await > disabled_again, "enabled by its owner");
    let enabled = generation().await;
    assert!(store.delete_subscription(id).await.expect("delete"));
    assert!(generation().await > enabled, "deleted");
    assert!(
        !store.enable_subscription(id).await.expect("enable"),
        "a deleted one stays"
    );
}

/// A delivery of a stored event, which keeps no copy of it.
fn of_event(subscription_id: i64, event: &StoredEvent) -> NewDelivery {
    NewDelivery {
        subscription_id,
        event_seq: Some(event.seq),
        event_id: event.id.clone(),
        webhook_id: format!("msg_{subscription_id}_{}", event.seq),
        body: None,
        batch: None,
    }
}

async fn deliveries_read_the_stored_event_and_retention_waits_for_them(store: Arc<dyn Store>) {
    let live = validated(&store, "https://live.example/hook").await;
    let idle = validated(&store, "https://idle.example/hook").await;
    store.append(&[event("first")]).await.expect("append");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.append(&[event("second")]).await.expect("append");
    let stored = query(&store, all(10)).await;
    assert_eq!(ids(&stored), ["first", "second"]);
    let position = store.dispatch_position().await.expect("position");
    let queued = [
        of_event(live, &stored[1]),
        of_event(idle, &stored[0]),
        of_event(idle, &stored[1]),
    ];
    assert!(
        store
            .enqueue(position, stored[1].seq, &queued)
            .await
            .expect("enqueue")
    );

    // The lease hands out the event exactly as stored.
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 3);
    for d in &leased {
        let event = stored
            .iter()
            .find(|e| Some(e.seq) == d.event_seq)
            .expect("an event's delivery");
        assert_eq!(d.body, event.body, "delivery {}", d.id);
    }

    // Every delivery fails once; the idle subscription's endpoint is gone, which disables it.
    for d in &leased {
        let mut failed = attempt(d.id, d.subscription_id, "w", Next::RetryAt(Utc::now()));
        if d.subscription_id == idle {
            failed.disable = Some(gone_for_good("the endpoint answered 410 Gone"));
        }
        assert!(store.record_attempt(&failed).await.expect("record"));
    }

    // Retention stops below the event the live subscription still owes; the disabled one's
    // delivery of an expired event goes with the event.
    let everything = stored[1].registered + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .delete_registered_before(everything)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(ids(&query(&store, all(10)).await), ["second"]);
    let idle_left = store.deliveries(idle, None, 10).await.expect("deliveries");
    assert_eq!(idle_left.len(), 2, "its handshake and the second event");
    assert!(idle_left.iter().any(|d| d.event_id == stored[1].id));
    assert!(!idle_left.iter().any(|d| d.event_id == stored[0].id));

    // Once it is delivered, the event may go, and its deliveries with it.
    let again = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(again.len(), 1, "only the live subscription's delivery");
    assert_eq!(again[0].body, stored[1].body);
    let mut ok = attempt(again[0].id, live, "w", Next::Delivered);
    ok.status = Some(200);
    assert!(store.record_attempt(&ok).await.expect("record"));
    assert_eq!(
        store
            .delete_registered_before(everything)
            .await
            .expect("sweep"),
        1
    );
    for subscription in [live, idle] {
        let left = store
            .deliveries(subscription, None, 10)
            .await
            .expect("deliveries");
        assert_eq!(left.len(), 1, "only the handshake of {subscription}");
        assert!(left[0].event_id != stored[1].id);
    }
}

async fn a_batch_fills_until_full_and_is_due_then(store: Arc<dyn Store>) {
    let batching = Batching {
        max_events: 4,
        max_wait_ms: 60_000,
    };
    let spec = NewSubscription {
        batching,
        ..subscription("https://batch.example/hook")
    };
    let s = store
        .create_subscription(&spec, &handshake)
        .await
        .expect("create");
    assert_eq!(s.spec.batching, batching);
    let handshakes = lease(&store, "v", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let mut done = attempt(handshakes[0].id, s.id, "v", Next::Delivered);
    done.validates = true;
    assert!(store.record_attempt(&done).await.expect("validate"));
    let names = ["e1", "e2", "e3", "e4", "e5"];
    store.append(&names.map(event)).await.expect("append");
    let stored = query(&store, all(10)).await;
    let batch = |events: &[StoredEvent]| NewDelivery {
        batch: Some(BatchOf {
            seqs: events.iter().map(|e| e.seq).collect(),
            batching,
        }),
        webhook_id: format!("msg_batch_{}", events[0].seq),
        ..of_event(s.id, &events[0])
    };
    let mut position = store.dispatch_position().await.expect("position");
    let mut enqueue = async |events: &[StoredEvent]| {
        let to = events[events.len() - 1].seq;
        assert!(
            store
                .enqueue(position, to, &[batch(events)])
                .await
                .expect("enqueue")
        );
        position = to;
    };
    // Two, then one more: an open batch of three that waits for its fourth.
    enqueue(&stored[0..2]).await;
    enqueue(&stored[2..3]).await;
    let waiting = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert!(
        waiting.is_empty(),
        "a batch that is not full waits: {waiting:?}"
    );
    // Two more do not fit: they open a batch of their own; one that fills the first makes it
    // due at once.
    enqueue(&stored[3..5]).await;
    assert!(
        lease(&store, "w", Utc::now(), soon(60_000), 10)
            .await
            .expect("lease")
            .is_empty()
    );
    let extra = store.append(&[event("e6")]).await.expect("append");
    assert_eq!(extra.inserted, 1);
    let e6 = query(&store, all(10)).await.pop().expect("e6");
    enqueue(std::slice::from_ref(&e6)).await;
    let all_listed = store.deliveries(s.id, None, 10).await.expect("deliveries");
    let counts: Vec<i64> = all_listed.iter().map(|d| d.event_count).collect();
    assert_eq!(
        counts,
        [3, 3, 1],
        "newest first: two batches and the handshake"
    );
    // The lease a worker gets once the wait is over carries the events in log order.
    let later = Utc::now() + chrono::Duration::seconds(61);
    let due = lease(
        &store,
        "w",
        later,
        later + chrono::Duration::seconds(60),
        10,
    )
    .await
    .expect("lease");
    assert_eq!(due.len(), 2);
    let first = due
        .iter()
        .find(|d| d.event_seq == Some(stored[0].seq))
        .expect("the first batch");
    let seqs = first.batch.clone().expect("a batch");
    assert_eq!(seqs, stored[0..3].iter().map(|e| e.seq).collect::<Vec<_>>());
    let bodies = store.event_bodies(&seqs).await.expect("bodies");
    assert_eq!(
        bodies,
        stored[0..3]
            .iter()
            .map(|e| (e.seq, e.body.clone()))
            .collect::<Vec<_>>()
    );
    let second = due
        .iter()
        .find(|d| d.event_seq == Some(stored[3].seq))
        .expect("the second batch");
    assert_eq!(
        second.batch.as_deref(),
        Some(&[stored[3].seq, stored[4].seq, e6.seq][..])
    );
}

async fn a_replay_queues_events_again_once_per_key(store: Arc<dyn Store>) {
    let id = validated(&store, "https://replayed.example/hook").await;
    store
        .append(&[event("r-1"), event("r-2")])
        .await
        .expect("append");
    let stored = query(&store, all(10)).await;
    let position = store.dispatch_position().await.expect("position");
    let live: Vec<NewDelivery> = stored.iter().map(|e| of_event(id, e)).collect();
    assert!(
        store
            .enqueue(position, stored[1].seq, &live)
            .await
            .expect("enqueue")
    );

    // The same events again, beside their live deliveries (which a replay does not touch).
    let replay = NewReplay {
        subscription_id: id,
        key: "k".into(),
        request: r#"{"from":"2026-12-01T00:00:00Z"}"#.into(),
        deliveries: stored
            .iter()
            .map(|e| NewDelivery {
                webhook_id: format!("msg_replay_{}", e.seq),
                ..of_event(id, e)
            })
            .collect(),
    };
    let ReplayOutcome::Queued {
        id: replay_id,
        queued,
    } = store.store_replay(&replay).await.expect("replay")
    else {
        panic!("a new key queues");
    };
    assert_eq!(queued, 2);
    let listed = store.deliveries(id, None, 10).await.expect("deliveries");
    assert_eq!(listed.len(), 5, "handshake, two live, two replayed");
    assert_eq!(
        listed
            .iter()
            .filter(|d| d.replay == Some(replay_id))
            .count(),
        2
    );

    // The key again queues nothing and names the first replay, whatever the request says now.
    let again = NewReplay {
        request: r#"{"from":"2026-12-02T00:00:00Z"}"#.into(),
        ..replay.clone()
    };
    match store.store_replay(&again).await.expect("repeat") {
        ReplayOutcome::Taken(taken) => {
            assert_eq!((taken.id, taken.queued), (replay_id, 2));
            assert_eq!(
                taken.request, replay.request,
                "the first request, to compare"
            );
        }
        other => panic!("a used key is taken: {other:?}"),
    }
    let found = store
        .stored_replay(id, "k")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(found.id, replay_id);
    assert!(
        store
            .stored_replay(id, "other")
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(store.deliveries(id, None, 10).await.expect("d").len(), 5);

    // Leased in queue order, live first, each replayed one marked.
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    let order: Vec<(Option<i64>, Option<i64>)> =
        leased.iter().map(|d| (d.event_seq, d.replay)).collect();
    assert_eq!(
        order,
        [
            (Some(stored[0].seq), None),
            (Some(stored[1].seq), None),
            (Some(stored[0].seq), Some(replay_id)),
            (Some(stored[1].seq), Some(replay_id)),
        ]
    );
    assert!(
        leased.iter().all(|d| !d.body.is_empty()),
        "bodies from the log"
    );
}

async fn a_failing_endpoint_rests_and_a_success_ends_its_streak(store: Arc<dyn Store>) {
    let failing = validated(&store, "https://failing.example/hook").await;
    let other = validated(&store, "https://other.example/hook").await;
    let queued: Vec<NewDelivery> = (1..=5)
        .map(|seq| delivery(failing, seq))
        .chain([delivery(other, 1)])
        .collect();
    store.enqueue(0, 0, &queued).await.expect("enqueue");
    let first = lease(&store, "w", Utc::now(), soon(60_000), 1)
        .await
        .expect("lease");
    assert_eq!(first[0].subscription_id, failing);

    // One failure: the endpoint rests for a minute, with its streak on record.
    let at = Utc::now();
    let rest_until = at + chrono::Duration::seconds(60);
    let mut failed = attempt(first[0].id, failing, "w", Next::RetryAt(rest_until));
    failed.at = at;
    failed.endpoint = Some(EndpointReport::Failure {
        class: "status 500".into(),
        rest_until,
    });
    assert!(store.record_attempt(&failed).await.expect("record"));
    let health = store
        .subscription(failing)
        .await
        .expect("read")
        .expect("there")
        .health;
    assert_eq!(health.consecutive_failures, 1);
    assert_eq!(health.last_error.as_deref(), Some("status 500"));
    assert_eq!(
        health.failing_since.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );
    assert_eq!(
        health.rest_until.map(|t| t.timestamp_micros()),
        Some(rest_until.timestamp_micros())
    );
    assert_eq!(
        store.subscription_states().await.expect("states"),
        SubscriptionStates {
            healthy: 1,
            failing: 1,
            disabled: 0
        }
    );

    // While it rests none of its deliveries is leased; the other subscription's is.
    let during = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert!(
        during.iter().all(|d| d.subscription_id == other),
        "{during:?}"
    );
    // Its queue moves to the end of the rest, and what is queued meanwhile is due then too.
    let moved = store
        .defer_resting(failing, Utc::now())
        .await
        .expect("defer");
    assert_eq!(moved, 4, "the four it did not lease");
    assert_eq!(
        store
            .defer_resting(failing, Utc::now())
            .await
            .expect("defer"),
        0
    );
    store
        .enqueue(0, 0, &[delivery(failing, 6)])
        .await
        .expect("enqueue");
    let pending = store
        .deliveries(failing, Some(DeliveryState::Pending), 10)
        .await
        .expect("deliveries");
    assert_eq!(pending.len(), 6);
    for d in &pending {
        let due = d.next_attempt.expect("pending").timestamp_micros();
        assert!(
            due >= rest_until.timestamp_micros() - 1,
            "{d:?} is due before the rest ends"
        );
    }

    // After the rest, a success ends the streak.
    let later = rest_until + chrono::Duration::seconds(1);
    let after = lease(&store, "w", later, later + chrono::Duration::seconds(60), 1)
        .await
        .expect("lease");
    assert_eq!(after.len(), 1);
    let mut ok = attempt(after[0].id, failing, "w", Next::Delivered);
    ok.at = later;
    ok.status = Some(200);
    ok.endpoint = Some(EndpointReport::Success);
    assert!(store.record_attempt(&ok).await.expect("record"));
    let health = store
        .subscription(failing)
        .await
        .expect("read")
        .expect("there")
        .health;
    assert_eq!(health.consecutive_failures, 0);
    assert_eq!(health.failing_since, None);
    assert_eq!(health.rest_until, None);
    assert_eq!(
        health.last_success.map(|t| t.timestamp_micros()),
        Some(later.timestamp_micros())
    );
    assert_eq!(
        health.last_error.as_deref(),
        Some("status 500"),
        "kept for the record"
    );
}

async fn settled_deliveries_are_pruned_oldest_first_in_batches(store: Arc<dyn Store>) {
    let id = validated(&store, "https://pruned.example/hook").await;
    let queued: Vec<NewDelivery> = (1..=4).map(|seq| delivery(id, seq)).collect();
    store.enqueue(0, 0, &queued).await.expect("enqueue");
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 4);
    let long_ago = Utc::now() - chrono::Duration::days(40);
    for (i, d) in leased.iter().enumerate() {
        let next = if i == 3 { Next::Dead } else { Next::Delivered };
        let mut record = attempt(d.id, id, "w", next);
        // Settled long ago, one after the other; the third just now.
        record.at = if i == 2 {
            Utc::now()
        } else {
            long_ago + chrono::Duration::seconds(i as i64)
        };
        assert!(store.record_attempt(&record).await.expect("record"));
    }
    let size = store.history_size().await.expect("size");
    assert_eq!(
        (size.delivered, size.dead),
        (4, 1),
        "the handshake is delivered too"
    );
    assert!(size.attempts >= 5);

    let cutoff = Utc::now() - chrono::Duration::days(30);
    let first = store
        .prune_settled(DeliveryState::Delivered, cutoff, 2)
        .await
        .expect("prune");
    assert_eq!(first, 2, "a batch at the most");
    let rest = store
        .prune_settled(DeliveryState::Delivered, cutoff, 2)
        .await
        .expect("prune");
    assert_eq!(rest, 0, "the handshake and the third were settled recently");
    let left = store.deliveries(id, None, 10).await.expect("deliveries");
    let ids: Vec<i64> = left.iter().map(|d| d.id).collect();
    assert!(
        !ids.contains(&leased[0].id) && !ids.contains(&leased[1].id),
        "{ids:?}"
    );
    assert!(ids.contains(&leased[2].id) && ids.contains(&leased[3].id));
    // The dead letter has its own retention.
    assert_eq!(
        store
            .prune_settled(DeliveryState::Dead, cutoff, 10)
            .await
            .expect("prune"),
        1
    );
    let size = store.history_size().await.expect("size");
    assert_eq!((size.delivered, size.dead), (2, 0));
    assert_eq!(size.attempts, 2, "attempts go with their deliveries");
}

/// What a worker or a node decided from what it read earlier must not overwrite what happened
/// since: a disable for a streak that another success ended, leases it no longer holds, secrets
/// another node sealed again.
async fn decisions_made_on_an_old_reading_change_nothing(store: Arc<dyn Store>) {
    let id = validated(&store, "https://streaky.example/hook").await;
    let queued: Vec<NewDelivery> = (1..=4).map(|seq| delivery(id, seq)).collect();
    store.enqueue(0, 0, &queued).await.expect("enqueue");
    let leased = lease(&store, "w", Utc::now(), soon(60_000), 3)
        .await
        .expect("lease");
    assert_eq!(leased.len(), 3);
    let failure = |delivery_id: i64, at: DateTime<Utc>| {
        let mut failed = attempt(delivery_id, id, "w", Next::RetryAt(at));
        failed.at = at;
        failed.endpoint = Some(EndpointReport::Failure {
            class: "status 500".into(),
            rest_until: at,
        });
        failed
    };
    let began = Utc::now();
    assert!(
        store
            .record_attempt(&failure(leased[0].id, began))
            .await
            .expect("record")
    );
    let mut ok = attempt(leased[1].id, id, "w", Next::Delivered);
    ok.status = Some(200);
    ok.endpoint = Some(EndpointReport::Success);
    assert!(store.record_attempt(&ok).await.expect("record"));
    // Decided on the streak that began at `began`, which the success ended: a new streak begins.
    let mut late = failure(leased[2].id, Utc::now());
    late.disable = Some(Disable {
        reason: "failing for too long".into(),
        streak_began: Some(began),
    });
    assert!(store.record_attempt(&late).await.expect("record"));
    let now = store.subscription(id).await.expect("read").expect("there");
    assert!(now.enabled, "disabled for a streak that had ended");
    assert_eq!(now.health.consecutive_failures, 1);

    // Handed back until a rest ends: only by the lease's holder, and not due before then.
    store
        .enqueue(0, 0, &[delivery(id, 9)])
        .await
        .expect("enqueue");
    let rest_until = soon(3_600_000);
    let held: Vec<i64> = lease(&store, "w", Utc::now(), soon(60_000), 10)
        .await
        .expect("lease")
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(!held.is_empty());
    assert_eq!(
        store
            .release_until("someone else", &held, rest_until)
            .await
            .expect("release"),
        0
    );
    assert_eq!(
        store
            .release_until("w", &held, rest_until)
            .await
            .expect("release"),
        held.len() as u64
    );
    assert!(
        lease(&store, "v", Utc::now(), soon(60_000), 10)
            .await
            .expect("lease")
            .is_empty(),
        "due only when the rest ends"
    );
    let later = rest_until + chrono::Duration::seconds(1);
    let after = lease(
        &store,
        "v",
        later,
        later + chrono::Duration::seconds(60),
        10,
    )
    .await
    .expect("lease");
    assert_eq!(after.len(), held.len());

    // An attempt that went to the endpoint before a PATCH says nothing of the new one.
    let before = store.subscription(id).await.expect("read").expect("there");
    store
        .enqueue(0, 0, &[delivery(id, 30)])
        .await
        .expect("enqueue");
    let in_flight = lease(
        &store,
        "w",
        later,
        later + chrono::Duration::seconds(60),
        10,
    )
    .await
    .expect("lease");
    let in_flight = in_flight
        .iter()
        .find(|d| d.event_seq == Some(30))
        .expect("leased")
        .id;
    let change = hendelse_store::push::SubscriptionChange {
        end_point: Some("https://new.example/hook".into()),
        secret: None,
        rate_limit: None,
        previous_secret_until: Utc::now(),
    };
    assert!(
        store
            .change_subscription(id, &change, &handshake)
            .await
            .expect("change")
    );
    let mut old_endpoint = failure(in_flight, later);
    old_endpoint.end_point = Some(before.spec.end_point.clone());
    old_endpoint.disable = Some(gone_for_good("the endpoint answered 410 Gone"));
    assert!(store.record_attempt(&old_endpoint).await.expect("record"));
    let after = store.subscription(id).await.expect("read").expect("there");
    assert_eq!(after.health.consecutive_failures, 0, "{:?}", after.health);
    assert_eq!(after.health.rest_until, None);
    assert!(after.enabled, "disabled by the old endpoint's 410");

    // Sealed again on another node meanwhile: that value stands.
    let stored = store.stored_secrets().await.expect("secrets");
    let was = stored
        .iter()
        .find(|s| s.id == id)
        .expect("its secret")
        .clone();
    let mut theirs = was.clone();
    theirs.secret = Some("sealed by another node".into());
    let mut mine = was.clone();
    mine.secret = Some("sealed by this node".into());
    assert_eq!(
        store
            .replace_secrets(&[(was.clone(), theirs.clone())])
            .await
            .expect("replace"),
        1
    );
    assert_eq!(
        store
            .replace_secrets(&[(was, mine)])
            .await
            .expect("replace"),
        0,
        "replaced a value it did not read"
    );
    let kept = store.stored_secrets().await.expect("secrets");
    assert_eq!(
        kept.iter()
            .find(|s| s.id == id)
            .and_then(|s| s.secret.clone()),
        theirs.secret
    );
}

/// `EventQuery::matches` (live streams test events in memory) selects exactly what the store's
/// SQL selects, for every kind of filter, from events whose bodies carry their attributes.
async fn queries_in_memory_select_what_the_store_selects(store: Arc<dyn Store>) {
    let subjects = [
        Some("urn:altinn:organization:identifier-no::991825827"),
        Some("urn:altinn:organization:identifier-no:991825827"),
        Some("/party/7"),
        None,
    ];
    let resources = [
        Some("urn:altinn:resource:app_ttd_a"),
        Some("urn:altinn:resource:generic"),
        None,
    ];
    let mut events = Vec::new();
    for i in 0..36 {
        let subject = subjects[i % subjects.len()];
        let resource = resources[i % resources.len()];
        let alternative = (i % 5 == 0).then(|| format!("/person/{:011}", i % 2));
        let source = if i % 2 == 0 {
            "https://ttd.apps.altinn.no/ttd/app_1/instances/1".to_owned()
        } else {
            format!("https://platform.altinn.no/dialogs/{i}")
        };
        let event_type = [
            "app.instance.created",
            "dialogporten.dialog.created.v1",
            "App.Instance.Deleted",
        ][i % 3];
        let mut body = serde_json::json!({
            "specversion": "1.0", "id": format!("e{i:02}"), "source": source, "type": event_type,
        });
        if let Some(s) = subject {
            body["subject"] = s.into();
        }
        if let Some(r) = resource {
            body["resource"] = r.into();
        }
        if let Some(a) = &alternative {
            body["alternativesubject"] = a.clone().into();
        }
        events.push(NewEvent {
            id: format!("e{i:02}"),
            source,
            event_type: event_type.to_owned(),
            subject_key: subject.map(hendelse_model::subject::party_key),
            alternative_subject: alternative,
            resource: resource.map(str::to_owned),
            body: body.to_string(),
            traceparent: None,
        });
        // Three commits, so that `from`/`to` fall between registrations.
        if i % 12 == 11 {
            store.append(&events[i - 11..=i]).await.expect("append");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stored = query(&store, all(1000)).await;
    assert_eq!(stored.len(), 36);
    let middle = stored[12].registered;
    let late = stored[24].registered;
    let org = "urn:altinn:organization:identifier-no:991825827";
    let queries = [
        all(1000),
        EventQuery {
            subject_key: Some(org.into()),
            ..all(1000)
        },
        EventQuery {
            subject_key: Some("/party/7".into()),
            ..all(1000)
        },
        EventQuery {
            alternative_subject: Some("/person/00000000000".into()),
            ..all(1000)
        },
        EventQuery {
            resource: Some("urn:altinn:resource:generic".into()),
            ..all(1000)
        },
        EventQuery {
            resource_prefix: Some("urn:altinn:resource:app_".into()),
            ..all(1000)
        },
        EventQuery {
            sources: vec![Pattern::new("https://ttd.apps.altinn.no/%")],
            ..all(1000)
        },
        EventQuery {
            types: vec![Pattern::new("app.instance.%"), Pattern::new("nothing")],
            ..all(1000)
        },
        EventQuery {
            from: Some(middle),
            ..all(1000)
        },
        EventQuery {
            to: Some(late),
            from: Some(middle),
            ..all(1000)
        },
        EventQuery {
            visibility: Visibility::Grants(Vec::new()),
            ..all(1000)
        },
        EventQuery {
            visibility: Visibility::Grants(vec![
                Grant {
                    subjects: Some(vec![org.into()]),
                    resources: ResourceScope::Some {
                        exact: vec!["urn:altinn:resource:generic".into()],
                        prefixes: Vec::new(),
                    },
                },
                Grant {
                    subjects: None,
                    resources: ResourceScope::Some {
                        exact: Vec::new(),
                        prefixes: vec!["urn:altinn:resource:app_ttd_".into()],
                    },
                },
            ]),
            types: vec![Pattern::new("%created%")],
            ..all(1000)
        },
    ];
    for q in queries {
        let selected = query(&store, q.clone()).await;
        let in_memory: Vec<&StoredEvent> = stored
            .iter()
            .filter(|e| {
                let attributes = IndexedAttributes::of(e).expect("an event body");
                q.matches(&attributes, e.registered)
            })
            .collect();
        assert_eq!(
            ids(&selected),
            in_memory.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            "{q:?}"
        );
        assert!(
            !selected.is_empty() || q.visibility.is_nothing(),
            "{q:?} selects nothing"
        );
    }
}
