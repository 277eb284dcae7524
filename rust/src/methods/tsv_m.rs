//! TSV-M (Gargiulo et al., 2025), after FusionBench's `TaskSingularVectorMerging`: per matrix, each task
//! vector keeps its top ⌊r/T⌋ singular triplets, placed in block t; the stacked singular vectors are
//! orthogonalised through their polar factors; result = U · diag(s) · Vᵀ. Other tensors take the mean
//! task vector. θ = θ₀ + α · result, or, with one α per task, each τₜ is scaled by αₜ before the SVD.
//! Each model's triplets are folded in as it is read, so only r of them are held, and no float64 copy of a
//! whole matrix is made (`linalg::blocked`).

use faer::Mat;

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::linalg::{
    RowMajor, polar_parts, polar_parts_bytes, product_bytes, product_of_parts, top_triplets_bytes, top_triplets_of,
};
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

    /// The kept triplets, and the larger of one task's factorisation and the finish (the second polar factor
    /// beside the first's k × k part, then three k × k parts and the product's blocks). The SVD fallbacks of
    /// near-singular matrices hold more.
    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        match self.matrices.shape(tensor) {
            Some((m, n)) => {
                let width = kept(m.min(n), models) * models;
                let (held, square) = (4 * (m + n) * width, 8 * width * width);
                let adding = top_triplets_bytes(m, n, kept(m.min(n), models));
                let finishing = (square + polar_parts_bytes(width)).max(3 * square + product_bytes(width));
                held + adding.max(finishing)
            }
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
                let base = base.ok_or_else(|| MergeError::Internal("tsv_m reads the pretrained model".into()))?;
                let tau = RowMajor::difference(theta, base, scale, m, n);
                let svd = top_triplets_of(&tau, d).map_err(Self::failed(tensor))?;
                u.subcols_mut(t * d, d)
                    .copy_from(svd.u.subcols(0, d).map(|&x| x as f32));
                v.subcols_mut(t * d, d)
                    .copy_from(svd.v.subcols(0, d).map(|&x| x as f32));
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
                // polar(U)·diag(s)·polar(V)ᵀ = Bu·(Wu·diag(s)·Wvᵀ)·Bvᵀ, formed a block at a time.
                let (bu, wu) = polar_parts(u).map_err(Self::failed(tensor))?;
                let (bv, wv) = polar_parts(v).map_err(Self::failed(tensor))?;
                let scaled = Mat::from_fn(wv.nrows(), wv.ncols(), |i, j| wv[(i, j)] * s[j]);
                drop(wv);
                let mid = &wu * scaled.transpose();
                product_of_parts(bu.as_ref(), mid.as_ref(), bv.as_ref(), f64::from(self.alpha), out);
            }
        }
        add_base_in_place(out, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        let method = TsvM {
            alpha: 1.0,
            per_task: None,
            matrices: Matrices::default(),
        };
        assert_declared_working_set_is_honest(&method, 8);
    }

    #[test]
    fn each_task_keeps_r_over_t_triplets_as_fusion_bench_rounds() {
        assert_eq!(kept(768, 8), 96);
        assert_eq!(kept(10, 3), 3);
        assert_eq!(kept(2, 8), 0);
        assert_eq!(kept(49, 7), 7);
    }
}
