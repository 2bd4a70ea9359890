use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The caller, as its token describes it. Serializable so that a subscription can keep acting, and
/// being authorized, as its creator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Principal {
    /// A service owner or other organisation (`urn:altinn:org` and/or `urn:altinn:orgNumber`).
    Org {
        org: Option<String>,
        org_number: Option<String>,
        scopes: Vec<String>,
    },
    /// An end user (`pid`).
    Person {
        pid: String,
        user_id: Option<i64>,
        party_id: Option<i64>,
        scopes: Vec<String>,
    },
}

impl Principal {
    pub fn scopes(&self) -> &[String] {
        match self {
            Principal::Org { scopes, .. } | Principal::Person { scopes, .. } => scopes,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().iter().any(|s| s == scope)
    }

    /// Who owns what this principal subscribes, in Altinn's notation (`/org/ttd`,
    /// `/organisation/{orgno}`, `/user/{id}`, `/person/{pid}`): a subscription's `consumer`, and
    /// the subject of the events about its subscriptions.
    pub fn consumer(&self) -> String {
        match self {
            Principal::Org { org: Some(org), .. } => format!("/org/{org}"),
            Principal::Org {
                org_number: Some(orgno),
                ..
            } => format!("/organisation/{orgno}"),
            Principal::Org { .. } => "/org/unknown".to_owned(),
            Principal::Person {
                user_id: Some(id), ..
            } => format!("/user/{id}"),
            Principal::Person { pid, .. } => format!("/person/{pid}"),
        }
    }

    /// The org code (`ttd`) of an org principal.
    pub fn org(&self) -> Option<&str> {
        match self {
            Principal::Org { org, .. } => org.as_deref(),
            Principal::Person { .. } => None,
        }
    }
}

/// The Altinn claims Hendelse reads from a verified token.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct AltinnClaims {
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(rename = "urn:altinn:org", default)]
    pub org: Option<String>,
    #[serde(rename = "urn:altinn:orgNumber", default)]
    pub org_number: Option<Value>,
    #[serde(default)]
    pub pid: Option<Value>,
    #[serde(rename = "urn:altinn:userid", default)]
    pub user_id: Option<Value>,
    #[serde(rename = "urn:altinn:partyid", default)]
    pub party_id: Option<Value>,
}

/// Altinn tokens carry numbers sometimes as JSON numbers and sometimes as strings.
fn as_text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl AltinnClaims {
    /// The principal these claims describe, or why they describe none.
    pub fn principal(&self) -> Result<Principal, &'static str> {
        let scopes: Vec<String> = self
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(pid) = as_text(&self.pid) {
            return Ok(Principal::Person {
                pid,
                user_id: as_text(&self.user_id).and_then(|s| s.parse().ok()),
                party_id: as_text(&self.party_id).and_then(|s| s.parse().ok()),
                scopes,
            });
        }
        let org = self.org.clone().filter(|o| !o.is_empty());
        let org_number = as_text(&self.org_number);
        if org.is_none() && org_number.is_none() {
            return Err(
                "the token names neither a person (pid) nor an organisation (urn:altinn:org)",
            );
        }
        Ok(Principal::Org {
            org,
            org_number,
            scopes,
        })
    }
}
