//! Fisher merging: θ = Σᵢ cᵢ(Fᵢ + ε)θᵢ / Σᵢ cᵢ(Fᵢ + ε), elementwise, with one diagonal Fisher checkpoint per
//! fine-tuned model (same tensor names and shapes) and one scalar cᵢ per model (FusionBench's scaling
//! coefficients, times its Fisher-norm normalisation when the caller applies it).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::engine::Chunk;
use crate::error::{MergeError, Result};

/// Parameters of Fisher merging.
#[derive(Debug, Clone)]
pub struct FisherOptions {
    /// One diagonal-Fisher checkpoint per fine-tuned model, in the same order.
    pub fisher: Vec<PathBuf>,
    /// cᵢ, one per model.
    pub weights: Vec<f32>,
    /// ε added to every Fisher value (FusionBench's `minimal_fisher_weight`).
    pub epsilon: f32,
}

impl FisherOptions {
    /// One Fisher checkpoint and one finite weight per model; ε ≥ 0.
    pub fn validate(&self, models: usize) -> Result<()> {
        if self.fisher.len() != models {
            return Err(MergeError::arg(format!(
                "fisher_merging: {} Fisher checkpoints given for {models} models",
                self.fisher.len()
            )));
        }
        if self.weights.len() != models {
            return Err(MergeError::arg(format!(
                "fisher_merging: {} weights given for {models} models",
                self.weights.len()
            )));
        }
        if self.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(MergeError::arg("fisher_merging: weights must be finite and ≥ 0"));
        }
        if !self.epsilon.is_finite() || self.epsilon < 0.0 {
            return Err(MergeError::arg("fisher_merging: epsilon must be finite and ≥ 0"));
        }
        Ok(())
    }

    /// Parameters for reports.
    pub fn parameters(&self) -> Value {
        json!({
            "fisher": self.fisher,
            "weights": self.weights.iter().map(|&w| super::tidy(w)).collect::<Vec<_>>(),
            "epsilon": super::tidy(self.epsilon),
        })
    }
}

/// The chunk holds the n models followed by their n Fisher tensors.
pub fn merge(chunk: &mut Chunk<'_>, options: &FisherOptions) -> Result<()> {
    weighted_mean(chunk.out, chunk.models, options);
    Ok(())
}

fn weighted_mean(out: &mut [f32], inputs: &[&mut [f32]], options: &FisherOptions) {
    let (models, fisher) = inputs.split_at(options.weights.len());
    let mut denominator = vec![0.0f32; out.len()];
    out.fill(0.0);
    for ((theta, f), &c) in models.iter().zip(fisher).zip(&options.weights) {
        for ((o, d), (&x, &fi)) in out
            .iter_mut()
            .zip(denominator.iter_mut())
            .zip(theta.iter().zip(f.iter()))
        {
            let w = c * (fi + options.epsilon);
            *o += w * x;
            *d += w;
        }
    }
    for (o, d) in out.iter_mut().zip(&denominator) {
        *o /= *d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_by_fisher_and_validated() {
        let options = FisherOptions {
            fisher: vec![PathBuf::from("a"), PathBuf::from("b")],
            weights: vec![1.0, 3.0],
            epsilon: 0.0,
        };
        assert!(options.validate(2).is_ok());
        assert!(options.validate(3).is_err());
        let mut theta = [vec![1.0f32, 2.0], vec![3.0f32, 4.0]];
        let mut fisher = [vec![1.0f32, 0.0], vec![1.0f32, 2.0]];
        let mut out = vec![0.0f32; 2];
        let [t0, t1] = &mut theta;
        let [f0, f1] = &mut fisher;
        let inputs: Vec<&mut [f32]> = vec![
            t0.as_mut_slice(),
            t1.as_mut_slice(),
            f0.as_mut_slice(),
            f1.as_mut_slice(),
        ];
        weighted_mean(&mut out, &inputs, &options);
        // (1·1·1 + 3·1·3) / (1 + 3) = 2.5; (1·0·2 + 3·2·4) / (0 + 6) = 4
        assert_eq!(out, vec![2.5, 4.0]);
        let bad = FisherOptions {
            weights: vec![1.0, f32::NAN],
            ..options
        };
        assert!(bad.validate(2).is_err());
    }
}
