//! A PostgreSQL server of a test's own (`initdb`, `pg_ctl` as the `postgres` user, from the
//! machine's PostgreSQL packages), for the faults a shared server must not suffer: a full disk, a
//! primary stopped hard, a standby promoted. Stopped (`-m immediate`) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::free_port;

pub struct OwnPostgres {
    bin: PathBuf,
    pub data: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// `-c name=value` settings given at every start.
    settings: Vec<String>,
}

/// The newest installed PostgreSQL's `bin` directory.
pub fn postgres_bin() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .max()
}

/// Gives `path` (recursively) to the `postgres` user, which runs the servers.
pub fn give_to_postgres(path: &Path) -> bool {
    Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn failed(what: &str, output: &std::io::Result<Output>) -> bool {
    match output {
        Ok(o) if o.status.success() => false,
        Ok(o) => {
            eprintln!("{what} failed: {}", String::from_utf8_lossy(&o.stderr));
            true
        }
        Err(e) => {
            eprintln!("{what} could not run: {e}");
            true
        }
    }
}

impl OwnPostgres {
    /// A new cluster in `data` (its parent must be the `postgres` user's), logging into
    /// `log_dir`, started on a free port with `settings`; `None` (with the reason on stderr) when
    /// PostgreSQL's programs are missing or will not run.
    pub fn create(data: &Path, log_dir: &Path, settings: &[&str]) -> Option<OwnPostgres> {
        let bin = postgres_bin()?;
        let initdb = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(data)
            .output();
        if failed("initdb", &initdb) {
            return None;
        }
        let pg = OwnPostgres::at(bin, data, log_dir, "postgres.log", settings);
        pg.start().then_some(pg)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), in `data`, started on a port of
    /// its own with `settings`.
    pub fn standby_of(
        primary: &OwnPostgres,
        data: &Path,
        log_dir: &Path,
        settings: &[&str],
    ) -> Option<OwnPostgres> {
        let backup = as_postgres(&primary.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "-D"])
            .arg(data)
            .output();
        if failed("pg_basebackup", &backup) {
            return None;
        }
        let pg = OwnPostgres::at(primary.bin.clone(), data, log_dir, "standby.log", settings);
        pg.start().then_some(pg)
    }

    fn at(bin: PathBuf, data: &Path, log_dir: &Path, log: &str, settings: &[&str]) -> Self {
        OwnPostgres {
            bin,
            data: data.to_owned(),
            log: log_dir.join(log),
            port: free_port(),
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(&self.data);
        command
    }

    pub fn start(&self) -> bool {
        let mut options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1", self.port);
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let started = self
            .pg_ctl()
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "30", "start"])
            .output();
        !failed("pg_ctl start", &started)
    }

    /// `pg_ctl stop -m immediate`: as if the machine lost power (no shutdown checkpoint).
    pub fn stop_immediately(&self) {
        let _ = self.pg_ctl().args(["-m", "immediate", "stop"]).output();
    }

    /// Promotes a standby to a primary, waiting until it accepts writes.
    pub fn promote(&self) -> bool {
        let promoted = self.pg_ctl().args(["-w", "-t", "30", "promote"]).output();
        !failed("pg_ctl promote", &promoted)
    }

    /// Lets clients from `cidr` in (trust, as the loopback ones), at once.
    pub fn allow(&self, cidr: &str) {
        use std::io::Write;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("pg_hba.conf"))
            .expect("pg_hba.conf");
        writeln!(hba, "host all all {cidr} trust").expect("write pg_hba.conf");
        let reloaded = self.pg_ctl().arg("reload").output();
        assert!(!failed("pg_ctl reload", &reloaded));
    }

    pub fn is_running(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop_immediately();
    }
}
