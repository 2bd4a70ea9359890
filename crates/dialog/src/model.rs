//! Dialogs as the API shows them and as the store keeps them (one JSON document), and the
//! requests that create and change them; their validation is in [`crate::validate`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// The statuses a dialog may have, as Dialogporten names them.
pub const DIALOG_STATUSES: &[&str] = &[
    "New",
    "InProgress",
    "Draft",
    "Sent",
    "RequiresAttention",
    "Completed",
    "NotApplicable",
    "Awaiting",
];

/// The status of a dialog created without one.
pub const DEFAULT_STATUS: &str = "New";

/// Activity types as Dialogporten's API names them, each beside the suffix of its event type
/// (`dialogporten.dialog.activity.<suffix>.v1`), in the order of
/// [`hendelse_model::dialogporten::ACTIVITY_TYPES`].
pub const ACTIVITY_TYPES: &[(&str, &str)] = &[
    ("DialogCreated", "created"),
    ("DialogClosed", "closed"),
    ("Information", "information"),
    ("TransmissionOpened", "transmission-opened"),
    ("PaymentMade", "payment-made"),
    ("SignatureProvided", "signature-provided"),
    ("DialogOpened", "dialog-opened"),
    ("DialogDeleted", "dialog-deleted"),
    ("DialogRestored", "dialog-restored"),
    ("SentToSigning", "sent-to-signing"),
    ("SentToFormFill", "sent-to-form-fill"),
    ("SentToSendIn", "sent-to-send-in"),
    ("SentToPayment", "sent-to-payment"),
    ("FormSubmitted", "form-submitted"),
    ("FormSaved", "form-saved"),
    ("CorrespondenceOpened", "correspondence-opened"),
    ("CorrespondenceConfirmed", "correspondence-confirmed"),
];

pub const TRANSMISSION_TYPES: &[&str] = &[
    "Information",
    "Acceptance",
    "Rejection",
    "Request",
    "Alert",
    "Decision",
    "Submission",
    "Correction",
];

/// Who sent a transmission or performed an activity.
pub const ACTOR_TYPES: &[&str] = &["ServiceOwner", "PartyRepresentative"];

/// One dialog, exactly as stored and (with its seen log) as the service-owner API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dialog {
    pub id: Uuid,
    pub revision: Uuid,
    /// The org that created the dialog.
    pub org: String,
    pub service_resource: String,
    pub party: String,
    pub progress: Option<i64>,
    pub extended_status: Option<String>,
    pub external_reference: Option<String>,
    pub process: Option<String>,
    pub preceding_process: Option<String>,
    pub status: String,
    pub content: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub activities: Vec<Activity>,
    pub transmissions: Vec<Transmission>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub activity_type: String,
    pub extended_type: Option<String>,
    pub transmission_id: Option<Uuid>,
    pub performed_by: Option<Value>,
    pub description: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transmission {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub transmission_type: String,
    pub extended_type: Option<String>,
    pub related_transmission_id: Option<Uuid>,
    pub sender: Actor,
    pub content: Option<Value>,
    pub attachments: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
}

/// A dialog with the users who have seen its latest change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialogView {
    #[serde(flatten)]
    pub dialog: Dialog,
    pub seen_since_last_update: Vec<SeenView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeenView {
    pub id: Uuid,
    pub seen_at: DateTime<Utc>,
    pub seen_by: SeenBy,
    /// For end users: whether the entry is their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_current_end_user: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeenBy {
    pub actor_type: &'static str,
    /// The user's URN; end users see only their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
}

/// A page of a listing; `continuationToken` continues it when `hasNextPage`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    pub continuation_token: Option<String>,
}

/// The body of a create, and of a replace (where `id`, `serviceResource` and `party` may only
/// repeat the dialog's own).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DialogInput {
    pub id: Option<String>,
    pub service_resource: Option<String>,
    pub party: Option<String>,
    #[serde(default, deserialize_with = "hendelse_wire::whole::option")]
    pub progress: Option<i64>,
    pub extended_status: Option<String>,
    pub external_reference: Option<String>,
    pub process: Option<String>,
    pub preceding_process: Option<String>,
    pub status: Option<String>,
    pub content: Option<Value>,
    pub activities: Option<Vec<ActivityInput>>,
    pub transmissions: Option<Vec<TransmissionInput>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityInput {
    pub id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    pub activity_type: Option<String>,
    pub extended_type: Option<String>,
    pub transmission_id: Option<String>,
    pub performed_by: Option<Value>,
    pub description: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransmissionInput {
    pub id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(rename = "type")]
    pub transmission_type: Option<String>,
    pub extended_type: Option<String>,
    pub related_transmission_id: Option<String>,
    pub sender: Option<ActorInput>,
    pub content: Option<Value>,
    pub attachments: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorInput {
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
}
