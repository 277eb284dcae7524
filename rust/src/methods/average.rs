//! Simple and weighted averaging of the fine-tuned models (the pretrained model takes no part).

use crate::engine::Chunk;
use crate::error::{MergeError, Result};

/// out = Σᵢ θᵢ / n.
pub fn simple(chunk: &mut Chunk<'_>) -> Result<()> {
    super::sum_into(chunk.out, chunk.models);
    let n = chunk.models.len() as f32;
    for o in chunk.out.iter_mut() {
        *o /= n;
    }
    Ok(())
}

/// out = Σᵢ wᵢθᵢ with the effective (already normalised) weights.
pub fn weighted(chunk: &mut Chunk<'_>, weights: &[f32]) -> Result<()> {
    chunk.out.fill(0.0);
    for (m, &w) in chunk.models.iter().zip(weights) {
        for (o, x) in chunk.out.iter_mut().zip(m.iter()) {
            *o += w * *x;
        }
    }
    Ok(())
}

/// wᵢ / Σw when normalising (computed in f64, as numpy does), else wᵢ.
pub fn effective_weights(weights: &[f64], normalize: bool) -> Vec<f32> {
    let total: f64 = if normalize { weights.iter().sum() } else { 1.0 };
    weights.iter().map(|w| (w / total) as f32).collect()
}

/// One finite weight per model, not summing to zero when normalising.
pub fn validate_weights(weights: &[f64], normalize: bool, models: usize) -> Result<()> {
    if weights.len() != models {
        return Err(MergeError::arg(format!(
            "weighted_average: {} weights given for {models} models",
            weights.len()
        )));
    }
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(MergeError::arg("weighted_average: weights must be finite numbers"));
    }
    if normalize && weights.iter().sum::<f64>() == 0.0 {
        return Err(MergeError::arg(
            "weighted_average: the weights sum to 0 and cannot be normalised",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_normalise_and_validate() {
        assert_eq!(effective_weights(&[1.0, 3.0], true), vec![0.25, 0.75]);
        assert_eq!(effective_weights(&[1.0, 3.0], false), vec![1.0, 3.0]);
        assert!(validate_weights(&[1.0], true, 2).is_err());
        assert!(validate_weights(&[1.0, -1.0], true, 2).is_err());
        assert!(validate_weights(&[1.0, -1.0], false, 2).is_ok());
        assert!(validate_weights(&[1.0, f64::NAN], false, 2).is_err());
    }
}
