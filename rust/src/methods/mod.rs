//! The merge methods. Elementwise ones run in a single streaming pass; TIES adds two selection passes.
//! Each family lives in its own file; this module is the dispatch and the shared output step.

mod average;
mod coefficients;
mod dare;
mod fisher;
mod spec;
mod task_arithmetic;
mod ties;

pub use coefficients::{Coefficients, PerTensorCoefficients};
pub use dare::DareOptions;
pub use fisher::FisherOptions;
pub use spec::MethodSpec;
pub use ties::{MergeFunc, TiesOptions, Trim};

use serde_json::{Value, json};

use crate::engine::{Chunk, Engine, PassSpec};
use crate::error::{MergeError, Result};
use crate::plan::MergePlan;
use crate::writer::Writer;

/// A merge method with its parameters.
#[derive(Debug, Clone)]
pub enum Method {
    /// Mean of the fine-tuned models.
    SimpleAverage,
    /// Σ wᵢθᵢ / Σ wᵢ (or Σ wᵢθᵢ without normalisation).
    WeightedAverage {
        /// One weight per model.
        weights: Vec<f64>,
        /// Divide by the sum of the weights.
        normalize: bool,
    },
    /// θ₀ + Σ cᵢτᵢ.
    TaskArithmetic(Coefficients),
    /// TIES merging, optionally after DARE.
    Ties(TiesOptions),
    /// DARE: random drop and rescale of each task vector, then task arithmetic.
    Dare {
        /// λ.
        scaling_factor: f32,
        /// Drop options.
        dare: DareOptions,
    },
    /// Σ cᵢ(Fᵢ + ε)θᵢ / Σ cᵢ(Fᵢ + ε) with diagonal Fisher checkpoints.
    Fisher(FisherOptions),
}

/// What a method found out while merging, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MethodStats {
    /// TIES: the magnitude threshold of each task (global trim only), exact (f32 widened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ties_thresholds: Option<Vec<f64>>,
    /// TIES: the majority sign used where the elected sign was 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ties_majority_sign: Option<i8>,
}

impl Method {
    /// The method's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Method::SimpleAverage => "simple_average",
            Method::WeightedAverage { .. } => "weighted_average",
            Method::TaskArithmetic(_) => "task_arithmetic",
            Method::Ties(o) if o.dare.is_some() => "dare_ties",
            Method::Ties(_) => "ties",
            Method::Dare { .. } => "dare",
            Method::Fisher(_) => "fisher_merging",
        }
    }

    /// Whether the method uses the pretrained model.
    pub fn needs_base(&self) -> bool {
        !matches!(
            self,
            Method::SimpleAverage | Method::WeightedAverage { .. } | Method::Fisher(_)
        )
    }

    /// Checkpoints read alongside the fine-tuned models (one per model, same tensors), if the method has any.
    pub fn weight_inputs(&self) -> &[std::path::PathBuf] {
        match self {
            Method::Fisher(o) => &o.fisher,
            _ => &[],
        }
    }

    /// The parameters, for reports and output metadata.
    pub fn parameters(&self) -> Value {
        match self {
            Method::SimpleAverage => json!({}),
            Method::WeightedAverage { weights, normalize } => json!({"weights": weights, "normalize": normalize}),
            Method::TaskArithmetic(c) => c.parameters(),
            Method::Ties(o) => o.parameters(),
            Method::Dare { scaling_factor, dare } => {
                let mut p = dare.parameters();
                p["scaling_factor"] = json!(tidy(*scaling_factor));
                p
            }
            Method::Fisher(o) => o.parameters(),
        }
    }

    /// Check the parameters against the number of models, before anything is read.
    pub fn validate(&self, models: usize) -> Result<()> {
        let min = if matches!(
            self,
            Method::SimpleAverage | Method::WeightedAverage { .. } | Method::Fisher(_)
        ) {
            2
        } else {
            1
        };
        if models < min {
            return Err(MergeError::arg(format!(
                "{} needs at least {min} fine-tuned models, got {models}",
                self.name()
            )));
        }
        match self {
            Method::WeightedAverage { weights, normalize } => average::validate_weights(weights, *normalize, models),
            Method::TaskArithmetic(c) => c.validate(models),
            Method::Ties(o) => o.validate(),
            Method::Dare { dare, .. } => dare.validate(),
            Method::Fisher(o) => o.validate(models),
            Method::SimpleAverage => Ok(()),
        }
    }

    /// Check per-tensor parameters against the plan.
    pub fn validate_plan(&self, plan: &MergePlan) -> Result<()> {
        match self {
            Method::TaskArithmetic(c) => c.validate_plan(plan),
            _ => Ok(()),
        }
    }

    /// Merge every float tensor of the plan into `writer`.
    pub fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        let jobs = engine.all_jobs();
        let elementwise = |read_base: bool, kernel: &(dyn Fn(&mut Chunk<'_>) -> Result<()> + Sync)| {
            let spec = PassSpec {
                phase: "merge",
                read_base,
                writer: Some(writer),
                check_inputs: false,
            };
            engine.pass(spec, &jobs, || (), |_, _: &mut (), mut chunk| kernel(&mut chunk))
        };
        match self {
            Method::SimpleAverage => elementwise(false, &average::simple)?,
            Method::WeightedAverage { weights, normalize } => {
                let w = average::effective_weights(weights, *normalize);
                elementwise(false, &|c| average::weighted(c, &w))?
            }
            Method::TaskArithmetic(coefficients) => elementwise(true, &|c| task_arithmetic::merge(c, coefficients))?,
            Method::Dare { scaling_factor, dare } => elementwise(true, &|c| dare::merge(c, dare, *scaling_factor))?,
            Method::Fisher(options) => elementwise(false, &|c| fisher::merge(c, options))?,
            Method::Ties(options) => return ties::run(options, engine, writer),
        };
        Ok(MethodStats::default())
    }
}

/// An f32 parameter as the decimal a user typed (0.3, not 0.30000001192092896), for reports.
pub(crate) fn tidy(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Σᵢ models[i] into `out`, in model order.
fn sum_into(out: &mut [f32], models: &[&mut [f32]]) {
    out.fill(0.0);
    for m in models {
        for (o, x) in out.iter_mut().zip(m.iter()) {
            *o += *x;
        }
    }
}
