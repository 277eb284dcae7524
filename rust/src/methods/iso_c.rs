//! Iso-C (Marczak et al., 2025), after FusionBench's `iso_c`: the sum of the task vectors of each matrix is
//! replaced by its isotropic version, U · mean(S) · Vᵀ from its SVD; other tensors take the mean task
//! vector; θ = θ₀ + λ · result. Only the running sum is held, whatever the number of models.

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::linalg::{gram_bytes, product_into, top_triplets, widen};
use crate::method::subspace::{self, EXCLUDE_KEYS, Matrices, add_base_in_place};
use crate::method::{ANY_F32, MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, Params};
use crate::plan::PlanTensor;
use crate::writer::Writer;

/// λ for the isotropic methods (FusionBench's default 1.0).
pub(crate) const ISO_SCALING_FACTOR: ParamDef = ParamDef {
    name: "scaling_factor",
    kind: ANY_F32,
    default: ParamDefault::Number(1.0),
    help: "λ: θ = θ₀ + λ·(merged task vector)",
};

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "iso_c",
    summary: "isotropic merging in the common subspace: flatten the spectrum of Σ τᵢ",
    paper: "https://arxiv.org/abs/2502.04959",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[ISO_SCALING_FACTOR, EXCLUDE_KEYS],
    build,
};

#[derive(Debug)]
struct IsoC {
    scaling_factor: f32,
    matrices: Matrices,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    Ok(Box::new(IsoC {
        scaling_factor: p.f32("scaling_factor")?,
        matrices: Matrices::from_params(p),
    }))
}

impl MergeMethod for IsoC {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

impl TensorFold for IsoC {
    /// The running sum of the task vectors, and the number of models.
    type Acc = (Vec<f32>, usize);

    fn footprint(&self, tensor: &PlanTensor, _models: usize) -> usize {
        let svd = self.matrices.shape(tensor).map_or(0, |(m, n)| gram_bytes(m, n));
        4 * tensor.numel + svd
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Self::Acc> {
        Ok((vec![0.0; tensor.numel], models))
    }

    fn add(
        &self,
        (sum, _): &mut Self::Acc,
        _: &PlanTensor,
        _: usize,
        theta: &[f32],
        base: Option<&[f32]>,
    ) -> Result<()> {
        let base = base.ok_or_else(|| MergeError::Internal("iso_c reads the pretrained model".into()))?;
        for ((s, x), b) in sum.iter_mut().zip(theta).zip(base) {
            *s += x - b;
        }
        Ok(())
    }

    fn finish(
        &self,
        (sum, models): Self::Acc,
        tensor: &PlanTensor,
        base: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<()> {
        match self.matrices.shape(tensor) {
            Some((m, n)) => {
                let wide = widen(&sum, m, n);
                drop(sum);
                let svd = top_triplets(wide.as_ref(), m.min(n)).map_err(subspace::failed("iso_c", tensor))?;
                drop(wide);
                let mean = svd.s.iter().sum::<f64>() / svd.s.len() as f64;
                let flat = vec![mean; svd.s.len()];
                product_into(
                    svd.u.as_ref(),
                    &flat,
                    svd.v.as_ref(),
                    f64::from(self.scaling_factor),
                    out,
                );
            }
            None => {
                let count = models as f32;
                for (o, s) in out.iter_mut().zip(&sum) {
                    *o = s / count * self.scaling_factor;
                }
            }
        }
        add_base_in_place(out, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held() {
        let method = IsoC {
            scaling_factor: 1.0,
            matrices: Matrices::default(),
        };
        assert_declared_working_set_is_honest(&method, 8);
    }
}
