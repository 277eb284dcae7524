//! The Python extension module `merge_rs._core`: thin wrappers that convert arguments, run the core with
//! the GIL released ([`detach::run_detached`]) and return JSON reports that `merge_rs` turns into objects.
//! It also exports the method table (the one source of the Python registry and CLI) and the exception
//! classes.

mod detach;
mod errors;
mod output;

use std::collections::HashMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Deserialize;
use serde::Serialize;

use crate::checkpoint::{Checkpoint, is_adapter};
use crate::dtype::FloatType;
use crate::error::MergeError;
use crate::groups::TensorGroup;
use crate::merge::MergeRequest;
use crate::method::{Method, method_table};
use crate::monitor::Monitor;
use crate::synthetic::SyntheticSpec;
use detach::run_detached;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    method: String,
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
    pretrained: Option<PathBuf>,
    models: Vec<PathBuf>,
    /// Per model, the model a LoRA adapter is read over when it is not `pretrained`.
    #[serde(default)]
    adapter_bases: Vec<Option<PathBuf>>,
    /// When `pretrained` is a LoRA adapter, the model it is read over.
    #[serde(default)]
    pretrained_adapter_over: Option<PathBuf>,
    /// Models assembled from other checkpoints' tensors (mergekit's `slices`), instead of `models`.
    #[serde(default)]
    views: Vec<crate::checkpoint::View>,
    /// The pretrained model assembled the same way.
    #[serde(default)]
    base_view: crate::checkpoint::View,
    /// Fields to set in the output's `config.json`.
    #[serde(default)]
    config_updates: serde_json::Map<String, serde_json::Value>,
    out: PathBuf,
    dtype: Option<String>,
    max_shard_size: u64,
    #[serde(default)]
    threads: usize,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    allow_nonfinite: bool,
    /// Bytes the whole-tensor methods may hold at once (0: the default).
    #[serde(default)]
    memory_budget: u64,
    /// Other paths the caller read for this merge (the output must not overlap them).
    #[serde(default)]
    reads: Vec<PathBuf>,
    /// Small text files to put into the output beside the weights.
    #[serde(default)]
    files: Vec<(String, String)>,
    /// Tensors merged with other parameters of the method.
    #[serde(default)]
    groups: Vec<GroupJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupJson {
    tensors: Vec<String>,
    parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyntheticJson {
    tensors: Vec<(String, Vec<usize>)>,
    models: usize,
    dtype: String,
    seed: u64,
    max_shard_size: u64,
    weight_scale: f32,
    task_scale: f32,
    base_config: Option<String>,
    model_config: Option<String>,
    #[serde(default)]
    threads: usize,
}

/// Text files for an output, as the engine writes them.
fn text_files(files: Vec<(String, String)>) -> Vec<(String, Vec<u8>)> {
    files
        .into_iter()
        .map(|(name, text)| (name, text.into_bytes()))
        .collect()
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, json: &str) -> Result<T, MergeError> {
    serde_json::from_str(json).map_err(|e| MergeError::arg(format!("invalid {what}: {e}")))
}

fn dtype(name: &str) -> Result<FloatType, MergeError> {
    FloatType::parse(name)
        .ok_or_else(|| MergeError::arg(format!("unknown dtype '{name}' (float32, float16 or bfloat16)")))
}

fn to_json<T: Serialize>(value: &T) -> Result<String, MergeError> {
    serde_json::to_string(value).map_err(|e| MergeError::Internal(format!("cannot serialise a report: {e}")))
}

/// Merge checkpoints as described by `request` (JSON); returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (request, progress=None))]
fn merge(py: Python<'_>, request: &str, progress: Option<Bound<'_, PyAny>>) -> PyResult<String> {
    let monitor = Monitor::default();
    let build = || -> Result<MergeRequest, MergeError> {
        let r: RequestJson = parse("merge request", request)?;
        let groups = r
            .groups
            .into_iter()
            .map(|g| {
                Ok(TensorGroup {
                    method: Method::new(&r.method, &g.parameters)?,
                    tensors: g.tensors,
                })
            })
            .collect::<Result<Vec<_>, MergeError>>()?;
        Ok(MergeRequest {
            method: Method::new(&r.method, &r.parameters)?,
            groups,
            base: r.pretrained,
            models: r.models,
            adapter_bases: r.adapter_bases,
            base_adapter_over: r.pretrained_adapter_over,
            views: r.views,
            base_view: r.base_view,
            config_updates: r.config_updates,
            out: r.out,
            dtype: r.dtype.as_deref().map(dtype).transpose()?,
            max_shard_size: r.max_shard_size,
            threads: r.threads,
            overwrite: r.overwrite,
            allow_nonfinite: r.allow_nonfinite,
            chunk: 0,
            memory_budget: r.memory_budget,
            reads: r.reads,
            files: text_files(r.files),
        })
    };
    let request = build().map_err(|e| errors::to_py(py, e))?;
    run_detached(py, &monitor, progress.as_ref(), || {
        crate::merge::merge(&request, &monitor).and_then(|r| to_json(&r))
    })
}

/// Every merge method's declaration (name, summary, paper, needs, parameters with kinds, defaults and
/// help); returns JSON.
#[pyfunction]
fn method_table_json(py: Python<'_>) -> PyResult<String> {
    to_json(&method_table()).map_err(|e| errors::to_py(py, e))
}

/// Check `method` with `parameters` (a JSON object) for `models` fine-tuned models, as a merge would before
/// reading anything (declared ranges and the method's own checks, such as weights that cannot be normalised).
#[pyfunction]
fn check_method(py: Python<'_>, method: &str, parameters: &str, models: usize) -> PyResult<()> {
    let check = || -> Result<(), MergeError> {
        let parameters: serde_json::Map<String, serde_json::Value> = parse("method parameters", parameters)?;
        Method::new(method, &parameters)?.validate(models)
    };
    check().map_err(|e| errors::to_py(py, e))
}

/// Describe a checkpoint from its headers; returns JSON.
#[pyfunction]
fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    run_detached(py, &Monitor::default(), None, || {
        crate::info::inspect(&path).and_then(|r| to_json(&r))
    })
}

/// The PEFT LoRA adapter at `adapter`, read over `base` as a merge reads it (every module matched to the base's
/// weight): each module's name in the adapter → PEFT's scale of its ΔW.
#[pyfunction]
fn adapter_scales(py: Python<'_>, adapter: PathBuf, base: PathBuf) -> PyResult<HashMap<String, f32>> {
    run_detached(py, &Monitor::default(), None, || {
        if !is_adapter(&adapter) {
            return Err(MergeError::invalid(
                &adapter,
                "is not a PEFT adapter (no adapter_config.json)",
            ));
        }
        Ok(Checkpoint::open_input(&adapter, Some(&base))?
            .adapter_scales()
            .into_iter()
            .collect())
    })
}

/// Tensor `name` of `model` as a merge reads it (the PEFT adapter `adapter` laid over it, when given): its shape
/// and its values as little-endian float32 bytes.
#[pyfunction]
#[pyo3(signature = (model, name, adapter=None))]
fn read_tensor(
    py: Python<'_>,
    model: PathBuf,
    name: String,
    adapter: Option<PathBuf>,
) -> PyResult<(Vec<usize>, Py<PyBytes>)> {
    let (shape, values) = run_detached(py, &Monitor::default(), None, || {
        let ckpt = match &adapter {
            Some(a) => Checkpoint::open_input(a, Some(&model))?,
            None => Checkpoint::open(&model)?,
        };
        crate::info::read_whole(&ckpt, &name)
    })?;
    Ok((shape, PyBytes::new(py, bytemuck::cast_slice(&values)).unbind()))
}

/// Cosine similarity of the task vectors; returns JSON.
#[pyfunction]
#[pyo3(signature = (pretrained, models, threads=0, progress=None))]
fn cosine_similarity(
    py: Python<'_>,
    pretrained: PathBuf,
    models: Vec<PathBuf>,
    threads: usize,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let monitor = Monitor::default();
    run_detached(py, &monitor, progress.as_ref(), || {
        crate::analysis::cosine_similarity(&pretrained, &models, threads, &monitor).and_then(|r| to_json(&r))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractJson {
    model: PathBuf,
    pretrained: PathBuf,
    out: PathBuf,
    rank: usize,
    energy: Option<f64>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    reads: Vec<PathBuf>,
    #[serde(default)]
    files: Vec<(String, String)>,
}

/// Extract a LoRA adapter from a fine-tune (a JSON request); returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (request, progress=None))]
fn extract_lora(py: Python<'_>, request: &str, progress: Option<Bound<'_, PyAny>>) -> PyResult<String> {
    let r: ExtractJson = parse("extraction request", request).map_err(|e| errors::to_py(py, e))?;
    let request = crate::extract::ExtractRequest {
        model: r.model,
        base: r.pretrained,
        out: r.out,
        rank: r.rank,
        energy: r.energy,
        overwrite: r.overwrite,
        reads: r.reads,
        files: text_files(r.files),
    };
    let monitor = Monitor::default();
    run_detached(py, &monitor, progress.as_ref(), || {
        crate::extract::extract_lora(&request, &monitor).and_then(|r| to_json(&r))
    })
}

/// Write a synthetic model set under `directory`; returns the model paths (pretrained first).
#[pyfunction]
fn write_model_set(py: Python<'_>, directory: PathBuf, spec: &str) -> PyResult<Vec<PathBuf>> {
    let monitor = Monitor::default();
    let build = || -> Result<SyntheticSpec, MergeError> {
        let s: SyntheticJson = parse("model-set spec", spec)?;
        Ok(SyntheticSpec {
            tensors: s.tensors,
            models: s.models,
            dtype: dtype(&s.dtype)?,
            seed: s.seed,
            max_shard_size: s.max_shard_size,
            weight_scale: s.weight_scale,
            task_scale: s.task_scale,
            base_config: s.base_config,
            model_config: s.model_config,
            threads: s.threads,
        })
    };
    let spec = build().map_err(|e| errors::to_py(py, e))?;
    run_detached(py, &monitor, None, || {
        crate::synthetic::write_model_set(&directory, &spec)
    })
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(adapter_scales, m)?)?;
    m.add_function(wrap_pyfunction!(read_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(cosine_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(extract_lora, m)?)?;
    m.add_function(wrap_pyfunction!(write_model_set, m)?)?;
    m.add_function(wrap_pyfunction!(method_table_json, m)?)?;
    m.add_function(wrap_pyfunction!(check_method, m)?)?;
    m.add_function(wrap_pyfunction!(output::check_not_input, m)?)?;
    m.add_function(wrap_pyfunction!(output::check_output, m)?)?;
    m.add_class::<output::PyOutputDir>()?;
    for (name, class) in errors::classes(m.py())?.named() {
        m.add(name, class.clone_ref(m.py()))?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // What the engine holds by default, for plans that estimate memory (merge-rs run --dry-run).
    m.add("DEFAULT_CHUNK_BYTES", 4 * crate::engine::DEFAULT_CHUNK)?;
    m.add("DEFAULT_MEMORY_BUDGET", crate::engine::DEFAULT_WHOLE_TENSOR_BUDGET)?;
    Ok(())
}
