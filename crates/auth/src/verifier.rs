//! Bearer token verification: the issuer must be trusted, the algorithm asymmetric and allowed for
//! that issuer, the signature valid, and `exp`/`nbf` (and `aud` when configured) in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::devkey::{DEV_ISSUER, DevKey, DevKeyError};
use crate::jwks::{Key, KeySource, RefreshBounds, RemoteKeys, keys_of};
use crate::principal::{AltinnClaims, Principal};

/// Why a token was not accepted. The text is safe to show the caller: it never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required (Authorization: Bearer <token>)")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this service (audience)")]
    Audience,
    #[error("the token is not valid: {0}")]
    Claims(String),
    /// Altinn's answer (and text) to a token without `urn:altinn:org` on the routes of orgs.
    #[error("Only orgs can call this api")]
    OrgsOnly,
}

/// An issuer whose tokens are accepted.
pub struct TrustedIssuer {
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    pub audience: Option<String>,
    pub keys: IssuerKeys,
}

/// Where an issuer's keys come from: a file read at start, or a URL kept fresh.
pub enum IssuerKeys {
    /// Keys with their `kid`; a key without one is tried for every token of the issuer.
    Fixed(Arc<Vec<Key>>),
    Remote(Arc<RemoteKeys>),
}

impl IssuerKeys {
    fn current(&self) -> Arc<Vec<Key>> {
        match self {
            IssuerKeys::Fixed(keys) => keys.clone(),
            IssuerKeys::Remote(remote) => remote.keys(),
        }
    }

    fn generation(&self) -> u64 {
        match self {
            IssuerKeys::Fixed(_) => 0,
            IssuerKeys::Remote(remote) => remote.generation(),
        }
    }
}

/// One entry of the `--trusted-issuers` file: the keys from exactly one of `jwks` (a file),
/// `jwksUri` or `openidConfiguration` (URLs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    /// Path of a JWKS file, relative to the file that names it.
    #[serde(default)]
    pub jwks: Option<String>,
    /// URL of the issuer's JWKS.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// URL of the issuer's `/.well-known/openid-configuration`, whose `jwks_uri` is used.
    #[serde(default)]
    pub openid_configuration: Option<String>,
    /// No fetch of a URL issuer's keys comes sooner than this after the last (default 60 s).
    #[serde(default)]
    pub min_refresh_seconds: Option<u64>,
    /// A URL issuer's keys are fetched again at least this often (default 3600 s).
    #[serde(default)]
    pub max_refresh_seconds: Option<u64>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    #[serde(default)]
    pub audience: Option<String>,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256]
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid issuer list or JWKS: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("issuer {issuer}: {message}")]
    Invalid { issuer: String, message: String },
    #[error("{message}")]
    Unreachable { message: String },
    #[error(transparent)]
    DevKey(#[from] DevKeyError),
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl TrustedIssuer {
    /// The development issuer, whose key lives in the data directory.
    pub fn development(key: &DevKey, audience: Option<String>) -> Result<Self, DevKeyError> {
        Ok(TrustedIssuer {
            issuer: DEV_ISSUER.to_owned(),
            algorithms: vec![Algorithm::ES256],
            audience,
            keys: IssuerKeys::Fixed(Arc::new(vec![(Some(key.kid()), key.decoding_key()?)])),
        })
    }

    /// Reads a `--trusted-issuers` file: a JSON array of `{issuer, jwks | jwksUri |
    /// openidConfiguration, algorithms, audience}`. The keys of URL issuers are fetched now (or
    /// read from the copy an earlier start cached under `cache_dir`); those issuers are also
    /// returned on their own, to be refreshed in the background.
    pub async fn load_all(
        path: &Path,
        cache_dir: &Path,
    ) -> Result<(Vec<TrustedIssuer>, Vec<Arc<RemoteKeys>>), IssuerConfigError> {
        let configs: Vec<IssuerConfig> = read_json(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut issuers = Vec::new();
        let mut remotes = Vec::new();
        for c in configs {
            let invalid = |message: String| IssuerConfigError::Invalid {
                issuer: c.issuer.clone(),
                message,
            };
            if let Some(bad) = c.algorithms.iter().find(|a| !is_asymmetric(**a)) {
                return Err(invalid(format!(
                    "{bad:?} is symmetric; only asymmetric algorithms are allowed"
                )));
            }
            let keys = match (&c.jwks, &c.jwks_uri, &c.openid_configuration) {
                (Some(file), None, None) => {
                    let set: JwkSet = read_json(&base.join(file))?;
                    let keys = keys_of(&set).map_err(|e| invalid(format!("{e} in {file}")))?;
                    if keys.is_empty() {
                        return Err(invalid(format!("{file} holds no keys")));
                    }
                    IssuerKeys::Fixed(Arc::new(keys))
                }
                (None, Some(url), None) | (None, None, Some(url)) => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid(format!("{url} is not an http(s) URL")));
                    }
                    let source = if c.jwks_uri.is_some() {
                        KeySource::JwksUri(url.clone())
                    } else {
                        KeySource::OpenIdConfiguration(url.clone())
                    };
                    let defaults = RefreshBounds::default();
                    let bounds = RefreshBounds {
                        min: c
                            .min_refresh_seconds
                            .map_or(defaults.min, Duration::from_secs),
                        max: c
                            .max_refresh_seconds
                            .map_or(defaults.max, Duration::from_secs),
                    };
                    if bounds.min > bounds.max || bounds.min.is_zero() {
                        return Err(invalid(
                            "minRefreshSeconds must be at least 1 and at most maxRefreshSeconds"
                                .into(),
                        ));
                    }
                    let cache = cache_dir.join(format!("{}.json", cache_name(&c.issuer)));
                    let remote = RemoteKeys::start(c.issuer.clone(), source, bounds, cache)
                        .await
                        .map_err(|message| IssuerConfigError::Unreachable { message })?;
                    remotes.push(remote.clone());
                    IssuerKeys::Remote(remote)
                }
                _ => {
                    return Err(invalid(
                        "give exactly one of jwks (a file), jwksUri or openidConfiguration".into(),
                    ));
                }
            };
            issuers.push(TrustedIssuer {
                issuer: c.issuer,
                algorithms: c.algorithms,
                audience: c.audience,
                keys,
            });
        }
        Ok((issuers, remotes))
    }
}

/// A file name for an issuer's cached keys: its URL with everything but letters and digits made
/// `_`, and a digest so that two issuers never share one.
fn cache_name(issuer: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, issuer.as_bytes());
    let readable: String = issuer
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(60)
        .collect();
    let short: String = digest.as_ref()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{readable}-{short}")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, IssuerConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| IssuerConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| IssuerConfigError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[derive(Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
struct VerifiedClaims {
    /// Required by the validation; read here to know how long the verdict may be cached.
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(flatten)]
    altinn: AltinnClaims,
}

/// How many verified tokens are remembered. A producer or consumer reuses one token for many
/// requests until it expires, so a few thousand entries cover every active client.
pub const VERIFIED_CACHE_CAPACITY: usize = 10_000;

/// A token that passed verification, remembered until its `exp` or until the issuers' keys
/// change.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// `exp`, seconds since the Unix epoch.
    expires: i64,
    /// The keys' generation it was verified with.
    keys: u64,
}

pub struct TokenVerifier {
    issuers: Vec<TrustedIssuer>,
    /// Verdicts keyed by the SHA-256 of the whole token. The signature check dominates a small
    /// request's cost (about 70 µs for ES256), and a token's verdict cannot change before `exp`
    /// while the keys stay as they are (`nbf`, once passed, stays passed); a change of an issuer's
    /// keys (a refresh from its URL) makes every verdict be reached again. Only successes are
    /// kept, so a bad token is checked in full every time.
    verified: quick_cache::sync::Cache<[u8; 32], Verified>,
}

fn token_digest(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl TokenVerifier {
    pub fn new(issuers: Vec<TrustedIssuer>) -> Self {
        TokenVerifier {
            issuers,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
        }
    }

    /// The generation of all the issuers' keys together.
    fn keys_generation(&self) -> u64 {
        self.issuers
            .iter()
            .map(|i| i.keys.generation())
            .fold(0, u64::wrapping_add)
    }

    /// Verifies a bearer token with the keys in force and returns the principal it carries.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let key = token_digest(token);
        let now = chrono::Utc::now().timestamp();
        let keys = self.keys_generation();
        if let Some(hit) = self.verified.get(&key) {
            if now < hit.expires && hit.keys == keys {
                return Ok(hit.principal);
            }
            self.verified.remove(&key);
        }
        let (principal, expires) = self.verify_signed(token)?;
        if let Some(expires) = expires.filter(|e| now < *e) {
            self.verified.insert(
                key,
                Verified {
                    principal: principal.clone(),
                    expires,
                    keys,
                },
            );
        }
        Ok(principal)
    }

    /// [`verify`](Self::verify), and for a token whose `kid` its URL issuer does not know yet,
    /// once more after fetching that issuer's keys again (at most once per its lower refresh
    /// bound, whatever the number of such tokens).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::Signature) => {}
            other => return other,
        }
        let Some((remote, kid)) = self.unknown_kid(token) else {
            return Err(AuthError::Signature);
        };
        if remote.fetch_for_unknown(&kid).await {
            self.verify(token)
        } else {
            Err(AuthError::Signature)
        }
    }

    /// The URL issuer of a token and the `kid` it names, when that issuer's keys lack the `kid`.
    fn unknown_kid(&self, token: &str) -> Option<(Arc<RemoteKeys>, String)> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
        let iss = unverified.iss?;
        self.issuers.iter().find_map(|i| match &i.keys {
            IssuerKeys::Remote(remote) if i.issuer == iss && !remote.knows(&kid) => {
                Some((remote.clone(), kid.clone()))
            }
            _ => None,
        })
    }

    /// The full check, without the cache: the principal and the token's `exp` (whole seconds).
    fn verify_signed(&self, token: &str) -> Result<(Principal, Option<i64>), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and other unknown algorithms fail to parse as a header.
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                AuthError::Algorithm("in the header".into())
            }
            _ => AuthError::Malformed,
        })?;
        if !is_asymmetric(header.alg) {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        // Which issuer's keys to use is read from the unverified payload; the signature check
        // below then proves the claim.
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| AuthError::Malformed)?;
        let issuer = unverified
            .iss
            .and_then(|iss| self.issuers.iter().find(|i| i.issuer == iss))
            .ok_or(AuthError::UntrustedIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer.issuer.as_str()]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        match &issuer.audience {
            Some(aud) => {
                // jsonwebtoken checks `aud` only when the token has one unless it is required.
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_audience(&[aud.as_str()]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "iss"]);
                validation.validate_aud = false;
            }
        }
        let keys = issuer.keys.current();
        let candidates = keys
            .iter()
            .filter(|(kid, _)| kid.is_none() || header.kid.is_none() || *kid == header.kid);
        let mut last = AuthError::Signature;
        for (_, key) in candidates {
            match jsonwebtoken::decode::<VerifiedClaims>(token, key, &validation) {
                Ok(data) => {
                    let principal = data
                        .claims
                        .altinn
                        .principal()
                        .map_err(|m| AuthError::Claims(m.to_owned()))?;
                    // A fractional `exp` is cut down, so the cache never outlives the token.
                    let expires = data
                        .claims
                        .exp
                        .and_then(|n| n.as_f64())
                        .map(|e| e.floor() as i64);
                    return Ok((principal, expires));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature
                        | K::InvalidEcdsaKey
                        | K::InvalidRsaKey(_)
                        | K::InvalidKeyFormat => AuthError::Signature,
                        K::ExpiredSignature => return Err(AuthError::Expired),
                        K::ImmatureSignature => return Err(AuthError::NotYetValid),
                        K::InvalidAudience => return Err(AuthError::Audience),
                        K::MissingRequiredClaim(c) if c == "aud" => {
                            return Err(AuthError::Audience);
                        }
                        K::InvalidIssuer => return Err(AuthError::UntrustedIssuer),
                        K::MissingRequiredClaim(c) => {
                            return Err(AuthError::Claims(format!("{c} is required")));
                        }
                        _ => AuthError::Malformed,
                    };
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkey::TokenRequest;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn setup() -> (tempfile::TempDir, DevKey, TokenVerifier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DevKey::load_or_create(dir.path()).expect("key");
        let verifier = TokenVerifier::new(vec![
            TrustedIssuer::development(&key, None).expect("issuer"),
        ]);
        (dir, key, verifier)
    }

    /// A token of org ttd with the publish scope, living `ttl_seconds` (negative: expired).
    fn ttd_token(key: &DevKey, ttl_seconds: i64) -> String {
        key.mint(&TokenRequest {
            org: Some("ttd".into()),
            scope: Some("altinn:events.publish".into()),
            ttl_seconds,
            ..Default::default()
        })
        .expect("mint")
    }

    #[test]
    fn accepts_a_fresh_org_token() {
        let (_d, key, verifier) = setup();
        let token = ttd_token(&key, 60);
        let p = verifier.verify(&token).expect("valid");
        assert_eq!(p.org(), Some("ttd"));
        assert!(p.has_scope("altinn:events.publish"));
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let (_d, key, verifier) = setup();
        let token = ttd_token(&key, 60);
        let first = verifier.verify(&token).expect("valid");
        let digest = token_digest(&token);
        let cached = verifier
            .verified
            .get(&digest)
            .expect("cached after success");
        assert_eq!(cached.principal, first);
        let now = chrono::Utc::now().timestamp();
        assert!(cached.expires > now && cached.expires <= now + 61);
        assert_eq!(verifier.verify(&token).expect("cached"), first);

        // A remembered token must not vouch for a tampered copy of itself.
        let mut tampered = token.clone();
        let last = tampered.pop().expect("non-empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verifier.verify(&tampered).is_err());

        // An entry past its `exp` is not trusted: the token is checked again (and refused).
        verifier.verified.insert(
            digest,
            Verified {
                principal: first,
                expires: now - 1,
                keys: 0,
            },
        );
        let expired = ttd_token(&key, -10);
        verifier.verified.insert(
            token_digest(&expired),
            Verified {
                principal: Principal::Org {
                    org: Some("ttd".into()),
                    org_number: None,
                    scopes: vec![],
                    auth_level: None,
                },
                expires: now - 1,
                keys: 0,
            },
        );
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
        assert!(verifier.verify(&token).is_ok(), "re-verified in full");
        let renewed = verifier.verified.get(&digest).expect("cached again");
        assert!(
            renewed.expires > now,
            "the stale entry was replaced by the fresh verdict"
        );
    }

    #[test]
    fn refused_tokens_are_not_remembered() {
        let (_d, key, verifier) = setup();
        let expired = ttd_token(&key, -10);
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
        assert!(verifier.verified.get(&token_digest(&expired)).is_none());
    }

    #[test]
    fn a_configured_audience_is_required() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DevKey::load_or_create(dir.path()).expect("key");
        let verifier = TokenVerifier::new(vec![
            TrustedIssuer::development(&key, Some("events".into())).expect("issuer"),
        ]);
        let token = |audience: Option<&str>| {
            key.mint(&TokenRequest {
                org: Some("ttd".into()),
                ttl_seconds: 60,
                audience: audience.map(str::to_owned),
                ..Default::default()
            })
            .expect("mint")
        };
        assert!(verifier.verify(&token(Some("events"))).is_ok());
        assert_eq!(verifier.verify(&token(None)), Err(AuthError::Audience));
        assert_eq!(
            verifier.verify(&token(Some("elsewhere"))),
            Err(AuthError::Audience)
        );
    }

    #[test]
    fn rejects_expired_unsigned_and_foreign_tokens() {
        let (_d, key, verifier) = setup();
        let expired = ttd_token(&key, -10);
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));

        let (_d2, other_key, _) = setup();
        let foreign = ttd_token(&other_key, 60);
        assert_eq!(verifier.verify(&foreign), Err(AuthError::Signature));

        let body = URL_SAFE_NO_PAD
            .encode(br#"{"iss":"hendelse-dev","exp":99999999999,"urn:altinn:org":"ttd"}"#);
        let none = format!(
            "{}.{body}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        assert!(matches!(
            verifier.verify(&none),
            Err(AuthError::Algorithm(_))
        ));
        let hs = format!(
            "{}.{body}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#)
        );
        assert_eq!(
            verifier.verify(&hs),
            Err(AuthError::Algorithm("HS256".into()))
        );
        assert_eq!(verifier.verify("garbage"), Err(AuthError::Malformed));
    }
}
