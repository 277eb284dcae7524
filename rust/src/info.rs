//! `merge-rs info`: what a checkpoint holds, from its headers alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::{ADAPTER_FILE, Checkpoint, is_adapter};

/// How `inspect` describes a PEFT adapter's layout.
const ADAPTER_DESCRIPTION: &str = "a PEFT LoRA adapter: its lora_A/lora_B factors, merged over its base model";
use crate::dtype::{Storage, storage_of};
use crate::error::{MergeError, Result};

/// One tensor of a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Dtype as safetensors names it.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub parameters: u64,
    /// Bytes.
    pub bytes: u64,
    /// Shard file name.
    pub shard: String,
}

/// One shard file.
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// Path.
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
    /// Tensors it holds.
    pub tensors: usize,
}

/// A checkpoint summary.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Path as given.
    pub path: PathBuf,
    /// Display name.
    pub name: String,
    /// Layout key.
    pub layout: &'static str,
    /// Layout description.
    pub layout_description: &'static str,
    /// Number of tensors.
    pub tensor_count: usize,
    /// Total parameters.
    pub parameters: u64,
    /// Total tensor bytes.
    pub bytes: u64,
    /// Parameters per dtype.
    pub dtypes: BTreeMap<String, u64>,
    /// Shards.
    pub shards: Vec<ShardInfo>,
    /// `__metadata__` of the first shard.
    pub metadata: BTreeMap<String, String>,
    /// `config.json`, if present.
    pub config: Option<PathBuf>,
    /// Every tensor.
    pub tensors: Vec<TensorInfo>,
}

/// Describe the checkpoint at `path`.
pub fn inspect(path: &Path) -> Result<CheckpointInfo> {
    let adapter = is_adapter(path);
    let mut ckpt = Checkpoint::open(&if adapter {
        path.join(ADAPTER_FILE)
    } else {
        path.to_path_buf()
    })?;
    if adapter {
        ckpt.path = path.to_path_buf();
        ckpt.name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    }
    let shard_name = |i: usize| {
        ckpt.shards[i]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let tensors: Vec<TensorInfo> = ckpt
        .tensors
        .iter()
        .map(|t| TensorInfo {
            name: t.stored.name.clone(),
            dtype: format!("{:?}", t.stored.dtype),
            shape: t.stored.shape.clone(),
            parameters: t.stored.numel() as u64,
            bytes: t.stored.nbytes,
            shard: shard_name(t.shard),
        })
        .collect();
    let mut dtypes = BTreeMap::new();
    for t in &tensors {
        *dtypes.entry(t.dtype.clone()).or_insert(0) += t.parameters;
    }
    let shards = ckpt
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| ShardInfo {
            path: s.path.clone(),
            bytes: s.len,
            tensors: ckpt.tensors.iter().filter(|t| t.shard == i).count(),
        })
        .collect();
    Ok(CheckpointInfo {
        path: ckpt.path.clone(),
        name: ckpt.name.clone(),
        layout: if adapter { "peft-lora" } else { ckpt.layout.name() },
        layout_description: if adapter {
            ADAPTER_DESCRIPTION
        } else {
            ckpt.layout.describe()
        },
        tensor_count: tensors.len(),
        parameters: ckpt.numel(),
        bytes: tensors.iter().map(|t| t.bytes).sum(),
        dtypes,
        shards,
        metadata: ckpt.metadata.iter().cloned().collect(),
        config: ckpt.config.clone(),
        tensors,
    })
}

/// Tensor `name` of `ckpt` as a merge reads it (an adapter's change added): its shape and values. The whole
/// tensor is held: this is for one tensor a caller needs whole (a vocabulary to re-index).
pub(crate) fn read_whole(ckpt: &Checkpoint, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let tensor = ckpt
        .get(name)
        .ok_or_else(|| MergeError::invalid(&ckpt.path, format!("has no tensor '{name}'")))?;
    let Some(Storage::Float(ty)) = storage_of(tensor.stored.dtype) else {
        return Err(MergeError::invalid(
            &ckpt.path,
            format!("tensor '{name}' is {:?}, not a float tensor", tensor.stored.dtype),
        ));
    };
    let mut values = vec![0.0f32; tensor.stored.numel()];
    ckpt.read_f32(tensor, ty, 0, &mut values, &mut Vec::new())?;
    Ok((tensor.stored.shape.clone(), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::write_checkpoint;

    #[test]
    fn a_whole_tensor_is_read_by_name_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.safetensors");
        write_checkpoint(&path, &[("embed", &[1.0, 2.0, 3.0])]);
        let ckpt = Checkpoint::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let (shape, values) = read_whole(&ckpt, "embed").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((shape, values), (vec![3], vec![1.0, 2.0, 3.0]));
        let err = read_whole(&ckpt, "head").expect_err("missing").to_string();
        assert!(
            err.contains("has no tensor 'head'") && err.contains("m.safetensors"),
            "{err}"
        );
    }
}
