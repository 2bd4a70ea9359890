//! Database faults on PostgreSQL under a publish load: the server's connections are killed
//! (`pg_terminate_backend`) several times, then the database refuses connections for a few seconds.
//! Publishes and reads answer 2xx or 503 with `Retry-After` (never a 500, never a 2xx for an event
//! that was not committed) and the service recovers by itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Server, client, generic_event, header, post_event, resource_log};
use hendelse_store::testing::{TestDatabase, admin_url};
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

#[derive(Default, Debug)]
struct Tally {
    acknowledged: Vec<String>,
    unavailable: usize,
    /// Anything else: (status, body), which fails the test.
    wrong: Vec<(u16, String)>,
    /// Transport errors: the server must stay up, so these fail the test too.
    transport: usize,
    reads_ok: usize,
    reads_unavailable: usize,
}

async fn terminate_connections(admin: &mut PgConnection, db: &str) -> u64 {
    let killed = sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .execute(&mut *admin)
    .await
    .expect("pg_terminate_backend");
    killed.rows_affected()
}

async fn allow_connections(admin: &mut PgConnection, db: &str, allow: bool) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {db} ALLOW_CONNECTIONS {allow}"
    )))
    .execute(&mut *admin)
    .await
    .expect("alter database");
}

fn check_503(response: &reqwest::Response) -> Result<(), String> {
    let retry = response.headers().get("retry-after").is_some();
    let problem = header(response, "content-type").starts_with("application/problem+json");
    if retry && problem {
        Ok(())
    } else {
        Err(format!(
            "503 without Retry-After or problem details: {:?}",
            response.headers()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_refused_database_connections_give_503_and_the_service_recovers() {
    const WRITERS: usize = 8;
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let server = Arc::new(Server::start_with(&["--database-url", &db.url]));
    let token = Arc::new(server.ttd());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (server, token, tally, stop) =
            (server.clone(), token.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            for i in 0..1_000_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w{w}-{i}");
                let sent = post_event(&http, &server.url, &token, &generic_event(&id)).await;
                let mut t = tally.lock().await;
                match sent {
                    Ok(r) if r.status().is_success() => t.acknowledged.push(id),
                    Ok(r) if r.status() == 503 => {
                        t.unavailable += 1;
                        if let Err(e) = check_503(&r) {
                            t.wrong.push((503, e));
                        }
                        drop(t);
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        drop(t);
                        let body = r.text().await.unwrap_or_default();
                        tally.lock().await.wrong.push((status, body));
                    }
                    Err(_) => t.transport += 1,
                }
            }
        }));
    }
    // A reader as well: queries hit the pool outside the ingest path.
    {
        let (server, token, tally, stop) =
            (server.clone(), token.clone(), tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let url = server.log_url("&size=50");
            for _ in 0..1_000_000usize {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = http.get(&url).bearer_auth(&*token).send().await;
                let mut t = tally.lock().await;
                match sent {
                    Ok(r) if r.status() == 200 => t.reads_ok += 1,
                    Ok(r) if r.status() == 503 => {
                        t.reads_unavailable += 1;
                        if let Err(e) = check_503(&r) {
                            t.wrong.push((503, e));
                        }
                    }
                    Ok(r) => {
                        let status = r.status().as_u16();
                        drop(t);
                        let body = r.text().await.unwrap_or_default();
                        tally
                            .lock()
                            .await
                            .wrong
                            .push((status, format!("read: {body}")));
                    }
                    Err(_) => t.transport += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("admin connection");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut terminated = 0;
    for _ in 0..5 {
        terminated += terminate_connections(&mut admin, &db.name).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let before_refusal = tally.lock().await.unavailable;
    allow_connections(&mut admin, &db.name, false).await;
    terminated += terminate_connections(&mut admin, &db.name).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_refusal = tally.lock().await.unavailable - before_refusal;
    allow_connections(&mut admin, &db.name, true).await;

    // Recovery, by itself: within a bounded number of rounds the writers are acknowledged again.
    let acknowledged_at_reopen = tally.lock().await.acknowledged.len();
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tally.lock().await.acknowledged.len() >= acknowledged_at_reopen + 100 {
            recovered = true;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client task");
    }
    let tally = tally.lock().await;
    assert!(
        recovered,
        "publishes did not succeed again after the database came back; log: {}",
        server.log()
    );
    assert!(
        tally.wrong.is_empty(),
        "answers other than 2xx or 503 with Retry-After: {:?}; errors logged: {:?}",
        &tally.wrong[..tally.wrong.len().min(3)],
        server
            .log()
            .lines()
            .filter(|l| l.contains("request failed"))
            .take(3)
            .collect::<Vec<_>>()
    );
    assert_eq!(tally.transport, 0, "the server dropped connections");
    assert!(
        during_refusal > 0,
        "no publish was refused while the database refused connections"
    );

    // Everything acknowledged is stored exactly once.
    let events = resource_log(&server, &token).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *seen.entry(e["id"].as_str().expect("id")).or_default() += 1;
    }
    let lost = tally
        .acknowledged
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "postgres faults: {terminated} backends terminated, connections refused for 3 s; \
         {} publishes acknowledged, {} answered 503 ({during_refusal} while refused), \
         found {}, lost {lost}, duplicated {duplicated}; reads {} ok, {} 503",
        tally.acknowledged.len(),
        tally.unavailable,
        events.len(),
        tally.reads_ok,
        tally.reads_unavailable
    );
    assert_eq!(lost, 0, "acknowledged events were lost");
    assert_eq!(duplicated, 0, "events were stored twice");
    drop(admin);
    db.drop_database().await;
}
