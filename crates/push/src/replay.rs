//! Replays, as a subscription's owner asks for them after an outage of its own: every stored
//! event of a window that the subscription matches, and that its owner may read now, queued again
//! in log order as new deliveries (the same CloudEvent, a new `webhook-id`). A request key makes a
//! repeat of the request (a client retrying after a timeout) queue nothing more; a replay larger
//! than the limit is refused whole, with where to cut it, rather than queued in part.

use chrono::{DateTime, Utc};
use hendelse_auth::Principal;
use hendelse_store::EventQuery;
use hendelse_store::push::{
    BatchOf, NewDelivery, NewReplay, ReplayOutcome, StoredReplay, Subscription,
};
use hendelse_wire::subscriptions::{ReplayRequest, Replayed};

use crate::filter::{EventAttributes, Matcher};
use crate::subscriptions::{SubscriptionError, SubscriptionService};

/// Events read from the store per query while a replay collects its window.
const PAGE: u32 = 1000;

/// The longest request key taken.
pub const MAX_KEY_LENGTH: usize = 255;

/// The replay's window in the log.
struct Window {
    /// Only events after this position.
    after: i64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl SubscriptionService {
    /// Queues the window `request` names again for the caller's subscription `id`. `key` is the
    /// request's `Idempotency-Key`: a request with a key already used for this subscription
    /// queues nothing and answers what the first did (or is refused, when that one asked for
    /// another window). Without a key every request is a replay of its own.
    pub async fn replay(
        &self,
        caller: &Principal,
        id: i64,
        request: ReplayRequest,
        key: Option<&str>,
    ) -> Result<Replayed, SubscriptionError> {
        let subscription = self.get(caller, id).await?;
        let key = match key {
            Some(key) => checked_key(key)?.to_owned(),
            None => format!("unkeyed-{}", uuid::Uuid::new_v4().simple()),
        };
        // Serialized from the parsed request, so that the same window in other spacing or field
        // order is the same request.
        let canonical = serde_json::to_string(&request).map_err(SubscriptionError::Internal)?;
        if let Some(stored) = self.store.stored_replay(id, &key).await? {
            return repeated(stored, &canonical);
        }
        let window = self.window(&subscription, &request).await?;
        let deliveries = self.replay_deliveries(&subscription, &window).await?;
        let replay = NewReplay {
            subscription_id: id,
            key,
            request: canonical.clone(),
            deliveries,
        };
        match self.store.store_replay(&replay).await? {
            ReplayOutcome::Queued {
                id: replay_id,
                queued,
            } => {
                self.wake_workers();
                tracing::info!(
                    subscription = id,
                    replay = replay_id,
                    queued,
                    "replay queued"
                );
                Ok(Replayed {
                    replay_id,
                    queued,
                    repeated: false,
                })
            }
            ReplayOutcome::Taken(stored) => repeated(stored, &canonical),
        }
    }

    /// The window `request` names, checked: `from` or `after` (not both), `to` not before `from`.
    async fn window(
        &self,
        subscription: &Subscription,
        request: &ReplayRequest,
    ) -> Result<Window, SubscriptionError> {
        let from = request
            .from
            .as_deref()
            .map(|t| time("from", t))
            .transpose()?;
        let to = request.to.as_deref().map(|t| time("to", t)).transpose()?;
        let after = match (&from, request.after.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(invalid("Give either from or after, not both."));
            }
            (None, None) => {
                return Err(invalid(
                    "A replay needs from (a time, RFC 3339) or after (an event id).",
                ));
            }
            (None, Some("")) => return Err(invalid("after must be an event id, not empty.")),
            (None, Some(event_id)) => {
                let among = EventQuery {
                    resource: Some(subscription.spec.resource_filter.clone()),
                    ..EventQuery::default()
                };
                self.events
                    .position_of(event_id, &among)
                    .await?
                    .ok_or_else(|| {
                        invalid(&format!(
                            "after names no stored event of {}: {event_id}",
                            subscription.spec.resource_filter
                        ))
                    })?
            }
            (Some(_), None) => 0,
        };
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            return Err(invalid("to is before from."));
        }
        Ok(Window { after, from, to })
    }

    /// The deliveries of the window's events that the subscription matches and its owner may
    /// read now, in log order: one per event, or batches for a subscription that receives them.
    async fn replay_deliveries(
        &self,
        subscription: &Subscription,
        window: &Window,
    ) -> Result<Vec<NewDelivery>, SubscriptionError> {
        let owner: Principal = serde_json::from_str(&subscription.spec.principal)
            .map_err(SubscriptionError::Internal)?;
        let matcher = Matcher::new(&subscription.spec, self.authorizer.as_ref());
        // Where access is decided per event, each delivery is decided when it is sent.
        let visibility = self.authorizer.candidates(&owner);
        let max = usize::try_from(self.settings.replay_max_events).unwrap_or(usize::MAX);
        // Events stored after the request arrived reach the subscription live.
        let ceiling = self.events.last_seq().await?;
        let mut query = EventQuery {
            after: window.after,
            from: window.from,
            to: window.to,
            resource: Some(subscription.spec.resource_filter.clone()),
            visibility: visibility.clone(),
            limit: PAGE,
            ..EventQuery::default()
        };
        let mut events: Vec<(i64, String)> = Vec::new();
        'pages: loop {
            let page = self.events.query(&query).await?;
            let mut matched = Vec::new();
            let mut beyond = false;
            for event in &page {
                if event.seq > ceiling {
                    beyond = true;
                    break;
                }
                let Some(attributes) = EventAttributes::parse(&event.body) else {
                    continue;
                };
                let subject = attributes.subject_key();
                if matcher.matches(&attributes)
                    && visibility.covers(subject.as_deref(), attributes.resource.as_deref())
                {
                    matched.push(event);
                }
            }
            if self.authorizer.decides_per_event() && !matched.is_empty() {
                // Only what the owner may read is queued (and named in a refusal).
                let facts: Vec<hendelse_auth::EventFacts> = matched
                    .iter()
                    .map(|e| hendelse_auth::EventFacts::of_json(&e.body).unwrap_or_default())
                    .collect();
                let permitted = self
                    .authorizer
                    .permitted(&owner, hendelse_auth::Action::Read, &facts)
                    .await?;
                let mut answers = permitted.into_iter();
                matched.retain(|_| answers.next().unwrap_or(false));
            }
            for event in matched {
                if events.len() == max {
                    let (_, last_id) = &events[max - 1];
                    return Err(invalid(&format!(
                        "The window holds more than {max} events for this subscription, the most \
                         one replay queues: replay it in parts, the first ending with event \
                         {last_id} (a to of its registration time), the next with after: \
                         \"{last_id}\"."
                    )));
                }
                events.push((event.seq, event.id.clone()));
            }
            if beyond {
                break 'pages;
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => query.after = last.seq,
                _ => break,
            }
        }
        let batching = subscription.spec.batching;
        if !batching.batches() {
            return Ok(events
                .into_iter()
                .map(|(seq, event_id)| NewDelivery {
                    subscription_id: subscription.id,
                    event_seq: Some(seq),
                    event_id,
                    webhook_id: crate::signing::new_webhook_id(),
                    body: None,
                    batch: None,
                })
                .collect());
        }
        let size = usize::try_from(batching.max_events.max(1)).unwrap_or(usize::MAX);
        Ok(events
            .chunks(size)
            .filter_map(|chunk| {
                let (first_seq, first_id) = chunk.first()?;
                Some(NewDelivery {
                    subscription_id: subscription.id,
                    event_seq: Some(*first_seq),
                    event_id: first_id.clone(),
                    webhook_id: crate::signing::new_webhook_id(),
                    body: None,
                    batch: Some(BatchOf {
                        seqs: chunk.iter().map(|(seq, _)| *seq).collect(),
                        batching,
                    }),
                })
            })
            .collect())
    }
}

/// The answer to a request whose key was used before: the earlier replay if it asked for the
/// same window, a refusal if not.
fn repeated(stored: StoredReplay, request: &str) -> Result<Replayed, SubscriptionError> {
    if stored.request != request {
        return Err(SubscriptionError::Conflict(
            "This Idempotency-Key was used for another replay of this subscription; use a new key \
             for a new window."
                .into(),
        ));
    }
    Ok(Replayed {
        replay_id: stored.id,
        queued: stored.queued,
        repeated: true,
    })
}

fn checked_key(key: &str) -> Result<&str, SubscriptionError> {
    if key.is_empty()
        || key.len() > MAX_KEY_LENGTH
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(invalid(&format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."
        )));
    }
    Ok(key)
}

fn time(field: &str, text: &str) -> Result<DateTime<Utc>, SubscriptionError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            invalid(&format!(
                "{field} must be an RFC 3339 time such as 2026-12-01T00:00:00Z ({e}): {text}"
            ))
        })
}

fn invalid(message: &str) -> SubscriptionError {
    SubscriptionError::Invalid(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_printable_ascii_of_bounded_length() {
        assert!(checked_key("retry-7f3a").is_ok());
        assert!(checked_key("").is_err());
        assert!(checked_key("tab\there").is_err());
        assert!(checked_key("blåbær").is_err());
        assert!(checked_key(&"k".repeat(MAX_KEY_LENGTH)).is_ok());
        assert!(checked_key(&"k".repeat(MAX_KEY_LENGTH + 1)).is_err());
    }

    #[test]
    fn a_repeat_answers_the_first_and_another_window_is_refused() {
        let stored = StoredReplay {
            id: 4,
            request: r#"{"from":"2026-12-01T00:00:00Z"}"#.into(),
            queued: 12,
        };
        let again = repeated(stored.clone(), r#"{"from":"2026-12-01T00:00:00Z"}"#).expect("same");
        assert_eq!(
            again,
            Replayed {
                replay_id: 4,
                queued: 12,
                repeated: true
            }
        );
        assert!(matches!(
            repeated(stored, r#"{"from":"2026-12-02T00:00:00Z"}"#),
            Err(SubscriptionError::Conflict(_))
        ));
    }

    #[test]
    fn times_name_their_field_when_wrong() {
        assert!(time("from", "2026-12-01T00:00:00+01:00").is_ok());
        let Err(SubscriptionError::Invalid(message)) = time("to", "yesterday") else {
            panic!("a word is no time");
        };
        assert!(
            message.starts_with("to must be an RFC 3339 time"),
            "{message}"
        );
    }
}
