//! Coefficients for task arithmetic: one λ for all, one per task (task-wise AdaMerging), or one per task per
//! tensor (layer-wise AdaMerging), the last read from a JSON file:
//! `{"tasks": [...], "coefficients": {"<tensor>": [c1, ..., cn], ...}, "default": [c1, ..., cn]}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::checkpoint::KeyMap;
use crate::error::{MergeError, Result};
use crate::plan::MergePlan;

/// How task vectors are weighted.
#[derive(Debug, Clone)]
pub(crate) enum Coefficients {
    /// θ₀ + λ Σ τᵢ.
    Uniform(f32),
    /// θ₀ + Σ cᵢτᵢ.
    PerTask(Vec<f32>),
    /// θ₀ + Σ c_{i,t} τᵢ for tensor t.
    PerTensor(PerTensorCoefficients),
}

/// Per-tensor coefficients as loaded from a file.
#[derive(Debug, Clone)]
pub(crate) struct PerTensorCoefficients {
    /// The file they came from.
    pub(crate) path: PathBuf,
    /// Task names, if the file gives them.
    pub(crate) tasks: Vec<String>,
    /// Tensor name → one coefficient per model.
    pub(crate) table: HashMap<String, Vec<f32>>,
    /// Coefficients for tensors the table does not name.
    pub(crate) default: Option<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct CoefficientsFile {
    #[serde(default)]
    tasks: Vec<String>,
    coefficients: HashMap<String, Vec<f32>>,
    #[serde(default)]
    default: Option<Vec<f32>>,
}

impl PerTensorCoefficients {
    /// Load a coefficients file.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MergeError::io(path, e))?;
        let file: CoefficientsFile = serde_json::from_str(&text).map_err(|e| {
            MergeError::arg(format!(
                "{}: not a coefficients file ({e}); expected {{\"coefficients\": {{\"<tensor>\": [c1, ...]}}}}",
                path.display()
            ))
        })?;
        Ok(PerTensorCoefficients {
            path: path.to_path_buf(),
            tasks: file.tasks,
            table: file.coefficients,
            default: file.default,
        })
    }

    fn lookup(&self, tensor: &str) -> Option<&Vec<f32>> {
        KeyMap::ALL
            .iter()
            .find_map(|m| m.apply(tensor).and_then(|k| self.table.get(k.as_ref())))
            .or(self.default.as_ref())
    }
}

impl Coefficients {
    /// The single λ, if uniform.
    pub(crate) fn uniform(&self) -> Option<f32> {
        match self {
            Coefficients::Uniform(l) => Some(*l),
            _ => None,
        }
    }

    /// The per-model coefficients for `tensor`, or `None` when uniform.
    pub(crate) fn for_tensor(&self, tensor: &str) -> Result<Option<&[f32]>> {
        match self {
            Coefficients::Uniform(_) => Ok(None),
            Coefficients::PerTask(c) => Ok(Some(c)),
            Coefficients::PerTensor(p) => p
                .lookup(tensor)
                .map(|c| Some(c.as_slice()))
                .ok_or_else(|| missing(p, tensor)),
        }
    }

    /// Parameters for the report.
    pub(crate) fn parameters(&self) -> Value {
        match self {
            Coefficients::Uniform(l) => json!({"scaling_factor": crate::method::tidy(*l)}),
            Coefficients::PerTask(c) => {
                json!({"coefficients": c.iter().map(|&x| crate::method::tidy(x)).collect::<Vec<_>>()})
            }
            Coefficients::PerTensor(p) => json!({"coefficients_file": p.path, "tasks": p.tasks}),
        }
    }

    /// Check the counts against the number of models.
    pub(crate) fn validate(&self, models: usize) -> Result<()> {
        let check = |what: &str, c: &[f32]| {
            if c.len() != models {
                return Err(MergeError::arg(format!(
                    "{what}: {} coefficients given for {models} models",
                    c.len()
                )));
            }
            if c.iter().any(|x| !x.is_finite()) {
                return Err(MergeError::arg(format!("{what}: coefficients must be finite numbers")));
            }
            Ok(())
        };
        match self {
            Coefficients::Uniform(l) if !l.is_finite() => {
                Err(MergeError::arg("the scaling factor must be a finite number"))
            }
            Coefficients::Uniform(_) => Ok(()),
            Coefficients::PerTask(c) => check("task_arithmetic", c),
            Coefficients::PerTensor(p) => {
                if !p.tasks.is_empty() && p.tasks.len() != models {
                    return Err(MergeError::arg(format!(
                        "{}: names {} tasks for {models} models",
                        p.path.display(),
                        p.tasks.len()
                    )));
                }
                let mut entries: Vec<(&String, &Vec<f32>)> = p.table.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (tensor, c) in entries {
                    check(&format!("{}: tensor '{tensor}'", p.path.display()), c)?;
                }
                p.default
                    .as_ref()
                    .map_or(Ok(()), |d| check(&format!("{}: default", p.path.display()), d))
            }
        }
    }

    /// Every merged tensor must have coefficients.
    pub(crate) fn validate_plan(&self, plan: &MergePlan) -> Result<()> {
        for t in plan.tensors.iter().filter(|t| t.is_merged()) {
            self.for_tensor(&t.name)?;
        }
        Ok(())
    }
}

fn missing(p: &PerTensorCoefficients, tensor: &str) -> MergeError {
    MergeError::arg(format!(
        "{}: no coefficients for tensor '{tensor}' (add it, or a \"default\" entry)",
        p.path.display()
    ))
}
