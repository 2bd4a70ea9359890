//! An issuer's signing keys fetched from its `jwks_uri` (given, or read from its OpenID
//! configuration), cached in the data directory, and kept fresh: refreshed in the background as
//! the answer's `Cache-Control: max-age` says (within bounds), and fetched again at once for a
//! token whose `kid` is unknown, but at most once per `min_refresh`, so that tokens with forged
//! key ids cannot make us hammer the issuer. A removed key stops verifying at the next refresh;
//! a new one verifies at the next refresh or the first token that names it, whichever is first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

/// One key of an issuer, with its `kid` (a key without one is tried for every token).
pub type Key = (Option<String>, DecodingKey);

/// Where an issuer's keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The JWKS itself.
    JwksUri(String),
    /// `…/.well-known/openid-configuration`, whose `jwks_uri` names the JWKS.
    OpenIdConfiguration(String),
}

impl KeySource {
    fn describe(&self) -> &str {
        match self {
            KeySource::JwksUri(url) | KeySource::OpenIdConfiguration(url) => url,
        }
    }
}

/// How often the keys may and must be fetched again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshBounds {
    /// No fetch comes sooner than this after the previous one of its kind (background refreshes,
    /// unknown-`kid` fetches); also the wait when `Cache-Control` says nothing.
    pub min: Duration,
    /// The keys are fetched again at least this often, whatever `Cache-Control` says.
    pub max: Duration,
}

impl Default for RefreshBounds {
    fn default() -> Self {
        RefreshBounds {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} is not a usable {what}: {message}")]
    Unusable {
        url: String,
        what: &'static str,
        message: String,
    },
}

#[derive(Deserialize)]
struct OpenIdConfiguration {
    issuer: Option<String>,
    jwks_uri: String,
}

/// What one fetch brought.
struct Fetched {
    keys: Vec<Key>,
    /// The JWKS as fetched, for the cache file.
    text: String,
    max_age: Option<Duration>,
}

/// The keys of one issuer published at a URL.
pub struct RemoteKeys {
    issuer: String,
    source: KeySource,
    bounds: RefreshBounds,
    cache_file: PathBuf,
    client: reqwest::Client,
    keys: RwLock<Arc<Vec<Key>>>,
    /// Moves on whenever the keys change, so that verdicts reached with old keys are not reused.
    generation: AtomicU64,
    /// When a token's unknown `kid` last caused a fetch.
    last_unknown_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time (many requests with a new `kid` wait for the same one).
    fetching: tokio::sync::Mutex<()>,
    /// The wait before the first background refresh, from the start's answer.
    first_wait: Duration,
}

/// The usable keys of a fetched JWKS: one this library cannot use (another curve, say) is
/// skipped with a warning, so that it cannot keep the others from being refreshed.
fn usable_keys(issuer: &str, set: &JwkSet) -> Vec<Key> {
    set.keys
        .iter()
        .filter_map(|jwk| match DecodingKey::from_jwk(jwk) {
            Ok(key) => Some((jwk.common.key_id.clone(), key)),
            Err(e) => {
                tracing::warn!(%issuer, kid = jwk.common.key_id.as_deref().unwrap_or("(no kid)"), error = %e, "an unusable key of the issuer is skipped");
                None
            }
        })
        .collect()
}

/// The keys in a JWKS; an error names the first unusable one.
pub fn keys_of(set: &JwkSet) -> Result<Vec<Key>, String> {
    set.keys
        .iter()
        .map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map(|k| (jwk.common.key_id.clone(), k))
                .map_err(|e| {
                    format!(
                        "unusable key {}: {e}",
                        jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                    )
                })
        })
        .collect()
}

/// `max-age` of a `Cache-Control` header; `None` when absent (or `no-cache`/`no-store`, which
/// mean the same to us: refresh at the lower bound).
fn max_age(header: Option<&str>) -> Option<Duration> {
    let header = header?;
    let mut age = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return None;
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

impl RemoteKeys {
    /// Fetches the keys (or, when the issuer cannot be reached, reads the copy cached by an
    /// earlier start); fails when neither gives a key.
    pub async fn start(
        issuer: String,
        source: KeySource,
        bounds: RefreshBounds,
        cache_file: PathBuf,
    ) -> Result<Arc<RemoteKeys>, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // An issuer's keys are not taken from a plain-HTTP redirect of an HTTPS address.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade = attempt.url().scheme() == "http"
                    && attempt
                        .previous()
                        .first()
                        .is_some_and(|first| first.scheme() == "https");
                if downgrade || attempt.previous().len() >= 5 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| format!("issuer {issuer}: cannot make an HTTP client: {e}"))?;
        let mut remote = RemoteKeys {
            issuer: issuer.clone(),
            source,
            bounds,
            cache_file,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            last_unknown_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            first_wait: bounds.min,
        };
        let fetched = remote.fetch().await.and_then(|fetched| {
            if fetched.keys.is_empty() {
                Err(JwksError::Unusable {
                    url: remote.source.describe().to_owned(),
                    what: "key set",
                    message: "it holds no usable key".into(),
                })
            } else {
                Ok(fetched)
            }
        });
        match fetched {
            Ok(fetched) => {
                remote.first_wait = remote.wait_after(fetched.max_age);
                remote.install(fetched.keys);
                remote.keep(&fetched.text);
            }
            Err(e) => {
                let cached = remote.cached().map_err(|cache| {
                    format!("issuer {issuer}: {e}, and there is no usable cached copy ({cache})")
                })?;
                tracing::warn!(%issuer, error = %e, cache = %remote.cache_file.display(), "cannot fetch the issuer's keys; using the copy cached at an earlier start");
                remote.install(cached);
            }
        }
        Ok(Arc::new(remote))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.keys()
            .iter()
            .any(|(k, _)| k.as_deref().is_none_or(|k| k == kid))
    }

    /// Fetches the keys again for a token whose `kid` they lack, unless that was done less than
    /// the lower bound ago; whether the keys now know it.
    pub async fn fetch_for_unknown(&self, kid: &str) -> bool {
        let _one = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if self.knows(kid) {
            return true;
        }
        {
            let mut last = self
                .last_unknown_fetch
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < self.bounds.min) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh_now("unknown kid").await;
        self.knows(kid)
    }

    /// Refreshes in the background until the task is aborted.
    pub async fn refresh_forever(self: Arc<Self>, first_wait: Duration) {
        let mut wait = first_wait;
        loop {
            tokio::time::sleep(wait).await;
            let _one = self.fetching.lock().await;
            wait = match self.refresh_now("scheduled").await {
                Some(age) => age,
                None => self.bounds.min,
            };
        }
    }

    /// How long the start's keys may be kept before the first refresh.
    pub fn first_refresh(&self) -> Duration {
        self.first_wait
    }

    /// The wait before the next refresh after an answer with this `max-age`.
    fn wait_after(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.bounds.min)
            .clamp(self.bounds.min, self.bounds.max)
    }

    /// One fetch; the keys are replaced when it brings any. The wait until the next scheduled
    /// refresh, when it succeeded.
    async fn refresh_now(&self, why: &'static str) -> Option<Duration> {
        match self.fetch().await {
            Ok(fetched) if !fetched.keys.is_empty() => {
                metrics::counter!("hendelse_jwks_fetches_total", "outcome" => "fetched", "why" => why)
                    .increment(1);
                if self.install(fetched.keys) {
                    tracing::info!(issuer = %self.issuer, keys = self.keys().len(), "the issuer's keys changed");
                }
                // Also when only a key's material changed under the same kid.
                self.keep(&fetched.text);
                Some(self.wait_after(fetched.max_age))
            }
            Ok(fetched) => {
                // The issuer withdrew every key it signs with (or none is usable): its tokens
                // stop verifying, as a withdrawn key's do.
                metrics::counter!("hendelse_jwks_fetches_total", "outcome" => "empty", "why" => why)
                    .increment(1);
                tracing::warn!(issuer = %self.issuer, "the issuer publishes no usable key: none of its tokens verifies until it does");
                self.install(Vec::new());
                Some(self.wait_after(fetched.max_age))
            }
            Err(e) => {
                metrics::counter!("hendelse_jwks_fetches_total", "outcome" => "failed", "why" => why)
                    .increment(1);
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot refresh the issuer's keys; the ones in force stay");
                None
            }
        }
    }

    /// Puts `keys` in force; whether they differ from the ones before (by `kid`).
    fn install(&self, keys: Vec<Key>) -> bool {
        let ids = |keys: &[Key]| {
            let mut ids: Vec<Option<String>> = keys.iter().map(|(k, _)| k.clone()).collect();
            ids.sort();
            ids
        };
        let mut current = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = ids(&current) != ids(&keys);
        *current = Arc::new(keys);
        // Also when only a key's material changed under the same kid: verdicts are made again.
        self.generation.fetch_add(1, Ordering::AcqRel);
        changed
    }

    async fn fetch(&self) -> Result<Fetched, JwksError> {
        let jwks_uri = match &self.source {
            KeySource::JwksUri(url) => url.clone(),
            KeySource::OpenIdConfiguration(url) => {
                let (text, _) = self.get(url).await?;
                let unusable = |message: String| JwksError::Unusable {
                    url: url.clone(),
                    what: "OpenID configuration",
                    message,
                };
                let config = serde_json::from_str::<OpenIdConfiguration>(&text)
                    .map_err(|e| unusable(e.to_string()))?;
                // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was
                // fetched for; one that names another would hand us someone else's keys.
                if config.issuer.as_deref() != Some(self.issuer.as_str()) {
                    return Err(unusable(format!(
                        "it names the issuer {}, not {}",
                        config.issuer.as_deref().unwrap_or("(none)"),
                        self.issuer
                    )));
                }
                config.jwks_uri
            }
        };
        if !(jwks_uri.starts_with("https://") || jwks_uri.starts_with("http://")) {
            return Err(JwksError::Unusable {
                url: jwks_uri,
                what: "jwks_uri",
                message: "it is not an http(s) URL".into(),
            });
        }
        let (text, max_age) = self.get(&jwks_uri).await?;
        let unusable = |message: String| JwksError::Unusable {
            url: jwks_uri.clone(),
            what: "JWKS",
            message,
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
        let keys = usable_keys(&self.issuer, &set);
        Ok(Fetched {
            keys,
            text,
            max_age,
        })
    }

    async fn get(&self, url: &str) -> Result<(String, Option<Duration>), JwksError> {
        let failed = |message: String| JwksError::Fetch {
            url: url.to_owned(),
            message,
        };
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("it answered {status}")));
        }
        let max_age = max_age(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let text = response
            .text()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        Ok((text, max_age))
    }

    /// Keeps the JWKS for a start when the issuer cannot be reached (written whole, then renamed
    /// into place).
    fn keep(&self, text: &str) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.cache_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let next = self.cache_file.with_extension("next");
            std::fs::write(&next, text)?;
            std::fs::rename(&next, &self.cache_file)
        };
        if let Err(e) = write() {
            tracing::warn!(issuer = %self.issuer, error = %e, "cannot cache the issuer's keys");
        }
    }

    fn cached(&self) -> Result<Vec<Key>, String> {
        let text = std::fs::read_to_string(&self.cache_file)
            .map_err(|e| format!("{}: {e}", self.cache_file.display()))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("{}: {e}", self.cache_file.display()))?;
        let keys = keys_of(&set)?;
        if keys.is_empty() {
            return Err(format!("{} holds no keys", self.cache_file.display()));
        }
        Ok(keys)
    }

    pub fn source(&self) -> &str {
        self.source.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age(Some("public, max-age=300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age(Some("max-age=\"60\"")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(Some("no-cache, max-age=300")), None);
        assert_eq!(max_age(Some("private")), None);
        assert_eq!(max_age(None), None);
    }
}
