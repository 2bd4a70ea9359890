//! Publishing: generic events (structured, batch or binary content mode) and app events. An event
//! is acknowledged only after the group commit that holds it is durable.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hendelse_model::cloudevent::validate_map;
use hendelse_model::{ValidatedEvent, ValidationError, validate_event};
use hendelse_wire::paths;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::caller::Caller;
use crate::openapi::problems::{BadRequest, Refusals, StorageFull, TooLarge, UnsupportedType};
use crate::problem::ApiError;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// `POST /events/api/v1/events`
#[utoipa::path(
    post,
    operation_id = "publishEvents",
    path = "/events/api/v1/events",
    tag = crate::openapi::EVENTS,
    description = "Publish one event or a batch (all or nothing). Acknowledged only once committed. \
        The binary content mode is served too but not described here, since OpenAPI cannot tie \
        headers to a content type: any other Content-Type with the `ce-specversion`, `ce-id`, \
        `ce-source`, `ce-type` and `ce-resource` headers (and any other `ce-` attribute) carries \
        the body as the event's data.",
    request_body(content(
        (crate::openapi::CloudEvent = "application/cloudevents+json", examples(
            ("dialogCreated" = (summary = "Dialogporten: a dialog created", value = json!(crate::openapi::examples::dialog_created()))),
            ("activityAdded" = (summary = "Dialogporten: an activity added", value = json!(crate::openapi::examples::activity_added())))
        )),
        (Vec<crate::openapi::CloudEvent> = "application/cloudevents-batch+json", example = json!([crate::openapi::examples::dialog_created(), crate::openapi::examples::activity_added()]))
    )),
    responses(
        (status = 200, description = "Stored (or already stored): the event id, or {\"accepted\": n} for a batch", body = serde_json::Value),
        BadRequest, TooLarge, UnsupportedType, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn publish(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.events.may_publish(&caller)?;
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
    let first_id = events.first().map(|e| e.id.clone());
    let count = state
        .events
        .publish(
            &caller,
            events,
            batch,
            crate::telemetry::publish_traceparent(&headers).as_deref(),
        )
        .await?;
    Ok(if batch {
        Json(serde_json::json!({ "accepted": count })).into_response()
    } else {
        Json(first_id.unwrap_or_default()).into_response()
    })
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
    operation_id = "publishAppEvent",
    path = "/events/api/v1/app",
    tag = crate::openapi::EVENTS,
    description = "Publish an app event; the server sets id, time, resource and resourceinstance from source.",
    request_body(content = crate::openapi::AppEvent, content_type = "application/cloudevents+json", example = json!(crate::openapi::examples::app_event())),
    responses(
        (status = 201, description = "The new event id", body = String, content_type = "application/json", headers(("Location" = String))),
        BadRequest, TooLarge, UnsupportedType, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn publish_app(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.events.may_publish(&caller)?;
    let content_type = media_type(&headers);
    if !(content_type == STRUCTURED || content_type == "application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "publish app events as {STRUCTURED} or application/json (got '{content_type}')"
        )));
    }
    let event: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be one CloudEvent as a JSON object: {e}"
        ))
    })?;
    let crate::events::PublishedApp { id, org, app } = state
        .events
        .publish_app(
            &caller,
            event,
            crate::telemetry::publish_traceparent(&headers).as_deref(),
        )
        .await?;
    let location = HeaderValue::from_str(&format!("{}/{org}/{app}/{id}", paths::APP))
        .map_err(|e| ApiError::internal("the Location is not a header value", e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(id),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
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
