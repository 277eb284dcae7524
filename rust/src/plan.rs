//! Validate a merge request against every header before any tensor data is read: match names across
//! layouts (DESIGN §3), check shapes and dtypes, and decide what each output tensor is made from.

use crate::checkpoint::{Checkpoint, KeyMap, Tensor};
use crate::dtype::{FloatType, Storage, storage_of};
use crate::error::{MergeError, Result};

/// The checkpoints of a request: an optional pretrained model and the fine-tuned ones.
#[derive(Debug)]
pub struct Inputs {
    /// The pretrained model θ₀.
    pub base: Option<Checkpoint>,
    /// The fine-tuned models θᵢ, in task order.
    pub models: Vec<Checkpoint>,
}

/// Which input a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputId {
    /// The pretrained model.
    Base,
    /// Fine-tuned model `i`.
    Model(usize),
}

/// A float tensor stored in one input: tensor index in that checkpoint and its dtype.
#[derive(Debug, Clone, Copy)]
pub struct FloatSource {
    /// Index into the checkpoint's `tensors`.
    pub tensor: usize,
    /// Stored dtype.
    pub ty: FloatType,
}

/// What an output tensor is made of.
#[derive(Debug, Clone)]
pub enum TensorKind {
    /// Merged from float inputs.
    Merge {
        /// Output dtype.
        out: FloatType,
        /// The pretrained tensor, when a base model is given.
        base: Option<FloatSource>,
        /// One per fine-tuned model.
        models: Vec<FloatSource>,
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
pub struct PlanTensor {
    /// Output name (the first fine-tuned model's layout).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub numel: usize,
    /// How it is produced.
    pub kind: TensorKind,
}

impl PlanTensor {
    /// The output dtype.
    pub fn out_dtype(&self) -> safetensors::Dtype {
        match &self.kind {
            TensorKind::Merge { out, .. } => out.dtype(),
            TensorKind::Copy { dtype, .. } => *dtype,
        }
    }

    /// Output size in bytes.
    pub fn out_bytes(&self) -> u64 {
        let width = match &self.kind {
            TensorKind::Merge { out, .. } => out.size(),
            TensorKind::Copy { width, .. } => *width,
        };
        (self.numel * width) as u64
    }

    /// Whether this tensor is merged (rather than copied).
    pub fn is_merged(&self) -> bool {
        matches!(self.kind, TensorKind::Merge { .. })
    }
}

/// The validated plan: every output tensor, in name order.
#[derive(Debug)]
pub struct MergePlan {
    /// Output tensors.
    pub tensors: Vec<PlanTensor>,
}

impl MergePlan {
    /// Build and validate the plan. `needs_base` says whether the method uses θ₀ for float tensors.
    pub fn build(inputs: &Inputs, needs_base: bool, out_dtype: Option<FloatType>) -> Result<MergePlan> {
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
            for (j, (m, map)) in inputs.models.iter().skip(1).zip(&maps).enumerate() {
                sources.push((InputId::Model(j + 1), locate(m, *map)));
            }
            if let (Some(b), Some(map)) = (&inputs.base, base_map) {
                sources.push((InputId::Base, locate(b, map)));
            }
            tensors.push(plan_tensor(inputs, t, &sources, needs_base, out_dtype)?);
        }
        Ok(MergePlan { tensors })
    }

    /// Number of parameters that are merged.
    pub fn merged_params(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| t.is_merged())
            .map(|t| t.numel as u64)
            .sum()
    }

    /// Number of merged tensors.
    pub fn merged_tensors(&self) -> usize {
        self.tensors.iter().filter(|t| t.is_merged()).count()
    }
}

fn checkpoint(inputs: &Inputs, id: InputId) -> &Checkpoint {
    match id {
        InputId::Base => inputs.base.as_ref().unwrap_or(&inputs.models[0]),
        InputId::Model(i) => &inputs.models[i],
    }
}

/// Plan one output tensor from its `sources` (every fine-tuned model, then the base model when given).
fn plan_tensor(
    inputs: &Inputs,
    reference: &Tensor,
    sources: &[(InputId, Option<usize>)],
    needs_base: bool,
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
    let (models, base): (Vec<_>, Vec<_>) = found.into_iter().partition(|(id, _, _)| *id != InputId::Base);
    let kind = match storage {
        Storage::Float(ty) => {
            let float = |&(_, tensor, s): &(InputId, usize, Storage)| match s {
                Storage::Float(ty) => FloatSource { tensor, ty },
                Storage::Raw { .. } => unreachable!("check_source keeps float tensors float"),
            };
            TensorKind::Merge {
                out: out_dtype.unwrap_or(ty),
                base: base.first().filter(|_| needs_base).map(float),
                models: models.iter().map(float).collect(),
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
    let ckpt = checkpoint(inputs, id);
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
