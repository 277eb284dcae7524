//! Exact k-th smallest |x| over a whole model in bounded memory: a two-level radix select on the float bits.
//! For non-negative floats the bit pattern orders like the value, so pass 1 counts the top 16 bits, finds
//! the bucket that holds the k-th value, and pass 2 counts the low 16 bits inside that bucket. The result is
//! the value `torch.kthvalue` returns (1-based k), with 2 × 65 536 counters per task instead of a sort.
//!
//! Small selections (at most [`IN_MEMORY_VALUES`] values over all tasks: a small model, or one tensor of a
//! per-tensor trim) collect the bit patterns of every |value| in one pass and quickselect them instead.
//!
//! Large selections save the second full pass: a cheap sample (a run from the start of every chunk: 1/32 of a
//! whole model, up to a quarter of one tensor) predicts a narrow window of top-16-bit buckets around the k-th
//! value, and pass 1 counts only the values below that window and the low bits of those inside it (a full
//! top-bit histogram, a scattered increment per value, cost more than the rest of the pass). When the k-th
//! value is inside the window (the sample's margin makes that the rule) it is read off directly; otherwise
//! one pass counts the top bits and another the low bits, as above. Either way the value is exact.

use super::histogram::{Histogram, Window, window_around};
use super::window_counts::WindowCounts;
use crate::engine::{Chunk, Engine, Job, PassSpec};
use crate::error::{MergeError, Result};

/// Elements read at least from the start of every chunk for the sample.
const SAMPLE_RUN: usize = 2048;
/// Sampled values per task aimed at: fewer chunks get longer runs (up to a quarter of each), so that the
/// sample of one tensor of a per-tensor trim predicts its window as surely as 1/32 of a whole model does.
const SAMPLE_TARGET: usize = 1 << 19;
/// Sampled chunks announced ahead of the reader: a cold sample is a seek per run, and this keeps the disk busy.
const SAMPLE_PREFETCH: usize = 64;
/// Fewer chunks than this: too few runs to sample, so use the plain two passes.
const SAMPLE_MIN_JOBS: usize = 4;
/// Selections of at most this many values (over all tasks) are made in memory: 4 MiB of bit patterns.
const IN_MEMORY_VALUES: u64 = 1 << 20;
/// Most window buckets over all tasks (each, once its counts are dense, 65 536 u32 counters per thread: 256 KiB).
const WINDOW_BUDGET: u32 = 64;

/// The number of values kept by a top-`percent` trim of `d` values, as FusionBench computes it:
/// `k = d − int(d · percent / 100)` is the 1-based rank of the threshold among the values sorted ascending.
pub(crate) fn threshold_rank(d: u64, percent: f64) -> u64 {
    let fraction = percent / 100.0;
    d - (d as f64 * fraction) as u64
}

/// Exact k-th smallest |value| per task over `jobs`, where `prepare` turns each chunk's `models` buffers into
/// the values (e.g. task vectors). `k[i] == 0` means "keep everything" and yields 0. A large selection first
/// predicts the threshold's buckets from a sample.
pub(crate) fn kth_smallest_abs(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    prepare: impl Fn(&mut Chunk<'_>) -> Result<()> + Sync,
) -> Result<Vec<f32>> {
    let values: u64 = jobs.iter().map(|j| j.len as u64).sum::<u64>() * k.len() as u64;
    if values <= IN_MEMORY_VALUES {
        return kth_in_memory(engine, jobs, k, &prepare);
    }
    let windows = predict_windows(engine, jobs, k, &prepare)?;
    let init = || Counters::new(&windows, k);
    let states = count_values(
        engine,
        select_pass("trim: select"),
        jobs,
        &prepare,
        init,
        Counters::add_task,
    )?;
    Ok(finish(engine, jobs, k, Counters::merged(states, &windows, k), &prepare)?.0)
}

/// The first pass's counters of a large selection: per task with a predicted window, the values below it
/// and the low 16 bits of those inside; per task without one, the top 16 bits of every |value|.
pub(super) struct Counters {
    window: WindowCounts,
    /// Top-16-bit counts, when some task with something to select has no window.
    high: Option<Histogram>,
    /// Per task: counted in `high`.
    counted_high: Vec<bool>,
}

impl Counters {
    /// Empty counters for one window per task and the ranks `k` to select.
    pub(super) fn new(windows: &[Window], k: &[u64]) -> Self {
        let spans: Vec<(u32, u32)> = windows.iter().map(|w| (w.lo, w.width)).collect();
        let counted_high: Vec<bool> = windows.iter().zip(k).map(|(w, &kt)| w.width == 0 && kt > 0).collect();
        Counters {
            window: WindowCounts::new(&spans),
            high: counted_high.contains(&true).then(|| Histogram::new(windows.len())),
            counted_high,
        }
    }

    /// Count the values of every task of `chunk` (its `models`, already prepared).
    pub(super) fn add(&mut self, chunk: &Chunk<'_>) {
        for (t, values) in chunk.models.iter().enumerate() {
            self.add_task(t, values);
        }
    }

    /// Count `values` of task `task`.
    fn add_task(&mut self, task: usize, values: &[f32]) {
        match &mut self.high {
            Some(high) if self.counted_high[task] => high.add_high(task, values),
            _ => self.window.add(task, values),
        }
    }

    /// The sum of per-thread counters, added into the first thread's (no new counters: they are MiBs).
    pub(super) fn merged(states: Vec<Counters>, windows: &[Window], k: &[u64]) -> Counters {
        let mut states = states.into_iter();
        let first = states.next().unwrap_or_else(|| Counters::new(windows, k));
        states.fold(first, |mut acc, s| {
            acc.window.merge(s.window);
            if let (Some(a), Some(b)) = (&mut acc.high, &s.high) {
                a.merge(b);
            }
            acc
        })
    }
}

/// The exact k-th smallest |value| per task from the first pass's `counters`, and whether every one was
/// read off its window (false: more passes over `jobs` found the others).
pub(super) fn finish(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    mut counters: Counters,
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
) -> Result<(Vec<f32>, bool)> {
    let mut bits: Vec<Option<u32>> = k
        .iter()
        .enumerate()
        .map(|(t, &kt)| if kt == 0 { Some(0) } else { counters.window.kth(t, kt) })
        .collect();
    let in_windows = bits.iter().all(Option::is_some);
    if !in_windows {
        select_outside_windows(engine, jobs, k, counters, &mut bits, prepare)?;
    }
    let kth = bits.into_iter().map(|b| f32::from_bits(b.unwrap_or(0))).collect();
    Ok((kth, in_windows))
}

/// Fill in the k-th values that no window held, by the two-level select: a pass counts the top 16 bits of
/// the tasks the first pass did not count them for, and another counts the low bits inside each task's bucket.
fn select_outside_windows(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    counters: Counters,
    bits: &mut [Option<u32>],
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
) -> Result<()> {
    let tasks = k.len();
    let missing: Vec<bool> = bits.iter().map(Option::is_none).collect();
    let uncounted: Vec<bool> = missing
        .iter()
        .zip(&counters.counted_high)
        .map(|(&m, &c)| m && !c)
        .collect();
    let mut high = counters.high.unwrap_or_else(|| Histogram::new(tasks));
    if uncounted.contains(&true) {
        let states = count_values(
            engine,
            select_pass("trim: select top bits"),
            jobs,
            prepare,
            || Histogram::new(tasks),
            |state, t, values| {
                if uncounted[t] {
                    state.add_high(t, values);
                }
            },
        )?;
        for state in &states {
            high.merge(state);
        }
    }
    // A window of the one bucket that holds each missing k-th value.
    let buckets: Vec<(u32, u32)> = (0..tasks)
        .map(|t| {
            if missing[t] {
                (high.locate(t, k[t]).0, 1)
            } else {
                (0, 0)
            }
        })
        .collect();
    let states = count_values(
        engine,
        select_pass("trim: select low bits"),
        jobs,
        prepare,
        || WindowCounts::new(&buckets),
        WindowCounts::add,
    )?;
    let mut low = states.into_iter().reduce(|mut acc, s| {
        acc.merge(s);
        acc
    });
    for (t, b) in bits.iter_mut().enumerate().filter(|(t, _)| missing[*t]) {
        *b = low.as_mut().and_then(|low| low.kth(t, k[t]));
        if b.is_none() {
            return Err(MergeError::Internal("the k-th value is not in its bucket".into()));
        }
    }
    Ok(())
}

/// The exact k-th smallest |value| per task from every value's bit pattern (for non-negative floats the bits
/// order like the values): one pass collects them, a quickselect finds the k-th.
fn kth_in_memory(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
) -> Result<Vec<f32>> {
    let tasks = k.len();
    let collect = |_: &mut (), bits: &mut Vec<Vec<u32>>, mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        bits.resize_with(tasks, Vec::new);
        for (task_bits, values) in bits.iter_mut().zip(chunk.models.iter()) {
            task_bits.extend(values.iter().map(|v| v.abs().to_bits()));
        }
        Ok(())
    };
    let per_job = engine.pass(select_pass("trim: select"), jobs, || (), collect)?.0;
    Ok(k.iter()
        .enumerate()
        .map(|(t, &kt)| {
            let mut bits: Vec<u32> = per_job.iter().filter_map(|job| job.get(t)).flatten().copied().collect();
            if kt == 0 || bits.is_empty() {
                return 0.0;
            }
            let rank = (kt as usize - 1).min(bits.len() - 1);
            f32::from_bits(*bits.select_nth_unstable(rank).1)
        })
        .collect())
}

/// A pass of `spec` over `jobs` that prepares every chunk and hands each task's values to `add(state, task,
/// values)`; returns the per-thread states.
fn count_values<S: Send>(
    engine: &Engine<'_>,
    spec: PassSpec<'_>,
    jobs: &[Job],
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
    init: impl Fn() -> S + Sync,
    add: impl Fn(&mut S, usize, &[f32]) + Sync,
) -> Result<Vec<S>> {
    let kernel = |state: &mut S, _: &mut (), mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        for (t, values) in chunk.models.iter().enumerate() {
            add(state, t, values);
        }
        Ok(())
    };
    Ok(engine.pass(spec, jobs, init, kernel)?.1)
}

fn select_pass(phase: &'static str) -> PassSpec<'static> {
    PassSpec {
        phase,
        prefetch: 0,
        read_base: true,
        writer: None,
    }
}

/// Windows of buckets around each task's k-th value, predicted from a sample of the values; none (width 0)
/// when the selection is small enough to make in memory, there are too few chunks to sample, too many values
/// for u32 counters, or nothing to select.
pub(super) fn predict_windows(
    engine: &Engine<'_>,
    jobs: &[Job],
    k: &[u64],
    prepare: &(impl Fn(&mut Chunk<'_>) -> Result<()> + Sync),
) -> Result<Vec<Window>> {
    let tasks = k.len();
    let total: u64 = jobs.iter().map(|j| j.len as u64).sum();
    let small = total * tasks as u64 <= IN_MEMORY_VALUES;
    if small || jobs.len() < SAMPLE_MIN_JOBS || total >= u64::from(u32::MAX) || tasks == 0 {
        return Ok(vec![Window::NONE; tasks]);
    }
    let longest = jobs.iter().map(|j| j.len).max().unwrap_or(0);
    let run = (SAMPLE_TARGET / jobs.len()).min(longest / 4).max(SAMPLE_RUN);
    let sample: Vec<Job> = jobs
        .iter()
        .map(|j| Job {
            len: j.len.min(run),
            ..*j
        })
        .collect();
    let n: u64 = sample.iter().map(|j| j.len as u64).sum();
    let spec = PassSpec {
        prefetch: SAMPLE_PREFETCH,
        ..select_pass("trim: sample")
    };
    let states = count_values(
        engine,
        spec,
        &sample,
        prepare,
        || Histogram::new(tasks),
        Histogram::add_high,
    )?;
    let hist = merged(states, tasks);
    let cap = (WINDOW_BUDGET / tasks as u32).max(1);
    Ok(k.iter()
        .enumerate()
        .map(|(t, &kt)| {
            if kt == 0 {
                return Window::NONE;
            }
            let ks = ((kt as f64 / total as f64) * n as f64).ceil() as u64;
            window_around(&hist, t, n, ks.clamp(1, n), cap)
        })
        .collect())
}

/// The sum of per-thread histograms, added into the first (no new counters: they are MiBs).
fn merged(states: Vec<Histogram>, tasks: usize) -> Histogram {
    states
        .into_iter()
        .reduce(|mut acc, h| {
            acc.merge(&h);
            acc
        })
        .unwrap_or_else(|| Histogram::new(tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_follows_fusionbench() {
        // The golden model: 23 936 parameters, top 20 % kept → k = 23936 − int(4787.2) = 19149.
        assert_eq!(threshold_rank(23_936, 20.0), 19_149);
        assert_eq!(threshold_rank(10, 100.0), 0);
        assert_eq!(threshold_rank(10, 0.0), 10);
    }
}
