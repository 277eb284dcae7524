//! MagMax (Marczak et al., 2024), after FusionBench's `magmax`: per element, the task-vector entry of
//! largest magnitude (a later task wins a tie, as in the reference code); θ = θ₀ + λ · τ_max.

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, Params, add_scaled_to_base};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "magmax",
    summary: "per element, the task-vector entry of largest magnitude",
    paper: "https://arxiv.org/abs/2407.06322",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[ParamDef {
        name: "scaling_factor",
        kind: ANY_F32,
        default: ParamDefault::Number(0.5),
        help: "λ: θ = θ₀ + λ·(merged task vector)",
    }],
    build,
};

#[derive(Debug)]
struct MagMax {
    scaling_factor: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(MagMax {
        scaling_factor: p.f32("scaling_factor")?,
    }))
}

impl MergeMethod for MagMax {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(true, writer, &|c| self.merge(c))
    }
}

impl MagMax {
    fn merge(&self, chunk: &mut Chunk<'_>) -> Result<()> {
        chunk.make_task_vectors()?;
        chunk.out.copy_from_slice(chunk.models[0]);
        for tau in chunk.models.iter().skip(1) {
            for (o, &x) in chunk.out.iter_mut().zip(tau.iter()) {
                if x.abs() >= o.abs() {
                    *o = x;
                }
            }
        }
        add_scaled_to_base(chunk.out, chunk.base, self.scaling_factor);
        Ok(())
    }
}
