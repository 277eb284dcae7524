//! The golden vectors (FusionBench semantics) reproduced by the core for many chunk sizes and thread counts:
//! results must not depend on either.

use std::path::{Path, PathBuf};

use merge_rs::checkpoint::Checkpoint;
use merge_rs::dtype::FloatType;
use merge_rs::merge::{MergeRequest, merge};
use merge_rs::methods::MethodSpec;
use merge_rs::monitor::Monitor;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/golden")
}

fn read_all(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = Checkpoint::open(path).unwrap_or_else(|e| panic!("{e}"));
    ckpt.tensors
        .iter()
        .map(|t| {
            let mut values = vec![0.0; t.stored.numel()];
            ckpt.read_f32(t, FloatType::F32, 0, &mut values, &mut Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
            (t.stored.name.clone(), values)
        })
        .collect()
}

fn run(case: &str, method: &str, params: &str, threads: usize, chunk: usize) {
    let g = golden();
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec: MethodSpec = serde_json::from_str(params).unwrap_or_else(|e| panic!("{e}"));
    let request = MergeRequest {
        method: spec.build(method).unwrap_or_else(|e| panic!("{e}")),
        base: Some(g.join("inputs/pretrained")),
        models: ["task_a", "task_b", "task_c", "task_d"]
            .iter()
            .map(|t| g.join("inputs").join(t))
            .collect(),
        out: out_dir.path().join("out"),
        dtype: None,
        max_shard_size: u64::MAX,
        threads,
        overwrite: false,
        allow_nonfinite: false,
        chunk,
    };
    merge(&request, &Monitor::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = read_all(&request.out);
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
    let cases = [
        ("task_arithmetic", "task_arithmetic", r#"{"scaling_factor": 0.3}"#),
        (
            "task_wise_coefficients",
            "task_arithmetic",
            r#"{"coefficients": [0.2, 0.3, 0.4, 0.5]}"#,
        ),
        ("simple_average", "simple_average", "{}"),
        (
            "weighted_average",
            "weighted_average",
            r#"{"weights": [0.1, 0.2, 0.3, 0.4], "normalize": true}"#,
        ),
        (
            "ties_sum",
            "ties",
            r#"{"scaling_factor": 0.3, "threshold": 20, "merge_func": "sum"}"#,
        ),
        (
            "ties_mean",
            "ties",
            r#"{"scaling_factor": 0.3, "threshold": 20, "merge_func": "mean"}"#,
        ),
        (
            "ties_max",
            "ties",
            r#"{"scaling_factor": 0.3, "threshold": 20, "merge_func": "max"}"#,
        ),
    ];
    for (case, method, params) in cases {
        for (threads, chunk) in [(1, 0), (2, 1), (3, 7), (2, 1000)] {
            run(case, method, params, threads, chunk);
        }
    }
}
