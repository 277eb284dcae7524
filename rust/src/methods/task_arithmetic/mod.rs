//! Task arithmetic (Ilharco et al., 2023): θ = θ₀ + λ Σ τᵢ, or θ₀ + Σ cᵢτᵢ with per-task coefficients
//! (task-wise AdaMerging) or per-tensor coefficients from a file (layer-wise AdaMerging).

mod coefficients;

use serde_json::Value;

use crate::engine::{Chunk, Engine};
use crate::error::{MergeError, Result};
use crate::method::{
    ANY_F32, MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params, add_scaled_to_base,
    sum_into,
};
use crate::plan::MergePlan;
use crate::writer::Writer;
use coefficients::{Coefficients, PerTensorCoefficients};

/// λ, shared by the task-vector methods.
pub(crate) const SCALING_FACTOR: ParamDef = ParamDef {
    name: "scaling_factor",
    kind: ANY_F32,
    default: ParamDefault::Number(0.3),
    help: "λ: θ = θ₀ + λ·(merged task vector)",
};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "task_arithmetic",
    summary: "θ₀ + λ Σ τᵢ, or per-task / per-tensor coefficients",
    paper: "https://arxiv.org/abs/2212.04089",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        SCALING_FACTOR,
        ParamDef {
            name: "coefficients",
            kind: ParamKind::FloatList,
            default: ParamDefault::Absent,
            help: "one coefficient per model: θ = θ₀ + Σ cᵢτᵢ (task-wise weights)",
        },
        ParamDef {
            name: "coefficients_file",
            kind: ParamKind::Path,
            default: ParamDefault::Absent,
            help: "JSON file with one coefficient per model per tensor (layer-wise weights)",
        },
    ],
    build,
};

#[derive(Debug)]
struct TaskArithmetic(Coefficients);

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let chosen: Vec<&str> = ["scaling_factor", "coefficients", "coefficients_file"]
        .into_iter()
        .filter(|k| p.given(k))
        .collect();
    if chosen.len() > 1 {
        return Err(MergeError::arg(format!(
            "task_arithmetic: give only one of {}",
            chosen.join(", ")
        )));
    }
    let coefficients = match (p.floats("coefficients"), p.path("coefficients_file")) {
        (Some(c), _) => Coefficients::PerTask(c.iter().map(|&x| x as f32).collect()),
        (None, Some(path)) => Coefficients::PerTensor(PerTensorCoefficients::load(&path)?),
        (None, None) => Coefficients::Uniform(p.f32("scaling_factor")?),
    };
    Ok(Box::new(TaskArithmetic(coefficients)))
}

impl MergeMethod for TaskArithmetic {
    fn validate(&self, models: usize) -> Result<()> {
        self.0.validate(models)
    }

    fn validate_plan(&self, plan: &MergePlan) -> Result<()> {
        self.0.validate_plan(plan)
    }

    fn parameters(&self) -> Option<Value> {
        Some(self.0.parameters())
    }

    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(true, writer, &|c| merge(c, &self.0))
    }
}

/// Merge one chunk.
fn merge(chunk: &mut Chunk<'_>, coefficients: &Coefficients) -> Result<()> {
    chunk.make_task_vectors()?;
    match coefficients.for_tensor(&chunk.tensor.name)? {
        None => {
            let lambda = coefficients.uniform().unwrap_or(1.0);
            sum_into(chunk.out, chunk.models);
            add_scaled_to_base(chunk.out, chunk.base, lambda);
        }
        Some(c) => {
            chunk.out.fill(0.0);
            for (m, &ci) in chunk.models.iter().zip(c) {
                for (o, x) in chunk.out.iter_mut().zip(m.iter()) {
                    *o += ci * *x;
                }
            }
            add_scaled_to_base(chunk.out, chunk.base, 1.0);
        }
    }
    Ok(())
}
