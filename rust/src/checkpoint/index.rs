//! Where a model directory keeps its weights: `model.safetensors`, else an index and its shards, with every
//! file checked (regular files only, index entries confined to the directory, index size capped).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{INDEX_FILE, SINGLE_FILE, Tensor};
use crate::error::{MergeError, Result};

/// The largest index file read (an index of a million tensors with CLIP-like names is about 89 MB).
const MAX_INDEX_BYTES: u64 = 128 << 20;

/// `path` must be a regular file (not a FIFO, device or directory, which would block or fail obscurely);
/// returns its size.
pub(crate) fn regular_file(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| MergeError::io(path, e))?;
    if !meta.is_file() {
        return Err(MergeError::invalid(path, "not a regular file"));
    }
    Ok(meta.len())
}

/// An index entry must name a file inside the model's directory: relative, without `..`, and not a link
/// that leads out of it. The lexical checks come first, so that nothing outside is touched.
fn confined(dir: &Path, index: &Path, tensor: &str, file: &str) -> Result<()> {
    let entry = Path::new(file);
    let plain = !file.is_empty() && entry.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    let outside = || {
        MergeError::invalid(
            index,
            format!("tensor '{tensor}' is mapped to '{file}', which is not a file inside the model directory"),
        )
    };
    if !plain {
        return Err(outside());
    }
    let (root, target) = (dir.canonicalize(), dir.join(entry).canonicalize());
    match (root, target) {
        (Ok(root), Ok(target)) if !target.starts_with(&root) => Err(outside()),
        _ => Ok(()),
    }
}

#[derive(serde::Deserialize)]
struct IndexJson {
    weight_map: HashMap<String, String>,
}

/// Find the weights in a Hugging Face model directory, with transformers' precedence (`model.safetensors`
/// before an index). Returns the directory, the shard paths and, for sharded checkpoints, which shard each
/// tensor must come from.
#[allow(clippy::type_complexity)]
pub(super) fn locate_in_dir(dir: &Path) -> Result<(Option<PathBuf>, Vec<PathBuf>, Option<HashMap<String, usize>>)> {
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        regular_file(&single)?;
        return Ok((Some(dir.to_path_buf()), vec![single], None));
    }
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let size = regular_file(&index)?;
        if size > MAX_INDEX_BYTES {
            return Err(MergeError::invalid(
                &index,
                format!("the index is {size} bytes; merge-rs reads indexes of at most {MAX_INDEX_BYTES}"),
            ));
        }
        let text = std::fs::read_to_string(&index).map_err(|e| MergeError::io(&index, e))?;
        let parsed: IndexJson =
            serde_json::from_str(&text).map_err(|e| MergeError::invalid(&index, format!("corrupt index JSON: {e}")))?;
        for (tensor, file) in &parsed.weight_map {
            confined(dir, &index, tensor, file)?;
        }
        let mut files: Vec<String> = parsed.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let position: HashMap<&str, usize> = files.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect();
        let wanted = parsed
            .weight_map
            .iter()
            .map(|(t, f)| (t.clone(), position[f.as_str()]))
            .collect();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for shard in &paths {
            regular_file(shard)?;
        }
        return Ok((Some(dir.to_path_buf()), paths, Some(wanted)));
    }
    Err(MergeError::invalid(
        dir,
        format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
    ))
}

pub(super) fn check_index_complete(path: &Path, wanted: &HashMap<String, usize>, found: &[Tensor]) -> Result<()> {
    if found.len() == wanted.len() {
        return Ok(());
    }
    let present: std::collections::HashSet<&str> = found.iter().map(|t| t.stored.name.as_str()).collect();
    let mut missing: Vec<&String> = wanted.keys().filter(|k| !present.contains(k.as_str())).collect();
    missing.sort();
    Err(MergeError::invalid(
        &path.join(INDEX_FILE),
        format!(
            "the index lists tensor '{}' but its shard does not hold it",
            missing.first().map_or("?", |s| s.as_str())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::test_files::{checkpoint_bytes, put};

    fn error(path: &Path) -> String {
        Checkpoint::open(path).err().map(|e| e.to_string()).unwrap_or_default()
    }

    fn sharded(dir: &Path, entry: &str) {
        put(
            &dir.join(INDEX_FILE),
            format!(r#"{{"weight_map":{{"x":"{entry}"}}}}"#).as_bytes(),
        );
    }

    #[test]
    fn index_entries_stay_inside_the_model_directory() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (model, other) = (root.path().join("model"), root.path().join("other"));
        for d in [&model, &other] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("{e}"));
        }
        put(&other.join("w.safetensors"), &checkpoint_bytes(&[("x", &[1.0])]));
        std::os::unix::fs::symlink(other.join("w.safetensors"), model.join("link.safetensors"))
            .unwrap_or_else(|e| panic!("{e}"));
        let outside = other.join("w.safetensors").display().to_string();
        for entry in ["../other/w.safetensors", outside.as_str(), "link.safetensors", ".", ""] {
            sharded(&model, entry);
            let err = error(&model);
            assert!(err.contains("not a file inside the model directory"), "{entry}: {err}");
        }
        // A missing file outside is reported the same way: nothing reveals whether it exists.
        sharded(&model, "../other/nothing.safetensors");
        assert!(error(&model).contains("not a file inside the model directory"));
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("fifo.safetensors");
        let path = std::ffi::CString::new(fifo.display().to_string()).unwrap_or_default();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        assert!(error(&fifo).contains("not a regular file"));
        sharded(dir.path(), "fifo.safetensors");
        assert!(error(dir.path()).contains("not a regular file"));
    }

    #[test]
    fn model_safetensors_wins_over_an_index_as_in_transformers() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        put(&dir.path().join(SINGLE_FILE), &checkpoint_bytes(&[("single", &[1.0])]));
        put(&dir.path().join("a.safetensors"), &checkpoint_bytes(&[("x", &[1.0])]));
        sharded(dir.path(), "a.safetensors");
        let ckpt = Checkpoint::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(ckpt.get("single").is_some() && ckpt.get("x").is_none());
    }

    #[test]
    fn huge_indexes_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let index = std::fs::File::create(dir.path().join(INDEX_FILE)).unwrap_or_else(|e| panic!("{e}"));
        index.set_len(MAX_INDEX_BYTES + 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(error(dir.path()).contains("merge-rs reads indexes of at most"));
    }

    #[test]
    fn huge_headers_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = (0..200_001).map(|i| format!("t{i}")).collect();
        let tensors: Vec<(&str, &[f32])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
        let path = dir.path().join("big.safetensors");
        put(&path, &checkpoint_bytes(&tensors));
        assert!(error(&path).contains("declares 200001 tensors"), "{}", error(&path));
    }
}
