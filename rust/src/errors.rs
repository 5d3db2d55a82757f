//! The Python exception tree, rooted at `EdgefwdError`, and the one mapping from the
//! core's `Error` onto it.
//!
//! The classes need multiple inheritance (`TopicError(EdgefwdError, ValueError)`), which
//! `create_exception!` cannot express, so they are defined once, in Python, when the
//! module is initialised, and kept here.

use edgefwd_core::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyType};

const EXCEPTIONS_SRC: &std::ffi::CStr = c"
class EdgefwdError(Exception):
    \"\"\"Root of every edgefwd exception.\"\"\"

class TopicError(EdgefwdError, ValueError):
    \"\"\"An invalid MQTT topic name or filter; the message says what and where.\"\"\"

class TemplateError(EdgefwdError, ValueError):
    \"\"\"A template that cannot be compiled; the message names the route index and the template.\"\"\"

class InvalidInputError(EdgefwdError, ValueError):
    \"\"\"An argument the core cannot use (e.g. a boot id that is not 16 bytes, QoS 3).\"\"\"

class CorruptBatchError(EdgefwdError):
    \"\"\"A queue batch that fails a check. offset: byte offset of the damage; reason: what
    is wrong; record_count: from the CRC-checked header when the header is intact, else None.\"\"\"

    def __init__(self, message, offset=0, reason='', record_count=None):
        super().__init__(message)
        self.offset = offset
        self.reason = reason
        self.record_count = record_count

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else '', self.offset, self.reason, self.record_count))

class UnsupportedBatchVersionError(CorruptBatchError):
    \"\"\"An intact batch written in a format version this build does not read (e.g. after a
    downgrade). A CorruptBatchError, so callers that quarantine damage handle it too.\"\"\"

    def __init__(self, message, offset=4, reason='', record_count=None, version=0):
        super().__init__(message, offset, reason, record_count)
        self.version = version

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else '', self.offset, self.reason, self.record_count, self.version))

for _c in (EdgefwdError, TopicError, TemplateError, InvalidInputError, CorruptBatchError, UnsupportedBatchVersionError):
    _c.__module__ = 'edgefwd._core'
del _c
";

/// Names of the exception classes, in the order they are kept.
pub const NAMES: [&str; 6] = [
    "EdgefwdError",
    "TopicError",
    "TemplateError",
    "InvalidInputError",
    "CorruptBatchError",
    "UnsupportedBatchVersionError",
];

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> &Vec<Py<PyType>> {
    CLASSES.get_or_init(py, || {
        let ns = PyDict::new(py);
        py.run(EXCEPTIONS_SRC, Some(&ns), None)
            .expect("defining the exception classes");
        NAMES
            .iter()
            .map(|n| {
                ns.get_item(n)
                    .expect("dict lookup")
                    .expect("class defined")
                    .cast_into::<PyType>()
                    .expect("a class")
                    .unbind()
            })
            .collect()
    })
}

/// Add the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, cls) in NAMES.iter().zip(classes(py)) {
        m.add(*name, cls.clone_ref(py))?;
    }
    Ok(())
}

fn class<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyType> {
    let i = NAMES
        .iter()
        .position(|n| *n == name)
        .expect("known exception");
    classes(py)[i].bind(py).clone()
}

/// The error type the binding's functions return: a core error (converted to the
/// Python exception tree) or a Python error raised on the way (argument conversion), so
/// `?` works on both.
pub enum CoreError {
    Core(Error),
    Py(PyErr),
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError::Core(e)
    }
}

impl From<std::convert::Infallible> for CoreError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl From<PyErr> for CoreError {
    fn from(e: PyErr) -> Self {
        CoreError::Py(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let e = match e {
            CoreError::Py(err) => return err,
            CoreError::Core(e) => e,
        };
        Python::attach(|py| {
            let msg = e.to_string();
            let made = match &e {
                Error::Topic { .. } => class(py, "TopicError").call1((msg,)),
                Error::Template { .. } => class(py, "TemplateError").call1((msg,)),
                Error::InvalidInput(_) => class(py, "InvalidInputError").call1((msg,)),
                Error::CorruptBatch {
                    offset,
                    reason,
                    record_count,
                } => class(py, "CorruptBatchError").call1((
                    msg,
                    *offset,
                    reason.as_str(),
                    *record_count,
                )),
                Error::UnsupportedVersion {
                    version,
                    record_count,
                    ..
                } => class(py, "UnsupportedBatchVersionError").call1((
                    msg.clone(),
                    4usize,
                    msg,
                    Some(*record_count),
                    *version,
                )),
            };
            match made {
                Ok(exc) => PyErr::from_value(exc),
                Err(err) => err,
            }
        })
    }
}

/// Result of a binding function.
pub type CoreResult<T> = Result<T, CoreError>;
