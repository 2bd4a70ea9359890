//! The development signing key: created in the data directory on first use, trusted by `serve`,
//! used by `hendelse token` to mint tokens. ES256 (P-256), stored as PKCS#8 DER readable only by
//! its owner.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

/// The `iss` of development tokens.
pub const DEV_ISSUER: &str = "hendelse-dev";
const KEY_FILE: &str = "dev-signing-key.p8";

#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    #[error("cannot read or write the signing key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the signing key {0} is not a valid P-256 PKCS#8 key")]
    Invalid(PathBuf),
    #[error("cannot generate a signing key")]
    Generate,
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

pub struct DevKey {
    pkcs8: Vec<u8>,
    /// Uncompressed public point: 0x04 || X || Y.
    public: Vec<u8>,
}

/// What a development token should say.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub org: Option<String>,
    pub org_number: Option<String>,
    pub pid: Option<String>,
    pub user_id: Option<i64>,
    pub party_id: Option<i64>,
    pub scope: Option<String>,
    pub ttl_seconds: i64,
    pub audience: Option<String>,
    /// `nbf` relative to now, in seconds (5 s ago when `None`).
    pub not_before_seconds: Option<i64>,
    /// An Altinn system user: its id and its owner's organisation number.
    pub system_user: Option<(String, String)>,
    /// `urn:altinn:authlevel`.
    pub auth_level: Option<u8>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(rename = "urn:altinn:org", skip_serializing_if = "Option::is_none")]
    org: Option<&'a str>,
    #[serde(
        rename = "urn:altinn:orgNumber",
        skip_serializing_if = "Option::is_none"
    )]
    org_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<&'a str>,
    #[serde(rename = "urn:altinn:userid", skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(rename = "urn:altinn:partyid", skip_serializing_if = "Option::is_none")]
    party_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_details: Option<serde_json::Value>,
    #[serde(
        rename = "urn:altinn:authlevel",
        skip_serializing_if = "Option::is_none"
    )]
    auth_level: Option<u8>,
}

impl DevKey {
    /// Loads the key from `data_dir`, creating it (and the directory) if there is none yet.
    pub fn load_or_create(data_dir: &Path) -> Result<DevKey, DevKeyError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| DevKeyError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(pkcs8) => Self::from_pkcs8(pkcs8).ok_or_else(|| DevKeyError::Invalid(path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir).map_err(io)?;
                let doc = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| DevKeyError::Generate)?;
                // Another process (a second node on the same data directory) may be creating the
                // key at the same moment: whoever links first wins, the other loads that key.
                let pkcs8 = match publish_private(&path, doc.as_ref()) {
                    Ok(()) => doc.as_ref().to_vec(),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        fs::read(&path).map_err(io)?
                    }
                    Err(e) => return Err(io(e)),
                };
                Self::from_pkcs8(pkcs8).ok_or(DevKeyError::Invalid(path.clone()))
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Option<DevKey> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).ok()?;
        let public = pair.public_key().as_ref().to_vec();
        (public.len() == 65).then_some(DevKey { pkcs8, public })
    }

    /// The key id, derived from the public key so that a new key gets a new id.
    pub fn kid(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.public);
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
    }

    pub fn decoding_key(&self) -> Result<DecodingKey, DevKeyError> {
        let x = URL_SAFE_NO_PAD.encode(&self.public[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&self.public[33..65]);
        Ok(DecodingKey::from_ec_components(&x, &y)?)
    }

    /// Signs a development token.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, DevKeyError> {
        let now = chrono::Utc::now().timestamp();
        let user_id = request.user_id.map(|u| u.to_string());
        let claims = Claims {
            iss: DEV_ISSUER,
            iat: now,
            nbf: now + request.not_before_seconds.unwrap_or(-5),
            exp: now + request.ttl_seconds,
            aud: request.audience.as_deref(),
            scope: request.scope.as_deref(),
            org: request.org.as_deref(),
            org_number: request.org_number.as_deref(),
            pid: request.pid.as_deref(),
            user_id,
            party_id: request.party_id,
            // As Altinn's token exchange writes a system user.
            authorization_details: request.system_user.as_ref().map(|(id, owner)| {
                serde_json::json!([{
                    "type": crate::principal::SYSTEM_USER_TYPE,
                    "systemuser_id": [id],
                    "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": format!("0192:{owner}")},
                    "system_id": "hendelse-dev-system"
                }])
            }),
            auth_level: request.auth_level,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid());
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ec_der(&self.pkcs8),
        )?)
    }
}

/// Writes the key to a private temporary file, then links it into place, so that the key file
/// either does not exist or is complete; fails with `AlreadyExists` if someone else got there first.
fn publish_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness"))?;
    let temporary = path.with_extension(format!("p8.{}.tmp", URL_SAFE_NO_PAD.encode(nonce)));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    linked?;
    // The key's name must be durable too, or a crash could leave tokens signed with a key that
    // is gone after the restart. A write error (a full disk) is an error like any other: the key
    // file is either complete or absent, never truncated.
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_reload_and_signs_verifiable_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DevKey::load_or_create(dir.path()).expect("create");
        let again = DevKey::load_or_create(dir.path()).expect("load");
        assert_eq!(first.kid(), again.kid());
        let token = first
            .mint(&TokenRequest {
                org: Some("ttd".into()),
                ttl_seconds: 60,
                ..Default::default()
            })
            .expect("mint");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_issuer(&[DEV_ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &again.decoding_key().expect("key"),
            &validation,
        )
        .expect("verifies");
        assert_eq!(data.claims["urn:altinn:org"], "ttd");
    }

    #[test]
    fn nodes_starting_together_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| DevKey::load_or_create(dir.path()).map(|k| k.kid())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("key"))
                .collect()
        });
        assert!(kids.windows(2).all(|w| w[0] == w[1]), "{kids:?}");
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "temporary files were left behind");
    }
}
