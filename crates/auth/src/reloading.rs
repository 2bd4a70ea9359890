//! The registry's authorizer, replaceable while the server runs: a new registry is swapped in
//! whole (every decision sees one registry or the other, never a mix), and the generation moves
//! on so that long-lived decisions are made again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hendelse_model::Visibility;

use crate::authorizer::{Authorizer, RegistryAuthorizer};
use crate::principal::Principal;
use crate::registry::Registry;

pub struct ReloadingAuthorizer {
    current: RwLock<Arc<RegistryAuthorizer>>,
    generation: AtomicU64,
}

impl ReloadingAuthorizer {
    pub fn new(registry: Registry) -> Self {
        ReloadingAuthorizer {
            current: RwLock::new(Arc::new(RegistryAuthorizer::new(registry))),
            generation: AtomicU64::new(0),
        }
    }

    /// Decides by `registry` from now on.
    pub fn replace(&self, registry: Registry) {
        let next = Arc::new(RegistryAuthorizer::new(registry));
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> Arc<RegistryAuthorizer> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl Authorizer for ReloadingAuthorizer {
    fn visibility(&self, principal: &Principal) -> Visibility {
        self.current().visibility(principal)
    }

    fn may_publish(&self, principal: &Principal, resource: &str) -> bool {
        self.current().may_publish(principal, resource)
    }

    fn owns(&self, principal: &Principal, resource: &str) -> bool {
        self.current().owns(principal, resource)
    }

    fn party_subjects(&self, subject: &str, include_subunits: bool) -> Vec<String> {
        self.current().party_subjects(subject, include_subunits)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(json: &str) -> Registry {
        serde_json::from_str(json).expect("registry")
    }

    #[test]
    fn a_replaced_registry_decides_from_then_on() {
        let person = Principal::Person {
            pid: "01017012345".into(),
            user_id: None,
            party_id: None,
            scopes: Vec::new(),
            auth_level: None,
        };
        let with_access = registry(
            r#"{"parties": [{"partyId": 7, "organization": "912345678"}],
                "access": [{"person": "01017012345", "party": 7, "resources": ["*"]}]}"#,
        );
        let authorizer = ReloadingAuthorizer::new(with_access);
        let subject = "urn:altinn:organization:identifier-no:912345678";
        assert!(
            authorizer
                .visibility(&person)
                .covers(Some(subject), Some("urn:altinn:resource:r"))
        );
        let before = authorizer.generation();
        authorizer.replace(registry(
            r#"{"parties": [{"partyId": 7, "organization": "912345678"}]}"#,
        ));
        assert!(authorizer.generation() > before);
        assert!(
            !authorizer
                .visibility(&person)
                .covers(Some(subject), Some("urn:altinn:resource:r"))
        );
    }
}
