//! merge-rs: streaming, bounded-memory merging of fine-tuned models stored as safetensors.
//!
//! The core reads every header first (`checkpoint`), validates and plans the request (`plan`), then
//! streams fixed-size chunks of every input through a method's kernel on a private rayon pool (`engine`,
//! `methods`), writing the output header-first at known offsets (`writer`). Memory is bounded by the chunks
//! in flight (one per thread, and up to eight read ahead where memory is short) × inputs × chunk size, never by the
//! size or number of the models.
//!
//! The API: [`merge`] a [`MergeRequest`] with a [`Method`] (see [`method_table`] for every method, its
//! parameters and defaults), [`cosine_similarity`] of task vectors, [`inspect`] a checkpoint, and
//! [`write_model_set`] to generate synthetic checkpoints. The PyO3 bindings live behind the `python` feature.

mod analysis;
mod checkpoint;
mod dtype;
mod engine;
mod error;
mod extract;
mod groups;
mod info;
mod linalg;
mod merge;
mod method;
mod methods;
mod monitor;
mod output;
#[cfg(test)]
mod peak_alloc;
mod plan;
mod rng;
mod simd;
mod synthetic;
#[cfg(test)]
mod test_files;
mod writer;

#[cfg(feature = "python")]
mod python;

pub use analysis::{CosineReport, cosine_similarity};
pub use checkpoint::{View, ViewAdapter, ViewTensor};
pub use dtype::FloatType;
pub use error::{MergeError, Result};
pub use extract::{ExtractReport, ExtractRequest, ExtractedModule, LeftOut, extract_lora};
pub use groups::TensorGroup;
pub use info::{CheckpointInfo, ShardInfo, TensorInfo, inspect};
pub use merge::{GroupInfo, InputInfo, MergeReport, MergeRequest, merge};
pub use method::{Method, MethodDef, MethodStats, ParamDef, ParamDefault, ParamKind, method_table};
pub use monitor::{Monitor, Progress};
pub use synthetic::{SyntheticSpec, write_model_set};
