//! Multi-SLERP, mergekit's `multislerp`: barycentric interpolation of any number of tensors on the sphere.
//! The tensors (minus θ₀ when a pretrained model is given) are projected on the unit sphere, their weighted
//! mean direction taken, the weighted tangent vectors mapped back with the exponential map, and the result
//! scaled by the weighted mean norm (θ₀ added back).

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::gta::WEIGHTS;
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
    ],
    build,
};

#[derive(Debug)]
struct MultiSlerp {
    weights: Vec<f64>,
    normalize_weights: bool,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(MultiSlerp {
        weights: p.floats("weights").unwrap_or_default(),
        normalize_weights: p.bool("normalize_weights")?,
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
        acc.push(match base {
            Some(base) => theta.iter().zip(base).map(|(x, b)| x - b).collect(),
            None => theta.to_vec(),
        });
        Ok(())
    }

    fn finish(&self, points: Self::Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let mut weights = self.weights.clone();
        if self.normalize_weights {
            let total: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= total);
        }
        let fail = |reason: &str| MergeError::MethodFailed {
            method: "multislerp",
            tensor: tensor.name.clone(),
            reason: reason.into(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        let method = MultiSlerp {
            weights: vec![1.0, 2.0, 3.0],
            normalize_weights: true,
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
    fn three_antipodal_tensors_are_an_error() {
        let mut out = vec![0.0f32; 1];
        let points = [vec![1.0], vec![-1.0], vec![0.0]];
        assert!(interpolate(&points, &[0.5, 0.5, 0.0], &mut out).is_err());
    }
}
