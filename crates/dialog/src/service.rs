//! The dialog service: every operation of the service-owner and end-user APIs, with its
//! authorization, revision checks and the events it writes to the outbox in the same transaction.
//! (Over 600 lines because it is one type whose operations share one load-change-retry protocol;
//! what a change does to a dialog is in `changes.rs`, validation in `validate.rs`.)

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hendelse_auth::{Authorizer, Principal};
use hendelse_model::subject::{organization_urn, party_key, person_urn};
use hendelse_store::DialogStore;
use hendelse_store::dialog::{DeletedFilter, DialogQuery, DialogRecord, SeenEntry};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::changes::{add_items, new_items, replace_with};
use crate::error::DialogError;
use crate::events::{
    DIALOG_CREATED, DIALOG_DELETED, DIALOG_RESTORED, DIALOG_SEEN, DIALOG_UPDATED, Occurrence,
    outbox_event,
};
use crate::model::{
    ActivityInput, Dialog, DialogInput, DialogView, Page, SeenBy, SeenView, TransmissionInput,
};
use crate::request::{Conditions, ListParams};
use crate::validate::{
    Problems, check_activity, check_fields, check_id, check_party, check_resource,
    check_transmission,
};

/// How often a change is tried again when another change of the same dialog wins the race.
const MAX_ATTEMPTS: usize = 8;

/// The change's time, to the microsecond the store keeps.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_else(Utc::now)
}

fn parse<T: DeserializeOwned>(body: Value, what: &str) -> Result<T, DialogError> {
    serde_json::from_value(body)
        .map_err(|e| DialogError::BadRequest(format!("the body is not {what}: {e}")))
}

fn not_found(id: &str) -> DialogError {
    DialogError::NotFound(format!("no dialog with id '{id}'"))
}

fn gone(id: &Uuid) -> DialogError {
    DialogError::Gone(format!(
        "the dialog {id} is deleted; restore it before changing it"
    ))
}

fn encode(dialog: &Dialog, change_id: &str) -> Result<DialogRecord, DialogError> {
    Ok(DialogRecord {
        seq: 0,
        id: dialog.id.to_string(),
        resource: dialog.service_resource.clone(),
        subject_key: party_key(&dialog.party),
        status: dialog.status.clone(),
        revision: dialog.revision.to_string(),
        change_id: change_id.to_owned(),
        deleted: dialog.deleted_at.is_some(),
        created: dialog.created_at,
        updated: dialog.updated_at,
        document: serde_json::to_string(dialog).map_err(|source| DialogError::Internal {
            what: "cannot store a dialog".into(),
            source,
        })?,
    })
}

fn decode(record: &DialogRecord) -> Result<Dialog, DialogError> {
    serde_json::from_str(&record.document).map_err(|source| DialogError::Internal {
        what: format!("the stored dialog {} is unreadable", record.id),
        source,
    })
}

/// Who a seen-log entry names: the user's URN.
fn actor_of(caller: &Principal) -> String {
    match caller {
        Principal::Person { pid, .. } => person_urn(pid),
        Principal::Org {
            org_number: Some(orgno),
            ..
        } => organization_urn(orgno),
        Principal::Org { org: Some(org), .. } => format!("urn:altinn:org:{org}"),
        Principal::Org { .. } => "urn:altinn:org:unknown".to_owned(),
        Principal::SystemUser { id, .. } => format!("urn:altinn:systemuser:uuid:{id}"),
    }
}

/// The org code of a service owner, or why the caller is none.
fn service_owner(caller: &Principal) -> Result<&str, DialogError> {
    caller.org().ok_or_else(|| {
        DialogError::Forbidden(
            "the service-owner API needs an org token (claim urn:altinn:org)".into(),
        )
    })
}

/// Dialogs and their events. Cheap to clone.
#[derive(Clone)]
pub struct DialogService {
    store: Arc<dyn DialogStore>,
    authorizer: Arc<dyn Authorizer>,
    /// Wakes the forwarder when a change wrote events.
    wake: Arc<Notify>,
}

impl DialogService {
    pub fn new(
        store: Arc<dyn DialogStore>,
        authorizer: Arc<dyn Authorizer>,
        wake: Arc<Notify>,
    ) -> Self {
        DialogService {
            store,
            authorizer,
            wake,
        }
    }

    /// The stored dialog and its record, or 404.
    async fn load(&self, id: &str) -> Result<(Dialog, DialogRecord), DialogError> {
        let uuid = Uuid::parse_str(id.trim()).map_err(|_| not_found(id))?;
        let record = self
            .store
            .dialog(&uuid.to_string())
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok((decode(&record)?, record))
    }

    /// The dialog, if the caller is a service owner that owns its service resource.
    async fn load_owned(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<(Dialog, DialogRecord), DialogError> {
        let org = service_owner(caller)?;
        let (dialog, record) = self.load(id).await?;
        if !self.authorizer.owns(caller, &dialog.service_resource) {
            return Err(DialogError::Forbidden(format!(
                "{org} does not own {}, the service resource of the dialog",
                dialog.service_resource
            )));
        }
        Ok((dialog, record))
    }

    fn check_if_match(conditions: &Conditions, dialog: &Dialog) -> Result<(), DialogError> {
        match &conditions.if_match {
            Some(precondition) if !precondition.allows(&dialog.revision) => {
                Err(DialogError::PreconditionFailed(format!(
                    "If-Match does not name the dialog's current revision {}",
                    dialog.revision
                )))
            }
            _ => Ok(()),
        }
    }

    /// Applies `op` to the current dialog and stores the result with its events, as a
    /// compare-and-swap on the revision: when another change wins the race, the change is made
    /// again on top of it (or, with `If-Match`, refused with 412). `op` returns the occurrences
    /// the change publishes, or `None` when there is nothing to change.
    async fn change<F>(
        &self,
        caller: &Principal,
        id: &str,
        conditions: &Conditions,
        live_only: bool,
        op: F,
    ) -> Result<Dialog, DialogError>
    where
        F: Fn(&mut Dialog, DateTime<Utc>) -> Result<Option<Vec<Occurrence>>, DialogError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let (current, record) = self.load_owned(caller, id).await?;
            if live_only && current.deleted_at.is_some() {
                return Err(gone(&current.id));
            }
            Self::check_if_match(conditions, &current)?;
            let now = now();
            let mut next = current.clone();
            let Some(occurrences) = op(&mut next, now)? else {
                return Ok(current);
            };
            next.revision = Uuid::new_v4();
            let change_id = if conditions.silent {
                record.change_id.clone()
            } else {
                next.updated_at = now;
                Uuid::new_v4().to_string()
            };
            let events: Vec<_> = if conditions.silent {
                Vec::new()
            } else {
                occurrences
                    .iter()
                    .map(|o| outbox_event(&next, o, now, None))
                    .collect()
            };
            if self
                .store
                .update_dialog(&encode(&next, &change_id)?, &record.revision, &events)
                .await?
            {
                if !events.is_empty() {
                    self.wake.notify_one();
                }
                return Ok(next);
            }
            if conditions.if_match.is_some() {
                return Err(DialogError::PreconditionFailed(format!(
                    "the dialog changed after revision {}",
                    current.revision
                )));
            }
        }
        Err(DialogError::Conflict(
            "the dialog is being changed by others; try again".into(),
        ))
    }

    /// Creates a dialog: `created`, then one event per activity and per transmission.
    pub async fn create(
        &self,
        caller: &Principal,
        body: Value,
        silent: bool,
    ) -> Result<Dialog, DialogError> {
        let org = service_owner(caller)?.to_owned();
        let input: DialogInput = parse(body, "a dialog")?;
        let mut problems = Problems::default();
        let id = check_id(input.id.as_deref(), &mut problems);
        let resource = check_resource(input.service_resource.as_deref(), &mut problems);
        let party = check_party(input.party.as_deref(), &mut problems);
        let fields = check_fields(&input, &mut problems);
        let now = now();
        let (Some(service_resource), Some(party)) = (resource, party) else {
            return Err(problems.0.into());
        };
        if !self.authorizer.owns(caller, &service_resource) {
            return Err(DialogError::Forbidden(format!(
                "{org} does not own {service_resource}"
            )));
        }
        let mut dialog = Dialog {
            id: id.unwrap_or_else(Uuid::now_v7),
            revision: Uuid::new_v4(),
            org,
            service_resource,
            party,
            progress: None,
            extended_status: None,
            external_reference: None,
            process: None,
            preceding_process: None,
            status: crate::model::DEFAULT_STATUS.to_owned(),
            content: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            activities: Vec::new(),
            transmissions: Vec::new(),
        };
        let (activities, transmissions) = new_items(
            input.activities.as_deref().unwrap_or_default(),
            input.transmissions.as_deref().unwrap_or_default(),
            &dialog,
            now,
            &mut problems,
        );
        if !problems.is_empty() {
            return Err(problems.0.into());
        }
        fields.apply(&mut dialog);
        let mut occurrences = vec![Occurrence::Dialog(DIALOG_CREATED)];
        add_items(&mut dialog, activities, transmissions, &mut occurrences);
        let events: Vec<_> = if silent {
            Vec::new()
        } else {
            occurrences
                .iter()
                .map(|o| outbox_event(&dialog, o, now, None))
                .collect()
        };
        let record = encode(&dialog, &Uuid::new_v4().to_string())?;
        if !self.store.insert_dialog(&record, &events).await? {
            return Err(DialogError::Conflict(format!(
                "a dialog with id {} exists",
                dialog.id
            )));
        }
        if !events.is_empty() {
            self.wake.notify_one();
        }
        Ok(dialog)
    }

    /// One dialog as its service owner sees it, with who has seen its latest change.
    pub async fn get(&self, caller: &Principal, id: &str) -> Result<DialogView, DialogError> {
        let (dialog, record) = self.load_owned(caller, id).await?;
        let seen = self.store.seen_log(&record.id, &record.change_id).await?;
        Ok(DialogView {
            dialog,
            seen_since_last_update: seen
                .into_iter()
                .filter_map(|s| {
                    Some(SeenView {
                        id: Uuid::parse_str(&s.id).ok()?,
                        seen_at: s.seen_at,
                        seen_by: SeenBy {
                            actor_type: "PartyRepresentative",
                            actor_id: Some(s.seen_by),
                        },
                        is_current_end_user: None,
                    })
                })
                .collect(),
        })
    }

    /// Replaces the dialog's fields (PUT): `updated`, then one event per new activity and
    /// transmission.
    pub async fn replace(
        &self,
        caller: &Principal,
        id: &str,
        body: Value,
        conditions: &Conditions,
    ) -> Result<Dialog, DialogError> {
        let input: DialogInput = parse(body, "a dialog")?;
        self.change(caller, id, conditions, true, |dialog, now| {
            replace_with(dialog, &input, now).map(Some)
        })
        .await
    }

    /// Applies a JSON Patch (RFC 6902) to the dialog as `get` shows it, then replaces the dialog
    /// with the result.
    pub async fn patch(
        &self,
        caller: &Principal,
        id: &str,
        body: Value,
        conditions: &Conditions,
    ) -> Result<Dialog, DialogError> {
        let patch: json_patch::Patch = serde_json::from_value(body).map_err(|e| {
            DialogError::BadRequest(format!(
                "the body is not a JSON Patch (an array of operations): {e}"
            ))
        })?;
        self.change(caller, id, conditions, true, |dialog, now| {
            let mut document =
                serde_json::to_value(&*dialog).map_err(|source| DialogError::Internal {
                    what: "cannot render a dialog".into(),
                    source,
                })?;
            json_patch::patch(&mut document, &patch).map_err(|e| {
                DialogError::BadRequest(format!("the patch cannot be applied: {e}"))
            })?;
            let input: DialogInput = parse(document, "a dialog after the patch")?;
            replace_with(dialog, &input, now).map(Some)
        })
        .await
    }

    /// Soft delete: `deleted`.
    pub async fn delete(
        &self,
        caller: &Principal,
        id: &str,
        conditions: &Conditions,
    ) -> Result<Dialog, DialogError> {
        self.change(caller, id, conditions, true, |dialog, now| {
            dialog.deleted_at = Some(now);
            Ok(Some(vec![Occurrence::Dialog(DIALOG_DELETED)]))
        })
        .await
    }

    /// Undoes a soft delete: `restored`. Restoring a dialog that is not deleted changes nothing.
    pub async fn restore(
        &self,
        caller: &Principal,
        id: &str,
        conditions: &Conditions,
    ) -> Result<Dialog, DialogError> {
        self.change(caller, id, conditions, false, |dialog, _| {
            if dialog.deleted_at.is_none() {
                return Ok(None);
            }
            dialog.deleted_at = None;
            Ok(Some(vec![Occurrence::Dialog(DIALOG_RESTORED)]))
        })
        .await
    }

    /// Removes the dialog for good: `deleted` when it was live, nothing when it was deleted.
    pub async fn purge(
        &self,
        caller: &Principal,
        id: &str,
        conditions: &Conditions,
    ) -> Result<(), DialogError> {
        for _ in 0..MAX_ATTEMPTS {
            let (current, record) = self.load_owned(caller, id).await?;
            Self::check_if_match(conditions, &current)?;
            let events = if current.deleted_at.is_none() && !conditions.silent {
                vec![outbox_event(
                    &current,
                    &Occurrence::Dialog(DIALOG_DELETED),
                    now(),
                    None,
                )]
            } else {
                Vec::new()
            };
            if self
                .store
                .purge_dialog(&record.id, &record.revision, &events)
                .await?
            {
                if !events.is_empty() {
                    self.wake.notify_one();
                }
                return Ok(());
            }
            if conditions.if_match.is_some() {
                return Err(DialogError::PreconditionFailed(format!(
                    "the dialog changed after revision {}",
                    current.revision
                )));
            }
        }
        Err(DialogError::Conflict(
            "the dialog is being changed by others; try again".into(),
        ))
    }

    /// Adds one activity: `updated` and the activity's event. Returns the dialog and the id.
    pub async fn add_activity(
        &self,
        caller: &Principal,
        id: &str,
        body: Value,
        conditions: &Conditions,
    ) -> Result<(Dialog, Uuid), DialogError> {
        let mut input: ActivityInput = parse(body, "an activity")?;
        let activity_id = self.new_item_id(&mut input.id)?;
        let dialog = self
            .change(caller, id, conditions, true, |dialog, now| {
                if dialog.activities.iter().any(|a| a.id == activity_id) {
                    return Err(DialogError::Conflict(format!(
                        "the dialog has an activity with id {activity_id}"
                    )));
                }
                let mut problems = Problems::default();
                let Some(activity) = check_activity("", &input, now, &mut problems) else {
                    return Err(problems.0.into());
                };
                let mut occurrences = vec![Occurrence::Dialog(DIALOG_UPDATED)];
                add_items(dialog, vec![activity], Vec::new(), &mut occurrences);
                Ok(Some(occurrences))
            })
            .await?;
        Ok((dialog, activity_id))
    }

    /// Adds one transmission: `updated` and `transmission.created`. Returns the dialog and the id.
    pub async fn add_transmission(
        &self,
        caller: &Principal,
        id: &str,
        body: Value,
        conditions: &Conditions,
    ) -> Result<(Dialog, Uuid), DialogError> {
        let mut input: TransmissionInput = parse(body, "a transmission")?;
        let transmission_id = self.new_item_id(&mut input.id)?;
        let dialog = self
            .change(caller, id, conditions, true, |dialog, now| {
                if dialog.transmissions.iter().any(|t| t.id == transmission_id) {
                    return Err(DialogError::Conflict(format!(
                        "the dialog has a transmission with id {transmission_id}"
                    )));
                }
                let mut problems = Problems::default();
                let Some(transmission) = check_transmission("", &input, now, &mut problems) else {
                    return Err(problems.0.into());
                };
                let mut occurrences = vec![Occurrence::Dialog(DIALOG_UPDATED)];
                add_items(dialog, Vec::new(), vec![transmission], &mut occurrences);
                Ok(Some(occurrences))
            })
            .await?;
        Ok((dialog, transmission_id))
    }

    /// The id of an item to add: the given one, or a new UUIDv7 fixed before the first attempt.
    fn new_item_id(&self, id: &mut Option<String>) -> Result<Uuid, DialogError> {
        match id.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(text) => Uuid::parse_str(text).map_err(|_| {
                DialogError::from(vec![hendelse_model::FieldError {
                    field: "id".into(),
                    message: "must be a UUID".into(),
                }])
            }),
            None => {
                let new = Uuid::now_v7();
                *id = Some(new.to_string());
                Ok(new)
            }
        }
    }

    /// The service owner's dialogs (of the resources it owns), in creation order.
    pub async fn list(
        &self,
        caller: &Principal,
        params: &ListParams,
    ) -> Result<Page<Dialog>, DialogError> {
        let org = service_owner(caller)?.to_owned();
        // What an org without its own party may read is exactly the resources it owns.
        let owner = Principal::Org {
            org: Some(org),
            org_number: None,
            scopes: Vec::new(),
            auth_level: None,
        };
        let visibility = self.authorizer.visibility(&owner);
        self.page(params, params.deleted, visibility).await
    }

    /// The dialogs of the parties the end user may read, in creation order.
    pub async fn enduser_list(
        &self,
        caller: &Principal,
        params: &ListParams,
    ) -> Result<Page<Dialog>, DialogError> {
        let visibility = self.authorizer.visibility(caller);
        self.page(params, DeletedFilter::Exclude, visibility).await
    }

    async fn page(
        &self,
        params: &ListParams,
        deleted: DeletedFilter,
        visibility: hendelse_model::Visibility,
    ) -> Result<Page<Dialog>, DialogError> {
        let limit = params.limit;
        let query = DialogQuery {
            after: params.after,
            resources: params.service_resources.clone(),
            subject_keys: params.parties.iter().map(|p| party_key(p.trim())).collect(),
            statuses: params.statuses.clone(),
            deleted,
            visibility,
            limit: limit + 1,
        };
        let mut records = self.store.list_dialogs(&query).await?;
        let has_next_page = records.len() > limit as usize;
        records.truncate(limit as usize);
        let continuation_token = has_next_page
            .then(|| records.last().map(|r| r.seq.to_string()))
            .flatten();
        Ok(Page {
            items: records.iter().map(decode).collect::<Result<_, _>>()?,
            has_next_page,
            continuation_token,
        })
    }

    /// One dialog for an end user who may read its party. Unless `silent`, the first such read
    /// after a change records the user in the seen log and publishes `updated` and `seen`; the
    /// seen log's unique index makes that once per user and change, however many reads race.
    pub async fn enduser_get(
        &self,
        caller: &Principal,
        id: &str,
        silent: bool,
    ) -> Result<DialogView, DialogError> {
        let (dialog, record) = self.load(id).await?;
        let visibility = self.authorizer.visibility(caller);
        if !visibility.covers(Some(&record.subject_key), Some(&record.resource)) {
            // As if it did not exist: nobody learns of dialogs of parties they may not read.
            return Err(not_found(id));
        }
        if dialog.deleted_at.is_some() {
            return Err(DialogError::Gone(format!(
                "the dialog {} is deleted",
                dialog.id
            )));
        }
        let me = actor_of(caller);
        if !silent {
            let at = now();
            let entry_id = Uuid::new_v4();
            let entry = SeenEntry {
                id: entry_id.to_string(),
                dialog_id: record.id.clone(),
                change_id: record.change_id.clone(),
                seen_by: me.clone(),
                seen_at: at,
            };
            let events = [
                outbox_event(&dialog, &Occurrence::Dialog(DIALOG_UPDATED), at, None),
                outbox_event(
                    &dialog,
                    &Occurrence::Dialog(DIALOG_SEEN),
                    at,
                    Some(entry_id),
                ),
            ];
            if self.store.record_seen(&entry, &events).await? {
                self.wake.notify_one();
            }
        }
        let seen = self.store.seen_log(&record.id, &record.change_id).await?;
        Ok(DialogView {
            dialog,
            seen_since_last_update: seen
                .into_iter()
                .filter_map(|s| {
                    let mine = s.seen_by == me;
                    Some(SeenView {
                        id: Uuid::parse_str(&s.id).ok()?,
                        seen_at: s.seen_at,
                        seen_by: SeenBy {
                            actor_type: "PartyRepresentative",
                            actor_id: mine.then_some(s.seen_by),
                        },
                        is_current_end_user: Some(mine),
                    })
                })
                .collect(),
        })
    }
}
