//! The whole-tensor pass, for methods that need each tensor entire (an SVD of a matrix, a norm or a ranking
//! over a tensor): for every merged tensor, in the order the first model's file lays them out, it reads θ₀
//! (when asked) and then each model's copy once, handing them to the method one model at a time
//! ([`TensorFold`]); the method folds them into what it needs (a running sum, a few singular vectors, or
//! every copy) and finally fills the output, which is checked and written like any other. A method that
//! would otherwise hold every copy may ask for a second round of reads instead ([`TensorFold::rounds`]).
//! Tensors run in parallel while their declared working sets fit a [`Budget`]; a tensor larger than the
//! budget runs alone. Large buffers are returned to the system when freed (see [`return_large_frees`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::budget::Budget;
use super::{Engine, first_error};
use crate::dtype::{FloatType, count_nonfinite};
use crate::error::{ALLOW_NONFINITE, MergeError, Result};
use crate::method::MethodStats;
use crate::plan::{FloatSource, PlanTensor, TensorKind};
use crate::writer::Writer;

/// Bytes the whole-tensor pass lets its tensors hold at once (the engine's buffers and the methods'
/// declared working sets, each checked against what it really allocates by the methods' tests), unless the
/// request sets another. Outside it: the process itself, and the packing buffer faer's matrix product keeps
/// per worker thread (about 20 MB touched with a 32 MB L3 cache).
pub(crate) const DEFAULT_WHOLE_TENSOR_BUDGET: usize = 160 << 20;

/// A method that merges whole tensors, one model's copy at a time.
pub(crate) trait TensorFold: Sync {
    /// What the method keeps for one tensor while its models arrive.
    type Acc: Send;

    /// Bytes the accumulator and the method's own work need for `tensor` with `models` models (the engine
    /// adds its own tensor-sized buffers: θ₀ and the copy being read).
    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize;

    /// How many times the models are read in turn for `tensor` (each round calls `add` once per model).
    fn rounds(&self, _tensor: &PlanTensor, _models: usize) -> usize {
        1
    }

    /// An empty accumulator for `tensor`.
    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Self::Acc>;

    /// Fold in model `model`'s copy θ of `tensor` (θ₀ is given when the pass reads it).
    fn add(
        &self,
        acc: &mut Self::Acc,
        tensor: &PlanTensor,
        model: usize,
        theta: &[f32],
        base: Option<&[f32]>,
    ) -> Result<()>;

    /// Fill `out` with the merged `tensor`.
    fn finish(&self, acc: Self::Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()>;
}

/// Serve large allocations from their own mappings, returned to the system when freed (glibc otherwise
/// raises its threshold after the first large free and keeps freed buffers in per-thread arenas, which
/// raised the peak of an 8 × ViT-L/14 Iso-C merge from 348 to 475 MB).
pub(crate) fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static SET: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator tuning; it is safe to call at any time.
        SET.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        });
    }
}

/// The working set of `tensor` with `models` models: θ₀ (when read), the copy being read or the output, the
/// stored bytes of a copy being decoded and of the output being encoded (for types other than float32), and
/// the method's own. Every buffer is allocated per tensor, so none is held idle while a method factorises.
pub(crate) fn working_set<F: TensorFold>(fold: &F, tensor: &PlanTensor, models: usize, read_base: bool) -> usize {
    let floats = if read_base { 2 } else { 1 };
    let coded = |ty: FloatType| if ty == FloatType::F32 { 0 } else { ty.size() };
    let codecs = match &tensor.kind {
        TensorKind::Merge { out, base, models, .. } => {
            let base = base.as_ref().filter(|_| read_base);
            let read = models.iter().chain(base).map(|s| coded(s.ty)).max().unwrap_or(0);
            read + coded(*out)
        }
        TensorKind::Copy { .. } | TensorKind::Elsewhere { .. } => 0,
    };
    (floats * 4 + codecs) * tensor.numel + fold.footprint(tensor, models)
}

/// Fold every model's copy of `tensor` into `fold`, each read into the buffer by `read(model, buffer)`, round
/// after round, and finish it: the merged values.
pub(crate) fn fold_tensor<F: TensorFold>(
    fold: &F,
    tensor: &PlanTensor,
    models: usize,
    base: Option<&[f32]>,
    mut read: impl FnMut(usize, &mut Vec<f32>) -> Result<()>,
) -> Result<Vec<f32>> {
    let mut acc = fold.start(tensor, models)?;
    let mut theta = Vec::new();
    for _ in 0..fold.rounds(tensor, models) {
        for model in 0..models {
            read(model, &mut theta)?;
            fold.add(&mut acc, tensor, model, &theta, base)?;
        }
    }
    drop(theta);
    // Zeroed pages cost no memory until the method writes them, after its own work is freed.
    let mut out = vec![0.0f32; tensor.numel];
    fold.finish(acc, tensor, base, &mut out)?;
    Ok(out)
}

impl Engine<'_> {
    /// Merge every merged tensor with `fold`, reading θ₀ too with `read_base`, and write the results.
    pub(crate) fn whole_tensors<F: TensorFold>(
        &self,
        fold: &F,
        read_base: bool,
        writer: &Writer,
    ) -> Result<MethodStats> {
        return_large_frees();
        let order = self.layout_order();
        let total: u64 = order.iter().map(|&t| self.tensor_bytes(fold, t, read_base)).sum();
        self.monitor.start_phase("merge", total);
        let budget = Budget::new(self.whole_tensor_budget);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // One worker loop on every thread of the pool, broadcast rather than queued: a worker waiting for its
        // budget steals only the rayon jobs running tensors split off, never another worker's loop.
        let failures: Vec<MergeError> = self
            .pool
            .broadcast(|_| {
                while !stop.load(Ordering::Relaxed) {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&t) = order.get(j) else { break };
                    let need = working_set(fold, &self.plan.tensors[t], self.inputs.models.len(), read_base);
                    let outcome = budget.run(j, need, &stop, || self.merge_tensor(fold, t, read_base, writer));
                    if let Err(e) = outcome {
                        stop.store(true, Ordering::Relaxed);
                        budget.abandon();
                        return Some(e);
                    }
                }
                None
            })
            .into_iter()
            .flatten()
            .collect();
        match first_error(failures) {
            Some(error) => Err(error),
            None => Ok(MethodStats::default()),
        }
    }

    /// Merged tensors in the order the first model's files store them.
    fn layout_order(&self) -> Vec<usize> {
        let model = &self.inputs.models[0];
        let mut order: Vec<(usize, u64, usize)> = (0..self.plan.tensors.len())
            .filter_map(|t| {
                let source = self.sources(t).1.first()?;
                let stored = &model.tensors[source.tensor];
                Some((stored.shard, stored.stored.offset, t))
            })
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, _, t)| t).collect()
    }

    /// The base and model sources of merged tensor `t` (empty for copied tensors).
    fn sources(&self, t: usize) -> (Option<&FloatSource>, &[FloatSource]) {
        match &self.plan.tensors[t].kind {
            TensorKind::Merge { base, models, .. } => (base.as_ref(), models),
            TensorKind::Copy { .. } | TensorKind::Elsewhere { .. } => (None, &[]),
        }
    }

    /// Stored bytes the pass reads for tensor `t`.
    fn tensor_bytes<F: TensorFold>(&self, fold: &F, t: usize, read_base: bool) -> u64 {
        let (base, models) = self.sources(t);
        let base = base.filter(|_| read_base).map_or(0, |s| s.ty.size());
        let rounds = fold.rounds(&self.plan.tensors[t], models.len());
        let width: usize = rounds * models.iter().map(|s| s.ty.size()).sum::<usize>() + base;
        (width * self.plan.tensors[t].numel) as u64
    }

    /// Read, fold, finish, check and write tensor `t`.
    fn merge_tensor<F: TensorFold>(&self, fold: &F, t: usize, read_base: bool, writer: &Writer) -> Result<()> {
        let tensor = &self.plan.tensors[t];
        let (base_source, models) = self.sources(t);
        let (mut base_values, mut raw, mut encoded) = (Vec::new(), Vec::new(), Vec::new());
        let base = match (read_base, base_source, &self.inputs.base) {
            (false, _, _) => None,
            (true, Some(source), Some(ckpt)) => {
                self.read_whole(ckpt, tensor, source, &mut base_values, &mut raw)?;
                Some(base_values.as_slice())
            }
            (true, _, _) => return Err(MergeError::Internal("this pass needs the pretrained model".into())),
        };
        let out = fold_tensor(fold, tensor, models.len(), base, |i, theta| {
            self.read_whole(&self.inputs.models[i], tensor, &models[i], theta, &mut raw)
        })?;
        self.write_output(writer, t, 0, &out, &mut encoded)?;
        if self.streaming {
            self.drop_tensor(t, read_base);
        }
        Ok(())
    }

    /// Read all of `tensor` from `ckpt` into `buf`, checking it for NaN/Inf and counting its bytes.
    fn read_whole(
        &self,
        ckpt: &crate::checkpoint::Checkpoint,
        tensor: &PlanTensor,
        source: &FloatSource,
        buf: &mut Vec<f32>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        if self.monitor.is_cancelled() {
            return Err(MergeError::Cancelled);
        }
        buf.resize(tensor.numel, 0.0);
        ckpt.read_f32(&ckpt.tensors[source.tensor], source.ty, 0, buf, raw)?;
        let bad = count_nonfinite(buf);
        if bad > 0 {
            if !self.allow_nonfinite {
                return Err(MergeError::NonFinite {
                    model: ckpt.name.clone(),
                    tensor: tensor.name.clone(),
                    count: bad,
                    remedy: ALLOW_NONFINITE,
                });
            }
            self.nonfinite_inputs.fetch_add(bad, Ordering::Relaxed);
        }
        self.monitor.advance((tensor.numel * source.ty.size()) as u64);
        Ok(())
    }

    /// Drop tensor `t`'s input pages from the page cache (it has been read for the last time).
    fn drop_tensor(&self, t: usize, read_base: bool) {
        let (base, models) = self.sources(t);
        let models = models.iter().zip(&self.inputs.models);
        let base = base.filter(|_| read_base).into_iter().zip(&self.inputs.base);
        for (source, ckpt) in models.chain(base) {
            let stored = &ckpt.tensors[source.tensor];
            let len = (self.plan.tensors[t].numel * source.ty.size()) as u64;
            ckpt.advise(stored, stored.stored.offset, len, libc::POSIX_FADV_DONTNEED);
        }
    }
}

#[cfg(test)]
#[path = "whole_tests.rs"]
mod tests;
