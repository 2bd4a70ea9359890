//! `/openapi.json` describes exactly the routes the server serves, with their parameters and
//! problem-details errors.

use std::collections::BTreeSet;

use crate::common::{Server, client, get_public};
use serde_json::Value;

/// Every route of the API. A route added to the router must be added here (and is then checked to
/// be documented); the document cannot list a route the server does not answer.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/events/api/v1/events"),
    ("get", "/events/api/v1/events"),
    ("get", "/events/api/v1/events/stream"),
    ("post", "/events/api/v1/app"),
    ("get", "/events/api/v1/app/party"),
    ("get", "/events/api/v1/app/party/stream"),
    ("get", "/events/api/v1/app/{org}/{app}"),
    ("get", "/events/api/v1/app/{org}/{app}/{id}"),
    ("post", "/events/api/v1/subscriptions"),
    ("get", "/events/api/v1/subscriptions"),
    ("get", "/events/api/v1/subscriptions/{id}"),
    ("delete", "/events/api/v1/subscriptions/{id}"),
    ("get", "/events/api/v1/subscriptions/{id}/deliveries"),
    ("post", "/events/api/v1/subscriptions/{id}/redrive"),
    ("post", "/events/api/v1/subscriptions/{id}/replay"),
    ("post", "/events/api/v1/subscriptions/{id}/enable"),
    ("patch", "/events/api/v1/subscriptions/{id}"),
    ("get", "/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/dialogporten/api/v1/serviceowner/dialogs"),
    ("get", "/dialogporten/api/v1/serviceowner/dialogs"),
    ("get", "/dialogporten/api/v1/serviceowner/dialogs/{id}"),
    ("put", "/dialogporten/api/v1/serviceowner/dialogs/{id}"),
    ("patch", "/dialogporten/api/v1/serviceowner/dialogs/{id}"),
    ("delete", "/dialogporten/api/v1/serviceowner/dialogs/{id}"),
    (
        "post",
        "/dialogporten/api/v1/serviceowner/dialogs/{id}/actions/restore",
    ),
    (
        "post",
        "/dialogporten/api/v1/serviceowner/dialogs/{id}/actions/purge",
    ),
    (
        "post",
        "/dialogporten/api/v1/serviceowner/dialogs/{id}/activities",
    ),
    (
        "post",
        "/dialogporten/api/v1/serviceowner/dialogs/{id}/transmissions",
    ),
    ("get", "/dialogporten/api/v1/enduser/dialogs"),
    ("get", "/dialogporten/api/v1/enduser/dialogs/{id}"),
];

const PUBLIC: &[&str] = &[
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
];

async fn document(server: &Server) -> Value {
    let answer = get_public(server, "/openapi.json").await;
    assert_eq!(answer.status, 200, "no token needed");
    assert!(answer.body.is_object(), "JSON: {}", answer.text);
    answer.body
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let server = Server::start();
    let doc = document(&server).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let documented = operations(&doc);
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Each documented operation is answered by the server (not 404/405), without a token:
    // protected ones with 401, public ones with success.
    for (method, path) in &documented {
        let concrete = path
            .replace("{org}", "ttd")
            .replace("{app}", "app")
            .replace("{id}", "1");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let response = client()
            .request(method.clone(), server.at(&concrete))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        if PUBLIC.contains(&path.as_str()) {
            assert_eq!(status, 200, "{method} {path}");
        } else {
            assert_eq!(status, 401, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn operations_document_parameters_security_and_problems() {
    let server = Server::start();
    let doc = document(&server).await;
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let name = format!("{method} {path}");
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        // Every `{param}` of the path is declared as a path parameter.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let param = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == param && p["in"] == "path"),
                "{name}: path parameter {param} undocumented"
            );
        }
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{name}: no success response"
        );
        let protected = !PUBLIC.contains(&path.as_str());
        if protected {
            assert!(op["security"].is_array(), "{name}: no security");
            assert!(responses.contains_key("401"), "{name}: 401 undocumented");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/Problem",
                    "{name} {status} is not problem details"
                );
            }
        }
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "errors", "traceId"] {
        assert!(problem[field].is_object(), "Problem.{field} missing");
    }
}

/// Code generators refuse a document whose operation ids repeat; ours read as method names.
#[tokio::test]
async fn operation_ids_are_unique_and_read_well() {
    let server = Server::start();
    let doc = document(&server).await;
    let mut seen = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let Some(id) = operation["operationId"].as_str() else {
                panic!("{method} {path} has no operationId");
            };
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{method} {path}: {id} is not camelCase"
            );
            assert!(seen.insert(id.to_owned()), "{id} is used twice");
        }
    }
    for id in [
        "publishEvents",
        "queryPartyEvents",
        "streamPartyEvents",
        "createSubscription",
    ] {
        assert!(seen.contains(id), "{id} in {seen:?}");
    }
}

/// Tags per area, the seeds' examples, and the schemas written as JSON Schema in full (not the
/// placeholders utoipa refers to): what a reader of the document and a generator need.
#[tokio::test]
async fn the_document_has_tags_examples_and_exact_bodies() {
    let server = Server::start();
    let doc = document(&server).await;
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let tag = op["tags"][0].as_str().unwrap_or_default();
        assert!(
            tags.contains(tag),
            "{method} {path}: tag {tag:?} of {tags:?}"
        );
        // Every route that reads a body can refuse one over 1 MiB.
        if op["requestBody"].is_object() {
            assert!(op["responses"]["413"].is_object(), "{method} {path}: 413");
        }
    }

    let publish = &doc["paths"]["/events/api/v1/events"]["post"]["requestBody"]["content"];
    let examples = &publish["application/cloudevents+json"]["examples"];
    assert_eq!(
        examples["dialogCreated"]["value"]["type"],
        "dialogporten.dialog.created.v1"
    );
    assert_eq!(
        examples["activityAdded"]["value"]["type"],
        "dialogporten.dialog.activity.signature-provided.v1"
    );
    assert!(
        publish.get("application/octet-stream").is_none(),
        "binary mode is described in words, not as a body OpenAPI cannot tie to ce- headers"
    );
    let app = &doc["paths"]["/events/api/v1/app"]["post"]["requestBody"]["content"];
    assert_eq!(
        app["application/cloudevents+json"]["example"]["type"],
        "app.instance.created"
    );

    let schemas = &doc["components"]["schemas"];
    let event = &schemas["CloudEvent"];
    assert_eq!(
        event["required"],
        serde_json::json!(["specversion", "id", "source", "type", "resource"])
    );
    assert_eq!(event["additionalProperties"], false);
    assert!(event["patternProperties"].is_object(), "{event}");
    assert!(event["not"]["required"].is_array(), "data or data_base64");
    assert!(event["properties"]["time"]["pattern"].is_string());
    let dialog = &schemas["NewDialog"];
    assert_eq!(
        dialog["required"],
        serde_json::json!(["serviceResource", "party"])
    );
    assert_eq!(
        dialog["then"]["required"],
        serde_json::json!(["process"]),
        "a preceding process needs a process"
    );
    let statuses = &dialog["properties"]["status"]["anyOf"][0]["enum"];
    assert!(
        statuses
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == "RequiresAttention")),
        "{statuses}"
    );
    for name in [
        "NewActivity",
        "NewTransmission",
        "DialogPatch",
        "DialogView",
    ] {
        assert!(
            schemas[name].as_object().is_some_and(|s| s.len() > 1),
            "{name}: {}",
            schemas[name]
        );
    }
    // Parameters carry the server's rules.
    let party = &doc["paths"]["/events/api/v1/app/party"]["get"]["parameters"];
    let size = party
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "size"))
        .expect("size");
    assert_eq!(size["schema"]["minimum"], 1, "{size}");
}

/// The rules the document states are the ones the server keeps: an empty number or boolean is no
/// answer, and a whole number written as a float is that number.
#[tokio::test]
async fn empty_numbers_are_refused_and_whole_floats_are_integers() {
    let server = Server::start_with(&crate::common::TO_LOOPBACK);
    let ttd = server.ttd();
    for path in [
        "/events/api/v1/events?resource=urn:altinn:resource:super-simple-service&after=0&size=",
        "/events/api/v1/app/party?after=0&party=",
        "/dialogporten/api/v1/serviceowner/dialogs?limit=",
        "/dialogporten/api/v1/serviceowner/dialogs?deleted=",
        "/dialogporten/api/v1/serviceowner/dialogs?continuationToken=-5",
    ] {
        let answer = crate::common::send(client().get(server.at(path)).bearer_auth(&ttd)).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.text);
        assert!(answer.body["detail"].is_string(), "{path}: {}", answer.text);
    }
    // Texts stay absent when empty.
    let answer = crate::common::send(
        client()
            .get(server.at(
                "/events/api/v1/events?resource=urn:altinn:resource:super-simple-service&after=0&source=",
            ))
            .bearer_auth(&ttd),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    let created = crate::common::create_subscription(
        &server,
        &ttd,
        &serde_json::json!({
            "endPoint": "http://127.0.0.1:9/hook",
            "resourceFilter": "urn:altinn:resource:super-simple-service",
            "rateLimit": 50.0,
            "maxEventsPerBatch": 10.0
        }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["rateLimit"], 50);
    assert_eq!(created.body["maxEventsPerBatch"], 10);
    let fractional = crate::common::create_subscription(
        &server,
        &ttd,
        &serde_json::json!({
            "endPoint": "http://127.0.0.1:9/hook",
            "resourceFilter": "urn:altinn:resource:super-simple-service",
            "rateLimit": 50.5
        }),
    )
    .await;
    assert_eq!(fractional.status, 400, "{}", fractional.text);
    assert!(
        fractional.text.contains("rateLimit"),
        "names the field: {}",
        fractional.text
    );

    let new_dialog = |query: &str| {
        crate::common::send(
            client()
                .post(server.at(&format!("/dialogporten/api/v1/serviceowner/dialogs{query}")))
                .bearer_auth(&ttd)
                .json(&serde_json::json!({
                    "serviceResource": "urn:altinn:resource:super-simple-service",
                    "party": "urn:altinn:organization:identifier-no:991825827",
                    "progress": 40.0
                })),
        )
    };
    let dialog = new_dialog("?isSilentUpdate=").await;
    assert_eq!(
        dialog.status, 400,
        "isSilentUpdate= is no answer: {}",
        dialog.text
    );
    let dialog = new_dialog("").await;
    assert_eq!(dialog.status, 201, "{}", dialog.text);
}
