//! Weighted averaging: Σ wᵢθᵢ / Σ wᵢ (or Σ wᵢθᵢ without normalisation); the pretrained model takes no part.
//! With `compute` set to a half-precision dtype it is mergekit's `linear` in that dtype: the inputs are
//! rounded to it, Σ wᵢθᵢ and Σ wᵢ are formed in float32, divided, and rounded once.

use crate::engine::{Chunk, Engine};
use crate::error::{MergeError, Result};
use crate::method::precision::{COMPUTE, Precision};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "weighted_average",
    summary: "Σ wᵢθᵢ / Σ wᵢ",
    paper: "https://arxiv.org/abs/2203.05482",
    needs_base: false,
    min_models: 2,
    max_models: None,
    extra_inputs: None,
    params: &[
        ParamDef {
            name: "weights",
            kind: ParamKind::FloatList,
            default: ParamDefault::Required,
            help: "one weight per model",
        },
        ParamDef {
            name: "normalize",
            kind: ParamKind::Bool,
            default: ParamDefault::Flag(true),
            help: "divide by the sum of the weights",
        },
        COMPUTE,
    ],
    build,
};

#[derive(Debug)]
struct WeightedAverage {
    weights: Vec<f64>,
    normalize: bool,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(WeightedAverage {
        weights: p.floats("weights").unwrap_or_default(),
        normalize: p.bool("normalize")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for WeightedAverage {
    fn validate(&self, models: usize) -> Result<()> {
        validate_weights(&self.weights, self.normalize, models)
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        if self.precision != Precision::F32 {
            let weights: Vec<f32> = self.weights.iter().map(|&w| w as f32).collect();
            let divisor: f32 = if self.normalize { weights.iter().sum() } else { 1.0 };
            return engine.elementwise(false, writer, &|c| {
                as_mergekit(c, &weights, divisor, self.precision);
                Ok(())
            });
        }
        let weights = effective_weights(&self.weights, self.normalize);
        engine.elementwise(false, writer, &|c| {
            weighted(c, &weights);
            Ok(())
        })
    }
}

/// mergekit's order: out = (Σᵢ wᵢ·round(θᵢ)) / divisor in float32, each step a fused multiply-add as torch's
/// vectorised `addcmul_` does it on x86-64 CPUs with AVX2, rounded once.
fn as_mergekit(chunk: &mut Chunk<'_>, weights: &[f32], divisor: f32, precision: Precision) {
    chunk.out.fill(0.0);
    for (m, &w) in chunk.models.iter().zip(weights) {
        for (o, x) in chunk.out.iter_mut().zip(m.iter()) {
            *o = precision.round(*x).mul_add(w, *o);
        }
    }
    for o in chunk.out.iter_mut() {
        *o = precision.round(*o / divisor);
    }
}

/// out = Σᵢ wᵢθᵢ with the effective (already normalised) weights.
fn weighted(chunk: &mut Chunk<'_>, weights: &[f32]) {
    chunk.out.fill(0.0);
    for (m, &w) in chunk.models.iter().zip(weights) {
        for (o, x) in chunk.out.iter_mut().zip(m.iter()) {
            *o += w * *x;
        }
    }
}

/// wᵢ / Σw when normalising (computed in f64, as numpy does), else wᵢ.
fn effective_weights(weights: &[f64], normalize: bool) -> Vec<f32> {
    let total: f64 = if normalize { weights.iter().sum() } else { 1.0 };
    weights.iter().map(|w| (w / total) as f32).collect()
}

/// One weight per model, not summing to zero when normalising.
fn validate_weights(weights: &[f64], normalize: bool, models: usize) -> Result<()> {
    if weights.len() != models {
        return Err(MergeError::arg(format!(
            "weighted_average: {} weights given for {models} models",
            weights.len()
        )));
    }
    let total: f64 = weights.iter().sum();
    if !total.is_finite() {
        return Err(MergeError::arg(
            "weighted_average: the weights' sum overflows; scale them down",
        ));
    }
    if normalize && total == 0.0 {
        return Err(MergeError::arg(
            "weighted_average: the weights sum to 0 and cannot be normalised",
        ));
    }
    if effective_weights(weights, normalize).iter().any(|w| !w.is_finite()) {
        return Err(MergeError::arg(
            "weighted_average: a weight is too large for float32 arithmetic; normalise or scale them down",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_normalise_and_validate() {
        assert_eq!(effective_weights(&[1.0, 3.0], true), vec![0.25, 0.75]);
        assert_eq!(effective_weights(&[1.0, 3.0], false), vec![1.0, 3.0]);
        assert!(validate_weights(&[1.0], true, 2).is_err());
        assert!(validate_weights(&[1.0, -1.0], true, 2).is_err());
        assert!(validate_weights(&[1.0, -1.0], false, 2).is_ok());
        assert!(validate_weights(&[1e308, 1e308], true, 2).is_err(), "the sum overflows");
        assert!(validate_weights(&[1e300, 1.0], false, 2).is_err(), "not a float32");
    }
}
