//! `extract-lora`: a fine-tune's change from its base, τ = θ − θ₀, as a PEFT LoRA adapter. Each targeted
//! matrix (a 2-D `*.weight` that is not an embedding) is read whole, one at a time, and truncated by SVD to
//! its best rank-r approximation U_r·S_r·V_rᵀ, stored as lora_B = U_r·S_r and lora_A = V_rᵀ with α = r (so
//! PEFT's scale α/r is 1). With `energy`, each matrix keeps the fewest directions (at most `rank`) whose
//! squared singular values reach that share of ‖τ‖²_F. Memory holds one matrix and the adapter's factors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::error::{MergeError, Result};
use crate::linalg::{top_triplets, widen};
use crate::monitor::Monitor;
use crate::output::OutputDir;
use crate::plan::{Inputs, MergePlan, PlanTensor, TensorKind};

/// What to extract.
#[derive(Debug)]
pub struct ExtractRequest {
    /// The fine-tuned model θ (a checkpoint or an adapter over `base`).
    pub model: PathBuf,
    /// Its base θ₀.
    pub base: PathBuf,
    /// The adapter directory to write.
    pub out: PathBuf,
    /// The rank of every module (the most, with `energy`).
    pub rank: usize,
    /// Keep the fewest directions whose energy reaches this share of ‖τ‖² (0 < energy ≤ 1).
    pub energy: Option<f64>,
    /// Replace an output merge-rs wrote.
    pub overwrite: bool,
    /// Other paths the caller read: the output must not overlap them.
    pub reads: Vec<PathBuf>,
    /// Small text files to put beside the adapter (a model card).
    pub files: Vec<(String, Vec<u8>)>,
}

/// One module of the adapter.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractedModule {
    /// The module (the weight's name without `.weight`).
    pub module: String,
    /// The weight's shape.
    pub shape: [usize; 2],
    /// The rank kept.
    pub rank: usize,
    /// The share of ‖τ‖²_F the kept directions hold.
    pub energy: f64,
    /// ‖τ − ΔW‖_F / ‖τ‖_F: the norm of the dropped singular values, relative.
    pub relative_error: f64,
}

/// A changed tensor the adapter cannot hold (biases, norms, embeddings, convolutions).
#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    /// Tensor name.
    pub tensor: String,
    /// ‖τ‖ / ‖θ₀‖.
    pub relative_change: f64,
}

/// What was extracted.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// The fine-tuned model.
    pub model: PathBuf,
    /// The base.
    pub base: PathBuf,
    /// The adapter written.
    pub output: PathBuf,
    /// Every module, in name order.
    pub modules: Vec<ExtractedModule>,
    /// Changed tensors the adapter leaves out.
    pub left_out: Vec<LeftOut>,
    /// Targeted matrices that did not change (no module written).
    pub unchanged: usize,
    /// Parameters in the adapter.
    pub parameters: u64,
    /// Wall time.
    pub seconds: f64,
}

const PEFT_PREFIX: &str = "base_model.model.";

/// Extract the adapter.
pub fn extract_lora(request: &ExtractRequest, monitor: &Monitor) -> Result<ExtractReport> {
    let started = Instant::now();
    check_request(request)?;
    let inputs = Inputs {
        base: Some(Checkpoint::open(&request.base)?),
        models: vec![Checkpoint::open_input(&request.model, Some(&request.base))?],
        extra: Vec::new(),
    };
    let plan = MergePlan::build(&inputs, true, None)?;
    let targets: Vec<&PlanTensor> = plan.tensors.iter().filter(|t| is_target(t)).collect();
    for t in &targets {
        let short = t.shape[0].min(t.shape[1]);
        if request.rank > short {
            return Err(MergeError::arg(format!(
                "rank {} is larger than '{}' {:?} allows ({short}); give --rank {short} or less",
                request.rank, t.name, t.shape
            )));
        }
    }
    let reads: Vec<PathBuf> = inputs
        .all()
        .flat_map(|c| std::iter::once(c.path.clone()).chain(c.files()))
        .chain(request.reads.clone())
        .collect();
    let output = OutputDir::prepare(&request.out, &reads, request.overwrite)?;
    let merged: Vec<&PlanTensor> = plan.tensors.iter().filter(|t| t.is_merged()).collect();
    monitor.start_phase("extract", merged.iter().map(|t| t.numel as u64 * 8).sum());
    let mut report = ExtractReport {
        model: request.model.clone(),
        base: request.base.clone(),
        output: request.out.clone(),
        modules: Vec::new(),
        left_out: Vec::new(),
        unchanged: 0,
        parameters: 0,
        seconds: 0.0,
    };
    let mut factors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for tensor in merged {
        if monitor.is_cancelled() {
            return Err(MergeError::Cancelled);
        }
        let (theta0, theta) = read_pair(&inputs, tensor)?;
        let tau: Vec<f32> = theta.iter().zip(&theta0).map(|(a, b)| a - b).collect();
        let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>();
        let total = norm(&tau);
        if !is_target(tensor) {
            if total > 0.0 {
                let relative_change = (total / norm(&theta0).max(f64::MIN_POSITIVE)).sqrt();
                report.left_out.push(LeftOut {
                    tensor: base_name(&inputs, tensor).to_string(),
                    relative_change,
                });
            }
        } else if total == 0.0 {
            report.unchanged += 1;
        } else {
            let module = factorise(tensor, base_name(&inputs, tensor), &tau, total, request, &mut factors)?;
            report.parameters += (module.rank * (tensor.shape[0] + tensor.shape[1])) as u64;
            report.modules.push(module);
        }
        monitor.advance(tensor.numel as u64 * 8);
    }
    if report.modules.is_empty() {
        return Err(MergeError::arg(format!(
            "no linear weight of {} differs from {}: there is nothing to extract",
            request.model.display(),
            request.base.display()
        )));
    }
    write_adapter(&output, request, &report, &factors)?;
    output.commit()?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn check_request(request: &ExtractRequest) -> Result<()> {
    if request.rank == 0 {
        return Err(MergeError::arg("the rank must be at least 1"));
    }
    if let Some(e) = request.energy
        && !(e > 0.0 && e <= 1.0)
    {
        return Err(MergeError::arg(format!("the energy share must be in (0, 1], got {e}")));
    }
    Ok(())
}

/// A matrix PEFT's LoRA can adapt as a linear layer: 2-D, named `*.weight`, not an embedding.
fn is_target(t: &PlanTensor) -> bool {
    t.is_merged() && t.shape.len() == 2 && t.name.ends_with(".weight") && !t.name.contains("embed")
}

fn read_pair(inputs: &Inputs, tensor: &PlanTensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let TensorKind::Merge {
        base: Some(base),
        models,
        ..
    } = &tensor.kind
    else {
        return Err(MergeError::Internal(format!(
            "tensor '{}' has no pair to read",
            tensor.name
        )));
    };
    let mut scratch = Vec::new();
    let mut read = |ckpt: &Checkpoint, source: &crate::plan::FloatSource| -> Result<Vec<f32>> {
        let mut out = vec![0.0; tensor.numel];
        ckpt.read_f32(&ckpt.tensors[source.tensor], source.ty, 0, &mut out, &mut scratch)?;
        Ok(out)
    };
    let theta0 = read(inputs.get(crate::plan::InputId::Base), base)?;
    let theta = read(&inputs.models[0], &models[0])?;
    Ok((theta0, theta))
}

/// The base's name for `tensor` (the adapter is read over the base, so its modules are named as there).
fn base_name<'a>(inputs: &'a Inputs, tensor: &'a PlanTensor) -> &'a str {
    match (&tensor.kind, &inputs.base) {
        (TensorKind::Merge { base: Some(source), .. }, Some(base)) => &base.tensors[source.tensor].stored.name,
        _ => &tensor.name,
    }
}

/// The best rank-r factors of `tau` (m × n), added to `factors` as PEFT names them (after the base's `name`).
fn factorise(
    tensor: &PlanTensor,
    name: &str,
    tau: &[f32],
    total: f64,
    request: &ExtractRequest,
    factors: &mut BTreeMap<String, (Vec<usize>, Vec<u8>)>,
) -> Result<ExtractedModule> {
    let (m, n) = (tensor.shape[0], tensor.shape[1]);
    let triplets = top_triplets(widen(tau, m, n).as_ref(), request.rank)
        .map_err(|e| MergeError::arg(format!("tensor '{}': {e}", tensor.name)))?;
    let mut kept = 0.0;
    let mut rank = 0;
    for s in &triplets.s {
        if rank > 0 && request.energy.is_some_and(|e| kept / total >= e) || *s == 0.0 {
            break;
        }
        kept += s * s;
        rank += 1;
    }
    let rank = rank.max(1);
    let kept = kept.min(total);
    let b: Vec<f32> = (0..m * rank)
        .map(|e| (triplets.u[(e / rank, e % rank)] * triplets.s[e % rank]) as f32)
        .collect();
    let a: Vec<f32> = (0..rank * n).map(|e| triplets.v[(e % n, e / n)] as f32).collect();
    let module = name.strip_suffix(".weight").unwrap_or(name).to_string();
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    factors.insert(
        format!("{PEFT_PREFIX}{module}.lora_A.weight"),
        (vec![rank, n], bytes(&a)),
    );
    factors.insert(
        format!("{PEFT_PREFIX}{module}.lora_B.weight"),
        (vec![m, rank], bytes(&b)),
    );
    Ok(ExtractedModule {
        module,
        shape: [m, n],
        rank,
        energy: kept / total,
        relative_error: ((total - kept).max(0.0) / total).sqrt(),
    })
}

/// `adapter_model.safetensors`, `adapter_config.json` and the caller's files, into the temporary directory.
fn write_adapter(
    output: &OutputDir,
    request: &ExtractRequest,
    report: &ExtractReport,
    factors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
) -> Result<()> {
    let views = factors
        .iter()
        .map(|(name, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| MergeError::Internal(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = output.temp().join(crate::checkpoint::ADAPTER_FILE);
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    safetensors::serialize_to_file(views, metadata, &weights)
        .map_err(|e| MergeError::Internal(format!("{}: {e}", weights.display())))?;
    let config = adapter_config(request, report);
    let text = serde_json::to_string_pretty(&config).map_err(|e| MergeError::Internal(e.to_string()))?;
    std::fs::write(output.temp().join(crate::checkpoint::ADAPTER_CONFIG), text + "\n").map_err(|e| output.error(e))?;
    for (name, data) in &request.files {
        std::fs::write(output.temp().join(name), data).map_err(|e| output.error(e))?;
    }
    Ok(())
}

/// PEFT's LoraConfig for the extracted modules: α = r everywhere, so the scale is 1; modules of another rank
/// than the most common get `rank_pattern` and `alpha_pattern` entries (their names escaped as patterns).
fn adapter_config(request: &ExtractRequest, report: &ExtractReport) -> serde_json::Value {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    report
        .modules
        .iter()
        .for_each(|m| *counts.entry(m.rank).or_default() += 1);
    let r = counts
        .iter()
        .max_by_key(|(rank, count)| (**count, **rank))
        .map_or(request.rank, |(rank, _)| *rank);
    let others: serde_json::Map<String, serde_json::Value> = report
        .modules
        .iter()
        .filter(|m| m.rank != r)
        .map(|m| (regex::escape(&m.module), m.rank.into()))
        .collect();
    serde_json::json!({
        "peft_type": "LORA",
        "base_model_name_or_path": absolute(&request.base),
        "r": r,
        "lora_alpha": r,
        "target_modules": report.modules.iter().map(|m| m.module.clone()).collect::<Vec<_>>(),
        "rank_pattern": others,
        "alpha_pattern": others,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "task_type": null,
    })
}

fn absolute(path: &Path) -> String {
    crate::output::absolute(path).display().to_string()
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
