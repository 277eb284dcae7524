//! Global TIES in one read of the inputs. The selection pass and the merge pass were two full reads; here one
//! pass counts the selection's bits and writes the merge at once, with thresholds not yet known exactly.
//!
//! A sample (1/32 of the data) predicts, per task, a window of buckets that holds its k-th |τ| and a guess of
//! the value inside it. Whatever the exact threshold inside the window, an entry above the window is kept and
//! one below it is trimmed. Only elements with some entry inside a window are unsettled (about 5 % of them):
//! they are merged with the guessed thresholds, and θ₀ with their entries that are not certainly trimmed go
//! to a scratch file. Once the pass has located every k-th value inside its window, each unsettled element is
//! merged again with the exact thresholds, and those whose value changed (a small fraction) are patched, like
//! the elements that wait for the majority sign. If a k-th value fell outside its window, the selection
//! finishes with two more passes and the merge runs again: exact either way.
//!
//! It pays only where memory is scarce. Measured on 8 × ViT-L/14 fp32 (10.9 GB, 2 cores, inputs evicted,
//! benches/small_machine.py's cgroups, two runs each side by side; the scratch file then held whole columns):
//! in 256 MB, 15.8 s against 24.0 s for the two passes; in 1 GB, 20.4 s against 16.5 s; with a warm cache,
//! 7.3 s against 4.8 s. The one pass's extra work (the scratch file and merging its elements again) costs more
//! than a second read that the cache or a roomier limit makes cheap. So it runs when memory is under 1/32 of
//! the inputs, a switch set between the two measured limits.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::aggregate::element_outcome;
use super::histogram::Window;
use super::merge::{Pass, Patches, merge_groups, merge_prepared, output_type, record};
use super::select::{Counters, finish, predict_windows};
use crate::engine::{Chunk, Engine, PassSpec};
use crate::error::{MergeError, Result};
use crate::writer::Writer;

#[cfg(test)]
thread_local! {
    /// A test sets this on its own thread to take the one pass whatever the memory (a merge decides on the
    /// thread that calls it, so tests running beside it keep the two passes).
    pub(super) static ALWAYS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether to select and merge in one pass (see the module's text).
pub(super) fn pays(engine: &Engine<'_>) -> bool {
    #[cfg(test)]
    if ALWAYS.with(std::cell::Cell::get) {
        return true;
    }
    engine.memory_is_scarce()
}

/// The thresholds, Σ sign(elected) and the patches of a merged group; `None` when the selection cannot be
/// predicted (a small model, or too few chunks to sample), so the two-pass merge should run.
pub(super) type Merged = Option<(Vec<f32>, i64, Vec<Patches>)>;

/// The scratch file of unsettled elements, appended to by every worker.
struct Spill {
    file: File,
    len: AtomicU64,
}

impl Spill {
    /// Append `bytes`; returns their offset.
    fn append(&self, bytes: &[u8]) -> std::io::Result<u64> {
        let at = self.len.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.file.write_all_at(bytes, at)?;
        Ok(at)
    }
}

/// Where one block's unsettled elements are: byte offset and length, the block's tensor and first element.
#[derive(Clone, Copy)]
struct Segment {
    offset: u64,
    len: usize,
    tensor: usize,
    first: usize,
}

/// One job's share of the pass.
#[derive(Default)]
struct JobResult {
    sign_sum: i64,
    patches: Patches,
    segments: Vec<Segment>,
}

/// One worker's state.
struct Worker {
    counters: Counters,
    unsettled: Vec<bool>,
    bytes: Vec<u8>,
}

impl Worker {
    /// Fresh counters (allocated, not copied: pages no value reaches are never touched).
    fn new(windows: &[Window], k: &[u64]) -> Self {
        Worker {
            counters: Counters::new(windows, k),
            unsettled: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

/// Select and merge the merged tensors `group` in one pass (see the module's text).
pub(super) fn merge(
    pass: &Pass<'_>,
    engine: &Engine<'_>,
    writer: &Writer,
    group: &[usize],
    k: &[u64],
) -> Result<Merged> {
    let options = pass.options;
    let prepare = |c: &mut Chunk<'_>| options.prepare(c);
    let jobs = engine.jobs(group.iter().copied());
    let windows = predict_windows(engine, &jobs, k, &prepare)?;
    if k.iter().zip(&windows).any(|(&kt, w)| kt > 0 && w.width == 0) {
        return Ok(None);
    }
    let spill = Spill {
        file: writer.scratch_file()?,
        len: AtomicU64::new(0),
    };
    let guesses: Vec<f32> = windows.iter().map(|w| w.estimate).collect();
    let spans: Vec<(u32, u32)> = windows.iter().map(|w| w.bits()).collect();
    let spec = PassSpec {
        phase: "trim + merge",
        prefetch: 0,
        read_base: true,
        writer: Some(writer),
    };
    let kernel = |w: &mut Worker, result: &mut JobResult, mut chunk: Chunk<'_>| {
        prepare(&mut chunk)?;
        w.counters.add(&chunk);
        mark_unsettled(&chunk, &spans, &mut w.unsettled);
        if let Some(segment) = save_unsettled(&chunk, w, &spans, &spill, writer)? {
            result.segments.push(segment);
        }
        result.sign_sum += merge_prepared(pass, &mut chunk, &guesses, Some(&w.unsettled), &mut result.patches)?;
        Ok(())
    };
    let (results, states) = engine.pass(spec, &jobs, || Worker::new(&windows, k), kernel)?;
    let counters = Counters::merged(states.into_iter().map(|w| w.counters).collect(), &windows, k);
    let (kth, in_windows) = finish(engine, &jobs, k, counters, &prepare)?;
    if !in_windows {
        // Entries outside a window were classified against a wrong bucket: merge again with the exact values.
        pass.reset();
        engine.restart_counts();
        let (sign_sum, patches) = merge_groups(pass, engine, writer, &[group.to_vec()], std::slice::from_ref(&kth))?;
        return Ok(Some((kth, sign_sum, patches)));
    }
    let (sign_sum, patches) = settle(engine, pass, &spill, results, (&guesses, &kth), writer)?;
    Ok(Some((kth, sign_sum, patches)))
}

/// Mark the elements of `chunk` with an entry inside its task's window `[lo, hi)` of |τ| bit patterns.
fn mark_unsettled(chunk: &Chunk<'_>, spans: &[(u32, u32)], unsettled: &mut Vec<bool>) {
    unsettled.clear();
    unsettled.resize(chunk.out.len(), false);
    for (tau, &(lo, hi)) in chunk.models.iter().zip(spans) {
        let width = hi - lo;
        for (u, t) in unsettled.iter_mut().zip(tau.iter()) {
            *u |= t.abs().to_bits().wrapping_sub(lo) < width;
        }
    }
}

/// Write the block's unsettled elements to the spill. Each is its place in the block (u16), a bit per task
/// whose entry is not certainly trimmed, θ₀, then those tasks' entries: a certainly trimmed entry is 0
/// whatever the exact threshold, so it need not be kept.
fn save_unsettled(
    chunk: &Chunk<'_>,
    w: &mut Worker,
    spans: &[(u32, u32)],
    spill: &Spill,
    writer: &Writer,
) -> Result<Option<Segment>> {
    let base = chunk
        .base
        .ok_or_else(|| MergeError::Internal("TIES needs the pretrained model".into()))?;
    let mask_bytes = chunk.models.len().div_ceil(8);
    w.bytes.clear();
    for j in (0..w.unsettled.len()).filter(|&j| w.unsettled[j]) {
        let place = u16::try_from(j).map_err(|_| MergeError::Internal("a block is longer than 2^16".into()))?;
        w.bytes.extend_from_slice(&place.to_le_bytes());
        let mask = w.bytes.len();
        w.bytes.resize(mask + mask_bytes, 0);
        w.bytes.extend_from_slice(&base[j].to_le_bytes());
        for (t, (tau, &(lo, _))) in chunk.models.iter().zip(spans).enumerate() {
            if tau[j].abs().to_bits() >= lo {
                w.bytes[mask + t / 8] |= 1 << (t % 8);
                w.bytes.extend_from_slice(&tau[j].to_le_bytes());
            }
        }
    }
    if w.bytes.is_empty() {
        return Ok(None);
    }
    let offset = spill.append(&w.bytes).map_err(|e| writer.error(e))?;
    Ok(Some(Segment {
        offset,
        len: w.bytes.len(),
        tensor: chunk.job.tensor,
        first: chunk.job.start,
    }))
}

/// Merge every unsettled element again with the exact thresholds, job by job in parallel: correct
/// Σ sign(elected) and patch the elements whose value changed (or that wait for the majority sign). Returns
/// the sum and every job's patches.
fn settle(
    engine: &Engine<'_>,
    pass: &Pass<'_>,
    spill: &Spill,
    results: Vec<JobResult>,
    thresholds: (&[f32], &[f32]),
    writer: &Writer,
) -> Result<(i64, Vec<Patches>)> {
    let settled: Vec<(i64, Patches)> = engine.install(|| {
        results
            .into_par_iter()
            .map(|job| settle_job(engine, pass, spill, job, thresholds, writer))
            .collect::<Result<_>>()
    })?;
    let sign_sum = settled.iter().map(|(s, _)| s).sum();
    Ok((
        sign_sum,
        settled.into_iter().map(|(_, p)| p).filter(|p| !p.is_empty()).collect(),
    ))
}

/// [`settle`] for one job; `(guesses, kth)` are the thresholds the pass used and the exact ones.
fn settle_job(
    engine: &Engine<'_>,
    pass: &Pass<'_>,
    spill: &Spill,
    mut job: JobResult,
    (guesses, kth): (&[f32], &[f32]),
    writer: &Writer,
) -> Result<(i64, Patches)> {
    let tasks = kth.len();
    let (mut bytes, mut column, mut trimmed) = (Vec::new(), vec![0.0f32; tasks], Vec::new());
    let mut sign_sum = job.sign_sum;
    for segment in &job.segments {
        bytes.resize(segment.len, 0);
        spill
            .file
            .read_exact_at(&mut bytes, segment.offset)
            .map_err(|e| writer.error(e))?;
        let out = output_type(&engine.plan.tensors[segment.tensor]);
        let mut reader = Reader { bytes: &bytes, at: 0 };
        while reader.at < bytes.len() {
            let element = segment.first + usize::from(u16::from_le_bytes(reader.take()?));
            let mask = reader.slice(tasks.div_ceil(8))?;
            let base = f32::from_le_bytes(reader.take()?);
            for (t, c) in column.iter_mut().enumerate() {
                let stored = mask[t / 8] & (1 << (t % 8)) != 0;
                *c = if stored {
                    f32::from_le_bytes(reader.take()?)
                } else {
                    0.0
                };
            }
            let (guessed, [written, _]) = element_outcome(&column, base, guesses, pass.options, &mut trimmed);
            let (elected, values) = element_outcome(&column, base, kth, pass.options, &mut trimmed);
            sign_sum += elected as i64 - guessed as i64;
            if values.iter().any(|v| v.to_bits() != written.to_bits()) {
                record(pass, &mut job.patches, (segment.tensor, element), out, values);
            }
        }
    }
    job.patches.sort();
    Ok((sign_sum, job.patches))
}

/// Reads fixed-size fields off a spilled segment.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// The next `len` bytes.
    fn slice(&mut self, len: usize) -> Result<&'a [u8]> {
        let field = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or_else(|| MergeError::Internal("a TIES scratch record is cut short".into()))?;
        self.at += len;
        Ok(field)
    }

    /// The next `N` bytes, as an array.
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let field = self.slice(N)?;
        <[u8; N]>::try_from(field).map_err(|_| MergeError::Internal("a TIES scratch field".into()))
    }
}

#[cfg(test)]
#[path = "fused_tests.rs"]
mod tests;
