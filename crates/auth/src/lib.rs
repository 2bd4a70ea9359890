//! Who is calling and what they may do: bearer tokens (the development signing key and trusted
//! production issuers), the principals they carry, the party registry and the authorizer.

pub mod authorizer;
pub mod decision;
pub mod devkey;
pub mod jwks;
pub mod pdp;
pub mod principal;
pub mod registry;
pub mod reloading;
pub mod verifier;

pub use authorizer::{Authorizer, RegistryAuthorizer, SUBSCRIPTION_EVENTS_RESOURCE};
pub use decision::{Action, DecisionError, EventFacts};
pub use devkey::{DEV_ISSUER, DevKey, TokenRequest};
pub use pdp::{PdpAuthorizer, PdpSettings};
pub use principal::Principal;
pub use registry::Registry;
pub use reloading::ReloadingAuthorizer;
pub use verifier::{AuthError, TokenVerifier, TrustedIssuer};

pub const SCOPE_PUBLISH: &str = "altinn:events.publish";
pub const SCOPE_PUBLISH_ADMIN: &str = "altinn:events.publish.admin";
pub const SCOPE_SUBSCRIBE: &str = "altinn:events.subscribe";
