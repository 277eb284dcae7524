//! The golden vectors (FusionBench semantics) reproduced by the core, read from
//! `tests/data/golden/expected/cases.json`, for many chunk sizes and thread counts: results must not depend
//! on either.

use std::path::{Path, PathBuf};

use merge_rs::{MergeRequest, Method, Monitor, merge};
use safetensors::SafeTensors;
use serde_json::{Map, Value};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/golden")
}

/// Every tensor of a single-file checkpoint as f32 values, in name order.
fn read_all(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tensors: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// (case name, method name, parameters) for every case of `cases.json`.
fn cases() -> Vec<(String, String, Map<String, Value>)> {
    let path = golden().join("expected/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let cases = json["cases"].as_object().cloned().unwrap_or_default();
    cases
        .into_iter()
        .map(|(case, spec)| {
            let mut params = spec.as_object().cloned().unwrap_or_default();
            let method = params.remove("method").and_then(|m| m.as_str().map(String::from));
            (case, method.unwrap_or_default(), params)
        })
        .collect()
}

fn run(case: &str, method: &str, params: &Map<String, Value>, threads: usize, chunk: usize) {
    let g = golden();
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let method = Method::new(method, params).unwrap_or_else(|e| panic!("{case}: {e}"));
    let base = method.def().needs_base.then(|| g.join("inputs/pretrained"));
    let models = ["task_a", "task_b", "task_c", "task_d"]
        .iter()
        .map(|t| g.join("inputs").join(t))
        .collect();
    let request = MergeRequest {
        base,
        threads,
        chunk,
        ..MergeRequest::new(method, models, out_dir.path().join("out"))
    };
    merge(&request, &Monitor::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = read_all(&request.out.join("model.safetensors"));
    let want = read_all(&g.join(format!("expected/{case}.safetensors")));
    assert_eq!(got.len(), want.len(), "{case}: tensor count");
    for ((gn, gv), (wn, wv)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        for (a, b) in gv.iter().zip(wv) {
            assert!(
                (a - b).abs() <= 1e-9 + 1e-6 * b.abs(),
                "{case} threads={threads} chunk={chunk} {gn}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn golden_cases_for_any_chunk_and_thread_count() {
    let cases = cases();
    assert!(cases.len() >= 7, "cases.json lists the golden cases");
    for (case, method, params) in &cases {
        for (threads, chunk) in [(1, 0), (2, 1), (3, 7), (2, 1000)] {
            run(case, method, params, threads, chunk);
        }
    }
}
