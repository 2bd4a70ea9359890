//! Percentiles of latency samples (exact: the samples are sorted, at most a few million of them).

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles of latencies given in microseconds.
pub fn percentiles(mut samples_us: Vec<u32>) -> Percentiles {
    samples_us.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples_us.is_empty() {
            return 0.0;
        }
        let rank = ((q * samples_us.len() as f64).ceil() as usize).clamp(1, samples_us.len());
        round3(f64::from(samples_us[rank - 1]) / 1000.0)
    };
    Percentiles {
        samples: samples_us.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p99_9_ms: at(0.999),
        max_ms: at(1.0),
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let p = percentiles((1..=1000).rev().map(|ms| ms * 1000).collect());
        assert_eq!(p.samples, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p99_9_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
        let one = percentiles(vec![1500]);
        assert_eq!((one.p50_ms, one.p99_9_ms), (1.5, 1.5));
        assert_eq!(percentiles(Vec::new()).p99_ms, 0.0);
    }
}
