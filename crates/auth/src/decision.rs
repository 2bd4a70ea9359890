//! What a decision per event is about, for an authorizer that decides event by event (an
//! external decision point) rather than by grants the store can filter with.

use serde::Deserialize;

/// What the principal wants to do, as Altinn's policies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Subscribe,
    Publish,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

/// The attributes of one event (or of a subscription's filter) that a decision looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct EventFacts {
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    #[serde(default, rename = "resourceinstance")]
    pub resource_instance: Option<String>,
}

impl EventFacts {
    /// Read from an event's stored JSON; `None` for text that is no event object.
    pub fn of_json(body: &str) -> Option<EventFacts> {
        serde_json::from_str(body).ok()
    }

    /// The subject's party key, as the store and the grants name parties.
    pub fn subject_key(&self) -> Option<String> {
        self.subject
            .as_deref()
            .map(hendelse_model::subject::party_key)
    }
}

/// Why no decision was had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecisionError {
    /// The decision point did not answer (down, slow, or answering nonsense): nothing is
    /// permitted meanwhile.
    #[error("the authorization decision point is unavailable: {0}")]
    Unavailable(String),
}
