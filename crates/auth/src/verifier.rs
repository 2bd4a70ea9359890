//! Bearer token verification: the issuer must be trusted, the algorithm asymmetric and allowed for
//! that issuer, the signature valid, and `exp`/`nbf` (and `aud` when configured) in order.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::devkey::{DEV_ISSUER, DevKey, DevKeyError};
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
    /// Keys with their `kid`; a key without one is tried for every token of the issuer.
    pub keys: Vec<(Option<String>, DecodingKey)>,
}

/// One entry of the `--trusted-issuers` file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    /// Path of a JWKS file, relative to the file that names it.
    pub jwks: String,
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
            keys: vec![(Some(key.kid()), key.decoding_key()?)],
        })
    }

    /// Reads a `--trusted-issuers` file: a JSON array of `{issuer, jwks, algorithms, audience}`.
    pub fn load_all(path: &Path) -> Result<Vec<TrustedIssuer>, IssuerConfigError> {
        let configs: Vec<IssuerConfig> = read_json(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        configs
            .into_iter()
            .map(|c| {
                let invalid = |message: String| IssuerConfigError::Invalid {
                    issuer: c.issuer.clone(),
                    message,
                };
                if let Some(bad) = c.algorithms.iter().find(|a| !is_asymmetric(**a)) {
                    return Err(invalid(format!(
                        "{bad:?} is symmetric; only asymmetric algorithms are allowed"
                    )));
                }
                let set: JwkSet = read_json(&base.join(&c.jwks))?;
                let keys = set
                    .keys
                    .iter()
                    .map(|jwk| {
                        DecodingKey::from_jwk(jwk)
                            .map(|k| (jwk.common.key_id.clone(), k))
                            .map_err(|e| invalid(format!("unusable key in {}: {e}", c.jwks)))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() {
                    return Err(invalid(format!("{} holds no keys", c.jwks)));
                }
                Ok(TrustedIssuer {
                    issuer: c.issuer,
                    algorithms: c.algorithms,
                    audience: c.audience,
                    keys,
                })
            })
            .collect()
    }
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

/// A token that passed verification, remembered until its `exp`.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// `exp`, seconds since the Unix epoch.
    expires: i64,
}

pub struct TokenVerifier {
    issuers: Vec<TrustedIssuer>,
    /// Verdicts keyed by the SHA-256 of the whole token. The signature check dominates a small
    /// request's cost (about 70 µs for ES256), and a token's verdict cannot change before `exp`:
    /// the keys are fixed for the process's life and `nbf`, once passed, stays passed. Only
    /// successes are kept, so a bad token is checked in full every time.
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

    /// Verifies a bearer token and returns the principal it carries.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let key = token_digest(token);
        let now = chrono::Utc::now().timestamp();
        if let Some(hit) = self.verified.get(&key) {
            if now < hit.expires {
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
                },
            );
        }
        Ok(principal)
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
        let candidates = issuer
            .keys
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
                },
                expires: now - 1,
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
