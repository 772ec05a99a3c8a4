//! Per-plugin call counters and a latency histogram, lock-free so that
//! recording costs a few relaxed atomic adds on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Histogram buckets: bucket `i` counts calls of `[2^i, 2^(i+1))` µs, the
/// last one everything longer. 2^24 µs is 16 s, past any plugin deadline.
const BUCKETS: usize = 25;

/// How a call ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The plugin answered within the contract.
    Ok,
    /// The plugin refused the request as not its vendor's (decode error).
    Rejected,
    /// Trap, deadline, memory cap, contract breach or no pool slot.
    Fault,
}

/// Counters of one loaded plugin version (a new version starts at zero).
#[derive(Debug, Default)]
pub struct CallStats {
    calls: AtomicU64,
    faults: AtomicU64,
    rejections: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// A copy of the counters, as `GET /v1/plugins` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// `decode` and `encode` calls.
    pub calls: u64,
    /// Calls that ended in a fault (each blocked its action).
    pub faults: u64,
    /// Calls whose request the plugin refused as malformed or unsupported.
    pub rejections: u64,
    /// Latency of a call (instantiation included), in microseconds.
    pub latency_us: Latency,
}

/// Latency summary. Percentiles are the upper bound of their power-of-two
/// histogram bucket, so they overstate by less than 2x.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: u64,
    /// Median (bucket bound).
    pub p50: u64,
    /// 99th percentile (bucket bound).
    pub p99: u64,
    /// Slowest call.
    pub max: u64,
}

impl CallStats {
    /// Count one call.
    pub fn record(&self, elapsed: Duration, outcome: Outcome) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {}
            Outcome::Rejected => {
                self.rejections.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Fault => {
                self.faults.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        let bucket = usize::try_from(u64::BITS - us.leading_zeros()).unwrap_or(BUCKETS).saturating_sub(1);
        if let Some(b) = self.buckets.get(bucket.min(BUCKETS - 1)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Read the counters. Concurrent calls may be half counted; the numbers
    /// are for monitoring, not accounting.
    pub fn snapshot(&self) -> StatsSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let seen: u64 = counts.iter().sum();
        let percentile = |p: u64| -> u64 {
            if seen == 0 {
                return 0;
            }
            let rank = (seen * p).div_ceil(100);
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= rank {
                    return 1u64 << (i + 1).min(63);
                }
            }
            self.max_us.load(Ordering::Relaxed)
        };
        StatsSnapshot {
            calls,
            faults: self.faults.load(Ordering::Relaxed),
            rejections: self.rejections.load(Ordering::Relaxed),
            latency_us: Latency {
                mean: self.total_us.load(Ordering::Relaxed).checked_div(calls).unwrap_or(0),
                p50: percentile(50),
                p99: percentile(99),
                max: self.max_us.load(Ordering::Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // Counts, faults and percentiles follow what was recorded.
    fn counts_and_percentiles() {
        let stats = CallStats::default();
        for _ in 0..98 {
            stats.record(Duration::from_micros(300), Outcome::Ok);
        }
        stats.record(Duration::from_micros(5000), Outcome::Fault);
        stats.record(Duration::from_micros(0), Outcome::Rejected);
        let s = stats.snapshot();
        assert_eq!((s.calls, s.faults, s.rejections), (100, 1, 1));
        // 300 µs is in [256, 512).
        assert_eq!(s.latency_us.p50, 512);
        assert_eq!(s.latency_us.p99, 512);
        assert_eq!(s.latency_us.max, 5000);
        assert_eq!(s.latency_us.mean, (98 * 300 + 5000) / 100);
    }

    #[test]
    // No calls gives zeros, not a division by zero.
    fn empty_is_zero() {
        let s = CallStats::default().snapshot();
        assert_eq!(s.calls, 0);
        assert_eq!(s.latency_us, Latency { mean: 0, p50: 0, p99: 0, max: 0 });
    }
}
