//! Counters of a two-level radix select on float bits. For non-negative floats the bit pattern orders like
//! the value, so a [`Histogram`] of the top 16 bits finds the bucket that holds the k-th value and one of the
//! low 16 bits inside that bucket finds the value itself. A sample's histogram predicts a [`Window`] of a few
//! buckets that holds it, which [`super::window_counts::WindowCounts`] counts in a single pass.

/// Buckets of 16 bits.
pub(super) const BUCKETS: usize = 1 << 16;
/// Rank margin either side of a sampled rank, as a fraction of the sample.
const SAMPLE_MARGIN: f64 = 0.002;
/// Rank margin either side of a sampled rank, at least, in standard deviations of that rank.
const SAMPLE_SIGMAS: f64 = 6.0;

/// Counters for one pass of a radix select over `tasks` independent value sets.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    /// Empty counters for `tasks` value sets.
    pub(crate) fn new(tasks: usize) -> Self {
        Histogram {
            counts: vec![0; tasks * BUCKETS],
        }
    }

    /// Count the top 16 bits of |v| for `values` of task `task`.
    pub(crate) fn add_high(&mut self, task: usize, values: &[f32]) {
        let counts = &mut self.counts[task * BUCKETS..(task + 1) * BUCKETS];
        for v in values {
            counts[(v.abs().to_bits() >> 16) as usize] += 1;
        }
    }

    /// Add another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
    }

    /// For task `task`, the bucket holding the `k`-th smallest value (1-based) and its rank inside the bucket.
    pub(crate) fn locate(&self, task: usize, k: u64) -> (u32, u64) {
        let counts = &self.counts[task * BUCKETS..(task + 1) * BUCKETS];
        let mut below = 0u64;
        for (bucket, &c) in counts.iter().enumerate() {
            if below + c >= k {
                return (bucket as u32, k - below);
            }
            below += c;
        }
        (BUCKETS as u32 - 1, 1)
    }
}

/// A span of top-16-bit buckets predicted to hold a task's k-th value, and a guess of the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    /// First bucket.
    pub(crate) lo: u32,
    /// Number of buckets (0: no window).
    pub(crate) width: u32,
    /// The sample's k-th value, interpolated inside its bucket (a value inside the window).
    pub(crate) estimate: f32,
}

impl Window {
    /// No window.
    pub(crate) const NONE: Window = Window {
        lo: 0,
        width: 0,
        estimate: 0.0,
    };

    /// Bit patterns `[lo, hi)` of the |values| inside the window.
    pub(crate) fn bits(&self) -> (u32, u32) {
        (self.lo << 16, (self.lo + self.width) << 16)
    }
}

/// The buckets that hold ranks `k ± margin` of a sampled histogram, at most `cap` of them, centred on the
/// bucket of rank `k` when the margin spans more.
pub(super) fn window_around(sample: &Histogram, task: usize, n: u64, k: u64, cap: u32) -> Window {
    // The sample's k-th rank varies by √(n·q(1−q)): the margin covers six of those, and at least a fixed
    // share of the sample.
    let q = k as f64 / n.max(1) as f64;
    let spread = SAMPLE_SIGMAS * (n as f64 * q * (1.0 - q)).sqrt();
    let margin = ((n as f64 * SAMPLE_MARGIN).max(spread).ceil() as u64).max(1);
    let (lo, _) = sample.locate(task, k.saturating_sub(margin).max(1));
    let (hi, _) = sample.locate(task, (k + margin).min(n.max(1)));
    let (mid, rank) = sample.locate(task, k.max(1));
    let (lo, width) = if hi - lo < cap {
        (lo, hi - lo + 1)
    } else {
        let lo = mid.saturating_sub(cap / 2).max(lo);
        (lo, cap.min(BUCKETS as u32 - lo))
    };
    // Values spread evenly inside a bucket, to a first approximation.
    let count = sample.counts[task * BUCKETS + mid as usize].max(1);
    let low = ((rank as f64 - 0.5) / count as f64 * BUCKETS as f64).clamp(0.0, (BUCKETS - 1) as f64) as u32;
    let (first, end) = (lo << 16, (lo + width) << 16);
    Window {
        lo,
        width,
        estimate: f32::from_bits((mid << 16 | low).clamp(first, end - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::ties::select::threshold_rank;
    use crate::methods::ties::window_counts::WindowCounts;
    use crate::rng;

    fn kth_by_radix(values: &[f32], k: u64) -> f32 {
        let mut high = Histogram::new(1);
        for part in values.chunks(7) {
            high.add_high(0, part);
        }
        let mut low = WindowCounts::new(&[(high.locate(0, k).0, 1)]);
        low.add(0, values);
        f32::from_bits(
            low.kth(0, k)
                .unwrap_or_else(|| panic!("the k-th value is in its bucket")),
        )
    }

    #[test]
    fn matches_a_sort_on_random_and_tied_values() {
        for seed in 0..20u64 {
            let s = rng::stream(seed, "select", 0);
            let n = 1 + (seed as usize * 997) % 5000;
            let values: Vec<f32> = (0..n as u64)
                .map(|i| {
                    let u = rng::uniform(s, i) as f32 - 0.5;
                    // Every third seed: a coarse grid, so many values tie.
                    if seed % 3 == 0 {
                        (u * 16.0).round() / 1024.0
                    } else {
                        u * 10f32.powi((i % 7) as i32 - 3)
                    }
                })
                .collect();
            let mut sorted: Vec<f32> = values.iter().map(|v| v.abs()).collect();
            sorted.sort_by(f32::total_cmp);
            for percent in [0.0, 1.0, 20.0, 50.0, 99.0] {
                let k = threshold_rank(n as u64, percent).max(1);
                assert_eq!(
                    kth_by_radix(&values, k),
                    sorted[k as usize - 1],
                    "seed {seed} percent {percent}"
                );
            }
        }
    }

    #[test]
    fn window_counts_give_the_exact_value_inside_the_window_and_nothing_outside() {
        let s = rng::stream(7, "window", 0);
        let values: Vec<f32> = (0..320_000u64).map(|i| rng::uniform(s, i) as f32 - 0.5).collect();
        let mut sorted: Vec<f32> = values.iter().map(|v| v.abs()).collect();
        sorted.sort_by(f32::total_cmp);
        let mut high = Histogram::new(1);
        high.add_high(0, &values);
        // A sample: every 16th value, as the engine samples runs of chunks.
        let sampled: Vec<f32> = values.iter().step_by(16).copied().collect();
        let mut sample = Histogram::new(1);
        sample.add_high(0, &sampled);
        for percent in [1.0, 20.0, 50.0, 90.0] {
            let k = threshold_rank(values.len() as u64, percent);
            let ks = (k as f64 / 16.0).ceil() as u64;
            let w = window_around(&sample, 0, sampled.len() as u64, ks, 16);
            let (lo, width) = (w.lo, w.width);
            let (first, end) = w.bits();
            assert!((first..end).contains(&w.estimate.to_bits()));
            assert!((1..=16).contains(&width));
            let mut counts = WindowCounts::new(&[(lo, width)]);
            // Parts shorter than a group of 32 and longer.
            for part in values.chunks(if percent < 30.0 { 13 } else { 3001 }) {
                counts.add(0, part);
            }
            let kth = counts.kth(0, k).expect("the sample's window holds the k-th value");
            assert_eq!(f32::from_bits(kth), sorted[k as usize - 1], "percent {percent}");
            assert_eq!(high.locate(0, k).0, kth >> 16);
            // The smallest and largest values lie outside the window.
            assert_eq!(counts.kth(0, 1), None);
            assert_eq!(counts.kth(0, values.len() as u64), None);
        }
        let mut none = WindowCounts::new(&[(0, 0)]);
        none.add(0, &values);
        assert_eq!(none.kth(0, 1), None);
    }

    #[test]
    fn window_is_capped_around_the_sampled_rank() {
        let values: Vec<f32> = (1..=4096).map(|i| i as f32).collect();
        let mut sample = Histogram::new(1);
        sample.add_high(0, &values);
        let (mid, _) = sample.locate(0, 2048);
        let w = window_around(&sample, 0, 4096, 2048, 3);
        assert_eq!(w.width, 3);
        assert!(w.lo <= mid && mid < w.lo + w.width);
        // The 2048th of 1..=4096 is 2048; the estimate interpolates inside its bucket.
        assert!((w.estimate - 2048.0).abs() <= 8.0, "{}", w.estimate);
    }
}
