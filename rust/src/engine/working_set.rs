//! Test support: the heap a whole-tensor method really holds for one tensor, against what it declares
//! ([`working_set`]), measured with the counting test allocator. The whole-tensor pass keeps the sum of the
//! declared working sets within its budget, so a declaration below the truth breaks the memory bound.

use super::whole::{TensorFold, fold_tensor, working_set};
use crate::dtype::FloatType;
use crate::peak_alloc::peak_bytes;
use crate::plan::{FloatSource, PlanTensor, TensorKind};

/// A float32 tensor of `shape` merged from `models` models and θ₀.
fn plan_tensor(shape: &[usize], models: usize) -> PlanTensor {
    let source = FloatSource {
        tensor: 0,
        ty: FloatType::F32,
    };
    PlanTensor {
        name: "layer.weight".into(),
        shape: shape.to_vec(),
        numel: shape.iter().product(),
        kind: TensorKind::Merge {
            out: FloatType::F32,
            base: Some(source),
            models: vec![source; models],
            extra: Vec::new(),
        },
    }
}

/// Deterministic values in [−0.5, 0.5).
fn noise(seed: usize, len: usize) -> impl Iterator<Item = f32> {
    let stream = crate::rng::stream(seed as u64, "working set", 0);
    (0..len).map(move |i| crate::rng::uniform(stream, i as u64) as f32 - 0.5)
}

/// Let faer's matrix product allocate the packing buffer it keeps for each thread (twice the L3 cache, a
/// fixed cost per worker outside the working sets), so that it is not counted against the first tensor.
fn warm_up_the_matrix_product() {
    let a = faer::Mat::<f64>::identity(256, 256);
    assert_eq!((&a * &a)[(3, 3)], 1.0);
}

/// (declared, measured) bytes for merging a `shape` tensor of `models` random fine-tuned models with θ₀: the
/// engine's buffers (θ₀, the copy being read, the output) and the method's own.
pub(crate) fn declared_and_measured<F: TensorFold>(fold: &F, shape: &[usize], models: usize) -> (usize, usize) {
    let tensor = plan_tensor(shape, models);
    let declared = working_set(fold, &tensor, models, true);
    warm_up_the_matrix_product();
    let (merged, measured) = peak_bytes(|| {
        let base: Vec<f32> = noise(0, tensor.numel).collect();
        let read = |model: usize, theta: &mut Vec<f32>| {
            theta.clear();
            theta.extend(noise(model + 1, tensor.numel).zip(&base).map(|(x, b)| b + 0.01 * x));
            Ok(())
        };
        fold_tensor(fold, &tensor, models, Some(&base), read).map(|out| out.len())
    });
    assert_eq!(merged.unwrap_or_else(|e| panic!("{e}")), tensor.numel);
    (declared, measured)
}

/// Bookkeeping a declaration may leave out: vectors of a few values per model or per singular value.
const SMALL: usize = 64 << 10;

/// Assert that `fold` declares at least what it holds for each shape (but for [`SMALL`] bytes), and not
/// more than twice that (a declaration far above the truth would needlessly serialise the pass).
pub(crate) fn assert_declared_working_set_is_honest<F: TensorFold>(fold: &F, models: usize) {
    let results: Vec<_> = [[384, 96], [96, 384], [128, 128]]
        .iter()
        .map(|shape| (shape, declared_and_measured(fold, shape, models)))
        .collect();
    let honest =
        |&(_, (declared, measured)): &(_, (usize, usize))| measured <= declared + SMALL && declared <= 2 * measured;
    assert!(
        results.iter().all(honest),
        "{models} models: (shape, (declared bytes, held bytes)): {results:?}"
    );
}
