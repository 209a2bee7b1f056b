//! A latency histogram over fixed buckets: one relaxed atomic add per
//! bucket hit, the sum kept in nanoseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`+Inf` is implicit).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for comparing without floats.
const BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; the last is `+Inf`).
    buckets: [AtomicU64; 15],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
    /// Number of observations.
    count: AtomicU64,
}

/// A histogram read at one moment, cumulative as Prometheus wants it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Cumulative counts per bucket of [`BUCKETS`], then `+Inf`.
    pub cumulative: [u64; 15],
    /// Sum in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.observe_ns(ns);
    }

    /// Records one duration given in nanoseconds.
    pub fn observe_ns(&self, ns: u64) {
        let i = BOUNDS_NS.iter().position(|b| ns <= *b).unwrap_or(14);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The histogram now; the `+Inf` bucket is made equal to the count so
    /// the exposition stays consistent under concurrent updates.
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = [0u64; 15];
        let mut running = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            running += b.load(Ordering::Relaxed);
            *c = running;
        }
        let count = running;
        Snapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 1); // <= 0.5 ms
        assert_eq!(s.cumulative[1], 2); // <= 1 ms
        assert_eq!(s.cumulative[5], 2); // <= 25 ms
        assert_eq!(s.cumulative[6], 3); // <= 50 ms
        assert_eq!(s.cumulative[13], 3); // <= 10 s
        assert_eq!(s.cumulative[14], 4); // +Inf
        assert!((s.sum_seconds - 60.0311).abs() < 1e-6, "{}", s.sum_seconds);
        assert_eq!(BUCKETS.len(), BOUNDS_NS.len());
        for (b, ns) in BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((b * 1e9).round() as u64, ns);
        }
    }
}
