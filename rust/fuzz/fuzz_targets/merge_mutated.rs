//! Merging a mutated checkpoint with a valid one: the fuzzer's bytes are the second fine-tuned model, the
//! first model and the pretrained one are valid (written once). Task arithmetic and TIES must fail cleanly
//! or succeed, never crash, and leave no temporary directory behind.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merge_rs::{FloatType, MergeRequest, Method, Monitor, SyntheticSpec, merge, write_model_set};

/// The valid pretrained and fine-tuned model (the seed corpus holds mutations of the fine-tuned one).
fn valid_models() -> &'static (PathBuf, PathBuf) {
    static MODELS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("merge-rs-fuzz-valid-{}", std::process::id()));
        let spec = SyntheticSpec {
            tensors: vec![("w".into(), vec![4, 3]), ("b".into(), vec![3])],
            models: 1,
            dtype: FloatType::F32,
            seed: 0,
            max_shard_size: u64::MAX,
            weight_scale: 1.0,
            task_scale: 0.1,
            base_config: None,
            model_config: None,
            threads: 1,
        };
        let paths = write_model_set(&dir, &spec).unwrap_or_default();
        (paths[0].clone(), paths[1].clone())
    })
}

fn run(method: &str, base: &Path, models: Vec<PathBuf>, out: PathBuf) {
    let Ok(method) = Method::new(method, &serde_json::Map::new()) else {
        return;
    };
    let request = MergeRequest {
        base: Some(base.to_path_buf()),
        threads: 1,
        overwrite: true,
        chunk: 5,
        ..MergeRequest::new(method, models, out)
    };
    let _ = merge(&request, &Monitor::default());
}

fuzz_target!(|data: &[u8]| {
    let (base, model) = valid_models();
    let dir = std::env::temp_dir().join(format!("merge-rs-fuzz-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(dir.join("mutated")).is_err() {
        return;
    }
    if std::fs::write(dir.join("mutated/model.safetensors"), data).is_err() {
        return;
    }
    for method in ["task_arithmetic", "ties"] {
        run(method, base, vec![model.clone(), dir.join("mutated")], dir.join("out"));
    }
    let leftovers = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".out"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a temporary output was left behind");
});
