//! RAM (Reinforced Agent Merging), mergekit's `ram`: per element, the task-vector entries larger than ε in
//! magnitude count as contributions; an entry only one model contributes is kept whole, entries several models
//! contribute are averaged over those models, and the rest stay at θ₀. θ = θ₀ + Σᵢ [|τᵢ| > ε] τᵢ / max(1, n),
//! n the number of contributions, in mergekit's order of float32 operations.

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::writer::Writer;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "ram",
    summary: "per element, keep a task-vector entry only one model changes, average those several change",
    paper: "https://arxiv.org/abs/2601.13572",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[ParamDef {
        name: "epsilon",
        kind: ParamKind::F32 {
            min: 0.0,
            max: f32::MAX as f64,
        },
        default: ParamDefault::Number(1e-5),
        help: "a task-vector entry counts as a change when its magnitude exceeds this",
    }],
    build,
};

#[derive(Debug)]
struct Ram {
    epsilon: f32,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Ram {
        epsilon: p.f32("epsilon")?,
    }))
}

impl MergeMethod for Ram {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(true, writer, &|c| self.merge(c))
    }
}

impl Ram {
    fn merge(&self, chunk: &mut Chunk<'_>) -> Result<()> {
        chunk.make_task_vectors()?;
        let base = chunk.base.unwrap_or(&[]);
        for (e, o) in chunk.out.iter_mut().enumerate() {
            let taus = chunk.models.iter().map(|m| m[e]);
            *o = base[e] + combine(taus, self.epsilon);
        }
        Ok(())
    }
}

/// Σ of the entries above `epsilon` in magnitude, each divided by their count when several are.
fn combine(taus: impl Iterator<Item = f32> + Clone, epsilon: f32) -> f32 {
    let count = taus.clone().filter(|t| t.abs() > epsilon).count();
    let mut sum = 0.0f32;
    for t in taus.filter(|t| t.abs() > epsilon) {
        sum += if count > 1 { t / count as f32 } else { t };
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_change_is_kept_shared_ones_are_averaged_and_small_ones_dropped() {
        let eps = 1e-3;
        assert_eq!(combine([0.5f32, 0.0, 1e-4].into_iter(), eps), 0.5);
        assert!((combine([0.5f32, 0.25, -0.15].into_iter(), eps) - 0.2).abs() < 1e-7);
        assert_eq!(combine([1e-4f32, -1e-4].into_iter(), eps), 0.0);
    }
}
