//! Running one job: read its chunk of every input into per-thread buffers, run the kernel block by block,
//! check the output for NaN/Inf (naming the input that holds them) and write it at its offset.

use super::{BLOCK, Chunk, Engine, Job, PassSpec};
use crate::checkpoint::Checkpoint;
use crate::dtype::count_nonfinite;
use crate::error::{MergeError, Result};
use crate::plan::{FloatSource, PlanTensor, TensorKind};
use crate::writer::Writer;
use std::sync::atomic::Ordering;

/// Per-thread buffers, reused from job to job.
#[derive(Default)]
pub(super) struct Scratch {
    base: Vec<f32>,
    models: Vec<Vec<f32>>,
    extra: Vec<Vec<f32>>,
    out: Vec<f32>,
    raw: Vec<u8>,
    encoded: Vec<u8>,
}

impl Engine<'_> {
    pub(super) fn run_job<S, T: Default>(
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
