//! The inner loops that form ΔW = s·P·Q from a LoRA module's factors: one block of a row at a time, or four whole
//! rows at a time so that each load of Q serves all four. Every element is Σₖ P[i, k]·Q[k, j] summed in f32 in
//! order, then scaled, as `(B @ A) * s` is, so both give the same bits.

/// Columns of ΔW formed at once by [`add_block`], their sums held in vector registers across the rank.
pub(super) const BLOCK: usize = 64;

crate::simd::dispatched! {
    /// out += s·(Σₖ p[k]·Q[k, first..first + n]) for the r × `cols` row-major Q and n ≤ [`BLOCK`]: the sum over k
    /// in order, then scaled, one block of a row of ΔW (every version gives the same bits).
    pub(super) fn add_block(out: &mut [f32], p: &[f32], q: &[f32], cols: usize, first: usize, scale: f32) {
        let n = out.len();
        let mut acc = [0.0f32; BLOCK];
        if n == BLOCK {
            for (k, &c) in p.iter().enumerate() {
                let row: &[f32; BLOCK] = q[k * cols + first..][..BLOCK]
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a slice of BLOCK elements"));
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += c * x;
                }
            }
        } else {
            for (k, &c) in p.iter().enumerate() {
                for (a, &x) in acc.iter_mut().zip(&q[k * cols + first..][..n]) {
                    *a += c * x;
                }
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o += a * scale;
        }
    }
}

/// Rows of ΔW formed together by [`add_rows`], each load of Q serving all of them.
pub(super) const ROWS: usize = 4;
/// Columns of those rows formed at once (ROWS × NARROW = 64 sums: eight AVX2 registers, four AVX-512 ones).
const NARROW: usize = 16;

crate::simd::dispatched! {
    /// out += s·P·Q for [`ROWS`] whole rows of ΔW: `out` is ROWS × `cols`, `p` their ROWS × r factor rows, Q the
    /// r × `cols` factor. Each element is summed over k in order, then scaled, as in [`add_block`] (the same bits).
    pub(super) fn add_rows(out: &mut [f32], p: &[f32], q: &[f32], cols: usize, scale: f32) {
        let rank = p.len() / ROWS;
        // P's rows side by side, by k: the factor of every row for one row of Q is one load away.
        let mut by_k = vec![[0.0f32; ROWS]; rank];
        for (r, row) in p.chunks_exact(rank).enumerate() {
            for (c, &x) in by_k.iter_mut().zip(row) {
                c[r] = x;
            }
        }
        let mut first = 0;
        while first + NARROW <= cols {
            let mut acc = [[0.0f32; NARROW]; ROWS];
            for (c, q_row) in by_k.iter().zip(q.chunks_exact(cols)) {
                let row: &[f32; NARROW] = q_row[first..first + NARROW]
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("a slice of NARROW elements"));
                for r in 0..ROWS {
                    for j in 0..NARROW {
                        acc[r][j] += c[r] * row[j];
                    }
                }
            }
            for (r, sums) in acc.iter().enumerate() {
                for (o, &a) in out[r * cols + first..][..NARROW].iter_mut().zip(sums) {
                    *o += a * scale;
                }
            }
            first += NARROW;
        }
        for r in 0..ROWS {
            for j in first..cols {
                let mut a = 0.0f32;
                for k in 0..rank {
                    a += p[r * rank + k] * q[k * cols + j];
                }
                out[r * cols + j] += a * scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_rows_at_once_give_the_bits_of_one_block_at_a_time() {
        let (rank, cols) = (5, 2 * NARROW + 3);
        let p: Vec<f32> = (0..ROWS * rank).map(|i| (i as f32 * 0.37).sin()).collect();
        let q: Vec<f32> = (0..rank * cols).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
        let start: Vec<f32> = (0..ROWS * cols).map(|i| i as f32 * 1e-3).collect();
        let mut together = start.clone();
        add_rows(&mut together, &p, &q, cols, 0.7);
        let mut alone = start;
        for (r, row) in alone.chunks_mut(cols).enumerate() {
            for first in (0..cols).step_by(BLOCK) {
                let n = BLOCK.min(cols - first);
                add_block(
                    &mut row[first..first + n],
                    &p[r * rank..(r + 1) * rank],
                    &q,
                    cols,
                    first,
                    0.7,
                );
            }
        }
        assert!(together.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
