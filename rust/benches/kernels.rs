//! Micro-benchmarks of the engine's kernels, in bytes of input per second: dtype conversion, the NaN/Inf
//! scan, the radix-select histograms, DARE's counter-based mask, and whole streaming merges of a small
//! generated model set (task arithmetic, TIES) through the public API.
//!
//!     cargo bench -p merge-rs --bench kernels

#![allow(missing_docs, clippy::expect_used)] // criterion_main! generates undocumented items; setup failures should abort

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use merge_rs::dtype::{FloatType, count_nonfinite};
use merge_rs::merge::{MergeRequest, merge};
use merge_rs::methods::MethodSpec;
use merge_rs::monitor::Monitor;
use merge_rs::rng;
use merge_rs::select::Histogram;
use merge_rs::synthetic::{SyntheticSpec, write_model_set};

const N: usize = 1 << 20;

fn values() -> Vec<f32> {
    let s = rng::stream(1, "bench", 0);
    (0..N as u64)
        .map(|i| (rng::uniform(s, i) as f32 - 0.5) * 1e-3)
        .collect()
}

fn conversions(c: &mut Criterion) {
    let v = values();
    let mut g = c.benchmark_group("dtype");
    for ty in [FloatType::BF16, FloatType::F16] {
        let mut raw = Vec::new();
        ty.encode(&v, &mut raw);
        let mut out = vec![0.0f32; N];
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(format!("decode {}", ty.name()), |b| {
            b.iter(|| ty.decode(black_box(&raw), &mut out))
        });
        g.throughput(Throughput::Bytes((N * 4) as u64));
        g.bench_function(format!("encode {}", ty.name()), |b| {
            b.iter(|| ty.encode(black_box(&v), &mut raw))
        });
    }
    g.bench_function("nonfinite scan", |b| b.iter(|| count_nonfinite(black_box(&v))));
    g.finish();
}

fn selection(c: &mut Criterion) {
    let v = values();
    let mut g = c.benchmark_group("select");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    let mut h = Histogram::new(1);
    g.bench_function("histogram high bits", |b| b.iter(|| h.add_high(0, black_box(&v))));
    let high = v[N / 2].abs().to_bits() >> 16;
    g.bench_function("histogram low bits", |b| b.iter(|| h.add_low(0, black_box(&v), high)));
    g.bench_function("dare mask", |b| {
        let s = rng::stream(0, "w", 0);
        b.iter(|| (0..N as u64).filter(|&i| rng::uniform(s, i) < 0.5).count())
    });
    g.finish();
}

fn merges(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tensors: Vec<(String, Vec<usize>)> = (0..8).map(|i| (format!("layer{i}.weight"), vec![1024, 512])).collect();
    let spec = SyntheticSpec {
        tensors,
        models: 4,
        dtype: FloatType::F32,
        seed: 0,
        max_shard_size: u64::MAX,
        weight_scale: 0.02,
        task_scale: 0.001,
        base_config: None,
        model_config: None,
        threads: 0,
    };
    let paths = write_model_set(dir.path(), &spec).expect("model set");
    let input_bytes = (5 * 8 * 1024 * 512 * 4) as u64;
    let mut g = c.benchmark_group("merge");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(input_bytes));
    for method in ["task_arithmetic", "ties"] {
        let params = r#"{"scaling_factor": 0.3, "threshold": 20, "merge_func": "sum"}"#;
        let spec: MethodSpec = serde_json::from_str(params).expect("spec");
        let request = MergeRequest {
            method: spec.build(method).expect("method"),
            base: Some(paths[0].clone()),
            models: paths[1..].to_vec(),
            out: dir.path().join(format!("out-{method}")),
            dtype: None,
            max_shard_size: u64::MAX,
            threads: 0,
            overwrite: true,
            allow_nonfinite: false,
            chunk: 0,
        };
        g.bench_function(method, |b| {
            b.iter(|| merge(&request, &Monitor::default()).expect("merge"))
        });
    }
    g.finish();
}

criterion_group!(benches, conversions, selection, merges);
criterion_main!(benches);
