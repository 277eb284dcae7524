//! SCE (Select, Calculate, Erase; Wan et al., 2024), mergekit's `sce`: per tensor, keep the `select_topk`
//! share of the elements whose task-vector entries vary most across the models (of those that vary at all),
//! weight each task by its mean squared entry, erase the entries whose sign disagrees with the sign of their
//! sum, and add the weighted mean of what is left to θ₀. With `compute` bfloat16 or float16 every step is
//! rounded as torch rounds it in mergekit's dtype (see [`finish_rounded`]), so a mergekit config in that dtype
//! gives mergekit's bits.

use crate::engine::{Engine, TensorFold};
use crate::error::Result;
use crate::method::precision::{COMPUTE, Precision};
use crate::method::torch_sort;
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "sce",
    summary: "keep the most variable elements, weight tasks by their mean square, erase sign conflicts, average",
    paper: "https://arxiv.org/abs/2408.07990",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "select_topk",
            kind: ParamKind::F32 { min: 0.0, max: 1.0 },
            default: ParamDefault::Number(1.0),
            help: "share of the elements with nonzero variance across the task vectors that are kept",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct Sce {
    select_topk: f32,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Sce {
        select_topk: p.f32("select_topk")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for Sce {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

impl TensorFold for Sce {
    /// Every task vector of the tensor.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        // The task vectors, and in `select` a variance, a (variance, index) pair and a flag per element.
        (4 * models + 13) * tensor.numel
    }

    fn start(&self, _: &PlanTensor, models: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(models))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        acc.push(self.precision.input(theta, Some(base.unwrap_or(theta))));
        Ok(())
    }

    fn finish(&self, mut taus: Self::Acc, _: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        if self.select_topk < 1.0 {
            let keep = select(&taus, f64::from(self.select_topk), self.precision);
            for tau in &mut taus {
                tau.iter_mut()
                    .zip(&keep)
                    .filter(|(_, k)| !**k)
                    .for_each(|(x, _)| *x = 0.0);
            }
        }
        if self.precision != Precision::F32 {
            finish_rounded(&taus, base, out, self.precision);
            return Ok(());
        }
        let weights = weights(&taus);
        for (e, o) in out.iter_mut().enumerate() {
            let sum: f32 = taus.iter().map(|t| t[e]).sum();
            let majority = if sum >= 0.0 { 1.0 } else { -1.0 };
            let (mut merged, mut total) = (0.0f64, 0.0f64);
            for (tau, w) in taus.iter().zip(&weights) {
                let x = tau[e];
                if x != 0.0 && x.signum() == majority {
                    merged += f64::from(x) * w;
                    total += w;
                }
            }
            *o = (merged / total.max(1e-6)) as f32 + base.map_or(0.0, |b| b[e]);
        }
        Ok(())
    }
}

/// mergekit's steps in a half-precision dtype, each result rounded as torch stores it: the weights are
/// `round(mean of round(τ²))` (the mean a float32 sum times 1/n) over `round` of their sum; per element the kept
/// products `round(τ·w)` and weights are summed in float32 and rounded, divided and rounded, and added to θ₀.
fn finish_rounded(taus: &[Vec<f32>], base: Option<&[f32]>, out: &mut [f32], p: Precision) {
    let len = taus.first().map_or(0, Vec::len);
    let means: Vec<f32> = taus
        .iter()
        .map(|t| {
            let sum = t.iter().map(|x| f64::from(p.round(x * x))).sum::<f64>() as f32;
            p.round(sum * (1.0 / len.max(1) as f32))
        })
        .collect();
    let total = p.round(means.iter().sum::<f32>());
    let weights: Vec<f32> = if total.abs() < 1e-6 {
        vec![p.round(1.0 / taus.len() as f32); taus.len()]
    } else {
        means.iter().map(|m| p.round(m / total)).collect()
    };
    let floor = p.round(1e-6);
    for (e, o) in out.iter_mut().enumerate() {
        let sum: f32 = taus.iter().map(|t| t[e]).sum();
        let majority = if sum >= 0.0 { 1.0 } else { -1.0 };
        let (mut merged, mut total) = (0.0f32, 0.0f32);
        for (tau, &w) in taus.iter().zip(&weights) {
            let x = tau[e];
            if x != 0.0 && x.signum() == majority {
                merged += p.round(x * w);
                total += w;
            }
        }
        let delta = p.round(p.round(merged) / p.round(total).max(floor));
        *o = p.round(p.round(base.map_or(0.0, |b| b[e])) + delta);
    }
}

/// Which elements to keep, as mergekit's `sce_mask`: the top `density` share (truncated) of those with nonzero
/// variance across the task vectors, by their variance as `p` stores it (torch computes it in float64 and
/// rounds once), ties at the cut-off where torch's CPU `topk` leaves them.
fn select(taus: &[Vec<f32>], density: f64, p: Precision) -> Vec<bool> {
    let len = taus.first().map_or(0, Vec::len);
    let n = taus.len() as f64;
    let variance = |e: usize| {
        let mean = taus.iter().map(|t| f64::from(t[e])).sum::<f64>() / n;
        p.round((taus.iter().map(|t| (f64::from(t[e]) - mean).powi(2)).sum::<f64>() / n) as f32)
    };
    let variances: Vec<f32> = (0..len).map(variance).collect();
    let k = (variances.iter().filter(|v| **v != 0.0).count() as f64 * density) as usize;
    let mut keep = vec![false; len];
    for e in torch_sort::top_k(variances.into_iter(), k).indices() {
        keep[e] = true;
    }
    keep
}

/// Each task's mean squared entry, normalised to sum to 1 (uniform when they sum to less than 10⁻⁶).
fn weights(taus: &[Vec<f32>]) -> Vec<f64> {
    let squares: Vec<f64> = taus
        .iter()
        .map(|t| t.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / t.len().max(1) as f64)
        .collect();
    let total: f64 = squares.iter().sum();
    if total.abs() < 1e-6 {
        return vec![1.0 / taus.len() as f64; taus.len()];
    }
    squares.iter().map(|s| s / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        assert_declared_working_set_is_honest(
            &Sce {
                select_topk: 0.5,
                precision: Precision::F32,
            },
            3,
        );
    }

    #[test]
    fn the_most_variable_elements_are_kept_and_conflicting_signs_erased() {
        let taus = vec![vec![1.0f32, 0.0, 2.0, 0.5], vec![-1.0, 0.0, 2.0, 0.1]];
        // Variances 1, 0, 0, 0.04: two elements vary; 0.7 of two truncates to one, the most variable.
        assert_eq!(select(&taus, 0.7, Precision::F32), [true, false, false, false]);
        assert_eq!(select(&taus, 0.4, Precision::F32), [false; 4], "k truncates to 0");
        let w = weights(&taus);
        assert!((w[0] - 5.25 / 10.26).abs() < 1e-7 && (w[0] + w[1] - 1.0).abs() < 1e-12);
        let mut out = [0.0f32; 4];
        Sce {
            select_topk: 1.0,
            precision: Precision::F32,
        }
        .finish(taus, &dummy(), Some(&[10.0; 4]), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out[0], 11.0, "sum 0 elects +: the negative entry is erased");
        assert_eq!(out[1], 10.0, "zero entries take part nowhere");
        assert!((out[2] - 12.0).abs() < 1e-6);
    }

    #[test]
    fn in_bfloat16_every_output_is_a_bfloat16_value_near_the_float32_result() {
        let taus = vec![
            vec![0.013f32, -0.2, 0.7, 0.05],
            vec![0.011, 0.3, 0.6, -0.02],
            vec![0.4, 0.1, -0.5, 0.03],
        ];
        let base = [1.0f32, -2.0, 0.25, 3.0];
        let run = |precision| {
            let mut out = [0.0f32; 4];
            Sce {
                select_topk: 1.0,
                precision,
            }
            .finish(taus.clone(), &dummy(), Some(&base), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
            out
        };
        let (exact, rounded) = (run(Precision::F32), run(Precision::Bf16));
        for (x, r) in exact.iter().zip(&rounded) {
            assert_eq!(
                half::bf16::from_f32(*r).to_f32(),
                *r,
                "{r} is stored as bfloat16 stores it"
            );
            assert!(
                (x - r).abs() <= x.abs() / 64.0,
                "{r} within a few bfloat16 steps of {x}"
            );
        }
    }

    fn dummy() -> PlanTensor {
        PlanTensor {
            name: "x".into(),
            shape: vec![4],
            numel: 4,
            kind: crate::plan::TensorKind::Elsewhere {
                out: crate::dtype::FloatType::F32,
            },
        }
    }
}
