//! The success responses the event queries and their streams share, declared once as the error
//! responses are in [`super::problems`].

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{
    ArrayBuilder, ContentBuilder, Object, Ref, RefOr, ResponseBuilder, Type, response::Response,
};

/// A page of a query: the events as a JSON array and `next`, the URL of the page after it.
pub struct EventPage;

impl IntoResponses for EventPage {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let events = ArrayBuilder::new().items(Ref::from_schema_name("CloudEvent"));
        let next = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .description(Some("Absolute URL of the next page (always present)"))
            .build();
        let response = ResponseBuilder::new()
            .description("Events in registration order")
            .content(
                "application/cloudevents+json",
                ContentBuilder::new().schema(Some(events)).build(),
            )
            .header("next", next)
            .build();
        BTreeMap::from([("200".to_owned(), RefOr::T(response))])
    }
}

/// A live stream of a query.
pub struct EventStream;

impl IntoResponses for EventStream {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let response = ResponseBuilder::new()
            .description(
                "One message per event: `id` the event id, `data` its JSON; resume with \
                 `Last-Event-ID`",
            )
            .content("text/event-stream", ContentBuilder::new().build())
            .build();
        BTreeMap::from([("200".to_owned(), RefOr::T(response))])
    }
}
