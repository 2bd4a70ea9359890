//! The rules of webhook subscriptions, between the API's routes and the push store: who may
//! subscribe to what, what a new subscription must name, who owns it, and the validation handshake
//! that goes out before its first event. The routes only extract, call one function here and
//! render.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use hendelse_auth::{Authorizer, Principal, SCOPE_SUBSCRIBE};
use hendelse_model::RESOURCE_PREFIX;
use hendelse_model::subject::party_key;
use hendelse_store::push::{
    Batching, DeliveryState, DeliveryView, NewDelivery, NewSubscription, SubscriptionChange,
};
use hendelse_store::{EventStore, PushStore, StoreError, push::Subscription};
use hendelse_wire::paths;
use hendelse_wire::subscriptions::{SubscriptionPatch, SubscriptionRequest};
use serde_json::json;
use tokio::sync::Notify;

use crate::secrets::SecretKeys;
use crate::signing::Secret;
use crate::{EndpointPolicy, VALIDATION_EVENT_TYPE};

/// Deliveries a listing shows at the most.
pub const MAX_DELIVERIES: u32 = 1000;

/// Every way a subscription request can fail; the server renders each as problem details.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The request is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such subscription of the caller's: someone else's is as absent as a missing one (404).
    #[error("there is no subscription {0}")]
    NotFound(i64),
    /// The request contradicts an earlier one (409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller cannot be recorded as the subscriber: a fault of ours.
    #[error("cannot record the subscriber")]
    Internal(#[source] serde_json::Error),
    /// Access cannot be decided now (the decision point does not answer): nothing is created.
    #[error(transparent)]
    Undecided(#[from] hendelse_auth::DecisionError),
}

/// What the operator decides about subscriptions.
#[derive(Debug, Clone)]
pub struct SubscriptionSettings {
    pub policy: EndpointPolicy,
    /// The most deliveries one replay queues.
    pub replay_max_events: u32,
    /// How long a replaced secret keeps signing beside the new one.
    pub secret_overlap: std::time::Duration,
    /// Seal the secrets before they are stored.
    pub secret_keys: Arc<SecretKeys>,
}

/// Subscriptions as their owners manage them.
pub struct SubscriptionService {
    pub(crate) store: Arc<dyn PushStore>,
    /// The log, which replays read.
    pub(crate) events: Arc<dyn EventStore>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) settings: SubscriptionSettings,
    /// This node's delivery workers, when it runs them: new work is theirs at once.
    wake: Option<Arc<Notify>>,
}

impl SubscriptionService {
    pub fn new(
        store: Arc<dyn PushStore>,
        events: Arc<dyn EventStore>,
        authorizer: Arc<dyn Authorizer>,
        settings: SubscriptionSettings,
        wake: Option<Arc<Notify>>,
    ) -> Self {
        SubscriptionService {
            store,
            events,
            authorizer,
            settings,
            wake,
        }
    }

    /// Whether `caller`'s token may manage subscriptions at all.
    pub fn may_subscribe(&self, caller: &Principal) -> Result<(), SubscriptionError> {
        require_subscribe_scope(caller)
    }

    pub(crate) fn wake_workers(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    /// A new subscription of `caller`'s, once its endpoint and filters pass the rules; its
    /// validation handshake is queued with it. `public_base` is the API's absolute base URL, the
    /// handshake's source.
    pub async fn create(
        &self,
        caller: &Principal,
        request: SubscriptionRequest,
        public_base: &str,
    ) -> Result<Subscription, SubscriptionError> {
        require_subscribe_scope(caller)?;
        let end_point = given(request.end_point).ok_or_else(|| {
            SubscriptionError::Invalid("Missing or invalid endpoint to push events towards.".into())
        })?;
        crate::endpoint::check(&end_point, self.settings.policy)
            .await
            .map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
        let source_filter = given(request.source_filter);
        let resource_filter = given(request.resource_filter)
            .or_else(|| source_filter.as_deref().and_then(app_resource_of))
            .ok_or_else(|| {
                SubscriptionError::Invalid(
                    "A resourceFilter is required (or a sourceFilter naming an app).".into(),
                )
            })?;
        if !resource_filter.starts_with(RESOURCE_PREFIX) {
            return Err(SubscriptionError::Invalid(format!(
                "resourceFilter must start with '{RESOURCE_PREFIX}'."
            )));
        }
        let subject_filter = given(request.subject_filter);
        self.may_read(caller, &resource_filter, subject_filter.as_deref())
            .await?;
        let secret = given(request.secret)
            .map(|secret| {
                Secret::parse(&secret).map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
                Ok::<_, SubscriptionError>(self.settings.secret_keys.seal(&secret))
            })
            .transpose()?;
        let consumer = consumer_of(caller);
        let principal = serde_json::to_string(caller).map_err(SubscriptionError::Internal)?;
        let spec = NewSubscription {
            end_point,
            resource_filter,
            source_filter,
            subject_filter,
            alternative_subject_filter: given(request.alternative_subject_filter),
            type_filter: given(request.type_filter),
            include_subunits: request.include_subunits,
            created_by: consumer.clone(),
            consumer,
            principal,
            secret,
            batching: batching_of(request.max_events_per_batch, request.max_wait_ms)?,
            rate_limit: request.rate_limit.map(checked_rate).transpose()?,
        };
        let source_base = format!("{public_base}{}", paths::SUBSCRIPTIONS);
        let created = self
            .store
            .create_subscription(&spec, &|id| handshake(&source_base, id))
            .await?;
        self.wake_workers();
        tracing::info!(subscription = created.id, consumer = %created.spec.consumer, "subscription created");
        Ok(created)
    }

    /// Whether `caller` may receive the events of `resource` (about `subject`): the resource's
    /// owner may have them all; anyone else names a party whose events it may read.
    async fn may_read(
        &self,
        caller: &Principal,
        resource: &str,
        subject: Option<&str>,
    ) -> Result<(), SubscriptionError> {
        if self.authorizer.decides_per_event() {
            // The decision point says whether the caller may subscribe to these events.
            let facts = hendelse_auth::EventFacts {
                resource: Some(resource.to_owned()),
                subject: subject.map(str::to_owned),
                ..Default::default()
            };
            let permitted = self
                .authorizer
                .permitted(caller, hendelse_auth::Action::Subscribe, &[facts])
                .await?;
            return if permitted.first() == Some(&true) {
                Ok(())
            } else {
                Err(SubscriptionError::Forbidden(format!(
                    "the subscriber may not subscribe to events of {resource}{}",
                    subject.map(|s| format!(" about {s}")).unwrap_or_default()
                )))
            };
        }
        if self.authorizer.owns(caller, resource) {
            return Ok(());
        }
        let Some(subject) = subject else {
            return Err(SubscriptionError::Invalid(
                "A subjectFilter is required when the subscriber does not own the resource.".into(),
            ));
        };
        if self
            .authorizer
            .visibility(caller)
            .covers(Some(&party_key(subject)), Some(resource))
        {
            Ok(())
        } else {
            Err(SubscriptionError::Forbidden(format!(
                "the subscriber may not read events of {resource} about {subject}"
            )))
        }
    }

    /// The caller's subscriptions.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<Subscription>, SubscriptionError> {
        require_subscribe_scope(caller)?;
        Ok(self.store.subscriptions_of(&consumer_of(caller)).await?)
    }

    /// The caller's own subscription `id`.
    pub async fn get(
        &self,
        caller: &Principal,
        id: i64,
    ) -> Result<Subscription, SubscriptionError> {
        require_subscribe_scope(caller)?;
        match self.store.subscription(id).await? {
            Some(s) if s.spec.consumer == consumer_of(caller) => Ok(s),
            _ => Err(SubscriptionError::NotFound(id)),
        }
    }

    /// Changes the caller's subscription `id`: a new endpoint (checked as on creation, then
    /// validated with a handshake before deliveries go to it) and/or a new secret (the previous
    /// one signing beside it for the overlap). `public_base` is the handshake's source.
    pub async fn change(
        &self,
        caller: &Principal,
        id: i64,
        patch: SubscriptionPatch,
        public_base: &str,
    ) -> Result<Subscription, SubscriptionError> {
        self.get(caller, id).await?;
        let end_point = match patch.end_point {
            Some(end_point) => {
                let end_point = given(Some(end_point)).ok_or_else(|| {
                    SubscriptionError::Invalid("endPoint must not be empty.".into())
                })?;
                crate::endpoint::check(&end_point, self.settings.policy)
                    .await
                    .map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
                Some(end_point)
            }
            None => None,
        };
        let secret = match patch.secret {
            Some(Some(secret)) => {
                Secret::parse(&secret).map_err(|e| SubscriptionError::Invalid(e.to_string()))?;
                Some(Some(self.settings.secret_keys.seal(&secret)))
            }
            other => other,
        };
        let rate_limit = match patch.rate_limit {
            Some(Some(rate)) => Some(Some(checked_rate(rate)?)),
            other => other,
        };
        if end_point.is_none() && secret.is_none() && rate_limit.is_none() {
            return Err(SubscriptionError::Invalid(
                "Nothing to change: give endPoint, secret and/or rateLimit.".into(),
            ));
        }
        let overlap = chrono::Duration::from_std(self.settings.secret_overlap)
            .unwrap_or(chrono::Duration::MAX);
        let change = SubscriptionChange {
            end_point,
            secret,
            rate_limit,
            previous_secret_until: Utc::now()
                .checked_add_signed(overlap)
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
        };
        let source_base = format!("{public_base}{}", paths::SUBSCRIPTIONS);
        if !self
            .store
            .change_subscription(id, &change, &|id| handshake(&source_base, id))
            .await?
        {
            return Err(SubscriptionError::NotFound(id));
        }
        self.wake_workers();
        tracing::info!(
            subscription = id,
            new_endpoint = change.end_point.is_some(),
            new_secret = change.secret.is_some(),
            "subscription changed"
        );
        self.get(caller, id).await
    }

    /// Enables the caller's subscription `id` again; returns it as it is now.
    pub async fn enable(
        &self,
        caller: &Principal,
        id: i64,
    ) -> Result<Subscription, SubscriptionError> {
        let subscription = self.get(caller, id).await?;
        if !subscription.enabled || subscription.health.consecutive_failures > 0 {
            self.store.enable_subscription(id).await?;
            self.wake_workers();
            tracing::info!(subscription = id, "subscription enabled");
        }
        self.get(caller, id).await
    }

    /// Deletes the caller's subscription `id` with its pending deliveries; returns what it was.
    pub async fn delete(
        &self,
        caller: &Principal,
        id: i64,
    ) -> Result<Subscription, SubscriptionError> {
        let subscription = self.get(caller, id).await?;
        if !self.store.delete_subscription(id).await? {
            return Err(SubscriptionError::NotFound(id));
        }
        tracing::info!(subscription = id, "subscription deleted");
        Ok(subscription)
    }

    /// Recent deliveries of the caller's subscription `id`, newest first, in `state` if given.
    pub async fn deliveries(
        &self,
        caller: &Principal,
        id: i64,
        state: Option<&str>,
    ) -> Result<Vec<DeliveryView>, SubscriptionError> {
        self.get(caller, id).await?;
        let filter = match state.filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(DeliveryState::parse(text).ok_or_else(|| {
                SubscriptionError::Invalid(format!(
                    "state must be pending, delivered or dead (got '{text}')"
                ))
            })?),
        };
        Ok(self.store.deliveries(id, filter, MAX_DELIVERIES).await?)
    }

    /// Puts the dead letters of the caller's subscription `id` back in the queue; returns how
    /// many.
    pub async fn redrive(&self, caller: &Principal, id: i64) -> Result<u64, SubscriptionError> {
        self.get(caller, id).await?;
        let requeued = self.store.redrive(id, Utc::now()).await?;
        self.wake_workers();
        tracing::info!(subscription = id, requeued, "dead letters redriven");
        Ok(requeued)
    }
}

fn require_subscribe_scope(caller: &Principal) -> Result<(), SubscriptionError> {
    if caller.has_scope(SCOPE_SUBSCRIBE) {
        Ok(())
    } else {
        Err(SubscriptionError::Forbidden(format!(
            "the token lacks the scope {SCOPE_SUBSCRIBE}"
        )))
    }
}

/// Who owns the subscriptions a principal creates, in Altinn's notation.
fn consumer_of(caller: &Principal) -> String {
    caller.consumer()
}

/// The highest rate limit taken, in deliveries per second.
pub const MAX_RATE_LIMIT: u32 = 10_000;

fn checked_rate(rate: u32) -> Result<u32, SubscriptionError> {
    if (1..=MAX_RATE_LIMIT).contains(&rate) {
        Ok(rate)
    } else {
        Err(SubscriptionError::Invalid(format!(
            "rateLimit must be 1 to {MAX_RATE_LIMIT} deliveries per second, not {rate}."
        )))
    }
}

/// Most events in one batch, and the longest a batch may wait for more.
pub const MAX_EVENTS_PER_BATCH: u32 = 1000;
pub const MAX_WAIT_MS: u32 = 60_000;

fn batching_of(
    max_events: Option<u32>,
    max_wait_ms: Option<u32>,
) -> Result<Batching, SubscriptionError> {
    let batching = Batching {
        max_events: max_events.unwrap_or(1),
        max_wait_ms: max_wait_ms.unwrap_or(0),
    };
    if !(1..=MAX_EVENTS_PER_BATCH).contains(&batching.max_events) {
        return Err(SubscriptionError::Invalid(format!(
            "maxEventsPerBatch must be a whole number from 1 to {MAX_EVENTS_PER_BATCH}."
        )));
    }
    if batching.max_wait_ms > MAX_WAIT_MS {
        return Err(SubscriptionError::Invalid(format!(
            "maxWaitMs must be a whole number from 0 to {MAX_WAIT_MS}."
        )));
    }
    if batching.max_wait_ms > 0 && !batching.batches() {
        return Err(SubscriptionError::Invalid(
            "maxWaitMs needs a maxEventsPerBatch over 1.".into(),
        ));
    }
    Ok(batching)
}

/// An empty text counts as absent.
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The validation event for subscription `id`, whose source is the subscription's own URL.
fn handshake(source_base: &str, id: i64) -> NewDelivery {
    let event_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "specversion": "1.0",
        "id": event_id,
        "type": VALIDATION_EVENT_TYPE,
        "source": format!("{source_base}/{id}"),
        "time": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    })
    .to_string();
    NewDelivery {
        subscription_id: id,
        event_seq: None,
        webhook_id: crate::signing::new_webhook_id(),
        event_id,
        body: Some(body),
        batch: None,
    }
}

/// `urn:altinn:resource:app_{org}_{app}` from an app source filter
/// (`https://{org}.apps.{host}/{org}/{app}…`).
fn app_resource_of(source_filter: &str) -> Option<String> {
    let rest = source_filter.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let (host_org, domain) = host.split_once('.')?;
    let mut segments = path.split('/');
    let org = segments.next()?;
    let app = segments.next()?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (host_org == org && domain.starts_with("apps.") && plain(org) && plain(app))
        .then(|| format!("{RESOURCE_PREFIX}app_{org}_{app}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_sources_name_their_resource() {
        assert_eq!(
            app_resource_of("https://ttd.apps.altinn.no/ttd/app-1/instances/%").as_deref(),
            Some("urn:altinn:resource:app_ttd_app-1")
        );
        assert_eq!(app_resource_of("https://ttd.apps.altinn.no/skd/app/"), None);
        assert_eq!(app_resource_of("https://example.com/ttd/app/"), None);
        assert_eq!(app_resource_of("https://ttd.apps.altinn.no/ttd/ap%"), None);
    }

    #[test]
    fn subscribers_are_named_as_altinn_does() {
        let org = Principal::Org {
            org: Some("ttd".into()),
            org_number: Some("991825827".into()),
            scopes: Vec::new(),
            auth_level: None,
        };
        assert_eq!(consumer_of(&org), "/org/ttd");
        assert_eq!(given(Some("  ".into())), None);
        assert_eq!(given(Some(" x ".into())).as_deref(), Some("x"));
    }
}
