//! The one-pass global TIES against the definition, element by element, bit for bit: when the sample
//! predicts the thresholds' windows, when it misleads (more selection passes and the merge again), with
//! cancelling entries that wait for the majority sign, and for every aggregation.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::super::aggregate::{aggregate, sign};
use super::super::select::threshold_rank;
use crate::merge::{MergeRequest, merge};
use crate::method::Method;
use crate::monitor::Monitor;
use crate::rng;
use crate::test_files::write_checkpoint;

/// Elements per model: 4 × 300 000 values are more than a selection makes in memory.
const N: usize = 300_000;
/// Chunks of 4 096: 74 of them, enough to sample.
const CHUNK: usize = 4096;
const MODELS: usize = 4;

/// θ₀ and θᵢ = θ₀ + τᵢ written under `dir`: the paths, base first, and the task vectors as merge-rs will see
/// them (θᵢ − θ₀, rounded).
type Set = ((PathBuf, Vec<PathBuf>), Vec<Vec<f32>>);

fn write_set(dir: &Path, base: &[f32], taus: &[Vec<f32>]) -> Set {
    let base_path = dir.join("base.safetensors");
    write_checkpoint(&base_path, &[("w", base)]);
    let models = taus
        .iter()
        .enumerate()
        .map(|(i, tau)| {
            let theta: Vec<f32> = base.iter().zip(tau).map(|(b, t)| b + t).collect();
            let path = dir.join(format!("m{i}.safetensors"));
            write_checkpoint(&path, &[("w", &theta)]);
            path
        })
        .collect();
    let seen = taus
        .iter()
        .map(|tau| base.iter().zip(tau).map(|(b, t)| (b + t) - b).collect())
        .collect();
    ((base_path, models), seen)
}

/// TIES by its definition over whole vectors (FusionBench's order of operations).
fn reference(base: &[f32], taus: &[Vec<f32>], threshold: f64, func: &str, lambda: f32) -> Vec<f32> {
    let kth: Vec<f32> = taus
        .iter()
        .map(|tau| {
            let mut sorted: Vec<f32> = tau.iter().map(|t| t.abs()).collect();
            sorted.sort_by(f32::total_cmp);
            let k = threshold_rank(tau.len() as u64, threshold);
            if k == 0 { 0.0 } else { sorted[k as usize - 1] }
        })
        .collect();
    let columns: Vec<Vec<f32>> = (0..base.len())
        .map(|j| {
            taus.iter()
                .zip(&kth)
                .map(|(tau, &k)| if tau[j].abs() >= k { tau[j] } else { 0.0 })
                .collect()
        })
        .collect();
    let elected: Vec<f32> = columns
        .iter()
        .map(|c| sign(c.iter().fold(0.0, |a, &t| a + t)))
        .collect();
    let majority = sign(elected.iter().sum());
    let func = match func {
        "mean" => super::super::MergeFunc::Mean,
        "max" => super::super::MergeFunc::Max,
        _ => super::super::MergeFunc::Sum,
    };
    columns
        .iter()
        .zip(&elected)
        .zip(base)
        .map(|((c, &s), &b)| b + lambda * aggregate(c, if s == 0.0 { majority } else { s }, func))
        .collect()
}

/// Merge with merge-rs; the output and the last phase the monitor saw.
fn run_ties(dir: &Path, set: &(PathBuf, Vec<PathBuf>), params: Value, name: &str, chunk: usize) -> (Vec<f32>, String) {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let method = Method::new("ties", &params).unwrap_or_else(|e| panic!("{e}"));
    let request = MergeRequest {
        base: Some(set.0.clone()),
        threads: 2,
        chunk,
        ..MergeRequest::new(method, set.1.clone(), dir.join(name))
    };
    let monitor = Monitor::default();
    super::ALWAYS.with(|always| always.set(true));
    merge(&request, &monitor).unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(request.out.join("model.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let data = file.tensor("w").unwrap_or_else(|e| panic!("{e}")).data().to_vec();
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(&request.out)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [".merge-rs-output", "model.safetensors"],
        "no scratch file is left in the output"
    );
    (values, monitor.progress().phase)
}

fn assert_bits_equal(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    let wrong = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();

    assert_eq!(wrong, 0, "{what}: {wrong} elements differ from the definition");
}

/// Heavy-tailed task vectors whose scale changes along the tensor, on a coarse grid every third model (many
/// ties), and every tenth element where models 0 and 1 cancel exactly and the others are 0 (sign 0).
fn varied_taus(seed: u64, models: usize, n: usize) -> Vec<Vec<f32>> {
    let mut taus: Vec<Vec<f32>> = (0..models)
        .map(|i| {
            let s = rng::stream(seed, "fused", i as u64);
            (0..n)
                .map(|j| {
                    let u = rng::uniform(s, j as u64) as f32 - 0.5;
                    let scale = 0.01 * (1.0 + (j / 20_000) as f32) * (1.0 + i as f32);
                    let t = u * u * u * scale;
                    if i == 2 { (t * 4096.0).round() / 4096.0 } else { t }
                })
                .collect()
        })
        .collect();
    for j in (0..n).step_by(10) {
        taus[1][j] = -taus[0][j];
        for tau in taus.iter_mut().skip(2) {
            tau[j] = 0.0;
        }
    }
    taus
}

#[test]
fn one_pass_equals_the_definition_for_every_aggregation() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base: Vec<f32> = (0..N).map(|j| ((j % 97) as f32 - 48.0) / 64.0).collect();
    let (set, taus) = write_set(dir.path(), &base, &varied_taus(3, MODELS, N));
    for (func, threshold) in [("sum", 20.0), ("mean", 20.0), ("max", 20.0), ("sum", 60.0)] {
        let params = json!({"threshold": threshold, "merge_func": func, "scaling_factor": 0.3});
        let (got, phase) = run_ties(dir.path(), &set, params, &format!("{func}{threshold}"), CHUNK);
        assert_eq!(
            phase, "trim + merge",
            "{func}: the sampled windows held, so one pass merged"
        );
        assert_bits_equal(&got, &reference(&base, &taus, threshold, func, 0.3), func);
    }
}

#[test]
fn a_misleading_sample_ends_in_a_second_pass_and_the_same_result() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let base = vec![0.25f32; N];
    // The sample reads the first 2 048 elements of every chunk; there the entries are 100 times larger, so
    // the sample puts the threshold far above the true one.
    let taus: Vec<Vec<f32>> = (0..MODELS)
        .map(|i| {
            let s = rng::stream(9, "misleading", i as u64);
            (0..N)
                .map(|j| {
                    let u = rng::uniform(s, j as u64) as f32 - 0.5;
                    if j % CHUNK < 2048 { u } else { u / 100.0 }
                })
                .collect()
        })
        .collect();
    let (set, taus) = write_set(dir.path(), &base, &taus);
    let (got, phase) = run_ties(dir.path(), &set, json!({"threshold": 20.0}), "out", CHUNK);
    assert_eq!(
        phase, "merge",
        "the windows missed: the selection's own passes, then the merge again"
    );
    assert_bits_equal(&got, &reference(&base, &taus, 20.0, "sum", 0.3), "misleading sample");
}

#[test]
fn more_than_eight_tasks_are_settled_exactly_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let n = 120_000;
    let base: Vec<f32> = (0..n).map(|j| ((j % 13) as f32 - 6.0) / 8.0).collect();
    let (set, taus) = write_set(dir.path(), &base, &varied_taus(5, 11, n));
    let (got, phase) = run_ties(dir.path(), &set, json!({"threshold": 20.0}), "out", 1024);
    assert_eq!(phase, "trim + merge");
    assert_bits_equal(&got, &reference(&base, &taus, 20.0, "sum", 0.3), "eleven tasks");
}
