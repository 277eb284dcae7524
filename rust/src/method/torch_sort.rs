//! torch's CPU sort order, ties included. `torch.sort`/`torch.argsort` without `stable=True` sort a contiguous
//! float32 row with libstdc++'s `std::sort` (introsort: median-of-three quicksort down to runs of 16, heapsort
//! past a depth of 2·⌊log₂ n⌋, then one insertion sort), comparing keys only. Entries of equal key come out in
//! whatever order those steps leave them, which is what mergekit's TIES and breadcrumbs keep at their cut-offs.
//! Replaying the same steps gives the same permutation: checked against torch 2.15 from PyPI (whose CPU build sorts
//! floats with `std::sort`; a build with x86-simd-sort would not) and through mergekit's TIES, breadcrumbs and SCE in
//! `tests/test_recipe_mergekit.py`.

/// Below this many entries a range is left to the final insertion sort (libstdc++'s `_S_threshold`).
const THRESHOLD: usize = 16;

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

/// Both parts of a partition at least this long are sorted on two threads.
const PARALLEL: usize = 1 << 15;

/// `std::sort(v.begin(), v.end(), less)`, step for step.
pub(crate) fn sort<T: Copy + Send>(v: &mut [T], less: &(impl Fn(&T, &T) -> bool + Sync)) {
    sort_splitting(v, less, PARALLEL);
}

fn sort_splitting<T: Copy + Send>(v: &mut [T], less: &(impl Fn(&T, &T) -> bool + Sync), parallel: usize) {
    if v.is_empty() {
        return;
    }
    let depth = 2 * v.len().ilog2() as usize;
    introsort_loop(v, depth, less, parallel);
    final_insertion_sort(v, less);
}

/// libstdc++'s `__introsort_loop`. After a partition the two parts never touch each other again, so sorting
/// them on two threads (where both are at least `parallel` long) leaves every entry where the sequential loop
/// leaves it.
fn introsort_loop<T: Copy + Send>(
    mut v: &mut [T],
    mut depth: usize,
    less: &(impl Fn(&T, &T) -> bool + Sync),
    parallel: usize,
) {
    while v.len() > THRESHOLD {
        if depth == 0 {
            heap_sort(v, less);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(v, less);
        let (left, right) = v.split_at_mut(cut);
        if left.len() >= parallel && right.len() >= parallel {
            rayon::join(
                || introsort_loop(right, depth, less, parallel),
                || introsort_loop(left, depth, less, parallel),
            );
            return;
        }
        introsort_loop(right, depth, less, parallel);
        v = left;
    }
}

/// Moves the median of `v[1]`, `v[mid]` and `v[last]` to `v[0]`, then partitions `v[1..]` around it; returns
/// where the upper part starts.
fn partition_pivot<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) -> usize {
    let (mid, last) = (v.len() / 2, v.len() - 1);
    let median = if less(&v[1], &v[mid]) {
        if less(&v[mid], &v[last]) {
            mid
        } else if less(&v[1], &v[last]) {
            last
        } else {
            1
        }
    } else if less(&v[1], &v[last]) {
        1
    } else if less(&v[mid], &v[last]) {
        last
    } else {
        mid
    };
    v.swap(0, median);
    unguarded_partition(v, less)
}

/// Hoare's partition of `v[1..]` around the pivot `v[0]`, without bounds checks in the scans: the pivot
/// (and the median's neighbours) stop them.
fn unguarded_partition<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) -> usize {
    let pivot = v[0];
    let (mut first, mut last) = (1, v.len());
    loop {
        while less(&v[first], &pivot) {
            first += 1;
        }
        last -= 1;
        while less(&pivot, &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn final_insertion_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    if v.len() > THRESHOLD {
        insertion_sort(&mut v[..THRESHOLD], less);
        for i in THRESHOLD..v.len() {
            linear_insert(v, i, less);
        }
    } else {
        insertion_sort(v, less);
    }
}

fn insertion_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    for i in 1..v.len() {
        if less(&v[i], &v[0]) {
            v[..=i].rotate_right(1);
        } else {
            linear_insert(v, i, less);
        }
    }
}

/// Shifts `v[i]` left past every larger entry; something at or below it is known to sit further left.
fn linear_insert<T: Copy>(v: &mut [T], mut i: usize, less: &impl Fn(&T, &T) -> bool) {
    let value = v[i];
    while less(&value, &v[i - 1]) {
        v[i] = v[i - 1];
        i -= 1;
    }
    v[i] = value;
}

/// libstdc++'s `__partial_sort(first, last, last)`: make a heap, then pop it.
fn heap_sort<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    make_heap(v, less);
    for last in (1..v.len()).rev() {
        pop_heap(v, last, last, less);
    }
}

fn make_heap<T: Copy>(v: &mut [T], less: &impl Fn(&T, &T) -> bool) {
    let len = v.len();
    if len < 2 {
        return;
    }
    for parent in (0..=(len - 2) / 2).rev() {
        let value = v[parent];
        adjust_heap(v, parent, len, value, less);
    }
}

/// Moves the heap `v[..len]`'s top to `v[result]` and sifts the entry that was there into the heap.
fn pop_heap<T: Copy>(v: &mut [T], len: usize, result: usize, less: &impl Fn(&T, &T) -> bool) {
    let value = v[result];
    v[result] = v[0];
    adjust_heap(&mut v[..len], 0, len, value, less);
}

/// `std::__heap_select`: afterwards `v[..middle]` holds the `middle` entries that come first.
fn heap_select<T: Copy>(v: &mut [T], middle: usize, less: &impl Fn(&T, &T) -> bool) {
    make_heap(&mut v[..middle], less);
    for i in middle..v.len() {
        if less(&v[i], &v[0]) {
            pop_heap(v, middle, i, less);
        }
    }
}

/// `std::nth_element` (introselect): `v[nth]` is what a sort would put there, with nothing after it before it.
fn nth_element<T: Copy>(v: &mut [T], nth: usize, less: &impl Fn(&T, &T) -> bool) {
    if v.is_empty() || nth >= v.len() {
        return;
    }
    let mut depth = 2 * v.len().ilog2() as usize;
    let (mut lo, mut hi) = (0, v.len());
    while hi - lo > 3 {
        if depth == 0 {
            heap_select(&mut v[lo..hi], nth - lo + 1, less);
            v.swap(lo, nth);
            return;
        }
        depth -= 1;
        let cut = lo + partition_pivot(&mut v[lo..hi], less);
        if cut <= nth {
            lo = cut;
        } else {
            hi = cut;
        }
    }
    insertion_sort(&mut v[lo..hi], less);
}

fn adjust_heap<T: Copy>(v: &mut [T], mut hole: usize, len: usize, value: T, less: &impl Fn(&T, &T) -> bool) {
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(&v[child], &v[child - 1]) {
            child -= 1;
        }
        v[hole] = v[child];
        hole = child;
    }
    if len % 2 == 0 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        v[hole] = v[child - 1];
        hole = child - 1;
    }
    // push_heap
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && less(&v[parent], &value) {
        v[hole] = v[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the tests need no dependency.
    fn keys(n: usize, levels: u32, seed: u64) -> Vec<f32> {
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
    fn sorting_parts_on_two_threads_moves_no_entry() {
        let keys = keys(400_000, 7, 11);
        let mut entries: Vec<(f32, u32)> = keys.iter().copied().zip(0..).collect();
        let mut sequential = entries.clone();
        let descending = |a: &(f32, u32), b: &(f32, u32)| ascending(b.0, a.0);
        sort_splitting(&mut entries, &descending, 1 << 12);
        sort_splitting(&mut sequential, &descending, usize::MAX);
        assert!(entries == sequential, "the same permutation, ties included");
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
    fn the_heap_sort_fallback_sorts_too() {
        let mut v = keys(3000, 50, 9);
        heap_sort(&mut v, &|a: &f32, b: &f32| a < b);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
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
