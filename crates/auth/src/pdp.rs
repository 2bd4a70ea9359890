//! An external decision point: an HTTP PDP speaking the XACML 3.0 JSON profile as Altinn
//! Authorization's `decision` endpoint does. Each page of candidate events is one multi-decision
//! request (events with the same attributes share one resource of it), the results are mapped
//! back by the attribute tagged `IncludeInResult`, and a `Permit` counts only when the token's
//! `urn:altinn:authlevel` meets the `urn:altinn:minimum-authenticationlevel` obligation.
//! Decisions are cached for a while, keyed by the subject's attributes, the action and the
//! event's attributes (its subject included: what one party's events allow says nothing of
//! another's). When the PDP is slow or down nothing is permitted: the caller gets a
//! [`DecisionError`], which the API answers with 503 and the push engine with waiting.
//!
//! The party register (subunits, resource owners) stays the registry's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hendelse_model::Visibility;
use serde_json::{Value, json};

use crate::authorizer::Authorizer;
use crate::decision::{Action, DecisionError, EventFacts};
use crate::principal::Principal;

const STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
const ACTION_ID: &str = "urn:oasis:names:tc:xacml:1.0:action:action-id";
/// The resource attribute each resource of a multi-request is tagged with, echoed in its result.
const REFERENCE: &str = "urn:altinn:event-id";
const MINIMUM_LEVEL: &str = "urn:altinn:minimum-authenticationlevel";
const APP_PREFIX: &str = "urn:altinn:resource:app_";

/// Where the PDP is and how to talk to it.
#[derive(Debug, Clone)]
pub struct PdpSettings {
    pub url: String,
    /// Sent with every request (a subscription key, say).
    pub headers: Vec<(String, String)>,
    /// A request that takes longer fails closed.
    pub timeout: Duration,
    /// How long a decision is reused.
    pub cache_for: Duration,
}

/// A decision as the PDP gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Permitted when the token's authentication level is at least this.
    Permit {
        minimum_level: u8,
    },
    Deny,
}

/// (the subject's attributes, the action, the event's attributes)
type CacheKey = (String, Action, EventFacts);

pub struct PdpAuthorizer {
    settings: PdpSettings,
    client: reqwest::Client,
    /// The party register: subunits and resource owners.
    register: Arc<dyn Authorizer>,
    cache: quick_cache::sync::Cache<CacheKey, (Decision, Instant)>,
}

/// How many decisions are remembered.
const CACHE_CAPACITY: usize = 100_000;

impl PdpAuthorizer {
    pub fn new(settings: PdpSettings, register: Arc<dyn Authorizer>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect would carry the configured headers (a subscription key) elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make the PDP's HTTP client: {e}"))?;
        Ok(PdpAuthorizer {
            settings,
            client,
            register,
            cache: quick_cache::sync::Cache::new(CACHE_CAPACITY),
        })
    }

    /// Asks the PDP about `resources` (distinct), in one multi-decision request.
    async fn ask(
        &self,
        subject: &[Value],
        action: Action,
        resources: &[&EventFacts],
    ) -> Result<Vec<Decision>, DecisionError> {
        let request = multi_request(subject, action, resources);
        let mut call = self.client.post(&self.settings.url).json(&request);
        for (name, value) in &self.settings.headers {
            call = call.header(name, value);
        }
        let started = Instant::now();
        let response = call.send().await.map_err(|e| {
            metrics::counter!("hendelse_pdp_requests_total", "outcome" => "unavailable")
                .increment(1);
            DecisionError::Unavailable(e.without_url().to_string())
        })?;
        let status = response.status();
        if !status.is_success() {
            metrics::counter!("hendelse_pdp_requests_total", "outcome" => "unavailable")
                .increment(1);
            return Err(DecisionError::Unavailable(format!("it answered {status}")));
        }
        let body: Value = response.json().await.map_err(|e| {
            metrics::counter!("hendelse_pdp_requests_total", "outcome" => "unavailable")
                .increment(1);
            DecisionError::Unavailable(format!("its answer is not JSON: {}", e.without_url()))
        })?;
        metrics::counter!("hendelse_pdp_requests_total", "outcome" => "answered").increment(1);
        metrics::histogram!("hendelse_pdp_request_seconds").record(started.elapsed().as_secs_f64());
        Ok(decisions_of(&body, resources.len()))
    }
}

#[async_trait::async_trait]
impl Authorizer for PdpAuthorizer {
    /// Nothing: every read is decided per event, so a reader that does not ask sees nothing.
    fn visibility(&self, _principal: &Principal) -> Visibility {
        Visibility::Grants(Vec::new())
    }

    fn candidates(&self, _principal: &Principal) -> Visibility {
        Visibility::All
    }

    fn decides_per_event(&self) -> bool {
        true
    }

    async fn permitted(
        &self,
        principal: &Principal,
        action: Action,
        events: &[EventFacts],
    ) -> Result<Vec<bool>, DecisionError> {
        let subject = subject_attributes(principal);
        // A subject the PDP cannot tell from others (a person without a user id, say) is not
        // asked about: it would share decisions with every such caller.
        if !subject
            .iter()
            .any(|a| a["AttributeId"].as_str() != Some("urn:scope"))
        {
            return Ok(vec![false; events.len()]);
        }
        let subject_key = Value::Array(subject.clone()).to_string();
        let now = Instant::now();
        let mut known: HashMap<&EventFacts, Decision> = HashMap::new();
        let mut unknown: Vec<&EventFacts> = Vec::new();
        for facts in events {
            if known.contains_key(facts) || unknown.contains(&facts) {
                continue;
            }
            let key = (subject_key.clone(), action, facts.clone());
            match self.cache.get(&key) {
                Some((decision, at)) if now.duration_since(at) < self.settings.cache_for => {
                    metrics::counter!("hendelse_pdp_decisions_total", "source" => "cache")
                        .increment(1);
                    known.insert(facts, decision);
                }
                _ => unknown.push(facts),
            }
        }
        if !unknown.is_empty() {
            let decisions = self.ask(&subject, action, &unknown).await?;
            metrics::counter!("hendelse_pdp_decisions_total", "source" => "pdp")
                .increment(decisions.len() as u64);
            for (facts, decision) in unknown.into_iter().zip(decisions) {
                self.cache.insert(
                    (subject_key.clone(), action, facts.clone()),
                    (decision, now),
                );
                known.insert(facts, decision);
            }
        }
        let level = principal.auth_level().unwrap_or(0);
        let consumer = principal.consumer();
        Ok(events
            .iter()
            .map(|facts| {
                // Hendelse's own events about subscriptions are their consumer's, decided here.
                if facts.resource.as_deref() == Some(crate::SUBSCRIPTION_EVENTS_RESOURCE) {
                    return action != Action::Publish
                        && facts.subject.as_deref() == Some(consumer.as_str());
                }
                match known.get(facts) {
                    Some(Decision::Permit { minimum_level }) => level >= *minimum_level,
                    _ => false,
                }
            })
            .collect())
    }

    /// Only through the PDP ([`permitted`](Authorizer::permitted) with [`Action::Publish`]).
    fn may_publish(&self, _principal: &Principal, _resource: &str) -> bool {
        false
    }

    fn owns(&self, principal: &Principal, resource: &str) -> bool {
        self.register.owns(principal, resource)
    }

    fn party_subjects(&self, subject: &str, include_subunits: bool) -> Vec<String> {
        self.register.party_subjects(subject, include_subunits)
    }

    fn generation(&self) -> u64 {
        self.register.generation()
    }
}

fn attribute(id: &str, value: impl Into<String>) -> Value {
    json!({"AttributeId": id, "Value": value.into(), "DataType": STRING})
}

/// The subject's attributes, from the token's claims.
fn subject_attributes(principal: &Principal) -> Vec<Value> {
    let mut attributes = Vec::new();
    match principal {
        Principal::Person {
            user_id, party_id, ..
        } => {
            if let Some(id) = user_id {
                attributes.push(attribute("urn:altinn:userid", id.to_string()));
            }
            if let Some(id) = party_id {
                attributes.push(attribute("urn:altinn:partyid", id.to_string()));
            }
        }
        Principal::Org {
            org, org_number, ..
        } => {
            if let Some(org) = org {
                attributes.push(attribute("urn:altinn:org", org.as_str()));
            }
            if let Some(orgno) = org_number {
                attributes.push(attribute(
                    "urn:altinn:organization:identifier-no",
                    orgno.as_str(),
                ));
            }
        }
        Principal::SystemUser { id, .. } => {
            attributes.push(attribute("urn:altinn:systemuser:uuid", id.as_str()));
        }
    }
    let scopes = principal.scopes().join(" ");
    if !scopes.is_empty() {
        attributes.push(attribute("urn:scope", scopes));
    }
    attributes
}

/// The resource attributes of one event: an app event's org, app, party and instance; a generic
/// event's resource id, type, source, subject (as its party attribute) and resource instance.
fn resource_attributes(facts: &EventFacts) -> Vec<Value> {
    let mut attributes = Vec::new();
    let party = facts.subject_key();
    if let Some(app) = facts
        .resource
        .as_deref()
        .and_then(|r| r.strip_prefix(APP_PREFIX))
    {
        // app_{org}_{app}: the org has no underscore, the app may.
        if let Some((org, app)) = app.split_once('_') {
            attributes.push(attribute("urn:altinn:org", org));
            attributes.push(attribute("urn:altinn:app", app));
        }
        if let Some(id) = party.as_deref().and_then(|p| p.strip_prefix("/party/")) {
            attributes.push(attribute("urn:altinn:partyid", id));
        }
        if let Some(instance) = &facts.resource_instance {
            attributes.push(attribute("urn:altinn:instance-id", instance.as_str()));
        }
        if let Some(t) = &facts.event_type {
            attributes.push(attribute("urn:altinn:event-type", t.as_str()));
        }
        return attributes;
    }
    if let Some(resource) = &facts.resource
        && let Some((id, value)) = resource.rsplit_once(':')
    {
        attributes.push(attribute(id, value));
    }
    if let Some(t) = &facts.event_type {
        attributes.push(attribute("urn:altinn:event-type", t.as_str()));
    }
    if let Some(source) = &facts.source {
        attributes.push(attribute("urn:altinn:event-source", source.as_str()));
    }
    if let Some(party) = party {
        // `urn:altinn:organization:identifier-no:{orgno}` → that attribute with the number;
        // `/party/{id}` → `urn:altinn:partyid`.
        if let Some(id) = party.strip_prefix("/party/") {
            attributes.push(attribute("urn:altinn:partyid", id));
        } else if let Some((id, value)) = party.rsplit_once(':') {
            attributes.push(attribute(id, value));
        }
    }
    if let Some(instance) = &facts.resource_instance {
        attributes.push(attribute("urn:altinn:resourceinstance", instance.as_str()));
    }
    attributes
}

/// One multi-decision request: one subject, one action, one resource per distinct event, each
/// tagged with its reference (`r1`, `r2`, …) so that its result can be found.
fn multi_request(subject: &[Value], action: Action, resources: &[&EventFacts]) -> Value {
    let resource_list: Vec<Value> = resources
        .iter()
        .enumerate()
        .map(|(i, facts)| {
            let reference = format!("r{}", i + 1);
            let mut attributes = resource_attributes(facts);
            attributes.push(json!({
                "AttributeId": REFERENCE, "Value": reference, "DataType": STRING,
                "IncludeInResult": true
            }));
            json!({"Id": reference, "Attribute": attributes})
        })
        .collect();
    let references: Vec<Value> = (1..=resources.len())
        .map(|i| json!({"ReferenceId": ["s1", "a1", format!("r{i}")]}))
        .collect();
    json!({"Request": {
        "ReturnPolicyIdList": false,
        "AccessSubject": [{"Id": "s1", "Attribute": subject}],
        "Action": [{"Id": "a1", "Attribute": [attribute(ACTION_ID, action.as_str())]}],
        "Resource": resource_list,
        "MultiRequests": {"RequestReference": references}
    }})
}

/// The decision for each of `count` resources, found by their reference; a result that is
/// missing, unmapped or anything but `Permit` denies.
fn decisions_of(body: &Value, count: usize) -> Vec<Decision> {
    let mut decisions = vec![Decision::Deny; count];
    let Some(results) = body["Response"].as_array() else {
        return decisions;
    };
    for result in results {
        let reference = result["Category"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["Attribute"].as_array().into_iter().flatten())
            .find(|a| a["AttributeId"] == REFERENCE)
            .and_then(|a| a["Value"].as_str())
            .and_then(|v| v.strip_prefix('r'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=count).contains(n));
        let Some(n) = reference else {
            continue;
        };
        if result["Decision"] != "Permit" {
            continue;
        }
        decisions[n - 1] = Decision::Permit {
            minimum_level: minimum_level(result),
        };
    }
    decisions
}

/// The highest minimum authentication level the result's obligations ask (0 without one);
/// `u8::MAX` (met by no token) for one that cannot be read, so that it never permits.
fn minimum_level(result: &Value) -> u8 {
    result["Obligations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["AttributeAssignment"].as_array().into_iter().flatten())
        .filter(|a| a["Category"] == MINIMUM_LEVEL)
        .map(|a| match &a["Value"] {
            Value::String(s) => s.trim().parse::<u8>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
            _ => None,
        })
        .map(|level| level.unwrap_or(u8::MAX))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(resource: &str, subject: &str) -> EventFacts {
        EventFacts {
            resource: Some(resource.into()),
            subject: Some(subject.into()),
            source: Some("https://example.com".into()),
            event_type: Some("t".into()),
            resource_instance: None,
        }
    }

    #[test]
    fn a_page_is_one_request_with_a_reference_per_resource() {
        let a = facts(
            "urn:altinn:resource:super-simple-service",
            "urn:altinn:organization:identifier-no:912345678",
        );
        let b = facts("urn:altinn:resource:app_ttd_my_app", "/party/50002598");
        let request = multi_request(&[], Action::Read, &[&a, &b]);
        let resources = request["Request"]["Resource"]
            .as_array()
            .expect("resources");
        assert_eq!(resources.len(), 2);
        let first = resources[0]["Attribute"].to_string();
        assert!(
            first.contains(r#""Value":"super-simple-service""#),
            "{first}"
        );
        assert!(
            first.contains("912345678"),
            "the subject is part of it: {first}"
        );
        let app = resources[1]["Attribute"].to_string();
        assert!(app.contains(r#""Value":"my_app""#), "{app}");
        assert!(app.contains(r#""Value":"50002598""#), "{app}");
        assert_eq!(
            request["Request"]["MultiRequests"]["RequestReference"][1]["ReferenceId"],
            json!(["s1", "a1", "r2"])
        );
    }

    #[test]
    fn results_are_mapped_by_reference_and_obligations_read() {
        let body = json!({"Response": [
            {"Decision": "Deny", "Category": [{"Attribute": [{"AttributeId": REFERENCE, "Value": "r1"}]}]},
            {"Decision": "Permit",
             "Obligations": [{"AttributeAssignment": [{"Category": MINIMUM_LEVEL, "Value": "3"}]}],
             "Category": [{"Attribute": [{"AttributeId": REFERENCE, "Value": "r2"}]}]},
            {"Decision": "Permit", "Category": [{"Attribute": [{"AttributeId": REFERENCE, "Value": "r9"}]}]}
        ]});
        assert_eq!(
            decisions_of(&body, 3),
            vec![
                Decision::Deny,
                Decision::Permit { minimum_level: 3 },
                Decision::Deny
            ]
        );
        assert_eq!(
            decisions_of(&json!({"nonsense": 1}), 2),
            vec![Decision::Deny; 2]
        );
    }
}
