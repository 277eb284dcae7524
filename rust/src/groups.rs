//! Per-tensor parameters. A request may merge some tensors with other parameters of its method (a
//! recipe's overrides by name pattern, or values interpolated over the layer index): each group of
//! tensors runs as its own pass, over the plan with every other tensor marked as merged elsewhere, into
//! the one output. A method that looks across tensors (global TIES) does so within its group.

use std::collections::HashMap;

use crate::error::{MergeError, Result};
use crate::method::Method;
use crate::plan::{MergePlan, TensorKind};

/// Tensors merged with their own parameters.
#[derive(Debug)]
pub struct TensorGroup {
    /// Output tensor names.
    pub tensors: Vec<String>,
    /// The request's method with this group's parameters.
    pub method: Method,
}

/// The passes of a request: `method` over the tensors no group names (when any, or when there are no
/// groups), then each group's method over its tensors.
pub(crate) fn passes<'m>(
    plan: &MergePlan,
    method: &'m Method,
    groups: &'m [TensorGroup],
) -> Result<Vec<(&'m Method, MergePlan)>> {
    let index: HashMap<&str, usize> = plan
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut owner = vec![0usize; plan.tensors.len()];
    for (g, group) in groups.iter().enumerate() {
        if group.method.name() != method.name() {
            return Err(MergeError::arg(format!(
                "a tensor group uses {}, not the request's method {}",
                group.method.name(),
                method.name()
            )));
        }
        for name in &group.tensors {
            let &t = index.get(name.as_str()).ok_or_else(|| {
                MergeError::arg(format!("a tensor group names '{name}', which the models do not have"))
            })?;
            if !plan.tensors[t].is_merged() {
                return Err(MergeError::arg(format!(
                    "a tensor group names '{name}', which is copied, not merged"
                )));
            }
            if owner[t] != 0 {
                return Err(MergeError::arg(format!("'{name}' is named by two tensor groups")));
            }
            owner[t] = g + 1;
        }
    }
    let mut passes = Vec::with_capacity(groups.len() + 1);
    let rest = (0..plan.tensors.len()).any(|t| owner[t] == 0 && plan.tensors[t].is_merged());
    if rest || groups.is_empty() {
        passes.push((method, restricted(plan, &owner, 0)));
    }
    for (g, group) in groups.iter().enumerate() {
        if owner.contains(&(g + 1)) {
            passes.push((&group.method, restricted(plan, &owner, g + 1)));
        }
    }
    Ok(passes)
}

/// `plan` with the merged tensors that `owner` does not give to `group` marked as merged elsewhere.
fn restricted(plan: &MergePlan, owner: &[usize], group: usize) -> MergePlan {
    let tensors = plan
        .tensors
        .iter()
        .zip(owner)
        .map(|(t, &o)| {
            let mut t = t.clone();
            if let TensorKind::Merge { out, .. } = &t.kind
                && o != group
            {
                t.kind = TensorKind::Elsewhere { out: *out };
            }
            t
        })
        .collect();
    MergePlan { tensors }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{Map, Value, json};

    use super::*;
    use crate::merge::{MergeRequest, merge};
    use crate::monitor::Monitor;
    use crate::test_files::synthetic_models;

    fn method(name: &str, params: Value) -> Method {
        let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
        Method::new(name, &params).unwrap_or_else(|e| panic!("{e}"))
    }

    fn stored(out: &Path) -> Vec<(String, Vec<u8>)> {
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap_or_else(|e| panic!("{e}"));
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let mut all: Vec<_> = file
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.data().to_vec()))
            .collect();
        all.sort();
        all
    }

    fn run(paths: &[PathBuf], out: &Path, main: Method, groups: Vec<TensorGroup>) -> Result<()> {
        let request = MergeRequest {
            base: Some(paths[0].clone()),
            groups,
            ..MergeRequest::new(main, paths[1..].to_vec(), out.to_path_buf())
        };
        merge(&request, &Monitor::default()).map(|_| ())
    }

    #[test]
    fn a_group_gets_exactly_what_a_whole_merge_with_its_parameters_gives() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| MergeError::Internal(e.to_string()))?;
        let tensors = [
            ("a.weight", vec![12, 9]),
            ("a.bias", vec![12]),
            ("b.weight", vec![7, 16]),
        ];
        let paths = synthetic_models(dir.path(), &tensors, 2, 5);
        for (name, low, high) in [
            (
                "task_arithmetic",
                json!({"scaling_factor": 0.3}),
                json!({"scaling_factor": 0.9}),
            ),
            (
                "breadcrumbs",
                json!({"weights": [1, 1], "density": 0.5}),
                json!({"weights": [1, 2], "density": [0.9, 0.4]}),
            ),
        ] {
            let out = |tag: &str| dir.path().join(format!("{name}-{tag}"));
            run(&paths, &out("low"), method(name, low.clone()), vec![])?;
            run(&paths, &out("high"), method(name, high.clone()), vec![])?;
            let group = TensorGroup {
                tensors: vec!["a.weight".into()],
                method: method(name, high),
            };
            run(&paths, &out("mixed"), method(name, low), vec![group])?;
            let (low, high, mixed) = (stored(&out("low")), stored(&out("high")), stored(&out("mixed")));
            for ((l, h), m) in low.iter().zip(&high).zip(&mixed) {
                let want = if m.0 == "a.weight" { h } else { l };
                assert_eq!(m, want, "{name}: {}", m.0);
            }
            assert_ne!(low, high);
        }
        Ok(())
    }

    #[test]
    fn groups_naming_unknown_or_shared_tensors_or_another_method_are_errors() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| MergeError::Internal(e.to_string()))?;
        let base = dir.path().join("base.safetensors");
        let model = dir.path().join("a.safetensors");
        crate::test_files::write_checkpoint(&base, &[("w", &[1.0, 2.0])]);
        crate::test_files::write_checkpoint(&model, &[("w", &[1.5, 2.5])]);
        let paths = vec![base, model];
        let ta = || method("task_arithmetic", json!({}));
        let group = |names: &[&str], m: Method| TensorGroup {
            tensors: names.iter().map(|n| n.to_string()).collect(),
            method: m,
        };
        let cases = [
            (
                vec![group(&["nope"], ta())],
                "names 'nope', which the models do not have",
            ),
            (
                vec![group(&["w"], ta()), group(&["w"], ta())],
                "'w' is named by two tensor groups",
            ),
            (
                vec![group(&["w"], method("magmax", json!({})))],
                "uses magmax, not the request's method",
            ),
        ];
        for (i, (groups, message)) in cases.into_iter().enumerate() {
            let out = dir.path().join(format!("out{i}"));
            let err = run(&paths, &out, ta(), groups)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(message), "{err}");
            assert!(!out.exists());
        }
        Ok(())
    }
}
