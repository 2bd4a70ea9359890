//! `--registry` read again while the server runs: on `SIGHUP`, and when the file changes, looked
//! at every second. A change shows in the file's length, modification time or inode (a rename
//! into place, as editors and Kubernetes ConfigMaps do it); while the modification time is recent,
//! a write within the same timestamp tick could leave all three alike, so then the content is
//! compared too. The new file is validated whole before it
//! is swapped in; one that cannot be read or parsed leaves the registry in force, and the log
//! says why. Every decision after the swap uses the new registry: queries, open streams, the
//! dispatcher's next page and each delivery at send time.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hendelse_auth::{Registry, ReloadingAuthorizer};

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// A modification time this recent may be shared by a later write (filesystem timestamps are
/// coarser than a poll on some systems), so the content is compared as well.
const RECENT: Duration = Duration::from_secs(3);

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// Whether a stamp's modification time is too recent to stand for the content alone.
fn recent(stamp: Option<Stamp>) -> bool {
    stamp
        .and_then(|s| s.modified)
        .is_some_and(|m| m.elapsed().map_or(true, |age| age < RECENT))
}

fn digest(text: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Watches `path` until the task is aborted.
pub async fn watch(path: PathBuf, authorizer: Arc<ReloadingAuthorizer>) {
    let mut seen = stamp(&path);
    // The content last read (at start, the one in force), so that an unchanged file is not
    // parsed again.
    let mut last_read = std::fs::read_to_string(&path).ok().map(|t| digest(&t));
    let mut hangups = hangups();
    loop {
        let asked = tokio::select! {
            _ = tokio::time::sleep(POLL) => false,
            Some(()) = next_hangup(&mut hangups) => true,
        };
        let now = stamp(&path);
        if !asked && now == seen && !recent(now) {
            continue;
        }
        seen = now;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                metrics::counter!("hendelse_registry_reloads_total", "outcome" => "refused")
                    .increment(1);
                tracing::warn!(error = %e, path = %path.display(), "the registry cannot be read; the one in force stays");
                continue;
            }
        };
        let content = digest(&text);
        if !asked && last_read == Some(content) {
            continue;
        }
        last_read = Some(content);
        match Registry::parse(&text, &path) {
            Ok(registry) => {
                let counts = (
                    registry.parties.len(),
                    registry.resources.len(),
                    registry.access.len(),
                );
                authorizer.replace(registry);
                metrics::counter!("hendelse_registry_reloads_total", "outcome" => "loaded")
                    .increment(1);
                tracing::info!(
                    path = %path.display(),
                    parties = counts.0,
                    resources = counts.1,
                    access = counts.2,
                    "registry reloaded"
                );
            }
            Err(e) => {
                metrics::counter!("hendelse_registry_reloads_total", "outcome" => "refused")
                    .increment(1);
                tracing::warn!(error = %e, "the changed registry is not used; the one in force stays");
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the registry reloads when its file changes");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}
