//! NuSLERP, mergekit's `nuslerp` with its default flattening: spherical interpolation at t from the first
//! model to the second, of their task vectors when θ₀ is given (θ = θ₀ + slerp(τ₀, τ₁)), else of the models.
//! Unlike `slerp`, nearly colinear tensors fall back to linear interpolation only when 1 − cos² ≤ 10⁻¹⁶, and
//! a norm below 10⁻⁷ is clamped, as mergekit does.

use crate::engine::Engine;
use crate::error::Result;
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, PairFold, ParamDef, ParamDefault, Params};
use crate::writer::Writer;

/// Norms are clamped to at least this.
const NORM_EPS: f64 = 1e-7;
/// Colinear when 1 − cos² is at most this (mergekit's eps²).
const COLINEAR: f64 = 1e-16;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "nuslerp",
    summary: "spherical interpolation of two models, or of their task vectors when θ₀ is given",
    paper: "https://github.com/arcee-ai/mergekit",
    needs_base: false,
    min_models: 2,
    max_models: Some(2),
    extra_inputs: None,
    params: &[ParamDef {
        name: "t",
        kind: ANY_F32,
        default: ParamDefault::Required,
        help: "position from the first model (0) to the second (1); mergekit's w₁ / (w₀ + w₁)",
    }],
    build,
};

#[derive(Debug)]
struct NuSlerp {
    t: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(NuSlerp { t: p.f32("t")? }))
}

impl MergeMethod for NuSlerp {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        let t = f64::from(self.t);
        let with_base = engine.inputs.base.is_some();
        let fold = PairFold {
            coefficients: |v0: &[f32], v1: &[f32]| coefficients(t, v0, v1),
            task_vectors: with_base,
            name: "nuslerp",
        };
        engine.whole_tensors(&fold, with_base, writer)
    }
}

/// (s₀, s₁) with result = s₀·v₀ + s₁·v₁.
fn coefficients(t: f64, v0: &[f32], v1: &[f32]) -> (f32, f32) {
    let norm = |v: &[f32]| {
        v.iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(NORM_EPS)
    };
    let dot: f64 = v0.iter().zip(v1).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
    let cos = (dot / (norm(v0) * norm(v1))).clamp(-1.0, 1.0);
    if 1.0 - cos * cos <= COLINEAR {
        return ((1.0 - t) as f32, t as f32);
    }
    let theta = cos.acos();
    let sin = theta.sin();
    (
        (((1.0 - t) * theta).sin() / sin) as f32,
        ((t * theta).sin() / sin) as f32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halfway_between_orthogonal_vectors_and_colinear_ones_fall_back_to_a_line() {
        let (s0, s1) = coefficients(0.5, &[1.0, 0.0], &[0.0, 1.0]);
        assert!((s0 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (s1 - s0).abs() < 1e-7);
        assert_eq!(coefficients(0.25, &[1.0, 1.0], &[2.0, 2.0]), (0.75, 0.25));
        // Nearly colinear, but 1 − cos² is above 1e-16: still spherical (slerp's 0.9995 would go linear).
        let (s0, _) = coefficients(0.5, &[1.0, 0.0], &[1.0, 0.01]);
        assert_ne!(s0, 0.5);
    }
}
