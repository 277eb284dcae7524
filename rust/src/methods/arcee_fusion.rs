//! Arcee Fusion, mergekit's `arcee_fusion`: take the fine-tuned model's change only where it matters most. Each
//! element's importance is |θ₁ − θ₀| times the KL divergence between softmax(θ₁) and softmax(θ₀) over its row
//! (the last axis; the whole tensor for a vector); elements at or above median + 1.5 · IQR of the tensor's
//! importances take θ₁, the rest keep θ₀.
//!
//! mergekit takes the quartiles from a random sample of a million elements in larger tensors, so its result there
//! changes from run to run; merge-rs takes them from every element, as mergekit does in smaller tensors.
//!
//! With `compute` in a half dtype, each step is rounded to it where torch rounds it in mergekit: the change, each
//! softmax (taken in float32), the probabilities plus ε, their ratio, its logarithm, each term and the row's sum
//! (summed in float32), the importance, the quartiles' arithmetic, and the change that is taken. Torch's
//! vectorised softmax is not replayed exactly: counted against it on the Llama and Mistral stand-ins of
//! tests/test_mergekit_examples.py (636,000 values), 2 bfloat16 and 25 float16 values round the other way, and a
//! value that decides a row's divergence can move an importance across the threshold.

use std::borrow::Cow;

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// Added to each softmax probability before the logarithm, as mergekit does.
const EPS: f32 = 1e-8;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "arcee_fusion",
    summary: "keep the fine-tuned model's change only where its size times its row's KL divergence is an outlier",
    paper: "https://github.com/arcee-ai/mergekit",
    needs_base: true,
    min_models: 1,
    max_models: Some(1),
    extra_inputs: None,
    params: &[COMPUTE],
    build,
};

#[derive(Debug)]
struct ArceeFusion {
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(ArceeFusion {
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for ArceeFusion {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

impl TensorFold for ArceeFusion {
    /// The fine-tuned copy.
    type Acc = Vec<f32>;

    fn footprint(&self, tensor: &PlanTensor, _models: usize) -> usize {
        // The copy, the importances and their sorted copy.
        12 * tensor.numel
    }

    fn start(&self, _tensor: &PlanTensor, _models: usize) -> Result<Vec<f32>> {
        Ok(Vec::new())
    }

    fn add(&self, acc: &mut Vec<f32>, _: &PlanTensor, _: usize, theta: &[f32], _: Option<&[f32]>) -> Result<()> {
        acc.extend_from_slice(theta);
        Ok(())
    }

    fn finish(&self, mut theta: Vec<f32>, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal("arcee_fusion needs the pretrained model".into()))?;
        let row = tensor.shape.last().copied().unwrap_or(1).max(1);
        let r = self.precision;
        // mergekit holds both models in the dtype.
        theta.iter_mut().for_each(|x| *x = r.round(*x));
        let importance = importance(&theta, base, row, r);
        let threshold = threshold(&importance, r);
        for (((o, &x), &b), &score) in out.iter_mut().zip(&theta).zip(base).zip(&importance) {
            // torch multiplies the (rounded) change by the float32 mask, so the sum is float32.
            let b = r.round(b);
            *o = if score >= threshold { b + r.round(x - b) } else { b };
        }
        Ok(())
    }
}

/// |θ₁ − θ₀| · KL(softmax(θ₁) ‖ softmax(θ₀)) per element, the divergence taken over rows of `row` elements, each
/// step rounded by `r` (`theta` already rounded, `base` rounded here a row at a time).
fn importance(theta: &[f32], base: &[f32], row: usize, r: Precision) -> Vec<f32> {
    let mut out = Vec::with_capacity(theta.len());
    for (t, b) in theta.chunks(row).zip(base.chunks(row)) {
        // float32 uses the row as it is; a half dtype, a rounded copy.
        let b: Cow<'_, [f32]> = if r == Precision::F32 {
            Cow::Borrowed(b)
        } else {
            Cow::Owned(b.iter().map(|&v| r.round(v)).collect())
        };
        let (p, q) = (softmax(t, r), softmax(&b, r));
        let terms = p
            .iter()
            .zip(&q)
            .map(|(&p, &q)| r.round(p * r.round(r.round(p / q).ln())));
        let kl = r.round(terms.map(f64::from).sum::<f64>() as f32);
        out.extend(
            t.iter()
                .zip(b.iter())
                .map(|(&x, &y)| r.round(r.round(x - y).abs() * kl)),
        );
    }
    out
}

/// softmax(x) + EPS, the softmax taken in float32 and rounded by `r`, then the sum rounded.
fn softmax(x: &[f32], r: Precision) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum = exp.iter().map(|&e| f64::from(e)).sum::<f64>() as f32;
    // In half precision the sum's inverse, then a product, matches torch's softmax more often than a quotient (the
    // count above: 2 and 25 values off against 3 and 33) and gives mergekit's bits on its arcee_fusion example; in
    // float32 the quotient does (tests/test_recipe_mergekit_methods.py).
    let inverse = 1.0 / sum;
    let share = |e: f32| if r == Precision::F32 { e / sum } else { e * inverse };
    exp.into_iter().map(|e| r.round(r.round(share(e)) + EPS)).collect()
}

/// median + 1.5 · (Q3 − Q1), each quartile the sorted importances' element at ⌊q · (n − 1)⌋ as mergekit indexes
/// them (q · (n − 1) in float32), each step rounded by `r`.
fn threshold(importance: &[f32], r: Precision) -> f32 {
    let mut sorted = importance.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let at = |q: f32| sorted[((q * (sorted.len() - 1) as f32) as usize).min(sorted.len() - 1)];
    let (q1, median, q3) = (at(0.25), at(0.5), at(0.75));
    r.round(median + r.round(1.5 * r.round(q3 - q1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precision::F32;

    #[test]
    fn the_threshold_is_median_plus_one_and_a_half_iqr_at_mergekits_indices() {
        // n = 9: indices ⌊0.25 · 8⌋ = 2, 4, 6.
        let scores = [8.0f32, 0.0, 1.0, 7.0, 2.0, 3.0, 6.0, 4.0, 5.0];
        assert_eq!(threshold(&scores, F32), 4.0 + 1.5 * (6.0 - 2.0));
        // n = 6: ⌊1.25⌋ = 1, ⌊2.5⌋ = 2, ⌊3.75⌋ = 3.
        assert_eq!(threshold(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], F32), 2.0 + 1.5 * 2.0);
    }

    #[test]
    fn importance_is_the_change_times_its_rows_divergence() {
        let base = [0.0f32, 0.0, 1.0, 1.0];
        // Row 0 unchanged in distribution (a constant shift): KL 0. Row 1 changed.
        let theta = [2.0f32, 2.0, 1.0, 3.0];
        let scores = importance(&theta, &base, 2, F32);
        assert_eq!(&scores[..2], &[0.0, 0.0]);
        let (p, q) = (softmax(&theta[2..], F32), softmax(&base[2..], F32));
        let kl: f32 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        assert!((scores[3] - 2.0 * kl).abs() < 1e-6 && scores[2] == 0.0);
    }

    /// Small changes to a zero vector of 16, one of them (element 5) large; the fused result.
    fn fused(large: f32, precision: Precision) -> (Vec<f32>, Vec<f32>) {
        let mut theta: Vec<f32> = (0..16).map(|i| 0.001 * i as f32).collect();
        theta[5] = large;
        let tensor = PlanTensor {
            name: "w".into(),
            shape: vec![16],
            numel: 16,
            kind: crate::plan::TensorKind::Elsewhere {
                out: crate::dtype::FloatType::F32,
            },
        };
        let mut out = vec![1.0; 16];
        ArceeFusion { precision }
            .finish(theta.clone(), &tensor, Some(&[0.0; 16]), &mut out)
            .unwrap();
        (theta, out)
    }

    #[test]
    fn only_outlying_changes_are_taken() {
        let (_, out) = fused(3.0, F32);
        assert_eq!(out[5], 3.0);
        assert!(out.iter().enumerate().all(|(i, &v)| i == 5 || v == 0.0));
    }

    #[test]
    fn in_bfloat16_the_models_and_the_taken_change_are_rounded() {
        let p = Precision::Bf16;
        let (theta, out) = fused(3.01, p); // bfloat16 holds 3.0 + 2⁻⁷ = 3.0078125
        assert_eq!(out[5], p.round(3.01));
        assert_ne!(out[5], 3.01);
        // Every score is a bfloat16 value, and so is the threshold.
        let scores = importance(&p.input(&theta, None), &[0.0; 16], 16, p);
        assert!(scores.iter().all(|&s| p.round(s) == s));
        let t = threshold(&scores, p);
        assert_eq!(p.round(t), t);
    }

    #[test]
    fn declared_working_set_is_honest() {
        crate::engine::working_set::assert_declared_working_set_is_honest(&ArceeFusion { precision: F32 }, 1);
    }
}
