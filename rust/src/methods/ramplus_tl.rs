//! RAM+ (tensor-local), mergekit's `ramplus_tl`: RAM ([`super::ram`]) with each model's lone changes scaled up
//! by how much of its change the other models share, per tensor. For model i, sᵢ counts the elements it changes
//! (|τᵢ| > ε) together with another model and uᵢ those it changes alone; ρᵢ = sᵢ / max(uᵢ, ε) and
//! λᵢ = 1 + r · clamp(ρᵢ, 0, α). An element only model i changes takes λᵢ τᵢ, one several change the mean of their
//! τ, and the rest stay at θ₀, in mergekit's order of float32 operations. With `compute` in a half dtype, τ is
//! round(round(θ) − round(θ₀)), ε is rounded (torch casts the scalar to the dtype), a shared entry is round(τ / n)
//! and θ₀ is rounded; λ and the sum stay in float32, as torch promotes them.
//!
//! The counts need every model before any λᵢ is known, so each tensor's models are read twice: the first round
//! counts the changes per element, the second adds each model's share. Held per tensor: the counts and the sum.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::methods::ram::EPSILON;
use crate::plan::PlanTensor;
use crate::writer::Writer;

const NON_NEGATIVE: ParamKind = ParamKind::F32 {
    min: 0.0,
    max: f32::MAX as f64,
};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "ramplus_tl",
    summary: "RAM with each model's lone changes scaled up by the share of its changes other models make too",
    paper: "https://arxiv.org/abs/2601.13572",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "r",
            kind: NON_NEGATIVE,
            default: ParamDefault::Number(0.1),
            help: "how strongly the shared share ρ scales a model's lone changes: λ = 1 + r · clamp(ρ, 0, alpha)",
        },
        ParamDef {
            name: "alpha",
            // One number here; the kind is shared with tsv_m's `alpha`, which may be one per model.
            kind: ParamKind::FloatOrList,
            default: ParamDefault::Number(0.2),
            help: "the largest ρ that counts (≥ 0)",
        },
        EPSILON,
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct RamPlus {
    r: f32,
    alpha: f32,
    epsilon: f32,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let alpha = match p.floats("alpha") {
        Some(_) => None,
        None => Some(p.f32("alpha")?).filter(|a| *a >= 0.0),
    };
    let alpha = alpha.ok_or_else(|| MergeError::arg("ramplus_tl: alpha is one number, 0 or more"))?;
    Ok(Box::new(RamPlus {
        r: p.f32("r")?,
        alpha,
        epsilon: p.f32("epsilon")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for RamPlus {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

/// One tensor's state: how many models change each element (first round), then the merged task vector.
struct Acc {
    counts: Vec<u32>,
    sum: Vec<f32>,
    round: usize,
}

impl TensorFold for RamPlus {
    type Acc = Acc;

    fn footprint(&self, tensor: &PlanTensor, _models: usize) -> usize {
        8 * tensor.numel
    }

    fn rounds(&self, _tensor: &PlanTensor, _models: usize) -> usize {
        2
    }

    fn start(&self, tensor: &PlanTensor, _models: usize) -> Result<Acc> {
        Ok(Acc {
            counts: vec![0; tensor.numel],
            sum: Vec::new(),
            round: 0,
        })
    }

    fn add(
        &self,
        acc: &mut Acc,
        _tensor: &PlanTensor,
        model: usize,
        theta: &[f32],
        base: Option<&[f32]>,
    ) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal("ramplus_tl needs the pretrained model".into()))?;
        if model == 0 {
            acc.round += 1;
            if acc.round == 2 {
                acc.sum = vec![0.0; theta.len()];
            }
        }
        let p = self.precision;
        let epsilon = p.round(self.epsilon);
        let changes = theta.iter().zip(base).map(|(x, b)| p.round(p.round(*x) - p.round(*b)));
        if acc.round == 1 {
            for (count, tau) in acc.counts.iter_mut().zip(changes) {
                *count += u32::from(tau.abs() > epsilon);
            }
            return Ok(());
        }
        let lambda = self.lambda(&acc.counts, changes.clone(), epsilon);
        for ((sum, &count), tau) in acc.sum.iter_mut().zip(&acc.counts).zip(changes) {
            *sum += share(tau, count, lambda, epsilon, p);
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, _tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal("ramplus_tl needs the pretrained model".into()))?;
        for ((o, b), s) in out.iter_mut().zip(base).zip(&acc.sum) {
            *o = self.precision.round(*b) + s;
        }
        Ok(())
    }
}

impl RamPlus {
    /// λ = 1 + r · clamp(s / max(u, ε), 0, α) for one model's task vector, its changes (entries above
    /// `threshold`: ε, rounded in a half dtype) counted against `counts`.
    fn lambda(&self, counts: &[u32], taus: impl Iterator<Item = f32>, threshold: f32) -> f32 {
        let (mut shared, mut alone) = (0u64, 0u64);
        for (tau, &count) in taus.zip(counts) {
            if tau.abs() > threshold {
                shared += u64::from(count > 1);
                alone += u64::from(count == 1);
            }
        }
        let rho = shared as f32 / (alone as f32).max(self.epsilon);
        1.0 + self.r * rho.clamp(0.0, self.alpha)
    }
}

/// One model's term for one element: λτ where it alone changes the element, τ / n (rounded to `p`, as torch
/// divides in the dtype) where n models do, else 0.
fn share(tau: f32, count: u32, lambda: f32, epsilon: f32, p: Precision) -> f32 {
    if tau.abs() <= epsilon {
        0.0
    } else if count == 1 {
        tau * lambda
    } else {
        p.round(tau / count as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method() -> RamPlus {
        RamPlus {
            r: 0.5,
            alpha: 0.8,
            epsilon: 1e-3,
            precision: Precision::F32,
        }
    }

    #[test]
    fn lambda_grows_with_the_shared_share_up_to_alpha() {
        let counts = [1, 1, 2, 3, 0];
        // Changes at elements 0, 1 (alone) and 2 (shared): ρ = 1/2, λ = 1 + 0.5 · 0.5.
        assert_eq!(
            method().lambda(&counts, [0.1f32, -0.2, 0.3, 0.0, 0.0].into_iter(), 1e-3),
            1.25
        );
        // Only shared changes: ρ = 2 / ε, clamped to α.
        assert_eq!(
            method().lambda(&counts, [0.0f32, 0.0, 0.3, 0.3, 0.0].into_iter(), 1e-3),
            1.4
        );
        // No change at all: ρ = 0.
        assert_eq!(method().lambda(&counts, [0.0f32; 5].into_iter(), 1e-3), 1.0);
    }

    #[test]
    fn lone_changes_are_scaled_shared_ones_averaged_and_small_ones_dropped() {
        let f32 = Precision::F32;
        assert_eq!(share(0.5, 1, 1.25, 1e-3, f32), 0.625);
        assert_eq!(share(0.6, 3, 1.25, 1e-3, f32), 0.2);
        assert_eq!(share(1e-4, 1, 1.25, 1e-3, f32), 0.0);
        // In bfloat16 the mean is rounded, the lone change scaled in float32.
        let bf16 = Precision::Bf16;
        assert_eq!(share(0.6, 3, 1.25, 1e-3, bf16), bf16.round(0.6 / 3.0));
        assert_eq!(share(0.5, 1, 1.01, 1e-3, bf16), 0.505);
    }

    #[test]
    fn alpha_is_one_number_not_below_zero() {
        let build = |alpha: serde_json::Value| {
            let mut given = serde_json::Map::new();
            given.insert("alpha".into(), alpha);
            crate::method::Method::new("ramplus_tl", &given)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(build(serde_json::json!(0.5)), None);
        for bad in [serde_json::json!(-0.5), serde_json::json!([0.1, 0.2])] {
            assert!(build(bad).is_some_and(|e| e.contains("alpha is one number")));
        }
    }

    #[test]
    fn declared_working_set_is_honest() {
        crate::engine::working_set::assert_declared_working_set_is_honest(&method(), 3);
    }
}
