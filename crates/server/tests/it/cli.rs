//! The command-line client (`publish`, `query`, `tail`, `subscriptions`), black-box: the real
//! binary against a real `hendelse serve`, as a person at a shell would use it.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::common::{
    BIN, ORG_SUBJECT, PATIENCE, PERSON, PERSON_PARTY, RESOURCE, Receiver, Server, event_ids,
    eventually, free_port,
};
use serde_json::{Value, json};

/// Runs `hendelse ARGS --url … --token …` with `stdin` and waits for it.
fn hendelse(server: &Server, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run(&server.url, token, args, stdin)
}

fn run(url: &str, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--url", url, "--token", token])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hendelse");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        // A writer thread, so a large input cannot dead-lock against a full stdout pipe.
        std::thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    child.wait_with_output().expect("hendelse output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf8 stderr")
}

/// Asserts success and returns stdout.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "hendelse failed ({}): {}",
        output.status,
        stderr(&output)
    );
    stdout(&output)
}

/// Asserts failure with exactly one line on stderr, `hendelse: …`, and returns that line.
fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "hendelse should have failed; stdout: {}",
        stdout(&output)
    );
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    assert!(lines[0].starts_with("hendelse: "), "{err:?}");
    assert!(stdout(&output).is_empty(), "nothing on stdout");
    lines[0].to_owned()
}

/// Publishes `event(id)` with `hendelse publish --event`, which must succeed.
fn publish_event(server: &Server, token: &str, id: &str) {
    ok(hendelse(
        server,
        token,
        &["publish", "--event", &event(id).to_string()],
        None,
    ));
}

/// The JSON lines of stdout.
fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

fn event(id: &str) -> Value {
    common::generic_event(id)
}

fn event_with(id: &str, kind: &str, source: &str, subject: &str) -> Value {
    let mut e = event(id);
    e["type"] = json!(kind);
    e["source"] = json!(source);
    e["subject"] = json!(subject);
    e
}

/// The published summary's request count: "published N events in M requests, …".
fn summary(err: &str) -> (u64, u64) {
    let line = err
        .lines()
        .find(|l| l.starts_with("published "))
        .unwrap_or_else(|| panic!("no summary in {err:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "in").expect("in");
    (
        words[1].parse().expect("events"),
        words[at + 1].parse().expect("requests"),
    )
}

#[test]
fn publish_one_a_file_and_json_lines_then_query_returns_all_in_order() {
    let server = Server::start();
    let ttd = server.ttd();

    let one = hendelse(
        &server,
        &ttd,
        &["publish", "--event", &event("one").to_string()],
        None,
    );
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(summary(&stderr(&one)), (1, 1));

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.json");
    let array = json!([event("file-1"), event("file-2"), event("file-3")]);
    std::fs::write(&file, serde_json::to_string_pretty(&array).unwrap()).unwrap();
    let from_file = hendelse(
        &server,
        &ttd,
        &["publish", "--file", file.to_str().unwrap()],
        None,
    );
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert_eq!(summary(&stderr(&from_file)), (3, 1));

    let lines: String = (0..1200)
        .map(|i| format!("{}\n", event(&format!("line-{i:04}"))))
        .collect();
    let piped = hendelse(&server, &ttd, &["publish", "-"], Some(&lines));
    assert!(piped.status.success(), "{}", stderr(&piped));
    let (count, requests) = summary(&stderr(&piped));
    assert_eq!(count, 1200);
    assert!(requests >= 3, "at most 500 events per request: {requests}");

    // A smaller --batch, and --stdin (with blank lines, which are skipped).
    let more: String = (0..30)
        .map(|i| format!("{}\n\n", event(&format!("more-{i:02}"))))
        .collect();
    let batched = hendelse(
        &server,
        &ttd,
        &["publish", "--stdin", "--batch", "7"],
        Some(&more),
    );
    assert!(batched.status.success(), "{}", stderr(&batched));
    let (count, requests) = summary(&stderr(&batched));
    assert_eq!(count, 30);
    assert!(requests >= 5, "at most 7 events per request: {requests}");

    let all = events(&ok(hendelse(
        &server,
        &ttd,
        &["query", "--resource", RESOURCE, "--size", "1000"],
        None,
    )));
    let mut expected = vec!["one".to_owned()];
    expected.extend((1..=3).map(|i| format!("file-{i}")));
    expected.extend((0..1200).map(|i| format!("line-{i:04}")));
    expected.extend((0..30).map(|i| format!("more-{i:02}")));
    assert_eq!(event_ids(&all), expected, "every event once, in order");
    // Exactly as published.
    assert_eq!(all[1], event("file-1"));
    assert_eq!(all[500], event("line-0496"));
}

#[test]
fn app_events_are_published_one_per_request_and_print_their_ids() {
    let server = Server::start();
    let ttd = server.ttd();
    let app_event = |n: u32| {
        json!({
            "specversion": "1.0",
            "type": "app.instance.created",
            "subject": format!("/party/{PERSON_PARTY}"),
            "alternativesubject": format!("/person/{PERSON}"),
            "source": format!("https://ttd.apps.altinn.no/ttd/app1/instances/{PERSON_PARTY}/3ebaa1a2-9113-4905-ab26-a84fc3ec8ac{n}"),
        })
    };
    let input = format!("{}\n{}\n", app_event(1), app_event(2));
    let out = hendelse(&server, &ttd, &["publish", "--app", "-"], Some(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary(&stderr(&out)), (2, 2));
    let new_ids: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(new_ids.len(), 2, "{new_ids:?}");

    // The party and the person (a header) return them to the person, the app's route (the
    // orgs', as in Altinn) to the org.
    let person = server.person();
    for (token, args) in [
        (&person, vec!["query", "--party", "50002598"]),
        (&person, vec!["query", "--person", PERSON]),
        (&ttd, vec!["query", "--app", "ttd/app1"]),
        (
            &ttd,
            vec![
                "query",
                "--app",
                "ttd/app1",
                "--from",
                "2000-01-01T00:00:00Z",
            ],
        ),
    ] {
        let got = events(&ok(hendelse(&server, token, &args, None)));
        assert_eq!(event_ids(&got), new_ids, "{args:?}");
        assert_eq!(got[0]["resource"], "urn:altinn:resource:app_ttd_app1");
    }
    let none = ok(hendelse(
        &server,
        &ttd,
        &[
            "query",
            "--app",
            "ttd/app1",
            "--type",
            "app.instance.deleted",
        ],
        None,
    ));
    assert_eq!(none, "");
}

#[test]
fn query_follows_next_across_pages_and_applies_the_filters() {
    let server = Server::start();
    let ttd = server.ttd();
    let mut batch = Vec::new();
    for i in 0..40 {
        let kind = if i % 2 == 0 {
            "no.example.even"
        } else {
            "no.example.odd"
        };
        let source = format!("https://example.com/s{}", i % 4);
        let subject = if i % 5 == 0 {
            "urn:altinn:person:identifier-no:07124912037"
        } else {
            ORG_SUBJECT
        };
        batch.push(event_with(&format!("q{i:02}"), kind, &source, subject).to_string());
    }
    ok(hendelse(
        &server,
        &ttd,
        &["publish", "-"],
        Some(&(batch.join("\n") + "\n")),
    ));
    let query = |extra: &[&str]| {
        let mut args = vec!["query", "--resource", RESOURCE, "--size", "3"];
        args.extend_from_slice(extra);
        event_ids(&events(&ok(hendelse(&server, &ttd, &args, None))))
    };
    let expect = |pred: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..40)
            .filter(|i| pred(*i))
            .map(|i| format!("q{i:02}"))
            .collect()
    };
    // 40 events in pages of 3: every one, once, in order.
    assert_eq!(query(&[]), expect(&|_| true));
    assert_eq!(query(&["--after", "q09"]), expect(&|i| i > 9));
    assert_eq!(
        query(&["--type", "no.example.odd"]),
        expect(&|i| i % 2 == 1)
    );
    assert_eq!(
        query(&["--type", "no.example.odd", "--type", "no.example.even"]),
        expect(&|_| true)
    );
    assert_eq!(
        query(&[
            "--source",
            "https://example.com/s1",
            "--source",
            "https://example.com/s2"
        ]),
        expect(&|i| i % 4 == 1 || i % 4 == 2)
    );
    assert_eq!(
        query(&["--source", "https://example.com/%", "--type", "%even"]),
        expect(&|i| i % 2 == 0)
    );
    assert_eq!(
        query(&["--subject", "urn:altinn:person:identifier-no:07124912037"]),
        expect(&|i| i % 5 == 0)
    );
    assert_eq!(
        query(&["--to", "2000-01-01T00:00:00Z"]),
        Vec::<String>::new()
    );
    assert_eq!(
        query(&["--from", "2000-01-01T00:00Z", "--after", "q35"]),
        expect(&|i| i > 35)
    );
    assert_eq!(
        query(&["--from", "2999-01-01T00:00Z"]),
        Vec::<String>::new()
    );
}

#[test]
fn query_follow_keeps_polling_for_new_events() {
    let server = Server::start();
    let ttd = server.ttd();
    publish_event(&server, &ttd, "before");
    let mut follow = Running::start(
        &server.url,
        &ttd,
        &[
            "query",
            "--resource",
            RESOURCE,
            "--follow",
            "--interval",
            "0.2",
        ],
    );
    assert_eq!(follow.next_event()["id"], "before");
    let input: String = (0..3)
        .map(|i| format!("{}\n", event(&format!("later-{i}"))))
        .collect();
    ok(hendelse(&server, &ttd, &["publish", "-"], Some(&input)));
    for i in 0..3 {
        assert_eq!(follow.next_event()["id"], format!("later-{i}"));
    }
}

#[test]
fn errors_exit_non_zero_with_the_problem_detail_on_one_line() {
    let server = Server::start();
    let ttd = server.ttd();

    let line = fails(hendelse(
        &server,
        "not-a-token",
        &["query", "--resource", RESOURCE],
        None,
    ));
    assert!(line.starts_with("hendelse: 401 Unauthorized: "), "{line}");
    let expired = server.token(&[
        "--org",
        "ttd",
        "--scope",
        common::SUBSCRIBE,
        "--ttl",
        "-600",
    ]);
    let line = fails(hendelse(
        &server,
        &expired,
        &["subscriptions", "list"],
        None,
    ));
    assert!(line.starts_with("hendelse: 401 Unauthorized: "), "{line}");

    let mut invalid = event("bad");
    invalid.as_object_mut().unwrap().remove("source");
    let line = fails(hendelse(
        &server,
        &ttd,
        &["publish", "--event", &invalid.to_string()],
        None,
    ));
    assert!(
        line.starts_with("hendelse: 400 Bad Request: the event is not valid:")
            && line.contains("source"),
        "{line}"
    );

    // A bad event after good ones: what was published before it is said, and is in the store.
    let mut input: String = (0..5)
        .map(|i| format!("{}\n", event(&format!("ok-{i}"))))
        .collect();
    input.push_str(&format!("{invalid}\n"));
    let line = fails(hendelse(
        &server,
        &ttd,
        &["publish", "-", "--batch", "5"],
        Some(&input),
    ));
    assert!(
        line.contains(" not published (")
            && line.contains("400 Bad Request: the event is not valid:"),
        "{line}"
    );
    // Batches are all or nothing: whatever was not published before the bad one's batch.
    let published: usize = line
        .split(" not published (")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));

    // Not JSON: named by line, before anything is sent.
    let line = fails(hendelse(
        &server,
        &ttd,
        &["publish", "-"],
        Some("{\"a\":\n"),
    ));
    assert!(
        line.starts_with("hendelse: standard input line 1:"),
        "{line}"
    );

    // The person may not publish: 403 with the reason.
    let line = fails(hendelse(
        &server,
        &server.person(),
        &["publish", "--event", &event("nope").to_string()],
        None,
    ));
    assert!(line.starts_with("hendelse: 403 Forbidden: "), "{line}");

    // A query the API refuses: its own words.
    let line = fails(hendelse(
        &server,
        &ttd,
        &["query", "--resource", "not-a-resource"],
        None,
    ));
    assert!(
        line.contains("400 Bad Request: The 'resource' parameter must start with"),
        "{line}"
    );

    let line = fails(hendelse(
        &server,
        &ttd,
        &["subscriptions", "get", "999999"],
        None,
    ));
    assert!(line.starts_with("hendelse: 404 Not Found"), "{line}");

    // Nobody listening.
    let closed = format!("http://127.0.0.1:{}", free_port());
    for args in [
        &["query", "--resource", RESOURCE][..],
        &["publish", "--event", "{\"id\":\"x\"}"],
        &["tail", "--resource", RESOURCE],
        &["subscriptions", "list"],
    ] {
        let line = fails(run(&closed, &ttd, args, None));
        assert!(
            line.starts_with(&format!("hendelse: cannot reach {closed}: ")),
            "{args:?}: {line}"
        );
    }
    // Nothing in the store but the good events the message named.
    let stored = event_ids(&events(&ok(hendelse(
        &server,
        &ttd,
        &["query", "--resource", RESOURCE],
        None,
    ))));
    let expected: Vec<String> = (0..published).map(|i| format!("ok-{i}")).collect();
    assert_eq!(stored, expected);
}

/// Async only for the receiver and the waits: the CLI runs are blocking, which is fine on the
/// test's own thread (the runtime's workers serve the receiver meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_created_listed_delivered_and_deleted() {
    let server = Server::start_delivering(&[]);
    let ttd = server.ttd();
    let receiver = Receiver::start().await;

    let created: Value = serde_json::from_str(&ok(hendelse(
        &server,
        &ttd,
        &[
            "subscriptions",
            "create",
            "--endpoint",
            &receiver.url("/hook"),
            "--resource",
            RESOURCE,
            "--type",
            "no.example.%",
            "--subject",
            ORG_SUBJECT,
            "--include-subunits",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ],
        None,
    )))
    .expect("create prints JSON");
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["resourceFilter"], RESOURCE);
    assert_eq!(created["typeFilter"], "no.example.%");
    assert_eq!(created["includeSubunits"], true);
    assert_eq!(created["hasSecret"], true);
    let id_text = id.to_string();

    // Validated once the receiver answered the handshake.
    eventually("the subscription to be validated", PATIENCE, async || {
        let listed: Value = serde_json::from_str(&ok(hendelse(
            &server,
            &ttd,
            &["subscriptions", "list"],
            None,
        )))
        .unwrap();
        assert_eq!(listed["count"], 1);
        assert_eq!(listed["subscriptions"][0]["id"], id);
        if listed["subscriptions"][0]["validated"] == true {
            Ok(())
        } else {
            Err(listed.to_string())
        }
    })
    .await;

    publish_event(&server, &ttd, "pushed");
    let delivered = eventually("pushed to be delivered", PATIENCE, async || {
        receiver
            .deliveries_on("/hook")
            .into_iter()
            .find(|hit| hit.event_id() == "pushed")
            .ok_or_else(|| format!("received: {:?}", receiver.hits()))
    })
    .await;
    assert_eq!(delivered.event, event("pushed"));

    eventually("the delivery to be listed", PATIENCE, async || {
        let deliveries: Value = serde_json::from_str(&ok(hendelse(
            &server,
            &ttd,
            &[
                "subscriptions",
                "deliveries",
                &id_text,
                "--state",
                "delivered",
            ],
            None,
        )))
        .unwrap();
        let text = deliveries.to_string();
        if text.contains("\"pushed\"") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let dead: Value = serde_json::from_str(&ok(hendelse(
        &server,
        &ttd,
        &["subscriptions", "deliveries", &id_text, "--state", "dead"],
        None,
    )))
    .unwrap();
    assert!(!dead.to_string().contains("\"pushed\""), "{dead}");
    let redriven: Value = serde_json::from_str(&ok(hendelse(
        &server,
        &ttd,
        &["subscriptions", "redrive", &id_text],
        None,
    )))
    .unwrap();
    assert_eq!(redriven["requeued"], 0);

    let got: Value = serde_json::from_str(&ok(hendelse(
        &server,
        &ttd,
        &["subscriptions", "get", &id_text],
        None,
    )))
    .unwrap();
    assert_eq!(got["id"], id);
    // Pretty-printed for people.
    assert!(
        ok(hendelse(
            &server,
            &ttd,
            &["subscriptions", "get", &id_text],
            None
        ))
        .contains("\n  \"")
    );

    ok(hendelse(
        &server,
        &ttd,
        &["subscriptions", "delete", &id_text],
        None,
    ));
    let listed: Value = serde_json::from_str(&ok(hendelse(
        &server,
        &ttd,
        &["subscriptions", "list"],
        None,
    )))
    .unwrap();
    assert_eq!(listed["count"], 0);
    let line = fails(hendelse(
        &server,
        &ttd,
        &["subscriptions", "delete", &id_text],
        None,
    ));
    assert!(line.starts_with("hendelse: 404 Not Found"), "{line}");

    // The API's rules come back as one line.
    let line = fails(hendelse(
        &server,
        &ttd,
        &[
            "subscriptions",
            "create",
            "--endpoint",
            &receiver.url("/hook"),
        ],
        None,
    ));
    assert!(line.starts_with("hendelse: 400 Bad Request: "), "{line}");
}

#[test]
fn tail_prints_new_events_and_resumes_after_a_restart() {
    let server = Server::start();
    let ttd = server.ttd();
    publish_event(&server, &ttd, "start");
    // From `start` on, so nothing published after the tail started can be missed.
    let mut tail = Running::start(
        &server.url,
        &ttd,
        &["tail", "--resource", RESOURCE, "--after", "start"],
    );
    let first: String = (0..5)
        .map(|i| format!("{}\n", event(&format!("live-{i}"))))
        .collect();
    ok(hendelse(&server, &ttd, &["publish", "-"], Some(&first)));
    let mut last = String::new();
    for i in 0..5 {
        let e = tail.next_event();
        assert_eq!(e, event(&format!("live-{i}")));
        last = e["id"].as_str().unwrap().to_owned();
    }
    drop(tail);

    // Published while nobody tails: a tail from the last id seen gets exactly those.
    let second: String = (0..5)
        .map(|i| format!("{}\n", event(&format!("gap-{i}"))))
        .collect();
    ok(hendelse(&server, &ttd, &["publish", "-"], Some(&second)));
    let mut tail = Running::start(
        &server.url,
        &ttd,
        &["tail", "--resource", RESOURCE, "--after", &last],
    );
    for i in 0..5 {
        assert_eq!(tail.next_event()["id"], format!("gap-{i}"));
    }
    publish_event(&server, &ttd, "after-gap");
    assert_eq!(tail.next_event()["id"], "after-gap");

    // Filters apply to the stream too.
    let mut odd = Running::start(
        &server.url,
        &ttd,
        &[
            "tail",
            "--resource",
            RESOURCE,
            "--after",
            "start",
            "--type",
            "no.example.odd",
        ],
    );
    let mixed = [
        event_with(
            "m1",
            "no.example.even",
            "https://example.com/m",
            ORG_SUBJECT,
        ),
        event_with("m2", "no.example.odd", "https://example.com/m", ORG_SUBJECT),
    ];
    let input: String = mixed.iter().map(|e| format!("{e}\n")).collect();
    ok(hendelse(&server, &ttd, &["publish", "-"], Some(&input)));
    assert_eq!(odd.next_event()["id"], "m2");

    // A refused stream is an error like any other.
    let line = fails(hendelse(
        &server,
        "not-a-token",
        &["tail", "--resource", RESOURCE],
        None,
    ));
    assert!(line.starts_with("hendelse: 401 Unauthorized: "), "{line}");
}

#[test]
fn tail_reconnects_after_a_dropped_connection_without_losing_events() {
    let server = Server::start();
    let ttd = server.ttd();
    publish_event(&server, &ttd, "start");
    let proxy = Proxy::start(&server.url);
    let mut tail = Running::start(
        &proxy.url(),
        &ttd,
        &["tail", "--resource", RESOURCE, "--after", "start"],
    );
    publish_event(&server, &ttd, "before-drop");
    assert_eq!(tail.next_event()["id"], "before-drop");

    // The connection breaks; what is published meanwhile arrives after the reconnect, once.
    proxy.cut();
    let gap: String = (0..3)
        .map(|i| format!("{}\n", event(&format!("dropped-{i}"))))
        .collect();
    ok(hendelse(&server, &ttd, &["publish", "-"], Some(&gap)));
    for i in 0..3 {
        assert_eq!(tail.next_event()["id"], format!("dropped-{i}"));
    }
    publish_event(&server, &ttd, "after-reconnect");
    assert_eq!(tail.next_event()["id"], "after-reconnect");
    assert!(proxy.connections() >= 2, "the tail connected again");
}

/// A long-running `hendelse` (`tail`, `query --follow`) whose stdout lines are read as they
/// come; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(url: &str, token: &str, args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--url", url, "--token", token])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hendelse");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The next event printed; panics after `PATIENCE` without one.
    fn next_event(&mut self) -> Value {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}")),
            Err(e) => {
                let status = self.child.try_wait();
                panic!("no event printed ({e}); process: {status:?}")
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on loopback in front of the server whose open connections the test can cut.
struct Proxy {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(server_url: &str) -> Proxy {
        let upstream: SocketAddr = server_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("server address");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tracked, count) = (open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tracked.lock().unwrap().push(client.try_clone().unwrap());
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            addr,
            open,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Breaks every connection open now.
    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}
