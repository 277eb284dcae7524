//! NuSLERP, mergekit's `nuslerp` with its default flattening: spherical interpolation at t from the first
//! model to the second, of their task vectors when θ₀ is given (θ = θ₀ + slerp(τ₀, τ₁)), else of the models.
//! Unlike `slerp`, nearly colinear tensors fall back to linear interpolation only when 1 − cos² ≤ 10⁻¹⁶, and
//! a norm below 10⁻⁷ is clamped, as mergekit does. With `compute` bfloat16 or float16 every step is rounded as
//! torch rounds it in mergekit's dtype ([`Rounded`]), so a mergekit config in that dtype gives mergekit's bits.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, PairFold, ParamDef, ParamDefault, Params};
use crate::plan::PlanTensor;
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
    params: &[
        ParamDef {
            name: "t",
            kind: ANY_F32,
            default: ParamDefault::Required,
            help: "position from the first model (0) to the second (1); mergekit's w₁ / (w₀ + w₁)",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct NuSlerp {
    t: f32,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(NuSlerp {
        t: p.f32("t")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for NuSlerp {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        let t = f64::from(self.t);
        let with_base = engine.inputs.base.is_some();
        if self.precision != Precision::F32 {
            let fold = Rounded {
                t: self.t,
                p: self.precision,
            };
            return engine.whole_tensors(&fold, with_base, writer);
        }
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

/// mergekit's `nuslerp` step by step in a half-precision dtype, each result rounded as torch stores it: the
/// norms, the unit vectors, their dot product (summed in float32), cos² and 1 − cos², θ = acos, sin θ, the two
/// angles and their sines, each product with a task vector, the sum, the division by sin θ, and θ₀ added back.
struct Rounded {
    t: f32,
    p: Precision,
}

impl Rounded {
    fn unit(&self, v: &[f32]) -> Vec<f32> {
        let p = self.p;
        let norm = p.round(v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt() as f32);
        let norm = norm.max(p.round(NORM_EPS as f32));
        v.iter().map(|x| p.round(x / norm)).collect()
    }

    fn interpolate(&self, v0: &[f32], v1: &[f32], out: &mut [f32]) {
        let (p, t) = (self.p, self.t);
        let dot = self
            .unit(v0)
            .iter()
            .zip(self.unit(v1))
            .map(|(a, b)| f64::from(p.round(a * b)))
            .sum::<f64>();
        let cos = p.round(dot as f32).clamp(-1.0, 1.0);
        if p.round(1.0 - p.round(cos * cos)) <= p.round(COLINEAR as f32) {
            let (s0, s1) = (1.0 - t, t);
            for ((o, a), b) in out.iter_mut().zip(v0).zip(v1) {
                *o = p.round(p.round(s0 * a) + p.round(s1 * b));
            }
            return;
        }
        let theta = p.round(cos.acos());
        let sin = p.round(theta.sin());
        let s0 = p.round(p.round((1.0 - t) * theta).sin());
        let s1 = p.round(p.round(t * theta).sin());
        for ((o, a), b) in out.iter_mut().zip(v0).zip(v1) {
            *o = p.round(p.round(p.round(s0 * a) + p.round(s1 * b)) / sin);
        }
    }
}

impl TensorFold for Rounded {
    /// Both models' copies (task vectors when θ₀ is read), rounded to the dtype.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, _: usize) -> usize {
        16 * tensor.numel
    }

    fn start(&self, _: &PlanTensor, _: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(2))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        acc.push(self.p.input(theta, base));
        Ok(())
    }

    fn finish(&self, acc: Self::Acc, _: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let [v0, v1] = acc.as_slice() else {
            return Err(MergeError::Internal("nuslerp merges two models".into()));
        };
        self.interpolate(v0, v1, out);
        if let Some(base) = base {
            out.iter_mut()
                .zip(base)
                .for_each(|(o, b)| *o = self.p.round(self.p.round(*b) + *o));
        }
        Ok(())
    }
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

    #[test]
    fn the_rounded_folds_declared_working_set_covers_what_is_held() {
        let fold = Rounded {
            t: 0.5,
            p: Precision::F16,
        };
        crate::engine::working_set::assert_declared_working_set_is_honest(&fold, 2);
    }

    #[test]
    fn in_bfloat16_the_result_is_a_bfloat16_value_near_the_float32_one() {
        let (v0, v1) = ([0.3f32, -0.2, 0.5, 0.1], [0.1f32, 0.4, -0.3, 0.2]);
        let (s0, s1) = coefficients(0.3, &v0, &v1);
        let mut out = [0.0f32; 4];
        let fold = Rounded {
            t: 0.3,
            p: Precision::Bf16,
        };
        fold.interpolate(&v0, &v1, &mut out);
        for ((o, a), b) in out.iter().zip(v0).zip(v1) {
            let exact = s0 * a + s1 * b;
            assert_eq!(half::bf16::from_f32(*o).to_f32(), *o);
            assert!((o - exact).abs() <= exact.abs() / 32.0, "{o} near {exact}");
        }
        let mut line = [0.0f32; 4];
        fold.interpolate(&v0, &v0.map(|x| 2.0 * x), &mut line);
        assert_eq!(
            line[0],
            half::bf16::from_f32(0.7 * 0.3 + 0.3 * 0.6).to_f32(),
            "colinear: the straight line"
        );
    }
}
