//! Factorisations of float32 matrices that never hold a float64 copy of the whole matrix: Gram matrices,
//! projections and products are formed a block of rows at a time, widened as they are used. A matrix of
//! m × n then costs its Gram matrix (min(m, n)² in float64) and a few blocks, not 8·m·n bytes more; only the
//! SVD fallback for an ill-conditioned Gram matrix widens the whole matrix.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Side};

use super::{GRAM_RANGE, Triplets, narrow, par, thin_svd, widen_mat};

/// Rows widened at once.
const BLOCK: usize = 256;

/// [`polar_parts`] inverts aᵀa while its eigenvalues span at most this (singular values down to 10⁻⁶ of
/// the largest); the SVD takes over beyond. By the usual perturbation bound (not measured here), a direction
/// with singular value σ comes back to about 10⁻¹⁶·(σ₀/σ)², 10⁻⁴ at the limit; `a` is float32, whose
/// rounding already blurs directions below about 10⁻⁷·σ₀.
const POLAR_RANGE: f64 = 1e-12;

/// A row-major float32 matrix given as the scaled difference (θ − θ₀)·c of two (a task vector), each entry
/// rounded to float32 as the difference is, then widened.
pub(crate) struct RowMajor<'a> {
    theta: &'a [f32],
    base: &'a [f32],
    scale: f32,
    rows: usize,
    cols: usize,
}

impl<'a> RowMajor<'a> {
    /// The `rows` × `cols` matrix (θ − θ₀)·`scale`.
    pub(crate) fn difference(theta: &'a [f32], base: &'a [f32], scale: f32, rows: usize, cols: usize) -> Self {
        RowMajor {
            theta,
            base,
            scale,
            rows,
            cols,
        }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        let k = i * self.cols + j;
        f64::from((self.theta[k] - self.base[k]) * self.scale)
    }

    /// Whether the matrix has at least as many rows as columns (its Gram matrix is then AᵀA).
    fn tall(&self) -> bool {
        self.rows >= self.cols
    }

    /// (long side, short side).
    fn sides(&self) -> (usize, usize) {
        (self.rows.max(self.cols), self.rows.min(self.cols))
    }

    /// Lines `[start, start + len)` of the long side, as a len × short float64 matrix: rows of A when A is
    /// tall, rows of Aᵀ when it is wide.
    fn block(&self, start: usize, len: usize) -> Mat<f64> {
        let short = self.sides().1;
        if self.tall() {
            Mat::from_fn(len, short, |i, j| self.at(start + i, j))
        } else {
            Mat::from_fn(len, short, |i, j| self.at(j, start + i))
        }
    }

    fn widen(&self) -> Mat<f64> {
        Mat::from_fn(self.rows, self.cols, |i, j| self.at(i, j))
    }
}

/// Σ over blocks of Bᵀ·B, for `block(start, len)` yielding the blocks of a matrix with `long` rows.
fn gram_by_blocks(long: usize, short: usize, block: impl Fn(usize, usize) -> Mat<f64>) -> Mat<f64> {
    let mut gram = Mat::<f64>::zeros(short, short);
    for start in (0..long).step_by(BLOCK) {
        let b = block(start, BLOCK.min(long - start));
        matmul(gram.as_mut(), Accum::Add, b.transpose(), b.as_ref(), 1.0, par());
    }
    gram
}

/// The top `k` singular triplets of `a`, from the eigendecomposition of its Gram matrix (AᵀA or AAᵀ,
/// whichever is smaller), formed a block at a time; the SVD of the widened matrix when the kept values
/// span more than [`GRAM_RANGE`].
pub(crate) fn top_triplets_of(a: &RowMajor<'_>, k: usize) -> Result<Triplets, String> {
    let (long, short) = a.sides();
    let k = k.min(short);
    let (s, vectors) = {
        let gram = gram_by_blocks(long, short, |start, len| a.block(start, len));
        let evd = gram
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| format!("the eigendecomposition did not converge ({e:?})"))?;
        let s: Vec<f64> = (0..k).map(|i| evd.S()[short - 1 - i].max(0.0).sqrt()).collect();
        let vectors = Mat::from_fn(short, k, |i, j| evd.U()[(i, short - 1 - j)]);
        (s, vectors)
    };
    if k > 0 && s[k - 1] < s[0] * GRAM_RANGE {
        drop(vectors);
        return Ok(thin_svd(a.widen().as_ref())?.truncate(k));
    }
    let mut other = Mat::<f64>::zeros(long, k);
    for start in (0..long).step_by(BLOCK) {
        let len = BLOCK.min(long - start);
        let b = a.block(start, len);
        matmul(
            other.as_mut().subrows_mut(start, len),
            Accum::Replace,
            b.as_ref(),
            vectors.as_ref(),
            1.0,
            par(),
        );
    }
    for (j, sj) in s.iter().enumerate() {
        let inverse = if *sj > 0.0 { 1.0 / sj } else { 0.0 };
        other.col_mut(j).iter_mut().for_each(|x| *x *= inverse);
    }
    let (u, v) = if a.tall() { (other, vectors) } else { (vectors, other) };
    Ok(Triplets { u, s, v })
}

/// The rows `[start, start + len)` of a float32 matrix, widened.
fn widen_rows(a: MatRef<'_, f32>, start: usize, len: usize) -> Mat<f64> {
    Mat::from_fn(len, a.ncols(), |i, j| f64::from(a[(start + i, j)]))
}

/// The polar factor of the float32 m × k matrix `a` (m ≥ k) in two parts, `(B, W)` with polar(a) = B·W:
/// `(a, (aᵀa)^(−1/2))` from the eigendecomposition of aᵀa (formed a block at a time), or, when aᵀa is too
/// ill-conditioned to invert, the factor U·Vᵀ from the SVD rounded to float32 and the identity.
pub(crate) fn polar_parts(a: Mat<f32>) -> Result<(Mat<f32>, Mat<f64>), String> {
    let (m, k) = (a.nrows(), a.ncols());
    let gram = gram_by_blocks(m, k, |start, len| widen_rows(a.as_ref(), start, len));
    let evd = gram
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| format!("the eigendecomposition did not converge ({e:?})"))?;
    drop(gram);
    let largest = if k > 0 { evd.S()[k - 1] } else { 0.0 };
    if k == 0 || evd.S()[0] <= largest * POLAR_RANGE {
        drop(evd);
        let wide = widen_mat(a.as_ref());
        drop(a);
        let svd = thin_svd(wide.as_ref())?;
        drop(wide);
        let factor = &svd.u * svd.v.transpose();
        return Ok((narrow(factor.as_ref()), Mat::identity(k, k)));
    }
    let w = evd.U();
    let scaled = Mat::from_fn(k, k, |i, j| w[(i, j)] / evd.S()[j].sqrt());
    Ok((a, &scaled * w.transpose()))
}

/// `out` (row-major m × n) = scale · A·M·Bᵀ, rounded to float32, for float32 A (m × k) and B (n × k) and a
/// float64 M (k × k), formed a block of rows and columns at a time.
pub(crate) fn product_of_parts(
    a: MatRef<'_, f32>,
    mid: MatRef<'_, f64>,
    b: MatRef<'_, f32>,
    scale: f64,
    out: &mut [f32],
) {
    let (rows, cols) = (a.nrows(), b.nrows());
    let mut part = Mat::<f64>::zeros(BLOCK.min(rows), BLOCK.min(cols));
    for r0 in (0..rows).step_by(BLOCK) {
        let height = BLOCK.min(rows - r0);
        let mut left = Mat::<f64>::zeros(height, mid.ncols());
        matmul(
            left.as_mut(),
            Accum::Replace,
            widen_rows(a, r0, height).as_ref(),
            mid,
            scale,
            par(),
        );
        for c0 in (0..cols).step_by(BLOCK) {
            let width = BLOCK.min(cols - c0);
            let right = widen_rows(b, c0, width);
            let mut block: MatMut<'_, f64> = part.as_mut().submatrix_mut(0, 0, height, width);
            matmul(
                block.as_mut(),
                Accum::Replace,
                left.as_ref(),
                right.transpose(),
                1.0,
                par(),
            );
            for i in 0..height {
                let row = &mut out[(r0 + i) * cols + c0..(r0 + i) * cols + c0 + width];
                for (j, o) in row.iter_mut().enumerate() {
                    *o = block[(i, j)] as f32;
                }
            }
        }
    }
}

/// Bytes [`top_triplets_of`] holds for an m × n matrix and k triplets on the Gram route: the Gram matrix and
/// its eigendecomposition (five times min(m, n)² in float64, measured), the kept vectors, a block.
pub(crate) fn top_triplets_bytes(m: usize, n: usize, k: usize) -> usize {
    let (long, short) = (m.max(n), m.min(n));
    8 * (5 * short * short + k * (long + short) + BLOCK * short)
}

/// Bytes [`polar_parts`] holds for a matrix of k columns besides it on the Gram route: the Gram matrix, its
/// eigendecomposition and the factor. Its SVD fallback, for a matrix within 10⁻⁶ of singular, holds more
/// (faer's thin SVD of a float64 1024 × 1024 matrix: 73 MB).
pub(crate) fn polar_parts_bytes(k: usize) -> usize {
    8 * (6 * k * k + BLOCK * k)
}

/// Bytes [`product_of_parts`] holds: its blocks.
pub(crate) fn product_bytes(k: usize) -> usize {
    8 * (2 * BLOCK * k + BLOCK * BLOCK)
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_same_triplets;
    use super::super::{polar, product_into, top_triplets, widen};
    use super::*;

    fn ok<T>(result: Result<T, String>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A deterministic m × n row-major matrix.
    fn matrix(m: usize, n: usize, seed: u64) -> Vec<f32> {
        let stream = crate::rng::stream(seed, "blocked", 0);
        (0..m * n)
            .map(|i| crate::rng::uniform(stream, i as u64) as f32 - 0.5)
            .collect()
    }

    #[test]
    fn blocked_triplets_equal_the_whole_matrix_ones() {
        for (m, n) in [(600, 40), (40, 600)] {
            let (theta, base) = (matrix(m, n, 1), matrix(m, n, 2));
            let tau: Vec<f32> = theta.iter().zip(&base).map(|(x, b)| (x - b) * 0.5).collect();
            let want = ok(top_triplets(widen(&tau, m, n).as_ref(), 7));
            let got = ok(top_triplets_of(&RowMajor::difference(&theta, &base, 0.5, m, n), 7));
            assert_same_triplets(&got, &want, 7, 1e-10, 1e-9);
        }
    }

    #[test]
    fn the_polar_parts_of_zero_columns_are_finite() {
        // Two LoRA adapters leave a tensor's task vectors zero: their directions are zero columns.
        let (b, w) = ok(polar_parts(Mat::<f32>::zeros(6, 3)));
        assert!(b.col_iter().flat_map(|c| c.iter().copied()).all(f32::is_finite));
        assert!(w.col_iter().flat_map(|c| c.iter().copied()).all(f64::is_finite));
    }

    #[test]
    fn the_product_of_polar_parts_is_the_product_of_polar_factors() {
        // The square stack has two equal columns, so its Gram matrix is singular and the SVD route is taken.
        for (m, n, k) in [(300, 280, 20), (30, 30, 30)] {
            let values = matrix(m, k, 3);
            let u = Mat::from_fn(m, k, |i, j| values[i * k + if m == k { j.max(1) } else { j }]);
            let values = matrix(n, k, 4);
            let v = Mat::from_fn(n, k, |i, j| values[i * k + j]);
            let s: Vec<f64> = (0..k).map(|i| 1.0 + i as f64).collect();
            let (pu, pv) = (
                ok(polar(widen_mat(u.as_ref()).as_ref())),
                ok(polar(widen_mat(v.as_ref()).as_ref())),
            );
            let mut want = vec![0.0; m * n];
            product_into(pu.as_ref(), &s, pv.as_ref(), 0.7, &mut want);
            let ((bu, wu), (bv, wv)) = (ok(polar_parts(u)), ok(polar_parts(v)));
            let mid = Mat::from_fn(k, k, |i, j| (0..k).map(|l| wu[(i, l)] * s[l] * wv[(j, l)]).sum::<f64>());
            let mut got = vec![0.0; m * n];
            product_of_parts(bu.as_ref(), mid.as_ref(), bv.as_ref(), 0.7, &mut got);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(err < 1e-5, "{m}×{n}, k = {k}: {err}");
        }
    }
}
