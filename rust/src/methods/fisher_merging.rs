//! Fisher merging: θ = Σᵢ cᵢ(Fᵢ + ε)θᵢ / Σᵢ cᵢ(Fᵢ + ε), elementwise, with one diagonal Fisher checkpoint per
//! fine-tuned model (same tensor names and shapes) and one scalar cᵢ per model (FusionBench's scaling
//! coefficients, times its Fisher-norm normalisation when the caller applies it).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::engine::Engine;
use crate::error::{MergeError, Result};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params, tidy};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "fisher_merging",
    summary: "Σ cᵢ(Fᵢ+ε)θᵢ / Σ cᵢ(Fᵢ+ε) with diagonal Fisher checkpoints (merge-rs fisher computes them)",
    paper: "https://arxiv.org/abs/2111.09832",
    needs_base: false,
    min_models: 2,
    max_models: None,
    extra_inputs: Some("fisher"),
    params: &[
        ParamDef {
            name: "fisher",
            kind: ParamKind::PathList,
            default: ParamDefault::Required,
            help: "one diagonal-Fisher checkpoint per model, same tensor names, in model order",
        },
        ParamDef {
            name: "weights",
            kind: ParamKind::FloatList,
            default: ParamDefault::Absent,
            help: "cᵢ, one per model (default 1; merge-rs fisher folds in the norm normalisation)",
        },
        ParamDef {
            name: "epsilon",
            kind: ParamKind::F32 {
                min: 0.0,
                max: f32::MAX as f64,
            },
            default: ParamDefault::Number(1e-6),
            help: "ε added to every Fisher value (FusionBench's minimal_fisher_weight)",
        },
    ],
    build,
};

/// Parameters of Fisher merging.
#[derive(Debug, Clone)]
struct FisherOptions {
    /// One diagonal-Fisher checkpoint per fine-tuned model, in the same order.
    fisher: Vec<PathBuf>,
    /// cᵢ, one per model.
    weights: Vec<f32>,
    /// ε added to every Fisher value (FusionBench's `minimal_fisher_weight`).
    epsilon: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let fisher = p.paths("fisher").unwrap_or_default();
    let weights = match p.floats("weights") {
        Some(w) => w.iter().map(|&x| x as f32).collect(),
        None => vec![1.0; fisher.len()],
    };
    Ok(Box::new(FisherOptions {
        fisher,
        weights,
        epsilon: p.f32("epsilon")?,
    }))
}

impl MergeMethod for FisherOptions {
    fn validate(&self, models: usize) -> Result<()> {
        if self.weights.len() != models {
            return Err(MergeError::arg(format!(
                "fisher_merging: {} weights given for {models} models",
                self.weights.len()
            )));
        }
        if self.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(MergeError::arg("fisher_merging: weights must be finite and ≥ 0"));
        }
        if self.weights.iter().all(|w| *w == 0.0) {
            return Err(MergeError::arg("fisher_merging: the weights are all 0"));
        }
        Ok(())
    }

    fn parameters(&self) -> Option<Value> {
        Some(json!({
            "fisher": self.fisher,
            "weights": self.weights.iter().map(|&w| tidy(w)).collect::<Vec<_>>(),
            "epsilon": tidy(self.epsilon),
        }))
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(false, writer, &|c| {
            weighted_mean(c.out, c.models, c.extra, self);
            Ok(())
        })
    }
}

/// out = Σᵢ cᵢ(Fᵢ + ε)θᵢ / Σᵢ cᵢ(Fᵢ + ε), elementwise.
fn weighted_mean(out: &mut [f32], models: &[&mut [f32]], fisher: &[&mut [f32]], options: &FisherOptions) {
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
        let models = [t0.as_mut_slice(), t1.as_mut_slice()];
        let fisher = [f0.as_mut_slice(), f1.as_mut_slice()];
        weighted_mean(&mut out, &models, &fisher, &options);
        // (1·1·1 + 3·1·3) / (1 + 3) = 2.5; (1·0·2 + 3·2·4) / (0 + 6) = 4
        assert_eq!(out, vec![2.5, 4.0]);
        let bad = FisherOptions {
            weights: vec![1.0, f32::NAN],
            ..options
        };
        assert!(bad.validate(2).is_err());
    }
}
