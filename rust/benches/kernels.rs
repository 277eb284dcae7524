//! Benchmarks through the public API, in bytes of input per second: dtype conversion, and whole streaming
//! merges of a small generated model set with the elementwise methods and TIES (whose time is mostly its
//! radix-select passes).
//!
//!     cargo bench -p merge-rs --bench kernels

#![allow(missing_docs, clippy::expect_used)] // criterion_main! generates undocumented items; setup failures should abort

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use merge_rs::{FloatType, MergeRequest, Method, Monitor, SyntheticSpec, merge, write_model_set};

const N: usize = 1 << 20;

fn values() -> Vec<f32> {
    (0..N).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-6).collect()
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
    for method in ["simple_average", "task_arithmetic", "dare", "ties"] {
        let method = Method::new(method, &serde_json::Map::new()).expect("method");
        let name = method.name();
        let request = MergeRequest {
            base: method.def().needs_base.then(|| paths[0].clone()),
            overwrite: true,
            ..MergeRequest::new(method, paths[1..].to_vec(), dir.path().join(format!("out-{name}")))
        };
        g.bench_function(name, |b| {
            b.iter(|| merge(&request, &Monitor::default()).expect("merge"))
        });
    }
    g.finish();
}

criterion_group!(benches, conversions, merges);
criterion_main!(benches);
