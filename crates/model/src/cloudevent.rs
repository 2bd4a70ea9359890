//! Validation of CloudEvents 1.0.2 in the JSON format, plus Altinn's extension attributes.

use base64::Engine;
use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use crate::subject;

/// Context attributes the CloudEvents specification defines; everything else is an extension.
const CORE_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// One problem with one attribute of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found in an event, so that a producer can fix them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// The same errors with every field name prefixed, e.g. `[3].id` for the fourth event of a batch.
    pub fn prefixed(self, prefix: &str) -> Self {
        Self {
            errors: self
                .errors
                .into_iter()
                .map(|e| FieldError {
                    field: format!("{prefix}{}", e.field),
                    message: e.message,
                })
                .collect(),
        }
    }
}

/// An event that passed validation: the attributes the store indexes, and the event's JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub alternative_subject: Option<String>,
    pub resource: Option<String>,
    pub resource_instance: Option<String>,
    pub time: Option<DateTime<FixedOffset>>,
    /// The event exactly as it was published (JSON text of one object).
    pub json: String,
}

impl ValidatedEvent {
    /// The party key the store indexes the subject under (see [`subject::party_key`]).
    pub fn subject_key(&self) -> Option<String> {
        self.subject.as_deref().map(subject::party_key)
    }
}

/// Validates one event given as JSON text and keeps that text as the stored form.
pub fn validate_event(json: &str) -> Result<ValidatedEvent, ValidationError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| ValidationError::single("$", format!("the event is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ValidationError::single(
            "$",
            "a CloudEvent must be a JSON object",
        ));
    };
    validate_map(&map, json.trim().to_owned())
}

/// Validates an event already parsed into a JSON object; `json` is the text to store for it.
pub fn validate_map(
    map: &Map<String, Value>,
    json: String,
) -> Result<ValidatedEvent, ValidationError> {
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: &str| {
        errors.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        })
    };

    match map.get("specversion") {
        None | Some(Value::Null) => fail("specversion", "is required"),
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(_)) => fail("specversion", "must be \"1.0\""),
        Some(_) => fail("specversion", "must be a string"),
    }

    let id = required_string(map, "id", &mut fail);
    let source = required_string(map, "source", &mut fail);
    let event_type = required_string(map, "type", &mut fail);
    if let Some(s) = &source
        && fluent_uri::UriRef::parse(s.as_str()).is_err()
    {
        fail("source", "must be a URI-reference (RFC 3986)");
    }

    let subject = optional_string(map, "subject", &mut fail);
    if let Some(ct) = optional_string(map, "datacontenttype", &mut fail)
        && !is_media_type(&ct)
    {
        fail(
            "datacontenttype",
            "must be a media type as in RFC 2046, e.g. application/json",
        );
    }
    if let Some(schema) = optional_string(map, "dataschema", &mut fail)
        && fluent_uri::Uri::parse(schema.as_str()).is_err()
    {
        fail("dataschema", "must be an absolute URI (RFC 3986)");
    }
    let time = optional_string(map, "time", &mut fail).and_then(|t| match parse_rfc3339(&t) {
        Some(parsed) => Some(parsed),
        None => {
            fail(
                "time",
                "must be an RFC 3339 timestamp, e.g. 2018-04-05T17:31:00Z",
            );
            None
        }
    });

    let has_data = !matches!(map.get("data"), None | Some(Value::Null));
    match map.get("data_base64") {
        None | Some(Value::Null) => {}
        Some(Value::String(b64)) => {
            if has_data {
                fail(
                    "data_base64",
                    "an event carries either data or data_base64, not both",
                );
            }
            if base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_err()
            {
                fail("data_base64", "must be base64 (RFC 4648)");
            }
        }
        Some(_) => fail("data_base64", "must be a base64 string"),
    }

    let resource = optional_string(map, "resource", &mut fail);
    let resource_instance = optional_string(map, "resourceinstance", &mut fail);
    let alternative_subject = optional_string(map, "alternativesubject", &mut fail);

    for (name, value) in map {
        if name == "data" || name == "data_base64" || CORE_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            fail(
                name,
                "attribute names must consist of lower-case letters a-z and digits 0-9",
            );
            continue;
        }
        if !is_extension_value(value) {
            fail(
                name,
                "extension values must be a string, a boolean or a 32-bit integer",
            );
        }
    }

    if !errors.is_empty() {
        return Err(ValidationError { errors });
    }
    match (id, source, event_type) {
        (Some(id), Some(source), Some(event_type)) => Ok(ValidatedEvent {
            id,
            source,
            event_type,
            subject,
            alternative_subject,
            resource,
            resource_instance,
            time,
            json,
        }),
        // Unreachable in practice: a missing required attribute always records an error above.
        _ => Err(ValidationError::single(
            "$",
            "id, source and type are required",
        )),
    }
}

fn required_string(
    map: &Map<String, Value>,
    field: &str,
    fail: &mut impl FnMut(&str, &str),
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => {
            fail(field, "is required");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            fail(field, "must not be empty");
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            fail(field, "must be a string");
            None
        }
    }
}

fn optional_string(
    map: &Map<String, Value>,
    field: &str,
    fail: &mut impl FnMut(&str, &str),
) -> Option<String> {
    match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => {
            fail(field, "must not be empty when present");
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            fail(field, "must be a string");
            None
        }
    }
}

fn is_extension_value(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        // A whole number written as a float (`5.0`) is an integer too, as JSON Schema counts.
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .is_some_and(|i| i32::try_from(i).is_ok()),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// RFC 3339 with seconds, as CloudEvents requires (`2018-04-05T18:31Z` is rejected).
pub fn parse_rfc3339(text: &str) -> Option<DateTime<FixedOffset>> {
    let bytes = text.as_bytes();
    // chrono also accepts a space for `T`; the seconds must be there either way.
    if bytes.len() < 20 || bytes.get(16) != Some(&b':') {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok()
}

/// `type/subtype` with optional `; name=value` parameters (RFC 2045 tokens).
fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    token(kind) && token(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(extra: &str) -> String {
        format!(
            r#"{{"specversion":"1.0","id":"1","source":"https://x.example","type":"t"{extra}}}"#
        )
    }

    #[test]
    fn keeps_the_published_text_and_indexes_altinn_attributes() {
        let json = event(
            r#","resource":"urn:altinn:resource:r","subject":"/party/1","alternativesubject":"/person/1""#,
        );
        let e = validate_event(&json).expect("valid");
        assert_eq!(e.json, json);
        assert_eq!(e.resource.as_deref(), Some("urn:altinn:resource:r"));
        assert_eq!(e.subject_key().as_deref(), Some("/party/1"));
        assert_eq!(e.alternative_subject.as_deref(), Some("/person/1"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let err = validate_event(r#"{"specversion":"0.9","id":"","type":3}"#).unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["specversion", "id", "source", "type"]);
    }

    #[test]
    fn time_needs_seconds_and_a_valid_offset() {
        assert!(validate_event(&event(r#","time":"2018-04-05T17:31:00.123Z""#)).is_ok());
        for bad in [
            "2018-04-05T18:31Z",
            "2018-04-05T18:31:00+25:00",
            "lunchtime",
            "2018-04-05T18:31:00+05",
        ] {
            assert!(
                validate_event(&event(&format!(r#","time":"{bad}""#))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn media_types() {
        assert!(is_media_type("application/json; charset=utf-8"));
        assert!(is_media_type("application/cloudevents+json"));
        assert!(!is_media_type("xyz"));
        assert!(!is_media_type("/json"));
    }

    #[test]
    fn extension_values_are_scalars() {
        assert!(validate_event(&event(r#","ext":1"#)).is_ok());
        assert!(validate_event(&event(r#","ext":1.5"#)).is_err());
        assert!(validate_event(&event(r#","ext":{"a":1}"#)).is_err());
        assert!(validate_event(&event(r#","ext":4294967296"#)).is_err());
        assert!(validate_event(&event(r#","Ext":"x""#)).is_err());
    }
}
