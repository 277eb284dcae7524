//! Writing the output: into an [`OutputDir`]'s temporary directory, each shard's header first (all offsets
//! are known from the plan), chunks placed at their offsets with positional writes from any thread, then an
//! index for sharded outputs, config files, and the atomic move into place. Dropped before `finish`, it
//! removes everything.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};
use crate::error::{MergeError, Result};
use crate::output::OutputDir;

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
    output: OutputDir,
    shards: Vec<OutShard>,
    /// Per tensor: (shard, absolute offset of its data).
    places: Vec<(usize, u64)>,
    weight_map: Vec<(String, usize)>,
    total_size: u64,
}

impl Writer {
    /// Lay out `tensors` in `output`, split into shards of at most `max_shard_size` bytes (a larger tensor
    /// gets a shard of its own).
    pub(crate) fn create(
        output: OutputDir,
        tensors: &[OutTensor],
        metadata: &[(String, String)],
        max_shard_size: u64,
    ) -> Result<Writer> {
        let mut writer = Writer {
            output,
            shards: Vec::new(),
            places: Vec::with_capacity(tensors.len()),
            weight_map: Vec::new(),
            total_size: tensors.iter().map(|t| t.nbytes).sum(),
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
        let path = self.output.temp().join(name);
        let (header, offsets) = header_bytes(tensors, group, metadata)?;
        let data_start = header.len() as u64;
        let data_len: u64 = group.iter().map(|&t| tensors[t].nbytes).sum();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| self.output.error(e))?;
        file.set_len(data_start + data_len).map_err(|e| self.output.error(e))?;
        file.write_all_at(&header, 0).map_err(|e| self.output.error(e))?;
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
            .map_err(|e| self.output.error(e))
    }

    /// Read back bytes written at byte `offset` within tensor `tensor`'s data (to patch them).
    pub(crate) fn read_at(&self, tensor: usize, offset: u64, bytes: &mut [u8]) -> Result<()> {
        let (shard, start) = self.places[tensor];
        self.shards[shard]
            .file
            .read_exact_at(bytes, start + offset)
            .map_err(|e| self.output.error(e))
    }

    /// An unnamed scratch file beside the output (on its disk, not in memory as /tmp may be); the system
    /// removes it when it is closed, so it never shows up in the output.
    pub(crate) fn scratch_file(&self) -> Result<File> {
        tempfile::tempfile_in(self.output.temp()).map_err(|e| self.output.error(e))
    }

    /// An I/O error while writing the output (or its scratch file), naming the output.
    pub(crate) fn error(&self, source: std::io::Error) -> MergeError {
        self.output.error(source)
    }

    /// Put a file into the output (e.g. `config.json`).
    pub(crate) fn add_file(&self, name: &str, contents: &[u8]) -> Result<()> {
        std::fs::write(self.output.temp().join(name), contents).map_err(|e| self.output.error(e))
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
            let text = serde_json::to_string_pretty(&index).map_err(|e| MergeError::Internal(e.to_string()))?;
            self.add_file(INDEX_FILE, text.as_bytes())?;
        }
        let names: Vec<String> = self.shards.iter().map(|s| file_name(&s.path)).collect();
        self.shards.clear();
        let target = self.output.target().to_path_buf();
        self.output.commit()?;
        Ok(names.iter().map(|n| target.join(n)).collect())
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
        let dtype = serde_json::to_value(t.dtype).map_err(|e| MergeError::Internal(e.to_string()))?;
        map.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + t.nbytes]}),
        );
        offsets.push(offset);
        offset += t.nbytes;
    }
    let mut json = serde_json::to_vec(&map).map_err(|e| MergeError::Internal(e.to_string()))?;
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

    fn create(out: &Path, tensors: &[OutTensor], metadata: &[(String, String)], max: u64) -> Result<Writer> {
        Writer::create(OutputDir::prepare(out, &[], false)?, tensors, metadata, max)
    }

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
        let w = create(&out, &tensors, &[("format".into(), "pt".into())], 16).unwrap_or_else(|e| panic!("{e}"));
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
        drop(create(&out, &[t("a", 1)], &[], u64::MAX).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(1), 0);
    }

    #[test]
    fn shards_split_by_size() {
        let groups = split_into_shards(&[t("a", 3), t("b", 1), t("c", 8)], 16);
        assert_eq!(groups, vec![vec![0, 1], vec![2]]);
    }
}
