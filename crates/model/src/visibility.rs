//! What a reader may see, expressed so that the store can filter by it before it limits a page.

/// One rule of access: events whose subject is one of `subjects` (any subject when `None`) and whose
/// resource is in `resources` or starts with one of `resource_prefixes` (any resource when both are
/// `None`/empty and `any_resource` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subjects: Option<Vec<String>>,
    pub resources: ResourceScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceScope {
    Any,
    /// Exact resource ids and resource-id prefixes (such as an org's `urn:altinn:resource:app_ttd_`).
    Some {
        exact: Vec<String>,
        prefixes: Vec<String>,
    },
}

impl ResourceScope {
    pub fn covers(&self, resource: Option<&str>) -> bool {
        match (self, resource) {
            (ResourceScope::Any, _) => true,
            (ResourceScope::Some { .. }, None) => false,
            (ResourceScope::Some { exact, prefixes }, Some(r)) => {
                exact.iter().any(|e| e == r) || prefixes.iter().any(|p| r.starts_with(p.as_str()))
            }
        }
    }
}

impl Grant {
    pub fn covers(&self, subject_key: Option<&str>, resource: Option<&str>) -> bool {
        let subject_ok = match (&self.subjects, subject_key) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(list), Some(s)) => list.iter().any(|x| x == s),
        };
        subject_ok && self.resources.covers(resource)
    }
}

/// Everything a reader may see: all events, or the union of some grants (none means nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    All,
    Grants(Vec<Grant>),
}

impl Visibility {
    pub fn is_nothing(&self) -> bool {
        matches!(self, Visibility::Grants(g) if g.is_empty())
    }

    pub fn covers(&self, subject_key: Option<&str>, resource: Option<&str>) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Grants(grants) => grants.iter().any(|g| g.covers(subject_key, resource)),
        }
    }

    /// Only the grants that could match events with this subject, so that a query for one party
    /// that the reader may not read is answered without touching the store.
    pub fn restricted_to_subject(&self, subject_key: &str) -> Visibility {
        match self {
            Visibility::All => Visibility::All,
            Visibility::Grants(grants) => Visibility::Grants(
                grants
                    .iter()
                    .filter(|g| {
                        g.subjects
                            .as_ref()
                            .is_none_or(|s| s.iter().any(|x| x == subject_key))
                    })
                    .cloned()
                    .collect(),
            ),
        }
    }
}
