//! A PEFT adapter's `adapter_config.json`: the fields that change the weights, bounded in size, with what
//! merge-rs cannot read refused by name, and `alpha_pattern` matched as PEFT matches it. Its presence is what
//! makes a directory an adapter.

use std::path::Path;

use super::lora::ADAPTER_CONFIG;
use super::regular_file;
use crate::error::{MergeError, Result};

/// The largest `adapter_config.json` read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Whether `path` is a PEFT adapter directory.
pub(crate) fn is_adapter(path: &Path) -> bool {
    path.is_dir() && path.join(ADAPTER_CONFIG).is_file()
}

/// `error` (opening `path` as a checkpoint), or, when `path` holds no weights but adapters in its
/// subdirectories (PEFT saves each adapter of a model there), an error naming them.
pub(crate) fn with_adapter_hint(path: &Path, error: MergeError) -> MergeError {
    let Ok(entries) = std::fs::read_dir(path) else {
        return error;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_adapter(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return error;
    }
    names.sort();
    MergeError::invalid(
        path,
        format!(
            "holds PEFT adapters in its subdirectories ({}): give one of them as a model",
            names.join(", ")
        ),
    )
}

/// The fields of `adapter_config.json` that change the weights.
#[derive(Debug, serde::Deserialize)]
pub(super) struct AdapterConfig {
    pub(super) peft_type: Option<String>,
    pub(super) lora_alpha: Option<f64>,
    #[serde(default)]
    pub(super) alpha_pattern: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub(super) use_rslora: bool,
    #[serde(default)]
    pub(super) fan_in_fan_out: bool,
    #[serde(default)]
    pub(super) use_dora: bool,
    #[serde(default)]
    pub(super) lora_bias: bool,
    pub(super) layer_replication: Option<serde_json::Value>,
}

/// Read and check `path`: a LoRA config merge-rs can apply, or an error saying what it cannot.
pub(super) fn read_config(path: &Path) -> Result<AdapterConfig> {
    let size = regular_file(path)?;
    if size > MAX_CONFIG_BYTES {
        return Err(MergeError::invalid(
            path,
            format!("is {size} bytes; an adapter config is at most 1 MiB"),
        ));
    }
    let text = std::fs::read(path).map_err(|e| MergeError::io(path, e))?;
    let config: AdapterConfig =
        serde_json::from_slice(&text).map_err(|e| MergeError::invalid(path, format!("is not valid: {e}")))?;
    let kind = config.peft_type.as_deref().unwrap_or("");
    let refuse = |why: &str| Err(MergeError::invalid(path, why.to_string()));
    if kind != "LORA" {
        return refuse(&format!(
            "peft_type is '{kind}': merge-rs reads LoRA adapters (peft_type LORA), not IA³, LoKr, LoHa or others"
        ));
    }
    if config.use_dora {
        return refuse("use_dora is set: DoRA adapters are not supported yet (their magnitude vector rescales W)");
    }
    if config.lora_bias {
        return refuse("lora_bias is set: adapters with a trained lora_B bias are not supported yet");
    }
    if config.layer_replication.as_ref().is_some_and(|v| !v.is_null()) {
        return refuse("layer_replication is set: adapters that replicate layers are not supported");
    }
    if config.lora_alpha.is_none_or(|a| !a.is_finite()) {
        return refuse("lora_alpha is missing or not a finite number");
    }
    Ok(config)
}

/// α for `module`: the first `alpha_pattern` key (in the file's order) that matches the end of its name
/// from a whole dotted component on, as PEFT matches, else `lora_alpha`.
pub(super) fn alpha_for(config: &AdapterConfig, module: &str, path: &Path) -> Result<f64> {
    for (key, value) in &config.alpha_pattern {
        let pattern = regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
            .map_err(|e| MergeError::invalid(path, format!("alpha_pattern key '{key}' is not a pattern: {e}")))?;
        if pattern.is_match(module) {
            return value.as_f64().filter(|a| a.is_finite()).ok_or_else(|| {
                MergeError::invalid(path, format!("alpha_pattern '{key}' is {value}, not a finite number"))
            });
        }
    }
    Ok(config.lora_alpha.unwrap_or(8.0))
}
