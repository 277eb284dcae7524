//! What the subspace methods (Iso-C, Iso-CTS, TSV-M) share, after FusionBench's `isotropic_merging` and
//! `task_singular_vector`: a tensor is merged as a matrix iff it is 2-D (non-empty) and not excluded by
//! name; every other tensor's task vectors are averaged.

use crate::error::MergeError;
use crate::method::{ParamDef, ParamDefault, ParamKind, Params};
use crate::plan::PlanTensor;

/// `exclude_keys`: tensors merged by averaging although they are matrices.
pub(crate) const EXCLUDE_KEYS: ParamDef = ParamDef {
    name: "exclude_keys",
    kind: ParamKind::NameList,
    default: ParamDefault::Absent,
    help: "tensor names averaged instead of merged as matrices",
};

/// Which tensors are matrices for a subspace method.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matrices {
    exclude: Vec<String>,
}

impl Matrices {
    /// From the `exclude_keys` parameter.
    pub(crate) fn from_params(p: &Params) -> Self {
        Matrices {
            exclude: p.names("exclude_keys").unwrap_or_default(),
        }
    }

    /// (rows, columns) when `tensor` is merged as a matrix.
    pub(crate) fn shape(&self, tensor: &PlanTensor) -> Option<(usize, usize)> {
        match tensor.shape.as_slice() {
            &[m, n] if m > 0 && n > 0 && !self.exclude.contains(&tensor.name) => Some((m, n)),
            _ => None,
        }
    }
}

/// The error for a factorisation of `tensor` that failed in `method`, from its reason.
pub(crate) fn failed<'a>(method: &'static str, tensor: &'a PlanTensor) -> impl Fn(String) -> MergeError + 'a {
    move |reason| MergeError::MethodFailed {
        method,
        tensor: tensor.name.clone(),
        reason,
    }
}

/// τ = θ − θ₀, times `scale`.
pub(crate) fn task_vector(theta: &[f32], base: Option<&[f32]>, scale: f32) -> Result<Vec<f32>, MergeError> {
    let base = base.ok_or_else(|| MergeError::Internal("task vectors need the pretrained model".into()))?;
    Ok(theta.iter().zip(base).map(|(x, b)| (x - b) * scale).collect())
}

/// FusionBench's running mean: after the first task, mean += (τ − mean) / (i + 1).
pub(crate) fn fold_mean(mean: &mut Vec<f32>, i: usize, tau: &[f32]) {
    if i == 0 || mean.is_empty() {
        mean.clear();
        mean.extend_from_slice(tau);
        return;
    }
    let n = (i + 1) as f32;
    for (m, t) in mean.iter_mut().zip(tau) {
        *m += (t - *m) / n;
    }
}

/// out = θ₀ + out (the method wrote its scaled merged task vector into `out`).
pub(crate) fn add_base_in_place(out: &mut [f32], base: Option<&[f32]>) -> Result<(), MergeError> {
    let base = base.ok_or_else(|| MergeError::Internal("the result needs the pretrained model".into()))?;
    for (o, b) in out.iter_mut().zip(base) {
        *o += b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_mean_is_the_mean() {
        let mut mean = Vec::new();
        for (i, tau) in [[1.0f32, 4.0], [3.0, 8.0], [5.0, 0.0]].iter().enumerate() {
            fold_mean(&mut mean, i, tau);
        }
        assert_eq!(mean, vec![3.0, 4.0]);
    }
}
