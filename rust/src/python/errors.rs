//! The exception hierarchy of `merge_rs.exceptions`, created once in Rust when `_core` is first imported
//! (the Python module re-exports these classes), and the mapping of every [`MergeError`] variant to its
//! class. Missing input files raise the built-in `FileNotFoundError`.

use pyo3::exceptions::{PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::MergeError;

/// The classes, by role.
pub(crate) struct Classes {
    base: Py<PyType>,
    checkpoint: Py<PyType>,
    incompatible: Py<PyType>,
    invalid_argument: Py<PyType>,
    nonfinite: Py<PyType>,
    output_exists: Py<PyType>,
    output_is_input: Py<PyType>,
    io: Py<PyType>,
    cancelled: Py<PyType>,
    internal: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// The classes, created on first use.
pub(crate) fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || create(py))
}

fn create(py: Python<'_>) -> PyResult<Classes> {
    let class = |name: &str, doc: &str, bases: &[&Py<PyType>]| -> PyResult<Py<PyType>> {
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "merge_rs.exceptions")?;
        namespace.set_item("__doc__", doc)?;
        let bases = PyTuple::new(py, bases.iter().map(|b| b.bind(py)))?;
        let created = py.get_type::<PyType>().call1((name, bases, namespace))?;
        Ok(created.cast_into::<PyType>()?.unbind())
    };
    let builtin = |t: Bound<'_, PyType>| t.unbind();
    let (exception, value_error) = (
        builtin(py.get_type::<PyException>()),
        builtin(py.get_type::<PyValueError>()),
    );
    let base = class("MergeRsError", "Base class of every merge-rs error.", &[&exception])?;
    let invalid_argument = class(
        "InvalidArgumentError",
        "A method parameter or option is invalid.",
        &[&base, &value_error],
    )?;
    Ok(Classes {
        checkpoint: class(
            "CheckpointError",
            "A file is not a valid safetensors checkpoint, or holds a dtype that cannot be merged.",
            &[&base],
        )?,
        incompatible: class(
            "IncompatibleModelsError",
            "The models cannot be matched tensor by tensor (missing tensor, shape or dtype mismatch).",
            &[&base],
        )?,
        nonfinite: class(
            "NonFiniteError",
            "A parameter holds NaN or Inf (pass allow_nonfinite=True to merge anyway).",
            &[&base, &value_error],
        )?,
        output_exists: class(
            "OutputExistsError",
            "The output directory exists (pass overwrite=True to replace it).",
            &[&base, &builtin(py.get_type::<PyFileExistsError>())],
        )?,
        output_is_input: class(
            "OutputIsInputError",
            "The output would overwrite, contain or sit inside one of the inputs.",
            &[&invalid_argument],
        )?,
        io: class(
            "MergeIOError",
            "Reading or writing a file failed.",
            &[&base, &builtin(py.get_type::<PyOSError>())],
        )?,
        cancelled: class(
            "MergeCancelled",
            "The work was cancelled; no output was left behind.",
            &[&base],
        )?,
        internal: class(
            "InternalError",
            "A broken internal invariant: a bug in merge-rs, never the user's input.",
            &[&base],
        )?,
        invalid_argument,
        base,
    })
}

impl Classes {
    /// Every class with its name, for the module.
    pub(crate) fn named(&self) -> [(&'static str, &Py<PyType>); 10] {
        [
            ("MergeRsError", &self.base),
            ("CheckpointError", &self.checkpoint),
            ("IncompatibleModelsError", &self.incompatible),
            ("InvalidArgumentError", &self.invalid_argument),
            ("NonFiniteError", &self.nonfinite),
            ("OutputExistsError", &self.output_exists),
            ("OutputIsInputError", &self.output_is_input),
            ("MergeIOError", &self.io),
            ("MergeCancelled", &self.cancelled),
            ("InternalError", &self.internal),
        ]
    }

    fn of(&self, err: &MergeError) -> Option<&Py<PyType>> {
        Some(match err {
            MergeError::NotFound { .. } => return None,
            MergeError::Io { .. } => &self.io,
            MergeError::InvalidCheckpoint { .. } | MergeError::UnsupportedDtype { .. } => &self.checkpoint,
            MergeError::Incompatible { .. } => &self.incompatible,
            MergeError::InvalidArgument(_) | MergeError::MethodFailed { .. } => &self.invalid_argument,
            MergeError::NonFinite { .. } | MergeError::NonFiniteOutput { .. } => &self.nonfinite,
            MergeError::OutputExists { .. } => &self.output_exists,
            MergeError::OutputIsInput { .. } => &self.output_is_input,
            MergeError::Cancelled => &self.cancelled,
            MergeError::Internal(_) => &self.internal,
        })
    }
}

/// The Python exception for `err`, with the core's one-line message.
pub(crate) fn to_py(py: Python<'_>, err: MergeError) -> PyErr {
    let message = err.to_string();
    let class = match classes(py) {
        Ok(classes) => classes.of(&err).map(|c| c.clone_ref(py)),
        Err(e) => return e,
    };
    match class {
        None => PyFileNotFoundError::new_err(message),
        Some(class) => match class.bind(py).call1((message,)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
    }
}
