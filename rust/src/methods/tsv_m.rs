//! TSV-M (Gargiulo et al., 2025), after FusionBench's `TaskSingularVectorMerging`: per matrix, each task
//! vector keeps its top ⌊r/T⌋ singular triplets, placed in block t; the stacked singular vectors are
//! orthogonalised through their polar factors; result = U · diag(s) · Vᵀ. Other tensors take the mean
//! task vector. θ = θ₀ + α · result, or, with one α per task, each τₜ is scaled by αₜ before the SVD.
//! Each model's triplets are folded in as it is read, so only r of them are held.

use faer::Mat;

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::linalg::{gram_bytes, narrow, polar, product_into, top_triplets, widen, widen_mat};
use crate::method::subspace::{self, EXCLUDE_KEYS, Matrices, add_base_in_place, fold_mean, task_vector};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "tsv_m",
    summary: "task singular vectors: each task's top r/T singular directions, decorrelated",
    paper: "https://arxiv.org/abs/2412.00081",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "alpha",
            kind: ParamKind::FloatOrList,
            default: ParamDefault::Number(1.0),
            help: "α: scales the merged task vector, or (one per model) each task vector before the SVD",
        },
        EXCLUDE_KEYS,
    ],
    build,
};

#[derive(Debug)]
struct TsvM {
    /// α applied to the result.
    alpha: f32,
    /// αₜ applied to each task vector, when given per task.
    per_task: Option<Vec<f32>>,
    matrices: Matrices,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let per_task = p.floats("alpha").map(|a| a.iter().map(|&x| x as f32).collect());
    let alpha = if per_task.is_some() { 1.0 } else { p.f32("alpha")? };
    Ok(Box::new(TsvM {
        alpha,
        per_task,
        matrices: Matrices::from_params(p),
    }))
}

impl MergeMethod for TsvM {
    fn validate(&self, models: usize) -> Result<()> {
        match &self.per_task {
            Some(a) if a.len() != models => Err(MergeError::arg(format!(
                "tsv_m: {} alpha values given for {models} models",
                a.len()
            ))),
            _ => Ok(()),
        }
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

/// One tensor in progress.
pub(crate) enum Acc {
    /// A matrix: the kept triplets of each task so far, `per_task` of them each (vectors in float32).
    Matrix {
        u: Mat<f32>,
        s: Vec<f64>,
        v: Mat<f32>,
        per_task: usize,
    },
    /// Any other tensor: the running mean of the task vectors.
    Mean(Vec<f32>),
}

/// Triplets kept per task: FusionBench's int(r · (1/T)).
fn kept(rank: usize, models: usize) -> usize {
    (rank as f64 * (1.0 / models as f64)) as usize
}

impl TsvM {
    fn failed(tensor: &PlanTensor) -> impl Fn(String) -> MergeError + '_ {
        subspace::failed("tsv_m", tensor)
    }
}

impl TensorFold for TsvM {
    type Acc = Acc;

    fn footprint(&self, tensor: &PlanTensor, _models: usize) -> usize {
        match self.matrices.shape(tensor) {
            Some((m, n)) => 4 * (m + n) * m.min(n) + gram_bytes(m, n),
            None => 4 * tensor.numel,
        }
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Acc> {
        Ok(match self.matrices.shape(tensor) {
            Some((m, n)) => {
                let per_task = kept(m.min(n), models);
                let width = per_task * models;
                Acc::Matrix {
                    u: Mat::zeros(m, width),
                    s: vec![0.0; width],
                    v: Mat::zeros(n, width),
                    per_task,
                }
            }
            None => Acc::Mean(Vec::new()),
        })
    }

    fn add(&self, acc: &mut Acc, tensor: &PlanTensor, t: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        let scale = self.per_task.as_ref().map_or(1.0, |a| a[t]);
        match acc {
            Acc::Mean(mean) => fold_mean(mean, t, &task_vector(theta, base, scale)?),
            Acc::Matrix { u, s, v, per_task } => {
                let Some((m, n)) = self.matrices.shape(tensor) else {
                    return Err(MergeError::Internal("tsv_m: a matrix lost its shape".into()));
                };
                let d = *per_task;
                if d == 0 {
                    return Ok(());
                }
                let tau = widen(&task_vector(theta, base, scale)?, m, n);
                let svd = top_triplets(tau.as_ref(), d).map_err(Self::failed(tensor))?;
                drop(tau);
                u.subcols_mut(t * d, d).copy_from(narrow(svd.u.subcols(0, d)));
                v.subcols_mut(t * d, d).copy_from(narrow(svd.v.subcols(0, d)));
                s[t * d..(t + 1) * d].copy_from_slice(&svd.s[..d]);
            }
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match acc {
            Acc::Mean(mean) => {
                for (o, x) in out.iter_mut().zip(&mean) {
                    *o = x * self.alpha;
                }
            }
            Acc::Matrix { s, .. } if s.is_empty() => out.fill(0.0),
            Acc::Matrix { u, s, v, .. } => {
                let pu = polar(widen_mat(u.as_ref()).as_ref()).map_err(Self::failed(tensor))?;
                drop(u);
                let pv = polar(widen_mat(v.as_ref()).as_ref()).map_err(Self::failed(tensor))?;
                product_into(pu.as_ref(), &s, pv.as_ref(), f64::from(self.alpha), out);
            }
        }
        add_base_in_place(out, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_task_keeps_r_over_t_triplets_as_fusion_bench_rounds() {
        assert_eq!(kept(768, 8), 96);
        assert_eq!(kept(10, 3), 3);
        assert_eq!(kept(2, 8), 0);
        assert_eq!(kept(49, 7), 7);
    }
}
