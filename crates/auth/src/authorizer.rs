//! Authorization decisions. Every decision goes through [`Authorizer`]; the built-in
//! [`RegistryAuthorizer`] answers from the registry file.

use hendelse_model::subject::{
    ORGANIZATION_URN, PERSON_URN, app_party_subject, organization_urn, party_key, person_urn,
};
use hendelse_model::visibility::ResourceScope;
use hendelse_model::{Grant, RESOURCE_PREFIX, Visibility};

use crate::SCOPE_PUBLISH_ADMIN;
use crate::decision::{Action, DecisionError, EventFacts};
use crate::principal::Principal;
use crate::registry::{Party, Registry};

#[async_trait::async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Every event the principal may read, as grants the store can filter by. An authorizer that
    /// decides event by event answers nothing here (so that a reader that does not ask it per
    /// event sees nothing): read [`candidates`](Self::candidates) and ask
    /// [`permitted`](Self::permitted).
    fn visibility(&self, principal: &Principal) -> Visibility;

    /// What to read as candidates of a decision per event: the grants themselves for an
    /// authorizer by grants, everything for one that decides each event.
    fn candidates(&self, principal: &Principal) -> Visibility {
        self.visibility(principal)
    }

    /// Whether candidates need [`permitted`](Self::permitted) before anyone sees them (false:
    /// the candidates are what the grants cover already).
    fn decides_per_event(&self) -> bool {
        false
    }

    /// Which of `events` (candidates) the principal may `action`, in their order, asked
    /// together. By grants: reading what the grants cover, publishing what
    /// [`may_publish`](Self::may_publish) allows; subscribing is decided by the grants when the
    /// subscription's filters are checked against them.
    async fn permitted(
        &self,
        principal: &Principal,
        action: Action,
        events: &[EventFacts],
    ) -> Result<Vec<bool>, DecisionError> {
        Ok(match action {
            Action::Read => {
                let visibility = self.visibility(principal);
                events
                    .iter()
                    .map(|e| visibility.covers(e.subject_key().as_deref(), e.resource.as_deref()))
                    .collect()
            }
            Action::Publish => events
                .iter()
                .map(|e| {
                    e.resource
                        .as_deref()
                        .is_some_and(|r| self.may_publish(principal, r))
                })
                .collect(),
            Action::Subscribe => vec![true; events.len()],
        })
    }

    /// Whether the principal may publish events of this resource (scope checks are the caller's).
    fn may_publish(&self, principal: &Principal, resource: &str) -> bool;

    /// Whether the principal owns the resource (an org's own resources and apps).
    fn owns(&self, principal: &Principal, resource: &str) -> bool;

    /// Every subject key that names the party `subject` names (its `/party/{id}` and URN forms),
    /// and with `include_subunits` those of its subunits too.
    fn party_subjects(&self, subject: &str, include_subunits: bool) -> Vec<String>;

    /// Changes whenever the access it decides by changes (a reloaded registry), so that what was
    /// decided before (an open stream's filter) is decided again.
    fn generation(&self) -> u64 {
        0
    }
}

/// The resource of the events Hendelse publishes about subscriptions, each with its consumer
/// (`/org/ttd`, `/user/{id}`…) as subject, so that every subscriber reads (or subscribes to) those
/// about its own.
pub const SUBSCRIPTION_EVENTS_RESOURCE: &str = "urn:altinn:resource:events-subscriptions";

/// The prefix of every app resource of an org: `urn:altinn:resource:app_{org}_`.
pub fn app_resource_prefix(org: &str) -> String {
    format!("{RESOURCE_PREFIX}app_{org}_")
}

pub struct RegistryAuthorizer {
    registry: Registry,
}

impl RegistryAuthorizer {
    pub fn new(registry: Registry) -> Self {
        RegistryAuthorizer { registry }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every subject key an event about this party may carry.
    fn subjects_of(&self, party: &Party) -> Vec<String> {
        let mut subjects = vec![app_party_subject(party.party_id)];
        if let Some(pid) = &party.person {
            subjects.push(person_urn(pid));
        }
        if let Some(orgno) = &party.organization {
            subjects.push(organization_urn(orgno));
        }
        subjects
    }

    fn access_grants<'a>(
        &'a self,
        rows: impl Iterator<Item = &'a crate::registry::Access>,
    ) -> Vec<Grant> {
        rows.filter(|a| a.actions.iter().any(|x| x == "read" || x == "*"))
            .map(|a| {
                let subjects = match self.registry.party(a.party) {
                    Some(party) => self.subjects_of(party),
                    None => vec![app_party_subject(a.party)],
                };
                let resources = if a.resources.iter().any(|r| r == "*") {
                    ResourceScope::Any
                } else {
                    ResourceScope::Some {
                        exact: a.resources.clone(),
                        prefixes: Vec::new(),
                    }
                };
                Grant {
                    subjects: Some(subjects),
                    resources,
                }
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Authorizer for RegistryAuthorizer {
    fn visibility(&self, principal: &Principal) -> Visibility {
        let mut grants = Vec::new();
        match principal {
            Principal::Person { pid, party_id, .. } => {
                // A person may always read their own party's events.
                let mut own = vec![person_urn(pid)];
                if let Some(id) = party_id {
                    own.push(app_party_subject(*id));
                }
                if let Some(party) = self.registry.party_of_person(pid) {
                    own.extend(self.subjects_of(party));
                }
                own.sort();
                own.dedup();
                grants.push(Grant {
                    subjects: Some(own),
                    resources: ResourceScope::Any,
                });
                grants.extend(
                    self.access_grants(
                        self.registry
                            .access
                            .iter()
                            .filter(|a| a.person.as_deref() == Some(pid.as_str())),
                    ),
                );
            }
            Principal::Org {
                org, org_number, ..
            } => {
                if let Some(org) = org {
                    let exact: Vec<String> = self
                        .registry
                        .resources
                        .iter()
                        .filter(|r| &r.owner == org)
                        .map(|r| r.id.clone())
                        .collect();
                    grants.push(Grant {
                        subjects: None,
                        resources: ResourceScope::Some {
                            exact,
                            prefixes: vec![app_resource_prefix(org)],
                        },
                    });
                }
                if let Some(orgno) = org_number {
                    let subjects = match self.registry.party_of_organization(orgno) {
                        Some(party) => self.subjects_of(party),
                        None => vec![organization_urn(orgno)],
                    };
                    grants.push(Grant {
                        subjects: Some(subjects),
                        resources: ResourceScope::Any,
                    });
                    grants.extend(
                        self.access_grants(
                            self.registry
                                .access
                                .iter()
                                .filter(|a| a.organization.as_deref() == Some(orgno.as_str())),
                        ),
                    );
                }
            }
            Principal::SystemUser { id, owner, .. } => {
                // A system user acts for its owner: it reads what is about the owner's party, and
                // what access rows grant it by name.
                let subjects = match self.registry.party_of_organization(owner) {
                    Some(party) => self.subjects_of(party),
                    None => vec![organization_urn(owner)],
                };
                grants.push(Grant {
                    subjects: Some(subjects),
                    resources: ResourceScope::Any,
                });
                grants.extend(self.access_grants(self.registry.access.iter().filter(|a| {
                    a.system_user
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case(id))
                })));
            }
        }
        // The events about one's own subscriptions (one disabled for failing, say).
        grants.push(Grant {
            subjects: Some(vec![principal.consumer()]),
            resources: ResourceScope::Some {
                exact: vec![SUBSCRIPTION_EVENTS_RESOURCE.to_owned()],
                prefixes: Vec::new(),
            },
        });
        Visibility::Grants(grants)
    }

    fn may_publish(&self, principal: &Principal, resource: &str) -> bool {
        principal.has_scope(SCOPE_PUBLISH_ADMIN) || self.owns(principal, resource)
    }

    fn owns(&self, principal: &Principal, resource: &str) -> bool {
        let Some(org) = principal.org() else {
            return false;
        };
        resource.starts_with(&app_resource_prefix(org))
            || self.registry.resource_owner(resource) == Some(org)
    }

    fn party_subjects(&self, subject: &str, include_subunits: bool) -> Vec<String> {
        let key = party_key(subject);
        let party = if let Some(id) = key.strip_prefix("/party/") {
            id.parse().ok().and_then(|id| self.registry.party(id))
        } else if let Some(orgno) = key.strip_prefix(ORGANIZATION_URN) {
            self.registry.party_of_organization(orgno)
        } else if let Some(pid) = key.strip_prefix(PERSON_URN) {
            self.registry.party_of_person(pid)
        } else {
            None
        };
        let mut subjects = vec![key.clone()];
        if let Some(party) = party {
            subjects.extend(self.subjects_of(party));
        }
        if include_subunits {
            let orgno = party
                .and_then(|p| p.organization.as_deref())
                .or_else(|| key.strip_prefix(ORGANIZATION_URN));
            if let Some(orgno) = orgno {
                for unit in self.registry.subunits_of(orgno) {
                    subjects.extend(self.subjects_of(unit));
                }
            }
        }
        subjects.sort();
        subjects.dedup();
        subjects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        serde_json::from_str(
            r#"{"parties":[{"partyId":50002598,"person":"07124912037"},{"partyId":50001337,"organization":"991825827"}],
                "resources":[{"id":"urn:altinn:resource:super-simple-service","owner":"ttd"}],
                "access":[{"person":"07124912037","party":50001337,"resources":["urn:altinn:resource:super-simple-service"],"actions":["read"]}]}"#,
        )
        .expect("registry")
    }

    fn person() -> Principal {
        Principal::Person {
            pid: "07124912037".into(),
            user_id: None,
            party_id: Some(50002598),
            scopes: vec![],
            auth_level: None,
        }
    }

    #[test]
    fn a_person_reads_their_own_party_and_what_access_rows_grant() {
        let v = RegistryAuthorizer::new(registry()).visibility(&person());
        assert!(v.covers(
            Some("/party/50002598"),
            Some("urn:altinn:resource:app_ttd_x")
        ));
        assert!(v.covers(
            Some("urn:altinn:person:identifier-no:07124912037"),
            Some("urn:altinn:resource:any")
        ));
        let org_party = "urn:altinn:organization:identifier-no:991825827";
        assert!(v.covers(
            Some(org_party),
            Some("urn:altinn:resource:super-simple-service")
        ));
        assert!(!v.covers(Some(org_party), Some("urn:altinn:resource:other")));
        assert!(!v.covers(
            Some("/party/1"),
            Some("urn:altinn:resource:super-simple-service")
        ));
    }

    #[test]
    fn party_subjects_cover_every_form_and_optionally_subunits() {
        let mut reg = registry();
        reg.parties.push(crate::registry::Party {
            party_id: 50005555,
            person: None,
            organization: Some("910000001".into()),
            parent_organization: Some("991825827".into()),
        });
        let auth = RegistryAuthorizer::new(reg);
        let own = auth.party_subjects("urn:altinn:organization:identifier-no::991825827", false);
        assert_eq!(
            own,
            [
                "/party/50001337",
                "urn:altinn:organization:identifier-no:991825827"
            ]
        );
        let with_units = auth.party_subjects("/party/50001337", true);
        assert!(with_units.contains(&"/party/50005555".to_owned()));
        assert!(with_units.contains(&"urn:altinn:organization:identifier-no:910000001".to_owned()));
        assert_eq!(auth.party_subjects("/party/1", true), ["/party/1"]);
    }

    #[test]
    fn an_org_reads_and_publishes_what_it_owns() {
        let auth = RegistryAuthorizer::new(registry());
        let ttd = Principal::Org {
            org: Some("ttd".into()),
            org_number: None,
            scopes: vec![],
            auth_level: None,
        };
        let v = auth.visibility(&ttd);
        assert!(v.covers(Some("/party/1"), Some("urn:altinn:resource:app_ttd_app")));
        assert!(v.covers(None, Some("urn:altinn:resource:super-simple-service")));
        assert!(!v.covers(Some("/party/1"), Some("urn:altinn:resource:app_skd_app")));
        assert!(auth.may_publish(&ttd, "urn:altinn:resource:super-simple-service"));
        assert!(auth.may_publish(&ttd, "urn:altinn:resource:app_ttd_app"));
        assert!(!auth.may_publish(&ttd, "urn:altinn:resource:app_skd_app"));
        assert!(!auth.may_publish(&person(), "urn:altinn:resource:app_ttd_app"));
    }
}
