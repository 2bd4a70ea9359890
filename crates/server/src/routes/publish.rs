//! Publishing: generic events (structured, batch or binary content mode) and app events. An event
//! is acknowledged only after the group commit that holds it is durable.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hendelse_auth::{Principal, SCOPE_PUBLISH, SCOPE_PUBLISH_ADMIN};
use hendelse_model::cloudevent::validate_map;
use hendelse_model::subject::is_digits;
use hendelse_model::{RESOURCE_PREFIX, ValidatedEvent, ValidationError, validate_event};
use hendelse_store::NewEvent;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::caller::Caller;
use crate::problem::ApiError;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// `POST /events/api/v1/events`
#[utoipa::path(
    post,
    path = "/events/api/v1/events",
    tag = crate::openapi::EVENTS,
    description = "Publish one event (structured or binary content mode) or a batch (all or nothing). Acknowledged only once committed.",
    request_body(content(
        (crate::openapi::CloudEvent = "application/cloudevents+json"),
        (Vec<crate::openapi::CloudEvent> = "application/cloudevents-batch+json"),
        ("application/octet-stream")
    )),
    responses(
        (status = 200, description = "Stored (or already stored): the event id, or {\"accepted\": n} for a batch", body = serde_json::Value),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn publish(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_publish_scope(&caller)?;
    let content_type = media_type(&headers);
    let (events, batch) = if content_type == BATCH {
        (parse_batch(&body)?, true)
    } else if headers.contains_key("ce-specversion") {
        (vec![binary_event(&headers, &body)?], false)
    } else if content_type == STRUCTURED || content_type == "application/json" {
        (vec![structured_event(&body)?], false)
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "publish with Content-Type {STRUCTURED}, {BATCH}, or in binary mode with ce- headers (got '{content_type}')"
        )));
    };
    for (i, event) in events.iter().enumerate() {
        let field = if batch {
            format!("[{i}].resource")
        } else {
            "resource".to_owned()
        };
        authorize_resource(&state, &caller, event, &field)?;
    }
    let first_id = events.first().map(|e| e.id.clone());
    let count = events.len();
    if count > 0 {
        state
            .ingest
            .publish(events.into_iter().map(NewEvent::from).collect())
            .await?;
        metrics::counter!("hendelse_events_published_total", "endpoint" => "events")
            .increment(count as u64);
    }
    Ok(if batch {
        Json(serde_json::json!({ "accepted": count })).into_response()
    } else {
        Json(first_id.unwrap_or_default()).into_response()
    })
}

fn require_publish_scope(caller: &Principal) -> Result<(), ApiError> {
    if caller.has_scope(SCOPE_PUBLISH) || caller.has_scope(SCOPE_PUBLISH_ADMIN) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the token lacks the scope {SCOPE_PUBLISH}"
        )))
    }
}

fn authorize_resource(
    state: &AppState,
    caller: &Principal,
    event: &ValidatedEvent,
    field: &str,
) -> Result<(), ApiError> {
    match &event.resource {
        // Only an administrator may publish events outside every resource (such as the plain
        // conformance vectors); nobody but administrators can read them.
        None if caller.has_scope(SCOPE_PUBLISH_ADMIN) => Ok(()),
        None => Err(ValidationError::single(
            field,
            format!("is required and must start with {RESOURCE_PREFIX}"),
        )
        .into()),
        Some(r) if !r.starts_with(RESOURCE_PREFIX) => {
            Err(ValidationError::single(field, format!("must start with {RESOURCE_PREFIX}")).into())
        }
        Some(r) if !state.authorizer.may_publish(caller, r) => Err(ApiError::Forbidden(format!(
            "the caller may not publish events for the resource {r}"
        ))),
        Some(_) => Ok(()),
    }
}

/// The media type without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the request body is not UTF-8".into()))
}

fn structured_event(body: &[u8]) -> Result<ValidatedEvent, ApiError> {
    let text = utf8(body)?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty; send one CloudEvent as JSON".into(),
        ));
    }
    Ok(validate_event(text)?)
}

fn parse_batch(body: &[u8]) -> Result<Vec<ValidatedEvent>, ApiError> {
    let text = utf8(body)?;
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| {
        ApiError::BadRequest(format!("a batch must be a JSON array of CloudEvents: {e}"))
    })?;
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match validate_event(item.get()) {
            Ok(e) => events.push(e),
            Err(e) => errors.extend(e.prefixed(&format!("[{i}].")).errors),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(ValidationError { errors }.into())
    }
}

/// Binary content mode: attributes in `ce-` headers (percent-encoded per the HTTP binding), the
/// body is `data` with `Content-Type` as `datacontenttype`.
fn binary_event(headers: &HeaderMap, body: &[u8]) -> Result<ValidatedEvent, ApiError> {
    let mut map = Map::new();
    let mut errors = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8();
        match decoded {
            Ok(text) => {
                map.insert(attribute.to_owned(), Value::String(text.into_owned()));
            }
            Err(_) => errors.push(hendelse_model::FieldError {
                field: format!("ce-{attribute}"),
                message: "must be UTF-8 after percent-decoding".into(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ValidationError { errors }.into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if let Some(ct) = content_type.filter(|c| !c.is_empty()) {
        map.insert("datacontenttype".into(), Value::String(ct.to_owned()));
    }
    if !body.is_empty() {
        let essence = media_type(headers);
        let is_json = essence == "application/json"
            || essence.ends_with("+json")
            || (essence.is_empty() && looks_like_json(body));
        let is_text =
            essence.starts_with("text/") || essence.ends_with("/xml") || essence.ends_with("+xml");
        if is_json {
            let data: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!("the body is declared JSON but does not parse: {e}"))
            })?;
            map.insert("data".into(), data);
        } else if let (true, Ok(text)) = (is_text, std::str::from_utf8(body)) {
            map.insert("data".into(), Value::String(text.to_owned()));
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(body);
            map.insert("data_base64".into(), Value::String(encoded));
        }
    }
    let json = serde_json::to_string(&map)
        .map_err(|e| ApiError::internal("cannot render the binary-mode event", e))?;
    Ok(validate_map(&map, json)?)
}

fn looks_like_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// `POST /events/api/v1/app`: an app event. The server assigns `id` and `time`, and derives
/// `resource` and `resourceinstance` from `source`.
#[utoipa::path(
    post,
    path = "/events/api/v1/app",
    tag = crate::openapi::EVENTS,
    description = "Publish an app event; the server sets id, time, resource and resourceinstance from source.",
    request_body(content = crate::openapi::CloudEvent, content_type = "application/cloudevents+json"),
    responses(
        (status = 201, description = "The new event id", body = String, headers(("Location" = String))),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn publish_app(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_publish_scope(&caller)?;
    let content_type = media_type(&headers);
    if !(content_type == STRUCTURED || content_type == "application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "publish app events as {STRUCTURED} or application/json (got '{content_type}')"
        )));
    }
    let mut map: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be one CloudEvent as a JSON object: {e}"
        ))
    })?;
    let source = map
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let app = AppSource::parse(&source).ok_or_else(|| {
        ValidationError::single(
            "source",
            "must be https://{org}.apps.{host}/{org}/{app}/instances/{partyId}/{instanceGuid}",
        )
    })?;
    let owner_ok = caller.org() == Some(app.org.as_str()) || caller.has_scope(SCOPE_PUBLISH_ADMIN);
    if !owner_ok {
        return Err(ApiError::Forbidden(format!(
            "only the org '{}' may publish events for its apps",
            app.org
        )));
    }
    match map.get("subject").and_then(Value::as_str) {
        Some(s) if s == format!("/party/{}", app.party_id) => {}
        _ => {
            return Err(ValidationError::single(
                "subject",
                format!("must be /party/{} (the party in source)", app.party_id),
            )
            .into());
        }
    }
    if let Some(alt) = map.get("alternativesubject").and_then(Value::as_str) {
        let ok = alt
            .strip_prefix("/person/")
            .is_some_and(|p| is_digits(p, 11))
            || alt
                .strip_prefix("/organisation/")
                .is_some_and(|o| is_digits(o, 9));
        if !ok {
            return Err(ValidationError::single(
                "alternativesubject",
                "must be /person/{11 digits} or /organisation/{9 digits}",
            )
            .into());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    map.entry("specversion").or_insert_with(|| "1.0".into());
    map.insert("id".into(), Value::String(id.clone()));
    map.insert(
        "time".into(),
        Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    map.insert(
        "resource".into(),
        Value::String(format!("{RESOURCE_PREFIX}app_{}_{}", app.org, app.app)),
    );
    map.insert(
        "resourceinstance".into(),
        Value::String(format!("{}/{}", app.party_id, app.instance)),
    );
    let json = serde_json::to_string(&map)
        .map_err(|e| ApiError::internal("cannot render the app event", e))?;
    let event = validate_map(&map, json)?;
    state.ingest.publish(vec![NewEvent::from(event)]).await?;
    metrics::counter!("hendelse_events_published_total", "endpoint" => "app").increment(1);
    let location = HeaderValue::from_str(&format!("/events/api/v1/app/{id}"))
        .map_err(|e| ApiError::internal("the Location is not a header value", e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(id),
    )
        .into_response())
}

/// The parts of an app instance URL.
#[derive(Debug, PartialEq, Eq)]
struct AppSource {
    org: String,
    app: String,
    party_id: i64,
    instance: String,
}

impl AppSource {
    fn parse(source: &str) -> Option<AppSource> {
        let rest = source.strip_prefix("https://")?;
        let (host, path) = rest.split_once('/')?;
        let host_org = host.split('.').next()?;
        let mut segments = path.split('/');
        let org = segments.next()?;
        let app = segments.next()?;
        if segments.next()? != "instances" {
            return None;
        }
        let party_id = segments.next()?.parse().ok()?;
        let instance = segments.next()?;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if segments.next().is_some()
            || host_org != org
            || !host.contains(".apps.")
            || !plain(org)
            || !plain(app)
            || !plain(instance)
        {
            return None;
        }
        Some(AppSource {
            org: org.to_owned(),
            app: app.to_owned(),
            party_id,
            instance: instance.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::AppSource;

    #[test]
    fn app_sources() {
        let s = AppSource::parse("https://ttd.apps.altinn.no/ttd/app-1/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc")
            .expect("valid");
        assert_eq!(
            (s.org.as_str(), s.app.as_str(), s.party_id),
            ("ttd", "app-1", 50002598)
        );
        assert!(AppSource::parse("https://ttd.apps.altinn.no/skd/app/instances/1/x").is_none());
        assert!(AppSource::parse("http://ttd.apps.altinn.no/ttd/app/instances/1/x").is_none());
        assert!(AppSource::parse("https://ttd.apps.altinn.no/ttd/app/instances/x/y").is_none());
    }

    mod properties {
        use super::super::{binary_event, parse_batch};
        use crate::problem::ApiError;
        use axum::http::{HeaderMap, HeaderName, HeaderValue};
        use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
        use proptest::prelude::*;

        /// What the HTTP binding says a sender must encode: controls, space, `"`, `%` and every
        /// non-ASCII character (the last is implied by UTF-8 percent-encoding).
        const BINDING: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

        fn headers(id: HeaderValue) -> HeaderMap {
            let mut h = HeaderMap::new();
            h.insert("ce-specversion", HeaderValue::from_static("1.0"));
            h.insert(
                "ce-source",
                HeaderValue::from_static("https://example.com/x"),
            );
            h.insert("ce-type", HeaderValue::from_static("no.example.t"));
            h.insert("ce-id", id);
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any attribute text, percent-encoded as the binding says, decodes to itself.
            #[test]
            fn binary_headers_decode_to_what_was_encoded(id in "\\PC{1,24}") {
                let encoded = utf8_percent_encode(&id, BINDING).to_string();
                let value = HeaderValue::from_str(&encoded).expect("header");
                let event = binary_event(&headers(value), b"").expect("valid event");
                prop_assert_eq!(event.id, id);
            }

            /// Arbitrary header bytes (what hyper lets through: visible ASCII, space, tab and
            /// obs-text) never panic; a value that is not UTF-8 once decoded is a 400 naming it.
            #[test]
            fn binary_headers_never_panic(
                raw in proptest::collection::vec(
                    prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'%'), Just(b'\t')],
                    0..32,
                ),
                name in "[a-z]{1,8}",
            ) {
                let Ok(value) = HeaderValue::from_bytes(&raw) else {
                    return Ok(());
                };
                let mut h = headers(HeaderValue::from_static("e-1"));
                let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes()).expect("name");
                h.insert(name, value.clone());
                let decoded = percent_encoding::percent_decode(value.as_bytes()).decode_utf8();
                match binary_event(&h, b"\x00\xff") {
                    Err(ApiError::Invalid(e)) if decoded.is_err() => {
                        prop_assert!(e.errors.iter().any(|f| f.message.contains("UTF-8")));
                    }
                    other => prop_assert!(decoded.is_ok(), "{:?}", other.map(|e| e.id)),
                }
            }

            /// A batch is all or nothing, and each error names its event's index.
            #[test]
            fn batch_errors_name_the_invalid_events(valid in proptest::collection::vec(any::<bool>(), 0..12)) {
                let items: Vec<serde_json::Value> = valid
                    .iter()
                    .enumerate()
                    .map(|(i, ok)| {
                        let mut e = serde_json::json!({
                            "specversion": "1.0", "source": "https://example.com/x", "type": "t"
                        });
                        if *ok {
                            e["id"] = serde_json::json!(format!("e{i}"));
                        }
                        e
                    })
                    .collect();
                let body = serde_json::to_vec(&items).expect("json");
                match parse_batch(&body) {
                    Ok(events) => {
                        prop_assert!(valid.iter().all(|ok| *ok));
                        prop_assert_eq!(events.len(), valid.len());
                    }
                    Err(ApiError::Invalid(e)) => {
                        let named: Vec<String> = e.errors.iter().map(|f| f.field.clone()).collect();
                        let expected: Vec<String> = valid
                            .iter()
                            .enumerate()
                            .filter(|(_, ok)| !**ok)
                            .map(|(i, _)| format!("[{i}].id"))
                            .collect();
                        prop_assert_eq!(named, expected);
                    }
                    Err(other) => prop_assert!(false, "{}", other),
                }
            }

            #[test]
            fn batch_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse_batch(&body);
            }
        }
    }
}
