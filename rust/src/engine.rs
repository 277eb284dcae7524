//! The streaming driver: splits the merged tensors into fixed-size chunks (independent of the thread count,
//! so results are too), reads each chunk of every input with `pread` into per-thread reusable buffers,
//! and hands them to a method's kernel on a private rayon pool. Memory is bounded by
//! threads × (inputs + 1) × chunk, whatever the size or number of the models.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::dtype::count_nonfinite;
use crate::error::{MergeError, Result};
use crate::monitor::Monitor;
use crate::plan::{FloatSource, Inputs, MergePlan, PlanTensor, TensorKind};

/// Elements per chunk: 256 Ki (1 MiB of f32 per input).
pub const DEFAULT_CHUNK: usize = 1 << 18;

/// A piece of work: elements `[start, start + len)` of output tensor `tensor`.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Index into the plan's tensors.
    pub tensor: usize,
    /// First element.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
}

/// One chunk as a kernel sees it. `models[i]` holds θᵢ (or, after [`Chunk::to_task_vectors`], τᵢ).
pub struct Chunk<'a> {
    /// The job.
    pub job: Job,
    /// The output tensor.
    pub tensor: &'a PlanTensor,
    /// θ₀, when the pass reads the base model.
    pub base: Option<&'a [f32]>,
    /// One buffer per fine-tuned model, `job.len` long.
    pub models: &'a mut [Vec<f32>],
    /// The output buffer, `job.len` long.
    pub out: &'a mut [f32],
    /// A reusable byte buffer for encoding the output.
    pub encoded: &'a mut Vec<u8>,
}

impl Chunk<'_> {
    /// Turn every `models[i]` into the task vector τᵢ = θᵢ − θ₀ in place (float32).
    pub fn to_task_vectors(&mut self) -> Result<()> {
        let base = self
            .base
            .ok_or_else(|| MergeError::arg("task vectors need the pretrained model"))?;
        for m in self.models.iter_mut() {
            for (x, b) in m.iter_mut().zip(base) {
                *x -= *b;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Scratch {
    base: Vec<f32>,
    models: Vec<Vec<f32>>,
    out: Vec<f32>,
    raw: Vec<u8>,
    encoded: Vec<u8>,
}

/// Runs passes over the merged tensors of a plan.
pub struct Engine<'a> {
    /// The opened inputs.
    pub inputs: &'a Inputs,
    /// The validated plan.
    pub plan: &'a MergePlan,
    /// Progress and cancellation.
    pub monitor: &'a Monitor,
    pool: rayon::ThreadPool,
    chunk: usize,
    allow_nonfinite: bool,
    nonfinite: AtomicU64,
}

impl<'a> Engine<'a> {
    /// An engine on `threads` threads (0: one per core).
    pub fn new(
        inputs: &'a Inputs,
        plan: &'a MergePlan,
        monitor: &'a Monitor,
        threads: usize,
        allow_nonfinite: bool,
    ) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("merge-rs-{i}"))
            .build()
            .map_err(|e| MergeError::arg(format!("cannot start {threads} threads: {e}")))?;
        Ok(Engine {
            inputs,
            plan,
            monitor,
            pool,
            chunk: DEFAULT_CHUNK,
            allow_nonfinite,
            nonfinite: AtomicU64::new(0),
        })
    }

    /// Use chunks of `elements` (tests use tiny chunks to exercise boundaries).
    pub fn with_chunk(mut self, elements: usize) -> Self {
        self.chunk = elements.max(1);
        self
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Non-finite input values seen by the last pass (only counted with `allow_nonfinite`).
    pub fn nonfinite_seen(&self) -> u64 {
        self.nonfinite.load(Ordering::Relaxed)
    }

    /// Run `f` on the engine's private pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Chunked jobs covering the merged tensors among `tensors`.
    pub fn jobs(&self, tensors: impl IntoIterator<Item = usize>) -> Vec<Job> {
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
    pub fn all_jobs(&self) -> Vec<Job> {
        self.jobs(0..self.plan.tensors.len())
    }

    /// One pass over `jobs`: read each chunk of every model (and of the base when `read_base`), then call
    /// `kernel(state, chunk)`. Returns the kernel's per-job results in job order, and the per-thread states.
    pub fn pass<S, T>(
        &self,
        phase: &str,
        jobs: &[Job],
        read_base: bool,
        init: impl Fn() -> S + Sync,
        kernel: impl Fn(&mut S, Chunk<'_>) -> Result<T> + Sync,
    ) -> Result<(Vec<T>, Vec<S>)>
    where
        S: Send,
        T: Send,
    {
        let total: u64 = jobs.iter().map(|j| self.job_bytes(j, read_base)).sum();
        self.monitor.start_phase(phase, total);
        self.nonfinite.store(0, Ordering::Relaxed);
        let slots: Vec<Mutex<(Scratch, S)>> = (0..self.threads())
            .map(|_| Mutex::new((Scratch::default(), init())))
            .collect();
        let results = self.pool.install(|| {
            jobs.par_iter()
                .map(|job| {
                    if self.monitor.is_cancelled() {
                        return Err(MergeError::Cancelled);
                    }
                    let slot = rayon::current_thread_index().unwrap_or(0) % slots.len();
                    let mut guard = slots[slot]
                        .lock()
                        .map_err(|_| MergeError::arg("a worker thread panicked"))?;
                    let (scratch, state) = &mut *guard;
                    let result = self.run_job(job, read_base, scratch, state, &kernel)?;
                    self.monitor.advance(self.job_bytes(job, read_base));
                    Ok(result)
                })
                .collect::<Result<Vec<T>>>()
        })?;
        let states = slots
            .into_iter()
            .map(|s| s.into_inner().map(|(_, st)| st))
            .collect::<Result<Vec<S>, _>>();
        Ok((
            results,
            states.map_err(|_| MergeError::arg("a worker thread panicked"))?,
        ))
    }

    /// Stored bytes a job reads.
    fn job_bytes(&self, job: &Job, read_base: bool) -> u64 {
        let TensorKind::Merge { base, models, .. } = &self.plan.tensors[job.tensor].kind else {
            return 0;
        };
        let base = base.iter().filter(|_| read_base);
        (models.iter().chain(base).map(|s| s.ty.size()).sum::<usize>() * job.len) as u64
    }

    fn run_job<S, T>(
        &self,
        job: &Job,
        read_base: bool,
        scratch: &mut Scratch,
        state: &mut S,
        kernel: &impl Fn(&mut S, Chunk<'_>) -> Result<T>,
    ) -> Result<T> {
        let tensor = &self.plan.tensors[job.tensor];
        let TensorKind::Merge { base, models, .. } = &tensor.kind else {
            return Err(MergeError::arg(format!("tensor '{}' is not merged", tensor.name)));
        };
        scratch.models.resize_with(models.len(), Vec::new);
        for (i, (source, buf)) in models.iter().zip(scratch.models.iter_mut()).enumerate() {
            self.read(&self.inputs.models[i], tensor, source, job, buf, &mut scratch.raw)?;
        }
        let base_values = match (read_base, base, &self.inputs.base) {
            (true, Some(source), Some(ckpt)) => {
                self.read(ckpt, tensor, source, job, &mut scratch.base, &mut scratch.raw)?;
                Some(scratch.base.as_slice())
            }
            (true, _, _) => return Err(MergeError::arg("this pass needs the pretrained model")),
            (false, _, _) => None,
        };
        scratch.out.resize(job.len, 0.0);
        let chunk = Chunk {
            job: *job,
            tensor,
            base: base_values,
            models: &mut scratch.models,
            out: &mut scratch.out,
            encoded: &mut scratch.encoded,
        };
        kernel(state, chunk)
    }

    fn read(
        &self,
        ckpt: &Checkpoint,
        tensor: &PlanTensor,
        source: &FloatSource,
        job: &Job,
        buf: &mut Vec<f32>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        buf.resize(job.len, 0.0);
        ckpt.read_f32(&ckpt.tensors[source.tensor], source.ty, job.start, buf, raw)?;
        let bad = count_nonfinite(buf);
        if bad > 0 {
            if !self.allow_nonfinite {
                return Err(MergeError::NonFinite {
                    model: ckpt.name.clone(),
                    tensor: tensor.name.clone(),
                    count: bad,
                });
            }
            self.nonfinite.fetch_add(bad, Ordering::Relaxed);
        }
        Ok(())
    }
}
