//! The JSON shapes of the HTTP API, in one place: the server renders and parses them, the client
//! (`hendelse-client`) sends and reads them, and the OpenAPI document describes them from the same
//! definitions. Only what crosses the wire lives here: no rules, no store types.

pub mod paths;
pub mod problem;
pub mod subscriptions;
pub mod whole;

pub use problem::Problem;
