//! Task arithmetic: θ = θ₀ + λ Σ τᵢ, or θ₀ + Σ cᵢτᵢ with per-task or per-tensor coefficients.

use super::Coefficients;
use crate::engine::Chunk;
use crate::error::Result;

/// Merge one chunk.
pub fn merge(chunk: &mut Chunk<'_>, coefficients: &Coefficients) -> Result<()> {
    chunk.to_task_vectors()?;
    match coefficients.for_tensor(&chunk.tensor.name)? {
        None => {
            let lambda = coefficients.uniform().unwrap_or(1.0);
            super::sum_into(chunk.out, chunk.models);
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

/// out = θ₀ + λ·out (the final step of every task-vector method, in FusionBench's order).
pub fn add_scaled_to_base(out: &mut [f32], base: Option<&[f32]>, lambda: f32) {
    if let Some(base) = base {
        for (o, b) in out.iter_mut().zip(base) {
            *o = *b + lambda * *o;
        }
    }
}
