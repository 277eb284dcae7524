//! What a pass works on: a [`Job`] (a run of elements of one tensor) and the inputs it reads, the [`Chunk`] a
//! kernel sees, and the [`PassSpec`] saying what a pass reads and writes.

use super::Engine;
use crate::checkpoint::Checkpoint;
use crate::error::{MergeError, Result};
use crate::plan::{FloatSource, PlanTensor, TensorKind};
use crate::writer::Writer;

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
    /// Announce the reads of the job this many ahead (`WILLNEED`; 0: none). Sparse reads, such as a sample of
    /// every chunk, get no readahead from the kernel and wait for each seek; sequential reads need none.
    pub(crate) prefetch: usize,
    /// Read θ₀ too.
    pub(crate) read_base: bool,
    /// Write each chunk's output here (after checking it for NaN/Inf). Inputs are always checked.
    pub(crate) writer: Option<&'a Writer>,
}

impl Engine<'_> {
    /// `posix_fadvise` on every input range `job` reads.
    pub(super) fn advise_job(&self, job: &Job, read_base: bool, advice: libc::c_int) {
        for (_, source, ckpt) in self.job_sources(job, read_base) {
            let tensor = &ckpt.tensors[source.tensor];
            let (offset, len) = ckpt.stored_range(tensor, source.ty, job.start, job.len);
            ckpt.advise(tensor, offset, len as u64, advice);
        }
    }

    /// Stored bytes `job` reads.
    pub(super) fn job_bytes(&self, job: &Job, read_base: bool) -> u64 {
        let width: usize = self.job_sources(job, read_base).map(|(_, s, _)| s.ty.size()).sum();
        (width * job.len) as u64
    }

    /// Every input `job` reads (models, extra inputs, then θ₀ with `read_base`), with its position in that
    /// order of the inputs (models `0..m`, extra inputs `m..m + e`, θ₀ `m + e`) and its checkpoint.
    pub(super) fn job_sources(
        &self,
        job: &Job,
        read_base: bool,
    ) -> impl Iterator<Item = (usize, &FloatSource, &Checkpoint)> {
        let (base, models, extra): (&[FloatSource], &[FloatSource], &[FloatSource]) =
            match &self.plan.tensors[job.tensor].kind {
                TensorKind::Merge {
                    base, models, extra, ..
                } => (base.as_slice(), models, extra),
                TensorKind::Copy { .. } | TensorKind::Elsewhere { .. } => (&[], &[], &[]),
            };
        let (m, e) = (self.inputs.models.len(), self.inputs.extra.len());
        let models = models.iter().zip(&self.inputs.models).enumerate();
        let extra = extra
            .iter()
            .zip(&self.inputs.extra)
            .enumerate()
            .map(move |(i, p)| (m + i, p));
        let base = base
            .iter()
            .filter(move |_| read_base)
            .zip(&self.inputs.base)
            .map(move |p| (m + e, p));
        models.chain(extra).chain(base).map(|(i, (s, c))| (i, s, c))
    }
}
