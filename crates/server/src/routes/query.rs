//! The three query routes of Altinn's Events API: their parameters, with Altinn's rules and
//! texts, become an [`EventQuery`] that the events service restricts to what the caller may read
//! and pages through.

use axum::extract::{FromRequestParts, OriginalUri, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hendelse_auth::Principal;
use hendelse_model::RESOURCE_PREFIX;
use hendelse_model::subject::{is_digits, party_key};
use hendelse_store::EventQuery;

use crate::app::AppState;
use crate::caller::Caller;
use crate::openapi::pages::EventPage;
use crate::openapi::params::{
    After, AppFilters, AppSubject, EventFilters, GenericSubject, OrgApp, OrgAppEvent, ResourceAfter,
};
use crate::openapi::problems::{BadRequest, NotFound, Refusals};
use crate::params::{self, Params};
use crate::problem::ApiError;

pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json; charset=utf-8";
const MAX_PAGE: i64 = 1000;
const DEFAULT_PAGE: i64 = 50;

/// What every query and stream route reads of its request: the verified caller, the query
/// parameters, the headers (the alternative subjects and the host of `next` come from them) and
/// the path `next` points at.
pub struct Reading {
    pub caller: Principal,
    pub params: Params,
    pub headers: HeaderMap,
    pub path: String,
}

impl FromRequestParts<AppState> for Reading {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller(caller) = Caller::from_request_parts(parts, state).await?;
        let uri = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(original)) => original,
            None => &parts.uri,
        };
        Ok(Reading {
            caller,
            params: Params::parse(uri.query()),
            path: uri.path().to_owned(),
            headers: parts.headers.clone(),
        })
    }
}

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
    operation_id = "queryPartyEvents",
    path = "/events/api/v1/app/party",
    tag = crate::openapi::EVENTS,
    description = "App events of one party (party, unit or header person); after or from required.",
    params(
        After,
        AppFilters,
        AppSubject
    ),
    responses(
        EventPage, BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn app_party(
    State(state): State<AppState>,
    reading: Reading,
) -> Result<Response, ApiError> {
    let query = app_party_query(&state, &reading, Start::Required)?;
    respond(&state, &reading, query).await
}

/// The query of `/app/party` (and its stream).
pub fn app_party_query(
    state: &AppState,
    reading: &Reading,
    start: Start,
) -> Result<EventQuery, ApiError> {
    let mut query = app_query(&reading.params, &reading.headers, true, start)?;
    query.resource_prefix = Some(format!("{RESOURCE_PREFIX}app_"));
    state.events.restrict(&reading.caller, &mut query);
    Ok(query)
}

/// `GET /events/api/v1/app/{org}/{app}`: app events of one app.
#[utoipa::path(
    get,
    operation_id = "queryAppEvents",
    path = "/events/api/v1/app/{org}/{app}",
    tag = crate::openapi::EVENTS,
    description = "App events of one app, filtered to what the caller may read.",
    params(
        OrgApp,
        After,
        AppFilters
    ),
    responses(
        EventPage, BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn app_events(
    State(state): State<AppState>,
    Path((org, app)): Path<(String, String)>,
    reading: Reading,
) -> Result<Response, ApiError> {
    // As Altinn: the app route is the orgs'; end users read theirs through /app/party.
    if reading.caller.org().is_none() {
        return Err(hendelse_auth::AuthError::OrgsOnly.into());
    }
    let mut query = app_query(&reading.params, &reading.headers, false, Start::Required)?;
    query.resource = Some(format!("{RESOURCE_PREFIX}app_{org}_{app}"));
    state.events.restrict(&reading.caller, &mut query);
    respond(&state, &reading, query).await
}

/// `GET /events/api/v1/app/{org}/{app}/{id}`: one app event, where a publish's `Location`
/// points.
#[utoipa::path(
    get,
    operation_id = "getAppEvent",
    path = "/events/api/v1/app/{org}/{app}/{id}",
    tag = crate::openapi::EVENTS,
    description = "One app event of the app, if the caller may read it (the Location of a publish).",
    params(OrgAppEvent),
    responses(
        (status = 200, description = "The event as published", content_type = "application/cloudevents+json"),
        NotFound, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn app_event(
    State(state): State<AppState>,
    Path((org, app, id)): Path<(String, String, String)>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    if caller.org().is_none() {
        return Err(hendelse_auth::AuthError::OrgsOnly.into());
    }
    let mut query = EventQuery {
        resource: Some(format!("{RESOURCE_PREFIX}app_{org}_{app}")),
        ..EventQuery::default()
    };
    state.events.restrict(&caller, &mut query);
    match state.events.one(&caller, &id, query).await? {
        Some(event) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CLOUDEVENTS_JSON),
            )],
            event.body,
        )
            .into_response()),
        None => Err(ApiError::NotFound(format!(
            "there is no event {id} of {org}/{app} that the caller may read"
        ))),
    }
}

/// `GET /events/api/v1/events`: generic events of one resource.
#[utoipa::path(
    get,
    operation_id = "queryEvents",
    path = "/events/api/v1/events",
    tag = crate::openapi::EVENTS,
    description = "Generic events of one resource.",
    params(
        ResourceAfter,
        EventFilters,
        GenericSubject
    ),
    responses(
        EventPage, BadRequest, Refusals
    ),
    security(("bearer" = []))
)]
pub async fn generic_events(
    State(state): State<AppState>,
    reading: Reading,
) -> Result<Response, ApiError> {
    let query = generic_query(&state, &reading, Start::Required)?;
    respond(&state, &reading, query).await
}

/// The query of `/events` (and its stream).
pub fn generic_query(
    state: &AppState,
    reading: &Reading,
    start: Start,
) -> Result<EventQuery, ApiError> {
    let Reading {
        caller,
        params,
        headers,
        ..
    } = reading;
    state.events.may_query_resources(caller)?;
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
    let mut query = EventQuery {
        resource: Some(resource.to_owned()),
        subject_key: params.one("subject")?.map(party_key),
        alternative_subject,
        from: params::instant(params, "from", "From")?,
        to: params::instant(params, "to", "To")?,
        sources: params.all("source"),
        types: params.all("type"),
        limit: clamp_size(params::size(params)?.unwrap_or(DEFAULT_PAGE)),
        ..EventQuery::default()
    };
    state.events.restrict(caller, &mut query);
    Ok(query)
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
    let party = params.one_value("party", "The value '' is not valid for Party.")?;
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

/// Runs the query from the cursor and answers with the page and its `next` link.
async fn respond(
    state: &AppState,
    reading: &Reading,
    query: EventQuery,
) -> Result<Response, ApiError> {
    let Reading {
        params,
        headers,
        path,
        ..
    } = reading;
    let after = params.one("after")?;
    let after_source = params.one(params::AFTER_SOURCE)?;
    let page = state
        .events
        .page(&reading.caller, query, after, after_source)
        .await?;
    let next = format!(
        "{}{}?{}",
        params::base_url(state.public_url.as_deref(), headers),
        path,
        params.with_after(&page.next_after, page.next_source.as_deref())
    );
    let events = &page.events;
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
