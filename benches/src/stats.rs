//! Summaries of measurements: latency percentiles, throughput and RFC 3550 jitter.

use std::time::Duration;

/// Percentiles of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Latency {
    /// Summarise samples given in nanoseconds (sorts them in place). `None` when empty.
    pub fn from_nanos(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1_000.0;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Latency {
            count: samples.len(),
            p50_us: us(percentile(samples, 50.0)),
            p90_us: us(percentile(samples, 90.0)),
            p99_us: us(percentile(samples, 99.0)),
            max_us: us(samples[samples.len() - 1]),
            mean_us: sum as f64 / samples.len() as f64 / 1_000.0,
        })
    }
}

/// The `p`-th percentile (0 < p <= 100) of sorted, non-empty samples by the nearest-rank
/// method: the smallest sample such that at least `p`% of the samples are at most it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Throughput in Gbit/s (10^9 bits per second).
pub fn gbit_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs == 0.0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / secs / 1e9
}

/// Interarrival jitter as defined by RFC 3550 section 6.4.1: a running estimate of the mean
/// deviation of the difference in transit time between consecutive packets, smoothed by 1/16.
#[derive(Debug, Clone, Default)]
pub struct Jitter {
    estimate_ns: f64,
    last_transit_ns: Option<i64>,
}

impl Jitter {
    /// Account one packet that spent `transit_ns` between sender and receiver.
    pub fn record(&mut self, transit_ns: i64) {
        if let Some(last) = self.last_transit_ns {
            let d = (transit_ns - last).abs() as f64;
            self.estimate_ns += (d - self.estimate_ns) / 16.0;
        }
        self.last_transit_ns = Some(transit_ns);
    }

    /// The current estimate in microseconds.
    pub fn micros(&self) -> f64 {
        self.estimate_ns / 1_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), 50);
        assert_eq!(percentile(&s, 90.0), 90);
        assert_eq!(percentile(&s, 99.0), 99);
        assert_eq!(percentile(&s, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[1, 2], 50.0), 1);
        assert_eq!(percentile(&[1, 2], 51.0), 2);
    }

    #[test]
    fn latency_summary_in_micros() {
        let mut ns: Vec<u64> = (1..=1000).rev().map(|i| i * 1_000).collect();
        let l = Latency::from_nanos(&mut ns).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_us, 500.0);
        assert_eq!(l.p90_us, 900.0);
        assert_eq!(l.p99_us, 990.0);
        assert_eq!(l.max_us, 1000.0);
        assert_eq!(l.mean_us, 500.5);
        assert!(Latency::from_nanos(&mut []).is_none());
    }

    #[test]
    fn throughput() {
        assert_eq!(gbit_per_s(1_000_000_000, Duration::from_secs(8)), 1.0);
        assert_eq!(gbit_per_s(5, Duration::ZERO), 0.0);
    }

    #[test]
    fn jitter_of_constant_transit_is_zero_and_grows_with_variation() {
        let mut j = Jitter::default();
        for _ in 0..100 {
            j.record(50_000);
        }
        assert_eq!(j.micros(), 0.0);
        for i in 0..1000 {
            j.record(if i % 2 == 0 { 50_000 } else { 60_000 });
        }
        // Alternating 10 µs differences converge to 10 µs.
        assert!((j.micros() - 10.0).abs() < 0.1, "{}", j.micros());
    }
}
