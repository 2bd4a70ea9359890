//! The three query routes of Altinn's Events API. Authorization is a filter the store applies
//! before it limits the page, so a page is short only at the end of the log and `next` always
//! moves forward.

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hendelse_auth::{Principal, SCOPE_SUBSCRIBE};
use hendelse_model::subject::{is_digits, party_key};
use hendelse_model::{Pattern, RESOURCE_PREFIX, Visibility};
use hendelse_store::{EventQuery, StoredEvent};
use serde::Deserialize;

use crate::app::AppState;
use crate::caller::Caller;
use crate::params::{self, Params};
use crate::problem::ApiError;

pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json; charset=utf-8";
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 50;

/// Whether a route insists on a starting point (`after`, or `from` on the app routes): the paged
/// queries do, as in Altinn; a live stream starts at the end of the log by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Required,
    Optional,
}

/// `GET /events/api/v1/app/party`: app events of one party.
#[utoipa::path(
    get,
    path = "/events/api/v1/app/party",
    tag = crate::openapi::EVENTS,
    description = "App events of one party (party, unit or header person); after or from required.",
    params(
        ("after" = Option<String>, Query, description = "Id of the last event read; results are events registered after it"),
        ("afterSource" = Option<String>, Query, description = "Source of the `after` event, added by `next` when its id is shared"),
        ("from" = Option<String>, Query, description = "Registered at or after (RFC 3339 with time zone; seconds optional)"),
        ("to" = Option<String>, Query, description = "Registered at or before"),
        ("source" = Option<Vec<String>>, Query, explode, description = "Event sources, `%` matches any run of characters"),
        ("type" = Option<Vec<String>>, Query, explode, description = "Event types, `%` wildcards"),
        ("size" = Option<i64>, Query, description = "Page size: default 50, at most 1000"),
        ("party" = Option<i64>, Query, description = "Party id of the subject"),
        ("unit" = Option<String>, Query, description = "Organisation number (9 digits) of the alternative subject"),
        ("person" = Option<String>, Header, description = "National identity number (11 digits) of the alternative subject")
    ),
    responses(
        (status = 200, description = "Events in registration order", body = Vec<crate::openapi::CloudEvent>, content_type = "application/cloudevents+json", headers(("next" = String, description = "Absolute URL of the next page (always present)"))),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn app_party(
    State(state): State<AppState>,
    Caller(caller): Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let query = app_party_query(&state, &caller, &params, &headers, Start::Required)?;
    respond(
        &state,
        &params,
        &headers,
        uri.path(),
        query,
        params.one("after")?,
    )
    .await
}

/// The query of `/app/party` (and its stream).
pub fn app_party_query(
    state: &AppState,
    caller: &Principal,
    params: &Params,
    headers: &HeaderMap,
    start: Start,
) -> Result<EventQuery, ApiError> {
    let mut query = app_query(params, headers, true, start)?;
    query.resource_prefix = Some(format!("{RESOURCE_PREFIX}app_"));
    query.visibility = state.authorizer.visibility(caller);
    Ok(query)
}

/// `GET /events/api/v1/app/{org}/{app}`: app events of one app.
#[utoipa::path(
    get,
    path = "/events/api/v1/app/{org}/{app}",
    tag = crate::openapi::EVENTS,
    description = "App events of one app, filtered to what the caller may read.",
    params(
        ("org" = String, Path, description = "Org code"),
        ("app" = String, Path, description = "App name"),
        ("after" = Option<String>, Query, description = "Id of the last event read; results are events registered after it"),
        ("afterSource" = Option<String>, Query, description = "Source of the `after` event, added by `next` when its id is shared"),
        ("from" = Option<String>, Query, description = "Registered at or after (RFC 3339 with time zone; seconds optional)"),
        ("to" = Option<String>, Query, description = "Registered at or before"),
        ("source" = Option<Vec<String>>, Query, explode, description = "Event sources, `%` matches any run of characters"),
        ("type" = Option<Vec<String>>, Query, explode, description = "Event types, `%` wildcards"),
        ("size" = Option<i64>, Query, description = "Page size: default 50, at most 1000")
    ),
    responses(
        (status = 200, description = "Events in registration order", body = Vec<crate::openapi::CloudEvent>, content_type = "application/cloudevents+json", headers(("next" = String, description = "Absolute URL of the next page (always present)"))),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn app_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((org, app)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let mut query = app_query(&params, &headers, false, Start::Required)?;
    query.resource = Some(format!("{RESOURCE_PREFIX}app_{org}_{app}"));
    query.visibility = state.authorizer.visibility(&caller);
    respond(
        &state,
        &params,
        &headers,
        uri.path(),
        query,
        params.one("after")?,
    )
    .await
}

/// `GET /events/api/v1/events`: generic events of one resource.
#[utoipa::path(
    get,
    path = "/events/api/v1/events",
    tag = crate::openapi::EVENTS,
    description = "Generic events of one resource.",
    params(
        ("resource" = String, Query, description = "The resource, `urn:altinn:resource:…`"),
        ("after" = String, Query, description = "Id of the last event read; `0` for the start"),
        ("afterSource" = Option<String>, Query, description = "Source of the `after` event, added by `next` when its id is shared"),
        ("subject" = Option<String>, Query, description = "Party subject (URN or /party/N)"),
        ("Altinn-AlternativeSubject" = Option<String>, Header, description = "Alternative subject"),
        ("from" = Option<String>, Query, description = "Registered at or after"),
        ("to" = Option<String>, Query, description = "Registered at or before"),
        ("source" = Option<Vec<String>>, Query, explode, description = "Event sources, `%` wildcards"),
        ("type" = Option<Vec<String>>, Query, explode, description = "Event types, `%` wildcards"),
        ("size" = Option<i64>, Query, description = "Page size: default 50, clamped to 1..1000")
    ),
    responses(
        (status = 200, description = "Events in registration order", body = Vec<crate::openapi::CloudEvent>, content_type = "application/cloudevents+json", headers(("next" = String, description = "Absolute URL of the next page (always present)"))),
        (status = 400, description = "Invalid parameters or event (see detail and errors)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the scope or right", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded or the store is unreachable; nothing was stored (see Retry-After)", body = crate::problem::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn generic_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let query = generic_query(&state, &caller, &params, &headers, Start::Required)?;
    respond(
        &state,
        &params,
        &headers,
        uri.path(),
        query,
        params.one("after")?,
    )
    .await
}

/// The query of `/events` (and its stream).
pub fn generic_query(
    state: &AppState,
    caller: &Principal,
    params: &Params,
    headers: &HeaderMap,
    start: Start,
) -> Result<EventQuery, ApiError> {
    if !caller.has_scope(SCOPE_SUBSCRIBE) {
        return Err(ApiError::Forbidden(format!(
            "the token lacks the scope {SCOPE_SUBSCRIBE}"
        )));
    }
    let resource = params
        .one("resource")?
        .ok_or_else(|| ApiError::BadRequest("The 'resource' parameter must be defined.".into()))?;
    if !resource.starts_with(RESOURCE_PREFIX) {
        return Err(ApiError::BadRequest(format!(
            "The 'resource' parameter must start with '{RESOURCE_PREFIX}'."
        )));
    }
    if start == Start::Required && params.one("after")?.is_none() {
        return Err(ApiError::BadRequest(
            "The 'after' parameter must be defined.".into(),
        ));
    }
    let alternative_subject = header_text(headers, "altinn-alternativesubject")?;
    Ok(EventQuery {
        resource: Some(resource.to_owned()),
        subject_key: params.one("subject")?.map(party_key),
        alternative_subject,
        from: params::instant(params, "from", "From")?,
        to: params::instant(params, "to", "To")?,
        sources: params.all("source"),
        types: params.all("type"),
        limit: clamp_size(params::size(params)?.unwrap_or(DEFAULT_PAGE)),
        visibility: state.authorizer.visibility(caller),
        ..EventQuery::default()
    })
}

fn clamp_size(size: i64) -> u32 {
    u32::try_from(size.clamp(1, MAX_PAGE)).unwrap_or(1)
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(|s| s.trim().to_owned()).map_err(|_| {
                ApiError::BadRequest(format!("The '{name}' header must be visible ASCII text."))
            })
        })
        .transpose()
        .map(|v| v.filter(|s| !s.is_empty()))
}

/// The parameters both `/app` routes share, with Altinn's rules and texts.
fn app_query(
    params: &Params,
    headers: &HeaderMap,
    subject_required: bool,
    start: Start,
) -> Result<EventQuery, ApiError> {
    let after = params.one("after")?;
    let from = params::instant(params, "from", "From")?;
    let to = params::instant(params, "to", "To")?;
    if start == Start::Required && after.is_none() && from.is_none() {
        return Err(ApiError::BadRequest(
            "The 'From' or 'After' parameter must be defined.".into(),
        ));
    }
    let size = params::size(params)?.unwrap_or(DEFAULT_PAGE);
    if size < 1 {
        return Err(ApiError::BadRequest(
            "The 'Size' parameter must be a number larger that 0.".into(),
        ));
    }
    let party = params.one("party")?;
    let unit = params.one("unit")?;
    let person = header_text(headers, "person")?;
    if subject_required && party.is_none() && unit.is_none() && person.is_none() {
        return Err(ApiError::BadRequest(
            "Subject must be specified using either query params party or unit or header value person.".into(),
        ));
    }
    match (party.is_some(), unit.is_some(), person.is_some()) {
        (true, true, _) => {
            return Err(ApiError::BadRequest(
                "Only one of 'Party' or 'Unit' can be defined.".into(),
            ));
        }
        (true, _, true) => {
            return Err(ApiError::BadRequest(
                "Only one of 'Party' or 'Person' can be defined.".into(),
            ));
        }
        (_, true, true) => {
            return Err(ApiError::BadRequest(
                "Only one of 'Unit' or 'Person' can be defined.".into(),
            ));
        }
        _ => {}
    }
    let mut query = EventQuery {
        from,
        to,
        sources: params.all("source"),
        types: params.all("type"),
        limit: clamp_size(size),
        ..EventQuery::default()
    };
    if let Some(party) = party {
        let id: i64 = party.trim().parse().map_err(|_| {
            ApiError::BadRequest(format!("The value '{party}' is not valid for Party."))
        })?;
        query.subject_key = Some(format!("/party/{id}"));
    }
    if let Some(unit) = unit {
        if !is_digits(unit, 9) {
            return Err(ApiError::BadRequest(
                "Value of 'Unit' needs to be exactly 9 digits.".into(),
            ));
        }
        query.alternative_subject = Some(format!("/organisation/{unit}"));
    }
    if let Some(person) = person {
        if !is_digits(&person, 11) {
            return Err(ApiError::BadRequest(
                "Value of 'Person' needs to be exactly 11 digits.".into(),
            ));
        }
        query.alternative_subject = Some(format!("/person/{person}"));
    }
    Ok(query)
}

/// Resolves the cursor, runs the query and answers with the page and its `next` link.
async fn respond(
    state: &AppState,
    params: &Params,
    headers: &HeaderMap,
    path: &str,
    mut query: EventQuery,
    after: Option<&str>,
) -> Result<Response, ApiError> {
    narrow_visibility(&mut query);
    let after_source = params.one(params::AFTER_SOURCE)?;
    query.after = position(state, after, after_source, &query).await?;
    let events = state.store.query(&query).await?;
    let (next_after, next_source) = match events.last() {
        Some(last) => (
            last.id.as_str(),
            source_for_next(state, last, &query).await?,
        ),
        None => (after.unwrap_or("0"), after_source.map(str::to_owned)),
    };
    let next = format!(
        "{}{}?{}",
        params::base_url(state.public_url.as_deref(), headers),
        path,
        params.with_after(next_after, next_source.as_deref())
    );
    let mut body =
        String::with_capacity(2 + events.iter().map(|e| e.body.len() + 1).sum::<usize>());
    body.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.body);
    }
    body.push(']');
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CLOUDEVENTS_JSON),
        )],
        body,
    )
        .into_response();
    let next = HeaderValue::from_str(&next)
        .map_err(|e| ApiError::internal("the next link is not a header value", e))?;
    response.headers_mut().insert("next", next);
    Ok(response)
}

/// Only the grants that can matter for the query's subject, so that a party the reader may not
/// read costs nothing.
pub fn narrow_visibility(query: &mut EventQuery) {
    if let Some(subject) = query.subject_key.clone() {
        query.visibility = query.visibility.restricted_to_subject(&subject);
    }
}

/// Where reading starts: after the event `after` (with `afterSource`) names, or the start.
pub async fn position(
    state: &AppState,
    after: Option<&str>,
    after_source: Option<&str>,
    query: &EventQuery,
) -> Result<i64, ApiError> {
    match (after, after_source) {
        (None, _) | (Some("0"), None) => Ok(0),
        (Some(id), source) => resolve_after(state, id, source, query).await,
    }
}

/// The position of the event `after` names. Ids are unique per source, not globally: with the
/// source that `next` adds when the id is shared (`afterSource`) the event is found exactly;
/// otherwise it is looked up among those the query selects first, then anywhere. An id that is not
/// (or no longer, after retention) in the store reads from the start, as Altinn does.
async fn resolve_after(
    state: &AppState,
    id: &str,
    source: Option<&str>,
    query: &EventQuery,
) -> Result<i64, ApiError> {
    if let Some(source) = source {
        // A `%` in the source widens the match; the earliest candidate means at worst a repeat.
        let pinned = EventQuery {
            sources: vec![Pattern::new(source)],
            ..query.clone()
        };
        if let Some(seq) = state.store.position_of(id, &pinned).await? {
            return Ok(seq);
        }
    }
    if let Some(seq) = state.store.position_of(id, query).await? {
        return Ok(seq);
    }
    let anywhere = EventQuery {
        visibility: Visibility::All,
        ..EventQuery::default()
    };
    Ok(state.store.position_of(id, &anywhere).await?.unwrap_or(0))
}

/// The source of the page's last event, for `next` to name beside `after` when the id alone would
/// not resume right after that event: when an earlier event in the query's scope has the same id
/// (ids are unique per source only), or when the id is `0` (which alone means the start of the
/// log). Without it a client following `next` would get the same events again and again.
async fn source_for_next(
    state: &AppState,
    last: &StoredEvent,
    query: &EventQuery,
) -> Result<Option<String>, ApiError> {
    if last.id != "0" && state.store.position_of(&last.id, query).await? == Some(last.seq) {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Source {
        source: String,
    }
    let event: Source = serde_json::from_str(&last.body)
        .map_err(|e| ApiError::internal(format!("stored event {} has no source", last.seq), e))?;
    Ok(Some(event.source))
}
