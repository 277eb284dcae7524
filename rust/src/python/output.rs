//! `merge_rs._core.OutputDir`: the engine's output lifecycle for the outputs Python writes itself (RegMean's
//! model, Fisher checkpoints): checks first, a temporary directory to write into, then an atomic commit.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;

use super::errors::to_py;
use crate::error::MergeError;
use crate::output::OutputDir;

/// An output directory being written: write into `path`, then `commit()` (or `abort()`).
#[pyclass(name = "OutputDir", module = "merge_rs._core")]
pub(crate) struct PyOutputDir {
    inner: Mutex<Option<OutputDir>>,
    path: PathBuf,
    target: PathBuf,
}

#[pymethods]
impl PyOutputDir {
    #[new]
    #[pyo3(signature = (target, inputs, overwrite=false))]
    fn new(py: Python<'_>, target: PathBuf, inputs: Vec<PathBuf>, overwrite: bool) -> PyResult<Self> {
        let output = OutputDir::prepare(&target, &inputs, overwrite).map_err(|e| to_py(py, e))?;
        Ok(PyOutputDir {
            path: output.temp().to_path_buf(),
            target,
            inner: Mutex::new(Some(output)),
        })
    }

    /// The temporary directory to write into.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Where the output goes on commit.
    #[getter]
    fn target(&self) -> PathBuf {
        self.target.clone()
    }

    /// Move the output into place (never replacing anything without `overwrite`).
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let output = self
            .take()
            .ok_or_else(|| to_py(py, MergeError::arg("this output is already closed")))?;
        output.commit().map_err(|e| to_py(py, e))
    }

    /// Remove everything written (and the parents created for it).
    fn abort(&self) {
        drop(self.take());
    }
}

impl PyOutputDir {
    fn take(&self) -> Option<OutputDir> {
        self.inner.lock().ok().and_then(|mut guard| guard.take())
    }
}

/// Fail if `target` is one of `inputs`, inside an input's directory, or holds an input.
#[pyfunction]
pub(crate) fn check_not_input(py: Python<'_>, target: PathBuf, inputs: Vec<PathBuf>) -> PyResult<()> {
    crate::output::check_not_input(&target, &inputs).map_err(|e| to_py(py, e))
}

/// Fail now if the output directory `target` could not be written at the end (see `OutputDir`); touches
/// nothing on disk.
#[pyfunction]
#[pyo3(signature = (target, inputs, overwrite=false))]
pub(crate) fn check_output(py: Python<'_>, target: PathBuf, inputs: Vec<PathBuf>, overwrite: bool) -> PyResult<()> {
    crate::output::check(&target, &inputs, overwrite).map_err(|e| to_py(py, e))
}
