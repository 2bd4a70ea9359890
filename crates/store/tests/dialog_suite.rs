//! The dialog storage both backends share, as one suite run against SQLite and PostgreSQL: dialogs
//! with compare-and-swap on the revision, the seen log (once per user and change, also under
//! concurrency), listing with visibility before the limit, and the outbox written in the same
//! transaction as each change.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use hendelse_model::visibility::ResourceScope;
use hendelse_model::{Grant, Visibility};
use hendelse_store::Store;
use hendelse_store::dialog::{DeletedFilter, DialogQuery, DialogRecord, OutboxEvent, SeenEntry};

hendelse_store::both_backends!(
    inserts_once_per_id_with_its_events,
    updates_only_from_the_expected_revision,
    purges_with_the_seen_log,
    records_seen_once_per_user_and_change,
    concurrent_seen_records_one_entry,
    lists_by_filters_visibility_and_cursor,
    the_outbox_keeps_order_until_done,
);

const RESOURCE: &str = "urn:altinn:resource:super-simple-service";
const PARTY: &str = "urn:altinn:organization:identifier-no:991825827";

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 19, 8, 0, second)
        .single()
        .expect("valid time")
}

fn dialog(id: &str, revision: &str) -> DialogRecord {
    DialogRecord {
        seq: 0,
        id: id.to_owned(),
        resource: RESOURCE.to_owned(),
        subject_key: PARTY.to_owned(),
        status: "New".to_owned(),
        revision: revision.to_owned(),
        change_id: revision.to_owned(),
        deleted: false,
        created: at(0),
        updated: at(0),
        document: format!(r#"{{"id":"{id}","revision":"{revision}"}}"#),
    }
}

fn event(id: &str, dialog_id: &str, event_type: &str) -> OutboxEvent {
    OutboxEvent {
        seq: 0,
        event_id: id.to_owned(),
        event_type: event_type.to_owned(),
        dialog_id: dialog_id.to_owned(),
        resource: RESOURCE.to_owned(),
        subject: PARTY.to_owned(),
        source_path: format!("/api/v1/enduser/dialogs/{dialog_id}"),
        time: at(1),
        data: Some(r#"{"process":"urn:p"}"#.to_owned()),
    }
}

fn seen(id: &str, dialog_id: &str, change_id: &str, by: &str) -> SeenEntry {
    SeenEntry {
        id: id.to_owned(),
        dialog_id: dialog_id.to_owned(),
        change_id: change_id.to_owned(),
        seen_by: by.to_owned(),
        seen_at: at(2),
    }
}

async fn outbox_ids(store: &Arc<dyn Store>) -> Vec<String> {
    store
        .outbox(1000)
        .await
        .expect("outbox")
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

async fn inserts_once_per_id_with_its_events(store: Arc<dyn Store>) {
    let d = dialog("d1", "r1");
    assert!(
        store
            .insert_dialog(&d, &[event("e1", "d1", "created"), event("e2", "d1", "a")])
            .await
            .expect("insert")
    );
    let back = store.dialog("d1").await.expect("read").expect("stored");
    assert!(back.seq > 0);
    assert_eq!(DialogRecord { seq: 0, ..back }, d);
    assert!(store.dialog("nope").await.expect("read").is_none());

    let again = dialog("d1", "r2");
    assert!(
        !store
            .insert_dialog(&again, &[event("e3", "d1", "created")])
            .await
            .expect("insert again")
    );
    assert_eq!(
        outbox_ids(&store).await,
        ["e1", "e2"],
        "no events for a refused insert"
    );
    let outbox = store.outbox(10).await.expect("outbox");
    assert_eq!(
        OutboxEvent {
            seq: 0,
            ..outbox[0].clone()
        },
        event("e1", "d1", "created"),
        "stored exactly"
    );
}

async fn updates_only_from_the_expected_revision(store: Arc<dyn Store>) {
    store
        .insert_dialog(&dialog("d1", "r1"), &[])
        .await
        .expect("insert");
    let mut next = dialog("d1", "r2");
    next.status = "Completed".into();
    next.deleted = true;
    next.updated = at(5);
    assert!(
        store
            .update_dialog(&next, "r1", &[event("e1", "d1", "updated")])
            .await
            .expect("update")
    );
    let back = store.dialog("d1").await.expect("read").expect("stored");
    assert_eq!(
        (
            back.revision.as_str(),
            back.status.as_str(),
            back.deleted,
            back.updated
        ),
        ("r2", "Completed", true, at(5))
    );
    assert_eq!(back.created, at(0), "creation time is kept");

    let stale = dialog("d1", "r3");
    assert!(
        !store
            .update_dialog(&stale, "r1", &[event("e2", "d1", "updated")])
            .await
            .expect("stale update")
    );
    assert!(
        !store
            .update_dialog(&dialog("missing", "r1"), "r1", &[])
            .await
            .expect("missing")
    );
    assert_eq!(outbox_ids(&store).await, ["e1"]);
    assert_eq!(
        store
            .dialog("d1")
            .await
            .expect("read")
            .expect("kept")
            .revision,
        "r2"
    );
}

async fn purges_with_the_seen_log(store: Arc<dyn Store>) {
    store
        .insert_dialog(&dialog("d1", "r1"), &[])
        .await
        .expect("insert");
    assert!(
        store
            .record_seen(&seen("s1", "d1", "r1", "u1"), &[])
            .await
            .expect("seen")
    );
    assert!(
        !store
            .purge_dialog("d1", "stale", &[event("e0", "d1", "deleted")])
            .await
            .expect("stale purge")
    );
    assert!(
        store
            .purge_dialog("d1", "r1", &[event("e1", "d1", "deleted")])
            .await
            .expect("purge")
    );
    assert!(store.dialog("d1").await.expect("read").is_none());
    assert!(store.seen_log("d1", "r1").await.expect("log").is_empty());
    assert_eq!(outbox_ids(&store).await, ["e1"]);
    assert!(
        !store
            .purge_dialog("d1", "r1", &[event("e2", "d1", "deleted")])
            .await
            .expect("purge again")
    );
    // The id may be used again after a purge.
    assert!(
        store
            .insert_dialog(&dialog("d1", "r9"), &[])
            .await
            .expect("insert again")
    );
}

async fn records_seen_once_per_user_and_change(store: Arc<dyn Store>) {
    store
        .insert_dialog(&dialog("d1", "r1"), &[])
        .await
        .expect("insert");
    let first = seen("s1", "d1", "r1", "u1");
    assert!(
        store
            .record_seen(
                &first,
                &[event("e1", "d1", "updated"), event("s1", "d1", "seen")]
            )
            .await
            .expect("seen")
    );
    assert!(
        !store
            .record_seen(
                &seen("s2", "d1", "r1", "u1"),
                &[event("e2", "d1", "updated"), event("s2", "d1", "seen")]
            )
            .await
            .expect("seen again"),
        "the same user and change is recorded once"
    );
    assert!(
        store
            .record_seen(&seen("s3", "d1", "r1", "u2"), &[event("s3", "d1", "seen")])
            .await
            .expect("another user")
    );
    assert!(
        !store
            .record_seen(&seen("s4", "d1", "r0", "u3"), &[event("s4", "d1", "seen")])
            .await
            .expect("stale change"),
        "a change the dialog is no longer at is not recorded"
    );
    assert!(
        !store
            .record_seen(&seen("s5", "nope", "r1", "u1"), &[])
            .await
            .expect("missing dialog")
    );
    let log = store.seen_log("d1", "r1").await.expect("log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], first);

    let mut changed = dialog("d1", "r2");
    changed.change_id = "c2".into();
    assert!(
        store
            .update_dialog(&changed, "r1", &[])
            .await
            .expect("change")
    );
    assert!(
        store
            .record_seen(&seen("s6", "d1", "c2", "u1"), &[event("s6", "d1", "seen")])
            .await
            .expect("seen after the change")
    );
    assert!(store.seen_log("d1", "r1").await.expect("old").len() == 2);
    assert_eq!(store.seen_log("d1", "c2").await.expect("new").len(), 1);

    let mut deleted = dialog("d1", "r3");
    deleted.change_id = "c3".into();
    deleted.deleted = true;
    assert!(
        store
            .update_dialog(&deleted, "r2", &[])
            .await
            .expect("delete")
    );
    assert!(
        !store
            .record_seen(&seen("s7", "d1", "c3", "u1"), &[])
            .await
            .expect("deleted"),
        "a deleted dialog is not seen"
    );
    assert_eq!(outbox_ids(&store).await, ["e1", "s1", "s3", "s6"]);
}

async fn concurrent_seen_records_one_entry(store: Arc<dyn Store>) {
    store
        .insert_dialog(&dialog("d1", "r1"), &[])
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("s{i}");
                store
                    .record_seen(
                        &seen(&id, "d1", "r1", "u1"),
                        &[
                            event(&format!("u{i}"), "d1", "updated"),
                            event(&id, "d1", "seen"),
                        ],
                    )
                    .await
                    .expect("seen")
            })
        })
        .collect();
    let mut recorded = 0;
    for task in tasks {
        if task.await.expect("task") {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 1);
    assert_eq!(store.seen_log("d1", "r1").await.expect("log").len(), 1);
    assert_eq!(store.outbox(100).await.expect("outbox").len(), 2);
}

async fn lists_by_filters_visibility_and_cursor(store: Arc<dyn Store>) {
    let other_party = "urn:altinn:person:identifier-no:07124912037";
    let other_resource = "urn:altinn:resource:skd-service";
    for i in 0..6 {
        let mut d = dialog(&format!("d{i}"), "r1");
        if i % 2 == 1 {
            d.subject_key = other_party.into();
        }
        if i == 4 {
            d.resource = other_resource.into();
            d.status = "Completed".into();
        }
        if i == 5 {
            d.deleted = true;
        }
        store.insert_dialog(&d, &[]).await.expect("insert");
    }
    let ids = |page: Vec<DialogRecord>| page.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let all = store
        .list_dialogs(&DialogQuery::default())
        .await
        .expect("list");
    assert_eq!(ids(all.clone()), ["d0", "d1", "d2", "d3", "d4"]);

    let page = store
        .list_dialogs(&DialogQuery {
            after: all[1].seq,
            limit: 2,
            ..DialogQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(ids(page), ["d2", "d3"]);

    let filtered = |q: DialogQuery| {
        let store = store.clone();
        async move { ids(store.list_dialogs(&q).await.expect("list")) }
    };
    assert_eq!(
        filtered(DialogQuery {
            subject_keys: vec![other_party.into()],
            deleted: DeletedFilter::Include,
            ..DialogQuery::default()
        })
        .await,
        ["d1", "d3", "d5"]
    );
    assert_eq!(
        filtered(DialogQuery {
            deleted: DeletedFilter::Only,
            ..DialogQuery::default()
        })
        .await,
        ["d5"]
    );
    assert_eq!(
        filtered(DialogQuery {
            resources: vec![other_resource.into()],
            ..DialogQuery::default()
        })
        .await,
        ["d4"]
    );
    assert_eq!(
        filtered(DialogQuery {
            statuses: vec!["New".into()],
            limit: 3,
            ..DialogQuery::default()
        })
        .await,
        ["d0", "d1", "d2"]
    );
    // Visibility is applied before the limit: the first page holds readable dialogs only.
    let reader = Visibility::Grants(vec![Grant {
        subjects: Some(vec![other_party.into()]),
        resources: ResourceScope::Some {
            exact: vec![RESOURCE.into()],
            prefixes: Vec::new(),
        },
    }]);
    assert_eq!(
        filtered(DialogQuery {
            visibility: reader,
            limit: 2,
            ..DialogQuery::default()
        })
        .await,
        ["d1", "d3"]
    );
    let owner = Visibility::Grants(vec![Grant {
        subjects: None,
        resources: ResourceScope::Some {
            exact: Vec::new(),
            prefixes: vec!["urn:altinn:resource:skd-".into()],
        },
    }]);
    assert_eq!(
        filtered(DialogQuery {
            visibility: owner,
            ..DialogQuery::default()
        })
        .await,
        ["d4"]
    );
    assert!(
        filtered(DialogQuery {
            visibility: Visibility::Grants(Vec::new()),
            ..DialogQuery::default()
        })
        .await
        .is_empty()
    );
}

async fn the_outbox_keeps_order_until_done(store: Arc<dyn Store>) {
    assert_eq!(store.outbox_depth().await.expect("depth"), (0, None));
    store
        .insert_dialog(
            &dialog("d1", "r1"),
            &[
                event("e1", "d1", "created"),
                event("e2", "d1", "activity"),
                event("e3", "d1", "transmission"),
            ],
        )
        .await
        .expect("insert");
    let mut next = dialog("d1", "r2");
    next.change_id = "c2".into();
    store
        .update_dialog(&next, "r1", &[event("e4", "d1", "updated")])
        .await
        .expect("update");
    assert_eq!(store.outbox_depth().await.expect("depth"), (4, Some(at(1))));
    let first = store.outbox(2).await.expect("outbox");
    assert_eq!(
        first
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e1", "e2"]
    );
    assert!(first[0].seq < first[1].seq);
    let done: Vec<i64> = first.iter().map(|e| e.seq).collect();
    assert_eq!(store.outbox_done(&done).await.expect("done"), 2);
    assert_eq!(store.outbox_done(&done).await.expect("done again"), 0);
    assert_eq!(outbox_ids(&store).await, ["e3", "e4"]);
    let mut none = event("e5", "d1", "deleted");
    none.data = None;
    next.revision = "r3".into();
    store
        .update_dialog(&next, "r2", std::slice::from_ref(&none))
        .await
        .expect("update");
    let last = store.outbox(10).await.expect("outbox");
    assert_eq!(last.len(), 3);
    assert_eq!(last[2].data, None);
}
