//! When a failed delivery is tried again, and which answers end it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hendelse_store::push::Next;

/// The waits between attempts: attempt `n` (counting from 1) that fails is followed by the `n`th
/// wait; after the last wait's attempt the delivery is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// Altinn's ladder: 12 attempts over about 36 hours.
    fn default() -> Self {
        RetrySchedule(
            [
                10, 30, 60, 300, 600, 1800, 3600, 10_800, 21_600, 43_200, 43_200,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a retry schedule: give durations like 10s,30s,1m,5m,1h (ms, s, m or h)")]
pub struct ScheduleError(String);

impl std::str::FromStr for RetrySchedule {
    type Err = ScheduleError;

    /// `10s,30s,1m,…`; units `ms`, `s`, `m`, `h`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ScheduleError(text.to_owned());
        text.split(',')
            .map(|step| {
                let step = step.trim();
                let split = step.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
                let (number, unit) = step.split_at(split);
                let n: u64 = number.parse().map_err(|_| error())?;
                let seconds = match unit {
                    "ms" => return Ok(Duration::from_millis(n)),
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    _ => return Err(error()),
                };
                Ok(Duration::from_secs(n.saturating_mul(seconds)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RetrySchedule)
    }
}

/// Whether an answer says the endpoint is gone for good (410): its delivery is dead-lettered and
/// the subscription disabled.
pub fn is_gone(status: Option<u16>) -> bool {
    status == Some(410)
}

impl RetrySchedule {
    /// The `step`th wait (from 0), or the last for a step beyond the ladder.
    pub fn wait(&self, step: usize) -> Duration {
        self.0
            .get(step)
            .or(self.0.last())
            .copied()
            .unwrap_or_default()
    }

    /// The longest wait of the ladder.
    pub fn longest(&self) -> Duration {
        self.0.iter().max().copied().unwrap_or_default()
    }

    /// Attempts in all: one more than there are waits.
    pub fn attempts(&self) -> usize {
        self.0.len() + 1
    }

    /// What follows attempt number `attempt` (from 1) that got `status` (`None`: no answer) and,
    /// on 429, `retry_after`. `jitter` in `0.0..1.0` stretches a wait by up to 10%.
    pub fn verdict(
        &self,
        attempt: usize,
        status: Option<u16>,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Next {
        match status {
            Some(200..=299) => return Next::Delivered,
            // The receiver says the request itself is wrong, or it is gone: retrying cannot help.
            Some(400 | 401 | 403 | 410 | 413) => return Next::Dead,
            _ => {}
        }
        let Some(wait) = attempt.checked_sub(1).and_then(|i| self.0.get(i)) else {
            return Next::Dead;
        };
        let mut wait = wait.mul_f64(1.0 + 0.1 * jitter.clamp(0.0, 1.0));
        if status == Some(429)
            && let Some(asked) = retry_after
        {
            // Honour the receiver's wish, within the longest wait we would ever make.
            let longest = self.0.iter().max().copied().unwrap_or_default();
            wait = wait.max(asked.min(longest.max(wait)));
        }
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        Next::RetryAt(
            now.checked_add_signed(wait)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let s: RetrySchedule = "100ms, 2s,1m,1h".parse().expect("valid");
        assert_eq!(
            s.0,
            [
                Duration::from_millis(100),
                Duration::from_secs(2),
                Duration::from_secs(60),
                Duration::from_secs(3600)
            ]
        );
        assert_eq!(s.attempts(), 5);
        for bad in ["", "10", "1d", "x", "1s,,2s", "-1s"] {
            assert!(bad.parse::<RetrySchedule>().is_err(), "{bad}");
        }
        assert_eq!(RetrySchedule::default().attempts(), 12);
    }

    #[test]
    fn verdicts() {
        let s: RetrySchedule = "10s,1m".parse().expect("valid");
        let now = Utc::now();
        let at = |secs| Next::RetryAt(now + chrono::Duration::seconds(secs));
        assert_eq!(s.verdict(1, Some(204), None, now, 0.0), Next::Delivered);
        assert_eq!(s.verdict(1, Some(500), None, now, 0.0), at(10));
        assert_eq!(s.verdict(1, None, None, now, 1.0), at(11));
        assert_eq!(s.verdict(2, Some(503), None, now, 0.0), at(60));
        assert_eq!(s.verdict(3, Some(500), None, now, 0.0), Next::Dead);
        for status in [400, 401, 403, 410, 413] {
            assert_eq!(s.verdict(1, Some(status), None, now, 0.0), Next::Dead);
        }
        assert!(is_gone(Some(410)) && !is_gone(Some(404)) && !is_gone(None));
        let later = Some(Duration::from_secs(30));
        assert_eq!(s.verdict(1, Some(429), later, now, 0.0), at(30));
        let too_late = Some(Duration::from_secs(86_400));
        assert_eq!(
            s.verdict(1, Some(429), too_late, now, 0.0),
            at(60),
            "capped"
        );
    }
}
