//! The streaming driver: splits the merged tensors into fixed-size chunks (independent of the thread count,
//! so results are too), reads each chunk of every input with `pread` into per-thread reusable buffers, and
//! hands it to a method's kernel block by block (so every step of a kernel runs on cache-resident data) on a
//! private rayon pool. Memory is bounded by threads × (inputs + 1) × chunk, whatever the size or number of
//! the models. A merge pass then checks the chunk's output for NaN/Inf and writes it at its offset.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::dtype::count_nonfinite;
use crate::error::{MergeError, Result};
use crate::method::MethodStats;
use crate::monitor::Monitor;
use crate::plan::{FloatSource, Inputs, MergePlan, PlanTensor, TensorKind};
use crate::writer::Writer;

/// Elements per chunk (per read): 64 Ki, 256 KiB of f32 per input.
pub(crate) const DEFAULT_CHUNK: usize = 1 << 16;
/// Elements per kernel block: 4 Ki, so a block of every input fits in L2.
pub(crate) const BLOCK: usize = 1 << 12;

/// A piece of work: elements `[start, start + len)` of output tensor `tensor`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Index into the plan's tensors.
    pub(crate) tensor: usize,
    /// First element.
    pub(crate) start: usize,
    /// Number of elements.
    pub(crate) len: usize,
}

/// One block as a kernel sees it. `models[i]` holds θᵢ (or, after [`Chunk::make_task_vectors`], τᵢ).
pub(crate) struct Chunk<'a> {
    /// The elements this block covers.
    pub(crate) job: Job,
    /// The output tensor.
    pub(crate) tensor: &'a PlanTensor,
    /// θ₀, when the pass reads the base model.
    pub(crate) base: Option<&'a [f32]>,
    /// One slice per fine-tuned model, `job.len` long.
    pub(crate) models: &'a mut [&'a mut [f32]],
    /// One slice per extra input (e.g. Fisher values), `job.len` long.
    pub(crate) extra: &'a [&'a mut [f32]],
    /// The output slice, `job.len` long.
    pub(crate) out: &'a mut [f32],
}

impl Chunk<'_> {
    /// Turn every `models[i]` into the task vector τᵢ = θᵢ − θ₀ in place (float32).
    pub(crate) fn make_task_vectors(&mut self) -> Result<()> {
        let base = self
            .base
            .ok_or_else(|| MergeError::Internal("task vectors need the pretrained model".into()))?;
        for m in self.models.iter_mut() {
            for (x, b) in m.iter_mut().zip(base) {
                *x -= *b;
            }
        }
        Ok(())
    }
}

/// What a pass reads and does with its output.
#[derive(Clone, Copy)]
pub(crate) struct PassSpec<'a> {
    /// Progress label.
    pub(crate) phase: &'a str,
    /// Read θ₀ too.
    pub(crate) read_base: bool,
    /// Write each chunk's output here (after checking it for NaN/Inf).
    pub(crate) writer: Option<&'a Writer>,
    /// Check the inputs for NaN/Inf (passes without output that must not read them silently).
    pub(crate) check_inputs: bool,
}

#[derive(Default)]
struct Scratch {
    base: Vec<f32>,
    models: Vec<Vec<f32>>,
    extra: Vec<Vec<f32>>,
    out: Vec<f32>,
    raw: Vec<u8>,
    encoded: Vec<u8>,
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
    nonfinite: AtomicU64,
}

impl<'a> Engine<'a> {
    /// An engine on `threads` threads (0: one per core).
    pub(crate) fn new(
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
    pub(crate) fn with_chunk(mut self, elements: usize) -> Self {
        self.chunk = elements.max(1);
        self
    }

    /// Number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// NaN/Inf values written by the last merge pass (inputs holding them are an error unless
    /// `allow_nonfinite`; finite inputs can still overflow).
    pub(crate) fn nonfinite_seen(&self) -> u64 {
        self.nonfinite.load(Ordering::Relaxed)
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
            read_base,
            writer: Some(writer),
            check_inputs: false,
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
        if spec.writer.is_some() {
            self.nonfinite.store(0, Ordering::Relaxed);
        }
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
                        .map_err(|_| MergeError::Internal("a worker thread panicked".into()))?;
                    let (scratch, state) = &mut *guard;
                    let result = self.run_job(spec, job, scratch, state, &kernel)?;
                    self.monitor.advance(self.job_bytes(job, spec.read_base));
                    Ok(result)
                })
                .collect::<Result<Vec<T>>>()
        })?;
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

    /// Stored bytes a job reads.
    fn job_bytes(&self, job: &Job, read_base: bool) -> u64 {
        let TensorKind::Merge {
            base, models, extra, ..
        } = &self.plan.tensors[job.tensor].kind
        else {
            return 0;
        };
        let base = base.iter().filter(|_| read_base);
        let sources = models.iter().chain(extra).chain(base);
        (sources.map(|s| s.ty.size()).sum::<usize>() * job.len) as u64
    }

    fn run_job<S, T: Default>(
        &self,
        spec: PassSpec<'_>,
        job: &Job,
        scratch: &mut Scratch,
        state: &mut S,
        kernel: &impl Fn(&mut S, &mut T, Chunk<'_>) -> Result<()>,
    ) -> Result<T> {
        let tensor = &self.plan.tensors[job.tensor];
        let TensorKind::Merge {
            base, models, extra, ..
        } = &tensor.kind
        else {
            return Err(MergeError::Internal(format!("tensor '{}' is not merged", tensor.name)));
        };
        scratch.models.resize_with(models.len(), Vec::new);
        for (i, (source, buf)) in models.iter().zip(scratch.models.iter_mut()).enumerate() {
            self.read(&self.inputs.models[i], source, job, buf, &mut scratch.raw)?;
        }
        scratch.extra.resize_with(extra.len(), Vec::new);
        for (i, (source, buf)) in extra.iter().zip(scratch.extra.iter_mut()).enumerate() {
            self.read(&self.inputs.extra[i], source, job, buf, &mut scratch.raw)?;
        }
        let read_base = match (spec.read_base, base, &self.inputs.base) {
            (true, Some(source), Some(ckpt)) => {
                self.read(ckpt, source, job, &mut scratch.base, &mut scratch.raw)?;
                true
            }
            (true, _, _) => return Err(MergeError::Internal("this pass needs the pretrained model".into())),
            (false, _, _) => false,
        };
        if spec.check_inputs {
            self.check_inputs(
                tensor,
                &scratch.models,
                &scratch.extra,
                read_base.then_some(scratch.base.as_slice()),
            )?;
        }
        scratch.out.resize(job.len, 0.0);
        let mut result = T::default();
        let mut start = 0;
        while start < job.len {
            let range = start..(start + BLOCK).min(job.len);
            let mut models: Vec<&mut [f32]> = scratch.models.iter_mut().map(|m| &mut m[range.clone()]).collect();
            let extra: Vec<&mut [f32]> = scratch.extra.iter_mut().map(|m| &mut m[range.clone()]).collect();
            let block = Chunk {
                job: Job {
                    tensor: job.tensor,
                    start: job.start + range.start,
                    len: range.len(),
                },
                tensor,
                base: read_base.then(|| &scratch.base[range.clone()]),
                models: &mut models,
                extra: &extra,
                out: &mut scratch.out[range.clone()],
            };
            kernel(state, &mut result, block)?;
            start = range.end;
        }
        if let Some(writer) = spec.writer {
            self.write(writer, tensor, job, scratch, read_base)?;
        }
        Ok(result)
    }

    fn read(
        &self,
        ckpt: &Checkpoint,
        source: &FloatSource,
        job: &Job,
        buf: &mut Vec<f32>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        buf.resize(job.len, 0.0);
        ckpt.read_f32(&ckpt.tensors[source.tensor], source.ty, job.start, buf, raw)
    }

    /// Check the output for NaN/Inf (any non-finite input makes the output non-finite: an error naming the
    /// input, or counted with `allow_nonfinite`), then encode and write it.
    fn write(
        &self,
        writer: &Writer,
        tensor: &PlanTensor,
        job: &Job,
        scratch: &mut Scratch,
        read_base: bool,
    ) -> Result<()> {
        let bad = count_nonfinite(&scratch.out);
        if bad > 0 {
            if !self.allow_nonfinite {
                let models = scratch.models_as_read(self, tensor, job)?;
                self.check_inputs(
                    tensor,
                    &models,
                    &scratch.extra,
                    read_base.then_some(scratch.base.as_slice()),
                )?;
            }
            self.nonfinite.fetch_add(bad, Ordering::Relaxed);
        }
        let TensorKind::Merge { out, .. } = &tensor.kind else {
            return Ok(());
        };
        let offset = (job.start * out.size()) as u64;
        if *out == crate::dtype::FloatType::F32 {
            return writer.write_at(job.tensor, offset, bytemuck::cast_slice(&scratch.out));
        }
        out.encode(&scratch.out, &mut scratch.encoded);
        writer.write_at(job.tensor, offset, &scratch.encoded)
    }

    /// Fail on the first input holding NaN/Inf, naming it (unless `allow_nonfinite`).
    fn check_inputs(
        &self,
        tensor: &PlanTensor,
        models: &[Vec<f32>],
        extra: &[Vec<f32>],
        base: Option<&[f32]>,
    ) -> Result<()> {
        if self.allow_nonfinite {
            return Ok(());
        }
        let named = self.inputs.models.iter().zip(models.iter().map(Vec::as_slice));
        let extra = self.inputs.extra.iter().zip(extra.iter().map(Vec::as_slice));
        for (ckpt, values) in named.chain(extra).chain(self.inputs.base.iter().zip(base)) {
            let count = count_nonfinite(values);
            if count > 0 {
                return Err(MergeError::NonFinite {
                    model: ckpt.name.clone(),
                    tensor: tensor.name.clone(),
                    count,
                });
            }
        }
        Ok(())
    }
}

impl Scratch {
    /// The models' values of `job` as stored (kernels may have overwritten the buffers): read again.
    fn models_as_read(&mut self, engine: &Engine<'_>, tensor: &PlanTensor, job: &Job) -> Result<Vec<Vec<f32>>> {
        let TensorKind::Merge { models, .. } = &tensor.kind else {
            return Ok(Vec::new());
        };
        let mut fresh = vec![Vec::new(); models.len()];
        for (i, (source, buf)) in models.iter().zip(fresh.iter_mut()).enumerate() {
            engine.read(&engine.inputs.models[i], source, job, buf, &mut self.raw)?;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::test_files::write_checkpoint;

    /// Two models of one 10-element tensor.
    fn inputs(dir: &std::path::Path) -> Inputs {
        let a: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..10).map(|i| 100.0 + i as f32).collect();
        let open = |name: &str, values: &[f32]| {
            let path = dir.join(name);
            write_checkpoint(&path, &[("w", values)]);
            Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}"))
        };
        Inputs {
            base: None,
            models: vec![open("a.safetensors", &a), open("b.safetensors", &b)],
            extra: Vec::new(),
        }
    }

    #[test]
    fn chunks_cover_every_element_once_whatever_the_chunk_and_thread_count() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inputs = inputs(dir.path());
        let plan = MergePlan::build(&inputs, false, None).unwrap_or_else(|e| panic!("{e}"));
        let monitor = Monitor::default();
        for (threads, chunk) in [(1, 10), (2, 3), (3, 1)] {
            let engine = Engine::new(&inputs, &plan, &monitor, threads, false)
                .unwrap_or_else(|e| panic!("{e}"))
                .with_chunk(chunk);
            let spec = PassSpec {
                phase: "test",
                read_base: false,
                writer: None,
                check_inputs: true,
            };
            let (sums, _) = engine
                .pass(
                    spec,
                    &engine.all_jobs(),
                    || (),
                    |_, sum: &mut f64, c: Chunk<'_>| {
                        assert_eq!(c.models[1][0] - c.models[0][0], 100.0, "models line up");
                        *sum += c.models[0].iter().map(|&x| f64::from(x)).sum::<f64>();
                        Ok(())
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sums.len(), 10usize.div_ceil(chunk));
            assert_eq!(sums.iter().sum::<f64>(), 45.0, "threads {threads} chunk {chunk}");
            assert_eq!(monitor.progress().done, monitor.progress().total);
        }
    }

    #[test]
    fn cancelled_passes_stop_with_cancelled() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inputs = inputs(dir.path());
        let plan = MergePlan::build(&inputs, false, None).unwrap_or_else(|e| panic!("{e}"));
        let monitor = Monitor::default();
        monitor.cancel();
        let engine = Engine::new(&inputs, &plan, &monitor, 1, false).unwrap_or_else(|e| panic!("{e}"));
        let spec = PassSpec {
            phase: "test",
            read_base: false,
            writer: None,
            check_inputs: false,
        };
        let result = engine.pass(spec, &engine.all_jobs(), || (), |_, _: &mut (), _| Ok(()));
        assert!(matches!(result, Err(MergeError::Cancelled)));
    }
}
