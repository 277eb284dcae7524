//! Tiny safetensors files for unit tests.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::dtype::FloatType;
use crate::synthetic::{SyntheticSpec, write_model_set};

/// A float32 safetensors file holding `tensors` (1-D), as bytes.
pub(crate) fn checkpoint_bytes(tensors: &[(&str, &[f32])]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, vals)) in tensors.iter().enumerate() {
        let start = data.len();
        data.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        let sep = if i == 0 { "" } else { "," };
        header += &format!(
            r#"{sep}"{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{start},{}]}}"#,
            vals.len(),
            data.len()
        );
    }
    header.push('}');
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(&data);
    v
}

/// Write `bytes` to `path`.
pub(crate) fn put(path: &Path, bytes: &[u8]) {
    File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Write a float32 checkpoint holding `tensors` to `path`.
pub(crate) fn write_checkpoint(path: &Path, tensors: &[(&str, &[f32])]) {
    put(path, &checkpoint_bytes(tensors));
}

/// A float32 pretrained model and `models` fine-tuned ones (θ₀ + noise) under `dir`, with `tensors` (name,
/// shape); the paths, pretrained first.
pub(crate) fn synthetic_models(dir: &Path, tensors: &[(&str, Vec<usize>)], models: usize, seed: u64) -> Vec<PathBuf> {
    synthetic_models_stored(dir, tensors, models, seed, FloatType::F32, u64::MAX)
}

/// [`synthetic_models`] stored as `dtype`, in shards of at most `max_shard_size` bytes.
pub(crate) fn synthetic_models_stored(
    dir: &Path,
    tensors: &[(&str, Vec<usize>)],
    models: usize,
    seed: u64,
    dtype: FloatType,
    max_shard_size: u64,
) -> Vec<PathBuf> {
    let spec = SyntheticSpec {
        tensors: tensors.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
        models,
        dtype,
        seed,
        max_shard_size,
        weight_scale: 0.5,
        task_scale: 0.1,
        base_config: None,
        model_config: None,
        threads: 1,
    };
    write_model_set(dir, &spec).unwrap_or_else(|e| panic!("{e}"))
}
