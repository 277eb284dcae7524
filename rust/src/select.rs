//! Exact k-th smallest |x| over a whole model in bounded memory: a two-level radix select on the float bits.
//! For non-negative floats the bit pattern orders like the value, so pass 1 counts the top 16 bits, finds
//! the bucket that holds the k-th value, and pass 2 counts the low 16 bits inside that bucket. The result is
//! the value `torch.kthvalue` returns (1-based k), with 2 × 65 536 counters per task instead of a sort.
//!
//! Large selections save the second full pass: a cheap sample (a short run from every chunk, 1/32 of the
//! data) predicts a narrow window of top-16-bit buckets around the k-th value, and pass 1 also counts the low
//! bits of the values that fall in that window. When the true bucket is inside the window (the sample's
//! margin makes that the rule) the result is read off directly; otherwise pass 2 runs as before. Either way
//! the value is exact.

use crate::engine::{Chunk, Engine, Job, PassSpec};
use crate::error::Result;

const BUCKETS: usize = 1 << 16;
/// Elements read from the start of every chunk for the sample.
const SAMPLE_RUN: usize = 2048;
/// Fewer chunks than this: the sample would be most of the data, so use the plain two passes.
const SAMPLE_MIN_JOBS: usize = 64;
/// Rank margin either side of the sampled rank, as a fraction of the sample.
const SAMPLE_MARGIN: f64 = 0.002;
/// Most window buckets over all tasks (each is 65 536 u32 counters per thread: 256 KiB).
const WINDOW_BUDGET: u32 = 64;

/// Counters for one pass of a radix select over `tasks` independent value sets.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    /// Empty counters for `tasks` value sets.
    pub fn new(tasks: usize) -> Self {
        Histogram {
            counts: vec![0; tasks * BUCKETS],
        }
    }

    /// Count the top 16 bits of |v| for `values` of task `task`.
    pub fn add_high(&mut self, task: usize, values: &[f32]) {
        let counts = &mut self.counts[task * BUCKETS..(task + 1) * BUCKETS];
        for v in values {
            counts[(v.abs().to_bits() >> 16) as usize] += 1;
        }
    }

    /// Count the low 16 bits of |v| for the `values` of task `task` whose top bits equal `high`. Few values
    /// match, so groups of eight are tested at once (vectorised) and only matching groups are counted.
    pub fn add_low(&mut self, task: usize, values: &[f32], high: u32) {
        let counts = &mut self.counts[task * BUCKETS..(task + 1) * BUCKETS];
        let hit = |v: &f32| v.abs().to_bits() >> 16 == high;
        let mut count = |group: &[f32]| {
            for bits in group.iter().filter(|v| hit(v)).map(|v| v.abs().to_bits()) {
                counts[(bits & 0xffff) as usize] += 1;
            }
        };
        let groups = values.chunks_exact(8);
        let tail = groups.remainder();
        for group in groups {
            if group.iter().fold(0u32, |any, v| any | u32::from(hit(v))) != 0 {
                count(group);
            }
        }
        count(tail);
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
    }

    /// For task `task`, the bucket holding the `k`-th smallest value (1-based) and its rank inside the bucket.
    pub fn locate(&self, task: usize, k: u64) -> (u32, u64) {
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

/// Low-bit counters for a window of top-16-bit buckets per task (u32: the caller keeps every task under 2³²
/// values).
#[derive(Debug, Clone)]
pub struct WindowCounts {
    /// Per task: first bucket, number of buckets, offset of its counters.
    windows: Vec<(u32, u32, usize)>,
    counts: Vec<u32>,
}

impl WindowCounts {
    /// Counters for the windows `(first bucket, buckets)`, one per task (0 buckets: none).
    pub fn new(windows: &[(u32, u32)]) -> Self {
        let mut offset = 0;
        let windows = windows
            .iter()
            .map(|&(lo, width)| {
                let w = (lo, width, offset);
                offset += width as usize * BUCKETS;
                w
            })
            .collect();
        WindowCounts {
            windows,
            counts: vec![0; offset],
        }
    }

    /// Count the low 16 bits of the `values` of task `task` whose top bits fall in its window.
    pub fn add(&mut self, task: usize, values: &[f32]) {
        let (lo, width, offset) = self.windows[task];
        if width == 0 {
            return;
        }
        let counts = &mut self.counts[offset..offset + width as usize * BUCKETS];
        let slot = |v: &f32| {
            let bits = v.abs().to_bits();
            ((bits >> 16).wrapping_sub(lo), bits & 0xffff)
        };
        let mut count = |group: &[f32]| {
            for (bucket, low) in group.iter().map(slot).filter(|&(b, _)| b < width) {
                counts[bucket as usize * BUCKETS + low as usize] += 1;
            }
        };
        let groups = values.chunks_exact(8);
        let tail = groups.remainder();
        for group in groups {
            if group.iter().fold(0u32, |any, v| any | u32::from(slot(v).0 < width)) != 0 {
                count(group);
            }
        }
        count(tail);
    }

    /// Add another set of counters for the same windows.
    pub fn merge(&mut self, other: &WindowCounts) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
    }

    /// The low bits of the `rank`-th value (1-based) of bucket `bucket` of task `task`, if the bucket is in
    /// the task's window.
    pub fn locate(&self, task: usize, bucket: u32, rank: u64) -> Option<u32> {
        let (lo, width, offset) = self.windows[task];
        let index = bucket.wrapping_sub(lo);
        if index >= width {
            return None;
        }
        let start = offset + index as usize * BUCKETS;
        let mut below = 0u64;
        for (low, &c) in self.counts[start..start + BUCKETS].iter().enumerate() {
            below += u64::from(c);
            if below >= rank {
                return Some(low as u32);
            }
        }
        None
    }
}

/// The buckets that hold ranks `k ± margin` of a sampled histogram, at most `cap` of them, centred on the
/// bucket of rank `k` when the margin spans more.
fn window_around(sample: &Histogram, task: usize, n: u64, k: u64, cap: u32) -> (u32, u32) {
    let margin = ((n as f64 * SAMPLE_MARGIN).ceil() as u64).max(1);
    let (lo, _) = sample.locate(task, k.saturating_sub(margin).max(1));
    let (hi, _) = sample.locate(task, (k + margin).min(n.max(1)));
    let (mid, _) = sample.locate(task, k.max(1));
    let width = hi - lo + 1;
    if width <= cap {
        return (lo, width);
    }
    let lo = mid.saturating_sub(cap / 2).max(lo);
    (lo, cap.min(BUCKETS as u32 - lo))
}

/// The number of values kept by a top-`percent` trim of `d` values, as FusionBench computes it:
/// `k = d − int(d · percent / 100)` is the 1-based rank of the threshold among the values sorted ascending.
pub fn threshold_rank(d: u64, percent: f64) -> u64 {
    let fraction = percent / 100.0;
    d - (d as f64 * fraction) as u64
}

/// Exact k-th smallest |value| per task over `jobs`, where `prepare` turns each chunk's `models` buffers into
/// the values (e.g. task vectors). `k[i] == 0` means "keep everything" and yields 0. With `sample`, a large
/// selection first predicts the threshold's buckets from a sample (worth it once per model, not per tensor).
pub fn kth_smallest_abs(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    sample: bool,
    prepare: impl Fn(&mut Chunk<'_>) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let tasks = k.len();
    let windows = if sample {
        predict_windows(engine, jobs, k, &prepare)?
    } else {
        vec![(0, 0); tasks]
    };
    let counts = WindowCounts::new(&windows);
    let high_pass = |state: &mut (Histogram, WindowCounts), _: &mut (), mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        for (t, values) in chunk.models.iter().enumerate() {
            state.0.add_high(t, values);
            state.1.add(t, values);
        }
        Ok(())
    };
    let states = engine
        .pass(
            select_pass("trim: select"),
            jobs,
            || (Histogram::new(tasks), counts.clone()),
            high_pass,
        )?
        .1;
    let (high, window) = merged_states(states, tasks, counts);
    let located: Vec<(u32, u64)> = k.iter().enumerate().map(|(t, &kt)| high.locate(t, kt.max(1))).collect();
    let mut low_bits: Vec<Option<u32>> = located
        .iter()
        .enumerate()
        .map(|(t, &(bucket, rank))| window.locate(t, bucket, rank))
        .collect();
    if low_bits.iter().any(Option::is_none) {
        let low_pass = |state: &mut Histogram, _: &mut (), mut chunk: Chunk<'_>| {
            prepare(&mut chunk)?;
            for (t, values) in chunk.models.iter().enumerate() {
                state.add_low(t, values, located[t].0);
            }
            Ok(())
        };
        let low = merged(
            engine
                .pass(
                    select_pass("trim: select 2/2"),
                    jobs,
                    || Histogram::new(tasks),
                    low_pass,
                )?
                .1,
            tasks,
        );
        for (t, bits) in low_bits.iter_mut().enumerate() {
            *bits = bits.or(Some(low.locate(t, located[t].1).0));
        }
    }
    Ok(k.iter()
        .zip(located.iter().zip(low_bits))
        .map(|(&kt, (&(high_bits, _), low))| {
            if kt == 0 {
                0.0
            } else {
                f32::from_bits(high_bits << 16 | low.unwrap_or(0))
            }
        })
        .collect())
}

fn select_pass(phase: &'static str) -> PassSpec<'static> {
    PassSpec {
        phase,
        read_base: true,
        writer: None,
        check_inputs: false,
    }
}

/// Windows of buckets around each task's k-th value, predicted from a sample of the values; none (width 0)
/// when there are too few chunks to sample, too many values for u32 counters, or nothing to select.
fn predict_windows(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
) -> Result<Vec<(u32, u32)>> {
    let tasks = k.len();
    let total: u64 = jobs.iter().map(|j| j.len as u64).sum();
    if jobs.len() < SAMPLE_MIN_JOBS || total >= u64::from(u32::MAX) || tasks == 0 {
        return Ok(vec![(0, 0); tasks]);
    }
    let sample: Vec<Job> = jobs
        .iter()
        .map(|j| Job {
            len: j.len.min(SAMPLE_RUN),
            ..*j
        })
        .collect();
    let n: u64 = sample.iter().map(|j| j.len as u64).sum();
    let sample_pass = |state: &mut Histogram, _: &mut (), mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        for (t, values) in chunk.models.iter().enumerate() {
            state.add_high(t, values);
        }
        Ok(())
    };
    let hist = merged(
        engine
            .pass(
                select_pass("trim: sample"),
                &sample,
                || Histogram::new(tasks),
                sample_pass,
            )?
            .1,
        tasks,
    );
    let cap = (WINDOW_BUDGET / tasks as u32).max(1);
    Ok(k.iter()
        .enumerate()
        .map(|(t, &kt)| {
            if kt == 0 {
                return (0, 0);
            }
            let ks = ((kt as f64 / total as f64) * n as f64).ceil() as u64;
            window_around(&hist, t, n, ks.clamp(1, n), cap)
        })
        .collect())
}

fn merged_states(
    states: Vec<(Histogram, WindowCounts)>,
    tasks: usize,
    empty: WindowCounts,
) -> (Histogram, WindowCounts) {
    states
        .into_iter()
        .fold((Histogram::new(tasks), empty), |(mut h, mut w), (sh, sw)| {
            h.merge(&sh);
            w.merge(&sw);
            (h, w)
        })
}

fn merged(states: Vec<Histogram>, tasks: usize) -> Histogram {
    states.iter().fold(Histogram::new(tasks), |mut acc, h| {
        acc.merge(h);
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn kth_by_radix(values: &[f32], k: u64) -> f32 {
        let mut high = Histogram::new(1);
        for part in values.chunks(7) {
            high.add_high(0, part);
        }
        let (h, rank) = high.locate(0, k);
        let mut low = Histogram::new(1);
        low.add_low(0, values, h);
        let (l, _) = low.locate(0, rank);
        f32::from_bits(h << 16 | l)
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
            let (lo, width) = window_around(&sample, 0, sampled.len() as u64, ks, 16);
            assert!((1..=16).contains(&width));
            let mut counts = WindowCounts::new(&[(lo, width)]);
            for part in values.chunks(13) {
                counts.add(0, part);
            }
            let (bucket, rank) = high.locate(0, k);
            let low = counts
                .locate(0, bucket, rank)
                .expect("the sample's window holds the k-th value");
            assert_eq!(
                f32::from_bits(bucket << 16 | low),
                sorted[k as usize - 1],
                "percent {percent}"
            );
            assert_eq!(counts.locate(0, lo.wrapping_sub(1), 1), None);
            assert_eq!(counts.locate(0, lo + width, 1), None);
        }
        let none = WindowCounts::new(&[(0, 0)]);
        assert_eq!(none.locate(0, 0, 1), None);
    }

    #[test]
    fn window_is_capped_around_the_sampled_rank() {
        let values: Vec<f32> = (1..=4096).map(|i| i as f32).collect();
        let mut sample = Histogram::new(1);
        sample.add_high(0, &values);
        let (mid, _) = sample.locate(0, 2048);
        let (lo, width) = window_around(&sample, 0, 4096, 2048, 3);
        assert_eq!(width, 3);
        assert!(lo <= mid && mid < lo + width);
    }

    #[test]
    fn rank_follows_fusionbench() {
        // The golden model: 23 936 parameters, top 20 % kept → k = 23936 − int(4787.2) = 19149.
        assert_eq!(threshold_rank(23_936, 20.0), 19_149);
        assert_eq!(threshold_rank(10, 100.0), 0);
        assert_eq!(threshold_rank(10, 0.0), 10);
    }
}
