//! Writing the output: a temporary sibling directory, each shard's header first (all offsets are known from
//! the plan), chunks placed at their offsets with positional writes from any thread, then an index for
//! sharded outputs, config files, and an atomic rename. Dropped before `finish`, it removes everything.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::error::{MergeError, Result};

/// One output tensor's header entry.
#[derive(Debug, Clone)]
pub(crate) struct OutTensor {
    /// Name.
    pub(crate) name: String,
    /// Dtype.
    pub(crate) dtype: safetensors::Dtype,
    /// Shape.
    pub(crate) shape: Vec<usize>,
    /// Size in bytes.
    pub(crate) nbytes: u64,
}

struct OutShard {
    path: PathBuf,
    file: File,
}

/// An output directory being written.
pub(crate) struct Writer {
    target: PathBuf,
    temp: PathBuf,
    shards: Vec<OutShard>,
    /// Per tensor: (shard, absolute offset of its data).
    places: Vec<(usize, u64)>,
    weight_map: Vec<(String, usize)>,
    total_size: u64,
    finished: bool,
}

impl Writer {
    /// Create the temporary output (and any missing parent directories) for `tensors`, split into shards of at most `max_shard_size` bytes
    /// (a larger tensor gets a shard of its own). `target` must not exist unless `overwrite`.
    pub(crate) fn create(
        target: &Path,
        tensors: &[OutTensor],
        metadata: &[(String, String)],
        max_shard_size: u64,
        overwrite: bool,
    ) -> Result<Writer> {
        if target.exists() && !overwrite {
            return Err(MergeError::OutputExists {
                path: target.to_path_buf(),
            });
        }
        if target.is_file() {
            return Err(MergeError::arg(format!(
                "{}: the output must be a directory, and this is a file",
                target.display()
            )));
        }
        let temp = temp_sibling(target)?;
        std::fs::create_dir(&temp).map_err(|e| MergeError::io(&temp, e))?;
        let mut writer = Writer {
            target: target.to_path_buf(),
            temp,
            shards: Vec::new(),
            places: Vec::with_capacity(tensors.len()),
            weight_map: Vec::new(),
            total_size: tensors.iter().map(|t| t.nbytes).sum(),
            finished: false,
        };
        let groups = split_into_shards(tensors, max_shard_size);
        let count = groups.len();
        for (s, group) in groups.iter().enumerate() {
            let name = if count == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", s + 1)
            };
            writer.create_shard(&name, tensors, group, metadata)?;
        }
        Ok(writer)
    }

    fn create_shard(
        &mut self,
        name: &str,
        tensors: &[OutTensor],
        group: &[usize],
        metadata: &[(String, String)],
    ) -> Result<()> {
        let path = self.temp.join(name);
        let (header, offsets) = header_bytes(tensors, group, metadata)?;
        let data_start = header.len() as u64;
        let data_len: u64 = group.iter().map(|&t| tensors[t].nbytes).sum();
        let file = File::create(&path).map_err(|e| MergeError::io(&path, e))?;
        file.set_len(data_start + data_len)
            .map_err(|e| MergeError::io(&path, e))?;
        file.write_all_at(&header, 0).map_err(|e| MergeError::io(&path, e))?;
        let shard = self.shards.len();
        self.places.resize(tensors.len(), (0, 0));
        for (&t, offset) in group.iter().zip(offsets) {
            self.places[t] = (shard, data_start + offset);
            self.weight_map.push((tensors[t].name.clone(), shard));
        }
        self.shards.push(OutShard { path, file });
        Ok(())
    }

    /// Write `bytes` at byte `offset` within tensor `tensor`'s data. Safe to call from many threads.
    pub(crate) fn write_at(&self, tensor: usize, offset: u64, bytes: &[u8]) -> Result<()> {
        let (shard, start) = self.places[tensor];
        let shard = &self.shards[shard];
        shard
            .file
            .write_all_at(bytes, start + offset)
            .map_err(|e| MergeError::io(&shard.path, e))
    }

    /// Put a file into the output (e.g. `config.json`).
    pub(crate) fn add_file(&self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.temp.join(name);
        std::fs::write(&path, contents).map_err(|e| MergeError::io(&path, e))
    }

    /// Write the index for sharded outputs and move the directory into place (no fsync: like torch and
    /// transformers, durability is left to the page cache). Returns the weight files' final paths.
    pub(crate) fn finish(mut self) -> Result<Vec<PathBuf>> {
        if self.shards.len() > 1 {
            let names: Vec<String> = self.shards.iter().map(|s| file_name(&s.path)).collect();
            let weight_map: serde_json::Map<String, serde_json::Value> = self
                .weight_map
                .iter()
                .map(|(t, s)| (t.clone(), names[*s].clone().into()))
                .collect();
            let index = serde_json::json!({"metadata": {"total_size": self.total_size}, "weight_map": weight_map});
            let text = serde_json::to_string_pretty(&index).map_err(|e| MergeError::arg(e.to_string()))?;
            self.add_file(INDEX_FILE, text.as_bytes())?;
        }
        let names: Vec<String> = self.shards.iter().map(|s| file_name(&s.path)).collect();
        self.shards.clear();
        replace_dir(&self.temp, &self.target)?;
        self.finished = true;
        Ok(names.iter().map(|n| self.target.join(n)).collect())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `.<name>.merge-rs-<pid>-<nanos>` beside `target`.
fn temp_sibling(target: &Path) -> Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| MergeError::arg(format!("{}: not a usable output path", target.display())))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| MergeError::io(&parent, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Ok(parent.join(format!(
        ".{}.merge-rs-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Move `temp` to `target`, replacing an existing `target` directory only once `temp` is complete.
fn replace_dir(temp: &Path, target: &Path) -> Result<()> {
    if !target.exists() {
        return std::fs::rename(temp, target).map_err(|e| MergeError::io(target, e));
    }
    let old = PathBuf::from(format!("{}.old", temp.display()));
    std::fs::rename(target, &old).map_err(|e| MergeError::io(target, e))?;
    if let Err(e) = std::fs::rename(temp, target) {
        let _ = std::fs::rename(&old, target);
        return Err(MergeError::io(target, e));
    }
    std::fs::remove_dir_all(&old).map_err(|e| MergeError::io(&old, e))
}

/// Group tensor indices (in order) into shards of at most `max` bytes.
fn split_into_shards(tensors: &[OutTensor], max: u64) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0;
    for (i, t) in tensors.iter().enumerate() {
        let current = groups.last().map_or(0, Vec::len);
        if current > 0 && size + t.nbytes > max {
            groups.push(Vec::new());
            size = 0;
        }
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
        size += t.nbytes;
    }
    groups
}

/// The serialized header (length prefix + JSON padded to 8 bytes) and each tensor's data offset.
fn header_bytes(tensors: &[OutTensor], group: &[usize], metadata: &[(String, String)]) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut map = serde_json::Map::new();
    let meta: serde_json::Map<String, serde_json::Value> =
        metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    map.insert("__metadata__".into(), meta.into());
    let mut offsets = Vec::with_capacity(group.len());
    let mut offset = 0u64;
    for &t in group {
        let t = &tensors[t];
        let dtype = serde_json::to_value(t.dtype).map_err(|e| MergeError::arg(e.to_string()))?;
        map.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + t.nbytes]}),
        );
        offsets.push(offset);
        offset += t.nbytes;
    }
    let mut json = serde_json::to_vec(&map).map_err(|e| MergeError::arg(e.to_string()))?;
    while (json.len() + 8) % 8 != 0 {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    Ok((bytes, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;

    fn t(name: &str, n: usize) -> OutTensor {
        OutTensor {
            name: name.into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![n],
            nbytes: 4 * n as u64,
        }
    }

    #[test]
    fn writes_readable_shards_and_index() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out");
        let tensors = [t("a", 3), t("b", 2), t("c", 4)];
        let w = Writer::create(&out, &tensors, &[("format".into(), "pt".into())], 16, false)
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, tensor) in tensors.iter().enumerate() {
            let vals: Vec<f32> = (0..tensor.shape[0]).map(|j| (10 * i + j) as f32).collect();
            w.write_at(i, 0, bytemuck::cast_slice(&vals))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let files = w.finish().unwrap_or_else(|e| panic!("{e}"));
        // 12 + 8 > 16 and 8 + 16 > 16: one shard per tensor.
        assert_eq!(files.len(), 3);
        assert!(out.join(INDEX_FILE).is_file());
        let ckpt = Checkpoint::open(&out).unwrap_or_else(|e| panic!("{e}"));
        let c = ckpt.get("c").unwrap_or_else(|| panic!("c"));
        let mut vals = [0.0f32; 4];
        ckpt.read_f32(c, crate::dtype::FloatType::F32, 0, &mut vals, &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(vals, [20.0, 21.0, 22.0, 23.0]);
        assert_eq!(ckpt.metadata, vec![("format".to_string(), "pt".to_string())]);
    }

    #[test]
    fn dropping_unfinished_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out");
        drop(Writer::create(&out, &[t("a", 1)], &[], u64::MAX, false).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(1), 0);
    }

    #[test]
    fn existing_output_needs_overwrite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Writer::create(dir.path(), &[t("a", 1)], &[], u64::MAX, false).err();
        assert!(matches!(err, Some(MergeError::OutputExists { .. })));
        let w = Writer::create(dir.path(), &[t("a", 1)], &[], u64::MAX, true).unwrap_or_else(|e| panic!("{e}"));
        w.finish().unwrap_or_else(|e| panic!("{e}"));
        assert!(dir.path().join(SINGLE_FILE).is_file());
    }

    #[test]
    fn shards_split_by_size() {
        let groups = split_into_shards(&[t("a", 3), t("b", 1), t("c", 8)], 16);
        assert_eq!(groups, vec![vec![0, 1], vec![2]]);
    }
}
