//! Which events a subscription gets: the same `%` wildcard semantics as the queries, and party
//! subjects in every form the registry knows (with subunits when asked for).

use hendelse_auth::Authorizer;
use hendelse_model::Pattern;
use hendelse_model::subject::party_key;
use hendelse_store::push::{NewSubscription, SubscriptionToMatch};
use serde::Deserialize;

/// The attributes of a stored event that filters look at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventAttributes {
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub alternativesubject: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
}

impl EventAttributes {
    /// Reads them from the event's stored JSON; `None` for text that is no event (never stored).
    pub fn parse(body: &str) -> Option<EventAttributes> {
        serde_json::from_str(body).ok()
    }

    pub fn subject_key(&self) -> Option<String> {
        self.subject.as_deref().map(party_key)
    }
}

/// A subscription's filters, prepared for matching many events.
#[derive(Debug, Clone)]
pub struct Matcher {
    resource: String,
    source: Option<Pattern>,
    event_type: Option<Pattern>,
    subjects: Option<Vec<String>>,
    alternative_subject: Option<String>,
}

/// A subscription's filters as its creator gave them.
#[derive(Debug, Clone, Copy)]
pub struct Filters<'a> {
    pub resource: &'a str,
    pub source: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub alternative_subject: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub include_subunits: bool,
}

impl<'a> From<&'a NewSubscription> for Filters<'a> {
    fn from(s: &'a NewSubscription) -> Self {
        Filters {
            resource: &s.resource_filter,
            source: s.source_filter.as_deref(),
            subject: s.subject_filter.as_deref(),
            alternative_subject: s.alternative_subject_filter.as_deref(),
            event_type: s.type_filter.as_deref(),
            include_subunits: s.include_subunits,
        }
    }
}

impl<'a> From<&'a SubscriptionToMatch> for Filters<'a> {
    fn from(s: &'a SubscriptionToMatch) -> Self {
        Filters {
            resource: &s.resource_filter,
            source: s.source_filter.as_deref(),
            subject: s.subject_filter.as_deref(),
            alternative_subject: s.alternative_subject_filter.as_deref(),
            event_type: s.type_filter.as_deref(),
            include_subunits: s.include_subunits,
        }
    }
}

impl Matcher {
    pub fn new<'a>(filters: impl Into<Filters<'a>>, authorizer: &dyn Authorizer) -> Matcher {
        let f = filters.into();
        Matcher {
            resource: f.resource.to_owned(),
            source: f.source.map(Pattern::new),
            event_type: f.event_type.map(Pattern::new),
            subjects: f
                .subject
                .map(|s| authorizer.party_subjects(s, f.include_subunits)),
            alternative_subject: f.alternative_subject.map(str::to_owned),
        }
    }

    /// The one resource whose events can match.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The party subjects (keys) whose events can match; `None`: any subject, or none.
    pub fn subjects(&self) -> Option<&[String]> {
        self.subjects.as_deref()
    }

    pub fn matches(&self, event: &EventAttributes) -> bool {
        event.resource.as_deref() == Some(self.resource.as_str())
            && self
                .source
                .as_ref()
                .is_none_or(|p| p.matches(&event.source))
            && self
                .event_type
                .as_ref()
                .is_none_or(|p| p.matches(&event.event_type))
            && self.subjects.as_ref().is_none_or(|subjects| {
                event
                    .subject_key()
                    .is_some_and(|key| subjects.contains(&key))
            })
            && self
                .alternative_subject
                .as_ref()
                .is_none_or(|a| event.alternativesubject.as_deref() == Some(a.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hendelse_auth::{Registry, RegistryAuthorizer};

    fn subscription() -> NewSubscription {
        hendelse_store::testing::org_subscription(
            "https://example.com/hook",
            "urn:altinn:resource:r",
        )
    }

    fn event(json: &str) -> EventAttributes {
        EventAttributes::parse(json).expect("event")
    }

    #[test]
    fn every_filter_must_hold() {
        let registry: Registry = serde_json::from_str(
            r#"{"parties":[{"partyId":1,"organization":"991825827"},
                           {"partyId":2,"organization":"910000001","parentOrganization":"991825827"}]}"#,
        )
        .expect("registry");
        let auth = RegistryAuthorizer::new(registry);
        let base = r#""source":"https://a.example/x/1","type":"t.created","resource":"urn:altinn:resource:r""#;
        let e = |extra: &str| event(&format!("{{{base}{extra}}}"));
        let sub = |f: &dyn Fn(&mut NewSubscription)| {
            let mut s = subscription();
            f(&mut s);
            Matcher::new(&s, &auth)
        };
        assert!(sub(&|_| {}).matches(&e("")));
        assert!(!sub(&|s| s.resource_filter = "urn:altinn:resource:other".into()).matches(&e("")));
        assert!(sub(&|s| s.source_filter = Some("HTTPS://a.example/%".into())).matches(&e("")));
        assert!(!sub(&|s| s.source_filter = Some("https://b.example/%".into())).matches(&e("")));
        assert!(sub(&|s| s.type_filter = Some("t.%".into())).matches(&e("")));
        assert!(!sub(&|s| s.type_filter = Some("t.deleted".into())).matches(&e("")));
        let org = |s: &mut NewSubscription| {
            s.subject_filter = Some("urn:altinn:organization:identifier-no:991825827".into())
        };
        assert!(sub(&org).matches(&e(
            r#","subject":"urn:altinn:organization:identifier-no::991825827""#
        )));
        assert!(sub(&org).matches(&e(r#","subject":"/party/1""#)));
        assert!(!sub(&org).matches(&e(r#","subject":"/party/2""#)));
        assert!(!sub(&org).matches(&e("")));
        let units = |s: &mut NewSubscription| {
            org(s);
            s.include_subunits = true;
        };
        assert!(sub(&units).matches(&e(r#","subject":"/party/2""#)));
        let alt = |s: &mut NewSubscription| s.alternative_subject_filter = Some("/person/1".into());
        assert!(sub(&alt).matches(&e(r#","alternativesubject":"/person/1""#)));
        assert!(!sub(&alt).matches(&e(r#","alternativesubject":"/person/2""#)));
    }
}
