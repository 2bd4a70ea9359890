//! `--registry` read again while the server runs: on `SIGHUP`, and when the file changes (its
//! length or modification time, looked at every second; a rename into place, as editors and
//! Kubernetes ConfigMaps do it, shows as a change too). The new file is validated whole before it
//! is swapped in; one that cannot be read or parsed leaves the registry in force, and the log
//! says why. Every decision after the swap uses the new registry: queries, open streams, the
//! dispatcher's next page and each delivery at send time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hendelse_auth::{Registry, ReloadingAuthorizer};

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Watches `path` until the task is aborted.
pub async fn watch(path: PathBuf, authorizer: Arc<ReloadingAuthorizer>) {
    let mut seen = stamp(&path);
    let mut hangups = hangups();
    loop {
        let asked = tokio::select! {
            _ = tokio::time::sleep(POLL) => false,
            Some(()) = next_hangup(&mut hangups) => true,
        };
        let now = stamp(&path);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        match Registry::load(&path) {
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
