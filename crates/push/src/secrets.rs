//! Webhook secrets at rest: each subscription's signing secret is stored sealed with AES-256-GCM
//! under a key the operator gives (a file or the environment, never the database), so that a
//! dump of the database holds no usable secret. A sealed secret names its key
//! (`enc1:<key id>:<base64 of nonce and ciphertext>`), so that keys can be rotated: the first key
//! given seals, the others only open, and at start every secret not sealed with the first key is
//! sealed again with it.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "enc1:";
/// Binds the ciphertexts to their use: a secret sealed for something else does not open here.
const AAD: &[u8] = b"hendelse webhook secret";
/// The length of a key, in bytes.
pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretKeyError {
    #[error(
        "no secret key given: a key file needs at least one line with the base64 of 32 random bytes (e.g. from `openssl rand -base64 32`)"
    )]
    NoKey,
    #[error("line {line} of the secret keys is not the base64 of 32 bytes")]
    BadKey { line: usize },
    #[error(
        "a stored secret is sealed with key {0}, which is not among the secret keys given (--secret-key-file or HENDELSE_SECRET_KEY)"
    )]
    UnknownKey(String),
    #[error(
        "a stored secret is sealed with key {0} but does not open with it (damaged, or another key with the same id)"
    )]
    Damaged(String),
}

struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys that seal and open webhook secrets: the first seals, all open.
pub struct SecretKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("SecretKeys").field("ids", &ids).finish()
    }
}

impl SecretKeys {
    /// Keys as a key file or the environment holds them: one base64 key per line (blank lines
    /// and `#` comments ignored), the current one first.
    pub fn parse(text: &str) -> Result<SecretKeys, SecretKeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = STANDARD
                .decode(line)
                .ok()
                .filter(|b| b.len() == KEY_LEN)
                .ok_or(SecretKeyError::BadKey { line: i + 1 })?;
            let key = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| SecretKeyError::BadKey { line: i + 1 })?;
            keys.push(Key {
                id: key_id(&bytes),
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err(SecretKeyError::NoKey);
        }
        Ok(SecretKeys { keys })
    }

    /// A new random key, as a key file line.
    pub fn generate() -> Result<String, SecretKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SecretKeyError::NoKey)?;
        Ok(STANDARD.encode(bytes))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// `secret` sealed with the current key.
    pub fn seal(&self, secret: &str) -> String {
        let current = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // A failing system RNG leaves no safe way on; it is not a state a server can run in.
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random number generator");
        let mut sealed = secret.as_bytes().to_vec();
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut sealed,
            )
            .expect("AES-GCM seals any input of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", current.id, STANDARD.encode(out))
    }

    /// The secret `stored` holds: opened, or as it is when it was stored before secrets were
    /// sealed.
    pub fn open(&self, stored: &str) -> Result<String, SecretKeyError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, payload) = rest
            .split_once(':')
            .ok_or_else(|| SecretKeyError::Damaged(String::new()))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretKeyError::UnknownKey(id.to_owned()))?;
        let damaged = || SecretKeyError::Damaged(id.to_owned());
        let bytes = STANDARD.decode(payload).map_err(|_| damaged())?;
        if bytes.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut in_out = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut in_out)
            .map_err(|_| damaged())?;
        String::from_utf8(plain.to_vec()).map_err(|_| damaged())
    }

    /// Whether `stored` is sealed with the current key (else it is sealed again at start).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.keys[0].id)
    }
}

/// A short public name for a key: the first 8 hex digits of its SHA-256.
fn key_id(key: &[u8]) -> String {
    digest(&SHA256, key).as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[&str]) -> SecretKeys {
        SecretKeys::parse(&lines.join("\n")).expect("keys")
    }

    #[test]
    fn a_sealed_secret_opens_with_its_key_only() {
        let a = SecretKeys::generate().expect("key");
        let b = SecretKeys::generate().expect("key");
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let with_a = keys(&[&a]);
        let sealed = with_a.seal(secret);
        assert!(sealed.starts_with("enc1:"), "{sealed}");
        assert!(!sealed.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
        assert_ne!(sealed, with_a.seal(secret), "a new nonce each time");
        assert_eq!(with_a.open(&sealed).expect("opens"), secret);
        assert!(with_a.is_current(&sealed));

        // Rotation: b seals, a still opens.
        let rotated = keys(&["# the new key first", &b, "", &a]);
        assert_eq!(rotated.open(&sealed).expect("the old key opens"), secret);
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal(secret);
        assert!(rotated.is_current(&resealed));
        assert_eq!(keys(&[&b]).open(&resealed).expect("opens"), secret);
        assert_eq!(
            keys(&[&b]).open(&sealed),
            Err(SecretKeyError::UnknownKey(with_a.current_id().to_owned()))
        );

        // Tampering is found.
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("text");
        assert!(matches!(
            with_a.open(&tampered),
            Err(SecretKeyError::Damaged(_))
        ));
        // A secret stored before sealing reads as it is.
        assert_eq!(with_a.open(secret).expect("plain"), secret);
        assert!(!with_a.is_current(secret));
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        assert_eq!(SecretKeys::parse("").err(), Some(SecretKeyError::NoKey));
        assert_eq!(
            SecretKeys::parse("# only\n\n").err(),
            Some(SecretKeyError::NoKey)
        );
        let short = STANDARD.encode([1u8; 16]);
        let good = SecretKeys::generate().expect("key");
        assert_eq!(
            SecretKeys::parse(&format!("{good}\n{short}")).err(),
            Some(SecretKeyError::BadKey { line: 2 })
        );
        assert_eq!(
            SecretKeys::parse("not base64!").err(),
            Some(SecretKeyError::BadKey { line: 1 })
        );
        assert!(
            !format!("{:?}", keys(&[&good])).contains(&good),
            "keys are never shown"
        );
    }
}
