//! mergekit's generalized task arithmetic (`generalized_task_arithmetic.py`), which its breadcrumbs and
//! DELLA methods are built on: each task vector δₜ = θₜ − θ₀ is sparsified and weighted by wₜ; with sign
//! consensus only entries agreeing with the sign of Σ wₜδₜ are summed; the sum is divided by the summed
//! weights with `normalize`, scaled by λ and added to θ₀. Without consensus only the running sum is held.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::method::precision::Precision;
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
/// The share of each task vector kept, one for all models or one per model.
pub(crate) const DENSITY: ParamDef = per_model(
    "density",
    1.0,
    "share of each task vector's entries kept (one, or one per model)",
);
/// Breadcrumbs' γ: the share of largest-magnitude entries dropped as outliers.
pub(crate) const GAMMA: ParamDef = per_model(
    "gamma",
    0.01,
    "share of the largest-magnitude entries dropped as outliers (one, or one per model)",
);
/// DELLA's ε: the spread of keep probabilities around the density (one for all models: fisher_merging's
/// `epsilon` shares the name and is a single number).
pub(crate) const EPSILON: ParamDef = ParamDef {
    name: "epsilon",
    kind: ParamKind::F32 { min: 0.0, max: 1.0 },
    default: ParamDefault::Number(0.15),
    help: "spread of DELLA's keep probability around the density (density ± epsilon)",
};
/// The seed of the random masks.
pub(crate) const SEED: ParamDef = ParamDef {
    name: "seed",
    kind: ParamKind::U64,
    default: ParamDefault::Integer(0),
    help: "seed of the random masks (mergekit draws from torch's generator; masks differ)",
};

/// A number in [0, 1], one for all models or one per model.
const fn per_model(name: &'static str, default: f64, help: &'static str) -> ParamDef {
    ParamDef {
        name,
        kind: ParamKind::FloatOrList,
        default: ParamDefault::Number(default),
        help,
    }
}

/// How a member thins its task vectors (mergekit's `SparsificationMethod`, or none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Thinning {
    /// Keep everything.
    Keep,
    /// Top-k magnitude (TIES).
    Magnitude,
    /// A Bernoulli drop (DARE).
    Random,
    /// Magnitude without outliers (breadcrumbs), with `gamma`.
    MagnitudeOutliers,
    /// DELLA's rank-weighted drop, with `epsilon`.
    DellaMagprune,
}

/// One sparsifier per model (or one for all) from `density` and, where the thinning has them, `gamma`,
/// `epsilon` and `seed`: each one value or one per model, in [0, 1].
pub(crate) fn sparsifiers(method: &str, p: &Params, how: Thinning) -> Result<Vec<Sparsifier>> {
    let read = |name: &str, used: bool| {
        if used {
            per_model_values(method, p, name)
        } else {
            Ok(vec![0.0])
        }
    };
    let density = read("density", true)?;
    let gamma = read("gamma", how == Thinning::MagnitudeOutliers)?;
    let epsilon = read("epsilon", how == Thinning::DellaMagprune)?;
    let seed = if matches!(how, Thinning::Random | Thinning::DellaMagprune) {
        p.u64("seed")?
    } else {
        0
    };
    let lengths = [density.len(), gamma.len(), epsilon.len()];
    let models = lengths.into_iter().max().unwrap_or(1);
    if lengths.iter().any(|&n| n != 1 && n != models) {
        return Err(MergeError::arg(format!(
            "{method}: density, gamma and epsilon must each give one value or one per model"
        )));
    }
    let at = |values: &[f64], t: usize| values[t.min(values.len() - 1)];
    (0..models)
        .map(|t| {
            let (density, gamma, epsilon) = (at(&density, t), at(&gamma, t), at(&epsilon, t));
            Ok(match how {
                Thinning::Keep => Sparsifier::Keep,
                Thinning::Magnitude => Sparsifier::Magnitude { density },
                Thinning::Random => Sparsifier::Random { density, seed },
                Thinning::MagnitudeOutliers => Sparsifier::MagnitudeOutliers { density, gamma },
                Thinning::DellaMagprune => {
                    if density > 0.0 && density < 1.0 && (density + epsilon >= 1.0 || density - epsilon <= 0.0) {
                        return Err(MergeError::arg(format!(
                            "{method}: density ± epsilon must lie in (0, 1) (got density {density}, epsilon {epsilon})"
                        )));
                    }
                    Sparsifier::DellaMagprune { density, epsilon, seed }
                }
            })
        })
        .collect()
}

/// A per-model parameter's values, each in [0, 1].
fn per_model_values(method: &str, p: &Params, name: &str) -> Result<Vec<f64>> {
    let values = match p.floats(name) {
        Some(list) => list,
        None => vec![p.f64(name)?],
    };
    if values.is_empty() {
        return Err(MergeError::arg(format!("{method}: '{name}' is an empty list")));
    }
    if let Some(bad) = values.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(MergeError::arg(format!(
            "{method}: '{name}' must lie in [0, 1] (got {bad})"
        )));
    }
    Ok(values)
}

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

/// How the sign of each entry is elected (mergekit's `ConsensusMethod`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Consensus {
    /// The sign of Σ wₜδₜ.
    Sum,
    /// The sign held by more of the weighted deltas.
    Count,
}

/// Where the weights enter a sign election.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Weigh {
    /// mergekit: each δₜ is weighted before the election, and `normalize` divides by the kept weights.
    Before,
    /// PEFT's `ties`: the election sees the unweighted δₜ, the kept entries are weighted, and `normalize`
    /// divides by how many were kept.
    After,
}

/// Where the weights enter, for `generalized_task_arithmetic`'s `weigh`.
pub(crate) const WEIGH: ParamDef = ParamDef {
    name: "weigh",
    kind: ParamKind::Choice {
        choices: &["before", "after"],
    },
    default: ParamDefault::Name("before"),
    help: "with a consensus: weights before the sign election (mergekit) or after it, normalize dividing by the count kept (PEFT's ties_svd)",
};

/// One member of the family, ready to run.
#[derive(Debug)]
pub(crate) struct Gta {
    name: &'static str,
    /// One sparsifier for every model, or one per model.
    sparsifiers: Vec<Sparsifier>,
    consensus: Option<Consensus>,
    weigh: Weigh,
    normalize: bool,
    rescale: bool,
    lambda: f32,
    weights: Vec<f32>,
    /// Where every step is rounded (mergekit's `dtype:`).
    precision: Precision,
}

impl Gta {
    /// The member `name` that thins `how` and elects signs by `consensus` (or not), from its checked
    /// parameters.
    pub(crate) fn from_params(
        name: &'static str,
        p: &Params,
        how: Thinning,
        consensus: Option<Consensus>,
    ) -> Result<Gta> {
        let precision = Precision::from_params(p)?;
        Ok(Gta {
            name,
            sparsifiers: sparsifiers(name, p, how)?,
            consensus,
            weigh: Weigh::Before,
            normalize: p.bool("normalize")?,
            rescale: p.bool("rescale")?,
            lambda: p.f32("lambda")?,
            weights: p
                .floats("weights")
                .unwrap_or_default()
                .iter()
                .map(|&x| precision.round(x as f32))
                .collect(),
            precision,
        })
    }
}

impl Gta {
    /// The same member with the weights entering the sign election as `weigh` says.
    pub(crate) fn weighing(self, weigh: Weigh) -> Result<Gta> {
        if weigh == Weigh::After && self.consensus.is_none() {
            return Err(MergeError::arg(format!(
                "{}: weigh=after needs a sign consensus (sum or count); without one the weights only scale",
                self.name
            )));
        }
        Ok(Gta { weigh, ..self })
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
        if self.sparsifiers.len() != 1 && self.sparsifiers.len() != models {
            return Err(MergeError::arg(format!(
                "{}: per-model sparsification parameters given for {} models, not {models}",
                self.name,
                self.sparsifiers.len()
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
        let held = if self.consensus.is_some() { models } else { 1 };
        let scratch = self
            .sparsifiers
            .iter()
            .map(|s| s.scratch_bytes(&tensor.shape))
            .max()
            .unwrap_or(0);
        4 * (held + 2) * tensor.numel + scratch
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Acc> {
        Ok(match self.consensus {
            Some(_) => Acc::All(Vec::with_capacity(models), Vec::with_capacity(models)),
            None => Acc::Sum(vec![0.0; tensor.numel], 0.0),
        })
    }

    fn add(&self, acc: &mut Acc, tensor: &PlanTensor, t: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal(format!("{} reads the pretrained model", self.name)))?;
        let r = |x: f32| self.precision.round(x);
        let mut delta: Vec<f32> = theta.iter().zip(base).map(|(x, b)| r(r(*x) - r(*b))).collect();
        sparsify(
            &mut delta,
            &tensor.shape,
            &tensor.name,
            t,
            self.sparsifiers[t.min(self.sparsifiers.len() - 1)],
            self.rescale,
            self.precision,
        );
        let w = self.weights[t];
        match acc {
            Acc::Sum(sum, weights) => {
                for (s, d) in sum.iter_mut().zip(&delta) {
                    *s += r(d * w);
                }
                *weights += w;
            }
            Acc::All(deltas, weights) => {
                if self.weigh == Weigh::Before {
                    delta.iter_mut().for_each(|d| *d = r(*d * w));
                }
                deltas.push(delta);
                weights.push(w);
            }
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, _: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        // Sums are held in float32 and rounded once, as torch sums half-precision tensors.
        let r = |x: f32| self.precision.round(x);
        match acc {
            Acc::Sum(sum, weights) => {
                let weights = r(weights);
                let divisor = if weights.abs() < 1e-8 { 1.0 } else { weights };
                for (o, s) in out.iter_mut().zip(&sum) {
                    *o = if self.normalize { r(r(*s) / divisor) } else { r(*s) };
                }
            }
            Acc::All(deltas, weights) => self.elect(&deltas, &weights, out),
        }
        if self.lambda != 1.0 {
            out.iter_mut().for_each(|o| *o = r(*o * self.lambda));
        }
        let base = base.ok_or_else(|| MergeError::Internal(format!("{} reads the pretrained model", self.name)))?;
        for (o, b) in out.iter_mut().zip(base) {
            *o = r(*o + r(*b));
        }
        Ok(())
    }
}

impl Gta {
    /// Sign consensus: keep the deltas whose sign is the elected one (that of their sum, or of their count of
    /// signs; + on a tie), and divide by the weights kept with `normalize`. The deltas are weighted already
    /// ([`Weigh::Before`]), or are weighted as they are kept and counted one each ([`Weigh::After`]).
    fn elect(&self, deltas: &[Vec<f32>], weights: &[f32], out: &mut [f32]) {
        let r = |x: f32| self.precision.round(x);
        for (i, o) in out.iter_mut().enumerate() {
            let total: f32 = match self.consensus {
                Some(Consensus::Count) => deltas.iter().map(|d| sign(d[i])).sum(),
                _ => deltas.iter().map(|d| d[i]).sum(),
            };
            // a sum rounded to −0 (float16 underflow) counts as positive, as in torch
            let majority = if r(total) >= 0.0 { 1.0 } else { -1.0 };
            let (mut mixed, mut divisor) = (0.0f32, 0.0f32);
            for (d, &w) in deltas.iter().zip(weights) {
                if d[i] != 0.0 && d[i].signum() == majority {
                    match self.weigh {
                        Weigh::Before => (mixed, divisor) = (mixed + d[i], divisor + w),
                        Weigh::After => (mixed, divisor) = (mixed + r(d[i] * w), divisor + 1.0),
                    }
                }
            }
            let (mixed, divisor) = (r(mixed), r(divisor));
            let divisor = if divisor == 0.0 { 1.0 } else { divisor };
            *o = if self.normalize { r(mixed / divisor) } else { mixed };
        }
    }
}

/// torch's `sign`: −1, 0 or 1.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
