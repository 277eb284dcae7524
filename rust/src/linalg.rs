//! Dense linear algebra for the subspace methods, on faer: thin SVDs, polar factors and products. Inputs
//! are row-major float32 matrices (the safetensors layout); the factorisations run in float64, which keeps
//! truncated singular subspaces accurate where float32's would drift (10× further from an exact result
//! than LAPACK's float32, measured on random task vectors). They run in the calling rayon pool, always split
//! the same number of ways, so their results do not depend on the number of threads.

use std::sync::Once;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

/// Ways every factorisation and product is split, whatever the thread count (faer's results depend on the
/// split, not on the threads that run it).
const SPLITS: usize = 4;

/// The parallelism of every faer call (set as faer's global too, which its SVD reads).
pub(crate) fn par() -> Par {
    static SET: Once = Once::new();
    let par = Par::rayon(SPLITS);
    SET.call_once(|| faer::set_global_parallelism(par));
    par
}

/// Singular triplets of a matrix: `u` is m × k, `v` is n × k, `s` non-increasing.
pub(crate) struct Triplets {
    pub(crate) u: Mat<f64>,
    pub(crate) s: Vec<f64>,
    pub(crate) v: Mat<f64>,
}

/// The row-major `rows` × `cols` float32 matrix `data`, widened.
pub(crate) fn widen(data: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| f64::from(data[i * cols + j]))
}

/// The thin SVD of `a` (all min(m, n) triplets), or why it failed.
pub(crate) fn thin_svd(a: MatRef<'_, f64>) -> Result<Triplets, String> {
    par();
    let svd = a.thin_svd().map_err(|e| format!("the SVD did not converge ({e:?})"))?;
    let s = (0..svd.S().dim()).map(|i| svd.S()[i]).collect();
    Ok(Triplets {
        u: svd.U().to_owned(),
        s,
        v: svd.V().to_owned(),
    })
}

impl Triplets {
    /// The first `k` triplets.
    pub(crate) fn truncate(self, k: usize) -> Triplets {
        let k = k.min(self.s.len());
        Triplets {
            u: self.u.subcols(0, k).to_owned(),
            s: self.s[..k].to_vec(),
            v: self.v.subcols(0, k).to_owned(),
        }
    }
}

/// `out` (row-major m × n) = scale · U · diag(s) · Vᵀ, rounded to float32.
pub(crate) fn product_into(u: MatRef<'_, f64>, s: &[f64], v: MatRef<'_, f64>, scale: f64, out: &mut [f32]) {
    let us = Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * s[j]);
    let mut product = Mat::<f64>::zeros(u.nrows(), v.nrows());
    matmul(
        product.as_mut(),
        Accum::Replace,
        us.as_ref(),
        v.transpose(),
        scale,
        par(),
    );
    let cols = v.nrows();
    for (k, o) in out.iter_mut().enumerate() {
        *o = product[(k / cols, k % cols)] as f32;
    }
}

/// The polar factor of `a` (m × k, m ≥ k): the nearest matrix with orthonormal columns, U·Vᵀ from its SVD.
pub(crate) fn polar(a: MatRef<'_, f64>) -> Result<Mat<f64>, String> {
    let svd = thin_svd(a)?;
    let mut p = Mat::zeros(a.nrows(), a.ncols());
    matmul(
        p.as_mut(),
        Accum::Replace,
        svd.u.as_ref(),
        svd.v.transpose(),
        1.0,
        par(),
    );
    Ok(p)
}

/// Bytes a thin SVD of an m × n matrix holds, roughly: the widened copy, its factors and faer's work.
pub(crate) fn svd_bytes(m: usize, n: usize) -> usize {
    let r = m.min(n);
    8 * (2 * m * n + (m + n) * r + r * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic m × n row-major matrix.
    fn matrix(m: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect()
    }

    #[test]
    fn the_svd_reconstructs_the_matrix() {
        for (m, n) in [(6, 4), (4, 6)] {
            let a = matrix(m, n);
            let svd = thin_svd(widen(&a, m, n).as_ref()).unwrap_or_else(|e| panic!("{e}"));
            assert!(svd.s.windows(2).all(|w| w[0] >= w[1]));
            let mut back = vec![0.0; m * n];
            product_into(svd.u.as_ref(), &svd.s, svd.v.as_ref(), 1.0, &mut back);
            for (x, y) in a.iter().zip(&back) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn the_polar_factor_has_orthonormal_columns() {
        let a = widen(&matrix(7, 3), 7, 3);
        let p = polar(a.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        let gram = p.transpose() * &p;
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[(i, j)] - want).abs() < 1e-12);
            }
        }
    }
}
