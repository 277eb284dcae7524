//! Exact k-th smallest |x| over a whole model in bounded memory: a two-level radix select on the float bits.
//! For non-negative floats the bit pattern orders like the value, so pass 1 counts the top 16 bits, finds
//! the bucket that holds the k-th value, and pass 2 counts the low 16 bits inside that bucket. The result is
//! the value `torch.kthvalue` returns (1-based k), with 2 × 65 536 counters per task instead of a sort.

use crate::engine::{Chunk, Engine, Job, PassSpec};
use crate::error::Result;

const BUCKETS: usize = 1 << 16;

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

/// The number of values kept by a top-`percent` trim of `d` values, as FusionBench computes it:
/// `k = d − int(d · percent / 100)` is the 1-based rank of the threshold among the values sorted ascending.
pub fn threshold_rank(d: u64, percent: f64) -> u64 {
    let fraction = percent / 100.0;
    d - (d as f64 * fraction) as u64
}

/// Exact k-th smallest |value| per task over `jobs`, where `prepare` turns each chunk's `models` buffers into
/// the values (e.g. task vectors). `k[i] == 0` means "keep everything" and yields 0.
pub fn kth_smallest_abs(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    prepare: impl Fn(&mut Chunk<'_>) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let tasks = k.len();
    let spec = |phase| PassSpec {
        phase,
        read_base: true,
        writer: None,
        check_inputs: false,
    };
    let high_pass = |state: &mut Histogram, _: &mut (), mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        for (t, values) in chunk.models.iter().enumerate() {
            state.add_high(t, values);
        }
        Ok(())
    };
    let high = merged(
        engine
            .pass(spec("trim: select 1/2"), jobs, || Histogram::new(tasks), high_pass)?
            .1,
        tasks,
    );
    let located: Vec<(u32, u64)> = k.iter().enumerate().map(|(t, &kt)| high.locate(t, kt.max(1))).collect();
    let low_pass = |state: &mut Histogram, _: &mut (), mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        for (t, values) in chunk.models.iter().enumerate() {
            state.add_low(t, values, located[t].0);
        }
        Ok(())
    };
    let low = merged(
        engine
            .pass(spec("trim: select 2/2"), jobs, || Histogram::new(tasks), low_pass)?
            .1,
        tasks,
    );
    Ok(k.iter()
        .enumerate()
        .map(|(t, &kt)| {
            if kt == 0 {
                return 0.0;
            }
            let (high_bits, rank) = located[t];
            let (low_bits, _) = low.locate(t, rank);
            f32::from_bits(high_bits << 16 | low_bits)
        })
        .collect())
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
    fn rank_follows_fusionbench() {
        // The golden model: 23 936 parameters, top 20 % kept → k = 23936 − int(4787.2) = 19149.
        assert_eq!(threshold_rank(23_936, 20.0), 19_149);
        assert_eq!(threshold_rank(10, 100.0), 0);
        assert_eq!(threshold_rank(10, 0.0), 10);
    }
}
