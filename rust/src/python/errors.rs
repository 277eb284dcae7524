//! Mapping [`MergeError`] to the exception hierarchy of `merge_rs.exceptions` (missing files raise
//! `FileNotFoundError`). The message is the core's one-line message.

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError};
use pyo3::prelude::*;

use crate::error::MergeError;

fn class_name(err: &MergeError) -> &'static str {
    match err {
        MergeError::NotFound { .. } => "",
        MergeError::Io { .. } => "MergeIOError",
        MergeError::InvalidCheckpoint { .. } | MergeError::UnsupportedDtype { .. } => "CheckpointError",
        MergeError::Incompatible { .. } => "IncompatibleModelsError",
        MergeError::InvalidArgument(_) => "InvalidArgumentError",
        MergeError::NonFinite { .. } => "NonFiniteError",
        MergeError::OutputExists { .. } => "OutputExistsError",
        MergeError::OutputIsInput { .. } => "OutputIsInputError",
        MergeError::Cancelled => "MergeCancelled",
    }
}

/// The Python exception for `err`.
pub fn to_py(py: Python<'_>, err: MergeError) -> PyErr {
    let message = err.to_string();
    let name = class_name(&err);
    if name.is_empty() {
        return PyFileNotFoundError::new_err(message);
    }
    let build = || -> PyResult<PyErr> {
        let class = py.import("merge_rs.exceptions")?.getattr(name)?;
        Ok(PyErr::from_value(class.call1((message.clone(),))?))
    };
    build().unwrap_or_else(|e| PyRuntimeError::new_err(format!("{message} (and merge_rs.exceptions failed: {e})")))
}
