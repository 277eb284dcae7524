//! The one error type of the merge core. Every variant names the file, model or tensor involved so that
//! a one-line message is enough to act on; the Python bindings map variants to `merge_rs.exceptions`.

use std::path::{Path, PathBuf};

/// Result alias used throughout the core.
pub type Result<T, E = MergeError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, validating, merging or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A path given by the user does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// An operating-system error while reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors checkpoint (truncated, corrupt header, offsets out of range...).
    #[error("{}: not a valid safetensors checkpoint: {reason}", path.display())]
    InvalidCheckpoint {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor has a dtype that cannot be merged.
    #[error("{}: tensor '{tensor}' has dtype {dtype}, which merge-rs cannot merge (float32, float16, bfloat16 and integer buffers are supported)", path.display())]
    UnsupportedDtype {
        /// The checkpoint holding the tensor.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// The models cannot be matched tensor by tensor.
    #[error("{model}: tensor '{tensor}' {problem}")]
    Incompatible {
        /// The model in which the problem shows.
        model: String,
        /// The tensor name (output layout).
        tensor: String,
        /// What does not match.
        problem: String,
    },
    /// A parameter or option of the request is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A parameter contains NaN or infinity.
    #[error("{model}: tensor '{tensor}' contains {count} non-finite value(s) (NaN or Inf){remedy}")]
    NonFinite {
        /// The model holding the tensor.
        model: String,
        /// The tensor name.
        tensor: String,
        /// How many non-finite values the chunk that failed held.
        count: u64,
        /// What the user can do about it (starts with "; "), or nothing.
        remedy: &'static str,
    },
    /// A merged tensor came out non-finite from finite inputs (an overflow, also in the output dtype, or 0/0).
    #[error(
        "the merged tensor '{tensor}' has {count} non-finite value(s) as {dtype} although the inputs are finite (an overflow or a division by zero in the method); check the parameters, or pass allow_nonfinite / --allow-nonfinite to write it anyway"
    )]
    NonFiniteOutput {
        /// The tensor name.
        tensor: String,
        /// How many values of the chunk that failed are non-finite.
        count: u64,
        /// The output dtype.
        dtype: &'static str,
    },
    /// The output path exists already.
    #[error("{}: output already exists (pass overwrite / --overwrite to replace it)", path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },
    /// The output would overwrite or sit inside one of the inputs.
    #[error("{}: the output must not be one of the inputs nor inside one ({})", path.display(), input.display())]
    OutputIsInput {
        /// The output path.
        path: PathBuf,
        /// The input it collides with.
        input: PathBuf,
    },
    /// A method cannot merge a tensor of these inputs (e.g. SLERP between antipodal tensors).
    #[error("{method}: cannot merge tensor '{tensor}': {reason}")]
    MethodFailed {
        /// The method.
        method: &'static str,
        /// The tensor.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// The work was cancelled (Ctrl-C); nothing was left behind.
    #[error("cancelled; no output was written")]
    Cancelled,
    /// A broken internal invariant: a bug in merge-rs, never the user's input.
    #[error("internal error (a bug in merge-rs, please report it): {0}")]
    Internal(String),
}

/// The remedy a merge offers for non-finite inputs.
pub(crate) const ALLOW_NONFINITE: &str = "; pass allow_nonfinite / --allow-nonfinite to merge anyway";

impl MergeError {
    /// An I/O error on `path`, turning "not found" into [`MergeError::NotFound`].
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            MergeError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            MergeError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// An invalid-checkpoint error for `path`.
    pub fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        MergeError::InvalidCheckpoint {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// An invalid-argument error.
    pub fn arg(message: impl Into<String>) -> Self {
        MergeError::InvalidArgument(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_recognised() {
        let err = MergeError::io(Path::new("/x/y"), std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(matches!(err, MergeError::NotFound { .. }));
        assert_eq!(err.to_string(), "/x/y: no such file or directory");
    }

    #[test]
    fn messages_name_the_tensor() {
        let err = MergeError::NonFinite {
            model: "m".into(),
            tensor: "w".into(),
            count: 2,
            remedy: ALLOW_NONFINITE,
        };
        assert!(err.to_string().contains("'w'"));
    }
}
