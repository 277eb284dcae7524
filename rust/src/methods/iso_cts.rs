//! Iso-CTS (Marczak et al., 2025), after FusionBench's `iso_cts`: per matrix, the top-k singular
//! directions of Σ τₜ form a common subspace; each task adds its top d directions outside it, with
//! r − k = T·d; the stacked singular vectors are orthogonalised through their polar factors and every
//! singular value is replaced by their mean. Other tensors take the mean task vector. θ = θ₀ + λ · result.
//! Every task vector of a matrix is held until the common subspace is known (each model is read once).

use faer::Accum;
use faer::Mat;
use faer::linalg::matmul::matmul;

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::linalg::{Triplets, par, polar, product_into, svd_bytes, thin_svd, widen};
use crate::method::subspace::{EXCLUDE_KEYS, Matrices, add_base_in_place, fold_mean, task_vector};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::methods::iso_c::ISO_SCALING_FACTOR;
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "iso_cts",
    summary: "isotropic merging in common and task-specific subspaces",
    paper: "https://arxiv.org/abs/2502.04959",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        ISO_SCALING_FACTOR,
        ParamDef {
            name: "common_space_fraction",
            kind: ParamKind::F64 { min: 0.0, max: 1.0 },
            default: ParamDefault::Number(0.8),
            help: "share of each matrix's rank given to the common subspace, in (0, 1)",
        },
        EXCLUDE_KEYS,
    ],
    build,
};

#[derive(Debug)]
struct IsoCts {
    scaling_factor: f32,
    common_space_fraction: f64,
    matrices: Matrices,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let fraction = p.f64("common_space_fraction")?;
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(MergeError::arg(format!(
            "iso_cts: parameter 'common_space_fraction' must be in (0, 1) (got {fraction})"
        )));
    }
    Ok(Box::new(IsoCts {
        scaling_factor: p.f32("scaling_factor")?,
        common_space_fraction: fraction,
        matrices: Matrices::from_params(p),
    }))
}

impl MergeMethod for IsoCts {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

/// One tensor in progress.
pub(crate) enum Acc {
    /// A matrix: every task vector so far.
    Matrix(Vec<Vec<f32>>),
    /// Any other tensor: the running mean of the task vectors.
    Mean(Vec<f32>),
}

/// (k, d): the common subspace's size and each task's, as FusionBench sizes them so that T divides r − k
/// (Python's round, half to even); `None` when that leaves no room (k < 0).
fn subspace_sizes(rank: usize, models: usize, fraction: f64) -> Option<(usize, usize)> {
    let common = (rank as f64 * fraction) as usize;
    let per_task = ((rank - common) as f64 / models as f64).round_ties_even() as usize;
    let common = rank.checked_sub(per_task * models)?;
    Some((common, per_task))
}

impl IsoCts {
    fn failed(tensor: &PlanTensor) -> impl Fn(String) -> MergeError + '_ {
        move |reason| MergeError::MethodFailed {
            method: "iso_cts",
            tensor: tensor.name.clone(),
            reason,
        }
    }

    /// The merged task vector of an m × n matrix into `out`.
    fn merge_matrix(
        &self,
        tensor: &PlanTensor,
        taus: &[Vec<f32>],
        (m, n): (usize, usize),
        out: &mut [f32],
    ) -> Result<()> {
        let rank = m.min(n);
        let (k, d) = subspace_sizes(rank, taus.len(), self.common_space_fraction).ok_or_else(|| {
            Self::failed(tensor)(format!(
                "rank {rank} cannot be split between a common subspace and {} tasks; raise common_space_fraction",
                taus.len()
            ))
        })?;
        let mut sum = vec![0.0f32; m * n];
        for tau in taus {
            for (s, x) in sum.iter_mut().zip(tau) {
                *s += x;
            }
        }
        let common = thin_svd(widen(&sum, m, n).as_ref())
            .map_err(Self::failed(tensor))?
            .truncate(k);
        drop(sum);
        let mut u = Mat::zeros(m, rank);
        let mut v = Mat::zeros(n, rank);
        let mut s = vec![0.0f64; rank];
        for (t, tau) in taus.iter().enumerate().filter(|_| d > 0) {
            let own = thin_svd(outside(&common, widen(tau, m, n)).as_ref()).map_err(Self::failed(tensor))?;
            u.subcols_mut(t * d, d).copy_from(own.u.subcols(0, d));
            v.subcols_mut(t * d, d).copy_from(own.v.subcols(0, d));
            s[t * d..(t + 1) * d].copy_from_slice(&own.s[..d]);
        }
        let at = taus.len() * d;
        u.subcols_mut(at, k).copy_from(&common.u);
        v.subcols_mut(at, k).copy_from(&common.v);
        s[at..].copy_from_slice(&common.s);
        let mean = s.iter().sum::<f64>() / rank as f64;
        let pu = polar(u.as_ref()).map_err(Self::failed(tensor))?;
        let pv = polar(v.as_ref()).map_err(Self::failed(tensor))?;
        product_into(
            pu.as_ref(),
            &vec![mean; rank],
            pv.as_ref(),
            f64::from(self.scaling_factor),
            out,
        );
        Ok(())
    }
}

/// τ minus its projection on the common subspace's left singular vectors: τ − Uₖ Uₖᵀ τ.
fn outside(common: &Triplets, mut tau: Mat<f64>) -> Mat<f64> {
    let par = par();
    let mut coords = Mat::zeros(common.u.ncols(), tau.ncols());
    matmul(
        coords.as_mut(),
        Accum::Replace,
        common.u.transpose(),
        tau.as_ref(),
        1.0,
        par,
    );
    matmul(tau.as_mut(), Accum::Add, &common.u, &coords, -1.0, par);
    tau
}

impl TensorFold for IsoCts {
    type Acc = Acc;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        match self.matrices.shape(tensor) {
            Some((m, n)) => 4 * (models + 1) * tensor.numel + 8 * (m + n) * m.min(n) + svd_bytes(m, n),
            None => 4 * tensor.numel,
        }
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Acc> {
        Ok(match self.matrices.shape(tensor) {
            Some(_) => Acc::Matrix(Vec::with_capacity(models)),
            None => Acc::Mean(Vec::new()),
        })
    }

    fn add(&self, acc: &mut Acc, _: &PlanTensor, t: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        let tau = task_vector(theta, base, 1.0)?;
        match acc {
            Acc::Matrix(taus) => taus.push(tau),
            Acc::Mean(mean) => fold_mean(mean, t, &tau),
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match acc {
            Acc::Mean(mean) => {
                for (o, x) in out.iter_mut().zip(&mean) {
                    *o = x * self.scaling_factor;
                }
            }
            Acc::Matrix(taus) => {
                let shape = self
                    .matrices
                    .shape(tensor)
                    .ok_or_else(|| MergeError::Internal("iso_cts: a matrix lost its shape".into()))?;
                self.merge_matrix(tensor, &taus, shape, out)?;
            }
        }
        add_base_in_place(out, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subspaces_are_sized_as_fusion_bench_sizes_them() {
        // r = 768, T = 8, 0.8: k₀ = 614, (768 − 614)/8 = 19.25 → 19, k = 768 − 152 = 616.
        assert_eq!(subspace_sizes(768, 8, 0.8), Some((616, 19)));
        // Python rounds half to even: (10 − 5)/2 = 2.5 → 2.
        assert_eq!(subspace_sizes(10, 2, 0.5), Some((6, 2)));
        assert_eq!(subspace_sizes(3, 4, 0.1), None);
    }
}
