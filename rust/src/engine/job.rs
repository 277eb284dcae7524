//! What a pass works on: a [`Job`] (a run of elements of one tensor), the [`Chunk`] a kernel sees, and the
//! [`PassSpec`] saying what a pass reads and writes.

use crate::error::{MergeError, Result};
use crate::plan::PlanTensor;
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
