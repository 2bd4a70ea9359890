//! The registry file (`--registry`): parties, resources with their owners, and who may act for whom.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    #[serde(default)]
    pub parties: Vec<Party>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default)]
    pub access: Vec<Access>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Party {
    pub party_id: i64,
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    /// For a subunit: the organisation number of its parent unit.
    #[serde(default)]
    pub parent_organization: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    pub owner: String,
}

/// Someone (a person, an organisation by number, or a system user by id) may act for `party` on
/// `resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default, rename = "systemUser")]
    pub system_user: Option<String>,
    pub party: i64,
    pub resources: Vec<String>,
    #[serde(default = "read_only")]
    pub actions: Vec<String>,
}

fn read_only() -> Vec<String> {
    vec!["read".to_owned()]
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the registry {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the registry {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The registry in `text`, read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Registry, RegistryError> {
        serde_json::from_str(text).map_err(|source| RegistryError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn party(&self, party_id: i64) -> Option<&Party> {
        self.parties.iter().find(|p| p.party_id == party_id)
    }

    pub fn party_of_person(&self, pid: &str) -> Option<&Party> {
        self.parties
            .iter()
            .find(|p| p.person.as_deref() == Some(pid))
    }

    pub fn party_of_organization(&self, orgno: &str) -> Option<&Party> {
        self.parties
            .iter()
            .find(|p| p.organization.as_deref() == Some(orgno))
    }

    /// The parties whose parent unit is this organisation.
    pub fn subunits_of<'a>(&'a self, orgno: &'a str) -> impl Iterator<Item = &'a Party> + 'a {
        self.parties
            .iter()
            .filter(move |p| p.parent_organization.as_deref() == Some(orgno))
    }

    pub fn resource_owner(&self, resource: &str) -> Option<&str> {
        self.resources
            .iter()
            .find(|r| r.id == resource)
            .map(|r| r.owner.as_str())
    }
}
