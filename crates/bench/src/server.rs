//! The processes under test: `hendelse serve` on a temporary data directory (SQLite, or a fresh
//! PostgreSQL database), the bare ceiling endpoint, or a server that is already running (`--url`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use crate::http::Target;

/// Parties, resources and access rules of the benchmark: ttd owns the generic resource the
/// publish and push scenarios use, and (as an org) reads every `app_ttd_*` event the query
/// scenario stores.
const REGISTRY: &str = r#"{
  "parties": [
    {"partyId": 50002598, "person": "07124912037"},
    {"partyId": 50001337, "organization": "991825827"}
  ],
  "resources": [
    {"id": "urn:altinn:resource:super-simple-service", "owner": "ttd"}
  ],
  "access": []
}"#;

pub const TOKEN_SCOPE: &str = "altinn:events.publish altinn:events.subscribe";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// How to get a server for a scenario.
#[derive(Clone)]
pub struct Setup {
    /// More arguments for every server started (an external PDP's, say).
    pub server_args: Vec<String>,
    pub server_bin: PathBuf,
    pub backend: Backend,
    /// A database to use as it is (PostgreSQL); without it each scenario gets a fresh one.
    pub database_url: Option<String>,
    /// Where fresh databases are created (and dropped).
    pub pg_admin_url: String,
    /// An already running server (and a token it accepts) instead of starting one.
    pub url: Option<String>,
    pub token: Option<String>,
    pub ingest_queue: Option<usize>,
    pub keep: bool,
}

/// The key the benchmark's servers on PostgreSQL seal webhook secrets with (the base64 of 32
/// bytes; a benchmark's secrets protect nothing).
const BENCH_SECRET_KEY: &str = "aGVuZGVsc2UtYmVuY2gta2V5LTMyLWJ5dGVzLWxvbmc=";

/// A running child that printed `listening on http://ADDR` as its first line.
pub struct Process {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Process {
    pub fn spawn(
        program: &Path,
        args: &[OsString],
        envs: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Process> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining, so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not say where it listens; its log ({}) ends with:\n{}",
                    program.display(),
                    log.display(),
                    tail(log)
                );
            }
        };
        let url = first
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from the server: {first}"))?
            .trim()
            .to_owned();
        Ok(Process {
            child,
            url,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss_of(self.pid())
    }

    /// SIGTERM, then up to 30 s for a graceful exit, then SIGKILL.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!(
            "the server did not stop within 30 s of SIGTERM (log: {})",
            self.log.display()
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The bare endpoint, run as a child of this very binary so that it gets a process (and a
/// runtime) of its own, as the server does.
pub fn spawn_ceiling(dir: &Path) -> anyhow::Result<Process> {
    let me = std::env::current_exe().context("locating this executable")?;
    Process::spawn(
        &me,
        &[
            crate::ceiling::CHILD_ARG.into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        &[],
        &dir.join("ceiling.log"),
    )
}

/// A server for one scenario: started on a fresh data directory (and database), or the one
/// `--url` names.
pub struct Instance {
    pub target: Target,
    pub process: Option<Process>,
    pub dir: tempfile::TempDir,
    database: Option<FreshDatabase>,
    /// The PostgreSQL database the started server uses.
    database_url: Option<String>,
    keep: bool,
}

impl Instance {
    pub async fn start(setup: &Setup) -> anyhow::Result<Instance> {
        let dir = tempfile::Builder::new()
            .prefix("hendelse-bench-")
            .tempdir()
            .context("creating a temporary directory")?;
        if let Some(url) = &setup.url {
            let token = setup
                .token
                .as_deref()
                .context("--url needs --token (an org token for ttd with the scopes \"altinn:events.publish altinn:events.subscribe\")")?;
            return Ok(Instance {
                target: Target::new(url, Some(token))?,
                process: None,
                dir,
                database: None,
                database_url: None,
                keep: setup.keep,
            });
        }
        let data = dir.path().join("data");
        let registry = dir.path().join("registry.json");
        std::fs::write(&registry, REGISTRY)?;
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.clone().into(),
            "--registry".into(),
            registry.into(),
            "--allow-http-webhooks".into(),
            "--allow-private-webhooks".into(),
        ];
        if let Some(queue) = setup.ingest_queue {
            args.extend(["--ingest-queue".into(), queue.to_string().into()]);
        }
        args.extend(setup.server_args.iter().map(OsString::from));
        let mut database = None;
        let mut database_url = None;
        let mut envs = Vec::new();
        if setup.backend == Backend::Postgres {
            // A server on PostgreSQL needs the keys that seal webhook secrets given (an older
            // build ignores the variable).
            if std::env::var_os("HENDELSE_SECRET_KEY").is_none() {
                envs.push(("HENDELSE_SECRET_KEY", BENCH_SECRET_KEY));
            }
            let url = match &setup.database_url {
                Some(url) => url.clone(),
                None => {
                    let fresh = FreshDatabase::create(&setup.pg_admin_url).await?;
                    let url = fresh.url.clone();
                    database = Some(fresh);
                    url
                }
            };
            database_url = Some(url.clone());
            args.extend(["--database-url".into(), url.into()]);
        }
        let process = Process::spawn(
            &setup.server_bin,
            &args,
            &envs,
            &dir.path().join("server.log"),
        )?;
        let token = mint_token(&setup.server_bin, &data)?;
        Ok(Instance {
            target: Target::new(&process.url, Some(&token))?,
            process: Some(process),
            dir,
            database,
            database_url,
            keep: setup.keep,
        })
    }

    /// The server's peak RSS in MiB (only for a server this run started).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.process
            .as_ref()
            .and_then(Process::peak_rss)
            .map(|b| crate::stats::round1(b as f64 / (1024.0 * 1024.0)))
    }

    /// Bytes of the SQLite store (database and WAL), when this run started the server on it.
    pub fn store_bytes(&self) -> Option<u64> {
        if self.process.is_none() || self.database.is_some() {
            return None;
        }
        let data = self.dir.path().join("data");
        let mut total = 0;
        for entry in std::fs::read_dir(data).ok()? {
            let entry = entry.ok()?;
            if entry.file_name().to_string_lossy().starts_with("events.db") {
                total += entry.metadata().ok()?.len();
            }
        }
        Some(total)
    }

    /// Gathers the planner's statistics (`ANALYZE`) on the store of a server this run started, as
    /// autovacuum (PostgreSQL) or a periodic `ANALYZE` would in a long-running deployment. Says
    /// whether it could.
    pub async fn analyze(&self) -> anyhow::Result<bool> {
        if self.process.is_none() {
            return Ok(false);
        }
        if let Some(url) = &self.database_url {
            let mut conn = PgConnection::connect(url).await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
            return Ok(true);
        }
        let path = self.dir.path().join("data").join("events.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::from_secs(30));
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        sqlx::query("ANALYZE").execute(&mut conn).await?;
        Ok(true)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let stopped = match self.process {
            Some(p) => p.stop(),
            None => Ok(()),
        };
        if let Some(db) = self.database {
            if self.keep {
                eprintln!("keeping the database {}", db.url);
            } else {
                db.drop_database().await;
            }
        }
        if self.keep {
            let path = self.dir.keep();
            eprintln!("keeping {}", path.display());
        }
        stopped
    }
}

/// `hendelse token` for ttd, signed with the data directory's development key.
pub fn mint_token(server_bin: &Path, data_dir: &Path) -> anyhow::Result<String> {
    let out = Command::new(server_bin)
        .arg("token")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--org", "ttd", "--scope", TOKEN_SCOPE, "--ttl", "86400"])
        .output()
        .context("running hendelse token")?;
    if !out.status.success() {
        bail!(
            "hendelse token failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A PostgreSQL database created for one scenario and dropped after it.
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl FreshDatabase {
    async fn create(admin_url: &str) -> anyhow::Result<FreshDatabase> {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(admin_url)))?;
        let name = format!(
            "hendelse_bench_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating the database {name}"))?;
        Ok(FreshDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        })
    }

    async fn drop_database(&self) {
        match PgConnection::connect(&self.admin_url).await {
            Ok(mut conn) => {
                let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                )))
                .execute(&mut conn)
                .await;
                if let Err(e) = dropped {
                    eprintln!("could not drop the database {}: {e}", self.name);
                }
            }
            Err(e) => eprintln!("could not drop the database {}: {e}", self.name),
        }
    }
}

/// The same server URL with another database name (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// The `hendelse` binary next to this one (`cargo build --release -p hendelse -p hendelse-bench`
/// puts both in `target/release`).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me.parent().context("this executable has no directory")?;
    // Test binaries live one level deeper, in `deps/`.
    for candidate in [dir.join("hendelse"), dir.join("../hendelse")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no hendelse binary next to {}: build it with `cargo build --release -p hendelse -p hendelse-bench`, or give --server-bin",
        me.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_urls_keep_server_and_parameters() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "b2"),
            "postgres://u:p@h/b2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b3"),
            "postgres://h:5432/b3"
        );
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://***@h/db");
    }

    #[test]
    fn peak_rss_of_this_process() {
        assert!(peak_rss_of(std::process::id()).is_some_and(|b| b > 0));
    }
}
