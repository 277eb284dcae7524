//! Multi-SLERP, mergekit's `multislerp`: barycentric interpolation of any number of tensors on the sphere.
//! The tensors (minus θ₀ when a pretrained model is given) are projected on the unit sphere, their weighted
//! mean direction taken, the weighted tangent vectors mapped back with the exponential map, and the result
//! scaled by the weighted mean norm (θ₀ added back). With `compute` bfloat16 or float16 every step is rounded
//! as torch rounds it in mergekit's dtype ([`interpolate_rounded`]), so a mergekit config in that dtype gives
//! mergekit's bits.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::gta::WEIGHTS;
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// mergekit's guard against dividing by zero.
const EPS: f64 = 1e-8;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "multislerp",
    summary: "spherical barycentric interpolation of several models (of their task vectors with θ₀)",
    paper: "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    needs_base: false,
    min_models: 2,
    max_models: None,
    extra_inputs: None,
    params: &[
        WEIGHTS,
        ParamDef {
            name: "normalize_weights",
            kind: ParamKind::Bool,
            default: ParamDefault::Flag(true),
            help: "divide the weights by their sum",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct MultiSlerp {
    weights: Vec<f64>,
    normalize_weights: bool,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(MultiSlerp {
        weights: p.floats("weights").unwrap_or_default(),
        normalize_weights: p.bool("normalize_weights")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for MultiSlerp {
    fn validate(&self, models: usize) -> Result<()> {
        if self.weights.len() != models {
            return Err(MergeError::arg(format!(
                "multislerp: {} weights given for {models} models",
                self.weights.len()
            )));
        }
        Ok(())
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, engine.inputs.base.is_some(), writer)
    }
}

impl TensorFold for MultiSlerp {
    /// Every model's copy, minus θ₀ when given.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        (4 * models + 16) * tensor.numel
    }

    fn start(&self, _: &PlanTensor, models: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(models))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        acc.push(self.precision.input(theta, base));
        Ok(())
    }

    fn finish(&self, points: Self::Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let fail = |reason: &str| MergeError::MethodFailed {
            method: "multislerp",
            tensor: tensor.name.clone(),
            reason: reason.into(),
        };
        let p = self.precision;
        if p != Precision::F32 {
            interpolate_rounded(&points, &self.weights, self.normalize_weights, p, out).map_err(fail)?;
            if let Some(base) = base {
                out.iter_mut()
                    .zip(base)
                    .for_each(|(o, b)| *o = p.round(p.round(*b) + *o));
            }
            return Ok(());
        }
        let mut weights = self.weights.clone();
        if self.normalize_weights {
            let total: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= total);
        }
        interpolate(&points, &weights, out).map_err(fail)?;
        if let Some(base) = base {
            out.iter_mut().zip(base).for_each(|(o, b)| *o += b);
        }
        Ok(())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A point's values, widened.
fn wide(point: &[f32]) -> impl Iterator<Item = f64> + '_ {
    point.iter().map(|&x| f64::from(x))
}

/// The interpolation of `points` with `weights` into `out` (float64 inside, each point widened as it is
/// used, so only the mean direction and the tangent are held in float64).
fn interpolate(points: &[Vec<f32>], weights: &[f64], out: &mut [f32]) -> std::result::Result<(), &'static str> {
    let norms: Vec<f64> = points
        .iter()
        .map(|p| wide(p).map(|x| x * x).sum::<f64>().sqrt())
        .collect();
    let unit = |i: usize| {
        let scale = norms[i] + EPS;
        wide(&points[i]).map(move |x| x / scale)
    };
    let mut mean = vec![0.0; out.len()];
    for (i, w) in weights.iter().enumerate() {
        mean.iter_mut().zip(unit(i)).for_each(|(m, x)| *m += w * x);
    }
    let mean_norm = dot(&mean, &mean).sqrt();
    if mean_norm < EPS {
        if let ([a, b], [wa, wb]) = (points, weights) {
            out.iter_mut()
                .zip(wide(a).zip(wide(b)))
                .for_each(|(o, (x, y))| *o = (x * wa + y * wb) as f32);
            return Ok(());
        }
        return Err("the weighted directions cancel out (antipodal tensors); try other weights");
    }
    mean.iter_mut().for_each(|m| *m /= mean_norm);
    let mut tangent = vec![0.0; out.len()];
    for (i, w) in weights.iter().enumerate() {
        let along: f64 = unit(i).zip(&mean).map(|(x, m)| x * m).sum();
        tangent
            .iter_mut()
            .zip(unit(i).zip(&mean))
            .for_each(|(t, (x, m))| *t += w * (x - along * m));
    }
    let length = dot(&tangent, &tangent).sqrt() + EPS;
    let radius: f64 = norms.iter().zip(weights).map(|(n, w)| n * w).sum();
    let (cos, sin) = (length.cos(), length.sin() / length);
    for ((o, m), t) in out.iter_mut().zip(&mean).zip(&tangent) {
        *o = ((m * cos + t * sin) * radius) as f32;
    }
    Ok(())
}

/// The length of `v` as torch's `norm` of a half-precision tensor gives it: summed wide, rounded once.
fn rounded_norm(v: &[f32], p: Precision) -> f32 {
    p.round(v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() as f32)
}

/// mergekit's `multislerp` step by step in a half-precision dtype, each result rounded as torch stores it
/// (sums over the models in float32 in order, sums over elements wide, each rounded once).
fn interpolate_rounded(
    points: &[Vec<f32>],
    raw: &[f64],
    normalize: bool,
    p: Precision,
    out: &mut [f32],
) -> std::result::Result<(), &'static str> {
    let eps = EPS as f32;
    let mut weights: Vec<f32> = raw.iter().map(|w| p.round(*w as f32)).collect();
    if normalize {
        let total = p.round(weights.iter().sum::<f32>());
        weights.iter_mut().for_each(|w| *w = p.round(*w / total));
    }
    let norms: Vec<f32> = points.iter().map(|v| rounded_norm(v, p)).collect();
    let scales: Vec<f32> = norms.iter().map(|n| p.round(n + eps)).collect();
    let unit = |i: usize, e: usize| p.round(points[i][e] / scales[i]);
    let across = |term: &dyn Fn(usize, usize) -> f32, e: usize| {
        p.round((0..points.len()).map(|i| p.round(term(i, e) * weights[i])).sum::<f32>())
    };
    let mut mean: Vec<f32> = (0..out.len()).map(|e| across(&unit, e)).collect();
    let mean_norm = rounded_norm(&mean, p);
    if mean_norm < p.round(eps) {
        if let ([a, b], [wa, wb]) = (points, weights.as_slice()) {
            for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
                *o = p.round(p.round(x * wa) + p.round(y * wb));
            }
            return Ok(());
        }
        return Err("the weighted directions cancel out (antipodal tensors); try other weights");
    }
    mean.iter_mut().for_each(|m| *m = p.round(*m / mean_norm));
    let along: Vec<f32> = (0..points.len())
        .map(|i| {
            p.round(
                mean.iter()
                    .enumerate()
                    .map(|(e, m)| f64::from(p.round(unit(i, e) * m)))
                    .sum::<f64>() as f32,
            )
        })
        .collect();
    let tangent = |i: usize, e: usize| p.round(unit(i, e) - p.round(along[i] * mean[e]));
    let tangent: Vec<f32> = (0..out.len()).map(|e| across(&tangent, e)).collect();
    let length = p.round(rounded_norm(&tangent, p) + eps);
    let (cos, sin) = (p.round(length.cos()), p.round(p.round(length.sin()) / length));
    let radius = p.round(norms.iter().zip(&weights).map(|(n, w)| p.round(n * w)).sum::<f32>());
    for ((o, m), t) in out.iter_mut().zip(&mean).zip(&tangent) {
        *o = p.round(p.round(p.round(m * cos) + p.round(t * sin)) * radius);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        let method = MultiSlerp {
            weights: vec![1.0, 2.0, 3.0],
            normalize_weights: true,
            precision: Precision::F32,
        };
        assert_declared_working_set_is_honest(&method, 3);
    }

    #[test]
    fn two_orthogonal_unit_vectors_meet_on_the_circle() {
        let mut out = vec![0.0f32; 2];
        interpolate(&[vec![1.0, 0.0], vec![0.0, 1.0]], &[0.5, 0.5], &mut out).unwrap_or_else(|e| panic!("{e}"));
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((out[0] - h).abs() < 1e-6 && (out[1] - h).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn in_bfloat16_the_result_is_a_bfloat16_value_near_the_float32_one() {
        let points = [vec![0.3f32, -0.2, 0.5], vec![0.1, 0.4, -0.3], vec![-0.2, 0.1, 0.2]];
        let weights = [0.2, 0.5, 0.3];
        let (mut exact, mut rounded) = (vec![0.0f32; 3], vec![0.0f32; 3]);
        interpolate(&points, &weights, &mut exact).unwrap_or_else(|e| panic!("{e}"));
        interpolate_rounded(&points, &weights, false, Precision::Bf16, &mut rounded).unwrap_or_else(|e| panic!("{e}"));
        let scale = exact.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (r, x) in rounded.iter().zip(&exact) {
            assert_eq!(half::bf16::from_f32(*r).to_f32(), *r);
            assert!((r - x).abs() <= scale / 32.0, "{r} near {x}");
        }
        let antipodal = [vec![1.0f32], vec![-1.0], vec![0.0]];
        assert!(interpolate_rounded(&antipodal, &[0.5, 0.5, 0.0], false, Precision::Bf16, &mut [0.0]).is_err());
    }

    #[test]
    fn three_antipodal_tensors_are_an_error() {
        let mut out = vec![0.0f32; 1];
        let points = [vec![1.0], vec![-1.0], vec![0.0]];
        assert!(interpolate(&points, &[0.5, 0.5, 0.0], &mut out).is_err());
    }
}
