//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`
//! with the secret `whsec_<base64 key>`.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "whsec_";

/// A new `webhook-id`: unique per message, the same on every attempt of it, so that receivers
/// can drop repeats (Standard Webhooks' `msg_` form).
pub fn new_webhook_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// A subscription's signing secret.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the secret must be 'whsec_' followed by the base64 of 24 to 64 random bytes")]
pub struct SecretError;

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let key = text
            .strip_prefix(PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|k| (24..=64).contains(&k.len()))
            .ok_or(SecretError)?;
        Ok(Secret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &str) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(webhook_id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rejects_weak_or_malformed_secrets() {
        for bad in ["", "whsec_", "secret", "whsec_c2hvcnQ=", "whsec_!!!!"] {
            assert_eq!(Secret::parse(bad).err(), Some(SecretError), "{bad}");
        }
    }
}
