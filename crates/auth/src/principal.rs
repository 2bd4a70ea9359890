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
        /// `urn:altinn:authlevel`, which a decision point's obligations may ask a minimum of.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_level: Option<u8>,
    },
    /// An end user (`pid`).
    Person {
        pid: String,
        user_id: Option<i64>,
        party_id: Option<i64>,
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_level: Option<u8>,
    },
    /// An Altinn system user (`authorization_details` of type `urn:altinn:systemuser`): a
    /// system acting for the organisation that owns it, a principal of its own.
    SystemUser {
        /// The system user's id (a UUID).
        id: String,
        /// The organisation number of its owner.
        owner: String,
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_level: Option<u8>,
    },
}

impl Principal {
    pub fn scopes(&self) -> &[String] {
        match self {
            Principal::Org { scopes, .. }
            | Principal::Person { scopes, .. }
            | Principal::SystemUser { scopes, .. } => scopes,
        }
    }

    /// The token's `urn:altinn:authlevel`, if it had one.
    pub fn auth_level(&self) -> Option<u8> {
        match self {
            Principal::Org { auth_level, .. }
            | Principal::Person { auth_level, .. }
            | Principal::SystemUser { auth_level, .. } => *auth_level,
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
            Principal::SystemUser { id, .. } => format!("/systemuser/{id}"),
        }
    }

    /// The org code (`ttd`) of an org principal.
    pub fn org(&self) -> Option<&str> {
        match self {
            Principal::Org { org, .. } => org.as_deref(),
            Principal::Person { .. } | Principal::SystemUser { .. } => None,
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
    /// RFC 9396 authorization details; Altinn's system users are one of type
    /// `urn:altinn:systemuser`.
    #[serde(default)]
    pub authorization_details: Option<Value>,
    #[serde(rename = "urn:altinn:authlevel", default)]
    pub auth_level: Option<Value>,
}

/// The `authorization_details` type of an Altinn system user.
pub const SYSTEM_USER_TYPE: &str = "urn:altinn:systemuser";

/// The system user an `authorization_details` claim names: its id and its owner's organisation
/// number (`systemuser_org.ID` is `0192:{orgno}`); `Err` when it names one badly.
fn system_user(details: &Value) -> Result<Option<(String, String)>, &'static str> {
    let entries = match details {
        Value::Array(entries) => entries.as_slice(),
        single @ Value::Object(_) => std::slice::from_ref(single),
        _ => return Ok(None),
    };
    let Some(entry) = entries.iter().find(|e| e["type"] == SYSTEM_USER_TYPE) else {
        return Ok(None);
    };
    let id = match &entry["systemuser_id"] {
        Value::Array(ids) => ids.first().and_then(Value::as_str),
        Value::String(id) => Some(id.as_str()),
        _ => None,
    }
    .filter(|id| uuid::Uuid::parse_str(id).is_ok())
    .ok_or("the system user's systemuser_id is not a UUID")?;
    let owner = entry["systemuser_org"]["ID"]
        .as_str()
        .and_then(|id| id.strip_prefix("0192:"))
        .filter(|orgno| orgno.len() == 9 && orgno.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("the system user's systemuser_org.ID is not 0192:{organisation number}")?;
    Ok(Some((id.to_ascii_lowercase(), owner.to_owned())))
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
        let auth_level = as_text(&self.auth_level).and_then(|l| l.parse::<u8>().ok());
        let scopes: Vec<String> = self
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if let Some(details) = &self.authorization_details
            && let Some((id, owner)) = system_user(details)?
        {
            return Ok(Principal::SystemUser {
                id,
                owner,
                scopes,
                auth_level,
            });
        }
        if let Some(pid) = as_text(&self.pid) {
            return Ok(Principal::Person {
                pid,
                user_id: as_text(&self.user_id).and_then(|s| s.parse().ok()),
                party_id: as_text(&self.party_id).and_then(|s| s.parse().ok()),
                scopes,
                auth_level,
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
            auth_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> AltinnClaims {
        serde_json::from_value(value).expect("claims")
    }

    #[test]
    fn a_system_user_is_a_principal_of_its_own() {
        let token = claims(json!({
            "scope": "altinn:events.subscribe",
            "urn:altinn:orgNumber": "991825827",
            "authorization_details": [{
                "type": "urn:altinn:systemuser",
                "systemuser_id": ["A1B2C3D4-0000-4000-8000-000000000001"],
                "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:991825827"},
                "system_id": "some-system"
            }]
        }));
        let principal = token.principal().expect("a principal");
        assert_eq!(
            principal,
            Principal::SystemUser {
                id: "a1b2c3d4-0000-4000-8000-000000000001".into(),
                owner: "991825827".into(),
                scopes: vec!["altinn:events.subscribe".into()],
                auth_level: None,
            }
        );
        assert_eq!(
            principal.consumer(),
            "/systemuser/a1b2c3d4-0000-4000-8000-000000000001"
        );
        assert_eq!(principal.org(), None);
    }

    #[test]
    fn a_badly_named_system_user_is_refused_and_other_details_are_ignored() {
        let bad_id = claims(json!({"authorization_details": [{
            "type": "urn:altinn:systemuser", "systemuser_id": ["nope"],
            "systemuser_org": {"ID": "0192:991825827"}}]}));
        assert!(bad_id.principal().is_err());
        let bad_org = claims(json!({"authorization_details": [{
            "type": "urn:altinn:systemuser",
            "systemuser_id": ["a1b2c3d4-0000-4000-8000-000000000001"],
            "systemuser_org": {"ID": "991825827"}}]}));
        assert!(bad_org.principal().is_err());
        let other = claims(json!({"urn:altinn:org": "ttd",
            "authorization_details": [{"type": "something-else"}]}));
        assert!(matches!(other.principal(), Ok(Principal::Org { .. })));
    }
}
