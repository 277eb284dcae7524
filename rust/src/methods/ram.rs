//! RAM (Reinforced Agent Merging), mergekit's `ram`: per element, the task-vector entries larger than ε in
//! magnitude count as contributions; an entry only one model contributes is kept whole, entries several models
//! contribute are averaged over those models, and the rest stay at θ₀. θ = θ₀ + Σᵢ [|τᵢ| > ε] τᵢ / max(1, n),
//! n the number of contributions, in mergekit's order of float32 operations. With `compute` in a half dtype, each
//! step is rounded where torch rounds it in mergekit's dtype (see [`Ram::merge_rounded`]).

use crate::engine::{Chunk, Engine};
use crate::error::Result;
use crate::method::precision::{COMPUTE, Precision};
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
    params: &[EPSILON, COMPUTE],
    build,
};

/// ε, shared with RAM+.
pub(crate) const EPSILON: ParamDef = ParamDef {
    name: "epsilon",
    kind: ParamKind::F32 {
        min: 0.0,
        max: f32::MAX as f64,
    },
    default: ParamDefault::Number(1e-5),
    help: "a task-vector entry counts as a change when its magnitude exceeds this",
};

#[derive(Debug)]
struct Ram {
    epsilon: f32,
    precision: Precision,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(Ram {
        epsilon: p.f32("epsilon")?,
        precision: Precision::from_params(p)?,
    }))
}

impl MergeMethod for Ram {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.elementwise(true, writer, &|c| self.merge(c))
    }
}

impl Ram {
    fn merge(&self, chunk: &mut Chunk<'_>) -> Result<()> {
        if self.precision != Precision::F32 {
            self.merge_rounded(chunk);
            return Ok(());
        }
        chunk.make_task_vectors()?;
        let base = chunk.base.unwrap_or(&[]);
        for (e, o) in chunk.out.iter_mut().enumerate() {
            let taus = chunk.models.iter().map(|m| m[e]);
            *o = base[e] + combine(taus, self.epsilon);
        }
        Ok(())
    }

    fn merge_rounded(&self, chunk: &mut Chunk<'_>) {
        let p = self.precision;
        let base = chunk.base.unwrap_or(&[]);
        let taus: Vec<Vec<f32>> = chunk.models.iter().map(|m| p.input(m, Some(base))).collect();
        combine_rounded(&taus, base, chunk.out, self.epsilon, p);
    }
}

/// mergekit's steps in a half dtype, given τ = round(round(θ) − round(θ₀)): each τ is compared with round(ε)
/// (torch casts the scalar to the dtype); a shared entry is round(τ / n); the entries are summed in float32 and
/// rounded, then added to round(θ₀) and rounded.
fn combine_rounded(taus: &[Vec<f32>], base: &[f32], out: &mut [f32], epsilon: f32, p: Precision) {
    let epsilon = p.round(epsilon);
    for (e, o) in out.iter_mut().enumerate() {
        let count = taus.iter().filter(|t| t[e].abs() > epsilon).count();
        let mut sum = 0.0f32;
        for t in taus.iter().map(|t| t[e]).filter(|t| t.abs() > epsilon) {
            sum += if count > 1 { p.round(t / count as f32) } else { t };
        }
        *o = p.round(p.round(base[e]) + p.round(sum));
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

    #[test]
    fn in_bfloat16_epsilon_itself_is_rounded_and_shared_entries_are_rounded_means() {
        let p = Precision::Bf16;
        let (eps, sixty_fourth) = (1e-5f32, 1.0f32 / 64.0);
        // Element 0: one change of exactly round(ε), which is not above round(ε) (though it is above ε).
        // Element 1: three changes, each mean rounded before the sum.
        let taus = [
            vec![p.round(eps), sixty_fourth],
            vec![0.0, 3.0 * sixty_fourth],
            vec![0.0, sixty_fourth],
        ];
        let mut out = [0.0f32; 2];
        combine_rounded(&taus, &[0.5, 1.0], &mut out, eps, p);
        assert_eq!(out[0], 0.5);
        let third = |x: f32| p.round(x / 3.0);
        let sum = 2.0 * third(sixty_fourth) + third(3.0 * sixty_fourth);
        assert_eq!(out[1], p.round(1.0 + p.round(sum)));
    }
}
