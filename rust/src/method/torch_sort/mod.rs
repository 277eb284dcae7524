//! torch's CPU sort order, ties included. `torch.sort`/`torch.argsort` without `stable=True` sort a contiguous
//! float32 row with libstdc++'s `std::sort` (introsort: median-of-three quicksort down to runs of 16, heapsort
//! past a depth of 2·⌊log₂ n⌋, then one insertion sort), comparing keys only. Entries of equal key come out in
//! whatever order those steps leave them, which is what mergekit's TIES and breadcrumbs keep at their cut-offs.
//! Replaying the same steps gives the same permutation: checked against torch 2.15 from PyPI (whose CPU build sorts
//! floats with `std::sort`; a build with x86-simd-sort would not) and through mergekit's TIES, breadcrumbs and SCE in
//! `tests/test_recipe_mergekit.py`.

mod libstdcxx;

use libstdcxx::{heap_select, nth_element, sort};

/// `keys` paired with their indices, in torch's `argsort(keys, descending)` order (NaN sorts as the largest key).
pub(crate) enum Order {
    Narrow(Vec<(f32, u32)>),
    Wide(Vec<(f32, usize)>),
}

impl Order {
    /// The indices, in order.
    pub(crate) fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let (narrow, wide) = match self {
            Order::Narrow(v) => (&v[..], &[][..]),
            Order::Wide(v) => (&[][..], &v[..]),
        };
        narrow.iter().map(|e| e.1 as usize).chain(wide.iter().map(|e| e.1))
    }
}

/// Sorts `keys` (8 bytes an entry while the indices fit 32 bits).
pub(crate) fn argsort(keys: impl ExactSizeIterator<Item = f32>, descending: bool) -> Order {
    arrange(keys, Op::Sort { descending })
}

/// The `k` entries torch's CPU `topk(keys, k)` returns (the largest; NaN above all), in no particular order:
/// `std::partial_sort` where `64·k ≤ n`, else `std::nth_element` (`aten/src/ATen/native/TopKImpl.h`).
pub(crate) fn top_k(keys: impl ExactSizeIterator<Item = f32>, k: usize) -> Order {
    let k = k.min(keys.len());
    arrange(keys, Op::TopK { k })
}

#[derive(Clone, Copy)]
enum Op {
    Sort { descending: bool },
    TopK { k: usize },
}

/// `keys` paired with their indices (every NaN made the same NaN), then arranged by `op`.
fn arrange(keys: impl ExactSizeIterator<Item = f32>, op: Op) -> Order {
    let keys = keys.map(|k| if k.is_nan() { f32::NAN } else { k });
    if u32::try_from(keys.len()).is_ok() {
        let mut entries: Vec<(f32, u32)> = keys.zip(0..).collect();
        apply(&mut entries, op);
        Order::Narrow(entries)
    } else {
        let mut entries: Vec<(f32, usize)> = keys.zip(0..).collect();
        apply(&mut entries, op);
        Order::Wide(entries)
    }
}

fn apply<I: Copy + Send + Sync>(entries: &mut Vec<(f32, I)>, op: Op) {
    // Keys without a sign bit (magnitudes, variances) order as their bits do, NaN above +∞: the same
    // comparisons as torch's, as integers.
    if entries.iter().all(|e| e.0.is_sign_positive()) {
        arrange_by(entries, op, |a, b| a.0.to_bits() < b.0.to_bits());
    } else {
        arrange_by(entries, op, |a, b| ascending(a.0, b.0));
    }
}

/// `op` on `entries` given `less`, the ascending comparator (the descending one is `less` reversed).
fn arrange_by<I: Copy + Send + Sync>(
    entries: &mut Vec<(f32, I)>,
    op: Op,
    less: impl Fn(&(f32, I), &(f32, I)) -> bool + Sync,
) {
    let greater = |a: &(f32, I), b: &(f32, I)| less(b, a);
    let n = entries.len();
    match op {
        Op::Sort { descending: true } => sort(entries, &greater),
        Op::Sort { descending: false } => sort(entries, &less),
        Op::TopK { k } => {
            if k == 0 {
            } else if k * 64 <= n {
                heap_select(entries, k, &greater);
            } else {
                nth_element(entries, k - 1, &greater);
            }
            entries.truncate(k);
        }
    }
}

/// torch's ascending comparator (`KeyValueCompAsc`): NaN above every number; its descending one
/// (`KeyValueCompDesc`, and topk's) is the same with the arguments swapped.
fn ascending(a: f32, b: f32) -> bool {
    (!a.is_nan() && b.is_nan()) || a < b
}

#[cfg(test)]
/// A small deterministic generator, so the tests need no dependency.
pub(super) fn keys(n: usize, levels: u32, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % u64::from(levels)) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_in_either_direction_with_every_entry_once() {
        for (n, levels) in [(0, 1), (1, 1), (15, 3), (16, 3), (17, 3), (1000, 7), (5000, 100_000)] {
            let k = keys(n, levels, n as u64);
            for descending in [false, true] {
                let order: Vec<usize> = argsort(k.iter().copied(), descending).indices().collect();
                let mut seen = order.clone();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
                assert!(order.windows(2).all(|w| if descending {
                    k[w[0]] >= k[w[1]]
                } else {
                    k[w[0]] <= k[w[1]]
                }));
            }
        }
    }

    #[test]
    fn magnitudes_compared_as_integers_sort_as_torchs_comparator_does() {
        let mut magnitudes = keys(5000, 40, 5);
        magnitudes.extend([
            f32::INFINITY,
            f32::NAN,
            0.0,
            f32::MIN_POSITIVE / 4.0,
            f32::NAN,
            f32::INFINITY,
        ]);
        let entries: Vec<(f32, u32)> = magnitudes.into_iter().zip(0..).collect();
        for descending in [true, false] {
            let (mut as_bits, mut as_floats) = (entries.clone(), entries.clone());
            apply(&mut as_bits, Op::Sort { descending });
            arrange_by(&mut as_floats, Op::Sort { descending }, |a, b| ascending(a.0, b.0));
            let (bits, floats): (Vec<u32>, Vec<u32>) = as_bits.iter().zip(&as_floats).map(|(a, b)| (a.1, b.1)).unzip();
            assert_eq!(bits, floats, "descending {descending}");
        }
    }

    #[test]
    fn ties_are_not_left_in_index_order() {
        // What makes this module necessary: equal keys leave the quicksort out of index order.
        let k = keys(4096, 4, 3);
        let order: Vec<usize> = argsort(k.iter().copied(), true).indices().collect();
        assert!(order.windows(2).any(|w| k[w[0]] == k[w[1]] && w[0] > w[1]));
    }

    #[test]
    fn top_k_returns_k_entries_none_below_an_entry_left_out() {
        for (n, levels) in [(0, 1), (5, 2), (100, 3), (1000, 7), (6400, 1000)] {
            let k = keys(n, levels, 7);
            for want in [0, 1, n / 64, n / 64 + 1, n / 2, n].map(|w| w.min(n)) {
                let kept: Vec<usize> = top_k(k.iter().copied(), want).indices().collect();
                assert_eq!(kept.len(), want);
                let mut mask = vec![false; n];
                kept.iter().for_each(|&i| mask[i] = true);
                let lowest_kept = kept.iter().map(|&i| k[i]).fold(f32::INFINITY, f32::min);
                assert!((0..n).filter(|&i| !mask[i]).all(|i| k[i] <= lowest_kept));
            }
        }
    }

    #[test]
    fn nan_sorts_as_the_largest_key() {
        let k = [1.0, f32::NAN, 3.0, 2.0];
        let order = |descending| argsort(k.iter().copied(), descending).indices().collect::<Vec<_>>();
        assert_eq!(order(true), vec![1, 2, 3, 0]);
        assert_eq!(order(false), vec![0, 3, 2, 1]);
    }
}
