//! SLERP, mergekit's `slerp`: spherical interpolation from the first model (t = 0) to the second (t = 1)
//! along the great circle between the tensors' directions, per tensor; nearly colinear tensors
//! (|cos| > 0.9995) are interpolated linearly.

use crate::engine::Engine;
use crate::error::Result;
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, PairFold, ParamDef, ParamDefault, Params};
use crate::writer::Writer;

/// Above this |cos| the tensors count as colinear.
const DOT_THRESHOLD: f64 = 0.9995;
/// Norms at or below this are not normalised.
const EPS: f64 = 1e-8;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "slerp",
    summary: "spherical interpolation between two models",
    paper: "https://en.wikipedia.org/wiki/Slerp",
    needs_base: false,
    min_models: 2,
    max_models: Some(2),
    extra_inputs: None,
    params: &[ParamDef {
        name: "t",
        kind: ANY_F32,
        default: ParamDefault::Required,
        help: "position from the first model (0) to the second (1)",
    }],
    build,
};

#[derive(Debug)]
struct Slerp {
    t: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Slerp { t: p.f32("t")? }))
}

impl MergeMethod for Slerp {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        let t = f64::from(self.t);
        let fold = PairFold {
            coefficients: |v0: &[f32], v1: &[f32]| coefficients(t, v0, v1),
            task_vectors: false,
            name: "slerp",
        };
        engine.whole_tensors(&fold, false, writer)
    }
}

/// (s₀, s₁) with result = s₀·v₀ + s₁·v₁.
fn coefficients(t: f64, v0: &[f32], v1: &[f32]) -> (f32, f32) {
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let scale = |n: f64| if n > EPS { n } else { 1.0 };
    let (n0, n1) = (scale(norm(v0)), scale(norm(v1)));
    let dot = v0
        .iter()
        .zip(v1)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum::<f64>()
        / (n0 * n1);
    if dot.abs() > DOT_THRESHOLD {
        return ((1.0 - t) as f32, t as f32);
    }
    let theta = dot.acos();
    let sin = theta.sin();
    (
        ((theta - theta * t).sin() / sin) as f32,
        ((theta * t).sin() / sin) as f32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halfway_between_orthogonal_unit_vectors_is_on_the_circle() {
        let (s0, s1) = coefficients(0.5, &[1.0, 0.0], &[0.0, 1.0]);
        assert!((s0 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert!((s1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(coefficients(0.25, &[1.0, 1.0], &[2.0, 2.0]), (0.75, 0.25));
    }
}
