//! A whole merge request: open and validate every input, plan, check the output path, stream the method
//! into a temporary directory, copy integer buffers and config files, and move the result into place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, View};
use crate::dtype::FloatType;
use crate::engine::Engine;
use crate::error::{MergeError, Result};
use crate::groups::{TensorGroup, passes};
use crate::method::{Method, MethodStats};
use crate::monitor::Monitor;
use crate::output::OutputDir;
use crate::plan::{Inputs, MergePlan, TensorKind};
use crate::writer::{OutTensor, Writer};

/// Small files copied from the first fine-tuned model's directory when present.
const COMPANION_FILES: [&str; 7] = [
    "preprocessor_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Everything a merge needs.
#[derive(Debug)]
pub struct MergeRequest {
    /// Method and parameters.
    pub method: Method,
    /// Tensors merged with other parameters of the same method (per-tensor overrides).
    pub groups: Vec<TensorGroup>,
    /// The pretrained model.
    pub base: Option<PathBuf>,
    /// The fine-tuned models.
    pub models: Vec<PathBuf>,
    /// For each model that is a LoRA adapter read over another model than `base` (mergekit's
    /// `model+lora`), that model; empty, or one entry per model (`None`: `base`).
    pub adapter_bases: Vec<Option<PathBuf>>,
    /// When `base` is a LoRA adapter (mergekit's `base_model: model+lora`), the model it is read over.
    pub base_adapter_over: Option<PathBuf>,
    /// Models assembled from other checkpoints' tensors (mergekit's `slices`); when given, they are the
    /// fine-tuned models and `models` is empty.
    pub views: Vec<View>,
    /// The pretrained model assembled the same way (instead of `base`), when `views` has one.
    pub base_view: View,
    /// Fields set in the output's `config.json` (a frankenmerge's `num_hidden_layers`).
    pub config_updates: serde_json::Map<String, serde_json::Value>,
    /// Output directory.
    pub out: PathBuf,
    /// Output dtype of merged tensors (default: the first fine-tuned model's).
    pub dtype: Option<FloatType>,
    /// Largest shard in bytes.
    pub max_shard_size: u64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Replace an existing output directory.
    pub overwrite: bool,
    /// Merge despite NaN/Inf parameters.
    pub allow_nonfinite: bool,
    /// Elements per chunk (0: the default); results do not depend on it.
    pub chunk: usize,
    /// Bytes the whole-tensor methods (SVD, SLERP, …) may hold at once (0: 160 MiB); a tensor that needs
    /// more runs alone. Results do not depend on it.
    pub memory_budget: u64,
    /// Other paths the caller read for this merge (a pool file, datasets): the output must not overlap them.
    pub reads: Vec<PathBuf>,
    /// Small files to put into the output beside the weights (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
}

impl MergeRequest {
    /// A request with the defaults: no pretrained model (set `base` for methods that need one), the
    /// inputs' dtype, a single output file, one thread per core, no overwriting, non-finite values refused.
    pub fn new(method: Method, models: Vec<PathBuf>, out: PathBuf) -> MergeRequest {
        MergeRequest {
            method,
            groups: Vec::new(),
            base: None,
            models,
            adapter_bases: Vec::new(),
            base_adapter_over: None,
            views: Vec::new(),
            base_view: View::default(),
            config_updates: serde_json::Map::new(),
            out,
            dtype: None,
            max_shard_size: u64::MAX,
            threads: 0,
            overwrite: false,
            allow_nonfinite: false,
            chunk: 0,
            memory_budget: 0,
            reads: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// One input in a report.
#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    /// Display name.
    pub name: String,
    /// Path as given.
    pub path: PathBuf,
    /// Layout recognised.
    pub layout: &'static str,
}

/// A group of tensors merged with its own parameters, in a report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    /// Its parameters.
    pub parameters: serde_json::Value,
    /// How many tensors it merged.
    pub tensors: usize,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Method name.
    pub method: &'static str,
    /// Method parameters.
    pub parameters: serde_json::Value,
    /// The parameters of each tensor group, with its number of tensors (per-tensor overrides).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tensor_groups: Vec<GroupInfo>,
    /// The pretrained model, if used.
    pub pretrained: Option<InputInfo>,
    /// The fine-tuned models.
    pub models: Vec<InputInfo>,
    /// Output tensors.
    pub tensors: usize,
    /// Tensors merged.
    pub merged_tensors: usize,
    /// Tensors copied (integer buffers).
    pub copied_tensors: usize,
    /// Parameters merged.
    pub parameters_merged: u64,
    /// Non-finite input values merged with `allow_nonfinite`.
    pub nonfinite_inputs: u64,
    /// Non-finite values written with `allow_nonfinite` (as stored in the output dtype).
    pub nonfinite_outputs: u64,
    /// Output directory.
    pub output: PathBuf,
    /// Weight files written.
    pub output_files: Vec<PathBuf>,
    /// Output bytes (weights).
    pub output_bytes: u64,
    /// Worker threads used.
    pub threads: usize,
    /// Wall time.
    pub seconds: f64,
    /// Method-specific findings.
    #[serde(flatten)]
    pub stats: MethodStats,
}

/// Run a merge.
pub fn merge(request: &MergeRequest, monitor: &Monitor) -> Result<MergeReport> {
    let started = Instant::now();
    let method = &request.method;
    if !request.views.is_empty() && !request.models.is_empty() {
        return Err(MergeError::Internal("models or views, not both".into()));
    }
    let count = request.models.len() + request.views.len();
    method.validate(count)?;
    let needs_base = method.def().needs_base;
    let base = match (&request.base, needs_base) {
        _ if !request.base_view.tensors.is_empty() => Some(request.base_view.open("slices base")?),
        (Some(p), _) => Some(match &request.base_adapter_over {
            Some(model) => Checkpoint::open_input(p, Some(model))?,
            None => Checkpoint::open(p)?,
        }),
        (None, true) => {
            return Err(MergeError::arg(format!(
                "{} needs the pretrained model (--pretrained)",
                method.name()
            )));
        }
        (None, false) => None,
    };
    // Ctrl-C is honoured between files: each header parses in bounded time (its size is capped).
    if !request.adapter_bases.is_empty() && request.adapter_bases.len() != request.models.len() {
        return Err(MergeError::Internal("one adapter base per model, or none".into()));
    }
    let open_all = |paths: &[PathBuf], bases: &[Option<PathBuf>]| {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if monitor.is_cancelled() {
                    return Err(MergeError::Cancelled);
                }
                let own = bases.get(i).and_then(Option::as_deref);
                Checkpoint::open_input(p, own.or(request.base.as_deref()))
            })
            .collect::<Result<Vec<_>>>()
    };
    let inputs = Inputs {
        base,
        models: if request.views.is_empty() {
            open_all(&request.models, &request.adapter_bases)?
        } else {
            let name = |i: usize| format!("layer map {}", i + 1);
            request
                .views
                .iter()
                .enumerate()
                .map(|(i, v)| v.open(&name(i)))
                .collect::<Result<_>>()?
        },
        extra: open_all(&method.extra_inputs(), &[])?,
    };
    let read: Vec<PathBuf> = inputs
        .all()
        .flat_map(|c| std::iter::once(c.path.clone()).chain(c.files()))
        .chain(method.input_paths())
        .chain(request.reads.iter().cloned())
        .collect();
    check_file_names(&request.files)?;
    let output = OutputDir::prepare(&request.out, &read, request.overwrite)?;
    let plan = MergePlan::build(&inputs, needs_base, request.dtype)?;
    let passes = passes(&plan, method, &request.groups)?;
    for (method, plan) in &passes {
        method.validate(count)?;
        method.validate_plan(plan)?;
    }
    let out_tensors: Vec<OutTensor> = plan
        .tensors
        .iter()
        .map(|t| OutTensor {
            name: t.name.clone(),
            dtype: t.out_dtype(),
            shape: t.shape.clone(),
            nbytes: t.out_bytes(),
        })
        .collect();
    let metadata = vec![
        ("format".to_string(), "pt".to_string()),
        ("merge_method".to_string(), method.name().to_string()),
        ("merge_parameters".to_string(), method.parameters().to_string()),
        (
            "merged_by".to_string(),
            format!("merge-rs {}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let writer = Writer::create(output, &out_tensors, &metadata, request.max_shard_size)?;
    let mut stats = None;
    let (mut nonfinite_inputs, mut nonfinite_outputs, mut threads) = (0, 0, 0);
    for (method, plan) in &passes {
        let mut engine = Engine::new(&inputs, plan, monitor, request.threads, request.allow_nonfinite)?;
        if request.chunk > 0 {
            engine = engine.with_chunk(request.chunk);
        }
        if request.memory_budget > 0 {
            engine = engine.with_whole_tensor_budget(usize::try_from(request.memory_budget).unwrap_or(usize::MAX));
        }
        let found = method.run(&engine, &writer)?;
        stats.get_or_insert(found);
        let (inputs, outputs) = engine.nonfinite_counts();
        (nonfinite_inputs, nonfinite_outputs) = (nonfinite_inputs + inputs, nonfinite_outputs + outputs);
        threads = engine.threads();
    }
    copy_raw_tensors(&inputs, &plan, &writer, monitor)?;
    copy_companions(&inputs.models[0], &writer, request.dtype, &request.config_updates)?;
    for (name, contents) in &request.files {
        writer.add_file(name, contents)?;
    }
    let output_files = writer.finish()?;
    let describe = |c: &Checkpoint| InputInfo {
        name: c.name.clone(),
        path: c.path.clone(),
        layout: c.layout.name(),
    };
    Ok(MergeReport {
        method: method.name(),
        parameters: method.parameters(),
        tensor_groups: request
            .groups
            .iter()
            .map(|g| GroupInfo {
                parameters: g.method.parameters(),
                tensors: g.tensors.len(),
            })
            .collect(),
        pretrained: inputs.base.as_ref().map(describe),
        models: inputs.models.iter().map(describe).collect(),
        tensors: plan.tensors.len(),
        merged_tensors: plan.merged_tensors(),
        copied_tensors: plan.tensors.len() - plan.merged_tensors(),
        parameters_merged: plan.merged_params(),
        nonfinite_inputs,
        nonfinite_outputs,
        output: request.out.clone(),
        output_files,
        output_bytes: out_tensors.iter().map(|t| t.nbytes).sum(),
        threads,
        seconds: started.elapsed().as_secs_f64(),
        stats: stats.unwrap_or_default(),
    })
}

/// Extra output files must be plain names that do not replace what the merge writes.
fn check_file_names(files: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, _) in files {
        let plain = Path::new(name).file_name().is_some_and(|n| n == name.as_str()) && !name.starts_with('.');
        let taken = name.ends_with(".safetensors") || name.ends_with(".index.json") || name == "config.json";
        if !plain || taken {
            return Err(MergeError::arg(format!("'{name}' cannot be added to the output")));
        }
    }
    Ok(())
}

/// Copy the integer buffers byte for byte.
fn copy_raw_tensors(inputs: &Inputs, plan: &MergePlan, writer: &Writer, monitor: &Monitor) -> Result<()> {
    const CHUNK: u64 = 8 << 20;
    let mut buf = Vec::new();
    for (index, t) in plan.tensors.iter().enumerate() {
        let TensorKind::Copy { from, tensor, .. } = &t.kind else {
            continue;
        };
        if monitor.is_cancelled() {
            return Err(MergeError::Cancelled);
        }
        let ckpt = inputs.get(*from);
        let source = &ckpt.tensors[*tensor];
        let mut offset = 0;
        while offset < t.out_bytes() {
            let len = CHUNK.min(t.out_bytes() - offset);
            buf.resize(len as usize, 0);
            ckpt.read_raw(source, offset, &mut buf)?;
            writer.write_at(index, offset, &buf)?;
            offset += len;
        }
    }
    Ok(())
}

/// Copy `config.json` (with its dtype updated when the output dtype changes, and `updates` set) and
/// tokenizer/processor files.
fn copy_companions(
    reference: &Checkpoint,
    writer: &Writer,
    dtype: Option<FloatType>,
    updates: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let Some(config) = &reference.config else { return Ok(()) };
    let text = std::fs::read(config).map_err(|e| MergeError::io(config, e))?;
    let text = updated_config(&text, dtype, updates).unwrap_or(text);
    writer.add_file("config.json", &text)?;
    let dir = config.parent().unwrap_or(Path::new("."));
    for name in COMPANION_FILES {
        let path = dir.join(name);
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| MergeError::io(&path, e))?;
            writer.add_file(name, &bytes)?;
        }
    }
    Ok(())
}

/// The config with `dtype` / `torch_dtype` set to `ty` (when the output dtype changes) and `updates` set; `None`
/// when there is nothing to change or it is not a JSON object.
fn updated_config(
    config: &[u8],
    dtype: Option<FloatType>,
    updates: &serde_json::Map<String, serde_json::Value>,
) -> Option<Vec<u8>> {
    if dtype.is_none() && updates.is_empty() {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(config).ok()?;
    let object = value.as_object_mut()?;
    if let Some(ty) = dtype {
        let present: Vec<String> = ["dtype", "torch_dtype"]
            .iter()
            .filter(|k| object.contains_key(**k))
            .map(|k| k.to_string())
            .collect();
        for key in if present.is_empty() {
            vec!["dtype".to_string()]
        } else {
            present
        } {
            object.insert(key, ty.name().into());
        }
    }
    object.extend(updates.clone());
    serde_json::to_vec_pretty(&value).ok()
}
