//! Every fuzz seed and every input that once crashed a fuzz target (`rust/fuzz/seeds`, `rust/fuzz/regressions`)
//! replayed through the public API, without sanitizers, as ordinary tests: each must fail cleanly or succeed.

use std::path::{Path, PathBuf};

use merge_rs::{MergeRequest, Method, Monitor, inspect, merge};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = ["seeds", "regressions"]
        .iter()
        .filter_map(|d| std::fs::read_dir(fuzz.join(d).join(target)).ok())
        .flat_map(|d| d.filter_map(|e| e.ok().map(|e| e.path())))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn open_checkpoint_inputs_fail_cleanly() {
    let cases = inputs("open_checkpoint");
    assert!(!cases.is_empty(), "the seeds are committed");
    for case in cases {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = read(&case);
        match data.split_first() {
            Some((0, rest)) => {
                let cut = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let _ = std::fs::write(dir.path().join("model.safetensors.index.json"), &rest[..cut]);
                let _ = std::fs::write(
                    dir.path().join("a.safetensors"),
                    rest.get(cut + 1..).unwrap_or_default(),
                );
            }
            _ => {
                let _ = std::fs::write(dir.path().join("model.safetensors"), &data);
            }
        }
        let _ = inspect(dir.path());
    }
}

#[test]
fn merge_mutated_inputs_fail_cleanly() {
    let cases = inputs("merge_mutated");
    assert!(!cases.is_empty(), "the seeds are committed");
    for case in cases {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let model = dir.path().join("mutated");
        std::fs::create_dir(&model).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(model.join("model.safetensors"), read(&case)).unwrap_or_else(|e| panic!("{e}"));
        for method in ["task_arithmetic", "ties"] {
            let method = Method::new(method, &serde_json::Map::new()).unwrap_or_else(|e| panic!("{e}"));
            let request = MergeRequest {
                base: Some(model.clone()),
                threads: 1,
                overwrite: true,
                chunk: 5,
                ..MergeRequest::new(method, vec![model.clone(), model.clone()], dir.path().join("out"))
            };
            let _ = merge(&request, &Monitor::default());
        }
    }
}
