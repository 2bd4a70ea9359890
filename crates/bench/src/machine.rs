//! How busy the machine is: the benchmark shares its cores with whatever else runs.

use std::time::{Duration, Instant};

/// (busy, total) jiffies of all CPUs from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Percentage of all CPUs busy over the next `window`.
pub fn busy_pct(window: Duration) -> f64 {
    let Some((b0, t0)) = cpu_times() else {
        return 0.0;
    };
    std::thread::sleep(window);
    let Some((b1, t1)) = cpu_times() else {
        return 0.0;
    };
    let total = t1.saturating_sub(t0).max(1);
    crate::stats::round1(100.0 * b1.saturating_sub(b0) as f64 / total as f64)
}

/// Waits up to `max_seconds` for a second in which the CPUs are less than 10 % busy; returns the
/// busy share of the last second measured.
pub fn wait_idle(max_seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let mut waited = false;
    loop {
        let busy = busy_pct(Duration::from_secs(1));
        if busy < 10.0 || Instant::now() >= deadline {
            if waited {
                eprintln!("the machine is {busy:.0} % busy; starting");
            }
            return busy;
        }
        if !waited {
            eprintln!(
                "the machine is {busy:.0} % busy; waiting up to {max_seconds} s for it to calm down"
            );
            waited = true;
        }
    }
}

/// CPU time (user + system, all threads) of a process, in the same ticks as `/proc/stat`.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Who used the CPUs while a scenario ran, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct CpuUse {
    /// The server under test (absent when it was not started by this run).
    pub server_cores: Option<f64>,
    /// This process: the load generator (and the push receiver).
    pub bench_cores: f64,
    /// Everything else on the machine.
    pub other_cores: f64,
}

pub struct CpuProbe {
    busy: u64,
    total: u64,
    me: u64,
    server: Option<(u32, u64)>,
}

impl CpuProbe {
    pub fn start(server_pid: Option<u32>) -> Option<CpuProbe> {
        let (busy, total) = cpu_times()?;
        Some(CpuProbe {
            busy,
            total,
            me: process_ticks(std::process::id())?,
            server: server_pid.and_then(|pid| Some((pid, process_ticks(pid)?))),
        })
    }

    pub fn finish(&self) -> Option<CpuUse> {
        let (busy, total) = cpu_times()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // Ticks of one CPU over the interval.
        let span = (total.saturating_sub(self.total) as f64 / cpus).max(1.0);
        let me = process_ticks(std::process::id())?.saturating_sub(self.me);
        let server = self
            .server
            .and_then(|(pid, before)| Some(process_ticks(pid)?.saturating_sub(before)));
        let all = busy.saturating_sub(self.busy);
        let other = all.saturating_sub(me + server.unwrap_or(0));
        let cores = |ticks: u64| crate::stats::round3(ticks as f64 / span);
        Some(CpuUse {
            server_cores: server.map(cores),
            bench_cores: cores(me),
            other_cores: cores(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu() {
        let probe = CpuProbe::start(Some(std::process::id())).expect("/proc is readable");
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = probe.finish().expect("/proc is readable");
        assert!(used.bench_cores > 0.0, "{used:?}");
        // The "server" is this process too, read a moment after: other test threads may have run
        // in between, so it can only have used as much or more.
        let server = used.server_cores.expect("the server's ticks");
        assert!(server >= used.bench_cores, "{used:?}");
    }
}
