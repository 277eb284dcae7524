//! TIES merging (Yadav et al., 2023) with FusionBench's semantics: trim each task vector to its top
//! `threshold` % magnitudes over the whole model (exact k-th value, bounded memory), elect the sign of
//! Σᵢ trimmed τᵢ (where that is 0, the sign of the sum of all elected signs), keep the agreeing entries,
//! aggregate (sum / mean / max) and add λ times the result to θ₀.

mod aggregate;
mod fused;
mod histogram;
mod merge;
mod select;
mod window_counts;

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::methods::dare::DareOptions;
use crate::methods::task_arithmetic::SCALING_FACTOR;
use crate::writer::Writer;

/// TIES's parameters (λ first), shared with DARE-TIES.
pub(crate) const TIES_PARAMS: [ParamDef; 4] = [
    SCALING_FACTOR,
    ParamDef {
        name: "threshold",
        kind: ParamKind::F64 { min: 0.0, max: 100.0 },
        default: ParamDefault::Number(20.0),
        help: "percentage of each task vector's entries kept (largest magnitudes)",
    },
    ParamDef {
        name: "merge_func",
        kind: ParamKind::Choice {
            choices: &["sum", "mean", "max"],
        },
        default: ParamDefault::Name("sum"),
        help: "how kept entries are combined",
    },
    ParamDef {
        name: "trim",
        kind: ParamKind::Choice {
            choices: &["global", "per-tensor"],
        },
        default: ParamDefault::Name("global"),
        help: "top-k over the whole model (global, FusionBench) or per tensor (mergekit)",
    },
];

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "ties",
    summary: "trim to the top-k %, elect signs, disjoint merge",
    paper: "https://arxiv.org/abs/2306.01708",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &TIES_PARAMS,
    build,
};

/// How the kept entries are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MergeFunc {
    /// Σ of the kept entries.
    Sum,
    /// Mean over the non-zero kept entries.
    Mean,
    /// The largest kept magnitude, with the elected sign.
    Max,
}

/// Over what the top-k trim is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trim {
    /// The whole model (FusionBench / paper).
    Global,
    /// Each tensor separately (mergekit's `density`).
    PerTensor,
}

/// TIES parameters.
#[derive(Debug, Clone)]
pub(crate) struct TiesOptions {
    /// λ.
    scaling_factor: f32,
    /// Percentage of entries kept per task (20 keeps the top 20 %).
    threshold: f64,
    /// Aggregation.
    merge_func: MergeFunc,
    /// Trim scope.
    trim: Trim,
    /// Apply DARE to the task vectors first (DARE-TIES).
    dare: Option<DareOptions>,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(TiesOptions::from_params(p, None)?))
}

impl TiesOptions {
    /// The options from checked parameters, with DARE applied first when given.
    pub(crate) fn from_params(p: &Params, dare: Option<DareOptions>) -> Result<Self> {
        let merge_func = match p.choice("merge_func")? {
            "mean" => MergeFunc::Mean,
            "max" => MergeFunc::Max,
            _ => MergeFunc::Sum,
        };
        let trim = match p.choice("trim")? {
            "per-tensor" => Trim::PerTensor,
            _ => Trim::Global,
        };
        Ok(TiesOptions {
            scaling_factor: p.f32("scaling_factor")?,
            threshold: p.f64("threshold")?,
            merge_func,
            trim,
            dare,
        })
    }

    /// τ = θ − θ₀, then DARE's mask when asked.
    fn prepare(&self, chunk: &mut Chunk<'_>) -> Result<()> {
        chunk.make_task_vectors()?;
        if let Some(d) = &self.dare {
            d.apply(chunk);
        }
        Ok(())
    }
}

impl MergeMethod for TiesOptions {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        merge::run(self, engine, writer)
    }
}
