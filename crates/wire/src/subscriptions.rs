//! Webhook subscriptions and their deliveries, in Altinn's shapes (camelCase, `endPoint`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A new subscription; see the README's "Webhooks" for the rules. Empty texts count as absent.
/// Its `Debug` leaves the secret out, so that no log line can carry it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_subject_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_filter: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_subunits: bool,
    /// Standard Webhooks signing secret (`whsec_` + base64); never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Up to this many events in one POST as `application/cloudevents-batch+json` (1 to 1000;
    /// 1, the default, sends each event on its own as `application/cloudevents+json`).
    #[serde(
        default,
        deserialize_with = "crate::whole::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_events_per_batch: Option<u32>,
    /// How long a batch that is not full waits for more events, in milliseconds (0 to 60000,
    /// default 0: a batch holds what is there when it is queued).
    #[serde(
        default,
        deserialize_with = "crate::whole::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait_ms: Option<u32>,
    /// At most this many deliveries (requests) per second, over all nodes (1 to 10000; default:
    /// no limit).
    #[serde(
        default,
        deserialize_with = "crate::whole::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit: Option<u32>,
}

impl std::fmt::Debug for SubscriptionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRequest")
            .field("end_point", &self.end_point)
            .field("resource_filter", &self.resource_filter)
            .field("source_filter", &self.source_filter)
            .field("subject_filter", &self.subject_filter)
            .field(
                "alternative_subject_filter",
                &self.alternative_subject_filter,
            )
            .field("type_filter", &self.type_filter)
            .field("include_subunits", &self.include_subunits)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("max_events_per_batch", &self.max_events_per_batch)
            .field("max_wait_ms", &self.max_wait_ms)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

fn one_event() -> i64 {
    1
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A subscription as the API shows it; the secret never leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: i64,
    pub end_point: String,
    pub resource_filter: String,
    pub source_filter: Option<String>,
    pub subject_filter: Option<String>,
    pub alternative_subject_filter: Option<String>,
    pub type_filter: Option<String>,
    pub include_subunits: bool,
    pub consumer: String,
    pub created_by: String,
    pub created: String,
    pub validated: bool,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    pub has_secret: bool,
    #[serde(default = "one")]
    pub max_events_per_batch: u32,
    #[serde(default)]
    pub max_wait_ms: u32,
    /// Deliveries per second at the most, over all nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// While a replaced secret still signs beside the current one: until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<String>,
    /// How its endpoint is doing.
    #[serde(default)]
    pub health: SubscriptionHealth,
}

/// A subscription's endpoint health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionHealth {
    /// `healthy`, `failing` (failed attempts since the last success) or `disabled`.
    #[schema(example = "failing")]
    pub state: String,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// When the current streak of failures began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// The last successful attempt (kept to within a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The last failure's class: `status 503`, `timeout`, `connect` or `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While failing, no delivery is attempted before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resting_until: Option<String>,
}

fn one() -> u32 {
    1
}

/// `{"count", "subscriptions"}`, as Altinn answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionList {
    pub count: usize,
    pub subscriptions: Vec<Subscription>,
}

/// The states a delivery can be in, as the `state` parameter and field write them.
pub const DELIVERY_STATES: [&str; 3] = ["pending", "delivered", "dead"];

/// One delivery of an event to a subscription, with every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub webhook_id: String,
    /// How many events it carries: 1, or a batch's count (`eventId` is the first's).
    #[serde(default = "one_event")]
    pub event_count: i64,
    /// pending, delivered or dead
    pub state: String,
    pub attempts: i64,
    pub next_attempt: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// The replay that queued it; absent for a live delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<i64>,
    /// Every attempt: `at`, `status`, `error`.
    pub history: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub count: usize,
    pub deliveries: Vec<Delivery>,
}

/// The answer of a redrive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Redriven {
    pub requeued: u64,
}

/// A change of a subscription (`PATCH`): its endpoint and its secret. Filters and batching
/// cannot be changed; the server refuses a body that names them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// A new endpoint: validated with a handshake before any delivery goes to it; deliveries
    /// wait meanwhile, none is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_point: Option<String>,
    /// A new Standard Webhooks secret (`whsec_` + base64), or `null` to sign no more. The
    /// previous secret keeps signing beside the new one for the server's rotation overlap.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub secret: Option<Option<String>>,
    /// A new rate limit (deliveries per second, 1 to 10000), or `null` for none.
    #[serde(
        default,
        deserialize_with = "crate::whole::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<u32>)]
    pub rate_limit: Option<Option<u32>>,
}

impl std::fmt::Debug for SubscriptionPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionPatch")
            .field("end_point", &self.end_point)
            .field(
                "secret",
                &self.secret.as_ref().map(|s| s.as_ref().map(|_| "…")),
            )
            .finish()
    }
}

/// A field that is there, `null` or not: `Some(None)` for `null`, so that "remove" and "leave
/// as it is" differ.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The fields of a subscription that a `PATCH` cannot change.
pub const IMMUTABLE_FIELDS: [&str; 8] = [
    "resourceFilter",
    "sourceFilter",
    "subjectFilter",
    "alternativeSubjectFilter",
    "typeFilter",
    "includeSubunits",
    "maxEventsPerBatch",
    "maxWaitMs",
];

/// A replay: the stored events of a window that the subscription matches, queued again. Give
/// `from` or `after`; `to` bounds the window (by default it ends with the events stored when the
/// replay is asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    /// Events registered at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-12-01T00:00:00Z")]
    pub from: Option<String>,
    /// Events registered after the event with this id (among the subscription's resource's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Events registered at or before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// The answer of a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    /// The replay's id, which its deliveries show as `replayId`.
    pub replay_id: i64,
    /// Deliveries queued (events, or batches for a subscription that receives batches).
    pub queued: u64,
    /// True when this answers a repeat of an earlier request with the same `Idempotency-Key`:
    /// nothing more was queued.
    pub repeated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_only_what_was_given() {
        let request = SubscriptionRequest {
            end_point: Some("https://hooks.example.com/x".into()),
            subject_filter: Some("/party/1".into()),
            ..SubscriptionRequest::default()
        };
        let json = serde_json::to_string(&request).expect("json");
        assert_eq!(
            json,
            r#"{"endPoint":"https://hooks.example.com/x","subjectFilter":"/party/1"}"#
        );
        let back: SubscriptionRequest = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, request);
        let minimal: SubscriptionRequest =
            serde_json::from_str(r#"{"includeSubunits":true}"#).expect("parses");
        assert!(minimal.include_subunits && minimal.end_point.is_none());
        let secret = SubscriptionRequest {
            secret: Some("whsec_c2VjcmV0".into()),
            ..SubscriptionRequest::default()
        };
        assert!(
            !format!("{secret:?}").contains("whsec_"),
            "the secret is never shown"
        );
    }
}
