//! What a caller asks of the dialog service besides the body: the conditions of a change and
//! the filters and page of a listing, already parsed from HTTP by the server.

use hendelse_store::dialog::DeletedFilter;
use uuid::Uuid;

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// The conditions of a change request.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// The change applies only to a dialog at one of these revisions (`If-Match`).
    pub if_match: Option<Precondition>,
    /// `isSilentUpdate=true`: publish nothing, and do not count as a change that users have yet to
    /// see (the revision still changes).
    pub silent: bool,
}

/// The revisions a change is made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Whatever the dialog's revision is.
    Any,
    /// Only one of these (none: no revision will do).
    OneOf(Vec<Uuid>),
}

impl Precondition {
    pub fn allows(&self, revision: &Uuid) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::OneOf(revisions) => revisions.contains(revision),
        }
    }
}

/// Filters of a listing and where its page starts.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub service_resources: Vec<String>,
    pub parties: Vec<String>,
    /// Dialogporten's status names, as [`crate::validate::parse_status`] gives them.
    pub statuses: Vec<String>,
    /// Service owners only; end users never see deleted dialogs.
    pub deleted: DeletedFilter,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: u32,
    /// The continuation token of the previous page: the position after which this one starts.
    pub after: i64,
}

impl Default for ListParams {
    fn default() -> Self {
        ListParams {
            service_resources: Vec::new(),
            parties: Vec::new(),
            statuses: Vec::new(),
            deleted: DeletedFilter::Exclude,
            limit: DEFAULT_PAGE,
            after: 0,
        }
    }
}
