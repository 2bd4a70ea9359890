use hendelse_model::ValidationError;
use hendelse_store::StoreError;

/// Every way a dialog operation can fail; the server renders each as problem details.
#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    /// The request's fields are wrong (400, with the field errors).
    #[error("{0}")]
    Invalid(ValidationError),
    /// The request cannot be understood (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A dialog with the id exists, or the dialog changed under too many retries (409).
    #[error("{0}")]
    Conflict(String),
    /// The dialog is deleted (410).
    #[error("{0}")]
    Gone(String),
    /// `If-Match` names another revision (412).
    #[error("{0}")]
    PreconditionFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored dialog that cannot be read back or written: a fault of ours.
    #[error("{what}")]
    Internal {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl From<Vec<hendelse_model::FieldError>> for DialogError {
    fn from(errors: Vec<hendelse_model::FieldError>) -> Self {
        DialogError::Invalid(ValidationError { errors })
    }
}
