//! The subspaces of one matrix: the common one from Σ τₜ, then each task's top directions outside it,
//! assembled and made isotropic.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

use crate::linalg::{Triplets, narrow, par, polar, product_into, top_triplets, widen, widen_mat};

/// (k, d): the common subspace's size and each task's, as FusionBench sizes them so that T divides r − k
/// (Python's round, half to even); `None` when that leaves no room (k < 0).
pub(super) fn subspace_sizes(rank: usize, models: usize, fraction: f64) -> Option<(usize, usize)> {
    let common = (rank as f64 * fraction) as usize;
    let per_task = ((rank - common) as f64 / models as f64).round_ties_even() as usize;
    let common = rank.checked_sub(per_task * models)?;
    Some((common, per_task))
}

/// The subspaces of an m × n matrix as they are found.
pub(crate) struct Spaces {
    rows: usize,
    cols: usize,
    per_task: usize,
    common: Triplets,
    /// Each task's directions (float32), block t for task t.
    u: Mat<f32>,
    v: Mat<f32>,
    s: Vec<f64>,
}

impl Spaces {
    /// The common subspace: the top `k` triplets of `sum` = Σ τₜ (m × n), with room for `models` tasks of
    /// `per_task` directions.
    pub(super) fn new(
        sum: Vec<f32>,
        (m, n): (usize, usize),
        (k, per_task): (usize, usize),
        models: usize,
    ) -> Result<Self, String> {
        let wide = widen(&sum, m, n);
        drop(sum);
        let common = top_triplets(wide.as_ref(), k)?;
        drop(wide);
        let width = per_task * models;
        Ok(Spaces {
            rows: m,
            cols: n,
            per_task,
            common,
            u: Mat::zeros(m, width),
            v: Mat::zeros(n, width),
            s: vec![0.0; width],
        })
    }

    /// Task `t`'s top directions outside the common subspace, from its task vector `tau`.
    pub(super) fn add_task(&mut self, t: usize, tau: &[f32]) -> Result<(), String> {
        let d = self.per_task;
        if d == 0 {
            return Ok(());
        }
        let own = top_triplets(
            outside(self.common.u.as_ref(), widen(tau, self.rows, self.cols)).as_ref(),
            d,
        )?;
        self.u.subcols_mut(t * d, d).copy_from(narrow(own.u.subcols(0, d)));
        self.v.subcols_mut(t * d, d).copy_from(narrow(own.v.subcols(0, d)));
        self.s[t * d..(t + 1) * d].copy_from_slice(&own.s[..d]);
        Ok(())
    }

    /// λ · P(U) · mean(s) · P(V)ᵀ into `out`, with U, V every task's directions then the common ones and P
    /// the polar factor.
    pub(super) fn isotropic(self, scale: f64, out: &mut [f32]) -> Result<(), String> {
        let tasks = self.s.len();
        let rank = tasks + self.common.s.len();
        let mean = (self.s.iter().sum::<f64>() + self.common.s.iter().sum::<f64>()) / rank as f64;
        let join = |own: &Mat<f32>, common: &Mat<f64>| {
            let mut all = Mat::zeros(own.nrows(), rank);
            all.subcols_mut(0, tasks).copy_from(widen_mat(own.as_ref()));
            all.subcols_mut(tasks, rank - tasks).copy_from(common);
            all
        };
        let pu = polar(join(&self.u, &self.common.u).as_ref())?;
        let pv = polar(join(&self.v, &self.common.v).as_ref())?;
        product_into(pu.as_ref(), &vec![mean; rank], pv.as_ref(), scale, out);
        Ok(())
    }
}

/// τ minus its projection on the common left singular vectors: τ − Uₖ Uₖᵀ τ.
fn outside(common: MatRef<'_, f64>, mut tau: Mat<f64>) -> Mat<f64> {
    let mut coords = Mat::zeros(common.ncols(), tau.ncols());
    matmul(
        coords.as_mut(),
        Accum::Replace,
        common.transpose(),
        tau.as_ref(),
        1.0,
        par(),
    );
    matmul(tau.as_mut(), Accum::Add, common, &coords, -1.0, par());
    tau
}
