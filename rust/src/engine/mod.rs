//! The streaming driver: splits the merged tensors into fixed-size chunks (independent of the thread count,
//! so results are too), reads each chunk of every input with `pread` into per-thread reusable buffers, and
//! hands it to a method's kernel block by block (so every step of a kernel runs on cache-resident data) on a
//! private rayon pool. Workers take chunks in order from one queue, so every input file is read as a single
//! sequential stream that the kernel's readahead follows (splitting the work into ranges, as a parallel
//! iterator does, halved the speed of a cold read). Where memory is too short for the kernel's readahead of
//! every input, reader threads read the coming chunks past the page cache instead (`prefetch.rs`). Memory
//! is bounded by (threads + a ring of up to eight) × (inputs + 1) × chunk, whatever the size or number of the
//! models. A merge pass then checks the chunk's output for NaN/Inf and writes it at its offset.

mod budget;
mod cache;
mod job;
mod prefetch;
mod read;
mod threads;
mod whole;
#[cfg(test)]
pub(crate) mod working_set;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::error::{MergeError, Result};
use crate::method::MethodStats;
use crate::monitor::Monitor;
use crate::plan::{Inputs, MergePlan};
use crate::writer::Writer;
pub(crate) use cache::advise;
pub(crate) use job::{Chunk, Job, PassSpec};
use prefetch::Prefetch;
use read::Scratch;
pub(crate) use threads::check_threads;
pub(crate) use whole::{DEFAULT_WHOLE_TENSOR_BUDGET, TensorFold, return_large_frees};

/// Elements per chunk (per read): 64 Ki, 256 KiB of f32 per input.
pub(crate) const DEFAULT_CHUNK: usize = 1 << 16;
/// Elements per kernel block: 4 Ki, so a block of every input fits in L2.
pub(crate) const BLOCK: usize = 1 << 12;

/// The first real failure: a cancellation only when nothing else went wrong.
fn first_error(failures: Vec<MergeError>) -> Option<MergeError> {
    let (cancelled, other): (Vec<_>, Vec<_>) = failures.into_iter().partition(|e| matches!(e, MergeError::Cancelled));
    other.into_iter().next().or_else(|| cancelled.into_iter().next())
}

/// Runs passes over the merged tensors of a plan.
pub(crate) struct Engine<'a> {
    /// The opened inputs.
    pub(crate) inputs: &'a Inputs,
    /// The validated plan.
    pub(crate) plan: &'a MergePlan,
    /// Progress and cancellation.
    pub(crate) monitor: &'a Monitor,
    pool: rayon::ThreadPool,
    chunk: usize,
    allow_nonfinite: bool,
    nonfinite_inputs: AtomicU64,
    nonfinite_outputs: AtomicU64,
    streaming: bool,
    past_cache: bool,
    /// The memory this process can fill, when known (read once, when the engine starts).
    available: Option<u64>,
    scarce: bool,
    whole_tensor_budget: usize,
    /// Per model: whether it is an adapter over θ₀'s own files (a pass that read θ₀ copies its values for it).
    over_base: Vec<bool>,
}

impl<'a> Engine<'a> {
    /// An engine on `threads` threads (0: one per core; at most eight per core).
    pub(crate) fn new(
        inputs: &'a Inputs,
        plan: &'a MergePlan,
        monitor: &'a Monitor,
        threads: usize,
        allow_nonfinite: bool,
    ) -> Result<Self> {
        check_threads(threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("merge-rs-{i}"))
            .build()
            .map_err(|e| MergeError::arg(format!("cannot start {threads} threads: {e}")))?;
        let fit = cache::memory_fit(inputs);
        Ok(Engine {
            inputs,
            plan,
            monitor,
            pool,
            chunk: DEFAULT_CHUNK,
            allow_nonfinite,
            nonfinite_inputs: AtomicU64::new(0),
            nonfinite_outputs: AtomicU64::new(0),
            streaming: fit.streaming,
            past_cache: fit.past_cache,
            available: fit.available,
            scarce: fit.scarce,
            whole_tensor_budget: DEFAULT_WHOLE_TENSOR_BUDGET,
            over_base: inputs
                .models
                .iter()
                .map(|m| inputs.base.as_ref().is_some_and(|b| m.overlays(b)))
                .collect(),
        })
    }

    /// Use chunks of `elements` (tests use tiny chunks to exercise boundaries).
    pub(crate) fn with_chunk(mut self, elements: usize) -> Self {
        self.chunk = elements.max(1);
        self
    }

    /// Read the inputs past the cache as if memory were short, `available` bytes of it (tests of the
    /// read-ahead on small files).
    #[cfg(test)]
    pub(crate) fn with_reading_past_cache(mut self, past_cache: bool, available: Option<u64>) -> Self {
        (self.past_cache, self.available) = (past_cache, available);
        self
    }

    /// Let the whole-tensor pass hold at most `bytes` at once (a larger tensor runs alone).
    pub(crate) fn with_whole_tensor_budget(mut self, bytes: usize) -> Self {
        self.whole_tensor_budget = bytes;
        self
    }

    /// Whether memory is under 1/32 of the inputs: every extra read of them is a slow read from disk.
    pub(crate) fn memory_is_scarce(&self) -> bool {
        self.scarce
    }

    /// Run `op` on the engine's threads (for a method's own parallel work between passes).
    pub(crate) fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        self.pool.install(op)
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// NaN/Inf values (inputs read by the merge passes, outputs as stored) seen so far; either is an error
    /// unless `allow_nonfinite`.
    pub(crate) fn nonfinite_counts(&self) -> (u64, u64) {
        (
            self.nonfinite_inputs.load(Ordering::Relaxed),
            self.nonfinite_outputs.load(Ordering::Relaxed),
        )
    }

    /// Forget the counts before a method writes its whole output again.
    pub(crate) fn restart_counts(&self) {
        self.nonfinite_inputs.store(0, Ordering::Relaxed);
        self.nonfinite_outputs.store(0, Ordering::Relaxed);
    }

    /// Chunked jobs covering the merged tensors among `tensors`.
    pub(crate) fn jobs(&self, tensors: impl IntoIterator<Item = usize>) -> Vec<Job> {
        let mut jobs = Vec::new();
        for t in tensors {
            let tensor = &self.plan.tensors[t];
            if !tensor.is_merged() {
                continue;
            }
            let mut start = 0;
            while start < tensor.numel {
                let len = self.chunk.min(tensor.numel - start);
                jobs.push(Job { tensor: t, start, len });
                start += len;
            }
        }
        jobs
    }

    /// Jobs for every merged tensor.
    pub(crate) fn all_jobs(&self) -> Vec<Job> {
        self.jobs(0..self.plan.tensors.len())
    }

    /// The one pass of an elementwise method: `kernel` fills each block's output from its inputs (θ₀ too
    /// with `read_base`), and the output is checked and written.
    pub(crate) fn elementwise(
        &self,
        read_base: bool,
        writer: &Writer,
        kernel: &(dyn Fn(&mut Chunk<'_>) -> Result<()> + Sync),
    ) -> Result<MethodStats> {
        let spec = PassSpec {
            phase: "merge",
            prefetch: 0,
            read_base,
            writer: Some(writer),
        };
        self.pass(
            spec,
            &self.all_jobs(),
            || (),
            |_, _: &mut (), mut chunk| kernel(&mut chunk),
        )?;
        Ok(MethodStats::default())
    }

    /// One pass over `jobs`: read each chunk of every model (and of the base with `read_base`), call
    /// `kernel(state, result, block)` on every block of it, and, with a writer, write the chunk's output.
    /// Returns the per-job results in job order and the per-thread states.
    pub(crate) fn pass<S, T>(
        &self,
        spec: PassSpec<'_>,
        jobs: &[Job],
        init: impl Fn() -> S + Sync,
        kernel: impl Fn(&mut S, &mut T, Chunk<'_>) -> Result<()> + Sync,
    ) -> Result<(Vec<T>, Vec<S>)>
    where
        S: Send,
        T: Send + Default,
    {
        let total: u64 = jobs.iter().map(|j| self.job_bytes(j, spec.read_base)).sum();
        self.monitor.start_phase(spec.phase, total);
        let slots: Vec<Mutex<(Scratch, S)>> = (0..self.threads())
            .map(|_| Mutex::new((Scratch::default(), init())))
            .collect();
        // Workers take jobs in order from one queue, so that every file is read as one sequential stream.
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let done: Vec<Mutex<Option<T>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
        // Inputs whose readahead would crowd the memory are read ahead past the cache; sparse (prefetched)
        // passes are not.
        let ahead = (self.past_cache && spec.prefetch == 0)
            .then(|| Prefetch::open(self))
            .flatten();
        let workers = Workers {
            slots: &slots,
            next: &next,
            stop: &stop,
            done: &done,
            ahead: ahead.as_ref(),
        };
        let failures = prefetch::alongside(ahead.as_ref(), self, jobs, spec.read_base, || {
            self.run_workers(spec, jobs, &workers, &kernel)
        });
        if let Some(error) = first_error(failures) {
            return Err(error);
        }
        let results = done
            .into_iter()
            .map(|r| r.into_inner().ok().flatten())
            .collect::<Option<Vec<T>>>()
            .ok_or_else(|| MergeError::Internal("a job produced no result".into()))?;
        let states = slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .map(|(_, st)| st)
                    .map_err(|_| MergeError::Internal("a worker thread panicked".into()))
            })
            .collect::<Result<Vec<S>>>()?;
        Ok((results, states))
    }

    /// The workers: each takes the next job from the queue until none is left or one failed; returns the
    /// failures.
    fn run_workers<S: Send, T: Send + Default>(
        &self,
        spec: PassSpec<'_>,
        jobs: &[Job],
        w: &Workers<'_, S, T>,
        kernel: &(impl Fn(&mut S, &mut T, Chunk<'_>) -> Result<()> + Sync),
    ) -> Vec<MergeError> {
        self.pool.install(|| {
            w.slots
                .par_iter()
                .filter_map(|slot| {
                    let mut guard = slot.lock().ok()?;
                    let (scratch, state) = &mut *guard;
                    while !w.stop.load(Ordering::Relaxed) {
                        let j = w.next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(j) else { break };
                        let outcome = self.run_queued(spec, jobs, j, scratch, state, kernel, w.ahead);
                        match (outcome, w.done[j].lock()) {
                            (Ok(result), Ok(mut place)) => *place = Some(result),
                            (Err(e), _) => {
                                w.stop.store(true, Ordering::Relaxed);
                                return Some(e);
                            }
                            (_, Err(_)) => return Some(MergeError::Internal("a worker thread panicked".into())),
                        }
                        self.monitor.advance(self.job_bytes(job, spec.read_base));
                    }
                    None
                })
                .collect()
        })
    }

    /// Job `j` of `jobs`: run it on what the readers fetched `ahead`, or read it now and, when streaming,
    /// drop what a writing pass read.
    #[allow(clippy::too_many_arguments)]
    fn run_queued<S, T: Default>(
        &self,
        spec: PassSpec<'_>,
        jobs: &[Job],
        j: usize,
        scratch: &mut Scratch,
        state: &mut S,
        kernel: &impl Fn(&mut S, &mut T, Chunk<'_>) -> Result<()>,
        ahead: Option<&Prefetch>,
    ) -> Result<T> {
        if self.monitor.is_cancelled() {
            return Err(MergeError::Cancelled);
        }
        if let Some(ahead) = ahead {
            let fetched = ahead.take(j)?;
            let _unwinding = prefetch::StopOnUnwind(ahead);
            let result = self.run_job(spec, &jobs[j], scratch, state, kernel, Some(&fetched));
            ahead.give_back(j, fetched);
            return result;
        }
        if let Some(ahead) = jobs.get(j + spec.prefetch).filter(|_| spec.prefetch > 0) {
            self.advise_job(ahead, spec.read_base, libc::POSIX_FADV_WILLNEED);
        }
        let result = self.run_job(spec, &jobs[j], scratch, state, kernel, None)?;
        // A writing pass is a method's last over its range; earlier passes (selection) are re-read soon.
        if self.streaming && spec.writer.is_some() {
            self.advise_job(&jobs[j], spec.read_base, libc::POSIX_FADV_DONTNEED);
        }
        Ok(result)
    }
}

/// What a pass's workers share: their buffers and states, the queue, the stop flag, the results, and the
/// readers' ring when reading ahead.
struct Workers<'p, S, T> {
    slots: &'p [Mutex<(Scratch, S)>],
    next: &'p AtomicUsize,
    stop: &'p AtomicBool,
    done: &'p [Mutex<Option<T>>],
    ahead: Option<&'p Prefetch>,
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;
