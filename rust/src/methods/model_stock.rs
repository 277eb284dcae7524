//! Model Stock (Jang et al., 2024), mergekit's `model_stock`: with θ̄ the average of the fine-tuned models
//! and cos the mean pairwise cosine of their offsets θᵢ − θ₀ (per tensor, or per row with `filter_wise`),
//! t = N·cos / (1 + (N − 1)·cos) and θ = t·θ̄ + (1 − t)·θ₀. With `compute` set to a half-precision dtype,
//! every step is rounded to it in mergekit's order, as torch computes it in a config's `dtype:`.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "model_stock",
    summary: "interpolate the average toward θ₀ by the angle between the models' offsets",
    paper: "https://arxiv.org/abs/2403.19522",
    needs_base: true,
    min_models: 2,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "filter_wise",
            kind: ParamKind::Bool,
            default: ParamDefault::Flag(false),
            help: "one interpolation ratio per row (last axis) instead of per tensor",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct ModelStock {
    filter_wise: bool,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(ModelStock {
        filter_wise: p.bool("filter_wise")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for ModelStock {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

impl TensorFold for ModelStock {
    /// Every model's copy.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        4 * models * tensor.numel
    }

    fn start(&self, _: &PlanTensor, models: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(models))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], _: Option<&[f32]>) -> Result<()> {
        acc.push(theta.to_vec());
        Ok(())
    }

    fn finish(&self, models: Self::Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal("model_stock reads the pretrained model".into()))?;
        let row = match (self.filter_wise, tensor.shape.last()) {
            (true, Some(&last)) if last > 0 => last,
            _ => tensor.numel.max(1),
        };
        let n = models.len() as f32;
        let r = |x: f32| self.precision.round(x);
        for start in (0..tensor.numel).step_by(row) {
            let range = start..(start + row).min(tensor.numel);
            let offsets: Vec<Vec<f32>> = models
                .iter()
                .map(|m| {
                    m[range.clone()]
                        .iter()
                        .zip(&base[range.clone()])
                        .map(|(x, b)| r(r(*x) - r(*b)))
                        .collect()
                })
                .collect();
            if self.precision != Precision::F32 {
                let t = rounded_ratio(&offsets, n, self.precision);
                for i in range {
                    let sum = models.iter().fold(0.0, |total, m| r(total + r(m[i])));
                    out[i] = r(r(t * r(sum / n)) + r(r(1.0 - t) * r(base[i])));
                }
                continue;
            }
            let cos = mean_pairwise_cosine(&offsets) as f32;
            let t = (n * cos) / (1.0 + (n - 1.0) * cos);
            for i in range {
                let average = models.iter().map(|m| m[i]).sum::<f32>() / n;
                out[i] = t * average + (1.0 - t) * base[i];
            }
        }
        Ok(())
    }
}

/// The mean over pairs of cos(oᵢ, oⱼ), each clamped to [−1, 1], with the product of norms kept ≥ 1e-6
/// (mergekit's guard).
fn mean_pairwise_cosine(offsets: &[Vec<f32>]) -> f64 {
    let norms: Vec<f64> = offsets.iter().map(|o| dot(o, o).sqrt()).collect();
    let (mut total, mut pairs) = (0.0, 0);
    for i in 0..offsets.len() {
        for j in i + 1..offsets.len() {
            let cos = dot(&offsets[i], &offsets[j]) / (norms[i] * norms[j]).max(1e-6);
            total += cos.clamp(-1.0, 1.0);
            pairs += 1;
        }
    }
    total / f64::from(pairs.max(1))
}

/// t as mergekit computes it in a half-precision dtype: norms, products, sums (in float32) and every
/// quotient rounded to the dtype, and t = 0 where 1 + (N − 1)·cos vanishes.
fn rounded_ratio(offsets: &[Vec<f32>], n: f32, precision: Precision) -> f32 {
    let r = |x: f32| precision.round(x);
    let sum = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| r(x * y)).sum::<f32>();
    let norms: Vec<f32> = offsets
        .iter()
        .map(|o| r(o.iter().map(|x| x * x).sum::<f32>().sqrt()))
        .collect();
    let mut cosines = Vec::new();
    for i in 0..offsets.len() {
        for j in i + 1..offsets.len() {
            let product = r(norms[i] * norms[j]).max(1e-6);
            cosines.push(r(r(sum(&offsets[i], &offsets[j])) / product).clamp(-1.0, 1.0));
        }
    }
    let cos = r(cosines.iter().sum::<f32>() / cosines.len().max(1) as f32);
    let denominator = r(1.0 + r((n - 1.0) * cos));
    if denominator.abs() < 1e-6 {
        return 0.0;
    }
    r(r(n * cos) / denominator)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        assert_declared_working_set_is_honest(
            &ModelStock {
                filter_wise: true,
                precision: Precision::F32,
            },
            4,
        );
    }

    #[test]
    fn orthogonal_offsets_pull_halfway_back_for_two_models() {
        let offsets = vec![vec![1.0f32, 0.0], vec![0.0f32, 1.0]];
        assert_eq!(mean_pairwise_cosine(&offsets), 0.0);
        let same = vec![vec![1.0f32, 2.0], vec![2.0f32, 4.0]];
        assert!((mean_pairwise_cosine(&same) - 1.0).abs() < 1e-12);
    }
}
