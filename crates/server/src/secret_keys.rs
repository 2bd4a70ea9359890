//! Where the keys that seal webhook secrets come from: `--secret-key-file` (one base64 key per
//! line, the current one first), or `HENDELSE_SECRET_KEY` (the same keys, comma-separated), or,
//! on the embedded store only, a key file the server makes in its data directory on first start
//! (as it makes the development signing key). On PostgreSQL the operator must give the keys: every
//! node must seal and open with the same ones. Never the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hendelse_push::secrets::{SecretKeyError, SecretKeys};
use hendelse_store::PushStore;

/// The environment variable that may hold the keys themselves.
pub const SECRET_KEY_ENV: &str = "HENDELSE_SECRET_KEY";
/// The key file the embedded store's data directory holds when no keys are given.
const DATA_DIR_KEY_FILE: &str = "secret-keys";

/// The keys, read before the store is opened; a one-line reason when there are none to be had.
pub fn load(
    file: Option<&Path>,
    on_postgres: bool,
    data_dir: &Path,
) -> anyhow::Result<Arc<SecretKeys>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --secret-key-file {}", path.display()))?;
        return parse(&text, &format!("--secret-key-file {}", path.display()));
    }
    if let Ok(text) = std::env::var(SECRET_KEY_ENV) {
        return parse(&text.replace(',', "\n"), SECRET_KEY_ENV);
    }
    if on_postgres {
        anyhow::bail!(
            "with --database-url every node must seal webhook secrets with the same keys: give \
             --secret-key-file or {SECRET_KEY_ENV} (a line from `openssl rand -base64 32`)"
        );
    }
    let path = data_dir.join(DATA_DIR_KEY_FILE);
    if !path.exists() {
        create_key_file(&path)?;
        tracing::info!(path = %path.display(), "made a key for sealing webhook secrets; keep it with the data, apart from database dumps");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the secret key file {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

fn parse(text: &str, origin: &str) -> anyhow::Result<Arc<SecretKeys>> {
    SecretKeys::parse(text)
        .map(Arc::new)
        .with_context(|| format!("the secret keys in {origin} are unusable"))
}

fn create_key_file(path: &PathBuf) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    let key = SecretKeys::generate().context("cannot make a secret key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the secret key file {}", path.display()))?;
    writeln!(
        file,
        "# Keys that seal the webhook secrets in the store; the first seals, all open.\n{key}"
    )
    .and_then(|()| file.sync_all())
    .with_context(|| format!("cannot write the secret key file {}", path.display()))
}

/// Seals every stored secret that is not sealed with the current key (stored before secrets were
/// sealed, or under a key being rotated out); fails, naming the key, when one does not open.
/// Returns how many subscriptions it sealed again.
pub async fn reseal(store: &dyn PushStore, keys: &SecretKeys) -> anyhow::Result<usize> {
    let stored = store
        .stored_secrets()
        .await
        .context("reading the webhook secrets")?;
    let mut resealed = Vec::new();
    for was in stored {
        let mut s = was.clone();
        let mut changed = false;
        for secret in [&mut s.secret, &mut s.previous_secret]
            .into_iter()
            .flatten()
        {
            if keys.is_current(secret) {
                continue;
            }
            let plain = keys.open(secret).map_err(|e| match e {
                SecretKeyError::UnknownKey(_) | SecretKeyError::Damaged(_) => {
                    anyhow::anyhow!("cannot open the secret of subscription {}: {e}", s.id)
                }
                other => other.into(),
            })?;
            *secret = keys.seal(&plain);
            changed = true;
        }
        if changed {
            resealed.push((was, s));
        }
    }
    if resealed.is_empty() {
        return Ok(0);
    }
    // Another node resealing at the same time, or a PATCH of a secret, wins: its value opens too.
    let replaced = store
        .replace_secrets(&resealed)
        .await
        .context("sealing the webhook secrets with the current key")?;
    if replaced > 0 {
        tracing::info!(
            subscriptions = replaced,
            key = keys.current_id(),
            "webhook secrets sealed with the current key"
        );
    }
    Ok(usize::try_from(replaced).unwrap_or(usize::MAX))
}
