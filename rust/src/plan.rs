//! Validate a merge request against every header before any tensor data is read: match names across
//! layouts (DESIGN §3), check shapes and dtypes, and decide what each output tensor is made from.

use crate::checkpoint::{Checkpoint, KeyMap, Tensor};
use crate::dtype::{FloatType, Storage, storage_of};
use crate::error::{MergeError, Result};
#[cfg(test)]
use std::path::Path;

/// The checkpoints of a request: an optional pretrained model, the fine-tuned ones, and the extra
/// checkpoints a method streams alongside them (one per fine-tuned model, e.g. Fisher checkpoints).
#[derive(Debug)]
pub(crate) struct Inputs {
    /// The pretrained model θ₀.
    pub(crate) base: Option<Checkpoint>,
    /// The fine-tuned models θᵢ, in task order.
    pub(crate) models: Vec<Checkpoint>,
    /// The method's extra inputs, in task order (empty for most methods).
    pub(crate) extra: Vec<Checkpoint>,
}

/// Which input a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputId {
    /// The pretrained model.
    Base,
    /// Fine-tuned model `i`.
    Model(usize),
    /// Extra input `i`.
    Extra(usize),
}

impl Inputs {
    /// The checkpoint behind `id` (the first fine-tuned model stands in for a missing base).
    pub(crate) fn get(&self, id: InputId) -> &Checkpoint {
        match id {
            InputId::Base => self.base.as_ref().unwrap_or(&self.models[0]),
            InputId::Model(i) => &self.models[i],
            InputId::Extra(i) => &self.extra[i],
        }
    }

    /// Every checkpoint: base, models, extras.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Checkpoint> {
        self.base.iter().chain(&self.models).chain(&self.extra)
    }
}

/// A float tensor stored in one input: tensor index in that checkpoint and its dtype.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatSource {
    /// Index into the checkpoint's `tensors`.
    pub(crate) tensor: usize,
    /// Stored dtype.
    pub(crate) ty: FloatType,
}

/// What an output tensor is made of.
#[derive(Debug, Clone)]
pub(crate) enum TensorKind {
    /// Merged from float inputs.
    Merge {
        /// Output dtype.
        out: FloatType,
        /// The pretrained tensor, when a base model is given.
        base: Option<FloatSource>,
        /// One per fine-tuned model.
        models: Vec<FloatSource>,
        /// One per extra input.
        extra: Vec<FloatSource>,
    },
    /// Merged by another pass of the same request (a group of tensors with other parameters).
    Elsewhere {
        /// Output dtype.
        out: FloatType,
    },
    /// Copied byte for byte (integer buffers).
    Copy {
        /// The input it is copied from.
        from: InputId,
        /// Index into that checkpoint's `tensors`.
        tensor: usize,
        /// Bytes per element.
        width: usize,
        /// The stored dtype.
        dtype: safetensors::Dtype,
    },
}

/// One tensor of the output.
#[derive(Debug, Clone)]
pub(crate) struct PlanTensor {
    /// Output name (the first fine-tuned model's layout).
    pub(crate) name: String,
    /// Shape.
    pub(crate) shape: Vec<usize>,
    /// Number of elements.
    pub(crate) numel: usize,
    /// How it is produced.
    pub(crate) kind: TensorKind,
}

impl PlanTensor {
    /// The output dtype.
    pub(crate) fn out_dtype(&self) -> safetensors::Dtype {
        match &self.kind {
            TensorKind::Merge { out, .. } | TensorKind::Elsewhere { out } => out.dtype(),
            TensorKind::Copy { dtype, .. } => *dtype,
        }
    }

    /// Output size in bytes.
    pub(crate) fn out_bytes(&self) -> u64 {
        let width = match &self.kind {
            TensorKind::Merge { out, .. } | TensorKind::Elsewhere { out } => out.size(),
            TensorKind::Copy { width, .. } => *width,
        };
        (self.numel * width) as u64
    }

    /// Whether this tensor is merged (rather than copied).
    pub(crate) fn is_merged(&self) -> bool {
        matches!(self.kind, TensorKind::Merge { .. })
    }
}

/// The validated plan: every output tensor, in name order.
#[derive(Debug)]
pub(crate) struct MergePlan {
    /// Output tensors.
    pub(crate) tensors: Vec<PlanTensor>,
}

impl MergePlan {
    /// Build and validate the plan. `needs_base` says whether the method must have θ₀; when given, θ₀ is
    /// matched against the models whether or not the method reads it.
    pub(crate) fn build(inputs: &Inputs, needs_base: bool, out_dtype: Option<FloatType>) -> Result<MergePlan> {
        let reference = inputs
            .models
            .first()
            .ok_or_else(|| MergeError::arg("no fine-tuned model given"))?;
        if needs_base && inputs.base.is_none() {
            return Err(MergeError::arg("this method needs the pretrained model (--pretrained)"));
        }
        let maps: Vec<KeyMap> = inputs
            .models
            .iter()
            .skip(1)
            .chain(&inputs.extra)
            .map(|m| match_keys(reference, m, true))
            .collect::<Result<_>>()?;
        let base_map = inputs
            .base
            .as_ref()
            .map(|b| match_keys(reference, b, false))
            .transpose()?;
        let mut tensors = Vec::with_capacity(reference.tensors.len());
        for (ti, t) in reference.tensors.iter().enumerate() {
            let locate = |ckpt: &Checkpoint, map: KeyMap| map.apply(&t.stored.name).and_then(|n| ckpt.index_of(&n));
            let mut sources = vec![(InputId::Model(0), Some(ti))];
            let others = (1..inputs.models.len())
                .map(InputId::Model)
                .chain((0..inputs.extra.len()).map(InputId::Extra));
            for (id, map) in others.zip(&maps) {
                sources.push((id, locate(inputs.get(id), *map)));
            }
            if let (Some(b), Some(map)) = (&inputs.base, base_map) {
                sources.push((InputId::Base, locate(b, map)));
            }
            tensors.push(plan_tensor(inputs, t, &sources, out_dtype)?);
        }
        Ok(MergePlan { tensors })
    }

    /// Number of parameters that are merged.
    pub(crate) fn merged_params(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.is_merged())
            .map(|t| t.numel as u64)
            .sum()
    }

    /// Number of merged tensors.
    pub(crate) fn merged_tensors(&self) -> usize {
        self.tensors.iter().filter(|t| t.is_merged()).count()
    }
}

/// Plan one output tensor from its `sources` (every fine-tuned model, the extra inputs, then the base model
/// when given).
fn plan_tensor(
    inputs: &Inputs,
    reference: &Tensor,
    sources: &[(InputId, Option<usize>)],
    out_dtype: Option<FloatType>,
) -> Result<PlanTensor> {
    let (name, dtype) = (&reference.stored.name, reference.stored.dtype);
    let storage = storage_of(dtype).ok_or_else(|| MergeError::UnsupportedDtype {
        path: inputs.models[0].path.clone(),
        tensor: name.clone(),
        dtype: format!("{dtype:?}"),
    })?;
    let found = sources
        .iter()
        .map(|&(id, idx)| check_source(inputs, reference, storage, id, idx))
        .collect::<Result<Vec<_>>>()?;
    let pick = |wanted: fn(&InputId) -> bool| {
        found
            .iter()
            .filter(|(id, _, _)| wanted(id))
            .copied()
            .collect::<Vec<_>>()
    };
    let models = pick(|id| matches!(id, InputId::Model(_)));
    let extra = pick(|id| matches!(id, InputId::Extra(_)));
    let base = pick(|id| matches!(id, InputId::Base));
    let kind = match storage {
        Storage::Float(ty) => {
            let float = |sources: &[(InputId, usize, Storage)]| -> Vec<FloatSource> {
                sources
                    .iter()
                    .filter_map(|&(_, tensor, s)| match s {
                        Storage::Float(ty) => Some(FloatSource { tensor, ty }),
                        Storage::Raw { .. } => None,
                    })
                    .collect()
            };
            TensorKind::Merge {
                out: out_dtype.unwrap_or(ty),
                base: float(&base).first().copied(),
                models: float(&models),
                extra: float(&extra),
            }
        }
        Storage::Raw { width } => {
            let (from, tensor, _) = base.first().copied().unwrap_or(models[0]);
            TensorKind::Copy {
                from,
                tensor,
                width,
                dtype,
            }
        }
    };
    let shape = reference.stored.shape.clone();
    Ok(PlanTensor {
        name: name.clone(),
        numel: shape.iter().product(),
        shape,
        kind,
    })
}

/// The tensor matching `reference` in input `id` (at `idx`): present, same shape, compatible dtype.
fn check_source(
    inputs: &Inputs,
    reference: &Tensor,
    storage: Storage,
    id: InputId,
    idx: Option<usize>,
) -> Result<(InputId, usize, Storage)> {
    let ckpt = inputs.get(id);
    let name = &reference.stored.name;
    let incompatible = |problem: String| MergeError::Incompatible {
        model: ckpt.name.clone(),
        tensor: name.clone(),
        problem,
    };
    let reference_name = &inputs.models[0].name;
    let (idx, other) = idx
        .and_then(|i| ckpt.tensors.get(i).map(|t| (i, t)))
        .ok_or_else(|| incompatible(format!("is missing (it is in {reference_name})")))?;
    if other.stored.shape != reference.stored.shape {
        let (got, want) = (&other.stored.shape, &reference.stored.shape);
        return Err(incompatible(format!(
            "has shape {got:?}, but {want:?} in {reference_name}"
        )));
    }
    match (storage, storage_of(other.stored.dtype)) {
        (Storage::Float(_), Some(s @ Storage::Float(_))) => Ok((id, idx, s)),
        (s, Some(o)) if s == o => Ok((id, idx, o)),
        _ => Err(incompatible(format!(
            "has dtype {:?}, but {:?} in {reference_name}",
            other.stored.dtype, reference.stored.dtype
        ))),
    }
}

/// Choose how the reference's names translate into `other`'s. Every reference tensor must be found;
/// with `exact`, `other` must not hold tensors beyond them either (fine-tuned models must agree).
fn match_keys(reference: &Checkpoint, other: &Checkpoint, exact: bool) -> Result<KeyMap> {
    let hits = |map: KeyMap| {
        reference
            .tensors
            .iter()
            .filter(|t| map.apply(&t.stored.name).is_some_and(|n| other.get(&n).is_some()))
            .count()
    };
    let best = KeyMap::ALL
        .into_iter()
        .max_by_key(|m| hits(*m))
        .unwrap_or(KeyMap::Identity);
    let missing = reference
        .tensors
        .iter()
        .find(|t| best.apply(&t.stored.name).is_none_or(|n| other.get(&n).is_none()));
    if let Some(t) = missing {
        return Err(MergeError::Incompatible {
            model: other.name.clone(),
            tensor: t.stored.name.clone(),
            problem: format!("is missing (it is in {})", reference.name),
        });
    }
    if exact && other.tensors.len() != reference.tensors.len() {
        let known: std::collections::HashSet<String> = reference
            .tensors
            .iter()
            .filter_map(|t| best.apply(&t.stored.name).map(|n| n.into_owned()))
            .collect();
        if let Some(extra) = other.tensors.iter().find(|t| !known.contains(&t.stored.name)) {
            return Err(MergeError::Incompatible {
                model: other.name.clone(),
                tensor: extra.stored.name.clone(),
                problem: format!("has no counterpart in {}", reference.name),
            });
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::write_checkpoint;

    fn open(dir: &Path, name: &str, tensors: &[(&str, &[f32])]) -> Checkpoint {
        let path = dir.join(format!("{name}.safetensors"));
        write_checkpoint(&path, tensors);
        Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn plan(inputs: &Inputs) -> Result<MergePlan> {
        MergePlan::build(inputs, inputs.base.is_some(), None)
    }

    #[test]
    fn matches_a_full_clip_base_against_vision_only_models() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        let base = open(d, "base", &[("vision_model.w", &[0.0, 0.0]), ("text_model.w", &[1.0])]);
        let inputs = Inputs {
            base: Some(base),
            models: vec![open(d, "a", &[("w", &[1.0, 2.0])]), open(d, "b", &[("w", &[3.0, 4.0])])],
            extra: vec![open(d, "fa", &[("vision_model.w", &[1.0, 1.0])])],
        };
        let plan = plan(&inputs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.tensors.len(), 1, "the base's text tower is not merged");
        let t = &plan.tensors[0];
        assert_eq!((t.name.as_str(), t.numel), ("w", 2));
        let TensorKind::Merge {
            base, models, extra, ..
        } = &t.kind
        else {
            panic!("w is merged")
        };
        assert!(base.is_some());
        assert_eq!((models.len(), extra.len()), (2, 1));
        assert_eq!(plan.merged_params(), 2);
    }

    #[test]
    fn names_the_tensor_and_model_that_do_not_match() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        let message = |models: Vec<Checkpoint>| {
            let inputs = Inputs {
                base: None,
                models,
                extra: Vec::new(),
            };
            plan(&inputs).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let a = || open(d, "a", &[("w", &[1.0, 2.0])]);
        let shape = message(vec![a(), open(d, "b", &[("w", &[1.0])])]);
        assert!(shape.contains("b: tensor 'w' has shape [1], but [2] in a"), "{shape}");
        let missing = message(vec![a(), open(d, "c", &[("v", &[1.0, 2.0])])]);
        assert!(missing.contains("c: tensor 'w' is missing"), "{missing}");
        let extra = message(vec![a(), open(d, "e", &[("w", &[1.0, 2.0]), ("z", &[1.0])])]);
        assert!(extra.contains("e: tensor 'z' has no counterpart in a"), "{extra}");
    }
}
