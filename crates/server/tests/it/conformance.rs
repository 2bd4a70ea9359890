//! The CloudEvents conformance vectors (vendored in `tests/data/cloudevents-json/`) through the
//! publish route: every valid event and batch is accepted, every invalid one gets 400 problem
//! details naming the attribute at fault. Plus the resource rule for the plain vectors, binary
//! content mode and the 1 MiB body limit.

use crate::common::{
    Answer, BATCH, RESOURCE, STRUCTURED, Server, assert_problem, client, data_path, get, send,
};
use serde_json::{Value, json};

const ADMIN: &str = "altinn:events.publish.admin";
const MIB: usize = 1024 * 1024;

/// The field names of a problem's `errors`.
fn error_fields(reply: &Answer) -> Vec<String> {
    reply.body["errors"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

async fn post(server: &Server, token: &str, content_type: &str, body: String) -> Answer {
    send(
        client()
            .post(server.at("/events/api/v1/events"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

fn admin(server: &Server) -> String {
    server.token(&["--org", "ttd", "--scope", ADMIN])
}

/// A conformance file's tests: `(test id, the event or batch)`.
fn vectors(file: &str) -> Vec<(String, Value)> {
    let path = data_path(&format!("cloudevents-json/{file}"));
    let text = std::fs::read_to_string(&path).expect("read the conformance vectors");
    let doc: Value = serde_json::from_str(&text).expect("conformance vectors are JSON");
    let tests = doc["tests"].as_array().expect("tests").clone();
    assert!(!tests.is_empty(), "{file} holds no tests");
    tests
        .into_iter()
        .map(|t| {
            let id = t["id"].as_str().expect("test id").to_owned();
            let vector = if t.get("batch").is_some() {
                t["batch"].clone()
            } else {
                t["event"].clone()
            };
            (id, vector)
        })
        .collect()
}

/// Every event of `resource`, read by `token` from the start of the log.
async fn read_resource(server: &Server, token: &str, resource: &str) -> Vec<Value> {
    let (status, _, body) = get(
        &server.at(&format!(
            "/events/api/v1/events?resource={resource}&after=0&size=1000"
        )),
        token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().expect("array").clone()
}

#[tokio::test]
async fn every_valid_event_vector_is_accepted() {
    let server = Server::start();
    let token = admin(&server);
    for (name, event) in vectors("valid-events.json") {
        let reply = post(&server, &token, STRUCTURED, event.to_string()).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        assert_eq!(
            reply.body, event["id"],
            "{name}: the answer is the event's id"
        );
    }
}

/// The same vectors, given a resource that ttd owns, read back attribute for attribute (nulls,
/// time offsets and every extension type included).
#[tokio::test]
async fn every_valid_event_vector_reads_back_as_published() {
    let server = Server::start();
    let token = server.ttd();
    let mut published = Vec::new();
    for (name, mut event) in vectors("valid-events.json") {
        // Several vectors share an id; give each its own so that none is deduplicated.
        event["id"] = json!(name);
        event["resource"] = json!(RESOURCE);
        let reply = post(&server, &token, STRUCTURED, event.to_string()).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        published.push(event);
    }
    assert_eq!(read_resource(&server, &token, RESOURCE).await, published);
}

#[tokio::test]
async fn every_valid_batch_vector_is_accepted() {
    let server = Server::start();
    let token = admin(&server);
    for (name, batch) in vectors("valid-batches.json") {
        let count = batch.as_array().expect("a batch is an array").len();
        let reply = post(&server, &token, BATCH, batch.to_string()).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        assert_eq!(reply.body, json!({"accepted": count}), "{name}");
    }
}

/// Batches are stored in order; a batch that repeats an event (`minimal2`) stores it once.
#[tokio::test]
async fn valid_batch_vectors_read_back_in_order() {
    let server = Server::start();
    let token = server.ttd();
    let mut expected: Vec<Value> = Vec::new();
    for (name, batch) in vectors("valid-batches.json") {
        let events: Vec<Value> = batch
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["id"] = json!(format!("{name}/{}", e["id"].as_str().expect("id")));
                e["resource"] = json!(RESOURCE);
                e
            })
            .collect();
        let reply = post(
            &server,
            &token,
            BATCH,
            Value::Array(events.clone()).to_string(),
        )
        .await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        for e in events {
            if !expected.contains(&e) {
                expected.push(e);
            }
        }
    }
    assert_eq!(read_resource(&server, &token, RESOURCE).await, expected);
}

/// The attribute each invalid vector gets wrong; a new vector must be added here.
fn faulty_attribute(test: &str) -> &'static str {
    match test {
        "invalidNoSpecVersion" | "invalidEmptySpecVersion" | "invalidUnknownSpecVersion" => {
            "specversion"
        }
        "invalidNoId" | "invalidEmptyId" | "invalidNumericId" | "invalidObjectId" => "id",
        "invalidNoType" | "invalidEmptyType" => "type",
        "invalidNoSource" | "invalidEmptySource" => "source",
        "invalidTimeGarbage"
        | "invalidTimeToMinute"
        | "invalidTimeOffsetX"
        | "invalidTimeOffsetOutOfRange"
        | "invalidTimeOffsetNonInteger"
        | "invalidTimeOffsetHourOnly" => "time",
        "invalidNonRfc2046DataContentType" | "invalidEmptyDataContentType" => "datacontenttype",
        "invalidEmptyDataSchema" => "dataschema",
        "invalidEmptySubject" => "subject",
        "invalidCapitalizedExtension" => "MyExtension",
        "invalidPunctuatedExtension" | "invalidNonIntegerExtensionValue" => "my.extension",
        "invalidBothDataAndDataBase64" => "data_base64",
        other => panic!("unknown invalid vector {other}: say which attribute it gets wrong"),
    }
}

#[tokio::test]
async fn every_invalid_event_vector_is_rejected_with_problem_details_naming_the_attribute() {
    let server = Server::start();
    let token = admin(&server);
    for (name, event) in vectors("invalid-events.json") {
        let field = faulty_attribute(&name);
        let reply = post(&server, &token, STRUCTURED, event.to_string()).await;
        assert_problem(&reply, 400, &name);
        assert_eq!(error_fields(&reply), [field], "{name}: {}", reply.text);
        assert!(
            reply.body["errors"][field][0]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {}",
            reply.text
        );
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{name}: detail {detail:?}");
    }
}

/// Invalid events are not stored, whoever publishes them.
#[tokio::test]
async fn invalid_event_vectors_with_a_resource_are_not_stored() {
    let server = Server::start();
    let token = server.ttd();
    for (name, mut event) in vectors("invalid-events.json") {
        event["resource"] = json!(RESOURCE);
        let reply = post(&server, &token, STRUCTURED, event.to_string()).await;
        assert_problem(&reply, 400, &name);
        assert!(
            error_fields(&reply).contains(&faulty_attribute(&name).to_owned()),
            "{name}: {}",
            reply.text
        );
    }
    assert_eq!(
        read_resource(&server, &token, RESOURCE).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn every_invalid_batch_vector_is_rejected_naming_the_element_and_attribute() {
    let server = Server::start();
    let token = admin(&server);
    for (name, batch) in vectors("invalid-batches.json") {
        let field = match name.as_str() {
            "invalidBatchMixedSpecVersions" => "[1].specversion",
            "invalidBatchContainingInvalidCloudEvent" => "[0].id",
            "invalidBatchContainingNonObject" => "[0].$",
            other => panic!("unknown invalid batch {other}: say what it gets wrong"),
        };
        let reply = post(&server, &token, BATCH, batch.to_string()).await;
        assert_problem(&reply, 400, &name);
        assert_eq!(error_fields(&reply), [field], "{name}: {}", reply.text);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{name}: detail {detail:?}");
    }
    // Not a JSON array at all.
    for body in ["{}", "not json", ""] {
        let reply = post(&server, &token, BATCH, body.to_owned()).await;
        assert_problem(&reply, 400, body);
    }
}

/// A batch is all or nothing: the valid events of a rejected batch are not stored.
#[tokio::test]
async fn a_rejected_batch_stores_none_of_its_events() {
    let server = Server::start();
    let token = server.ttd();
    for (name, batch) in vectors("invalid-batches.json") {
        let batch: Vec<Value> = batch
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if e.is_object() {
                    e["resource"] = json!(RESOURCE);
                }
                e
            })
            .collect();
        let reply = post(&server, &token, BATCH, Value::Array(batch).to_string()).await;
        assert_problem(&reply, 400, &name);
    }
    // A batch whose second event belongs to a resource ttd does not own is refused whole.
    let batch = json!([
        {"specversion": "1.0", "id": "mine", "source": "https://x.example", "type": "t", "resource": RESOURCE},
        {"specversion": "1.0", "id": "theirs", "source": "https://x.example", "type": "t",
         "resource": "urn:altinn:resource:skd-service"}
    ]);
    let reply = post(&server, &token, BATCH, batch.to_string()).await;
    assert_problem(&reply, 403, "foreign resource in a batch");
    assert_eq!(
        read_resource(&server, &token, RESOURCE).await,
        Vec::<Value>::new()
    );
}

/// The plain vectors have no `resource`: only `altinn:events.publish.admin` may publish them.
#[tokio::test]
async fn an_event_without_resource_needs_the_admin_scope() {
    let server = Server::start();
    let (_, minimal) = vectors("valid-events.json")
        .into_iter()
        .find(|(name, _)| name == "validMinimal")
        .expect("validMinimal");
    let publisher = server.ttd();
    let reply = post(&server, &publisher, STRUCTURED, minimal.to_string()).await;
    assert_problem(&reply, 400, "no resource, plain publish token");
    assert_eq!(error_fields(&reply), ["resource"], "{}", reply.text);

    let batch = json!([
        {"specversion": "1.0", "id": "a", "source": "https://x.example", "type": "t", "resource": RESOURCE},
        minimal
    ]);
    let reply = post(&server, &publisher, BATCH, batch.to_string()).await;
    assert_problem(&reply, 400, "no resource in a batch");
    assert_eq!(error_fields(&reply), ["[1].resource"], "{}", reply.text);
    assert_eq!(
        read_resource(&server, &publisher, RESOURCE).await,
        Vec::<Value>::new(),
        "the rejected batch stored its valid event"
    );

    // A resource that is not an Altinn resource is refused even for the administrator.
    let mut odd = minimal.clone();
    odd["resource"] = json!("https://example.com/resource");
    let reply = post(&server, &admin(&server), STRUCTURED, odd.to_string()).await;
    assert_problem(&reply, 400, "resource outside urn:altinn:resource:");
    assert_eq!(error_fields(&reply), ["resource"], "{}", reply.text);

    let reply = post(&server, &admin(&server), STRUCTURED, minimal.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Binary content mode: attributes in percent-encoded `ce-` headers, the body is `data`.
#[tokio::test]
async fn binary_content_mode_is_accepted_and_reads_back() {
    let server = Server::start();
    let token = server.ttd();
    let binary = |id: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = client()
            .post(server.at("/events/api/v1/events"))
            .bearer_auth(&token)
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-source", "https://example.com/binary%3Fq%3D1")
            .header("ce-type", "no.example.%C3%A6%C3%B8%C3%A5")
            .header(
                "ce-resource",
                "urn%3Aaltinn%3Aresource%3Asuper-simple-service",
            )
            .header(
                "ce-subject",
                "urn:altinn:organization:identifier-no:991825827",
            )
            .header("ce-time", "2024-05-06T07:08:09.123%2B02:00")
            .header("ce-myextension", "hello%20world%2C%20100%25")
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request
    };
    let common = json!({
        "specversion": "1.0",
        "source": "https://example.com/binary?q=1",
        "type": "no.example.æøå",
        "resource": RESOURCE,
        "subject": "urn:altinn:organization:identifier-no:991825827",
        "time": "2024-05-06T07:08:09.123+02:00",
        "myextension": "hello world, 100%",
    });
    let expect = |id: &str, extra: Value| {
        let mut e = common.clone();
        e["id"] = json!(id);
        for (k, v) in extra.as_object().expect("object") {
            e[k] = v.clone();
        }
        e
    };

    let json_body = br#"{"answer": 42, "nested": {"list": [1, "two", null]}}"#.to_vec();
    let reply = send(binary("bin-json", Some("application/json"), json_body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!("bin-json"));

    let reply = send(binary(
        "bin-text",
        Some("text/plain; charset=utf-8"),
        "plain text, æøå".as_bytes().to_vec(),
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let reply = send(binary(
        "bin-bytes",
        Some("application/octet-stream"),
        vec![0, 159, 255, 77, 97],
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let reply = send(binary("bin-empty", None, Vec::new())).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let expected = vec![
        expect(
            "bin-json",
            json!({"datacontenttype": "application/json",
                   "data": {"answer": 42, "nested": {"list": [1, "two", null]}}}),
        ),
        expect(
            "bin-text",
            json!({"datacontenttype": "text/plain; charset=utf-8", "data": "plain text, æøå"}),
        ),
        expect(
            "bin-bytes",
            json!({"datacontenttype": "application/octet-stream", "data_base64": "AJ//TWE="}),
        ),
        expect("bin-empty", json!({})),
    ];
    assert_eq!(read_resource(&server, &token, RESOURCE).await, expected);
}

#[tokio::test]
async fn binary_content_mode_rejects_invalid_attributes_with_problem_details() {
    let server = Server::start();
    let token = server.ttd();
    let base = || {
        client()
            .post(server.at("/events/api/v1/events"))
            .bearer_auth(&token)
            .header("ce-specversion", "1.0")
            .header("ce-source", "https://example.com/binary")
            .header("ce-type", "t")
            .header("ce-resource", RESOURCE)
            .header("content-type", "application/json")
    };
    let reply = send(
        base()
            .header("ce-id", "x")
            .header("ce-time", "lunchtime")
            .body("{}"),
    )
    .await;
    assert_problem(&reply, 400, "ce-time garbage");
    assert_eq!(error_fields(&reply), ["time"], "{}", reply.text);

    let reply = send(base().body("{}")).await;
    assert_problem(&reply, 400, "no ce-id");
    assert_eq!(error_fields(&reply), ["id"], "{}", reply.text);

    let reply = send(base().header("ce-id", "%FF%FE").body("{}")).await;
    assert_problem(&reply, 400, "ce-id not UTF-8");
    assert_eq!(error_fields(&reply), ["ce-id"], "{}", reply.text);

    let reply = send(base().header("ce-id", "x").body("{not json")).await;
    assert_problem(&reply, 400, "body declared JSON");

    assert_eq!(
        read_resource(&server, &token, RESOURCE).await,
        Vec::<Value>::new()
    );
}

#[tokio::test]
async fn a_body_without_a_known_content_type_gets_415_problem_details() {
    let server = Server::start();
    let event =
        json!({"specversion": "1.0", "id": "x", "source": "s", "type": "t", "resource": RESOURCE});
    let reply = post(&server, &server.ttd(), "text/plain", event.to_string()).await;
    assert_problem(&reply, 415, "text/plain");
}

/// A structured event padded with `data` to exactly `size` bytes of JSON.
fn event_of_size(id: &str, size: usize) -> String {
    let skeleton = json!({
        "specversion": "1.0", "id": id, "source": "https://example.com/big", "type": "t",
        "resource": RESOURCE, "data": ""
    })
    .to_string();
    let padding = "x".repeat(size - skeleton.len());
    let text = json!({
        "specversion": "1.0", "id": id, "source": "https://example.com/big", "type": "t",
        "resource": RESOURCE, "data": padding
    })
    .to_string();
    assert_eq!(text.len(), size);
    text
}

#[tokio::test]
async fn a_body_over_1_mib_gets_413_problem_details() {
    let server = Server::start();
    let token = server.ttd();

    let reply = post(&server, &token, STRUCTURED, event_of_size("at-limit", MIB)).await;
    assert_eq!(reply.status, 200, "an event of exactly 1 MiB is allowed");

    let reply = post(&server, &token, STRUCTURED, event_of_size("over", MIB + 1)).await;
    assert_problem(&reply, 413, "1 MiB + 1 byte");

    let batch = format!("[{}]", event_of_size("in-batch", MIB));
    let reply = post(&server, &token, BATCH, batch).await;
    assert_problem(&reply, 413, "a batch over 1 MiB");

    let reply = send(
        client()
            .post(server.at("/events/api/v1/events"))
            .bearer_auth(&token)
            .header("ce-specversion", "1.0")
            .header("ce-id", "binary-over")
            .header("ce-source", "https://example.com/big")
            .header("ce-type", "t")
            .header("ce-resource", RESOURCE)
            .header("content-type", "application/octet-stream")
            .body(vec![7u8; MIB + 1]),
    )
    .await;
    assert_problem(&reply, 413, "binary mode over 1 MiB");

    let stored = read_resource(&server, &token, RESOURCE).await;
    let ids: Vec<&str> = stored.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["at-limit"]);
}
