//! Dense linear algebra for the subspace methods, on faer: thin SVDs, polar factors and products. Inputs
//! are row-major float32 matrices (the safetensors layout); the factorisations run in float64, which keeps
//! truncated singular subspaces accurate where float32's would drift (10× further from an exact result
//! than LAPACK's float32, measured on random task vectors). Each runs on one thread (faer's parallel SVD was
//! slower on two cores, 0.83 s against 0.63 s for 4096 × 1024) and tensors run in parallel instead, so
//! results do not depend on the number of threads. The routines here take a whole float64 matrix;
//! [`blocked`]'s widen a float32 one a block at a time instead.

use std::sync::Once;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

mod blocked;

pub(crate) use blocked::{
    RowMajor, polar_parts, polar_parts_bytes, product_bytes, product_of_parts, top_triplets_bytes, top_triplets_of,
};

/// The parallelism of every faer call: sequential (set as faer's global too, which its SVD reads).
pub(crate) fn par() -> Par {
    static SET: Once = Once::new();
    SET.call_once(|| faer::set_global_parallelism(Par::Seq));
    Par::Seq
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

/// A float32 matrix, widened.
pub(crate) fn widen_mat(a: MatRef<'_, f32>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| f64::from(a[(i, j)]))
}

/// A float64 matrix rounded to float32 (for singular vectors held between models: half the memory).
pub(crate) fn narrow(a: MatRef<'_, f64>) -> Mat<f32> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)] as f32)
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

/// Rows of a product formed at once in [`product_into`].
const PRODUCT_ROWS: usize = 256;

/// `out` (row-major m × n) = scale · U · diag(s) · Vᵀ, rounded to float32, formed a block of rows at a time.
pub(crate) fn product_into(u: MatRef<'_, f64>, s: &[f64], v: MatRef<'_, f64>, scale: f64, out: &mut [f32]) {
    let sv = Mat::from_fn(v.nrows(), v.ncols(), |i, j| v[(i, j)] * s[j] * scale);
    let (rows, cols) = (u.nrows(), v.nrows());
    let mut block = Mat::<f64>::zeros(PRODUCT_ROWS.min(rows), cols);
    for start in (0..rows).step_by(PRODUCT_ROWS) {
        let height = PRODUCT_ROWS.min(rows - start);
        let mut part = block.as_mut().subrows_mut(0, height);
        matmul(
            part.as_mut(),
            Accum::Replace,
            u.subrows(start, height),
            sv.transpose(),
            1.0,
            par(),
        );
        for (i, row) in out[start * cols..(start + height) * cols]
            .chunks_exact_mut(cols)
            .enumerate()
        {
            for (j, o) in row.iter_mut().enumerate() {
                *o = part[(i, j)] as f32;
            }
        }
    }
}

/// The Gram route squares the condition number: it is taken only while every kept singular value is at
/// least this share of the largest, so float64 keeps each direction to 1e-8 or better; otherwise the SVD.
const GRAM_RANGE: f64 = 1e-4;

/// The top `k` singular triplets of `a`, from the eigendecomposition of its Gram matrix (AᵀA or AAᵀ,
/// whichever is smaller): 2–3× faster than a full SVD with half its memory or less, and in float64 as
/// accurate as a float32 input allows. Falls back to the SVD when the kept values span more than
/// [`GRAM_RANGE`].
pub(crate) fn top_triplets(a: MatRef<'_, f64>, k: usize) -> Result<Triplets, String> {
    let tall = a.nrows() >= a.ncols();
    let k = k.min(a.nrows().min(a.ncols()));
    let gram = if tall { a.transpose() * a } else { a * a.transpose() };
    let evd = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| format!("the eigendecomposition did not converge ({e:?})"))?;
    let dim = gram.nrows();
    let s: Vec<f64> = (0..k).map(|i| evd.S()[dim - 1 - i].max(0.0).sqrt()).collect();
    if k == 0 {
        return Ok(Triplets {
            u: Mat::zeros(a.nrows(), 0),
            s,
            v: Mat::zeros(a.ncols(), 0),
        });
    }
    if s[k - 1] <= s[0] * GRAM_RANGE {
        return Ok(thin_svd(a)?.truncate(k));
    }
    let vectors = Mat::from_fn(dim, k, |i, j| evd.U()[(i, dim - 1 - j)]);
    let mut other = if tall { a * &vectors } else { a.transpose() * &vectors };
    for (j, sj) in s.iter().enumerate() {
        other.col_mut(j).iter_mut().for_each(|x| *x /= sj);
    }
    let (u, v) = if tall { (other, vectors) } else { (vectors, other) };
    Ok(Triplets { u, s, v })
}

/// The polar factor of `a` (m × k, m ≥ k): the nearest matrix with orthonormal columns, U·Vᵀ from its SVD,
/// computed as A·(AᵀA)^(−1/2) from the eigendecomposition of AᵀA (the SVD's route when AᵀA is singular).
pub(crate) fn polar(a: MatRef<'_, f64>) -> Result<Mat<f64>, String> {
    let gram = a.transpose() * a;
    let evd = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| format!("the eigendecomposition did not converge ({e:?})"))?;
    let k = gram.nrows();
    let largest = if k > 0 { evd.S()[k - 1] } else { 0.0 };
    if k == 0 || evd.S()[0] <= largest * GRAM_RANGE * GRAM_RANGE {
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
        return Ok(p);
    }
    let w = evd.U();
    let scaled = Mat::from_fn(k, k, |i, j| w[(i, j)] / evd.S()[j].sqrt());
    let inverse_root = &scaled * w.transpose();
    Ok(a * &inverse_root)
}

/// Bytes [`top_triplets`] and [`polar`] hold for an m × n matrix: the widened copy, the Gram matrix, its
/// eigendecomposition and the product. Their SVD fallback holds more (faer's thin SVD of 4096 × 1024 in
/// float64: 138 MB measured).
pub(crate) fn gram_bytes(m: usize, n: usize) -> usize {
    let r = m.min(n);
    8 * (2 * m * n + 4 * r * r)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The first `k` singular values agree to `s_tol` (relative to the largest) and the left vectors to
    /// `dot_tol` (up to sign).
    pub(crate) fn assert_same_triplets(got: &Triplets, want: &Triplets, k: usize, s_tol: f64, dot_tol: f64) {
        for j in 0..k {
            assert!((got.s[j] - want.s[j]).abs() < s_tol * want.s[0], "value {j}");
            let dot: f64 = (0..want.u.nrows()).map(|i| got.u[(i, j)] * want.u[(i, j)]).sum();
            assert!((dot.abs() - 1.0).abs() < dot_tol, "column {j}: {dot}");
        }
    }

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
    fn the_gram_route_agrees_with_the_svd() {
        for (m, n) in [(9, 5), (5, 9)] {
            let a = widen(&matrix(m, n), m, n);
            let svd = thin_svd(a.as_ref()).unwrap_or_else(|e| panic!("{e}"));
            let top = top_triplets(a.as_ref(), 3).unwrap_or_else(|e| panic!("{e}"));
            assert_same_triplets(&top, &svd, 3, 1e-12, 1e-10);
        }
    }

    #[test]
    fn a_zero_matrix_has_zero_singular_values_and_finite_vectors() {
        // A LoRA adapter's untargeted tensors have zero task vectors: no division by a zero singular value.
        for (m, n) in [(6, 4), (4, 6)] {
            let t = top_triplets(Mat::<f64>::zeros(m, n).as_ref(), 3).unwrap_or_else(|e| panic!("{e}"));
            assert!(t.s.iter().all(|&s| s == 0.0));
            assert!(
                t.u.col_iter()
                    .chain(t.v.col_iter())
                    .flat_map(|c| c.iter().copied())
                    .all(f64::is_finite)
            );
        }
        let p = polar(Mat::<f64>::zeros(5, 2).as_ref()).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.col_iter().flat_map(|c| c.iter().copied()).all(f64::is_finite));
    }

    #[test]
    fn the_polar_factor_of_a_rank_deficient_matrix_falls_back_to_the_svd() {
        let a = Mat::from_fn(4, 2, |i, _| i as f64 + 1.0);
        let p = polar(a.as_ref()).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.col(0).iter().all(|x| x.is_finite()));
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
