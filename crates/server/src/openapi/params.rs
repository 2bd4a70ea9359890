//! The parameters several operations share, declared once and named in an operation's
//! `params(…)`: the filters of the event queries and their streams, the subject of the app routes,
//! and the conditions of a dialog change.

use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{Array, KnownFormat, Object, ObjectBuilder, Required, SchemaFormat, Type};

/// What a parameter holds. An empty query value counts as absent on every route (see
/// [`crate::params::Params`]), so the patterns of optional ones admit the empty text.
#[derive(Clone, Copy)]
enum Value {
    Text,
    /// Text of this pattern (ECMA 262, anchored).
    Matching(&'static str),
    /// One of these, compared without regard to case.
    OneOf(&'static [&'static str]),
    /// Repeatable (`type=a&type=b`).
    Texts,
    /// Repeatable, each of this pattern.
    TextsMatching(&'static str),
    /// A 64-bit integer, within these bounds when they are given.
    Integer(Option<i64>, Option<i64>),
    Boolean,
}

/// `from`/`to`: RFC 3339 with a time zone, seconds optional, `T` or a space between date and time
/// (as [`crate::params::parse_instant`] reads them).
const INSTANT: &str = "^$|^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,9})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
const RESOURCE: &str = "^urn:altinn:resource:.+$";

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

const fn header(name: &'static str, value: Value, description: &'static str) -> Declared {
    Declared {
        name,
        place: ParameterIn::Header,
        value,
        description,
        required: false,
    }
}

/// A path segment, which is always there.
const fn path(name: &'static str, description: &'static str) -> Declared {
    typed_path(name, Value::Text, description)
}

const fn typed_path(name: &'static str, value: Value, description: &'static str) -> Declared {
    Declared {
        name,
        place: ParameterIn::Path,
        value,
        description,
        required: true,
    }
}

fn build(declared: &[Declared]) -> Vec<Parameter> {
    declared
        .iter()
        .map(|d| {
            let text = |pattern: &str| {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern))
                    .build()
            };
            let schema: utoipa::openapi::RefOr<utoipa::openapi::Schema> = match d.value {
                // A required text must not be empty: empty counts as absent.
                Value::Text if d.required => ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .into(),
                Value::Text => Object::with_type(Type::String).into(),
                Value::Matching(pattern) => text(pattern).into(),
                Value::OneOf(choices) => ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(choices.iter().copied()))
                    .into(),
                Value::Texts => Array::new(Object::with_type(Type::String)).into(),
                Value::TextsMatching(pattern) => Array::new(text(pattern)).into(),
                Value::Integer(min, max) => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(min)
                    .maximum(max)
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

/// The filters every event query and stream takes beside its starting point and page size.
const FILTERS: [Declared; 5] = [
    query(
        "afterSource",
        Value::Text,
        "Source of the `after` event, added by `next` when its id is shared",
    ),
    query(
        "from",
        Value::Matching(INSTANT),
        "Registered at or after (RFC 3339 with time zone; seconds optional)",
    ),
    query("to", Value::Matching(INSTANT), "Registered at or before"),
    query(
        "source",
        Value::Texts,
        "Event sources, `%` matches any run of characters",
    ),
    query("type", Value::Texts, "Event types, `%` wildcards"),
];

/// The filters with the page size of `/events`, which is clamped to 1 to 1000.
pub struct EventFilters;

impl IntoParams for EventFilters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let size = query(
            "size",
            Value::Integer(None, None),
            "Page size: default 50; below 1 reads as 1, above 1000 as 1000",
        );
        [build(&FILTERS), build(&[size])].concat()
    }
}

/// The filters of the app queries and their streams, whose page size must be positive.
pub struct AppFilters;

impl IntoParams for AppFilters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let size = query(
            "size",
            Value::Integer(Some(1), None),
            "Page size: default 50; above 1000 reads as 1000",
        );
        [build(&FILTERS), build(&[size])].concat()
    }
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
        required(query("resource", Value::Matching(RESOURCE), "The resource, `urn:altinn:resource:…`")),
        required(query("after", Value::Text, "Id of the last event read; `0` for the start")),
    ];
    /// The resource of `/events/stream`.
    Resource => [required(query("resource", Value::Matching(RESOURCE), "The resource, `urn:altinn:resource:…`"))];
    /// The subject of `/app/party` and its stream: exactly one of party, unit or person.
    AppSubject => [
        query("party", Value::Integer(None, None), "Party id of the subject"),
        query("unit", Value::Matching("^([0-9]{9})?$"), "Organisation number (9 digits) of the alternative subject"),
        header("person", Value::Matching("^([0-9]{11})?$"), "National identity number (11 digits) of the alternative subject"),
    ];
    /// The subject filters of `/events` and its stream.
    GenericSubject => [
        query("subject", Value::Text, "Party subject (URN or /party/N)"),
        header("Altinn-AlternativeSubject", Value::Text, "Alternative subject"),
    ];
    /// Where a stream resumes after a reconnect.
    Resume => [
        query("after", Value::Text, "Replay from after this event id"),
        header("Last-Event-ID", Value::Text, "Resume after this event id"),
    ];
    /// The dialog a route is about.
    DialogId => [path("id", "Dialog id (UUID); any other text names no dialog")];
    /// The app of `/app/{org}/{app}`.
    OrgApp => [path("org", "Org code"), path("app", "App name")];
    /// One app event of `/app/{org}/{app}/{id}`.
    OrgAppEvent => [path("org", "Org code"), path("app", "App name"), path("id", "Event id")];
    /// `isSilentUpdate` alone.
    SilentChange => [query("isSilentUpdate", Value::Boolean, "true: publish nothing")];
    /// `isSilentUpdate` of an end user's read.
    SilentRead => [query("isSilentUpdate", Value::Boolean, "true: do not mark the dialog seen")];
    /// The conditions of a change of a dialog.
    ChangeConditions => [
        query("isSilentUpdate", Value::Boolean, "true: publish nothing"),
        header("If-Match", Value::Text, "Only if the dialog is at one of these revisions (entity tags, or `*`)"),
    ];
    /// The filters of a dialog listing (and its page).
    DialogFilters => [
        query("serviceResource", Value::Texts, "Only these service resources (repeatable)"),
        query("party", Value::Texts, "Only these parties (repeatable)"),
        query("status", Value::TextsMatching(STATUS), "Only these statuses (repeatable; without regard to case)"),
        query("limit", Value::Integer(Some(1), Some(1000)), "Page size, 1 to 1000 (default 100)"),
        query("continuationToken", Value::Matching("^[0-9]{0,18}$"), "From the previous page"),
    ];
    /// The subscription a route is about.
    SubscriptionId => [typed_path("id", Value::Integer(None, None), "Subscription id")];
    /// The state a deliveries listing is narrowed to.
    DeliveryStateFilter => [query("state", Value::Matching("^(|pending|delivered|dead)$"), "Only deliveries in this state: pending, delivered or dead")];
    /// Which deleted dialogs a service owner's listing shows.
    Deleted => [query("deleted", Value::OneOf(&["exclude", "include", "only"]), "exclude (default), include or only (case does not matter)")];
}

/// A dialog status, as Dialogporten names them.
const STATUS: &str =
    "^(|New|InProgress|Draft|Sent|RequiresAttention|Completed|NotApplicable|Awaiting)$";
