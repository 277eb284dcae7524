//! mergekit's sparsifiers for task vectors (`mergekit/sparsify.py`): top-k magnitude (TIES), a Bernoulli
//! drop (DARE), magnitude with outliers removed (Model Breadcrumbs) and DELLA's rank-weighted random drop,
//! each optionally rescaled so the L1 norm is kept.

use super::precision::Precision;
use super::torch_sort;
use crate::rng;

/// How a task vector is thinned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sparsifier {
    /// Keep every entry.
    Keep,
    /// Keep the `max(1, ⌊density·numel⌋)` entries of largest magnitude (none at density 0).
    Magnitude { density: f64 },
    /// Keep each entry with probability `density`.
    Random { density: f64, seed: u64 },
    /// Keep the `density` share of entries after dropping the `gamma` share of largest magnitude.
    MagnitudeOutliers { density: f64, gamma: f64 },
    /// Keep each entry with probability density ± epsilon, higher for larger magnitudes in its row.
    DellaMagprune { density: f64, epsilon: f64, seed: u64 },
}

/// Thin `delta` (a tensor of `shape` called `name`, task `task`) in place; rescale to its former L1 norm
/// with `rescale`.
pub(crate) fn sparsify(
    delta: &mut [f32],
    shape: &[usize],
    name: &str,
    task: usize,
    how: Sparsifier,
    rescale: bool,
    precision: Precision,
) {
    if how.density() >= 1.0 {
        return;
    }
    let keep = match how {
        Sparsifier::Keep => return,
        Sparsifier::Magnitude { density } => magnitude(delta, density),
        Sparsifier::Random { density, seed } => {
            let stream = rng::stream(seed, name, task as u64);
            (0..delta.len())
                .map(|i| rng::uniform(stream, i as u64) < density)
                .collect()
        }
        Sparsifier::MagnitudeOutliers { density, gamma } => magnitude_outliers(delta, density, gamma),
        Sparsifier::DellaMagprune { density, epsilon, seed } => {
            let stream = rng::stream(seed, name, task as u64);
            della_magprune(delta, shape, density, epsilon, stream)
        }
    };
    // The L1 norms are summed in float64 and rounded once, as close as torch's pairwise float32 sum gets.
    let l1 = |v: &[f32]| v.iter().map(|x| f64::from(x.abs())).sum::<f64>() as f32;
    let before = precision.round(l1(delta));
    for (x, &k) in delta.iter_mut().zip(&keep) {
        if !k {
            *x = 0.0;
        }
    }
    let after = precision.round(l1(delta));
    if rescale && before >= 1e-7 && after >= 1e-7 {
        let scale = precision.round(before / after);
        for x in delta.iter_mut() {
            *x = precision.round(*x * scale);
        }
    }
}

impl Sparsifier {
    /// Bytes `sparsify` allocates for a tensor of `shape`: the keep mask, and the sort order where
    /// entries are ranked.
    pub(crate) fn scratch_bytes(self, shape: &[usize]) -> usize {
        let numel: usize = shape.iter().product();
        let row = shape.get(1).or(shape.first()).copied().unwrap_or(1);
        match self {
            Sparsifier::Keep => 0,
            Sparsifier::Random { .. } => numel,
            // (magnitude, index) pairs and the mask
            Sparsifier::Magnitude { .. } | Sparsifier::MagnitudeOutliers { .. } => 9 * numel,
            Sparsifier::DellaMagprune { .. } => numel + 8 * row,
        }
    }

    /// The share kept (1 for [`Sparsifier::Keep`]).
    fn density(self) -> f64 {
        match self {
            Sparsifier::Keep => 1.0,
            Sparsifier::Magnitude { density }
            | Sparsifier::Random { density, .. }
            | Sparsifier::MagnitudeOutliers { density, .. }
            | Sparsifier::DellaMagprune { density, .. } => density,
        }
    }
}

/// The entries kept: the `max(1, ⌊density·numel⌋)` largest magnitudes, none when the density is 0, as
/// mergekit's `magnitude` keeps them (ties at the cut-off where torch's CPU sort leaves them).
fn magnitude(delta: &[f32], density: f64) -> Vec<bool> {
    let numel = delta.len();
    let mut keep = vec![false; numel];
    if density <= 0.0 || numel == 0 {
        return keep;
    }
    let k = ((density * numel as f64) as usize).max(1);
    if let Some(cut) = untied_cut(delta, k) {
        keep.iter_mut().zip(delta).for_each(|(kept, x)| *kept = x.abs() >= cut);
        return keep;
    }
    for i in torch_sort::argsort(magnitudes(delta), true).indices().take(k) {
        keep[i] = true;
    }
    keep
}

/// The k-th largest magnitude, when the k largest are exactly those at or above it (no value equal to it is left
/// out, so any sort keeps the same entries): a linear-time selection instead of the full sort. None when a tie
/// straddles the cut-off or a magnitude is NaN, which need torch's order.
fn untied_cut(delta: &[f32], k: usize) -> Option<f32> {
    let mut values: Vec<f32> = magnitudes(delta).collect();
    if k == 0 || k > values.len() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let at = values.len() - k;
    let (_, &mut cut, _) = values.select_nth_unstable_by(at, f32::total_cmp);
    let kept = delta.iter().filter(|x| x.abs() >= cut).count();
    (kept == k).then_some(cut)
}

/// The entries kept, as mergekit's `magnitude_outliers` keeps them: in torch's ascending CPU sort order of the
/// magnitudes, `target = ⌊density·numel⌋` entries from `bottom = max(0, numel − target − ⌊gamma·numel⌋)` on, so
/// the largest `⌊gamma·numel⌋` are dropped unless the target needs them.
fn magnitude_outliers(delta: &[f32], density: f64, gamma: f64) -> Vec<bool> {
    let numel = delta.len();
    let target = ((density * numel as f64) as usize).min(numel);
    let top = (gamma * numel as f64) as usize;
    let bottom = numel.saturating_sub(target + top);
    let mut keep = vec![false; numel];
    for i in torch_sort::argsort(magnitudes(delta), false)
        .indices()
        .skip(bottom)
        .take(target)
    {
        keep[i] = true;
    }
    keep
}

fn magnitudes(delta: &[f32]) -> impl ExactSizeIterator<Item = f32> + '_ {
    delta.iter().map(|x| x.abs())
}

/// DELLA's MagPrune: within each fibre along axis 1 (a row of a matrix; a vector is one row), the entry
/// of rank r (1 = smallest magnitude) of n is kept with probability (density − ε) + 2ε·(r − 1)/(n − 1).
fn della_magprune(delta: &[f32], shape: &[usize], density: f64, epsilon: f64, stream: u64) -> Vec<bool> {
    let (outer, len, inner) = match shape {
        [] => (1, 1, 1),
        [n] => (1, *n, 1),
        [a, b, rest @ ..] => (*a, *b, rest.iter().product()),
    };
    let mut keep = vec![false; delta.len()];
    let mut fibre: Vec<usize> = Vec::with_capacity(len);
    for o in 0..outer {
        for i in 0..inner {
            fibre.clear();
            fibre.extend((0..len).map(|j| (o * len + j) * inner + i));
            fibre.sort_by(|&a, &b| delta[a].abs().total_cmp(&delta[b].abs()).then(a.cmp(&b)));
            for (rank, &at) in fibre.iter().enumerate() {
                let share = if len > 1 { rank as f64 / (len - 1) as f64 } else { 0.0 };
                let p = (density - epsilon) + share * 2.0 * epsilon;
                keep[at] = rng::uniform(stream, at as u64) < p;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breadcrumbs_drop_the_largest_and_the_smallest() {
        let mut d: Vec<f32> = (1..=10).map(|x| x as f32).collect();
        let how = Sparsifier::MagnitudeOutliers {
            density: 0.5,
            gamma: 0.1,
        };
        sparsify(&mut d, &[10], "w", 0, how, false, Precision::F32);
        assert_eq!(d, vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0]);
    }

    #[test]
    fn magnitude_keeps_the_largest_share_and_at_least_one() {
        let mut d: Vec<f32> = vec![0.5, -3.0, 2.0, -0.1, 1.0];
        sparsify(
            &mut d,
            &[5],
            "w",
            0,
            Sparsifier::Magnitude { density: 0.5 },
            false,
            Precision::F32,
        );
        assert_eq!(d, vec![0.0, -3.0, 2.0, 0.0, 0.0]);
        let mut d: Vec<f32> = vec![0.5, -3.0, 2.0];
        sparsify(
            &mut d,
            &[3],
            "w",
            0,
            Sparsifier::Magnitude { density: 0.1 },
            false,
            Precision::F32,
        );
        assert_eq!(d, vec![0.0, -3.0, 0.0]);
        sparsify(
            &mut d,
            &[3],
            "w",
            0,
            Sparsifier::Magnitude { density: 0.0 },
            false,
            Precision::F32,
        );
        assert_eq!(d, vec![0.0; 3]);
    }

    #[test]
    fn the_linear_time_cut_keeps_what_the_sort_keeps() {
        let replayed = |d: &[f32], k: usize| {
            let mut keep = vec![false; d.len()];
            for i in torch_sort::argsort(magnitudes(d), true).indices().take(k) {
                keep[i] = true;
            }
            keep
        };
        let distinct: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1009) as f32 * if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        for k in [1, 10, 333, 999, 1000] {
            assert!(untied_cut(&distinct, k).is_some());
            assert_eq!(
                magnitude(&distinct, k as f64 / 1000.0),
                replayed(&distinct, k),
                "k = {k}"
            );
        }
        // 2.0 appears three times and the cut takes two of them: torch's order decides.
        let tied = [2.0f32, -2.0, 1.0, 2.0, 3.0];
        assert_eq!(untied_cut(&tied, 3), None);
        assert_eq!(magnitude(&tied, 0.6), replayed(&tied, 3));
        assert_eq!(untied_cut(&[1.0, f32::NAN, 2.0], 1), None);
    }

    #[test]
    fn random_keeps_about_density_and_depends_on_the_seed() {
        let run = |seed| {
            let mut d = vec![1.0f32; 10_000];
            sparsify(
                &mut d,
                &[10_000],
                "w",
                0,
                Sparsifier::Random { density: 0.3, seed },
                false,
                Precision::F32,
            );
            d
        };
        let kept = run(1).iter().filter(|x| **x != 0.0).count();
        assert!((2_800..3_200).contains(&kept), "kept {kept}");
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn rescaling_keeps_the_l1_norm() {
        let mut d: Vec<f32> = vec![1.0, -2.0, 3.0, -4.0];
        let how = Sparsifier::MagnitudeOutliers {
            density: 0.5,
            gamma: 0.0,
        };
        sparsify(&mut d, &[4], "w", 0, how, true, Precision::F32);
        assert_eq!(d, vec![0.0, 0.0, 30.0 / 7.0, -40.0 / 7.0]);
    }

    #[test]
    fn della_keeps_about_density_and_favours_large_entries() {
        let n = 20_000;
        let mut d: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
        let how = Sparsifier::DellaMagprune {
            density: 0.5,
            epsilon: 0.3,
            seed: 1,
        };
        sparsify(&mut d, &[1, n], "w", 0, how, false, Precision::F32);
        let kept = |range: std::ops::Range<usize>| d[range].iter().filter(|x| **x != 0.0).count() as f64;
        let (low, high) = (kept(0..n / 10) / (n / 10) as f64, kept(9 * n / 10..n) / (n / 10) as f64);
        assert!((low - 0.23).abs() < 0.03, "smallest tenth kept {low}");
        assert!((high - 0.77).abs() < 0.03, "largest tenth kept {high}");
    }
}
