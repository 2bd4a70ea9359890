//! Dialogporten's events: which a change writes to the outbox, and how an outbox row becomes the
//! CloudEvent that Dialogporten would publish.

use chrono::{DateTime, SecondsFormat, Utc};
use hendelse_model::dialogporten::activity_event_type;
use hendelse_store::dialog::OutboxEvent;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::model::{Activity, Dialog, Transmission};

pub const DIALOG_CREATED: &str = "dialogporten.dialog.created.v1";
pub const DIALOG_UPDATED: &str = "dialogporten.dialog.updated.v1";
pub const DIALOG_DELETED: &str = "dialogporten.dialog.deleted.v1";
pub const DIALOG_RESTORED: &str = "dialogporten.dialog.restored.v1";
pub const DIALOG_SEEN: &str = "dialogporten.dialog.seen.v1";
pub const TRANSMISSION_CREATED: &str = "dialogporten.dialog.transmission.created.v1";

/// Where Dialogporten's events point by default: `{base}/api/v1/enduser/dialogs/{id}`.
pub const DEFAULT_SOURCE_BASE: &str = "https://platform.altinn.no/dialogporten";

/// One event a change causes, before it gets its id.
#[derive(Debug, Clone, PartialEq)]
pub enum Occurrence {
    /// An event about the dialog itself (`created`, `updated`, `deleted`, `restored`, `seen`).
    Dialog(&'static str),
    /// An activity added, with the event-type suffix of its type.
    Activity(Activity, &'static str),
    Transmission(Transmission),
}

/// The outbox row of one occurrence: a new event id (or `id` when given, as the seen event takes
/// its seen-log entry's), the change's time, and `data` as Dialogporten builds it from the dialog
/// after the change.
pub fn outbox_event(
    dialog: &Dialog,
    occurrence: &Occurrence,
    time: DateTime<Utc>,
    id: Option<Uuid>,
) -> OutboxEvent {
    let dialog_path = format!("/api/v1/enduser/dialogs/{}", dialog.id);
    let mut data = Map::new();
    let (event_type, source_path) = match occurrence {
        Occurrence::Dialog(event_type) => ((*event_type).to_owned(), dialog_path),
        Occurrence::Activity(activity, suffix) => {
            data.insert("activityId".into(), activity.id.to_string().into());
            if let Some(extended) = &activity.extended_type {
                data.insert("extendedActivityType".into(), extended.clone().into());
            }
            (
                activity_event_type(suffix),
                format!("{dialog_path}/activities/{}", activity.id),
            )
        }
        Occurrence::Transmission(transmission) => {
            data.insert(
                "senderType".into(),
                transmission.sender.actor_type.clone().into(),
            );
            (
                TRANSMISSION_CREATED.to_owned(),
                format!("{dialog_path}/transmissions/{}", transmission.id),
            )
        }
    };
    if let Some(process) = &dialog.process {
        data.insert("process".into(), process.clone().into());
    }
    if let Some(preceding) = &dialog.preceding_process {
        data.insert("precedingProcess".into(), preceding.clone().into());
    }
    OutboxEvent {
        seq: 0,
        event_id: id.unwrap_or_else(Uuid::new_v4).to_string(),
        event_type,
        dialog_id: dialog.id.to_string(),
        resource: dialog.service_resource.clone(),
        subject: dialog.party.clone(),
        source_path,
        time,
        data: (!data.is_empty()).then(|| Value::Object(data).to_string()),
    }
}

/// The CloudEvent (JSON text) of an outbox row, attributes in the order of Dialogporten's
/// examples; `data` is left out when the row has none.
pub fn cloud_event(event: &OutboxEvent, source_base: &str) -> Result<String, serde_json::Error> {
    let mut map = Map::new();
    map.insert("specversion".into(), "1.0".into());
    map.insert("id".into(), event.event_id.clone().into());
    map.insert("type".into(), event.event_type.clone().into());
    map.insert(
        "time".into(),
        event
            .time
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .into(),
    );
    map.insert("resource".into(), event.resource.clone().into());
    map.insert("resourceinstance".into(), event.dialog_id.clone().into());
    map.insert("subject".into(), event.subject.clone().into());
    map.insert(
        "source".into(),
        format!("{}{}", source_base.trim_end_matches('/'), event.source_path).into(),
    );
    if let Some(data) = &event.data {
        map.insert("data".into(), serde_json::from_str::<Value>(data)?);
    }
    serde_json::to_string(&Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Actor;
    use chrono::TimeZone;
    use serde_json::json;

    fn dialog() -> Dialog {
        let at = Utc
            .with_ymd_and_hms(2025, 2, 19, 8, 0, 6)
            .single()
            .expect("time");
        Dialog {
            id: Uuid::parse_str("f4e6df3c-7434-44c3-875e-8dca1cdf0b20").expect("uuid"),
            revision: Uuid::nil(),
            org: "ttd".into(),
            service_resource: "urn:altinn:resource:super-simple-service".into(),
            party: "urn:altinn:organization:identifier-no::991825827".into(),
            progress: None,
            extended_status: None,
            external_reference: None,
            process: Some("urn:some:process:id".into()),
            preceding_process: Some("urn:some:preceding:process:id".into()),
            status: "New".into(),
            content: None,
            created_at: at,
            updated_at: at,
            deleted_at: None,
            activities: Vec::new(),
            transmissions: Vec::new(),
        }
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn dialog_created_is_the_seed_example() {
        let d = dialog();
        let time = Utc
            .timestamp_micros(1_739_952_006_401_416)
            .single()
            .expect("time");
        let id = Uuid::parse_str("91f2388f-bd8c-4647-8684-fd9f68af5b15").expect("uuid");
        let row = outbox_event(&d, &Occurrence::Dialog(DIALOG_CREATED), time, Some(id));
        let text = cloud_event(&row, "https://platform.altinn.no/dialogporten/").expect("event");
        assert_eq!(
            parse(&text),
            json!({
                "specversion": "1.0",
                "id": "91f2388f-bd8c-4647-8684-fd9f68af5b15",
                "type": "dialogporten.dialog.created.v1",
                "time": "2025-02-19T08:00:06.401416Z",
                "resource": "urn:altinn:resource:super-simple-service",
                "resourceinstance": "f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
                "subject": "urn:altinn:organization:identifier-no::991825827",
                "source": "https://platform.altinn.no/dialogporten/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
                "data": {
                    "process": "urn:some:process:id",
                    "precedingProcess": "urn:some:preceding:process:id"
                }
            })
        );
        assert!(text.starts_with(r#"{"specversion":"1.0","id":"#), "{text}");
        hendelse_model::validate_event(&text).expect("a valid CloudEvent");
    }

    #[test]
    fn activity_and_transmission_data() {
        let mut d = dialog();
        let activity = Activity {
            id: Uuid::parse_str("21241c7e-819f-462b-b8a4-d5d32352311a").expect("uuid"),
            created_at: d.created_at,
            activity_type: "SignatureProvided".into(),
            extended_type: Some("urn:x:additional-info-received".into()),
            transmission_id: None,
            performed_by: None,
            description: None,
        };
        let row = outbox_event(
            &d,
            &Occurrence::Activity(activity, "signature-provided"),
            d.created_at,
            None,
        );
        let event = parse(&cloud_event(&row, DEFAULT_SOURCE_BASE).expect("event"));
        assert_eq!(
            event["type"],
            "dialogporten.dialog.activity.signature-provided.v1"
        );
        assert_eq!(
            event["source"],
            "https://platform.altinn.no/dialogporten/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20/activities/21241c7e-819f-462b-b8a4-d5d32352311a"
        );
        assert_eq!(
            event["data"],
            json!({
                "activityId": "21241c7e-819f-462b-b8a4-d5d32352311a",
                "extendedActivityType": "urn:x:additional-info-received",
                "process": "urn:some:process:id",
                "precedingProcess": "urn:some:preceding:process:id"
            })
        );

        d.process = None;
        d.preceding_process = None;
        let transmission = Transmission {
            id: Uuid::nil(),
            created_at: d.created_at,
            transmission_type: "Information".into(),
            extended_type: None,
            related_transmission_id: None,
            sender: Actor {
                actor_type: "ServiceOwner".into(),
                actor_id: None,
                actor_name: None,
            },
            content: None,
            attachments: None,
        };
        let row = outbox_event(
            &d,
            &Occurrence::Transmission(transmission),
            d.created_at,
            None,
        );
        let event = parse(&cloud_event(&row, DEFAULT_SOURCE_BASE).expect("event"));
        assert_eq!(event["type"], TRANSMISSION_CREATED);
        assert_eq!(event["data"], json!({"senderType": "ServiceOwner"}));
        assert!(
            event["source"]
                .as_str()
                .is_some_and(|s| s.ends_with("/transmissions/00000000-0000-0000-0000-000000000000"))
        );

        let row = outbox_event(&d, &Occurrence::Dialog(DIALOG_UPDATED), d.created_at, None);
        assert_eq!(row.data, None, "no data at all without process fields");
        let event = parse(&cloud_event(&row, DEFAULT_SOURCE_BASE).expect("event"));
        assert!(event.get("data").is_none());
        assert_ne!(row.event_id, Uuid::nil().to_string());
    }
}
