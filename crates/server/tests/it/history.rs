//! The delivery history does not grow forever: delivered deliveries and dead letters, with their
//! attempts, are deleted after their own retention by a background sweep, and the history's size
//! shows in the metrics. On SQLite and PostgreSQL.

use hendelse_store::testing::TestDatabase;

use crate::common::{
    PATIENCE, Receiver, Reply, Server, TO_LOOPBACK, deliveries, eventually, generic_event,
    get_public, publish_ok, subscribe_to, wait_validated,
};

fn args<'a>(extra: &[&'a str], dead_retention: &'a str) -> Vec<&'a str> {
    [
        &TO_LOOPBACK[..],
        &[
            "--retry-schedule",
            "100ms",
            "--delivered-retention",
            "1s",
            "--dead-letter-retention",
            dead_retention,
            "--retention-interval",
            "1",
        ],
        extra,
    ]
    .concat()
}

async fn history_is_pruned(extra: &[&str]) {
    let mut server = Server::start_with(&args(extra, "1h"));
    let receiver = Receiver::start().await;
    receiver.script_deliveries(|hit| {
        if hit.event_id() == "doomed" {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let ttd = server.ttd();
    let id = subscribe_to(&server, &ttd, &receiver.url("/history")).await;
    wait_validated(&server, &ttd, id).await;
    for event in ["kept-1", "kept-2", "doomed"] {
        publish_ok(&server, &ttd, &generic_event(event)).await;
    }
    eventually("the dead letter", PATIENCE, async || {
        let dead = deliveries(&server, &ttd, id, Some("dead")).await;
        if dead.len() == 1 {
            Ok(())
        } else {
            Err(format!("{dead:?}"))
        }
    })
    .await;

    // Delivered ones go after a second, with their attempts; the dead letter stays its hour.
    eventually("the delivered ones to be pruned", PATIENCE, async || {
        let delivered = deliveries(&server, &ttd, id, Some("delivered")).await;
        if delivered.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", delivered.len()))
        }
    })
    .await;
    assert!(
        receiver.accepted_on("/history").contains("kept-2"),
        "delivered first"
    );
    let dead = deliveries(&server, &ttd, id, Some("dead")).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["eventId"], "doomed");
    assert!(!dead[0]["history"].as_array().expect("history").is_empty());
    let metrics = eventually("the history metrics", PATIENCE, async || {
        let text = get_public(&server, "/metrics").await.text;
        if text.contains("hendelse_delivery_history{state=\"dead\"} 1") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    assert!(
        metrics.contains("hendelse_deliveries_pruned_total{state=\"delivered\"}"),
        "{metrics}"
    );

    // With a shorter retention for dead letters they go too.
    server.restart_with(&args(extra, "1s"));
    eventually("the dead letter to be pruned", PATIENCE, async || {
        let dead = deliveries(&server, &ttd, id, Some("dead")).await;
        if dead.is_empty() {
            Ok(())
        } else {
            Err(format!("{dead:?}"))
        }
    })
    .await;
    // New deliveries are unaffected.
    publish_ok(&server, &ttd, &generic_event("kept-3")).await;
    eventually("a new delivery", PATIENCE, async || {
        if receiver.accepted_on("/history").contains("kept-3") {
            Ok(())
        } else {
            Err(String::new())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delivered_and_dead_deliveries_are_pruned_after_their_retention() {
    history_is_pruned(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivered_and_dead_deliveries_are_pruned_after_their_retention() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    history_is_pruned(&["--database-url", &db.url]).await;
}
