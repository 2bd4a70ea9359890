//! The document's examples, from the seeds the project was founded on: Dialogporten's two
//! example events and the end-user query's app event (with the source its redacted text leaves
//! out filled in as an app instance URL).

use serde_json::{Value, json};

/// Dialogporten's example 1: a dialog created.
pub fn dialog_created() -> Value {
    json!({
        "specversion": "1.0",
        "id": "91f2388f-bd8c-4647-8684-fd9f68af5b15",
        "type": "dialogporten.dialog.created.v1",
        "time": "2025-02-19T08:00:06.4014168Z",
        "resource": "urn:altinn:resource:super-simple-service",
        "resourceinstance": "f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
        "subject": "urn:altinn:organization:identifier-no::991825827",
        "source": "https://platform.altinn.no/dialogporten/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
        "data": {
            "process": "urn:some:process:id",
            "precedingProcess": "urn:some:preceding:process:id"
        }
    })
}

/// Dialogporten's example 2: an activity added to a dialog.
pub fn activity_added() -> Value {
    json!({
        "specversion": "1.0",
        "id": "91f2388f-bd8c-4647-8684-fd9f68af5b15",
        "type": "dialogporten.dialog.activity.signature-provided.v1",
        "time": "2025-02-20T13:04:02.6518542Z",
        "resource": "urn:altinn:resource:super-simple-service",
        "resourceinstance": "f4e6df3c-7434-44c3-875e-8dca1cdf0b20",
        "subject": "urn:altinn:organization:identifier-no::991825827",
        "source": "https://platform.altinn.no/dialogporten.no/api/v1/enduser/dialogs/f4e6df3c-7434-44c3-875e-8dca1cdf0b20/activities/21241c7e-819f-462b-b8a4-d5d32352311a",
        "data": {
            "activityId": "21241c7e-819f-462b-b8a4-d5d32352311a",
            "extendedActivityType": "additional-info-received",
            "process": "urn:some:process:id",
            "precedingProcess": "urn:some:preceding:process:id"
        }
    })
}

/// The end-user query's first app event, as an app publishes it (the server adds id and time).
pub fn app_event() -> Value {
    json!({
        "specversion": "1.0",
        "source": "https://ttd.apps.altinn.no/ttd/super-simple-service/instances/50002598/3ebaa1a2-9113-4905-ab26-a84fc3ec8acc",
        "subject": "/party/50002598",
        "type": "app.instance.created",
        "alternativesubject": "/person/07124912037"
    })
}
