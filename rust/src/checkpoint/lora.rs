//! PEFT LoRA adapters as inputs. An adapter directory (`adapter_config.json` beside
//! `adapter_model.safetensors`) over its base checkpoint reads as the full model θ₀ + ΔW, with
//! ΔW = s·B·A for every targeted module (s = α/r, or α/√r with rsLoRA; transposed for `fan_in_fan_out`
//! and for embeddings). ΔW is formed only for the elements a job reads, so an adapter streams like a
//! checkpoint. Tensors saved whole (`modules_to_save`, and the targeted layer's own weight that PEFT saves for
//! embeddings) replace the base's.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::lora_cache;
use super::lora_config::{alpha_for, read_config};
pub(crate) use super::lora_config::{is_adapter, with_adapter_hint};
use super::lora_delta::{BLOCK, ROWS, add_block, add_rows};
use super::{Checkpoint, Tensor};
use crate::dtype::{FloatType, Storage, storage_of};
use crate::error::{MergeError, Result};

/// The file that marks a directory as a PEFT adapter.
pub(crate) const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights.
pub(crate) const ADAPTER_FILE: &str = "adapter_model.safetensors";
/// The prefix PEFT puts before the base model's own tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

/// One targeted module: where its factors are stored and how ΔW is formed from them.
#[derive(Debug)]
struct Module {
    /// The module's name in the adapter, less the PEFT prefix.
    name: String,
    /// `lora_A` and `lora_B` in the adapter file.
    a: Tensor,
    b: Tensor,
    rank: usize,
    /// s = α/r (α/√r with rsLoRA).
    scale: f32,
    /// W[i, j] += s·Σ B[j, r]·A[r, i] (Conv1D weights and embeddings) instead of s·Σ B[i, r]·A[r, j].
    transposed: bool,
    /// The base tensor's shape as rows × columns (every trailing dimension folded into the columns).
    cols: usize,
    /// Q's key in the per-thread factor cache.
    q_id: u64,
}

/// An adapter laid over its base checkpoint.
#[derive(Debug)]
pub(crate) struct Overlay {
    /// The adapter's weight file.
    adapter: Checkpoint,
    /// Base tensor name → the module that changes it.
    modules: HashMap<String, Module>,
    /// Base tensor name → the adapter's saved copy that replaces it (`modules_to_save`).
    saved: HashMap<String, Tensor>,
}

impl Overlay {
    /// Read `dir`'s adapter and match every module against `base`, less those that change a tensor `skip` names.
    pub(crate) fn open(dir: &Path, base: &Checkpoint, skip: &[String]) -> Result<Overlay> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let config = read_config(&config_path)?;
        let weights = dir.join(ADAPTER_FILE);
        if !weights.exists() {
            let why = if dir.join("adapter_model.bin").exists() {
                "holds adapter_model.bin: merge-rs reads safetensors adapters only"
            } else {
                "has no adapter_model.safetensors"
            };
            return Err(MergeError::invalid(dir, why));
        }
        let adapter = Checkpoint::open(&weights)?;
        let mut factors: HashMap<String, [Option<Tensor>; 2]> = HashMap::new();
        let mut saved = HashMap::new();
        for tensor in &adapter.tensors {
            let name = tensor
                .stored
                .name
                .strip_prefix(PEFT_PREFIX)
                .unwrap_or(&tensor.stored.name);
            match Key::parse(name) {
                Key::Factor { module, b, embedding } => {
                    factors.entry(format!("{module}\0{embedding}")).or_default()[usize::from(b)] = Some(tensor.clone())
                }
                Key::Saved(target) => {
                    saved.insert(target, tensor.clone());
                }
            }
        }
        let mut modules = HashMap::new();
        for (key, pair) in factors {
            let (module, embedding) = key.split_once('\0').unwrap_or((&key, "false"));
            let [Some(a), Some(b)] = pair else {
                return Err(MergeError::invalid(
                    &weights,
                    format!("module '{module}' has only one of lora_A, lora_B"),
                ));
            };
            let target = format!("{module}.weight");
            let alpha = alpha_for(&config, module, &config_path)?;
            let transposed = embedding == "true" || config.fan_in_fan_out;
            let found = find(base, &target).ok_or_else(|| missing(&weights, module, &target, &base.path))?;
            if skip.contains(&found.stored.name) {
                continue;
            }
            let m = Module::new(a, b, alpha, config.use_rslora, transposed, found, &weights)?;
            modules.insert(found.stored.name.clone(), m);
        }
        let mut replaced = HashMap::new();
        for (target, tensor) in saved {
            let found = find(base, &target).ok_or_else(|| unexpected(&weights, &tensor.stored.name, &base.path))?;
            if skip.contains(&found.stored.name) {
                continue;
            }
            if found.stored.shape != tensor.stored.shape || float_type(&tensor).is_none() {
                return Err(MergeError::invalid(
                    &weights,
                    format!(
                        "saved module '{}' is {:?} {:?}, and the base's '{}' is {:?}",
                        tensor.stored.name,
                        tensor.stored.dtype,
                        tensor.stored.shape,
                        found.stored.name,
                        found.stored.shape
                    ),
                ));
            }
            replaced.insert(found.stored.name.clone(), tensor);
        }
        Ok(Overlay {
            adapter,
            modules,
            saved: replaced,
        })
    }

    /// Each module's name in the adapter (less the PEFT prefix) and its scale.
    pub(crate) fn scales(&self) -> impl Iterator<Item = (String, f32)> + '_ {
        self.modules.values().map(|m| (m.name.clone(), m.scale))
    }

    /// The files this adapter reads besides its base's.
    pub(crate) fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.adapter.shards.iter().map(|s| s.path.clone())
    }

    /// Read `out.len()` elements of `tensor` from `start`, as `base` stores them plus this adapter's change.
    /// `known` holds those elements of `base`'s tensor when the caller has read them already (they are copied
    /// then, not read again).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_f32(
        &self,
        base: &Checkpoint,
        tensor: &Tensor,
        ty: FloatType,
        start: usize,
        known: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        match (self.saved.get(&tensor.stored.name), known) {
            (Some(copy), _) => self
                .adapter
                .read_plain(copy, float_type(copy).unwrap_or(ty), start, out, scratch)?,
            (None, Some(values)) => out.copy_from_slice(values),
            (None, None) => base.read_plain(tensor, ty, start, out, scratch)?,
        }
        match self.modules.get(&tensor.stored.name) {
            Some(module) => module.add_delta(&self.adapter, start, out, scratch),
            None => Ok(()),
        }
    }
}

/// What an adapter tensor's name says it is.
enum Key {
    /// `M.lora_A.weight` / `M.lora_B.weight`, or `M.lora_embedding_A` / `M.lora_embedding_B`.
    Factor { module: String, b: bool, embedding: bool },
    /// A saved module's tensor (`modules_to_save`), replacing the base's: `M.P`, or `M.modules_to_save.P` as
    /// PEFT before 0.15 saved it; or `M.base_layer.P`, a targeted layer's own weight (PEFT saves an embedding's),
    /// which the module's change is then added to.
    Saved(String),
}

impl Key {
    fn parse(name: &str) -> Key {
        for (suffix, b, embedding) in [
            (".lora_A.weight", false, false),
            (".lora_B.weight", true, false),
            (".lora_embedding_A", false, true),
            (".lora_embedding_B", true, true),
        ] {
            if let Some(module) = name.strip_suffix(suffix) {
                return Key::Factor {
                    module: module.to_string(),
                    b,
                    embedding,
                };
            }
        }
        match name
            .split_once(".modules_to_save.")
            .or_else(|| name.split_once(".base_layer."))
        {
            Some((module, rest)) => Key::Saved(format!("{module}.{rest}")),
            None => Key::Saved(name.to_string()),
        }
    }
}

impl Module {
    fn new(
        a: Tensor,
        b: Tensor,
        alpha: f64,
        rslora: bool,
        transposed: bool,
        w: &Tensor,
        file: &Path,
    ) -> Result<Module> {
        let (a_shape, b_shape, w_shape) = (&a.stored.shape, &b.stored.shape, &w.stored.shape);
        let module = a.stored.name.rsplit_once(".lora_").map_or("", |(m, _)| m).to_string();
        let bad = |why: String| MergeError::invalid(file, format!("module '{module}': {why}"));
        if float_type(&a).is_none() || float_type(&b).is_none() || float_type(w).is_none() {
            return Err(bad("lora_A, lora_B and the base weight must be float tensors".into()));
        }
        // A is [r, in, ...] (embeddings: [r, rows]); B is [out, r, 1, ...] (embeddings: [cols, r]).
        let rank = a_shape.first().copied().unwrap_or(0);
        let a_cols = a.stored.numel().checked_div(rank).unwrap_or(0);
        let b_rows = b_shape.first().copied().unwrap_or(0);
        if rank == 0 || b_shape.get(1) != Some(&rank) || b.stored.numel() != b_rows * rank {
            return Err(bad(format!(
                "lora_A {a_shape:?} and lora_B {b_shape:?} do not share a rank"
            )));
        }
        let (rows, cols) = if transposed { (a_cols, b_rows) } else { (b_rows, a_cols) };
        if w_shape.first() != Some(&rows) || w.stored.numel() != rows * cols {
            return Err(bad(format!(
                "lora_A {a_shape:?} and lora_B {b_shape:?} do not fit the base's '{}' {w_shape:?}{}",
                w.stored.name,
                if transposed { " (fan_in_fan_out)" } else { "" }
            )));
        }
        let denominator = if rslora { (rank as f64).sqrt() } else { rank as f64 };
        Ok(Module {
            name: module.strip_prefix(PEFT_PREFIX).unwrap_or(&module).to_string(),
            a,
            b,
            rank,
            scale: (alpha / denominator) as f32,
            transposed,
            cols,
            q_id: lora_cache::new_id(),
        })
    }

    /// The factors as P's rows `rows` (their count × r, the first being row `rows.start`) and Q (r × cols), so
    /// that ΔW[i, j] = s·Σₖ P[i, k]·Q[k, j]. Unless transposed, only those rows of B are read; Q comes from the
    /// thread's cache after the first chunk.
    fn factors(
        &self,
        adapter: &Checkpoint,
        rows: Range<usize>,
        scratch: &mut Vec<u8>,
    ) -> Result<(Vec<f32>, Rc<Vec<f32>>)> {
        let read = |t: &Tensor, from: usize, len: usize, scratch: &mut Vec<u8>| -> Result<Vec<f32>> {
            let mut v = vec![0.0; len];
            adapter.read_plain(t, float_type(t).unwrap_or(FloatType::F32), from, &mut v, scratch)?;
            Ok(v)
        };
        if self.transposed {
            let p = transpose(&read(&self.a, 0, self.a.stored.numel(), scratch)?, self.rank);
            let q = lora_cache::factor(self.q_id, || {
                Ok(transpose(
                    &read(&self.b, 0, self.b.stored.numel(), scratch)?,
                    self.b.stored.shape[0],
                ))
            })?;
            return Ok((p[rows.start * self.rank..rows.end * self.rank].to_vec(), q));
        }
        let q = lora_cache::factor(self.q_id, || read(&self.a, 0, self.a.stored.numel(), scratch))?;
        let b = read(&self.b, rows.start * self.rank, rows.len() * self.rank, scratch)?;
        Ok((b, q))
    }

    /// Add ΔW's elements `[start, start + out.len())` (row-major) to `out`. Each element is
    /// Σₖ P[i, k]·Q[k, j] summed in f32, then scaled, as `(B @ A) * s` is.
    fn add_delta(&self, adapter: &Checkpoint, start: usize, out: &mut [f32], scratch: &mut Vec<u8>) -> Result<()> {
        let first_row = start / self.cols;
        let rows = first_row..(start + out.len()).div_ceil(self.cols);
        let (p, q) = self.factors(adapter, rows, scratch)?;
        let (rank, cols) = (self.rank, self.cols);
        let mut done = 0;
        while done < out.len() {
            let (i, j0) = ((start + done) / cols, (start + done) % cols);
            if j0 == 0 && out.len() - done >= ROWS * cols {
                let span = ROWS * cols;
                add_rows(
                    &mut out[done..done + span],
                    &p[(i - first_row) * rank..(i - first_row + ROWS) * rank],
                    &q,
                    cols,
                    self.scale,
                );
                done += span;
                continue;
            }
            let n = (cols - j0).min(out.len() - done);
            let p_row = &p[(i - first_row) * rank..(i - first_row + 1) * rank];
            let mut j = 0;
            while j < n {
                let width = BLOCK.min(n - j);
                add_block(
                    &mut out[done + j..done + j + width],
                    p_row,
                    &q,
                    cols,
                    j0 + j,
                    self.scale,
                );
                j += width;
            }
            done += n;
        }
        Ok(())
    }
}

/// The base's tensor `name`, or else the one tensor whose name ends with `.name` (an adapter trained on a
/// vision tower alone, read over the whole CLIP: `vision_model.` + its names).
fn find<'a>(base: &'a Checkpoint, name: &str) -> Option<&'a Tensor> {
    base.get(name).or_else(|| {
        let suffix = format!(".{name}");
        let mut found = base.tensors.iter().filter(|t| t.stored.name.ends_with(&suffix));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    })
}

/// The row-major `r × n` matrix `m` transposed (`n × r`).
fn transpose(m: &[f32], r: usize) -> Vec<f32> {
    let n = m.len() / r.max(1);
    let mut t = vec![0.0; m.len()];
    for i in 0..r {
        for j in 0..n {
            t[j * r + i] = m[i * n + j];
        }
    }
    t
}

fn float_type(t: &Tensor) -> Option<FloatType> {
    match storage_of(t.stored.dtype) {
        Some(Storage::Float(ty)) => Some(ty),
        _ => None,
    }
}

fn unexpected(file: &Path, name: &str, base: &Path) -> MergeError {
    MergeError::invalid(
        file,
        format!(
            "tensor '{name}' is neither a LoRA factor (lora_A, lora_B) nor a module saved whole (modules_to_save) \
             of the base model {}",
            base.display()
        ),
    )
}

fn missing(file: &Path, module: &str, target: &str, base: &Path) -> MergeError {
    MergeError::invalid(
        file,
        format!(
            "module '{module}' changes '{target}', which the base model {} does not have",
            base.display()
        ),
    )
}

#[cfg(test)]
#[path = "lora_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "lora_view_tests.rs"]
mod view_tests;
