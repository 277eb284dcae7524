//! Running one job: read its chunk of every input into per-thread buffers (or decode what a reader thread
//! read ahead), run the kernel block by block, checking each block of every input for NaN/Inf just before
//! (every pass, whatever the kernel then does with them), then check the output as it will be stored (an
//! overflow to ±Inf in float16 counts) and write it at its offset.

use super::prefetch::{DirectRead, Fetched};
use super::{BLOCK, Chunk, Engine, Job, PassSpec};
use crate::checkpoint::Checkpoint;
use crate::dtype::{FloatType, count_nonfinite};
use crate::error::{ALLOW_NONFINITE, MergeError, Result};
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
        fetched: Option<&Fetched>,
    ) -> Result<T> {
        let tensor = &self.plan.tensors[job.tensor];
        let (m, e) = (self.inputs.models.len(), self.inputs.extra.len());
        let fetched_input = |i: usize| fetched.map(|f| &f[i]);
        let TensorKind::Merge {
            base, models, extra, ..
        } = &tensor.kind
        else {
            return Err(MergeError::Internal(format!("tensor '{}' is not merged", tensor.name)));
        };
        let read_base = match (spec.read_base, base, &self.inputs.base) {
            (true, Some(source), Some(ckpt)) => {
                self.read(
                    ckpt,
                    source,
                    job,
                    &mut scratch.base,
                    &mut scratch.raw,
                    fetched_input(m + e),
                )?;
                Some(source)
            }
            (true, _, _) => return Err(MergeError::Internal("this pass needs the pretrained model".into())),
            (false, _, _) => None,
        };
        scratch.models.resize_with(models.len(), Vec::new);
        for (i, (source, buf)) in models.iter().zip(scratch.models.iter_mut()).enumerate() {
            let ckpt = &self.inputs.models[i];
            match read_base {
                // An adapter over θ₀: θ₀'s values of this chunk are in hand, so only the change is formed.
                Some(b) if self.over_base[i] && b.tensor == source.tensor && b.ty == source.ty => {
                    buf.resize(job.len, 0.0);
                    let t = &ckpt.tensors[source.tensor];
                    ckpt.read_f32_over(t, source.ty, job.start, &scratch.base, buf, &mut scratch.raw)?;
                }
                _ => self.read(ckpt, source, job, buf, &mut scratch.raw, fetched_input(i))?,
            }
        }
        scratch.extra.resize_with(extra.len(), Vec::new);
        for (i, (source, buf)) in extra.iter().zip(scratch.extra.iter_mut()).enumerate() {
            self.read(
                &self.inputs.extra[i],
                source,
                job,
                buf,
                &mut scratch.raw,
                fetched_input(m + i),
            )?;
        }
        let read_base = read_base.is_some();
        scratch.out.resize(job.len, 0.0);
        let mut result = T::default();
        let mut bad_inputs = 0;
        let mut start = 0;
        while start < job.len {
            let range = start..(start + BLOCK).min(job.len);
            let base = read_base.then_some(scratch.base.as_slice());
            bad_inputs += self.check_inputs(tensor, &scratch.models, &scratch.extra, base, range.clone())?;
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
        if spec.writer.is_some() {
            self.nonfinite_inputs.fetch_add(bad_inputs, Ordering::Relaxed);
        }
        if let Some(writer) = spec.writer {
            self.write_output(writer, job.tensor, job.start, &scratch.out, &mut scratch.encoded)?;
        }
        Ok(result)
    }

    /// `job`'s values of `source` into `buf`: decoded from what a reader thread `fetched`, or read now.
    fn read(
        &self,
        ckpt: &Checkpoint,
        source: &FloatSource,
        job: &Job,
        buf: &mut Vec<f32>,
        raw: &mut Vec<u8>,
        fetched: Option<&DirectRead>,
    ) -> Result<()> {
        buf.resize(job.len, 0.0);
        match fetched {
            Some(read) if source.ty == FloatType::F32 => {
                bytemuck::cast_slice_mut(buf.as_mut_slice()).copy_from_slice(read.data());
                Ok(())
            }
            Some(read) => {
                source.ty.decode(read.data(), buf);
                Ok(())
            }
            None => ckpt.read_f32(&ckpt.tensors[source.tensor], source.ty, job.start, buf, raw),
        }
    }

    /// Encode `out` (elements `[start, start + out.len())` of tensor `t`), count its non-finite values as
    /// stored (an error unless `allow_nonfinite`: the inputs were finite, so the method overflowed or
    /// divided 0 by 0), and write it.
    pub(super) fn write_output(
        &self,
        writer: &Writer,
        t: usize,
        start: usize,
        out: &[f32],
        encoded: &mut Vec<u8>,
    ) -> Result<()> {
        let tensor = &self.plan.tensors[t];
        let TensorKind::Merge { out: ty, .. } = &tensor.kind else {
            return Ok(());
        };
        let offset = (start * ty.size()) as u64;
        let (bad, bytes): (u64, &[u8]) = if *ty == FloatType::F32 {
            (count_nonfinite(out), bytemuck::cast_slice(out))
        } else {
            ty.encode(out, encoded);
            (ty.count_nonfinite_encoded(encoded), encoded)
        };
        if bad > 0 {
            if !self.allow_nonfinite {
                return Err(MergeError::NonFiniteOutput {
                    tensor: tensor.name.clone(),
                    count: bad,
                    dtype: ty.name(),
                });
            }
            self.nonfinite_outputs.fetch_add(bad, Ordering::Relaxed);
        }
        writer.write_at(t, offset, bytes)
    }

    /// The number of NaN/Inf input values in `range` of the buffers (one block, checked just before the
    /// kernel reads it, while it is in cache); an error naming the first input holding one unless
    /// `allow_nonfinite`.
    fn check_inputs(
        &self,
        tensor: &PlanTensor,
        models: &[Vec<f32>],
        extra: &[Vec<f32>],
        base: Option<&[f32]>,
        range: std::ops::Range<usize>,
    ) -> Result<u64> {
        let named = self.inputs.models.iter().zip(models.iter().map(Vec::as_slice));
        let extra = self.inputs.extra.iter().zip(extra.iter().map(Vec::as_slice));
        let mut total = 0;
        for (ckpt, values) in named.chain(extra).chain(self.inputs.base.iter().zip(base)) {
            let count = count_nonfinite(&values[range.clone()]);
            if count > 0 && !self.allow_nonfinite {
                return Err(MergeError::NonFinite {
                    model: ckpt.name.clone(),
                    tensor: tensor.name.clone(),
                    count,
                    remedy: ALLOW_NONFINITE,
                });
            }
            total += count;
        }
        Ok(total)
    }
}
