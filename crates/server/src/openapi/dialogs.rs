//! The JSON Schemas of the dialog service's request bodies: the rules of
//! [`hendelse_dialog::validate`] over the shapes of [`hendelse_dialog::model`]'s inputs, with the
//! choices taken from the same constants the validation uses. Empty or blank texts count as
//! absent, as there.

use hendelse_dialog::model::{ACTIVITY_TYPES, ACTOR_TYPES, DIALOG_STATUSES, TRANSMISSION_TYPES};
use serde_json::{Value, json};

/// A UUID in its hyphenated form; blank for none.
const UUID: &str =
    "^(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}| *)$";
/// An absolute URI (`scheme:rest`, no white space); blank for none.
const ABSOLUTE_URI: &str = "^(?:[A-Za-z][A-Za-z0-9+.-]*:[!-~]+| *)$";
/// RFC 3339, as chrono reads a `DateTime<Utc>`.
const TIMESTAMP: &str = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$";

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn uuid() -> Value {
    nullable(json!({"type": "string", "pattern": UUID}))
}

fn uri() -> Value {
    nullable(json!({"type": "string", "maxLength": 1023, "pattern": ABSOLUTE_URI}))
}

fn text() -> Value {
    nullable(json!({"type": "string", "maxLength": 255}))
}

fn object() -> Value {
    json!({"type": ["object", "null"]})
}

fn timestamp() -> Value {
    nullable(json!({"type": "string", "pattern": TIMESTAMP}))
}

/// An activity or transmission: the fields both have (`type` as `kind` says), then `more`.
fn item(kind: Value, more: Value) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("id".into(), uuid());
    properties.insert("createdAt".into(), timestamp());
    properties.insert("type".into(), kind);
    properties.insert("extendedType".into(), uri());
    if let Value::Object(more) = more {
        properties.extend(more);
    }
    json!({"type": "object", "required": ["type"], "properties": properties})
}

fn activity() -> Value {
    let types: Vec<&str> = ACTIVITY_TYPES.iter().map(|(name, _)| *name).collect();
    item(
        json!({"type": "string", "enum": types,
               "description": "Dialogporten's name; the event type's part (signature-provided) is read as the same, and case does not matter"}),
        json!({
            "transmissionId": uuid(),
            "performedBy": object(),
            "description": {}
        }),
    )
}

fn transmission() -> Value {
    item(
        json!({"type": "string", "enum": TRANSMISSION_TYPES}),
        json!({
            "relatedTransmissionId": uuid(),
            "sender": {
                "type": ["object", "null"],
                "description": "Without one, the service owner",
                "properties": {
                    "actorType": nullable(json!({"type": "string", "enum": ACTOR_TYPES})),
                    "actorId": nullable(json!({"type": "string"})),
                    "actorName": nullable(json!({"type": "string"}))
                }
            },
            "content": object(),
            "attachments": {"type": ["array", "null"], "items": {}}
        }),
    )
}

/// The fields of a dialog; `create` adds which of them are required.
fn dialog(required: &[&str], description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "required": required,
        "properties": {
            "id": uuid(),
            "serviceResource": {"type": "string",
                                "pattern": "^urn:altinn:resource:[A-Za-z0-9_-]{1,255}$"},
            "party": {"type": "string",
                      "pattern": "^urn:altinn:(?:organization:identifier-no::?[0-9]{9}|person:identifier-no::?[0-9]{11})$"},
            "progress": nullable(json!({"type": "integer", "minimum": 0, "maximum": 100})),
            "extendedStatus": text(),
            "externalReference": text(),
            "process": uri(),
            "precedingProcess": uri(),
            "status": nullable(json!({"type": "string", "enum": DIALOG_STATUSES})),
            "content": object(),
            "activities": {"type": ["array", "null"], "items": activity()},
            "transmissions": {"type": ["array", "null"], "items": transmission()}
        },
        // A preceding process (not blank) needs a process (not blank either).
        "if": {"required": ["precedingProcess"],
               "properties": {"precedingProcess": {"type": "string", "pattern": "^[A-Za-z]"}}},
        "then": {"required": ["process"],
                 "properties": {"process": {"type": "string", "pattern": "^[A-Za-z]"}}},
        "examples": [{
            "serviceResource": "urn:altinn:resource:super-simple-service",
            "party": "urn:altinn:organization:identifier-no:991825827",
            "process": "urn:some:process:id",
            "status": "New",
            "activities": [{"type": "DialogCreated"}]
        }]
    })
}

crate::openapi::written! {
    /// The body of a create.
    NewDialog => dialog(&["serviceResource", "party"], "A new dialog; without id it gets a UUIDv7");
    /// The body of a replace: `id`, `serviceResource` and `party` may only repeat the dialog's own.
    DialogReplacement => dialog(&[], "The dialog's fields; id, serviceResource and party may only repeat the dialog's own (400 otherwise)");
    /// An activity to add.
    NewActivity => activity();
    /// A transmission to add.
    NewTransmission => transmission();
    /// A JSON Patch (RFC 6902) of the dialog as the service-owner API shows it.
    DialogPatch => json!({
        "type": "array",
        "items": {
            "oneOf": [
                {"type": "object", "required": ["op", "path", "value"],
                 "properties": {"op": {"enum": ["add", "replace", "test"]}, "path": pointer(), "value": {}}},
                {"type": "object", "required": ["op", "path"],
                 "properties": {"op": {"enum": ["remove"]}, "path": pointer()}},
                {"type": "object", "required": ["op", "path", "from"],
                 "properties": {"op": {"enum": ["move", "copy"]}, "path": pointer(), "from": pointer()}}
            ]
        },
        "examples": [[{"op": "replace", "path": "/status", "value": "Completed"}]]
    });
}

/// A JSON Pointer (RFC 6901).
fn pointer() -> Value {
    json!({"type": "string", "pattern": "^(?:/(?:[^~/]|~[01])*)*$"})
}
