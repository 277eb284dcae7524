//! mergekit's generalized task arithmetic (`generalized_task_arithmetic.py`), which its breadcrumbs and
//! DELLA methods are built on: each task vector δₜ = θₜ − θ₀ is sparsified and weighted by wₜ; with sign
//! consensus only entries agreeing with the sign of Σ wₜδₜ are summed; the sum is divided by the summed
//! weights with `normalize`, scaled by λ and added to θ₀. Without consensus only the running sum is held.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::sparsify::{Sparsifier, sparsify};
use crate::method::{ANY_F32, MergeMethod, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// One weight per model, required as mergekit requires `weight`.
pub(crate) const WEIGHTS: ParamDef = ParamDef {
    name: "weights",
    kind: ParamKind::FloatList,
    default: ParamDefault::Required,
    help: "one weight per model (mergekit's weight)",
};
/// λ, mergekit's `lambda`.
pub(crate) const LAMBDA: ParamDef = ParamDef {
    name: "lambda",
    kind: ANY_F32,
    default: ParamDefault::Number(1.0),
    help: "λ: scales the merged task vector (mergekit's lambda)",
};
/// The share of each task vector kept.
pub(crate) const DENSITY: ParamDef = ParamDef {
    name: "density",
    kind: ParamKind::F64 { min: 0.0, max: 1.0 },
    default: ParamDefault::Number(1.0),
    help: "share of each task vector's entries kept",
};

/// Whether the summed weights divide the result, with a method's default.
pub(crate) const fn normalize(default: bool) -> ParamDef {
    ParamDef {
        name: "normalize",
        kind: ParamKind::Bool,
        default: ParamDefault::Flag(default),
        help: "divide by the sum of the weights",
    }
}

/// Whether a sparsified task vector is rescaled to its former L1 norm, with a method's default.
pub(crate) const fn rescale(default: bool) -> ParamDef {
    ParamDef {
        name: "rescale",
        kind: ParamKind::Bool,
        default: ParamDefault::Flag(default),
        help: "rescale kept entries (DARE: by 1/(1 − drop rate); mergekit family: to the former L1 norm)",
    }
}

/// One member of the family, ready to run.
#[derive(Debug)]
pub(crate) struct Gta {
    name: &'static str,
    sparsifier: Sparsifier,
    consensus: bool,
    normalize: bool,
    rescale: bool,
    lambda: f32,
    weights: Vec<f32>,
}

impl Gta {
    /// The member `name` with `sparsifier`, sign consensus or not, from its checked parameters.
    pub(crate) fn from_params(name: &'static str, p: &Params, sparsifier: Sparsifier, consensus: bool) -> Result<Gta> {
        Ok(Gta {
            name,
            sparsifier,
            consensus,
            normalize: p.bool("normalize")?,
            rescale: p.bool("rescale")?,
            lambda: p.f32("lambda")?,
            weights: p
                .floats("weights")
                .unwrap_or_default()
                .iter()
                .map(|&x| x as f32)
                .collect(),
        })
    }
}

impl MergeMethod for Gta {
    fn validate(&self, models: usize) -> Result<()> {
        if self.weights.len() != models {
            return Err(MergeError::arg(format!(
                "{}: {} weights given for {models} models",
                self.name,
                self.weights.len()
            )));
        }
        Ok(())
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

/// One tensor in progress.
pub(crate) enum Acc {
    /// Without consensus: Σ wₜδₜ and Σ wₜ.
    Sum(Vec<f32>, f32),
    /// With consensus: every wₜδₜ, and every wₜ.
    All(Vec<Vec<f32>>, Vec<f32>),
}

impl TensorFold for Gta {
    type Acc = Acc;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        let held = if self.consensus { models } else { 1 };
        4 * (held + 2) * tensor.numel
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Acc> {
        Ok(match self.consensus {
            true => Acc::All(Vec::with_capacity(models), Vec::with_capacity(models)),
            false => Acc::Sum(vec![0.0; tensor.numel], 0.0),
        })
    }

    fn add(&self, acc: &mut Acc, tensor: &PlanTensor, t: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal(format!("{} reads the pretrained model", self.name)))?;
        let mut delta: Vec<f32> = theta.iter().zip(base).map(|(x, b)| x - b).collect();
        sparsify(
            &mut delta,
            &tensor.shape,
            &tensor.name,
            t,
            self.sparsifier,
            self.rescale,
        );
        let w = self.weights[t];
        match acc {
            Acc::Sum(sum, weights) => {
                for (s, d) in sum.iter_mut().zip(&delta) {
                    *s += d * w;
                }
                *weights += w;
            }
            Acc::All(deltas, weights) => {
                delta.iter_mut().for_each(|d| *d *= w);
                deltas.push(delta);
                weights.push(w);
            }
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, _: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match acc {
            Acc::Sum(sum, weights) => {
                let divisor = if weights.abs() < 1e-8 { 1.0 } else { weights };
                for (o, s) in out.iter_mut().zip(&sum) {
                    *o = if self.normalize { s / divisor } else { *s };
                }
            }
            Acc::All(deltas, weights) => self.elect(&deltas, &weights, out),
        }
        if self.lambda != 1.0 {
            out.iter_mut().for_each(|o| *o *= self.lambda);
        }
        let base = base.ok_or_else(|| MergeError::Internal(format!("{} reads the pretrained model", self.name)))?;
        for (o, b) in out.iter_mut().zip(base) {
            *o += b;
        }
        Ok(())
    }
}

impl Gta {
    /// Sign consensus (mergekit's "sum" method): keep the weighted deltas whose sign is that of their sum
    /// (+ where the sum is 0), and divide by the weights kept with `normalize`.
    fn elect(&self, deltas: &[Vec<f32>], weights: &[f32], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            let total: f32 = deltas.iter().map(|d| d[i]).sum();
            let majority = if total >= 0.0 { 1.0 } else { -1.0 };
            let (mut mixed, mut divisor) = (0.0f32, 0.0f32);
            for (d, w) in deltas.iter().zip(weights) {
                if d[i] != 0.0 && d[i].signum() == majority {
                    mixed += d[i];
                    divisor += w;
                }
            }
            if divisor == 0.0 {
                divisor = 1.0;
            }
            *o = if self.normalize { mixed / divisor } else { mixed };
        }
    }
}
