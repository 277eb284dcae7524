//! Building a [`Method`] from a name and a JSON object of parameters (what the Python layer sends). The
//! defaults live with the method registry in Python; here every parameter a method uses must be given.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Coefficients, DareOptions, FisherOptions, MergeFunc, Method, PerTensorCoefficients, TiesOptions, Trim};
use crate::error::{MergeError, Result};

/// Parameters of any method; each method reads the ones it uses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSpec {
    /// λ.
    pub scaling_factor: Option<f32>,
    /// Per-task coefficients.
    pub coefficients: Option<Vec<f32>>,
    /// Per-tensor coefficients file.
    pub coefficients_file: Option<PathBuf>,
    /// Weighted-average weights.
    pub weights: Option<Vec<f64>>,
    /// Normalise the weights.
    pub normalize: Option<bool>,
    /// TIES threshold (percent kept).
    pub threshold: Option<f64>,
    /// TIES aggregation.
    pub merge_func: Option<String>,
    /// TIES trim scope.
    pub trim: Option<String>,
    /// DARE drop rate.
    pub drop_rate: Option<f64>,
    /// DARE seed.
    pub seed: Option<u64>,
    /// DARE rescaling.
    pub rescale: Option<bool>,
    /// Fisher merging: one diagonal-Fisher checkpoint per model.
    pub fisher: Option<Vec<PathBuf>>,
    /// Fisher merging: ε added to every Fisher value.
    pub epsilon: Option<f32>,
}

fn need<T: Clone>(method: &str, name: &str, value: &Option<T>) -> Result<T> {
    value
        .clone()
        .ok_or_else(|| MergeError::arg(format!("{method}: missing parameter '{name}'")))
}

impl MethodSpec {
    /// The method `name` with these parameters.
    pub fn build(&self, name: &str) -> Result<Method> {
        Ok(match name {
            "simple_average" => Method::SimpleAverage,
            "weighted_average" => Method::WeightedAverage {
                weights: need(name, "weights", &self.weights)?,
                normalize: self.normalize.unwrap_or(true),
            },
            "task_arithmetic" => Method::TaskArithmetic(self.coefficients(name)?),
            "ties" => Method::Ties(self.ties(name, None)?),
            "dare_ties" => Method::Ties(self.ties(name, Some(self.dare(name)?))?),
            "dare" => Method::Dare {
                scaling_factor: need(name, "scaling_factor", &self.scaling_factor)?,
                dare: self.dare(name)?,
            },
            "fisher_merging" => {
                let fisher = need(name, "fisher", &self.fisher)?;
                let weights = match &self.weights {
                    Some(w) => w.iter().map(|&x| x as f32).collect(),
                    None => vec![1.0; fisher.len()],
                };
                Method::Fisher(FisherOptions {
                    fisher,
                    weights,
                    epsilon: need(name, "epsilon", &self.epsilon)?,
                })
            }
            other => {
                return Err(MergeError::arg(format!(
                    "unknown method '{other}' (known: simple_average, weighted_average, task_arithmetic, ties, dare, dare_ties, fisher_merging)"
                )));
            }
        })
    }

    fn coefficients(&self, name: &str) -> Result<Coefficients> {
        match (&self.coefficients, &self.coefficients_file) {
            (Some(_), Some(_)) => Err(MergeError::arg(format!(
                "{name}: give coefficients or a coefficients file, not both"
            ))),
            (Some(c), None) => Ok(Coefficients::PerTask(c.clone())),
            (None, Some(path)) => Ok(Coefficients::PerTensor(PerTensorCoefficients::load(path)?)),
            (None, None) => Ok(Coefficients::Uniform(need(
                name,
                "scaling_factor",
                &self.scaling_factor,
            )?)),
        }
    }

    fn ties(&self, name: &str, dare: Option<DareOptions>) -> Result<TiesOptions> {
        let func = need(name, "merge_func", &self.merge_func)?;
        let merge_func = MergeFunc::parse(&func)
            .ok_or_else(|| MergeError::arg(format!("{name}: merge_func must be sum, mean or max (got '{func}')")))?;
        let trim = match self.trim.as_deref().unwrap_or("global") {
            "global" => Trim::Global,
            "per-tensor" | "per_tensor" => Trim::PerTensor,
            other => {
                return Err(MergeError::arg(format!(
                    "{name}: trim must be global or per-tensor (got '{other}')"
                )));
            }
        };
        Ok(TiesOptions {
            scaling_factor: need(name, "scaling_factor", &self.scaling_factor)?,
            threshold: need(name, "threshold", &self.threshold)?,
            merge_func,
            trim,
            dare,
        })
    }

    fn dare(&self, name: &str) -> Result<DareOptions> {
        Ok(DareOptions {
            drop_rate: need(name, "drop_rate", &self.drop_rate)?,
            seed: need(name, "seed", &self.seed)?,
            rescale: self.rescale.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> MethodSpec {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn builds_methods() {
        let s = spec(r#"{"scaling_factor": 0.3, "threshold": 20, "merge_func": "mean", "drop_rate": 0.1, "seed": 3}"#);
        assert_eq!(s.build("dare_ties").map(|m| m.name()).ok(), Some("dare_ties"));
        assert_eq!(s.build("ties").map(|m| m.name()).ok(), Some("ties"));
        assert!(matches!(
            s.build("task_arithmetic"),
            Ok(Method::TaskArithmetic(Coefficients::Uniform(_)))
        ));
    }

    #[test]
    fn reports_missing_and_unknown() {
        let err = spec("{}")
            .build("ties")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("merge_func"), "{err}");
        assert!(spec("{}").build("slerp").is_err());
        assert!(serde_json::from_str::<MethodSpec>(r#"{"lambda": 1}"#).is_err());
        let bad = spec(r#"{"scaling_factor": 1, "threshold": 20, "merge_func": "median"}"#);
        assert!(bad.build("ties").is_err());
    }
}
