//! Events come back exactly as they were published: every attribute, extension, `null` and `data`,
//! Dialogporten's events included. Publishing the same `source` + `id` again stores one event. App
//! events get their `id`, `time`, `resource` and `resourceinstance` from the server.

use crate::common::{
    EVENTS, ORG_SUBJECT, PERSON, PERSON_PARTY, RESOURCE, STRUCTURED, Server, follow_pages, get,
    get_request, get_with, header, post, publish, publish_app, publish_batch, publish_ok, send,
};
use serde_json::{Value, json};

/// The two examples of `seeds/dialogporten-events-reference.txt`, verbatim (comments included).
const DIALOG_CREATED: &str = r#"{
    "specversion": "1.0",

    // Unique event id
    "id": "91f2388f-bd8c-4647-8684-fd9f68af5b15",
    
    // See tables above for possible types
    "type": "dialogporten.dialog.created.v1",
    
    // Timestamp for when the event occured in Dialogporten
    "time": "2025-02-19T08:00:06.4014168Z",
    
    // urn:altinn:resource:{serviceResource}
    "resource": "urn:altinn:resource:super-simple-service", 
    
    // Dialog-ID
    "resourceinstance": "f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
    
    // Party
    "subject": "urn:altinn:organization:identifier-no::991825827",

    // URL to activity in Dialogporten
    "source": "https://platform.altinn.no/dialogporten/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
    
    // These are additional fields, if present in the dialog (all are optional).
    "data": { 
        "process": "urn:some:process:id",
        "precedingProcess": "urn:some:preceding:process:id"
    }
}"#;

const DIALOG_ACTIVITY: &str = r#"{
    "specversion": "1.0",

    // Unique event id
    "id": "91f2388f-bd8c-4647-8684-fd9f68af5b15",
    
    // See tables above for possible types
    "type": "dialogporten.dialog.activity.signature-provided.v1",
    
    // Timestamp for when the event occured in Dialogporten
    "time": "2025-02-20T13:04:02.6518542Z",
    
    // urn:altinn:resource:{serviceResource}
    "resource": "urn:altinn:resource:super-simple-service", 
    
    // Dialog-ID
    "resourceinstance": "f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
    
    // Party
    "subject": "urn:altinn:organization:identifier-no::991825827",

    // URL to activity in Dialogporten
    "source": "https://platform.altinn.no/dialogporten.no/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20/activities/21241c7e-819f-462b-b8a4-d5d32352311a",
    
    // These are additional fields, if present. Only the activityId entry is always present for events
    // within the dialogporten.dialog.activity-namespace of events. All other fields are optional.
    "data": { 
        "activityId": "21241c7e-819f-462b-b8a4-d5d32352311a",
        "extendedActivityType": "additional-info-received",
        "process": "urn:some:process:id",
        "precedingProcess": "urn:some:preceding:process:id"
    }
}"#;

/// Drops the whole-line `//` comments of the documentation's examples (a `//` inside a string, as
/// in `https://`, is never at the start of a line there).
fn strip_comments(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// POSTs raw JSON text as one structured event; returns status and body.
async fn publish_text(server: &Server, token: &str, text: &str) -> (u16, Value) {
    let response = post(server, token, EVENTS, STRUCTURED, text.to_owned()).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Reads one page of `/events` and returns the raw body text too.
async fn read_text(server: &Server, token: &str, query: &str) -> (u16, String) {
    let answer = send(get_request(
        &server.at(&format!("{EVENTS}?{query}")),
        token,
        &[],
    ))
    .await;
    if answer.status == 200 {
        assert_eq!(
            answer.content_type(),
            "application/cloudevents+json; charset=utf-8"
        );
    }
    (answer.status, answer.text)
}

fn page(body: &Value) -> Vec<Value> {
    body.as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"))
        .clone()
}

#[tokio::test]
async fn an_event_reads_back_attribute_for_attribute_and_byte_for_byte() {
    let server = Server::start();
    let ttd = server.ttd();
    // Odd spacing, attribute order, escapes and number forms on purpose: none of it may change.
    let text = r#"{"type":"no.example.everything",  "specversion" : "1.0","id":"everything-1",
        "source":"https://example.com/everything?x=1&y=%20", "subject":"urn:altinn:organization:identifier-no:991825827",
        "time":"2024-02-29T23:59:59.999999999+01:00","datacontenttype":"application/json",
        "dataschema":"https://example.com/schema.json","resource":"urn:altinn:resource:super-simple-service",
        "resourceinstance":"f4e6df3c-7434-44c3-875e-8dca1cdf0b20","alternativesubject":"/person/07124912037",
        "unknownext":"kept","flag":false,"count":-2147483648,"nothing":null,
        "data":{"text":"æøå \u00e6 \"quoted\" \\ / \n","float":1.0,"exp":1e3,"big":12345678901234567890,
                "list":[null,true,{},[]],"empty":""}}"#;
    let (status, body) = publish_text(&server, &ttd, text).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!("everything-1"));

    let expected: Value = serde_json::from_str(text).expect("json");
    for (reader, query) in [
        (ttd.clone(), format!("resource={RESOURCE}&after=0")),
        // The person may read the organisation 991825827's events of this resource.
        (
            server.person(),
            format!("resource={RESOURCE}&after=0&subject={ORG_SUBJECT}"),
        ),
    ] {
        let (status, raw) = read_text(&server, &reader, &query).await;
        assert_eq!(status, 200, "{raw}");
        let events: Vec<Value> = serde_json::from_str(&raw).expect("array");
        assert_eq!(events, vec![expected.clone()]);
        assert_eq!(raw, format!("[{}]", text.trim()), "not byte for byte");
    }
}

#[tokio::test]
async fn nulls_string_data_and_data_base64_read_back() {
    let server = Server::start();
    let ttd = server.ttd();
    let events = [
        json!({"specversion": "1.0", "id": "nulls", "source": "https://example.com/n", "type": "t",
               "resource": RESOURCE, "subject": null, "time": null, "datacontenttype": null,
               "dataschema": null, "resourceinstance": null, "alternativesubject": null,
               "myext": null, "data": null}),
        json!({"specversion": "1.0", "id": "text", "source": "https://example.com/n", "type": "t",
               "resource": RESOURCE, "datacontenttype": "text/plain", "data": "just text"}),
        json!({"specversion": "1.0", "id": "b64", "source": "https://example.com/n", "type": "t",
               "resource": RESOURCE, "datacontenttype": "application/octet-stream",
               "data_base64": "AAECAwQF/w=="}),
        json!({"specversion": "1.0", "id": "b64-and-null-data", "source": "https://example.com/n",
               "type": "t", "resource": RESOURCE, "data": null, "data_base64": "TWE="}),
        json!({"specversion": "1.0", "id": "scalar-data", "source": "https://example.com/n",
               "type": "t", "resource": RESOURCE, "data": 3.25}),
    ];
    for event in &events {
        publish_ok(&server, &ttd, event).await;
    }
    let (status, _, body) = get(&server.log_url(""), &ttd).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(page(&body), events.to_vec());
}

/// Dialogporten's examples (`identifier-no::` subjects, the same id under two sources) read back
/// unchanged by a person who has access to the organisation's party for that resource.
#[tokio::test]
async fn dialogporten_events_read_back_for_a_person_with_access() {
    let server = Server::start();
    let ttd = server.ttd();
    let mut published: Vec<Value> = Vec::new();
    for example in [DIALOG_CREATED, DIALOG_ACTIVITY] {
        let text = strip_comments(example);
        let event: Value = serde_json::from_str(&text).expect("the example is JSON");
        let (status, body) = publish_text(&server, &ttd, &text).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, event["id"]);
        published.push(event);
    }
    // Both are stored: the id is the same, the source is not.
    let person = server.person();
    for subject in [
        ORG_SUBJECT,
        "urn:altinn:organization:identifier-no::991825827",
    ] {
        let url = server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&subject={subject}&after=0"
        ));
        let (status, next, body) = get(&url, &person).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(page(&body), published, "subject {subject}");
        assert!(next.is_some(), "next header");
        // Following next reads each exactly once and stops.
        let (pages, _) = follow_pages(&url, &person, &[], 10).await;
        assert_eq!(pages.concat(), published);
    }
    // Without a subject filter the person sees them too (through the access row) ...
    let (_, _, body) = get(&server.log_url(""), &person).await;
    assert_eq!(page(&body), published);
    // ... and someone without access sees nothing.
    let stranger = server.other_person();
    let (status, _, body) = get(
        &server.at(&format!(
            "/events/api/v1/events?resource={RESOURCE}&subject={ORG_SUBJECT}&after=0"
        )),
        &stranger,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn republishing_the_same_source_and_id_stores_one_event() {
    let server = Server::start();
    let ttd = server.ttd();
    let first = json!({"specversion": "1.0", "id": "dup", "source": "https://example.com/a",
                       "type": "t", "resource": RESOURCE, "data": {"version": 1}});
    for _ in 0..2 {
        let response = publish(&server, &ttd, &first).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Value>().await.expect("json"), json!("dup"));
    }
    // Same source and id with other content: still success, the first version stays.
    let mut changed = first.clone();
    changed["data"] = json!({"version": 2});
    publish_ok(&server, &ttd, &changed).await;
    // Same id under another source is another event.
    let mut other_source = first.clone();
    other_source["source"] = json!("https://example.com/b");
    publish_ok(&server, &ttd, &other_source).await;
    // A batch repeating both, and a new one.
    let third = json!({"specversion": "1.0", "id": "new", "source": "https://example.com/a",
                       "type": "t", "resource": RESOURCE});
    let batch = [
        first.clone(),
        other_source.clone(),
        third.clone(),
        third.clone(),
    ];
    let response = publish_batch(&server, &ttd, &batch).await;
    assert_eq!(response.status(), 200);

    let (status, _, body) = get(&server.log_url(""), &ttd).await;
    assert_eq!(status, 200);
    assert_eq!(page(&body), vec![first, other_source, third]);
}

const APP_SOURCE: &str =
    "https://ttd.apps.altinn.no/ttd/app1/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc";

#[tokio::test]
async fn app_events_get_id_time_resource_and_resourceinstance_from_the_server() {
    let server = Server::start();
    let ttd = server.ttd();
    let sent = json!({
        "specversion": "1.0",
        "id": "client-chosen",
        "time": "2000-01-01T00:00:00Z",
        "resource": "urn:altinn:resource:something-else",
        "type": "app.instance.created",
        "subject": "/party/50002598",
        "alternativesubject": "/person/07124912037",
        "source": APP_SOURCE,
        "myext": "kept",
        "data": {"kept": [1, 2]}
    });
    let before = chrono::Utc::now();
    let response = publish_app(&server, &ttd, &sent).await;
    let after = chrono::Utc::now();
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location header")
        .to_owned();
    let id: Value = response.json().await.expect("JSON body");
    let id = id.as_str().expect("the id as a JSON string").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id {id}");
    assert_ne!(id, "client-chosen");
    assert!(location.ends_with(&id), "Location {location}");

    let readers = [
        (
            server.person(),
            "/events/api/v1/app/party?after=0&party=50002598".to_owned(),
            vec![],
        ),
        (
            server.person(),
            "/events/api/v1/app/party?after=0".to_owned(),
            vec![("person", PERSON)],
        ),
        (
            ttd.clone(),
            "/events/api/v1/app/ttd/app1?after=0".to_owned(),
            vec![],
        ),
        (
            ttd.clone(),
            "/events/api/v1/events?resource=urn:altinn:resource:app_ttd_app1&after=0".to_owned(),
            vec![],
        ),
    ];
    for (token, path, headers) in readers {
        let (status, _, body) = get_with(&server.at(&path), &token, &headers).await;
        assert_eq!(status, 200, "{path}: {body}");
        let events = page(&body);
        assert_eq!(events.len(), 1, "{path}: {body}");
        let event = &events[0];
        let mut expected = sent.clone();
        expected["id"] = json!(id);
        expected["time"] = event["time"].clone();
        expected["resource"] = json!("urn:altinn:resource:app_ttd_app1");
        expected["resourceinstance"] = json!(format!(
            "{PERSON_PARTY}/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc"
        ));
        assert_eq!(event, &expected, "{path}");
        let time = event["time"].as_str().expect("time");
        let time = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339 time");
        assert!(
            time >= before - chrono::Duration::seconds(5)
                && time <= after + chrono::Duration::seconds(5),
            "time {time} is not the time of publishing ({before}..{after})"
        );
    }

    // The Location is a route: the event itself, for the org; nobody else's to read.
    assert_eq!(
        location,
        format!("/events/api/v1/app/ttd/app1/{id}"),
        "Location {location}"
    );
    let (status, _, body) = get_with(&server.at(&location), &ttd, &[]).await;
    assert_eq!(status, 200, "{location}: {body}");
    assert_eq!(body["id"], json!(id), "{body}");
    assert_eq!(body["data"], sent["data"], "{body}");
    let (status, _, body) = get_with(&server.at(&location), &server.skd(), &[]).await;
    assert_eq!(status, 404, "another org: {body}");
    let (status, _, body) = get_with(&server.at(&location), &server.person(), &[]).await;
    assert_eq!(status, 401, "an end user: {body}");
    let (status, _, body) = get_with(
        &server.at("/events/api/v1/app/ttd/app1/no-such-event"),
        &ttd,
        &[],
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn app_events_that_break_altinns_rules_are_refused() {
    let server = Server::start();
    let ttd = server.ttd();
    let base = json!({"specversion": "1.0", "type": "app.instance.created",
                      "subject": "/party/50002598", "source": APP_SOURCE});
    let with = |key: &str, value: Value| {
        let mut e = base.clone();
        e[key] = value;
        e
    };
    let cases = [
        (
            with("source", json!("https://ttd.apps.altinn.no/ttd/app1")),
            400,
            "source",
        ),
        (
            with(
                "source",
                json!("http://ttd.apps.altinn.no/ttd/app1/instances/1/g"),
            ),
            400,
            "source",
        ),
        (with("subject", json!("/party/1")), 400, "subject"),
        (
            with("alternativesubject", json!("/person/123")),
            400,
            "alternativesubject",
        ),
        (with("type", json!(null)), 400, "type"),
        (
            with(
                "source",
                json!("https://skd.apps.altinn.no/skd/app1/instances/50002598/g"),
            ),
            403,
            "",
        ),
    ];
    for (event, status, field) in cases {
        let response = publish_app(&server, &ttd, &event).await;
        assert_eq!(response.status(), status, "{event}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json",
            "{event}"
        );
        let problem: Value = response.json().await.expect("problem");
        if !field.is_empty() {
            assert!(problem["errors"][field].is_array(), "{event}: {problem}");
        }
    }
    let (_, _, body) = get(&server.at("/events/api/v1/app/ttd/app1?after=0"), &ttd).await;
    assert_eq!(body, json!([]), "a refused app event was stored");
}
