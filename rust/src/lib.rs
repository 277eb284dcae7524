//! merge-rs: streaming, bounded-memory merging of fine-tuned models stored as safetensors.
//!
//! The core reads every header first ([`checkpoint`]), validates and plans the request ([`plan`]), then
//! streams fixed-size chunks of every input through a method's kernel on a private rayon pool ([`engine`],
//! [`methods`]), writing the output header-first at known offsets ([`writer`]). Memory is bounded by
//! threads × inputs × chunk size, never by the size or number of the models.
//!
//! Entry points: [`merge::merge`], [`analysis::cosine_similarity`], [`info::inspect`],
//! [`synthetic::write_model_set`]. The PyO3 bindings live behind the `python` feature.

pub mod analysis;
pub mod checkpoint;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod info;
pub mod merge;
pub mod methods;
pub mod monitor;
pub mod plan;
pub mod rng;
pub mod select;
pub mod synthetic;
pub mod writer;

#[cfg(feature = "python")]
mod python;

pub use error::{MergeError, Result};
