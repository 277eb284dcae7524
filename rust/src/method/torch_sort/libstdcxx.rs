//! libstdc++'s sorting algorithms, step for step (`std::sort`'s introsort, `std::partial_sort`'s heap select and
//! `std::nth_element`), generic over a `less` comparator: what torch's CPU sort and topk run, so the order of
//! equal keys comes out as torch leaves it.

/// Below this many entries a range is left to the final insertion sort (libstdc++'s `_S_threshold`).
const THRESHOLD: usize = 16;

/// Both parts of a partition at least this long are sorted on two threads.
const PARALLEL: usize = 1 << 15;

/// `std::sort(v.begin(), v.end(), less)`, step for step.
pub(super) fn sort<T: Copy + Send>(v: &mut [T], less: &(impl Fn(&T, &T) -> bool + Sync)) {
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
pub(super) fn heap_select<T: Copy>(v: &mut [T], middle: usize, less: &impl Fn(&T, &T) -> bool) {
    make_heap(&mut v[..middle], less);
    for i in middle..v.len() {
        if less(&v[i], &v[0]) {
            pop_heap(v, middle, i, less);
        }
    }
}

/// `std::nth_element` (introselect): `v[nth]` is what a sort would put there, with nothing after it before it.
pub(super) fn nth_element<T: Copy>(v: &mut [T], nth: usize, less: &impl Fn(&T, &T) -> bool) {
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
    use crate::method::torch_sort::keys;

    #[test]
    fn sorting_parts_on_two_threads_moves_no_entry() {
        let keys = keys(400_000, 7, 11);
        let mut entries: Vec<(f32, u32)> = keys.iter().copied().zip(0..).collect();
        let mut sequential = entries.clone();
        let descending = |a: &(f32, u32), b: &(f32, u32)| b.0 < a.0; // no NaN among these keys
        sort_splitting(&mut entries, &descending, 1 << 12);
        sort_splitting(&mut sequential, &descending, usize::MAX);
        assert!(entries == sequential, "the same permutation, ties included");
    }

    #[test]
    fn the_heap_sort_fallback_sorts_too() {
        let mut v = keys(3000, 50, 9);
        heap_sort(&mut v, &|a: &f32, b: &f32| a < b);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }
}
