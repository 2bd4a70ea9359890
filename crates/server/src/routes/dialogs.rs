//! The dialog service's API, Dialogporten's paths and shapes: the service-owner routes (org token
//! of the service resource's owner) and the end-user routes (dialogs of parties the user may
//! read). Every change answers with the new revision as `ETag`, honours `If-Match` (412) and
//! `isSilentUpdate=true` (nothing published), and is refused with 410 on a deleted dialog.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hendelse_dialog::request::{DEFAULT_PAGE, MAX_PAGE};
use hendelse_dialog::validate::parse_status;
use hendelse_dialog::{Conditions, ListParams, Precondition};
use hendelse_store::dialog::DeletedFilter;
use serde_json::Value;
use uuid::Uuid;

use hendelse_wire::paths::SERVICE_OWNER_DIALOGS;

use crate::app::AppState;
use crate::caller::Caller;
use crate::openapi::dialogs::{
    DialogPatch, DialogReplacement, NewActivity, NewDialog, NewTransmission,
};
use crate::openapi::params::{
    ChangeConditions, Deleted, DialogFilters, DialogId, SilentChange, SilentRead,
};
use crate::openapi::problems::{
    BadRequest, Conflict, Gone, NotFound, PreconditionFailed, Refusals, StorageFull, TooLarge,
};
use crate::params::Params;
use crate::problem::ApiError;
use hendelse_dialog::model::{Dialog, DialogView, Page};

/// The OpenAPI tag of these routes.
pub const TAG: &str = "dialogs";

/// `isSilentUpdate=true`.
fn silent(params: &Params) -> Result<bool, ApiError> {
    match params.one_value("isSilentUpdate", "isSilentUpdate must be true or false")? {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::BadRequest(
            "isSilentUpdate must be true or false".into(),
        )),
    }
}

/// The filters and page of a listing.
fn list_params(params: &Params) -> Result<ListParams, ApiError> {
    let deleted = match params
        .one_value("deleted", "deleted must be exclude, include or only")?
        .map(str::trim)
    {
        None => DeletedFilter::Exclude,
        Some(d) if d.eq_ignore_ascii_case("exclude") => DeletedFilter::Exclude,
        Some(d) if d.eq_ignore_ascii_case("include") => DeletedFilter::Include,
        Some(d) if d.eq_ignore_ascii_case("only") => DeletedFilter::Only,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "deleted must be exclude, include or only".into(),
            ));
        }
    };
    let whole = format!("limit must be a whole number from 1 to {MAX_PAGE}");
    let limit = match params.one_value("limit", &whole)?.map(str::trim) {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(ApiError::BadRequest(whole)),
        },
    };
    // Tokens are what `continuation_token` gave: up to 18 digits, nothing else.
    let after = match params.one("continuationToken")? {
        None => 0,
        Some(token)
            if (1..=18).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_digit()) =>
        {
            token.parse::<i64>().map_err(|_| {
                ApiError::BadRequest("continuationToken is not one this API gave".into())
            })?
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "continuationToken is not one this API gave".into(),
            ));
        }
    };
    let statuses = params
        .texts("status")
        .into_iter()
        .map(|s| {
            parse_status(&s)
                .map(str::to_owned)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown status '{s}'")))
        })
        .collect::<Result<_, _>>()?;
    Ok(ListParams {
        service_resources: params.texts("serviceResource"),
        parties: params.texts("party"),
        statuses,
        deleted,
        limit,
        after,
    })
}

/// `If-Match`: `*`, or a list of entity tags (quoted or not, weak or strong) naming revisions. A
/// tag that names no revision can match none.
fn precondition(header: &str) -> Precondition {
    let tags: Vec<&str> = header.split(',').map(str::trim).collect();
    if tags.contains(&"*") {
        return Precondition::Any;
    }
    Precondition::OneOf(
        tags.iter()
            .filter_map(|tag| {
                let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
                Uuid::parse_str(tag).ok()
            })
            .collect(),
    )
}

fn conditions(headers: &HeaderMap, params: &Params) -> Result<Conditions, ApiError> {
    let if_match = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(precondition(v.to_str().map_err(|_| {
            ApiError::BadRequest("If-Match is not readable text".into())
        })?)),
    };
    Ok(Conditions {
        if_match,
        silent: silent(params)?,
    })
}

/// The `ETag` of a revision.
fn etag(revision: &Uuid) -> String {
    format!("\"{revision}\"")
}

/// The conditions of a change: `If-Match` and `isSilentUpdate`.
pub struct Change(Conditions);

impl<S: Send + Sync> FromRequestParts<S> for Change {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let params = Params::parse(parts.uri.query());
        conditions(&parts.headers, &params).map(Change)
    }
}

/// `isSilentUpdate` alone, where `If-Match` means nothing (a new dialog, a read).
pub struct Silent(bool);

impl<S: Send + Sync> FromRequestParts<S> for Silent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        silent(&Params::parse(parts.uri.query())).map(Silent)
    }
}

/// A JSON request body; an empty or malformed one is a 400.
pub struct JsonBody(Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if body.is_empty() {
            return Err(ApiError::BadRequest("a JSON body is required".into()).into_response());
        }
        serde_json::from_slice(&body).map(JsonBody).map_err(|e| {
            ApiError::BadRequest(format!("the body is not valid JSON: {e}")).into_response()
        })
    }
}

fn with_etag(mut response: Response, revision: &Uuid) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(revision)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// 201 with `Location`, `ETag` and the new id as a JSON string (as Dialogporten answers).
fn created(location: String, id: &Uuid, revision: &Uuid) -> Response {
    let mut response = (StatusCode::CREATED, Json(id.to_string())).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    with_etag(response, revision)
}

fn no_content(revision: &Uuid) -> Response {
    with_etag(StatusCode::NO_CONTENT.into_response(), revision)
}

/// `POST /dialogporten/api/v1/serviceowner/dialogs`
#[utoipa::path(
    post,
    operation_id = "createDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs",
    tag = TAG,
    description = "Create a dialog (optionally with its id, activities and transmissions). Publishes dialogporten.dialog.created.v1, then one event per activity and per transmission.",
    params(SilentChange),
    request_body(content = NewDialog, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the new id as a JSON string", body = String, content_type = "application/json", headers(("Location" = String), ("ETag" = String))),
        BadRequest, TooLarge, Conflict, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Silent(silent): Silent,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let dialog = state.dialogs.create(&caller, body, silent).await?;
    Ok(created(
        format!("{SERVICE_OWNER_DIALOGS}/{}", dialog.id),
        &dialog.id,
        &dialog.revision,
    ))
}

/// `GET /dialogporten/api/v1/serviceowner/dialogs`
#[utoipa::path(
    get,
    operation_id = "listDialogs",
    path = "/dialogporten/api/v1/serviceowner/dialogs",
    tag = TAG,
    description = "The caller's dialogs (of the service resources it owns), in creation order.",
    params(
        DialogFilters,
        Deleted
    ),
    responses(
        (status = 200, description = "A page; continuationToken continues it while hasNextPage", body = Page<Dialog>),
        BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = list_params(&Params::parse(raw.as_deref()))?;
    Ok(Json(state.dialogs.list(&caller, &params).await?).into_response())
}

/// `GET /dialogporten/api/v1/serviceowner/dialogs/{id}`
#[utoipa::path(
    get,
    operation_id = "getDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}",
    tag = TAG,
    params(DialogId),
    responses(
        (status = 200, description = "The dialog, with seenSinceLastUpdate; ETag is its revision", body = DialogView, headers(("ETag" = String))),
        NotFound, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let view = state.dialogs.get(&caller, &id).await?;
    let revision = view.dialog.revision;
    Ok(with_etag(Json(view).into_response(), &revision))
}

/// `PUT /dialogporten/api/v1/serviceowner/dialogs/{id}`
#[utoipa::path(
    put,
    operation_id = "replaceDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}",
    tag = TAG,
    description = "Replace the dialog's fields (absent ones become empty; status is kept when absent). Activities and transmissions are append-only: those with new ids are added. Publishes dialogporten.dialog.updated.v1, then one event per new activity and transmission.",
    params(
        DialogId,
        ChangeConditions
    ),
    request_body(content = DialogReplacement, content_type = "application/json"),
    responses(
        (status = 204, description = "Updated; ETag is the new revision", headers(("ETag" = String))),
        BadRequest, TooLarge, NotFound, Gone, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let dialog = state
        .dialogs
        .replace(&caller, &id, body, &conditions)
        .await?;
    Ok(no_content(&dialog.revision))
}

/// `PATCH /dialogporten/api/v1/serviceowner/dialogs/{id}`
#[utoipa::path(
    patch,
    operation_id = "patchDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}",
    tag = TAG,
    description = "Apply a JSON Patch (RFC 6902, application/json-patch+json) to the dialog as GET shows it; then as PUT.",
    params(
        DialogId,
        ChangeConditions
    ),
    request_body(content = DialogPatch, content_type = "application/json-patch+json"),
    responses(
        (status = 204, description = "Updated; ETag is the new revision", headers(("ETag" = String))),
        BadRequest, TooLarge, NotFound, Gone, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let dialog = state.dialogs.patch(&caller, &id, body, &conditions).await?;
    Ok(no_content(&dialog.revision))
}

/// `DELETE /dialogporten/api/v1/serviceowner/dialogs/{id}`
#[utoipa::path(
    delete,
    operation_id = "deleteDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}",
    tag = TAG,
    description = "Soft delete: publishes dialogporten.dialog.deleted.v1. End users no longer see the dialog; restore undoes it.",
    params(
        DialogId,
        ChangeConditions
    ),
    responses(
        (status = 204, description = "Deleted; ETag is the new revision", headers(("ETag" = String))),
        BadRequest, NotFound, Gone, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
) -> Result<Response, ApiError> {
    let dialog = state.dialogs.delete(&caller, &id, &conditions).await?;
    Ok(no_content(&dialog.revision))
}

/// `POST /dialogporten/api/v1/serviceowner/dialogs/{id}/actions/restore`
#[utoipa::path(
    post,
    operation_id = "restoreDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}/actions/restore",
    tag = TAG,
    description = "Undo a soft delete: publishes dialogporten.dialog.restored.v1 (a dialog that is not deleted is left as it is).",
    params(
        DialogId,
        ChangeConditions
    ),
    responses(
        (status = 204, description = "Restored; ETag is the revision", headers(("ETag" = String))),
        BadRequest, NotFound, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn restore(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
) -> Result<Response, ApiError> {
    let dialog = state.dialogs.restore(&caller, &id, &conditions).await?;
    Ok(no_content(&dialog.revision))
}

/// `POST /dialogporten/api/v1/serviceowner/dialogs/{id}/actions/purge`
#[utoipa::path(
    post,
    operation_id = "purgeDialog",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}/actions/purge",
    tag = TAG,
    description = "Remove the dialog for good: publishes dialogporten.dialog.deleted.v1 when it was not deleted, nothing when it was.",
    params(
        DialogId,
        ChangeConditions
    ),
    responses(
        (status = 204, description = "Purged"),
        BadRequest, NotFound, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn purge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
) -> Result<Response, ApiError> {
    state.dialogs.purge(&caller, &id, &conditions).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /dialogporten/api/v1/serviceowner/dialogs/{id}/activities`
#[utoipa::path(
    post,
    operation_id = "addDialogActivity",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}/activities",
    tag = TAG,
    description = "Add one activity: publishes dialogporten.dialog.updated.v1 and dialogporten.dialog.activity.<type>.v1.",
    params(
        DialogId,
        ChangeConditions
    ),
    request_body(content = NewActivity, content_type = "application/json"),
    responses(
        (status = 201, description = "Added: the activity's id as a JSON string; ETag is the dialog's new revision", body = String, content_type = "application/json", headers(("Location" = String), ("ETag" = String))),
        BadRequest, TooLarge, NotFound, Conflict, Gone, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn add_activity(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (dialog, activity) = state
        .dialogs
        .add_activity(&caller, &id, body, &conditions)
        .await?;
    Ok(created(
        format!(
            "{SERVICE_OWNER_DIALOGS}/{}/activities/{activity}",
            dialog.id
        ),
        &activity,
        &dialog.revision,
    ))
}

/// `POST /dialogporten/api/v1/serviceowner/dialogs/{id}/transmissions`
#[utoipa::path(
    post,
    operation_id = "addDialogTransmission",
    path = "/dialogporten/api/v1/serviceowner/dialogs/{id}/transmissions",
    tag = TAG,
    description = "Add one transmission: publishes dialogporten.dialog.updated.v1 and dialogporten.dialog.transmission.created.v1.",
    params(
        DialogId,
        ChangeConditions
    ),
    request_body(content = NewTransmission, content_type = "application/json"),
    responses(
        (status = 201, description = "Added: the transmission's id as a JSON string; ETag is the dialog's new revision", body = String, content_type = "application/json", headers(("Location" = String), ("ETag" = String))),
        BadRequest, TooLarge, NotFound, Conflict, Gone, PreconditionFailed, Refusals, StorageFull
    ),
    security(("bearer" = []))
)]
pub async fn add_transmission(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Change(conditions): Change,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (dialog, transmission) = state
        .dialogs
        .add_transmission(&caller, &id, body, &conditions)
        .await?;
    Ok(created(
        format!(
            "{SERVICE_OWNER_DIALOGS}/{}/transmissions/{transmission}",
            dialog.id
        ),
        &transmission,
        &dialog.revision,
    ))
}

/// `GET /dialogporten/api/v1/enduser/dialogs`
#[utoipa::path(
    get,
    operation_id = "listEndUserDialogs",
    path = "/dialogporten/api/v1/enduser/dialogs",
    tag = TAG,
    description = "The dialogs of the parties the caller may read (registry access), in creation order; deleted dialogs are left out.",
    params(
        DialogFilters
    ),
    responses(
        (status = 200, description = "A page; continuationToken continues it while hasNextPage", body = Page<Dialog>),
        BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn enduser_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    if params.one("deleted")?.is_some() {
        return Err(ApiError::BadRequest(
            "end users do not see deleted dialogs".into(),
        ));
    }
    let params = list_params(&params)?;
    Ok(Json(state.dialogs.enduser_list(&caller, &params).await?).into_response())
}

/// `GET /dialogporten/api/v1/enduser/dialogs/{id}`
#[utoipa::path(
    get,
    operation_id = "getEndUserDialog",
    path = "/dialogporten/api/v1/enduser/dialogs/{id}",
    tag = TAG,
    description = "One dialog of a party the caller may read. The first read by a user after a change marks it seen: publishes dialogporten.dialog.updated.v1 and dialogporten.dialog.seen.v1, once per user and change.",
    params(
        DialogId,
        SilentRead
    ),
    responses(
        (status = 200, description = "The dialog, with seenSinceLastUpdate; ETag is its revision", body = DialogView, headers(("ETag" = String))),
        BadRequest, NotFound, Gone, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn enduser_get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Silent(silent): Silent,
) -> Result<Response, ApiError> {
    let view = state.dialogs.enduser_get(&caller, &id, silent).await?;
    let revision = view.dialog.revision;
    Ok(with_etag(Json(view).into_response(), &revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_forms() {
        let r = Uuid::new_v4();
        let allows = |header: &str| precondition(header).allows(&r);
        assert!(allows("*"));
        assert!(allows(&etag(&r)));
        assert!(allows(&r.to_string()));
        assert!(allows(&format!("W/\"{r}\"")));
        assert!(allows(&format!("\"{}\", \"{r}\"", Uuid::nil())));
        assert!(!allows(&etag(&Uuid::nil())));
        assert!(!allows("garbage"));
    }
}
