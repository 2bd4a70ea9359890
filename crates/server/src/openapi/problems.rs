//! The error responses of the operations, declared once: each type stands for one status (or, for
//! [`Refusals`], the three every route behind a token can answer) and is named in an operation's
//! `responses(…)` beside its success response.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

use crate::problem::PROBLEM_JSON;

fn problem(status: u16, description: &str) -> (String, RefOr<Response>) {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content)
        .build();
    (status.to_string(), RefOr::T(response))
}

/// Declares one marker type per error response.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident => [$(($status:literal, $description:literal)),+];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(problem($status, $description)),+])
            }
        }
    )+};
}

problems! {
    /// What any route behind a token can answer: no token, not allowed, or not now.
    Refusals => [
        (401, "No valid bearer token"),
        (403, "The token lacks the scope, or the caller the right"),
        (503, "Overloaded or the store is unreachable; nothing was stored (see Retry-After)")
    ];
    BadRequest => [(400, "Invalid parameters or body (see detail and errors)")];
    NotFound => [(404, "No such resource of the caller's")];
    Conflict => [(409, "It exists already (an id that is taken)")];
    KeyReused => [(409, "The Idempotency-Key was used for another request")];
    Gone => [(410, "The dialog is deleted")];
    PreconditionFailed => [(412, "If-Match names another revision")];
    TooLarge => [(413, "Body over 1 MiB")];
    UnsupportedType => [(415, "Unsupported content type")];
    StorageFull => [(507, "The store's disk is full; nothing was stored (see Retry-After)")];
}
