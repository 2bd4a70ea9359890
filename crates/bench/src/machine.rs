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
