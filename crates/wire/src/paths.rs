//! The API's paths, as Altinn Events and Dialogporten name them.

pub const EVENTS: &str = "/events/api/v1/events";
pub const APP: &str = "/events/api/v1/app";
pub const APP_PARTY: &str = "/events/api/v1/app/party";
/// A live stream of a query route is the route with this suffix.
pub const STREAM_SUFFIX: &str = "/stream";
pub const SUBSCRIPTIONS: &str = "/events/api/v1/subscriptions";
pub const SERVICE_OWNER_DIALOGS: &str = "/dialogporten/api/v1/serviceowner/dialogs";
