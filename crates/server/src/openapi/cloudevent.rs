//! The JSON Schemas of a CloudEvent as `POST /events` accepts it and of an app event as
//! `POST /app` does: the rules of [`hendelse_model::cloudevent::validate_map`] (and of the app
//! route) as far as JSON Schema can state them. What it cannot (an app event's subject naming the
//! party of its source) the operation's description says.
//!
//! Written as JSON Schema (see [`super::written`]): the rules are patterns and keywords
//! (`patternProperties`, `not`) that utoipa's schema model does not keep.

use serde_json::{Value, json};

/// RFC 3986 `pchar`.
const PCHAR: &str = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
/// A `segment-nz-nc`: a first path segment without a colon.
const SEGMENT_NC: &str = r"(?:[A-Za-z0-9._~!$&'()*+,;=@-]|%[0-9A-Fa-f]{2})";
/// `authority` with a registered name or IPv4 address for its host (IP literals left out).
const AUTHORITY: &str = r"(?:(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*@)?(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?";

/// An absolute URI (RFC 3986 `URI`), without `^`/`$`.
fn uri() -> String {
    let tail = tail();
    format!(
        "[A-Za-z][A-Za-z0-9+.-]*:(?://{AUTHORITY}(?:/{PCHAR}*)*|/(?:{PCHAR}+(?:/{PCHAR}*)*)?|{PCHAR}+(?:/{PCHAR}*)*)?{tail}"
    )
}

/// A URI-reference (RFC 3986): an absolute URI or a relative reference.
fn uri_reference() -> String {
    let tail = tail();
    let relative = format!(
        "(?://{AUTHORITY}(?:/{PCHAR}*)*|/(?:{PCHAR}+(?:/{PCHAR}*)*)?|{SEGMENT_NC}+(?:/{PCHAR}*)*)?{tail}"
    );
    format!("^(?:{}|{relative})$", uri())
}

/// `[ "?" query ] [ "#" fragment ]`.
fn tail() -> String {
    format!("(?:\\?(?:{PCHAR}|[/?])*)?(?:#(?:{PCHAR}|[/?])*)?")
}

/// RFC 3339 with seconds, as CloudEvents requires.
const TIMESTAMP: &str = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$";
/// `type/subtype` with optional parameters (RFC 2045 tokens).
const MEDIA_TYPE: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+/[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:;[ -~]*)?$";
/// Standard base64 with padding (RFC 4648), its unused bits zero.
const BASE64: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$";

fn non_empty(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": description})
}

/// The attributes both schemas share.
fn attributes() -> serde_json::Map<String, Value> {
    let mut properties = serde_json::Map::new();
    properties.insert(
        "specversion".into(),
        json!({"type": "string", "enum": ["1.0"]}),
    );
    properties.insert("id".into(), non_empty("Unique per source"));
    properties.insert(
        "source".into(),
        json!({"type": "string", "minLength": 1, "pattern": uri_reference(),
               "description": "A URI-reference (RFC 3986)"}),
    );
    properties.insert(
        "type".into(),
        non_empty("e.g. dialogporten.dialog.created.v1"),
    );
    properties.insert(
        "subject".into(),
        json!({"type": ["string", "null"], "minLength": 1}),
    );
    properties.insert(
        "time".into(),
        json!({"type": ["string", "null"], "pattern": TIMESTAMP,
               "description": "RFC 3339, with seconds"}),
    );
    properties.insert(
        "datacontenttype".into(),
        json!({"type": ["string", "null"], "pattern": MEDIA_TYPE}),
    );
    properties.insert(
        "dataschema".into(),
        json!({"type": ["string", "null"], "pattern": format!("^{}$", uri()),
               "description": "An absolute URI"}),
    );
    properties.insert(
        "resourceinstance".into(),
        json!({"type": ["string", "null"], "minLength": 1}),
    );
    properties.insert(
        "alternativesubject".into(),
        json!({"type": ["string", "null"], "minLength": 1}),
    );
    properties.insert("data".into(), json!({"description": "Any JSON value"}));
    properties.insert(
        "data_base64".into(),
        json!({"type": ["string", "null"], "pattern": BASE64,
               "description": "Base64; an event carries either data or data_base64"}),
    );
    properties
}

/// Extension attributes: lower-case letters and digits, with a string, boolean or 32-bit integer.
/// Written as `patternProperties` for the names not declared (so that typed clients keep the
/// declared attributes' own types) and nothing else.
fn extension_rules(schema: &mut serde_json::Map<String, Value>) {
    let declared: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let pattern = format!("^(?!(?:{})$)[a-z0-9]+$", declared.join("|"));
    schema.insert(
        "patternProperties".into(),
        json!({pattern: {"anyOf": [
            {"type": ["string", "boolean", "null"]},
            {"type": "integer", "minimum": -2_147_483_648_i64, "maximum": 2_147_483_647_i64}
        ]}}),
    );
    schema.insert("additionalProperties".into(), json!(false));
}

/// Both `data` and `data_base64`.
fn both_data() -> Value {
    json!({
        "required": ["data", "data_base64"],
        "properties": {"data": {"not": {"type": "null"}}, "data_base64": {"type": "string"}}
    })
}

/// A CloudEvent in the JSON format (CloudEvents 1.0.2) with Altinn's extension attributes.
fn cloud_event() -> Value {
    let mut properties = attributes();
    properties.insert(
        "resource".into(),
        json!({"type": "string", "pattern": "^urn:altinn:resource:.+$",
               "description": "The resource the event is about; the caller's org must own it"}),
    );
    let mut schema = serde_json::Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert(
        "description".into(),
        json!(
            "A CloudEvent (JSON format, CloudEvents 1.0.2) with Altinn's extension \
               attributes; any other extension attribute is kept as published. An event \
               without `resource` is for administrators (altinn:events.publish.admin) only."
        ),
    );
    schema.insert(
        "required".into(),
        json!(["specversion", "id", "source", "type", "resource"]),
    );
    schema.insert("properties".into(), Value::Object(properties));
    extension_rules(&mut schema);
    schema.insert("not".into(), both_data());
    schema.insert(
        "examples".into(),
        json!([crate::openapi::examples::dialog_created()]),
    );
    Value::Object(schema)
}

/// An app event as `POST /app` takes it: the server sets `id`, `time`, `resource` and
/// `resourceinstance` from `source`.
fn app_event() -> Value {
    let mut properties = attributes();
    properties.insert(
        "source".into(),
        json!({"type": "string",
               "pattern": "^https://[A-Za-z0-9_-]+\\.apps\\.[A-Za-z0-9.-]*/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/instances/[0-9]{1,18}/[A-Za-z0-9_-]+$",
               "description": "https://{org}.apps.{host}/{org}/{app}/instances/{partyId}/{instanceGuid}, of an app of the caller's org"}),
    );
    properties.insert(
        "subject".into(),
        json!({"type": "string", "pattern": "^/party/[0-9]{1,18}$",
               "description": "/party/{partyId}, the party in source"}),
    );
    properties.insert(
        "alternativesubject".into(),
        json!({"type": ["string", "null"],
               "pattern": "^/(?:person/[0-9]{11}|organisation/[0-9]{9})$"}),
    );
    for set_by_server in ["id", "time", "resource", "resourceinstance"] {
        properties.insert(
            set_by_server.into(),
            json!({"description": "Set by the server; a value given is replaced"}),
        );
    }
    let mut schema = serde_json::Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert(
        "description".into(),
        json!(
            "An app event; source and subject must name the same party, and the org of \
               source's host its path's (400 otherwise)."
        ),
    );
    schema.insert("required".into(), json!(["source", "type", "subject"]));
    schema.insert("properties".into(), Value::Object(properties));
    extension_rules(&mut schema);
    schema.insert("not".into(), both_data());
    schema.insert(
        "examples".into(),
        json!([crate::openapi::examples::app_event()]),
    );
    Value::Object(schema)
}

crate::openapi::written! {
    /// A CloudEvent as `POST /events` takes it and the queries answer.
    CloudEvent => cloud_event();
    /// An app event as `POST /app` takes it.
    AppEvent => app_event();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        regex_automata::meta::Regex::new(pattern)
            .expect("the pattern compiles")
            .is_match(text)
    }

    #[test]
    fn uri_references_as_fluent_uri_reads_them() {
        let pattern = uri_reference();
        for text in [
            "https://example.com/x?y=1#z",
            "#fragment",
            "/relative/path",
            "urn:altinn:resource:x",
            "a/b",
            "//host:8080/p",
            "%41",
        ] {
            assert!(matches(&pattern, text), "{text}");
            assert!(fluent_uri::UriRef::parse(text).is_ok(), "{text}");
        }
        for text in ["a b", "1:x", "%zz", "http://x/#a#b", "ü", "//h:p"] {
            assert!(!matches(&pattern, text), "{text}");
            assert!(fluent_uri::UriRef::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn base64_and_timestamps() {
        assert!(matches(BASE64, "aGVsbG8="));
        assert!(!matches(BASE64, "aGVsbG9="), "unused bits set");
        assert!(matches(TIMESTAMP, "2018-04-05T17:31:00Z"));
        assert!(!matches(TIMESTAMP, "2018-04-05T17:31Z"));
    }
}
