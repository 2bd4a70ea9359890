//! Validation of dialog requests, with Dialogporten's rules: every problem of a request is
//! collected (so a client can fix them in one go) and named by its field.

use chrono::{DateTime, Utc};
use hendelse_model::subject::{ORGANIZATION_URN, PERSON_URN, is_digits};
use hendelse_model::{FieldError, RESOURCE_PREFIX};
use serde_json::Value;
use uuid::Uuid;

use crate::model::*;

const MAX_URI: usize = 1023;
const MAX_TEXT: usize = 255;

/// The fields of a dialog that a replace sets, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub progress: Option<i64>,
    pub extended_status: Option<String>,
    pub external_reference: Option<String>,
    pub process: Option<String>,
    pub preceding_process: Option<String>,
    /// `None` keeps the dialog's status (or gives a new one the default).
    pub status: Option<String>,
    pub content: Option<Value>,
}

impl Fields {
    pub fn apply(self, dialog: &mut Dialog) {
        dialog.progress = self.progress;
        dialog.extended_status = self.extended_status;
        dialog.external_reference = self.external_reference;
        dialog.process = self.process;
        dialog.preceding_process = self.preceding_process;
        if let Some(status) = self.status {
            dialog.status = status;
        }
        dialog.content = self.content;
    }
}

/// Collects every problem of a request, so that a client can fix them in one go.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The canonical name of a status, matched without regard to case.
pub fn parse_status(text: &str) -> Option<&'static str> {
    DIALOG_STATUSES
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(text.trim()))
}

/// The canonical API name and the event-type suffix of an activity type, given either (without
/// regard to case): `SignatureProvided` or `signature-provided`.
pub fn parse_activity_type(text: &str) -> Option<(&'static str, &'static str)> {
    let text = text.trim();
    ACTIVITY_TYPES
        .iter()
        .copied()
        .find(|(name, suffix)| name.eq_ignore_ascii_case(text) || suffix.eq_ignore_ascii_case(text))
}

fn parse_choice(text: &str, choices: &[&'static str]) -> Option<&'static str> {
    choices
        .iter()
        .copied()
        .find(|c| c.eq_ignore_ascii_case(text.trim()))
}

/// A service resource: `urn:altinn:resource:{id}`.
pub fn check_resource(value: Option<&str>, problems: &mut Problems) -> Option<String> {
    match value.map(str::trim) {
        None | Some("") => problems.add("serviceResource", "is required"),
        Some(r) => match r.strip_prefix(RESOURCE_PREFIX) {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_TEXT
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Some(r.to_owned());
            }
            _ => problems.add(
                "serviceResource",
                format!("must be {RESOURCE_PREFIX}{{id}} (letters, digits, '-' and '_')"),
            ),
        },
    }
    None
}

/// A party: an organisation (9 digits) or person (11 digits) URN; Dialogporten's `::` form is
/// kept as given.
pub fn check_party(value: Option<&str>, problems: &mut Problems) -> Option<String> {
    let Some(party) = value.map(str::trim).filter(|p| !p.is_empty()) else {
        problems.add("party", "is required");
        return None;
    };
    let number = |prefix: &str| {
        party
            .strip_prefix(prefix)
            .map(|rest| rest.strip_prefix(':').unwrap_or(rest))
    };
    let ok = match (number(ORGANIZATION_URN), number(PERSON_URN)) {
        (Some(orgno), _) => is_digits(orgno, 9),
        (_, Some(pid)) => is_digits(pid, 11),
        _ => false,
    };
    if ok {
        Some(party.to_owned())
    } else {
        problems.add(
            "party",
            format!("must be {ORGANIZATION_URN}{{9 digits}} or {PERSON_URN}{{11 digits}}"),
        );
        None
    }
}

/// An absolute URI (`scheme:rest`), as `process` and extended types must be.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

fn optional_uri(field: &str, value: Option<String>, problems: &mut Problems) -> Option<String> {
    let value = value.filter(|v| !v.trim().is_empty())?;
    if value.len() > MAX_URI || !is_uri(&value) {
        problems.add(
            field,
            format!("must be an absolute URI of at most {MAX_URI} characters"),
        );
        return None;
    }
    Some(value)
}

fn optional_text(field: &str, value: Option<String>, problems: &mut Problems) -> Option<String> {
    let value = value.filter(|v| !v.trim().is_empty())?;
    if value.chars().count() > MAX_TEXT {
        problems.add(field, format!("must be at most {MAX_TEXT} characters"));
        return None;
    }
    Some(value)
}

fn optional_uuid(field: &str, value: Option<&str>, problems: &mut Problems) -> Option<Uuid> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            problems.add(field, "must be a UUID");
            None
        }
    }
}

/// A dialog id given by its creator.
pub fn check_id(value: Option<&str>, problems: &mut Problems) -> Option<Uuid> {
    let id = optional_uuid("id", value, problems)?;
    if id.is_nil() {
        problems.add("id", "must not be the nil UUID");
        return None;
    }
    Some(id)
}

pub fn check_fields(input: &DialogInput, problems: &mut Problems) -> Fields {
    let progress = match input.progress {
        Some(p) if !(0..=100).contains(&p) => {
            problems.add("progress", "must be between 0 and 100");
            None
        }
        other => other,
    };
    let status = match input.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => {
            let status = parse_status(s);
            if status.is_none() {
                problems.add(
                    "status",
                    format!("must be one of {}", DIALOG_STATUSES.join(", ")),
                );
            }
            status.map(str::to_owned)
        }
    };
    let content = match &input.content {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(Value::Object(map.clone())),
        Some(_) => {
            problems.add("content", "must be a JSON object");
            None
        }
    };
    let process = optional_uri("process", input.process.clone(), problems);
    let preceding_process = optional_uri(
        "precedingProcess",
        input.preceding_process.clone(),
        problems,
    );
    // As Dialogporten's validator: a preceding process belongs to a process.
    if preceding_process.is_some() && input.process.as_deref().is_none_or(|p| p.trim().is_empty()) {
        problems.add("precedingProcess", "cannot be set without process");
    }
    Fields {
        progress,
        extended_status: optional_text("extendedStatus", input.extended_status.clone(), problems),
        external_reference: optional_text(
            "externalReference",
            input.external_reference.clone(),
            problems,
        ),
        process,
        preceding_process,
        status,
        content,
    }
}

/// An activity to add, with the event-type suffix of its type (repeated ids are the caller's to
/// find). Without `id` it gets a new UUIDv7, without `createdAt` the change's time.
pub fn check_activity(
    field: &str,
    input: &ActivityInput,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<(Activity, &'static str)> {
    let before = problems.0.len();
    let id = optional_uuid(&at(field, "id"), input.id.as_deref(), problems);
    let kind = match input.activity_type.as_deref() {
        None => {
            problems.add(at(field, "type"), "is required");
            None
        }
        Some(t) => {
            let kind = parse_activity_type(t);
            if kind.is_none() {
                problems.add(
                    at(field, "type"),
                    format!(
                        "must be one of {}",
                        ACTIVITY_TYPES
                            .iter()
                            .map(|(name, _)| *name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            kind
        }
    };
    let extended_type = optional_uri(
        &at(field, "extendedType"),
        input.extended_type.clone(),
        problems,
    );
    let transmission_id = optional_uuid(
        &at(field, "transmissionId"),
        input.transmission_id.as_deref(),
        problems,
    );
    let performed_by = object_or_null(&at(field, "performedBy"), &input.performed_by, problems);
    let (name, suffix) = kind?;
    if problems.0.len() > before {
        return None;
    }
    Some((
        Activity {
            id: id.unwrap_or_else(Uuid::now_v7),
            created_at: input.created_at.unwrap_or(now),
            activity_type: name.to_owned(),
            extended_type,
            transmission_id,
            performed_by,
            description: input.description.clone().filter(|d| !d.is_null()),
        },
        suffix,
    ))
}

pub fn check_transmission(
    field: &str,
    input: &TransmissionInput,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> Option<Transmission> {
    let before = problems.0.len();
    let id = optional_uuid(&at(field, "id"), input.id.as_deref(), problems);
    let kind = match input.transmission_type.as_deref() {
        None => {
            problems.add(at(field, "type"), "is required");
            None
        }
        Some(t) => {
            let kind = parse_choice(t, TRANSMISSION_TYPES);
            if kind.is_none() {
                problems.add(
                    at(field, "type"),
                    format!("must be one of {}", TRANSMISSION_TYPES.join(", ")),
                );
            }
            kind
        }
    };
    let extended_type = optional_uri(
        &at(field, "extendedType"),
        input.extended_type.clone(),
        problems,
    );
    let related = optional_uuid(
        &at(field, "relatedTransmissionId"),
        input.related_transmission_id.as_deref(),
        problems,
    );
    // Dialogporten requires a sender; a transmission without one is the service owner's.
    let sender = input.sender.clone().unwrap_or_default();
    let actor_type = match sender.actor_type.as_deref() {
        None => Some("ServiceOwner"),
        Some(t) => {
            let actor = parse_choice(t, ACTOR_TYPES);
            if actor.is_none() {
                problems.add(
                    at(field, "sender.actorType"),
                    format!("must be one of {}", ACTOR_TYPES.join(", ")),
                );
            }
            actor
        }
    };
    let content = object_or_null(&at(field, "content"), &input.content, problems);
    let attachments = match &input.attachments {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(Value::Array(items.clone())),
        Some(_) => {
            problems.add(at(field, "attachments"), "must be an array");
            None
        }
    };
    let (kind, actor_type) = (kind?, actor_type?);
    if problems.0.len() > before {
        return None;
    }
    Some(Transmission {
        id: id.unwrap_or_else(Uuid::now_v7),
        created_at: input.created_at.unwrap_or(now),
        transmission_type: kind.to_owned(),
        extended_type,
        related_transmission_id: related,
        sender: Actor {
            actor_type: actor_type.to_owned(),
            actor_id: sender.actor_id.filter(|v| !v.trim().is_empty()),
            actor_name: sender.actor_name.filter(|v| !v.trim().is_empty()),
        },
        content,
        attachments,
    })
}

/// `prefix.name`, or `name` alone for an empty prefix.
fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn object_or_null(field: &str, value: &Option<Value>, problems: &mut Problems) -> Option<Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(Value::Object(map.clone())),
        Some(_) => {
            problems.add(field, "must be a JSON object");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activity_type_of_the_design_has_an_api_name() {
        let suffixes: Vec<&str> = ACTIVITY_TYPES.iter().map(|(_, s)| *s).collect();
        assert_eq!(suffixes, hendelse_model::dialogporten::ACTIVITY_TYPES);
        for (name, suffix) in ACTIVITY_TYPES {
            assert_eq!(parse_activity_type(name), Some((*name, *suffix)));
            assert_eq!(parse_activity_type(suffix), Some((*name, *suffix)));
            assert_eq!(
                parse_activity_type(&name.to_lowercase()),
                Some((*name, *suffix))
            );
        }
        assert_eq!(parse_activity_type("Seen"), None);
    }

    #[test]
    fn parties_resources_and_uris() {
        let mut p = Problems::default();
        for ok in [
            "urn:altinn:organization:identifier-no:991825827",
            "urn:altinn:organization:identifier-no::991825827",
            "urn:altinn:person:identifier-no:07124912037",
        ] {
            assert_eq!(check_party(Some(ok), &mut p).as_deref(), Some(ok));
        }
        assert!(p.is_empty());
        for bad in [
            "urn:altinn:organization:identifier-no:12345678",
            "urn:altinn:person:identifier-no:0712491203x",
            "/party/50001337",
        ] {
            assert_eq!(check_party(Some(bad), &mut p), None, "{bad}");
        }
        assert_eq!(check_party(None, &mut p), None);
        assert_eq!(p.0.len(), 4);
        let mut p = Problems::default();
        assert!(check_resource(Some("urn:altinn:resource:super-simple-service"), &mut p).is_some());
        assert!(check_resource(Some("urn:altinn:resource:"), &mut p).is_none());
        assert!(check_resource(Some("super-simple-service"), &mut p).is_none());
        assert_eq!(p.0.len(), 2);
        assert!(is_uri("urn:some:process:id"));
        assert!(is_uri("https://example.com/x"));
        assert!(!is_uri("no scheme"));
        assert!(!is_uri("1abc:x"));
        assert!(!is_uri("urn:"));
    }

    #[test]
    fn fields_are_checked_together() {
        let input = DialogInput {
            progress: Some(101),
            status: Some("inprogress".into()),
            process: Some("not a uri".into()),
            content: Some(Value::String("x".into())),
            ..DialogInput::default()
        };
        let mut p = Problems::default();
        let fields = check_fields(&input, &mut p);
        assert_eq!(fields.status.as_deref(), Some("InProgress"));
        let names: Vec<&str> = p.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["progress", "content", "process"]);
    }

    #[test]
    fn a_preceding_process_needs_a_process() {
        let alone = DialogInput {
            preceding_process: Some("urn:some:preceding:process".into()),
            ..DialogInput::default()
        };
        let mut p = Problems::default();
        check_fields(&alone, &mut p);
        let names: Vec<&str> = p.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["precedingProcess"]);
        let both = DialogInput {
            process: Some("urn:some:process".into()),
            ..alone
        };
        let mut p = Problems::default();
        check_fields(&both, &mut p);
        assert!(p.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn activities_and_transmissions() {
        let now = Utc::now();
        let mut p = Problems::default();
        let (a, suffix) = check_activity(
            "activities[0]",
            &ActivityInput {
                activity_type: Some("signature-provided".into()),
                extended_type: Some("urn:x:additional-info-received".into()),
                ..ActivityInput::default()
            },
            now,
            &mut p,
        )
        .expect("valid");
        assert_eq!(
            (a.activity_type.as_str(), suffix),
            ("SignatureProvided", "signature-provided")
        );
        assert_eq!(a.created_at, now);
        assert!(check_activity("a", &ActivityInput::default(), now, &mut p).is_none());
        assert_eq!(p.0[0].field, "a.type");

        let mut p = Problems::default();
        let t = check_transmission(
            "t",
            &TransmissionInput {
                transmission_type: Some("submission".into()),
                sender: Some(ActorInput {
                    actor_type: Some("partyrepresentative".into()),
                    ..ActorInput::default()
                }),
                ..TransmissionInput::default()
            },
            now,
            &mut p,
        )
        .expect("valid");
        assert_eq!(t.transmission_type, "Submission");
        assert_eq!(t.sender.actor_type, "PartyRepresentative");
        let default_sender = check_transmission(
            "t",
            &TransmissionInput {
                transmission_type: Some("Information".into()),
                ..TransmissionInput::default()
            },
            now,
            &mut p,
        )
        .expect("valid");
        assert_eq!(default_sender.sender.actor_type, "ServiceOwner");
        assert!(
            check_transmission(
                "t",
                &TransmissionInput {
                    transmission_type: Some("Letter".into()),
                    ..TransmissionInput::default()
                },
                now,
                &mut p
            )
            .is_none()
        );
        assert_eq!(p.0.len(), 1);
    }
}
