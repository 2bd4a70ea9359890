//! The parameters several operations share, declared once and named in an operation's
//! `params(…)`: the filters of the event queries and their streams, the subject of the app routes,
//! and the conditions of a dialog change.

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Array, KnownFormat, Object, ObjectBuilder, Required, SchemaFormat, Type};

/// What a parameter holds.
#[derive(Clone, Copy)]
enum Value {
    Text,
    /// Repeatable (`type=a&type=b`).
    Texts,
    Integer,
    Boolean,
}

struct Declared {
    name: &'static str,
    place: ParameterIn,
    value: Value,
    description: &'static str,
    required: bool,
}

const fn query(name: &'static str, value: Value, description: &'static str) -> Declared {
    Declared {
        name,
        place: ParameterIn::Query,
        value,
        description,
        required: false,
    }
}

/// A query parameter without which the route answers 400.
const fn required(declared: Declared) -> Declared {
    Declared {
        required: true,
        ..declared
    }
}

const fn header(name: &'static str, description: &'static str) -> Declared {
    Declared {
        name,
        place: ParameterIn::Header,
        value: Value::Text,
        description,
        required: false,
    }
}

/// A path segment, which is always there.
const fn path(name: &'static str, description: &'static str) -> Declared {
    Declared {
        name,
        place: ParameterIn::Path,
        value: Value::Text,
        description,
        required: true,
    }
}

fn build(declared: &[Declared]) -> Vec<Parameter> {
    declared
        .iter()
        .map(|d| {
            let schema: utoipa::openapi::RefOr<utoipa::openapi::Schema> = match d.value {
                Value::Text => Object::with_type(Type::String).into(),
                Value::Texts => Array::new(Object::with_type(Type::String)).into(),
                Value::Integer => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .into(),
                Value::Boolean => Object::with_type(Type::Boolean).into(),
            };
            ParameterBuilder::new()
                .name(d.name)
                .parameter_in(d.place.clone())
                .required(if d.required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(d.description))
                .schema(Some(schema))
                .explode(matches!(d.value, Value::Texts).then_some(true))
                .build()
        })
        .collect()
}

/// Declares one type per group of shared parameters.
macro_rules! params {
    ($($(#[$doc:meta])* $name:ident => [$($param:expr),+ $(,)?];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoParams for $name {
            fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                build(&[$($param),+])
            }
        }
    )+};
}

params! {
    /// The starting point of an app query, which may be `from` instead.
    After => [query("after", Value::Text, "Id of the last event read; results are events registered after it")];
    /// The resource and starting point of `/events`.
    ResourceAfter => [
        required(query("resource", Value::Text, "The resource, `urn:altinn:resource:…`")),
        required(query("after", Value::Text, "Id of the last event read; `0` for the start")),
    ];
    /// The resource of `/events/stream`.
    Resource => [required(query("resource", Value::Text, "The resource, `urn:altinn:resource:…`"))];
    /// The filters every event query and stream takes (beside its starting point).
    EventFilters => [
        query("afterSource", Value::Text, "Source of the `after` event, added by `next` when its id is shared"),
        query("from", Value::Text, "Registered at or after (RFC 3339 with time zone; seconds optional)"),
        query("to", Value::Text, "Registered at or before"),
        query("source", Value::Texts, "Event sources, `%` matches any run of characters"),
        query("type", Value::Texts, "Event types, `%` wildcards"),
        query("size", Value::Integer, "Page size: default 50, at most 1000"),
    ];
    /// The subject of `/app/party` and its stream: one of party, unit or person.
    AppSubject => [
        query("party", Value::Integer, "Party id of the subject"),
        query("unit", Value::Text, "Organisation number (9 digits) of the alternative subject"),
        header("person", "National identity number (11 digits) of the alternative subject"),
    ];
    /// The subject filters of `/events` and its stream.
    GenericSubject => [
        query("subject", Value::Text, "Party subject (URN or /party/N)"),
        header("Altinn-AlternativeSubject", "Alternative subject"),
    ];
    /// Where a stream resumes after a reconnect.
    Resume => [
        query("after", Value::Text, "Replay from after this event id"),
        header("Last-Event-ID", "Resume after this event id"),
    ];
    /// The dialog a route is about.
    DialogId => [path("id", "Dialog id (UUID)")];
    /// The app of `/app/{org}/{app}`.
    OrgApp => [path("org", "Org code"), path("app", "App name")];
    /// One app event of `/app/{org}/{app}/{id}`.
    OrgAppEvent => [path("org", "Org code"), path("app", "App name"), path("id", "Event id")];
    /// The conditions of a change of a dialog.
    ChangeConditions => [
        query("isSilentUpdate", Value::Boolean, "true: publish nothing"),
        header("If-Match", "Only if the dialog is at this revision"),
    ];
    /// The filters of a dialog listing (and its page).
    DialogFilters => [
        query("serviceResource", Value::Texts, "Only these service resources (repeatable)"),
        query("party", Value::Texts, "Only these parties (repeatable)"),
        query("status", Value::Texts, "Only these statuses (repeatable)"),
        query("limit", Value::Integer, "Page size, 1 to 1000 (default 100)"),
        query("continuationToken", Value::Text, "From the previous page"),
    ];
}
