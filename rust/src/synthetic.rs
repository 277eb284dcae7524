//! Synthetic model sets for demos, tests and benchmarks: a "pretrained" checkpoint and fine-tuned ones with
//! given tensor names and shapes, values a pure function of (seed, model, tensor, index), written in
//! parallel through the same [`Writer`] as merges. Task vectors are small relative to the weights and
//! partly shared between tasks, as in real fine-tunes.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dtype::FloatType;
use crate::error::{MergeError, Result};
use crate::output::OutputDir;
use crate::rng;
use crate::writer::{OutTensor, Writer};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// (name, shape) of every tensor.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Number of fine-tuned models.
    pub models: usize,
    /// Storage dtype.
    pub dtype: FloatType,
    /// Seed.
    pub seed: u64,
    /// Largest shard in bytes.
    pub max_shard_size: u64,
    /// Standard deviation of the pretrained weights.
    pub weight_scale: f32,
    /// Standard deviation of each task vector.
    pub task_scale: f32,
    /// `config.json` text for the pretrained model, if any.
    pub base_config: Option<String>,
    /// `config.json` text for the fine-tuned models, if any.
    pub model_config: Option<String>,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// Write `pretrained/` and `model_01/ …` under `dir`; returns their paths (pretrained first).
pub fn write_model_set(dir: &Path, spec: &SyntheticSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| MergeError::io(dir, e))?;
    crate::engine::check_threads(spec.threads)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.threads)
        .build()
        .map_err(|e| MergeError::arg(format!("cannot start threads: {e}")))?;
    let mut paths = Vec::with_capacity(spec.models + 1);
    for model in 0..=spec.models {
        let name = if model == 0 {
            "pretrained".to_string()
        } else {
            format!("model_{model:02}")
        };
        let path = dir.join(name);
        let config = if model == 0 {
            &spec.base_config
        } else {
            &spec.model_config
        };
        pool.install(|| write_model(&path, spec, model, config.as_deref()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn write_model(path: &Path, spec: &SyntheticSpec, model: usize, config: Option<&str>) -> Result<()> {
    let out: Vec<OutTensor> = spec
        .tensors
        .iter()
        .map(|(name, shape)| OutTensor {
            name: name.clone(),
            dtype: spec.dtype.dtype(),
            shape: shape.clone(),
            nbytes: (shape.iter().product::<usize>() * spec.dtype.size()) as u64,
        })
        .collect();
    let output = OutputDir::prepare(path, &[], true)?;
    let writer = Writer::create(output, &out, &[("format".into(), "pt".into())], spec.max_shard_size)?;
    const CHUNK: usize = 1 << 18;
    let jobs: Vec<(usize, usize, usize)> = spec
        .tensors
        .iter()
        .enumerate()
        .flat_map(|(t, (_, shape))| {
            let n: usize = shape.iter().product();
            (0..n).step_by(CHUNK).map(move |s| (t, s, CHUNK.min(n - s)))
        })
        .collect();
    jobs.par_iter().try_for_each_init(
        || (Vec::new(), Vec::new()),
        |(values, bytes): &mut (Vec<f32>, Vec<u8>), &(t, start, len)| {
            values.resize(len, 0.0);
            fill(values, spec, model, &spec.tensors[t].0, start);
            spec.dtype.encode(values, bytes);
            writer.write_at(t, (start * spec.dtype.size()) as u64, bytes)
        },
    )?;
    if let Some(text) = config {
        writer.add_file("config.json", text.as_bytes())?;
    }
    writer.finish().map(|_| ())
}

/// A value with mean 0 and standard deviation ≈ 1 (sum of two uniforms, triangular; cheap and bounded).
fn centered(stream: u64, index: u64) -> f32 {
    let bits = rng::bits(stream, index);
    let a = (bits >> 32) as f32 / 4_294_967_296.0;
    let b = (bits & 0xffff_ffff) as f32 / 4_294_967_296.0;
    (a + b - 1.0) * 2.449_489_7 // √6: unit variance
}

fn fill(values: &mut [f32], spec: &SyntheticSpec, model: usize, tensor: &str, start: usize) {
    let base = rng::stream(spec.seed, tensor, 0);
    let shared = rng::stream(spec.seed, tensor, u64::MAX);
    let own = rng::stream(spec.seed, tensor, model as u64);
    for (j, v) in values.iter_mut().enumerate() {
        let i = (start + j) as u64;
        let mut x = spec.weight_scale * centered(base, i);
        if model > 0 {
            // 30 % of each task vector's variance is shared by all tasks.
            x += spec.task_scale * (0.548 * centered(shared, i) + 0.837 * centered(own, i));
        }
        *v = x;
    }
}
