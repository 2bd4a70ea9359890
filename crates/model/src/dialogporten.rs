//! Dialogporten's event types, exactly as Dialogporten names them.

pub const DIALOG_EVENT_TYPES: &[&str] = &[
    "dialogporten.dialog.created.v1",
    "dialogporten.dialog.updated.v1",
    "dialogporten.dialog.deleted.v1",
    "dialogporten.dialog.restored.v1",
    "dialogporten.dialog.seen.v1",
    "dialogporten.dialog.transmission.created.v1",
];

/// Activity types of a dialog's activity log, each published as `dialogporten.dialog.activity.<type>.v1`.
pub const ACTIVITY_TYPES: &[&str] = &[
    "created",
    "closed",
    "information",
    "transmission-opened",
    "payment-made",
    "signature-provided",
    "dialog-opened",
    "dialog-deleted",
    "dialog-restored",
    "sent-to-signing",
    "sent-to-form-fill",
    "sent-to-send-in",
    "sent-to-payment",
    "form-submitted",
    "form-saved",
    "correspondence-opened",
    "correspondence-confirmed",
];

pub fn activity_event_type(activity: &str) -> String {
    format!("dialogporten.dialog.activity.{activity}.v1")
}
