//! One model checkpoint: a single `.safetensors` file, a directory with `model.safetensors`, or a sharded
//! directory with `model.safetensors.index.json`. Opening reads and validates every header; tensor data is
//! only ever read in chunks through [`Checkpoint::read_f32`] / [`Checkpoint::read_raw`] (`pread`, no maps).

mod composite;
mod header;
mod index;
mod layout;
mod lora;
mod lora_cache;
mod lora_config;
mod lora_delta;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use composite::{View, ViewAdapter, ViewTensor};
pub(crate) use header::{StoredTensor, read_header};
pub(crate) use index::regular_file;
pub(crate) use layout::{KeyMap, Layout};
pub(crate) use lora::{ADAPTER_CONFIG, ADAPTER_FILE, is_adapter};

use crate::dtype::FloatType;
use crate::error::{MergeError, Result};

/// The single-file name the Hugging Face layout uses.
pub(crate) const SINGLE_FILE: &str = "model.safetensors";
/// The index name of a sharded checkpoint.
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// One shard of a checkpoint, opened for positional reads.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Path of the shard.
    pub(crate) path: PathBuf,
    file: File,
    /// File length in bytes.
    pub(crate) len: u64,
}

/// A tensor of a checkpoint: where it is stored.
#[derive(Debug, Clone)]
pub(crate) struct Tensor {
    /// Header entry.
    pub(crate) stored: StoredTensor,
    /// Index into [`Checkpoint::shards`].
    pub(crate) shard: usize,
}

/// A validated, opened checkpoint.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    /// The path the user gave.
    pub(crate) path: PathBuf,
    /// A short display name (the directory name, or the file stem).
    pub(crate) name: String,
    /// The shards, in index order.
    pub(crate) shards: Vec<Shard>,
    /// Every tensor, sorted by name.
    pub(crate) tensors: Vec<Tensor>,
    by_name: HashMap<String, usize>,
    /// The layout recognised from the tensor names.
    pub(crate) layout: Layout,
    /// `config.json` beside the weights, if any.
    pub(crate) config: Option<PathBuf>,
    /// The first shard's `__metadata__`.
    pub(crate) metadata: Vec<(String, String)>,
    /// A LoRA adapter laid over these weights (`path` is then the adapter's directory).
    lora: Option<Box<lora::Overlay>>,
}

impl Checkpoint {
    /// Open `path` (file or directory) and validate all its headers.
    pub(crate) fn open(path: &Path) -> Result<Checkpoint> {
        let meta = std::fs::metadata(path).map_err(|e| MergeError::io(path, e))?;
        let (dir, shard_paths, wanted) = if meta.is_dir() {
            index::locate_in_dir(path)?
        } else {
            regular_file(path)?;
            (path.parent().map(Path::to_path_buf), vec![path.to_path_buf()], None)
        };
        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut tensors = Vec::new();
        let mut metadata = Vec::new();
        for (i, shard_path) in shard_paths.iter().enumerate() {
            let header = read_header(shard_path)?;
            if i == 0 {
                metadata = header.metadata;
            }
            let file = File::open(shard_path).map_err(|e| MergeError::io(shard_path, e))?;
            let len = file.metadata().map_err(|e| MergeError::io(shard_path, e))?.len();
            shards.push(Shard {
                path: shard_path.clone(),
                file,
                len,
            });
            tensors.extend(header.tensors.into_iter().map(|stored| Tensor { stored, shard: i }));
        }
        if let Some(map) = &wanted {
            tensors.retain(|t| map.get(&t.stored.name) == Some(&t.shard));
            index::check_index_complete(path, map, &tensors)?;
        }
        let config = dir
            .map(|d| d.join("config.json"))
            .filter(|c| meta.is_dir() && c.is_file());
        let twice = |name: &str| MergeError::invalid(path, format!("tensor '{name}' is stored twice"));
        let parts = (shards, tensors, config, metadata);
        Checkpoint::assemble(path.to_path_buf(), display_name(path), parts, twice)
    }

    /// A checkpoint of `shards` and `tensors` (sorted and indexed by name here; `twice` is the error for a
    /// name given twice), with `config.json` and metadata.
    #[allow(clippy::type_complexity)]
    fn assemble(
        path: PathBuf,
        name: String,
        (shards, mut tensors, config, metadata): (Vec<Shard>, Vec<Tensor>, Option<PathBuf>, Vec<(String, String)>),
        twice: impl Fn(&str) -> MergeError,
    ) -> Result<Checkpoint> {
        tensors.sort_by(|a, b| a.stored.name.cmp(&b.stored.name));
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if by_name.insert(t.stored.name.clone(), i).is_some() {
                return Err(twice(&t.stored.name));
            }
        }
        let layout = Layout::detect(tensors.iter().map(|t| t.stored.name.as_str()));
        Ok(Checkpoint {
            path,
            name,
            shards,
            tensors,
            by_name,
            layout,
            config,
            metadata,
            lora: None,
        })
    }

    /// Open an input: a checkpoint, or a PEFT LoRA adapter read over `base` (its pretrained model).
    pub(crate) fn open_input(path: &Path, base: Option<&Path>) -> Result<Checkpoint> {
        if !is_adapter(path) {
            return Checkpoint::open(path).map_err(|e| lora::with_adapter_hint(path, e));
        }
        let base = base.ok_or_else(|| {
            MergeError::invalid(
                path,
                "is a LoRA adapter: give the model it adapts as the pretrained model (--pretrained)",
            )
        })?;
        Checkpoint::open(base)?.with_adapter(path, &[])
    }

    /// This checkpoint with the PEFT adapter at `dir` laid over it, but not over the tensors `skip` names.
    pub(crate) fn with_adapter(mut self, dir: &Path, skip: &[String]) -> Result<Checkpoint> {
        self.lora = Some(Box::new(lora::Overlay::open(dir, &self, skip)?));
        self.name = display_name(dir);
        self.path = dir.to_path_buf();
        Ok(self)
    }

    /// For an adapter, each module's name in it and PEFT's scale of its ΔW (α/r, α/√r with rsLoRA).
    pub(crate) fn adapter_scales(&self) -> Vec<(String, f32)> {
        self.lora.iter().flat_map(|o| o.scales()).collect()
    }

    /// Every file this input reads: its shards and, for an adapter, the adapter's weights.
    pub(crate) fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.shards
            .iter()
            .map(|s| s.path.clone())
            .chain(self.lora.iter().flat_map(|o| o.files()))
    }

    /// The tensor called `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&Tensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The position of tensor `name` in [`Checkpoint::tensors`], if any.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Total number of elements over all tensors.
    pub(crate) fn numel(&self) -> u64 {
        self.tensors.iter().map(|t| t.stored.numel() as u64).sum()
    }

    /// Read `out.len()` elements of float tensor `tensor` (stored as `ty`), starting at element `start`,
    /// decoded to f32, with an adapter's change added. `scratch` is a reusable byte buffer.
    pub(crate) fn read_f32(
        &self,
        tensor: &Tensor,
        ty: FloatType,
        start: usize,
        out: &mut [f32],
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        match &self.lora {
            Some(overlay) => overlay.read_f32(self, tensor, ty, start, None, out, scratch),
            None => self.read_plain(tensor, ty, start, out, scratch),
        }
    }

    /// Whether this input is an adapter laid over `base`'s own files, so that its tensors are `base`'s plus a
    /// change (see [`Checkpoint::read_f32_over`]); not when `base` is itself an adapter over those files.
    pub(crate) fn overlays(&self, base: &Checkpoint) -> bool {
        self.lora.is_some()
            && base.lora.is_none()
            && self.shards.len() == base.shards.len()
            && self.shards.iter().zip(&base.shards).all(|(a, b)| a.path == b.path)
    }

    /// [`Checkpoint::read_f32`] of an adapter that [overlays](Checkpoint::overlays) the base whose values of
    /// the same elements are `base_values`: they are copied instead of read again (the same result).
    pub(crate) fn read_f32_over(
        &self,
        tensor: &Tensor,
        ty: FloatType,
        start: usize,
        base_values: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        match &self.lora {
            Some(overlay) => overlay.read_f32(self, tensor, ty, start, Some(base_values), out, scratch),
            None => self.read_plain(tensor, ty, start, out, scratch),
        }
    }

    /// [`Checkpoint::read_f32`] of the stored values alone.
    fn read_plain(
        &self,
        tensor: &Tensor,
        ty: FloatType,
        start: usize,
        out: &mut [f32],
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let offset = tensor.stored.offset + (start * ty.size()) as u64;
        if ty == FloatType::F32 {
            return self.read_bytes(tensor, offset, bytemuck::cast_slice_mut(out));
        }
        scratch.resize(out.len() * ty.size(), 0);
        self.read_bytes(tensor, offset, scratch)?;
        ty.decode(scratch, out);
        Ok(())
    }

    /// Read raw bytes `[start, start + out.len())` of `tensor`'s data.
    pub(crate) fn read_raw(&self, tensor: &Tensor, start: u64, out: &mut [u8]) -> Result<()> {
        self.read_bytes(tensor, tensor.stored.offset + start, out)
    }

    /// Tell the kernel about bytes `[offset, offset + len)` of `tensor`'s file (`posix_fadvise` advice).
    pub(crate) fn advise(&self, tensor: &Tensor, offset: u64, len: u64, advice: libc::c_int) {
        crate::engine::advise(&self.shards[tensor.shard].file, offset, len, advice);
    }

    /// Total size of the files.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.len).sum()
    }

    /// Whether reads return the stored values as they are (no adapter laid over them).
    pub(crate) fn is_plain(&self) -> bool {
        self.lora.is_none()
    }

    /// Where elements `[start, start + len)` of `tensor` (stored as `ty`) lie in its shard's file: the byte
    /// offset and the number of bytes.
    pub(crate) fn stored_range(&self, tensor: &Tensor, ty: FloatType, start: usize, len: usize) -> (u64, usize) {
        (tensor.stored.offset + (start * ty.size()) as u64, len * ty.size())
    }

    /// Every shard opened again with `flags` (`O_DIRECT`: reads that bypass the page cache), in shard order.
    pub(crate) fn reopen(&self, flags: libc::c_int) -> std::io::Result<Vec<File>> {
        use std::os::unix::fs::OpenOptionsExt;

        let open = |s: &Shard| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&s.path);
        self.shards.iter().map(open).collect()
    }

    fn read_bytes(&self, tensor: &Tensor, offset: u64, out: &mut [u8]) -> Result<()> {
        let shard = &self.shards[tensor.shard];
        shard
            .file
            .read_exact_at(out, offset)
            .map_err(|e| self.read_error(tensor, e))
    }

    /// The error for a failed read of `tensor`'s data, naming the file and the tensor when it was cut short.
    fn read_error(&self, tensor: &Tensor, e: std::io::Error) -> MergeError {
        let path = &self.shards[tensor.shard].path;
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            let why = format!(
                "tensor '{}' ends past the end of the file (was it truncated?)",
                tensor.stored.name
            );
            MergeError::invalid(path, why)
        } else {
            MergeError::io(path, e)
        }
    }
}

/// `task_a` for `/zoo/task_a`, `task_a` for `/zoo/task_a/model.safetensors`, `x` for `x.safetensors`.
fn display_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let named_after_dir = path.is_file() && (stem == "model" || stem.starts_with("model-"));
    match (named_after_dir, path.parent().and_then(Path::file_name)) {
        (true, Some(parent)) => parent.to_string_lossy().into_owned(),
        _ if path.is_dir() => path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned()),
        _ => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::{checkpoint_bytes as st, put};

    #[test]
    fn opens_sharded_directories() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        put(&dir.path().join("a.safetensors"), &st(&[("x", &[1.0, 2.0])]));
        put(&dir.path().join("b.safetensors"), &st(&[("y", &[3.0])]));
        put(
            &dir.path().join(INDEX_FILE),
            br#"{"metadata":{},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}"#,
        );
        let ckpt = Checkpoint::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ckpt.shards.len(), 2);
        let y = ckpt.get("y").unwrap_or_else(|| panic!("y"));
        let mut out = [0.0f32];
        ckpt.read_f32(y, FloatType::F32, 0, &mut out, &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out, [3.0]);
        assert_eq!(ckpt.numel(), 3);
    }

    #[test]
    fn index_naming_a_missing_tensor_fails() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        put(&dir.path().join("a.safetensors"), &st(&[("x", &[1.0])]));
        put(
            &dir.path().join(INDEX_FILE),
            br#"{"weight_map":{"x":"a.safetensors","z":"a.safetensors"}}"#,
        );
        let err = Checkpoint::open(dir.path()).expect_err("must fail").to_string();
        assert!(err.contains("'z'"), "{err}");
    }

    #[test]
    fn empty_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = Checkpoint::open(dir.path()).expect_err("must fail").to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
    }

    #[test]
    fn names_models_after_their_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("task_a");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        put(&sub.join(SINGLE_FILE), &st(&[("x", &[1.0])]));
        assert_eq!(display_name(&sub), "task_a");
        assert_eq!(display_name(&sub.join(SINGLE_FILE)), "task_a");
    }
}
