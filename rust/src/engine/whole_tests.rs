//! The whole-tensor pass through real merges: results independent of threads and memory budget, and
//! errors that name the tensor and leave no output.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::MergeError;
use crate::merge::{MergeRequest, merge};
use crate::method::Method;
use crate::monitor::Monitor;
use crate::test_files::synthetic_models;

/// A pretrained model and `models` fine-tuned ones with matrices, vectors and a 4-D tensor.
fn model_set(dir: &Path, models: usize) -> Vec<PathBuf> {
    let tensors = [
        ("a.weight", vec![12, 9]),
        ("a.bias", vec![12]),
        ("b.weight", vec![7, 16]),
        ("conv", vec![2, 3, 2, 2]),
    ];
    synthetic_models(dir, &tensors, models, 3)
}

fn method(name: &str, params: Value) -> Method {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    Method::new(name, &params).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Merge with `threads` and `budget`; the output's bytes.
fn run(paths: &[PathBuf], name: &str, params: &Value, threads: usize, budget: u64, out: &Path) -> Vec<u8> {
    let (base, models) = (paths[0].clone(), paths[1..].to_vec());
    let request = MergeRequest {
        base: Some(base),
        threads,
        memory_budget: budget,
        ..MergeRequest::new(method(name, params.clone()), models, out.to_path_buf())
    };
    merge(&request, &Monitor::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    std::fs::read(out.join("model.safetensors")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn whole_tensor_results_do_not_depend_on_threads_or_budget() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = model_set(dir.path(), 3);
    let cases = [
        ("iso_c", json!({})),
        ("iso_cts", json!({"common_space_fraction": 0.5})),
        ("tsv_m", json!({"alpha": [0.5, 1.0, 1.5]})),
        (
            "breadcrumbs_ties",
            json!({"weights": [1.0, 0.5, 2.0], "density": 0.5, "gamma": 0.1}),
        ),
        (
            "della",
            json!({"weights": [1.0, 1.0, 1.0], "density": 0.5, "epsilon": 0.2, "seed": 4}),
        ),
        ("model_stock", json!({"filter_wise": true})),
        ("multislerp", json!({"weights": [1.0, 2.0, 3.0]})),
    ];
    for (i, (name, params)) in cases.iter().enumerate() {
        let one = run(&paths, name, params, 1, 0, &dir.path().join(format!("one-{i}")));
        let many = run(&paths, name, params, 3, 1, &dir.path().join(format!("many-{i}")));
        assert!(
            one == many,
            "{name}: 1 thread and 3 threads with a 1-byte budget differ"
        );
    }
}

#[test]
fn ranks_too_small_to_split_fail_naming_the_tensor_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = model_set(dir.path(), 8);
    let out = dir.path().join("out");
    let request = MergeRequest {
        base: Some(paths[0].clone()),
        ..MergeRequest::new(
            method("iso_cts", json!({"common_space_fraction": 0.05})),
            paths[1..].to_vec(),
            out.clone(),
        )
    };
    let err = merge(&request, &Monitor::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("iso_cts: cannot merge tensor 'b.weight'"), "{err}");
    assert!(!out.exists());
}

#[test]
fn slerp_takes_exactly_two_models() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let paths = model_set(dir.path(), 3);
    let request = MergeRequest::new(
        method("slerp", json!({"t": 0.3})),
        paths[1..].to_vec(),
        dir.path().join("o"),
    );
    let err = merge(&request, &Monitor::default()).err();
    assert!(
        matches!(&err, Some(MergeError::InvalidArgument(m)) if m.contains("at most 2")),
        "{err:?}"
    );
}
