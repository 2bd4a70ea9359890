//! The query semantics of DESIGN §2 through `/events/api/v1/app/party`,
//! `/events/api/v1/app/{org}/{app}` and `/events/api/v1/events`: the `after` cursor, `from`/`to`,
//! party/unit/person, `source`/`type` patterns, `size`, the `next` link, and authorization before
//! the page limit.

use crate::common::{
    PERSON, RESOURCE, SUBSCRIBE, Server, event_ids, follow_pages, get_request, get_with, page_ids,
    publish_app, publish_batch_ok, send,
};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::Url;
use serde_json::{Value, json};

/// Pages any cursor walk in these tests may take before it counts as stuck.
const MAX_PAGES: usize = 2_000;

/// A header, or a query parameter, as name and value.
type Header<'a> = (&'a str, &'a str);
/// A query parameter with a computed value.
type Param = (&'static str, String);

// ---------------------------------------------------------------------------------------------
// Helpers

/// An app-style event of `urn:altinn:resource:app_ttd_{app}` about `party`.
fn app_event(app: &str, party: i64, alternative: Option<&str>, id: &str, kind: &str) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("https://ttd.apps.altinn.no/ttd/{app}/instances/{party}/{id}"),
        "type": kind,
        "subject": format!("/party/{party}"),
        "resource": format!("urn:altinn:resource:app_ttd_{app}"),
        "resourceinstance": format!("{party}/{id}"),
    });
    if let Some(alt) = alternative {
        event["alternativesubject"] = json!(alt);
    }
    event
}

/// Publishes events as batches of at most 400 and asserts success.
async fn publish_all(server: &Server, token: &str, events: &[Value]) {
    for chunk in events.chunks(400) {
        publish_batch_ok(server, token, chunk).await;
    }
}

/// A query string with every value percent-encoded.
fn qs(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn id_list(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// GET `path` (relative to the server); status, `next` and body.
async fn fetch(
    server: &Server,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    get_with(&server.at(path), token, headers).await
}

/// Asserts 400 problem details with exactly this `detail`.
async fn assert_bad_request(
    server: &Server,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    detail: &str,
) {
    let answer = send(get_request(&server.at(path), token, headers)).await;
    assert_eq!(answer.status, 400, "{path}");
    assert_eq!(answer.content_type(), "application/problem+json", "{path}");
    let problem = &answer.body;
    assert_eq!(problem["status"], 400, "{path}: {problem}");
    assert_eq!(problem["title"], "Bad Request", "{path}: {problem}");
    if !detail.is_empty() {
        assert_eq!(problem["detail"], detail, "{path}: {problem}");
    } else {
        assert!(problem["detail"].is_string(), "{path}: {problem}");
    }
}

async fn follow_ids(first: &str, token: &str, headers: &[(&str, &str)]) -> Vec<String> {
    event_ids(
        &follow_pages(first, token, headers, MAX_PAGES)
            .await
            .0
            .concat(),
    )
}

// ---------------------------------------------------------------------------------------------
// after

/// `after` names an event id and reads what was registered after it, in registration order (not
/// id order), on all three routes.
#[tokio::test]
async fn after_is_an_event_id_and_reads_in_registration_order() {
    let server = Server::start();
    let ttd = server.ttd();
    let order = ["k", "b", "x", "a", "q", "c"];
    let events: Vec<Value> = order
        .iter()
        .map(|id| {
            app_event(
                "cursor",
                50002598,
                Some("/person/07124912037"),
                id,
                "app.instance.created",
            )
        })
        .collect();
    publish_all(&server, &ttd, &events).await;

    let routes = [
        "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_cursor",
        "/events/api/v1/app/ttd/cursor?unused=1",
        "/events/api/v1/app/party?party=50002598",
    ];
    for route in routes {
        let (status, _, body) = fetch(&server, &ttd, &format!("{route}&after=0"), &[]).await;
        assert_eq!(status, 200, "{route}: {body}");
        assert_eq!(page_ids(&body), id_list(&order), "{route} after=0");

        let (_, _, body) = fetch(&server, &ttd, &format!("{route}&after=x"), &[]).await;
        assert_eq!(
            page_ids(&body),
            id_list(&["a", "q", "c"]),
            "{route} after=x"
        );

        let (status, next, body) = fetch(&server, &ttd, &format!("{route}&after=c"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!([]), "{route}: nothing after the last event");
        let next = Url::parse(&next.expect("next on an empty page")).expect("absolute URL");
        assert!(
            next.query_pairs().any(|(k, v)| k == "after" && v == "c"),
            "{route}: next keeps after: {next}"
        );

        // An id that is not in the store reads from the start, as Altinn does.
        let (_, _, body) = fetch(&server, &ttd, &format!("{route}&after=no-such-id"), &[]).await;
        assert_eq!(page_ids(&body), id_list(&order), "{route} after=unknown");
    }

    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_cursor",
        &[],
        "The 'after' parameter must be defined.",
    )
    .await;
    assert_bad_request(&server, &ttd, "/events/api/v1/events?after=0", &[], "").await;
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/party?party=50002598",
        &[],
        "The 'From' or 'After' parameter must be defined.",
    )
    .await;
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/ttd/cursor",
        &[],
        "The 'From' or 'After' parameter must be defined.",
    )
    .await;
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/ttd/cursor?after=a&after=b",
        &[],
        "",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// from / to

async fn publish_app_event(server: &Server, token: &str, app: &str) -> (String, DateTime<Utc>) {
    let event = json!({
        "specversion": "1.0",
        "type": "app.instance.created",
        "subject": "/party/50002598",
        "alternativesubject": "/person/07124912037",
        "source": format!(
            "https://ttd.apps.altinn.no/ttd/{app}/instances/50002598/{}",
            uuid::Uuid::new_v4()
        ),
    });
    let response = publish_app(server, token, &event).await;
    assert_eq!(response.status(), 201);
    let id: String = response.json().await.expect("id");
    // The server's `time` of the event: set before the event was registered.
    let (status, _, body) = fetch(
        server,
        token,
        &format!("/events/api/v1/app/ttd/{app}?after=0&size=1000"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let event = body
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["id"] == id.as_str())
        .expect("the event just published")
        .clone();
    let time = DateTime::parse_from_rfc3339(event["time"].as_str().expect("time"))
        .expect("RFC 3339")
        .with_timezone(&Utc);
    (id, time)
}

fn short_form(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// `from`/`to` bound the registration time as instants (any offset, Altinn's short form), and a
/// time zone is required.
#[tokio::test]
async fn from_and_to_bound_the_registration_time() {
    let server = Server::start();
    let ttd = server.ttd();
    // A is registered before B's `time` is taken (B is sent after A is acknowledged), and B is
    // registered at or after its own `time`: so B's time separates the two registrations.
    let (a, _) = publish_app_event(&server, &ttd, "timed").await;
    let (b, b_time) = publish_app_event(&server, &ttd, "timed").await;
    let micros = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let plus_five = |t: DateTime<Utc>| {
        t.with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).expect("offset"))
            .to_rfc3339_opts(SecondsFormat::Micros, false)
    };
    let just_before_b = b_time - Duration::microseconds(1);
    let long_ago = Utc::now() - Duration::days(1);
    let later = Utc::now() + Duration::minutes(3);

    let cases: Vec<(Vec<Param>, Vec<String>)> = vec![
        (vec![("from", micros(b_time))], vec![b.clone()]),
        (vec![("from", plus_five(b_time))], vec![b.clone()]),
        (
            vec![("after", "0".into()), ("to", micros(just_before_b))],
            vec![a.clone()],
        ),
        (
            vec![("after", "0".into()), ("to", plus_five(just_before_b))],
            vec![a.clone()],
        ),
        (
            vec![("from", micros(long_ago)), ("to", micros(just_before_b))],
            vec![a.clone()],
        ),
        (
            vec![("from", micros(b_time)), ("to", micros(later))],
            vec![b.clone()],
        ),
        // Altinn's short form, without seconds.
        (
            vec![("from", short_form(long_ago))],
            vec![a.clone(), b.clone()],
        ),
        (vec![("from", short_form(later))], vec![]),
        // The form of Altinn's own examples: a space between date and time.
        (
            vec![("from", long_ago.format("%Y-%m-%d %H:%M:%SZ").to_string())],
            vec![a.clone(), b.clone()],
        ),
        (
            vec![("after", "0".into()), ("to", short_form(long_ago))],
            vec![],
        ),
        (
            vec![("after", "0".into()), ("to", short_form(later))],
            vec![a.clone(), b.clone()],
        ),
        // `after` and `from` together: both apply.
        (
            vec![("after", a.clone()), ("from", short_form(long_ago))],
            vec![b.clone()],
        ),
    ];
    let routes = [
        "/events/api/v1/app/ttd/timed?",
        "/events/api/v1/app/party?party=50002598&",
        "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_timed&",
    ];
    for route in routes {
        for (params, expected) in &cases {
            let mut pairs: Vec<(&str, &str)> =
                params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if route.contains("/events?") && !params.iter().any(|(k, _)| *k == "after") {
                pairs.push(("after", "0"));
            }
            let path = format!("{route}{}", qs(&pairs));
            let (status, _, body) = fetch(&server, &ttd, &path, &[]).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(&page_ids(&body), expected, "{path}");
        }
        // A `+` offset that was not percent-encoded arrives as a space; it still means `+`.
        let raw = plus_five(b_time);
        let path = format!("{route}after=0&from={raw}");
        let (status, _, body) = fetch(&server, &ttd, &path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(page_ids(&body), vec![b.clone()], "{path}");

        for bad in [
            "from=2023-02-16T18:00:00",
            "from=2023-02-16T18:00",
            "to=2023-02-16T18:00:00.123",
            "from=yesterday",
            "to=2023-02-30T18:00Z",
        ] {
            let path = format!("{route}after=0&{bad}");
            assert_bad_request(&server, &ttd, &path, &[], "").await;
        }
    }
    // Altinn's texts for a missing time zone.
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/ttd/timed?from=2023-02-16T18:00:00",
        &[],
        "The 'From' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC",
    )
    .await;
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/ttd/timed?after=0&to=2023-02-16T18:00",
        &[],
        "The 'To' parameter must specify timezone. E.g. 2022-07-07T11:00:53.3917Z for UTC",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// party, unit, person

#[tokio::test]
async fn party_unit_and_person_select_the_party() {
    let server = Server::start();
    let ttd = server.ttd();
    let events = [
        app_event("parties", 50002598, Some("/person/07124912037"), "p1", "t"),
        app_event(
            "parties",
            50001337,
            Some("/organisation/991825827"),
            "p2",
            "t",
        ),
        app_event(
            "parties",
            50004444,
            Some("/organisation/912345678"),
            "p3",
            "t",
        ),
        app_event("parties", 50003333, Some("/person/01017012345"), "p4", "t"),
        app_event("parties", 50002598, None, "p5", "t"),
    ];
    publish_all(&server, &ttd, &events).await;

    let cases: [(&str, &[Header], &[&str]); 7] = [
        ("party=50002598", &[], &["p1", "p5"]),
        ("party=50004444", &[], &["p3"]),
        ("unit=991825827", &[], &["p2"]),
        ("unit=912345678", &[], &["p3"]),
        ("", &[("person", "01017012345")], &["p4"]),
        ("", &[("person", PERSON)], &["p1"]),
        ("party=50009999", &[], &[]),
    ];
    for (query, headers, expected) in cases {
        for route in ["/events/api/v1/app/party", "/events/api/v1/app/ttd/parties"] {
            let path = format!("{route}?after=0&{query}");
            let (status, _, body) = fetch(&server, &ttd, &path, headers).await;
            assert_eq!(status, 200, "{path} {headers:?}: {body}");
            assert_eq!(page_ids(&body), id_list(expected), "{path} {headers:?}");
        }
    }
    // The end user reads their own events through the person header.
    let me = server.person();
    let (status, _, body) = fetch(
        &server,
        &me,
        "/events/api/v1/app/party?after=0",
        &[("person", PERSON)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page_ids(&body), id_list(&["p1"]));
    // /app/{org}/{app} needs no party.
    let (_, _, body) = fetch(&server, &ttd, "/events/api/v1/app/ttd/parties?after=0", &[]).await;
    assert_eq!(page_ids(&body), id_list(&["p1", "p2", "p3", "p4", "p5"]));
}

#[tokio::test]
async fn party_unit_and_person_errors_use_altinns_texts() {
    let server = Server::start();
    let ttd = server.ttd();
    let person = [("person", PERSON)];
    let cases: [(&str, &[Header], &str); 10] = [
        (
            "after=0",
            &[],
            "Subject must be specified using either query params party or unit or header value person.",
        ),
        (
            "party=50002598",
            &[],
            "The 'From' or 'After' parameter must be defined.",
        ),
        (
            "after=0&party=50002598&unit=991825827",
            &[],
            "Only one of 'Party' or 'Unit' can be defined.",
        ),
        (
            "after=0&party=50002598",
            &person,
            "Only one of 'Party' or 'Person' can be defined.",
        ),
        (
            "after=0&unit=991825827",
            &person,
            "Only one of 'Unit' or 'Person' can be defined.",
        ),
        (
            "after=0&unit=12345678",
            &[],
            "Value of 'Unit' needs to be exactly 9 digits.",
        ),
        (
            "after=0&unit=9918258270",
            &[],
            "Value of 'Unit' needs to be exactly 9 digits.",
        ),
        (
            "after=0&unit=99182582x",
            &[],
            "Value of 'Unit' needs to be exactly 9 digits.",
        ),
        (
            "after=0",
            &[("person", "0712491203")],
            "Value of 'Person' needs to be exactly 11 digits.",
        ),
        (
            "after=0",
            &[("person", "0712491203x")],
            "Value of 'Person' needs to be exactly 11 digits.",
        ),
    ];
    for (query, headers, detail) in cases {
        let path = format!("/events/api/v1/app/party?{query}");
        assert_bad_request(&server, &ttd, &path, headers, detail).await;
    }
    // Combinations and formats are checked on /app/{org}/{app} too (a subject is optional there).
    for (query, headers, detail) in &cases[2..] {
        let path = format!("/events/api/v1/app/ttd/app1?{query}");
        assert_bad_request(&server, &ttd, &path, headers, detail).await;
    }
    assert_bad_request(
        &server,
        &ttd,
        "/events/api/v1/app/party?after=0&party=abc",
        &[],
        "",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// source and type

const FILTER_RESOURCE: &str = "urn:altinn:resource:app_ttd_filters";

fn filter_event(id: &str, source: &str, kind: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": kind,
        "subject": "/party/50002598",
        "alternativesubject": "/person/07124912037",
        "resource": FILTER_RESOURCE,
    })
}

/// `source` and `type` repeat; `%` matches any run, `_` and `\` match themselves, case is ignored.
#[tokio::test]
async fn source_and_type_patterns() {
    let server = Server::start();
    let ttd = server.ttd();
    let base = "https://ttd.apps.altinn.no/ttd";
    let events = [
        filter_event(
            "e1",
            &format!("{base}/app_1/instances/50002598/1"),
            "app.instance.created",
        ),
        filter_event(
            "e2",
            &format!("{base}/appX1/instances/50002598/2"),
            "app.instance.process.completed",
        ),
        filter_event(
            "e3",
            &format!("{base}/other/instances/50002598/3"),
            "app.instance.created",
        ),
        filter_event(
            "e4",
            &format!("{base}/app_1/instances/50002598/4"),
            r"Custom\Type",
        ),
        filter_event(
            "e5",
            &format!("{base}/app_1/instances/50002598/5"),
            "CustomXType",
        ),
        filter_event(
            "e6",
            "https://TTD.apps.altinn.no/TTD/App_1/instances/50002598/6",
            "app.instance.CREATED",
        ),
    ];
    publish_all(&server, &ttd, &events).await;

    let app_1 = format!("{base}/app_1/%");
    let exact = format!("{base}/app_1/instances/50002598/1");
    let other = format!("{base}/other/%");
    let app_any = format!("{base}/app%");
    let app_underscore = format!("{base}/app_%");
    let upper = app_1.to_uppercase();
    let cases: Vec<(Vec<Header>, &[&str])> = vec![
        (vec![("source", &app_1)], &["e1", "e4", "e5", "e6"]),
        (vec![("source", &upper)], &["e1", "e4", "e5", "e6"]),
        (vec![("source", &exact)], &["e1"]),
        (
            vec![("source", &app_1), ("source", &other)],
            &["e1", "e3", "e4", "e5", "e6"],
        ),
        (vec![("source", "%/APPX1/%")], &["e2"]),
        (vec![("source", &app_any)], &["e1", "e2", "e4", "e5", "e6"]),
        (vec![("source", &app_underscore)], &["e1", "e4", "e5", "e6"]),
        (vec![("source", "%")], &["e1", "e2", "e3", "e4", "e5", "e6"]),
        (vec![("source", "https://nowhere.example/%")], &[]),
        (vec![("type", "app.instance.created")], &["e1", "e3", "e6"]),
        (
            vec![
                ("type", "app.instance.created"),
                ("type", "APP.INSTANCE.PROCESS.COMPLETED"),
            ],
            &["e1", "e2", "e3", "e6"],
        ),
        (vec![("type", "app.%")], &["e1", "e2", "e3", "e6"]),
        (vec![("type", r"Custom\Type")], &["e4"]),
        (vec![("type", r"custom\%")], &["e4"]),
        (vec![("type", "custom_type")], &[]),
        (vec![("type", "Custom%Type")], &["e4", "e5"]),
        (
            vec![("source", &app_1), ("type", "app.instance.created")],
            &["e1", "e6"],
        ),
    ];
    let routes = [
        format!("/events/api/v1/events?resource={FILTER_RESOURCE}&after=0&"),
        "/events/api/v1/app/party?party=50002598&after=0&".to_owned(),
        "/events/api/v1/app/ttd/filters?after=0&".to_owned(),
    ];
    for route in &routes {
        for (pairs, expected) in &cases {
            let path = format!("{route}{}", qs(pairs));
            let (status, next, body) = fetch(&server, &ttd, &path, &[]).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(page_ids(&body), id_list(expected), "{path}");
            // The filters survive into `next`.
            let next = Url::parse(&next.expect("next")).expect("absolute");
            let kept: Vec<(String, String)> = next
                .query_pairs()
                .filter(|(k, _)| k == "source" || k == "type")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let sent: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(kept, sent, "{path}: next {next}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// size

#[tokio::test]
async fn size_defaults_to_50_is_clamped_on_events_and_checked_on_app_routes() {
    let server = Server::start();
    let ttd = server.ttd();
    let events: Vec<Value> = (0..1005)
        .map(|i| {
            app_event(
                "sizes",
                50002598,
                Some("/person/07124912037"),
                &format!("s{i:04}"),
                "t",
            )
        })
        .collect();
    publish_all(&server, &ttd, &events).await;

    let count = |body: &Value| body.as_array().expect("array").len();
    let generic = "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_sizes&after=0";
    for (size, expected) in [
        ("", 50),
        ("&size=0", 1),
        ("&size=-7", 1),
        ("&size=1", 1),
        ("&size=999", 999),
        ("&size=1000", 1000),
        ("&size=5000", 1000),
    ] {
        let (status, _, body) = fetch(&server, &ttd, &format!("{generic}{size}"), &[]).await;
        assert_eq!(status, 200, "{size}");
        assert_eq!(count(&body), expected, "/events {size}");
    }
    assert_bad_request(&server, &ttd, &format!("{generic}&size=abc"), &[], "").await;

    for route in [
        "/events/api/v1/app/ttd/sizes?after=0",
        "/events/api/v1/app/party?party=50002598&after=0",
    ] {
        for (size, expected) in [
            ("", 50),
            ("&size=1", 1),
            ("&size=7", 7),
            ("&size=1000", 1000),
            ("&size=5000", 1000),
        ] {
            let (status, _, body) = fetch(&server, &ttd, &format!("{route}{size}"), &[]).await;
            assert_eq!(status, 200, "{route}{size}");
            assert_eq!(count(&body), expected, "{route}{size}");
        }
        for size in ["0", "-1"] {
            assert_bad_request(
                &server,
                &ttd,
                &format!("{route}&size={size}"),
                &[],
                "The 'Size' parameter must be a number larger that 0.",
            )
            .await;
        }
        assert_bad_request(&server, &ttd, &format!("{route}&size=ten"), &[], "").await;
    }
}

// ---------------------------------------------------------------------------------------------
// next

/// Characters a percent-encoded query string may hold unencoded (form encoding: `+` for space).
fn is_encoded_query(query: &str) -> bool {
    query
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._*~%+=&".contains(&b))
}

#[tokio::test]
async fn next_is_always_present_absolute_and_percent_encoded() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();

    // Empty pages keep `after` (or start at 0).
    let empty = [
        (
            "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_next&after=0",
            "0",
            vec![],
        ),
        (
            "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_next&after=gone",
            "gone",
            vec![],
        ),
        (
            "/events/api/v1/app/party?from=2023-02-16T18:00Z",
            "0",
            vec![("person", PERSON)],
        ),
    ];
    for (path, after, headers) in empty {
        let (status, next, body) = fetch(&server, &me, path, &headers).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body, json!([]));
        let next = next.unwrap_or_else(|| panic!("{path}: no next on an empty page"));
        let url = Url::parse(&next).expect("absolute URL");
        assert_eq!(
            url.origin(),
            Url::parse(&server.url).expect("url").origin(),
            "{next}"
        );
        assert_eq!(url.path(), path.split('?').next().expect("path"));
        let afters: Vec<String> = url
            .query_pairs()
            .filter(|(k, _)| k == "after")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(afters, [after], "{next}");
    }

    // Ids and filters that need encoding.
    let awkward = [
        "id with space",
        "a&b=c",
        "slash/and?question#hash",
        "percent%41",
        "æøå",
        "plus+sign",
    ];
    let events: Vec<Value> = awkward
        .iter()
        .map(|id| {
            let mut e = app_event("next", 50002598, Some("/person/07124912037"), "x", "t.a");
            e["id"] = json!(id);
            e["source"] = json!("https://ttd.apps.altinn.no/ttd/next&more/instances/1");
            e
        })
        .collect();
    publish_all(&server, &ttd, &events).await;

    let pairs = [
        ("resource", "urn:altinn:resource:app_ttd_next"),
        ("source", "https://ttd.apps.altinn.no/ttd/next&more/%"),
        ("type", "t.a"),
        ("type", "t.b c"),
        ("after", "0"),
        ("size", "1"),
    ];
    let first = server.at(&format!("/events/api/v1/events?{}", qs(&pairs)));
    let mut url = first.clone();
    let mut seen = Vec::new();
    for _ in 0..=awkward.len() {
        let (status, next, body) = get_with(&url, &ttd, &[]).await;
        assert_eq!(status, 200, "{url}: {body}");
        let next = next.expect("next");
        assert!(
            next.starts_with(&server.at("/events/api/v1/events?")),
            "{next}"
        );
        let query = next.split_once('?').expect("query").1;
        assert!(is_encoded_query(query), "not percent-encoded: {next}");
        let parsed = Url::parse(&next).expect("absolute URL");
        let got: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let page = page_ids(&body);
        let expected_after = page
            .last()
            .cloned()
            .unwrap_or_else(|| seen.last().cloned().unwrap_or_else(|| "0".to_owned()));
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| {
                let v = if *k == "after" {
                    expected_after.clone()
                } else {
                    v.to_string()
                };
                (k.to_string(), v)
            })
            .collect();
        assert_eq!(got, expected, "{next}");
        if page.is_empty() {
            break;
        }
        seen.extend(page);
        url = next;
    }
    assert_eq!(seen, id_list(&awkward));

    // Behind a proxy: links use --public-url.
    let proxied = Server::start_with(&["--public-url", "https://events.example/"]);
    let (_, next, _) = fetch(
        &proxied,
        &proxied.ttd(),
        "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_next&after=0",
        &[],
    )
    .await;
    let next = next.expect("next");
    assert!(
        next.starts_with("https://events.example/events/api/v1/events?"),
        "{next}"
    );
}

/// Following `next` returns every event exactly once, in order, with pages of any size; polling
/// the last `next` then returns only what was published since.
#[tokio::test]
async fn following_next_returns_every_event_once_in_order_and_polling_continues() {
    let server = Server::start();
    let ttd = server.ttd();
    let events = |ids: std::ops::Range<usize>| -> Vec<Value> {
        ids.map(|i| {
            app_event(
                "follow",
                50002598,
                Some("/person/07124912037"),
                &format!("f{i}"),
                "t",
            )
        })
        .collect()
    };
    publish_all(&server, &ttd, &events(0..23)).await;
    let all: Vec<String> = (0..23).map(|i| format!("f{i}")).collect();

    let me = server.person();
    let routes: [(&str, &str, Vec<Header>); 3] = [
        (
            "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_follow&after=0",
            "",
            vec![],
        ),
        ("/events/api/v1/app/ttd/follow?after=0", "", vec![]),
        (
            "/events/api/v1/app/party?from=2020-01-01T00:00Z",
            "person",
            vec![("person", PERSON)],
        ),
    ];
    for (route, who, headers) in &routes {
        let token = if who.is_empty() { &ttd } else { &me };
        for size in [1, 4, 23, 50] {
            let first = server.at(&format!("{route}&size={size}"));
            let (pages, _) = follow_pages(&first, token, headers, MAX_PAGES).await;
            let got: Vec<String> = pages
                .iter()
                .flatten()
                .map(|e| e["id"].as_str().expect("id").to_owned())
                .collect();
            assert_eq!(got, all, "{first}");
            for (i, page) in pages.iter().enumerate() {
                if i + 1 < pages.len() {
                    assert_eq!(page.len(), size, "{first}: a short page before the end");
                }
            }
        }
    }

    // Poll the end of the log: new events, and only those, appear.
    let first = server.at(&format!("{}&size=5", routes[0].0));
    let (_, tail) = follow_pages(&first, &ttd, &[], MAX_PAGES).await;
    publish_all(&server, &ttd, &events(23..30)).await;
    let got = follow_ids(&tail, &ttd, &[]).await;
    assert_eq!(got, (23..30).map(|i| format!("f{i}")).collect::<Vec<_>>());
}

/// Ids are unique per source only. When several sources use the same id (or an event's id is `0`,
/// which as `after` means the start of the log), following `next` still returns every event
/// exactly once and reaches the end of the log.
#[tokio::test]
async fn following_next_terminates_when_sources_share_ids() {
    let server = Server::start();
    let ttd = server.ttd();
    let event = |id: &str, source: &str| {
        json!({"specversion": "1.0", "id": id, "source": format!("https://example.com/{source}"),
               "type": "t", "resource": RESOURCE,
               "subject": "urn:altinn:organization:identifier-no:991825827"})
    };
    let events = [
        event("X", "a"),
        event("Y", "a"),
        event("X", "b"),
        event("Z", "a"),
        event("X", "c"),
        event("0", "a"),
        event("Y", "b"),
    ];
    publish_all(&server, &ttd, &events).await;
    let key = |e: &Value| format!("{}@{}", e["id"], e["source"]);
    let mut expected: Vec<String> = events.iter().map(key).collect();

    for size in [1, 2, 3, 50] {
        let first = server.log_url(&format!("&size={size}"));
        let (pages, tail) = follow_pages(&first, &ttd, &[], MAX_PAGES).await;
        let got: Vec<String> = pages.iter().flatten().map(key).collect();
        assert_eq!(got, expected, "size {size}");

        // Polling from the end sees the next event with a repeated id, once.
        let extra = event("X", &format!("d{size}"));
        publish_all(&server, &ttd, std::slice::from_ref(&extra)).await;
        let (pages, _) = follow_pages(&tail, &ttd, &[], MAX_PAGES).await;
        let got: Vec<String> = pages.iter().flatten().map(key).collect();
        assert_eq!(got, vec![key(&extra)], "size {size}: polling the tail");
        expected.push(key(&extra));
    }
}

// ---------------------------------------------------------------------------------------------
// authorization before the page limit

/// A caller who may read only some events gets full pages of those: authorization is applied
/// before the page is cut, so the cursor never stalls on a window of unreadable events.
#[tokio::test]
async fn authorization_filters_before_the_page_limit() {
    let server = Server::start();
    let ttd = server.ttd();
    let me = server.person();

    // Generic events: the person reads their own and (through the registry) 991825827's.
    let subjects = [
        ("urn:altinn:person:identifier-no:07124912037", true),
        ("urn:altinn:organization:identifier-no:991825827", true),
        ("urn:altinn:organization:identifier-no:912345678", false),
        ("urn:altinn:person:identifier-no:01017012345", false),
    ];
    let mut events = Vec::new();
    let mut readable = Vec::new();
    // A long run of unreadable events first, then a mix.
    for i in 0..12 {
        events.push(json!({"specversion": "1.0", "id": format!("hidden{i}"),
            "source": "https://example.com/auth", "type": "t", "resource": RESOURCE,
            "subject": subjects[2 + i % 2].0}));
    }
    for i in 0..40 {
        let (subject, visible) = subjects[i % subjects.len()];
        let id = format!("g{i}");
        events.push(
            json!({"specversion": "1.0", "id": id, "source": "https://example.com/auth",
            "type": "t", "resource": RESOURCE, "subject": subject}),
        );
        if visible {
            readable.push(id);
        }
    }
    publish_all(&server, &ttd, &events).await;
    for size in [1, 3, 7] {
        let first = server.log_url(&format!("&size={size}"));
        let (pages, _) = follow_pages(&first, &me, &[], MAX_PAGES).await;
        let got: Vec<String> = pages
            .iter()
            .flatten()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(got, readable, "size {size}");
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), size, "size {size}: a short page before the end");
        }
    }
    // The owner reads everything, another org nothing.
    assert_eq!(
        follow_ids(&server.log_url("&size=10"), &ttd, &[])
            .await
            .len(),
        52
    );
    let skd = server.token(&["--org", "skd", "--scope", SUBSCRIBE]);
    let (status, _, body) = fetch(
        &server,
        &skd,
        &format!("/events/api/v1/events?resource={RESOURCE}&after=0"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));

    // App events: the person's own party, mixed with another person's party that carries the
    // same alternative subject.
    let mut app_events = Vec::new();
    let mut own = Vec::new();
    for i in 0..30 {
        let party = if i % 3 == 0 { 50002598 } else { 50003333 };
        let id = format!("a{i}");
        app_events.push(app_event(
            "mixed",
            party,
            Some("/person/07124912037"),
            &id,
            "t",
        ));
        if party == 50002598 {
            own.push(id);
        }
    }
    publish_all(&server, &ttd, &app_events).await;
    // (The orgs' route /app/{org}/{app} refuses a person outright: see security.)
    for (route, headers) in [("/events/api/v1/app/party?after=0", vec![("person", PERSON)])] {
        for size in [1, 2, 4] {
            let first = server.at(&format!("{route}&size={size}"));
            let (pages, _) = follow_pages(&first, &me, &headers, MAX_PAGES).await;
            let got: Vec<String> = pages
                .iter()
                .flatten()
                .map(|e| e["id"].as_str().expect("id").to_owned())
                .collect();
            assert_eq!(got, own, "{first}");
            for page in &pages[..pages.len() - 1] {
                assert_eq!(page.len(), size, "{first}: a short page before the end");
            }
        }
    }
    // Another person's party reads as a party without events.
    let (status, next, body) = fetch(
        &server,
        &me,
        "/events/api/v1/app/party?after=0&party=50003333",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));
    assert!(next.is_some());
    let stranger = server.other_person();
    let (_, _, body) = fetch(
        &server,
        &stranger,
        "/events/api/v1/app/party?after=0&party=50003333&size=1000",
        &[],
    )
    .await;
    assert_eq!(
        page_ids(&body).len(),
        20,
        "the other person reads their own party"
    );
}

// ---------------------------------------------------------------------------------------------
// /events: subject and alternative subject

#[tokio::test]
async fn events_filter_by_subject_and_alternative_subject_header() {
    let server = Server::start();
    let ttd = server.ttd();
    let event = |id: &str, subject: &str, alt: &str| {
        json!({"specversion": "1.0", "id": id, "source": "https://example.com/s", "type": "t",
               "resource": RESOURCE, "subject": subject, "alternativesubject": alt})
    };
    publish_all(
        &server,
        &ttd,
        &[
            event(
                "o1",
                "urn:altinn:organization:identifier-no:991825827",
                "/organisation/991825827",
            ),
            event(
                "o2",
                "urn:altinn:organization:identifier-no::991825827",
                "/organisation/991825827",
            ),
            event(
                "p1",
                "urn:altinn:person:identifier-no:07124912037",
                "/person/07124912037",
            ),
        ],
    )
    .await;
    let base = format!("/events/api/v1/events?resource={RESOURCE}&after=0");
    for (query, headers, expected) in [
        (
            "&subject=urn:altinn:organization:identifier-no:991825827",
            vec![],
            vec!["o1", "o2"],
        ),
        (
            "&subject=urn:altinn:organization:identifier-no::991825827",
            vec![],
            vec!["o1", "o2"],
        ),
        (
            "&subject=urn:altinn:person:identifier-no:07124912037",
            vec![],
            vec!["p1"],
        ),
        (
            "",
            vec![("Altinn-AlternativeSubject", "/person/07124912037")],
            vec!["p1"],
        ),
        (
            "",
            vec![("Altinn-AlternativeSubject", "/organisation/991825827")],
            vec!["o1", "o2"],
        ),
        ("&subject=urn:altinn:person:identifier-no:1", vec![], vec![]),
    ] {
        let path = format!("{base}{query}");
        let (status, _, body) = fetch(&server, &ttd, &path, &headers).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(page_ids(&body), id_list(&expected), "{path} {headers:?}");
    }
}
