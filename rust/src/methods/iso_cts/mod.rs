//! Iso-CTS (Marczak et al., 2025), after FusionBench's `iso_cts`: per matrix, the top-k singular
//! directions of Σ τₜ form a common subspace; each task adds its top d directions outside it, with
//! r − k = T·d; the stacked singular vectors are orthogonalised through their polar factors and every
//! singular value is replaced by their mean. Other tensors take the mean task vector. θ = θ₀ + λ · result.
//! A matrix's task vectors are held until the common subspace is known (each model read once) when they
//! take at most [`HOLD_BYTES`]; a larger matrix reads the models twice instead (the sum, then each task),
//! holding one task vector at a time.

mod space;

use crate::engine::{Engine, TensorFold};
use crate::error::{MergeError, Result};
use crate::linalg::gram_bytes;
use crate::method::subspace::{self, EXCLUDE_KEYS, Matrices, add_base_in_place, fold_mean, task_vector};
use crate::method::{MergeMethod, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, Params};
use crate::methods::iso_c::ISO_SCALING_FACTOR;
use crate::plan::PlanTensor;
use crate::writer::Writer;
use space::subspace_sizes;

/// The declaration.
pub(crate) static METHOD: MethodDef = MethodDef {
    name: "iso_cts",
    summary: "isotropic merging in common and task-specific subspaces",
    paper: "https://arxiv.org/abs/2502.04959",
    needs_base: true,
    min_models: 1,
    max_models: None,
    extra_inputs: None,
    params: &[
        ISO_SCALING_FACTOR,
        ParamDef {
            name: "common_space_fraction",
            kind: ParamKind::F64 { min: 0.0, max: 1.0 },
            default: ParamDefault::Number(0.8),
            help: "share of each matrix's rank given to the common subspace, in (0, 1)",
        },
        EXCLUDE_KEYS,
    ],
    build,
};

#[derive(Debug)]
struct IsoCts {
    scaling_factor: f32,
    common_space_fraction: f64,
    matrices: Matrices,
    /// Task vectors of one matrix held at once, at most.
    hold_bytes: usize,
}

fn build(p: &Params) -> Result<Box<dyn MergeMethod>> {
    let fraction = p.f64("common_space_fraction")?;
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(MergeError::arg(format!(
            "iso_cts: parameter 'common_space_fraction' must be in (0, 1) (got {fraction})"
        )));
    }
    Ok(Box::new(IsoCts {
        scaling_factor: p.f32("scaling_factor")?,
        common_space_fraction: fraction,
        matrices: Matrices::from_params(p),
        hold_bytes: HOLD_BYTES,
    }))
}

impl MergeMethod for IsoCts {
    fn run(&self, engine: &Engine<'_>, writer: &Writer) -> Result<MethodStats> {
        engine.whole_tensors(self, true, writer)
    }
}

/// Task vectors of one matrix held at once, at most (a larger matrix reads the models twice).
pub(crate) const HOLD_BYTES: usize = 64 << 20;

/// One tensor in progress.
pub(crate) enum Acc {
    /// Any other tensor: the running mean of the task vectors.
    Mean(Vec<f32>),
    /// A matrix whose task vectors are held: every one so far.
    Held(Vec<Vec<f32>>),
    /// A matrix read twice: Σ τₜ over the first round, then the subspaces as the tasks come again.
    Streamed {
        models: usize,
        seen: usize,
        sum: Vec<f32>,
        spaces: Option<Box<space::Spaces>>,
    },
}

impl IsoCts {
    fn failed(tensor: &PlanTensor) -> impl Fn(String) -> MergeError + '_ {
        subspace::failed("iso_cts", tensor)
    }

    /// (k, d) for `tensor` with `models` tasks, or an error naming it.
    fn sizes(&self, tensor: &PlanTensor, (m, n): (usize, usize), models: usize) -> Result<(usize, usize)> {
        let rank = m.min(n);
        subspace_sizes(rank, models, self.common_space_fraction).ok_or_else(|| {
            Self::failed(tensor)(format!(
                "rank {rank} cannot be split between a common subspace and {models} tasks; raise common_space_fraction"
            ))
        })
    }

    fn held(&self, tensor: &PlanTensor, models: usize) -> bool {
        models * tensor.numel * 4 <= self.hold_bytes
    }

    /// The subspaces of a matrix whose task vectors are all held.
    fn spaces_of(&self, tensor: &PlanTensor, taus: &[Vec<f32>], shape: (usize, usize)) -> Result<space::Spaces> {
        let sizes = self.sizes(tensor, shape, taus.len())?;
        let mut spaces = space::Spaces::new(sum_of(taus), shape, sizes, taus.len()).map_err(Self::failed(tensor))?;
        for (t, tau) in taus.iter().enumerate() {
            spaces.add_task(t, tau).map_err(Self::failed(tensor))?;
        }
        Ok(spaces)
    }
}

/// Σ τₜ in task order.
fn sum_of(taus: &[Vec<f32>]) -> Vec<f32> {
    let mut sum = vec![0.0f32; taus.first().map_or(0, Vec::len)];
    for tau in taus {
        sum.iter_mut().zip(tau).for_each(|(s, x)| *s += x);
    }
    sum
}

impl TensorFold for IsoCts {
    type Acc = Acc;

    fn footprint(&self, tensor: &PlanTensor, models: usize) -> usize {
        let Some((m, n)) = self.matrices.shape(tensor) else {
            return 4 * tensor.numel;
        };
        let held = if self.held(tensor, models) { models } else { 1 };
        4 * (held + 1) * tensor.numel + 8 * (m + n) * m.min(n) + gram_bytes(m, n)
    }

    fn rounds(&self, tensor: &PlanTensor, models: usize) -> usize {
        match self.matrices.shape(tensor) {
            Some(_) if !self.held(tensor, models) => 2,
            _ => 1,
        }
    }

    fn start(&self, tensor: &PlanTensor, models: usize) -> Result<Acc> {
        Ok(match self.matrices.shape(tensor) {
            None => Acc::Mean(Vec::new()),
            Some(_) if self.held(tensor, models) => Acc::Held(Vec::with_capacity(models)),
            Some(_) => Acc::Streamed {
                models,
                seen: 0,
                sum: vec![0.0; tensor.numel],
                spaces: None,
            },
        })
    }

    fn add(&self, acc: &mut Acc, tensor: &PlanTensor, t: usize, theta: &[f32], base: Option<&[f32]>) -> Result<()> {
        let tau = task_vector(theta, base, 1.0)?;
        match acc {
            Acc::Mean(mean) => fold_mean(mean, t, &tau),
            Acc::Held(taus) => taus.push(tau),
            Acc::Streamed {
                models,
                seen,
                sum,
                spaces,
            } => {
                *seen += 1;
                match spaces {
                    None => sum.iter_mut().zip(&tau).for_each(|(s, x)| *s += x),
                    Some(spaces) => spaces.add_task(t, &tau).map_err(Self::failed(tensor))?,
                }
                drop(tau);
                if spaces.is_none() && *seen == *models {
                    let shape = self.shape(tensor)?;
                    let sizes = self.sizes(tensor, shape, *models)?;
                    let found =
                        space::Spaces::new(std::mem::take(sum), shape, sizes, *models).map_err(Self::failed(tensor))?;
                    *spaces = Some(Box::new(found));
                }
            }
        }
        Ok(())
    }

    fn finish(&self, acc: Acc, tensor: &PlanTensor, base: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        let scale = f64::from(self.scaling_factor);
        match acc {
            Acc::Mean(mean) => out
                .iter_mut()
                .zip(&mean)
                .for_each(|(o, x)| *o = x * self.scaling_factor),
            Acc::Held(taus) => {
                let spaces = self.spaces_of(tensor, &taus, self.shape(tensor)?)?;
                drop(taus);
                spaces.isotropic(scale, out).map_err(Self::failed(tensor))?;
            }
            Acc::Streamed {
                spaces: Some(spaces), ..
            } => spaces.isotropic(scale, out).map_err(Self::failed(tensor))?,
            Acc::Streamed { spaces: None, .. } => {
                return Err(MergeError::Internal(format!(
                    "iso_cts: tensor '{}' ended after one round",
                    tensor.name
                )));
            }
        }
        add_base_in_place(out, base)
    }
}

impl IsoCts {
    fn shape(&self, tensor: &PlanTensor) -> Result<(usize, usize)> {
        self.matrices
            .shape(tensor)
            .ok_or_else(|| MergeError::Internal("iso_cts: a matrix lost its shape".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::space::subspace_sizes;
    use super::*;
    use crate::engine::working_set::assert_declared_working_set_is_honest;

    #[test]
    fn the_declared_working_set_covers_what_is_held_in_one_round_or_two() {
        for hold_bytes in [usize::MAX, 0] {
            let method = IsoCts {
                scaling_factor: 1.0,
                common_space_fraction: 0.8,
                matrices: Matrices::default(),
                hold_bytes,
            };
            assert_declared_working_set_is_honest(&method, 8);
        }
    }
    use crate::dtype::FloatType;
    use crate::plan::{FloatSource, TensorKind};

    /// Merge a 6 × 5 matrix of three tasks through the fold, holding task vectors up to `hold_bytes`.
    fn merge_with(hold_bytes: usize) -> Vec<f32> {
        let method = IsoCts {
            scaling_factor: 0.7,
            common_space_fraction: 0.4,
            matrices: Matrices::default(),
            hold_bytes,
        };
        let source = FloatSource {
            tensor: 0,
            ty: FloatType::F32,
        };
        let tensor = PlanTensor {
            name: "w".into(),
            shape: vec![6, 5],
            numel: 30,
            kind: TensorKind::Merge {
                out: FloatType::F32,
                base: Some(source),
                models: vec![source; 3],
                extra: vec![],
            },
        };
        let base: Vec<f32> = (0..30).map(|i| (i as f32 * 0.37).sin()).collect();
        let model = |t: usize| -> Vec<f32> { (0..30).map(|i| base[i] + ((i * (t + 2)) as f32 * 0.91).cos()).collect() };
        let mut acc = method.start(&tensor, 3).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..method.rounds(&tensor, 3) {
            for t in 0..3 {
                method
                    .add(&mut acc, &tensor, t, &model(t), Some(&base))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let mut out = vec![0.0; 30];
        method
            .finish(acc, &tensor, Some(&base), &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn reading_twice_gives_what_holding_gives() {
        assert_eq!(merge_with(0), merge_with(usize::MAX));
    }

    #[test]
    fn subspaces_are_sized_as_fusion_bench_sizes_them() {
        // r = 768, T = 8, 0.8: k₀ = 614, (768 − 614)/8 = 19.25 → 19, k = 768 − 152 = 616.
        assert_eq!(subspace_sizes(768, 8, 0.8), Some((616, 19)));
        // Python rounds half to even: (10 − 5)/2 = 2.5 → 2.
        assert_eq!(subspace_sizes(10, 2, 0.5), Some((6, 2)));
        assert_eq!(subspace_sizes(3, 4, 0.1), None);
    }
}
