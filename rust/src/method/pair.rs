//! The fold the two-model interpolations share (SLERP, NuSLERP): both copies of a tensor are held, task
//! vectors when `task_vectors` (θ₀ added back at the end), and the method's coefficients (s₀, s₁) give
//! s₀·v₀ + s₁·v₁.

use crate::engine::TensorFold;
use crate::error::{MergeError, Result};
use crate::plan::PlanTensor;

/// A two-model interpolation by per-tensor coefficients.
pub(crate) struct PairFold<C: Fn(&[f32], &[f32]) -> (f32, f32) + Sync> {
    /// (s₀, s₁) for the two copies.
    pub(crate) coefficients: C,
    /// Interpolate θᵢ − θ₀ and add θ₀ back (the engine must read θ₀).
    pub(crate) task_vectors: bool,
    /// The method's name, for errors.
    pub(crate) name: &'static str,
}

impl<C: Fn(&[f32], &[f32]) -> (f32, f32) + Sync> TensorFold for PairFold<C> {
    /// Both models' copies.
    type Acc = Vec<Vec<f32>>;

    fn footprint(&self, tensor: &PlanTensor, _: usize) -> usize {
        8 * tensor.numel
    }

    fn start(&self, _: &PlanTensor, _: usize) -> Result<Self::Acc> {
        Ok(Vec::with_capacity(2))
    }

    fn add(&self, acc: &mut Self::Acc, _: &PlanTensor, _: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        acc.push(match base.filter(|_| self.task_vectors) {
            Some(base) => theta.iter().zip(base).map(|(x, b)| x - b).collect(),
            None => theta.to_vec(),
        });
        Ok(())
    }

    fn finish(&self, acc: Self::Acc, _: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let [v0, v1] = acc.as_slice() else {
            return Err(MergeError::Internal(format!("{} merges two models", self.name)));
        };
        let (s0, s1) = (self.coefficients)(v0, v1);
        for ((o, a), b) in out.iter_mut().zip(v0).zip(v1) {
            *o = s0 * a + s1 * b;
        }
        if let Some(base) = base.filter(|_| self.task_vectors) {
            out.iter_mut().zip(base).for_each(|(o, b)| *o += b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        let fold = PairFold {
            coefficients: |_: &[f32], _: &[f32]| (0.5, 0.5),
            task_vectors: false,
            name: "pair",
        };
        assert_declared_working_set_is_honest(&fold, 2);
    }
}
