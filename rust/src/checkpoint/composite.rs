//! A checkpoint assembled from other checkpoints' tensors under new names: mergekit's `slices`, where a
//! frankenmerge stacks layers of several models. Each source is opened once and lends its shards; data is
//! read from the sources as they are. A view may carry a PEFT adapter, laid over it but for the tensors it
//! names (mergekit's `model+lora` whose vocabulary tensors come re-indexed, the adapter's change already in them).

use std::path::PathBuf;

use super::{Checkpoint, StoredTensor, Tensor};
use crate::error::{MergeError, Result};

/// One tensor of a composite: `out` is `source` of the checkpoint at `path`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ViewTensor {
    /// The name in the composite.
    pub out: String,
    /// The checkpoint it comes from.
    pub path: PathBuf,
    /// Its name there.
    pub source: String,
}

/// A model assembled from other checkpoints' tensors, with an adapter laid over it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// Its tensors (none: no view).
    pub tensors: Vec<ViewTensor>,
    /// A PEFT adapter read over the view.
    #[serde(default)]
    pub adapter: Option<ViewAdapter>,
}

/// A PEFT adapter over a [`View`], left out of the tensors that hold its change already.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewAdapter {
    /// The adapter's directory.
    pub path: PathBuf,
    /// The view's tensors it does not change.
    #[serde(default)]
    pub skip: Vec<String>,
}

impl View {
    /// The view's checkpoint, called `name`, with its adapter laid over it.
    pub(crate) fn open(&self, name: &str) -> Result<Checkpoint> {
        let composite = Checkpoint::composite(name, &self.tensors)?;
        match &self.adapter {
            Some(a) => composite.with_adapter(&a.path, &a.skip),
            None => Ok(composite),
        }
    }
}

impl Checkpoint {
    /// The checkpoint of `entries`, called `name`; `config.json` and metadata are the first source's.
    pub(crate) fn composite(name: &str, entries: &[ViewTensor]) -> Result<Checkpoint> {
        let mut opened: Vec<(PathBuf, usize, Checkpoint)> = Vec::new();
        let mut shard_count = 0;
        let mut tensors = Vec::with_capacity(entries.len());
        for entry in entries {
            let i = match opened.iter().position(|(p, ..)| *p == entry.path) {
                Some(i) => i,
                None => {
                    let ckpt = Checkpoint::open(&entry.path)?;
                    let shards = ckpt.shards.len();
                    opened.push((entry.path.clone(), shard_count, ckpt));
                    shard_count += shards;
                    opened.len() - 1
                }
            };
            let (_, offset, ckpt) = &opened[i];
            let found = ckpt.get(&entry.source).ok_or_else(|| {
                MergeError::invalid(
                    &entry.path,
                    format!("has no tensor '{}' (for '{}')", entry.source, entry.out),
                )
            })?;
            let stored = StoredTensor {
                name: entry.out.clone(),
                ..found.stored.clone()
            };
            tensors.push(Tensor {
                stored,
                shard: found.shard + offset,
            });
        }
        let Some((first, _, head)) = opened.first() else {
            return Err(MergeError::arg(format!("the layer map of '{name}' names no tensor")));
        };
        let (path, config, metadata) = (first.clone(), head.config.clone(), head.metadata.clone());
        let shards = opened.into_iter().flat_map(|(_, _, c)| c.shards).collect();
        let twice = |out: &str| MergeError::arg(format!("the layer map of '{name}' names '{out}' twice"));
        Checkpoint::assemble(path, name.to_string(), (shards, tensors, config, metadata), twice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::FloatType;
    use crate::test_files::write_checkpoint;

    #[test]
    fn a_composite_reads_each_tensor_from_its_source_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        write_checkpoint(&a, &[("layers.0.w", &[1.0, 2.0]), ("embed", &[5.0])]);
        write_checkpoint(&b, &[("layers.0.w", &[3.0, 4.0]), ("layers.1.w", &[6.0, 7.0])]);
        let view = |out: &str, path: &PathBuf, source: &str| ViewTensor {
            out: out.into(),
            path: path.clone(),
            source: source.into(),
        };
        let entries = [
            view("embed", &a, "embed"),
            view("layers.0.w", &a, "layers.0.w"),
            view("layers.1.w", &b, "layers.1.w"),
            view("layers.2.w", &b, "layers.0.w"),
        ];
        let ckpt = Checkpoint::composite("stack", &entries).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ckpt.shards.len(), 2);
        for (name, want) in [
            ("layers.0.w", [1.0, 2.0]),
            ("layers.1.w", [6.0, 7.0]),
            ("layers.2.w", [3.0, 4.0]),
        ] {
            let t = ckpt.get(name).unwrap_or_else(|| panic!("{name}"));
            let mut out = [0.0f32; 2];
            ckpt.read_f32(t, FloatType::F32, 0, &mut out, &mut Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(out, want, "{name}");
        }
        let missing = Checkpoint::composite("stack", &[view("x", &a, "nope")])
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("has no tensor 'nope'"), "{missing}");
        let twice = [view("x", &a, "embed"), view("x", &b, "layers.0.w")];
        let err = Checkpoint::composite("stack", &twice).expect_err("twice").to_string();
        assert!(err.contains("names 'x' twice"), "{err}");
    }
}
