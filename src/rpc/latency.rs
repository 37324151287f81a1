//! Recent latency of a provider as percentiles over a sliding window, not an average of everything
//! ever: two HDR histograms, the current one and the one before, rotated every window, so a
//! percentile always covers between one and two windows of the latest samples, in fixed memory.
//! The percentiles are kept until a sample or a rotation changes them: an agent following many
//! chains asks every provider's percentiles several times a second, and most providers answer a
//! call every few seconds.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Length of one histogram's window.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Highest latency recorded exactly (longer ones are clamped), in microseconds.
const MAX_MICROS: u64 = 120_000_000;

/// p50 / p95 / p99 of recent latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// A sliding window of latency samples.
#[derive(Debug)]
pub struct LatencyWindow {
    current: Histogram<u32>,
    previous: Histogram<u32>,
    started: Instant,
    window: Duration,
    /// The percentiles of the samples as they are, until a sample or a rotation changes them.
    percentiles: Option<Option<Percentiles>>,
    /// The last quantile asked for and its value, likewise.
    quantile: Option<(f64, Option<Duration>)>,
}

fn histogram() -> Histogram<u32> {
    // Two significant digits: 1 % precision over 1 µs … 120 s, in about 11 kB (32-bit counts: a
    // provider answers far fewer than 4 billion calls in a window; counts saturate, not wrap).
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("valid histogram bounds")
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new(LATENCY_WINDOW, Instant::now())
    }
}

impl LatencyWindow {
    /// An empty window of `window`, starting `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            current: histogram(),
            previous: histogram(),
            started: now,
            window,
            percentiles: None,
            quantile: None,
        }
    }

    /// Forgets the computed percentiles: the samples changed.
    fn changed(&mut self) {
        self.percentiles = None;
        self.quantile = None;
    }

    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.window {
            return;
        }
        self.changed();
        if elapsed >= self.window * 2 {
            // Nothing recent at all: both halves are stale.
            self.previous.reset();
        } else {
            std::mem::swap(&mut self.previous, &mut self.current);
        }
        self.current.reset();
        self.started = now;
    }

    /// Records one sample taken at `now`.
    pub fn record(&mut self, latency: Duration, now: Instant) {
        self.rotate(now);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_MICROS);
        let _ = self.current.record(micros);
        self.changed();
    }

    /// Both windows' samples in one histogram; `None` without any.
    fn merged(&self) -> Option<Histogram<u32>> {
        let mut all = self.current.clone();
        all.add(&self.previous).ok()?;
        (!all.is_empty()).then_some(all)
    }

    /// The `q` quantile (0–1) of the recent samples as of `now`; `None` without any.
    pub fn quantile(&mut self, q: f64, now: Instant) -> Option<Duration> {
        self.rotate(now);
        if let Some((cq, d)) = self.quantile {
            if cq == q {
                return d;
            }
        }
        let d = self
            .merged()
            .map(|all| Duration::from_micros(all.value_at_quantile(q)));
        self.quantile = Some((q, d));
        d
    }

    /// Percentiles over the recent samples as of `now`; `None` without any.
    pub fn percentiles(&mut self, now: Instant) -> Option<Percentiles> {
        self.rotate(now);
        if let Some(p) = self.percentiles {
            return p;
        }
        let p = self.merged().map(|all| {
            let at = |q: f64| Duration::from_micros(all.value_at_quantile(q));
            Percentiles {
                p50: at(0.50),
                p95: at(0.95),
                p99: at(0.99),
            }
        });
        self.percentiles = Some(p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_recent_samples_only() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10), t0);
        assert_eq!(w.percentiles(t0), None, "no sample is no latency");
        for i in 0..100u64 {
            w.record(Duration::from_millis(10 + i % 10), t0);
        }
        w.record(Duration::from_millis(900), t0);
        let p = w.percentiles(t0).unwrap();
        assert!(
            p.p50 >= Duration::from_millis(14) && p.p50 <= Duration::from_millis(16),
            "{p:?}"
        );
        assert!(
            p.p99 < Duration::from_millis(21),
            "one outlier in 101 is above p99: {p:?}"
        );
        assert!(p.p99 >= Duration::from_millis(19), "{p:?}");

        // A slow spell in the next window dominates once the old samples age out.
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..100 {
            w.record(Duration::from_millis(500), t1);
        }
        let p = w.percentiles(t1).unwrap();
        assert!(
            p.p95 >= Duration::from_millis(495),
            "both windows count: {p:?}"
        );
        let t2 = t1 + Duration::from_secs(11);
        let p = w.percentiles(t2).unwrap();
        assert!(
            p.p50 >= Duration::from_millis(495),
            "the fast window has aged out: {p:?}"
        );
        assert_eq!(
            w.percentiles(t2 + Duration::from_secs(25)),
            None,
            "everything is stale"
        );
    }

    #[test]
    fn kept_percentiles_follow_new_samples_and_rotations() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10), t0);
        w.record(Duration::from_millis(10), t0);
        assert_eq!(
            w.percentiles(t0).unwrap().p99,
            w.percentiles(t0).unwrap().p99
        );
        assert!(w.quantile(0.9, t0).unwrap() < Duration::from_millis(11));
        w.record(Duration::from_millis(500), t0);
        w.record(Duration::from_millis(500), t0);
        assert!(
            w.percentiles(t0).unwrap().p50 >= Duration::from_millis(495),
            "a new sample counts"
        );
        assert!(w.quantile(0.9, t0).unwrap() >= Duration::from_millis(495));
        assert!(
            w.quantile(0.1, t0).unwrap() < Duration::from_millis(11),
            "another quantile"
        );
        let late = t0 + Duration::from_secs(25);
        assert_eq!(w.percentiles(late), None, "a rotation counts");
        assert_eq!(w.quantile(0.1, late), None);
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10), t0);
        w.record(Duration::from_secs(3600), t0);
        w.record(Duration::ZERO, t0);
        let p = w.percentiles(t0).unwrap();
        assert!(p.p99 >= Duration::from_secs(118));
    }
}
