//! How a request changes a dialog in memory: its new activities and transmissions and a replace
//! of its fields, each with the occurrences (events) it makes. The service loads, applies one of
//! these and stores the result with its events in one transaction.

use chrono::{DateTime, Utc};
use hendelse_model::subject::party_key;
use uuid::Uuid;

use crate::error::DialogError;
use crate::events::{DIALOG_UPDATED, Occurrence};
use crate::model::{Activity, ActivityInput, Dialog, DialogInput, Transmission, TransmissionInput};
use crate::validate::{Problems, check_activity, check_fields, check_transmission};

/// New activities and transmissions of a request: those whose id the dialog already has are
/// skipped (activities and transmissions never change once added); a repeated new id is an error.
pub(crate) fn new_items(
    activities: &[ActivityInput],
    transmissions: &[TransmissionInput],
    dialog: &Dialog,
    now: DateTime<Utc>,
    problems: &mut Problems,
) -> (Vec<(Activity, &'static str)>, Vec<Transmission>) {
    let known = |id: &Option<String>, existing: &[Uuid]| {
        id.as_deref()
            .and_then(|t| Uuid::parse_str(t.trim()).ok())
            .is_some_and(|id| existing.contains(&id))
    };
    let activity_ids: Vec<Uuid> = dialog.activities.iter().map(|a| a.id).collect();
    let transmission_ids: Vec<Uuid> = dialog.transmissions.iter().map(|t| t.id).collect();
    let mut new_transmissions: Vec<Transmission> = Vec::new();
    for (i, input) in transmissions.iter().enumerate() {
        if known(&input.id, &transmission_ids) {
            continue;
        }
        let field = format!("transmissions[{i}]");
        if let Some(t) = check_transmission(&field, input, now, problems) {
            if new_transmissions.iter().any(|n| n.id == t.id) {
                problems.add(format!("{field}.id"), "is used twice");
            } else {
                new_transmissions.push(t);
            }
        }
    }
    let mut new_activities: Vec<(Activity, &'static str)> = Vec::new();
    for (i, input) in activities.iter().enumerate() {
        if known(&input.id, &activity_ids) {
            continue;
        }
        let field = format!("activities[{i}]");
        if let Some((a, suffix)) = check_activity(&field, input, now, problems) {
            if new_activities.iter().any(|(n, _)| n.id == a.id) {
                problems.add(format!("{field}.id"), "is used twice");
            } else {
                new_activities.push((a, suffix));
            }
        }
    }
    (new_activities, new_transmissions)
}

/// Adds the new items to the dialog; the occurrences in the order the events go out: activities,
/// then transmissions.
pub(crate) fn add_items(
    dialog: &mut Dialog,
    activities: Vec<(Activity, &'static str)>,
    transmissions: Vec<Transmission>,
    occurrences: &mut Vec<Occurrence>,
) {
    for (activity, suffix) in activities {
        dialog.activities.push(activity.clone());
        occurrences.push(Occurrence::Activity(activity, suffix));
    }
    for transmission in transmissions {
        dialog.transmissions.push(transmission.clone());
        occurrences.push(Occurrence::Transmission(transmission));
    }
}

/// A replace of the dialog's fields by `input`, adding its new activities and transmissions.
pub(crate) fn replace_with(
    dialog: &mut Dialog,
    input: &DialogInput,
    now: DateTime<Utc>,
) -> Result<Vec<Occurrence>, DialogError> {
    let mut problems = Problems::default();
    let unchanged = |given: &Option<String>, current: &str, same: &dyn Fn(&str) -> bool| {
        given
            .as_deref()
            .map(str::trim)
            .is_none_or(|g| g == current || same(g))
    };
    if !unchanged(&input.id, &dialog.id.to_string(), &|g| {
        Uuid::parse_str(g).is_ok_and(|g| g == dialog.id)
    }) {
        problems.add("id", "cannot be changed");
    }
    if !unchanged(&input.service_resource, &dialog.service_resource, &|_| {
        false
    }) {
        problems.add("serviceResource", "cannot be changed");
    }
    if !unchanged(&input.party, &dialog.party, &|g| {
        party_key(g) == party_key(&dialog.party)
    }) {
        problems.add("party", "cannot be changed");
    }
    let fields = check_fields(input, &mut problems);
    let (activities, transmissions) = new_items(
        input.activities.as_deref().unwrap_or_default(),
        input.transmissions.as_deref().unwrap_or_default(),
        dialog,
        now,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(problems.0.into());
    }
    fields.apply(dialog);
    let mut occurrences = vec![Occurrence::Dialog(DIALOG_UPDATED)];
    add_items(dialog, activities, transmissions, &mut occurrences);
    Ok(occurrences)
}
