//! Endpoint health as the workers judge it: what an attempt says about the endpoint, how long a
//! failing endpoint rests (the whole subscription, not only the failed delivery, so that a dead
//! endpoint with a long queue costs a few attempts per step of the ladder), when a streak of
//! failures has lasted long enough to disable the subscription, and the event that tells its
//! owner so.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hendelse_auth::SUBSCRIPTION_EVENTS_RESOURCE;
use hendelse_store::NewEvent;
use hendelse_store::push::{EndpointReport, Subscription};
use hendelse_wire::paths;
use serde_json::json;

use crate::schedule::RetrySchedule;

/// The CloudEvent type that tells a subscriber its subscription was disabled for failing.
pub const DISABLED_EVENT_TYPE: &str = "platform.events.subscription.disabled";

/// By default a subscription is disabled after its endpoint has failed for this long (as Svix).
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// A subscription's state as the API and the metrics name it.
pub fn state(subscription: &Subscription) -> &'static str {
    if !subscription.enabled {
        "disabled"
    } else if subscription.health.consecutive_failures > 0 {
        "failing"
    } else {
        "healthy"
    }
}

/// What an attempt that was sent says about the endpoint: a 2xx is a success; anything else a
/// failure after which the endpoint rests. The rest grows with the streak along the retry ladder
/// (step `log2` of the failures, so that a few attempts at once count as one step), and a 429's
/// `Retry-After` is honoured within the ladder's longest wait.
pub fn report(
    schedule: &RetrySchedule,
    subscription: &Subscription,
    status: Option<u16>,
    error: Option<&str>,
    retry_after: Option<Duration>,
    now: DateTime<Utc>,
) -> EndpointReport {
    if status.is_some_and(|s| (200..300).contains(&s)) {
        return EndpointReport::Success;
    }
    let streak = subscription.health.consecutive_failures.saturating_add(1);
    let step = usize::try_from(streak.ilog2()).unwrap_or(usize::MAX);
    let mut rest = schedule.wait(step);
    if status == Some(429)
        && let Some(asked) = retry_after
    {
        rest = rest.max(asked.min(schedule.longest()));
    }
    EndpointReport::Failure {
        class: class(status, error),
        rest_until: now
            .checked_add_signed(chrono::Duration::from_std(rest).unwrap_or(chrono::Duration::MAX))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

/// A failure in a word or two: `status 503`, `timeout`, `connect`, `request`.
fn class(status: Option<u16>, error: Option<&str>) -> String {
    if let Some(status) = status {
        return format!("status {status}");
    }
    let error = error.unwrap_or_default();
    if error.starts_with("timed out") {
        "timeout".into()
    } else if error.starts_with("could not connect") {
        "connect".into()
    } else {
        "request".into()
    }
}

/// Why the subscription is disabled now, if this failure (of `class`) ends a streak that has
/// lasted `disable_after` or longer.
pub fn overdue(
    subscription: &Subscription,
    now: DateTime<Utc>,
    disable_after: Duration,
    class: &str,
) -> Option<String> {
    let since = subscription.health.failing_since?;
    let lasted = now.signed_duration_since(since).to_std().ok()?;
    (lasted >= disable_after).then(|| {
        format!(
            "the endpoint has failed since {} (last: {class}); disabled after {}",
            since.to_rfc3339_opts(SecondsFormat::Secs, true),
            describe(disable_after)
        )
    })
}

fn describe(period: Duration) -> String {
    let seconds = period.as_secs();
    match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{} hours", s / 3600),
        s if s >= 1 => format!("{s} seconds"),
        _ => format!("{} ms", period.as_millis()),
    }
}

/// The event that tells the subscription's owner it was disabled: on
/// [`SUBSCRIPTION_EVENTS_RESOURCE`], about its consumer. Its id is the same for one streak, so that
/// announcing again after a crash (before the disable was recorded) stores it once.
pub fn disabled_event(subscription: &Subscription, reason: &str, now: DateTime<Utc>) -> NewEvent {
    let streak = subscription
        .health
        .failing_since
        .map_or(0, |t| t.timestamp_micros());
    let id = format!("subscription-{}-disabled-{streak}", subscription.id);
    let source = format!("{}/{}", paths::SUBSCRIPTIONS, subscription.id);
    let consumer = subscription.spec.consumer.clone();
    let health = &subscription.health;
    let body = json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": DISABLED_EVENT_TYPE,
        "time": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "resource": SUBSCRIPTION_EVENTS_RESOURCE,
        "subject": consumer,
        "datacontenttype": "application/json",
        "data": {
            "subscriptionId": subscription.id,
            "reason": reason,
            "failingSince": health.failing_since.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            "consecutiveFailures": health.consecutive_failures + 1,
            "lastSuccess": health.last_success.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
        }
    });
    NewEvent {
        id,
        source,
        event_type: DISABLED_EVENT_TYPE.to_owned(),
        subject_key: Some(consumer),
        alternative_subject: None,
        resource: Some(SUBSCRIPTION_EVENTS_RESOURCE.to_owned()),
        body: body.to_string(),
        traceparent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hendelse_store::push::{EndpointHealth, NewSubscription};

    fn subscription(failures: u64, failing_since: Option<DateTime<Utc>>) -> Subscription {
        Subscription {
            id: 7,
            spec: NewSubscription {
                end_point: "https://hooks.example/x".into(),
                resource_filter: "urn:altinn:resource:r".into(),
                source_filter: None,
                subject_filter: None,
                alternative_subject_filter: None,
                type_filter: None,
                include_subunits: false,
                consumer: "/org/ttd".into(),
                created_by: "/org/ttd".into(),
                principal: "{}".into(),
                secret: None,
                batching: Default::default(),
                rate_limit: None,
            },
            created: Utc::now(),
            start_seq: 0,
            validated: true,
            enabled: true,
            disabled_reason: None,
            health: EndpointHealth {
                consecutive_failures: failures,
                failing_since,
                ..EndpointHealth::default()
            },
            previous_secret: None,
        }
    }

    fn rest_of(report: EndpointReport, now: DateTime<Utc>) -> Option<i64> {
        match report {
            EndpointReport::Failure { rest_until, .. } => Some((rest_until - now).num_seconds()),
            EndpointReport::Success => None,
        }
    }

    #[test]
    fn the_rest_grows_with_the_streak_along_the_ladder() {
        let ladder: RetrySchedule = "10s,30s,1m,5m".parse().expect("ladder");
        let now = Utc::now();
        let rest = |failures, status, after| {
            rest_of(
                report(
                    &ladder,
                    &subscription(failures, None),
                    status,
                    None,
                    after,
                    now,
                ),
                now,
            )
        };
        assert_eq!(rest(0, Some(204), None), None, "a success");
        assert_eq!(rest(0, Some(500), None), Some(10));
        assert_eq!(rest(1, Some(500), None), Some(30));
        assert_eq!(rest(2, Some(500), None), Some(30));
        assert_eq!(rest(3, None, None), Some(60));
        assert_eq!(rest(10_000, None, None), Some(300), "the last step at most");
        let asked = Some(Duration::from_secs(120));
        assert_eq!(rest(0, Some(429), asked), Some(120), "Retry-After");
        let too_long = Some(Duration::from_secs(86_400));
        assert_eq!(rest(0, Some(429), too_long), Some(300), "within the ladder");
    }

    #[test]
    fn failures_are_classed() {
        assert_eq!(class(Some(503), None), "status 503");
        assert_eq!(class(None, Some("timed out: deadline")), "timeout");
        assert_eq!(class(None, Some("could not connect: refused")), "connect");
        assert_eq!(class(None, Some("the request failed")), "request");
    }

    #[test]
    fn a_streak_longer_than_the_period_disables() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        let since = now - chrono::Duration::days(5);
        assert!(overdue(&subscription(3, None), now, day, "timeout").is_none());
        let recent = subscription(3, Some(now - chrono::Duration::hours(1)));
        assert!(overdue(&recent, now, day, "timeout").is_none());
        let reason =
            overdue(&subscription(3, Some(since)), now, 5 * day, "status 503").expect("five days");
        assert!(reason.contains("disabled after 5 days") && reason.contains("status 503"));
        let event = disabled_event(&subscription(3, Some(since)), &reason, now);
        assert_eq!(event.subject_key.as_deref(), Some("/org/ttd"));
        assert_eq!(
            event.resource.as_deref(),
            Some(SUBSCRIPTION_EVENTS_RESOURCE)
        );
        let again = disabled_event(&subscription(3, Some(since)), &reason, now);
        assert_eq!(event.id, again.id, "one id per streak");
    }
}
