//! DARE (Yu et al., 2023): drop each task-vector entry with probability p and rescale the survivors by
//! 1/(1−p). The mask is a pure function of (seed, tensor name, task, element index).

use serde_json::{Value, json};

use crate::engine::Chunk;
use crate::error::{MergeError, Result};
use crate::rng;

/// Drop options.
#[derive(Debug, Clone, Copy)]
pub struct DareOptions {
    /// Probability p of dropping an entry.
    pub drop_rate: f64,
    /// Seed of the mask.
    pub seed: u64,
    /// Rescale survivors by 1/(1−p).
    pub rescale: bool,
}

impl DareOptions {
    /// p in [0, 1), or [0, 1] without rescaling.
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..1.0).contains(&self.drop_rate) || (!self.rescale && self.drop_rate == 1.0);
        if !ok {
            return Err(MergeError::arg(format!(
                "the drop rate must be in [0, 1) (got {})",
                self.drop_rate
            )));
        }
        Ok(())
    }

    /// Parameters for the report.
    pub fn parameters(&self) -> Value {
        json!({"drop_rate": self.drop_rate, "seed": self.seed, "rescale": self.rescale})
    }

    /// Apply the mask to the task vectors in `chunk.models` (already τᵢ).
    pub fn apply(&self, chunk: &mut Chunk<'_>) {
        let scale = if self.rescale {
            (1.0 / (1.0 - self.drop_rate)) as f32
        } else {
            1.0
        };
        let start = chunk.job.start as u64;
        for (task, tau) in chunk.models.iter_mut().enumerate() {
            let stream = rng::stream(self.seed, &chunk.tensor.name, task as u64);
            for (j, x) in tau.iter_mut().enumerate() {
                *x = if rng::uniform(stream, start + j as u64) < self.drop_rate {
                    0.0
                } else {
                    *x * scale
                };
            }
        }
    }
}

/// θ₀ + λ Σ DARE(τᵢ).
pub fn merge(chunk: &mut Chunk<'_>, dare: &DareOptions, lambda: f32) -> Result<()> {
    chunk.to_task_vectors()?;
    dare.apply(chunk);
    super::sum_into(chunk.out, chunk.models);
    super::task_arithmetic::add_scaled_to_base(chunk.out, chunk.base, lambda);
    Ok(())
}
